/* Cambist dashboard: draws the page's charts with uPlot and refreshes stats,
 * tables and charts from /ui/data/<page> without reloading the page.
 * The first paint comes from the JSON embedded in the page (#page-data);
 * every later one from the same structure fetched live. Text goes in with
 * textContent only, never innerHTML. */
(function () {
  "use strict";

  var main = document.querySelector("main[data-page]");
  if (!main) { return; }
  var page = main.getAttribute("data-page");
  var refreshMs = parseInt(main.getAttribute("data-refresh-ms"), 10) || 5000;
  var charts = {};
  var state = { charts: charts, refreshes: 0, lastError: null, data: null };
  window.cambist = state;

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function clock(t) {
    var d = new Date(t * 1000);
    return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds());
  }

  function number(v) {
    var a = Math.abs(v);
    if (a > 0 && a < 0.01) { return v.toPrecision(2); }
    var digits = a >= 100 ? 0 : a >= 1 ? 2 : 4;
    return v.toLocaleString("en-US", { maximumFractionDigits: digits });
  }

  function labels(c) { return c.series.map(function (s) { return s.label; }).join("\u0000"); }

  function columns(c) {
    return [c.x].concat(c.series.map(function (s) { return s.values; }));
  }

  function options(c, width) {
    var index = {};
    var series = [{ label: "time (UTC)", value: function (u, v) { return v == null ? "—" : clock(v); } }];
    c.series.forEach(function (s, i) {
      index[s.label] = i + 1;
      var o = {
        label: s.label, stroke: s.color, width: 2, spanGaps: false,
        value: function (u, v) { return v == null ? "—" : number(v) + (s.unit ? " " + s.unit : ""); }
      };
      if (s.kind === "band") { o.width = 1; o.dash = [4, 4]; }
      if (s.kind === "points") {
        o.width = 0;
        o.paths = function () { return null; };
        o.points = { show: true, size: 9, width: 1, fill: s.color, stroke: s.color };
      }
      series.push(o);
    });
    var bands = (c.bands || []).map(function (pair) {
      return { series: [index[pair[1]], index[pair[0]]], fill: "rgba(124, 58, 237, 0.12)" };
    });
    return {
      width: width, height: 260, series: series, bands: bands,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      axes: [{}, {
        label: c.y_label || "", size: 84,
        values: function (u, splits) { return splits.map(number); }
      }],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } }
    };
  }

  function widthOf(el) { return Math.max(320, el.clientWidth || 600); }

  function drawChart(key, c) {
    var el = document.getElementById("chart-" + key);
    if (!el) { return; }
    var note = document.querySelector('[data-chart-note="' + key + '"]');
    if (note) { note.textContent = c.note || ""; }
    var existing = charts[key];
    if (!c.x.length) {
      if (existing) { existing.destroy(); delete charts[key]; }
      el.textContent = "no data yet";
      el.setAttribute("data-empty", "true");
      return;
    }
    el.removeAttribute("data-empty");
    if (existing && existing.cambistLabels === labels(c)) {
      existing.setData(columns(c));
      return;
    }
    if (existing) { existing.destroy(); }
    el.textContent = "";
    var u = new uPlot(options(c, widthOf(el)), columns(c), el);
    u.cambistLabels = labels(c);
    charts[key] = u;
  }

  function fillTable(key, t) {
    var table = document.getElementById("table-" + key);
    if (!table) { return; }
    var body = document.createElement("tbody");
    if (!t.rows.length) {
      var tr = document.createElement("tr");
      tr.className = "empty";
      var td = document.createElement("td");
      td.colSpan = t.columns.length;
      td.textContent = "no data";
      tr.appendChild(td);
      body.appendChild(tr);
    }
    t.rows.forEach(function (row) {
      var tr = document.createElement("tr");
      row.forEach(function (cell) {
        var td = document.createElement("td");
        td.textContent = cell;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.replaceChild(body, table.tBodies[0]);
    var note = document.querySelector('[data-table-note="' + key + '"]');
    if (note) { note.textContent = t.note || ""; }
  }

  function render(data) {
    state.data = data;
    (data.stats || []).forEach(function (s) {
      var el = document.querySelector('[data-stat="' + s.id + '"]');
      if (el) { el.textContent = s.value; }
    });
    Object.keys(data.tables || {}).forEach(function (k) { fillTable(k, data.tables[k]); });
    Object.keys(data.charts || {}).forEach(function (k) { drawChart(k, data.charts[k]); });
    var status = document.getElementById("status");
    if (status) { status.textContent = "as of " + data.as_of_text + " UTC · live every " + (refreshMs / 1000) + " s"; }
  }

  function schedule() { window.setTimeout(refresh, refreshMs); }

  function refresh() {
    if (document.hidden) { schedule(); return; }
    fetch("/ui/data/" + encodeURIComponent(page) + window.location.search, {
      credentials: "same-origin", headers: { accept: "application/json" }
    }).then(function (r) {
      if (r.status === 401) {
        window.location.assign("/ui/login?next=" +
          encodeURIComponent(window.location.pathname + window.location.search));
        throw new Error("signed out");
      }
      if (!r.ok) { throw new Error("HTTP " + r.status); }
      return r.json();
    }).then(function (data) {
      render(data);
      state.refreshes += 1;
      state.lastError = null;
      schedule();
    }).catch(function (err) {
      state.lastError = String(err && err.message ? err.message : err);
      var status = document.getElementById("status");
      if (status) { status.textContent = "refresh failed (" + state.lastError + "); retrying"; }
      schedule();
    });
  }

  // Drop-down filters apply at once; text filters on Enter or "Apply".
  var form = document.getElementById("filters");
  if (form) {
    Array.prototype.forEach.call(form.querySelectorAll("select"), function (sel) {
      sel.addEventListener("change", function () { form.submit(); });
    });
  }

  window.addEventListener("resize", function () {
    Object.keys(charts).forEach(function (k) {
      var el = document.getElementById("chart-" + k);
      if (el) { charts[k].setSize({ width: widthOf(el), height: 260 }); }
    });
  });

  render(JSON.parse(document.getElementById("page-data").textContent));
  schedule();
})();
