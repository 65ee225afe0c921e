"""Scenario files: the market and the tenant mix of one simulation, as data.

A scenario is a versioned YAML file (``version: 1``) naming the simulated
suppliers and how their price processes, capacities, spin-up times and billing
minimums differ from the shipped profiles, the reserved terms they offer and
their discounts (optional), the price list tenants pay, the
TTFT SLO, the rate at which suppliers take leased units back (preemptions,
optional: absent means none, so files written before it load unchanged), and
the tenant mix (shares of chat, batch and agent tenants with their demand
parameters), and the market-maker book's switch and risk limits (optional,
off by default). Four ship inside the package (``steady``, ``glut``,
``surge``, ``agentic``); any other path to a YAML file works the same way.
Everything is parsed and checked once here; a bad file raises
:class:`ScenarioError` with one sentence naming the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cambist.domain.models import MODEL_CATALOG
from cambist.providers.catalog import catalog_suppliers, load_price_levels

if TYPE_CHECKING:
    from cambist.market.maker import BookConfig

__all__ = [
    "SCENARIO_VERSION",
    "DemandSpec",
    "MarketSpec",
    "Scenario",
    "ScenarioError",
    "SupplierSpec",
    "load_scenario",
    "shipped_scenarios",
]

SCENARIO_VERSION = 1
_KINDS = ("chat", "batch", "agent")


class ScenarioError(ValueError):
    """A scenario name or file that cannot be used; the message names the fix."""


@dataclass(frozen=True, slots=True)
class SupplierSpec:
    """One simulated supplier and how this scenario changes its profile."""

    name: str
    spin_up_s: float
    billing_minimum_s: int
    volatility_scale: float = 1.0
    capacity_scale: float = 1.0
    preemption_per_hour: float | None = None
    """This supplier's preemption rate per leased unit-hour (``None``: the market's)."""
    terms: tuple[tuple[float, float], ...] | None = None
    """Reserved terms offered: (term seconds, discount off the on-demand price)
    (``None``: the market's)."""


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """The simulated market: suppliers, GPU types listed, episodes."""

    suppliers: tuple[SupplierSpec, ...]
    gpus: tuple[str, ...]
    """Catalog GPU names (``H100``, ``L40S``...) the suppliers list; fewer is faster."""
    episodes_per_day: float
    """Gluts and surges per SKU per day (``0``: none)."""
    glut_price: tuple[float, float] = (0.75, 0.86)
    surge_price: tuple[float, float] = (1.18, 1.4)
    preemption_per_hour: float = 0.0
    """Chance per leased unit per hour that its supplier takes it back (a spot-style
    reclaim or an instance failure; exponential lifetimes, ``0``: never)."""
    terms: tuple[tuple[float, float], ...] = ()
    """Reserved terms every supplier offers unless it names its own: (term
    seconds, discount off the on-demand price); ``()``: none."""

    def term_discounts(self, supplier: str) -> tuple[tuple[float, float], ...]:
        """(term seconds, discount) pairs ``supplier`` offers."""
        for s in self.suppliers:
            if s.name == supplier and s.terms is not None:
                return s.terms
        return self.terms

    def preemption_rate(self, supplier: str) -> float:
        """Preemptions per leased unit-hour at ``supplier``."""
        for s in self.suppliers:
            if s.name == supplier and s.preemption_per_hour is not None:
                return s.preemption_per_hour
        return self.preemption_per_hour


@dataclass(frozen=True, slots=True)
class DemandSpec:
    """One tenant kind of the mix and its parameter ranges (uniform draws per tenant)."""

    kind: str
    share: float
    model: str
    rps: tuple[float, float]
    """Mean requests/s per tenant (chat, agent sessions x steps) or during a job (batch)."""
    prompt_tokens: int
    output_tokens: int
    diurnal_amplitude: float = 0.0
    jobs_per_day: float = 0.0
    job_hours: tuple[float, float] = (1.0, 1.0)
    tool_steps: tuple[int, int] = (1, 1)
    """Agent: tool-loop steps per session (each step is one request)."""
    context_growth: int = 0
    """Agent: prompt tokens each tool step adds to the context."""
    reasoning_multiplier: tuple[float, float] = (0.0, 0.0)
    """Agent: hidden reasoning tokens per visible output token."""


@dataclass(frozen=True, slots=True)
class Scenario:
    """A parsed scenario file."""

    name: str
    version: int
    description: str
    seed: int
    days: float
    tenants: int
    market: MarketSpec
    prices: dict[str, tuple[Decimal, Decimal]]
    """Model -> (input, output) $/Mtok tenants pay (reasoning tokens bill as output)."""
    ttft_slo_ms: float
    target_utilization: float
    """Busy share of throughput every policy sizes capacity for (headroom keeps the SLO)."""
    mix: tuple[DemandSpec, ...]
    book: BookConfig = field(default_factory=lambda: _book(None, ""))
    """The market-maker book (off unless the file or ``--book`` turns it on)."""

    @property
    def models(self) -> tuple[str, ...]:
        """Models the mix uses, in first-use order."""
        return tuple(dict.fromkeys(d.model for d in self.mix))


def shipped_scenarios() -> list[str]:
    """Names of the scenarios shipped in the package."""
    root = resources.files("cambist.sim").joinpath("scenarios")
    return sorted(p.name.removesuffix(".yaml") for p in root.iterdir()
                  if p.name.endswith(".yaml"))


def load_scenario(name_or_path: str) -> Scenario:
    """A shipped scenario by name, or a scenario YAML file by path."""
    shipped = shipped_scenarios()
    if name_or_path in shipped:
        text = resources.files("cambist.sim").joinpath(f"scenarios/{name_or_path}.yaml") \
            .read_text(encoding="utf-8")
        where = f"scenario {name_or_path!r}"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ScenarioError(
                f"no scenario {name_or_path!r}: use one of {', '.join(shipped)} "
                "or the path to a scenario YAML file")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ScenarioError(f"cannot read {path} ({exc}); check the file's "
                                "permissions and that it is UTF-8 text") from None
        where = str(path)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ScenarioError(f"{where} is not valid YAML{at}; fix the syntax there") from None
    return parse_scenario(raw, where)


def _need(raw: dict[str, Any], key: str, where: str) -> Any:
    if key not in raw:
        raise ScenarioError(f"{where} has no {key!r}; add it (see the shipped scenarios)")
    return raw[key]


def _num(value: Any, what: str, lo: float = 0.0, hi: float = float("inf")) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ScenarioError(f"{what} must be a number in [{lo}, {hi}], not {value!r}; fix it")
    return float(value)


def _pair(value: Any, what: str, lo: float = 0.0, hi: float = float("inf")) \
        -> tuple[float, float]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value, value]
    if not isinstance(value, list) or len(value) != 2:
        raise ScenarioError(f"{what} must be a number or a [low, high] pair; fix it")
    a, b = (_num(v, what, lo, hi) for v in value)
    if a > b:
        raise ScenarioError(f"{what} must be [low, high] with low <= high; swap them")
    return a, b


def _suppliers(raw: Any, where: str) -> tuple[SupplierSpec, ...]:
    if not isinstance(raw, dict) or not raw:
        raise ScenarioError(f"{where}: market.suppliers must map supplier names to settings")
    known = catalog_suppliers()
    out = []
    for name, cfg in raw.items():
        if name not in known:
            raise ScenarioError(f"{where}: unknown supplier {name!r}; use one of "
                                f"{', '.join(known)}")
        cfg = cfg or {}
        if not isinstance(cfg, dict):
            raise ScenarioError(f"{where}: settings of supplier {name!r} must be a mapping")
        w = f"{where}: market.suppliers.{name}"
        out.append(SupplierSpec(
            name=name,
            spin_up_s=_num(cfg.get("spin_up_s", 300), f"{w}.spin_up_s", 0, 7200),
            billing_minimum_s=int(_num(cfg.get("billing_minimum_s", 60),
                                       f"{w}.billing_minimum_s", 0, 86400)),
            volatility_scale=_num(cfg.get("volatility_scale", 1.0),
                                  f"{w}.volatility_scale", 0, 20),
            capacity_scale=_num(cfg.get("capacity_scale", 1.0), f"{w}.capacity_scale", 0.01, 100),
            preemption_per_hour=None if cfg.get("preemption_per_hour") is None else _num(
                cfg["preemption_per_hour"], f"{w}.preemption_per_hour", 0, 1),
            terms=None if cfg.get("terms") is None else _terms(cfg["terms"], f"{w}.terms"),
        ))
    return tuple(out)


def _duration_s(value: Any, what: str) -> float:
    """``"12h"``, ``"1d"`` or ``"7d"`` in seconds."""
    text = str(value).strip()
    unit = {"h": 3600.0, "d": 86400.0}.get(text[-1:])
    try:
        n = float(text[:-1]) if unit else float("nan")
    except ValueError:
        n = float("nan")
    if unit is None or not 0 < n <= 366 * 86400 / unit:
        raise ScenarioError(f"{what} must be a duration such as 12h, 1d or 7d, not {value!r}")
    return n * unit


def _terms(raw: Any, what: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{what} must map terms (1d, 7d...) to discounts in [0, 0.9]")
    out = sorted((_duration_s(k, f"{what} key"), _num(v, f"{what}.{k}", 0, 0.9))
                 for k, v in raw.items())
    return tuple(out)


def _book(raw: Any, where: str) -> BookConfig:
    # Imported here: the ``cambist.market`` package loads the offer book and
    # SQLAlchemy, and the CLI reads scenarios at start (tests/test_imports.py).
    from cambist.market.maker import BookConfig

    if raw is None:
        return BookConfig()
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: book must be a mapping (enabled, max_inventory_usd, ...)")
    w, d = f"{where}: book", BookConfig()
    return BookConfig(
        enabled=bool(raw.get("enabled", False)),
        max_inventory_usd=Decimal(repr(_num(raw.get("max_inventory_usd", 5000),
                                            f"{w}.max_inventory_usd", 0, 1e9))),
        max_term_s=_duration_s(raw.get("max_term", "7d"), f"{w}.max_term"),
        min_surge_probability=_num(raw.get("min_surge_probability", d.min_surge_probability),
                                   f"{w}.min_surge_probability", 0, 1),
        cover=_num(raw.get("cover", d.cover), f"{w}.cover", 0, 4),
        lookback_s=_duration_s(raw.get("lookback", "4d"), f"{w}.lookback"),
        resale_fill=_num(raw.get("resale_fill", d.resale_fill), f"{w}.resale_fill", 0, 1),
        surge_resale_fill=_num(raw.get("surge_resale_fill", d.surge_resale_fill),
                               f"{w}.surge_resale_fill", 0, 1),
    )


def _demand(raw: Any, i: int, where: str) -> DemandSpec:
    w = f"{where}: mix[{i}]"
    if not isinstance(raw, dict):
        raise ScenarioError(f"{w} must be a mapping with kind, share, model, ...")
    kind = _need(raw, "kind", w)
    if kind not in _KINDS:
        raise ScenarioError(f"{w}.kind is {kind!r}; use one of {', '.join(_KINDS)}")
    model = _need(raw, "model", w)
    if model not in MODEL_CATALOG:
        raise ScenarioError(f"{w}.model {model!r} is not in the catalog; use one of "
                            f"{', '.join(sorted(MODEL_CATALOG))}")
    steps = _pair(raw.get("tool_steps", 1), f"{w}.tool_steps", 1, 1000)
    return DemandSpec(
        kind=kind, share=_num(_need(raw, "share", w), f"{w}.share", 0, 1), model=model,
        rps=_pair(_need(raw, "rps", w), f"{w}.rps", 0, 1e4),
        prompt_tokens=int(_num(_need(raw, "prompt_tokens", w), f"{w}.prompt_tokens", 1, 2e5)),
        output_tokens=int(_num(_need(raw, "output_tokens", w), f"{w}.output_tokens", 1, 1e5)),
        diurnal_amplitude=_num(raw.get("diurnal_amplitude", 0.0), f"{w}.diurnal_amplitude",
                               0, 0.95),
        jobs_per_day=_num(raw.get("jobs_per_day", 0.0), f"{w}.jobs_per_day", 0, 100),
        job_hours=_pair(raw.get("job_hours", 1.0), f"{w}.job_hours", 0.1, 48),
        tool_steps=(int(steps[0]), int(steps[1])),
        context_growth=int(_num(raw.get("context_growth", 0), f"{w}.context_growth", 0, 1e5)),
        reasoning_multiplier=_pair(raw.get("reasoning_multiplier", 0.0),
                                   f"{w}.reasoning_multiplier", 0, 1000),
    )


def _prices(raw: Any, models: tuple[str, ...], where: str) -> dict[str, tuple[Decimal, Decimal]]:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: prices must map each model to input and output $/Mtok")
    out = {}
    for m in models:
        entry = raw.get(m)
        if not isinstance(entry, dict) or "input" not in entry or "output" not in entry:
            raise ScenarioError(f"{where}: prices.{m} needs input and output $/Mtok; add them")
        try:
            out[m] = (Decimal(str(entry["input"])), Decimal(str(entry["output"])))
        except InvalidOperation:
            raise ScenarioError(f"{where}: prices.{m} must be numbers") from None
    return out


def parse_scenario(raw: Any, where: str = "scenario") -> Scenario:
    """Check a loaded YAML document and build the :class:`Scenario`."""
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where} must be a YAML mapping with version, market and mix")
    version = _need(raw, "version", where)
    if version != SCENARIO_VERSION:
        raise ScenarioError(f"{where} has version {version!r}; this Cambist reads version "
                            f"{SCENARIO_VERSION}, so set version: {SCENARIO_VERSION}")
    market = _need(raw, "market", where)
    if not isinstance(market, dict):
        raise ScenarioError(f"{where}: market must be a mapping")
    gpus = market.get("gpus") or []
    if not isinstance(gpus, list) or not all(isinstance(g, str) for g in gpus) or not gpus:
        raise ScenarioError(f"{where}: market.gpus must list catalog GPU names such as H100")
    known_gpus = sorted({lv.gpu for lv in load_price_levels()})
    for g in gpus:
        if g not in known_gpus:
            raise ScenarioError(f"{where}: market.gpus names {g!r}, which the price catalog "
                                f"does not list; use some of {', '.join(known_gpus)}")
    spec = MarketSpec(
        suppliers=_suppliers(_need(market, "suppliers", where), where),
        gpus=tuple(gpus),
        episodes_per_day=_num(market.get("episodes_per_day", 0.5),
                              f"{where}: market.episodes_per_day", 0, 12),
        glut_price=_pair(market.get("glut_price", [0.75, 0.86]),
                         f"{where}: market.glut_price", 0.05, 1),
        surge_price=_pair(market.get("surge_price", [1.18, 1.4]),
                          f"{where}: market.surge_price", 1, 10),
        preemption_per_hour=_num(market.get("preemption_per_hour", 0.0),
                                 f"{where}: market.preemption_per_hour", 0, 1),
        terms=_terms(market.get("terms") or {}, f"{where}: market.terms"),
    )
    mix_raw = _need(raw, "mix", where)
    if not isinstance(mix_raw, list) or not mix_raw:
        raise ScenarioError(f"{where}: mix must be a non-empty list of tenant kinds")
    mix = tuple(_demand(d, i, where) for i, d in enumerate(mix_raw))
    if sum(d.share for d in mix) <= 0:
        raise ScenarioError(f"{where}: the mix shares sum to zero; give some kind a share")
    models = tuple(dict.fromkeys(d.model for d in mix))
    return Scenario(
        name=str(raw.get("name", where)), version=SCENARIO_VERSION,
        description=str(raw.get("description", "")),
        seed=int(_num(raw.get("seed", 7), f"{where}: seed", 0, 2**31)),
        days=_num(raw.get("days", 30), f"{where}: days", 0.01, 365),
        tenants=int(_num(raw.get("tenants", 100), f"{where}: tenants", 1, 10_000)),
        market=spec,
        prices=_prices(_need(raw, "prices", where), models, where),
        ttft_slo_ms=_num(raw.get("ttft_slo_ms", 2000), f"{where}: ttft_slo_ms", 10, 600_000),
        target_utilization=_num(raw.get("target_utilization", 0.8),
                                f"{where}: target_utilization", 0.1, 1.0),
        mix=mix,
        book=_book(raw.get("book"), where),
    )
