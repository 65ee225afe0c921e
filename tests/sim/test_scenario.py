"""Scenario files: the shipped ones load; bad ones fail with one sentence naming the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cambist.cli.main import app
from cambist.sim.scenario import (
    SCENARIO_VERSION,
    ScenarioError,
    load_scenario,
    shipped_scenarios,
)


def test_four_versioned_scenarios_ship() -> None:
    assert {"steady", "glut", "surge", "agentic"} <= set(shipped_scenarios())
    for name in shipped_scenarios():
        sc = load_scenario(name)
        assert sc.version == SCENARIO_VERSION and sc.name == name
        assert {d.kind for d in sc.mix} <= {"chat", "batch", "agent"}
        assert all(m in sc.prices for m in sc.models)


def test_scenarios_differ_where_they_say() -> None:
    steady, glut, surge = (load_scenario(n) for n in ("steady", "glut", "surge"))
    assert glut.market.glut_price[1] < steady.market.glut_price[0]
    assert surge.market.surge_price[0] > steady.market.surge_price[1]
    agentic = load_scenario("agentic")
    agents = [d for d in agentic.mix if d.kind == "agent"]
    assert agents and agents[0].reasoning_multiplier == (10.0, 100.0)
    assert sum(d.share for d in agents) > 0.5


def _write(tmp_path: Path, doc: object) -> str:
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(doc) if not isinstance(doc, str) else doc)
    return str(p)


def _base() -> dict:
    raw = yaml.safe_load(Path(__file__).resolve().parents[2].joinpath(
        "src/cambist/sim/scenarios/steady.yaml").read_text())
    assert isinstance(raw, dict)
    return raw


@pytest.mark.parametrize(("change", "needle"), [
    (lambda d: d.update(version=2), "set version: 1"),
    (lambda d: d.pop("mix"), "no 'mix'"),
    (lambda d: d["mix"][0].update(model="gpt-9"), "is not in the catalog"),
    (lambda d: d["mix"][0].update(kind="video"), "use one of chat, batch, agent"),
    (lambda d: d["market"]["suppliers"].update(acme={}), "unknown supplier 'acme'"),
    (lambda d: d["mix"][0].update(rps=[3, 1]), "swap them"),
    (lambda d: d["market"].update(gpus=["H999"]), "names 'H999', which the price catalog"),
    (lambda d: d["prices"].pop("llama-3.1-8b"), "prices.llama-3.1-8b needs input and output"),
])
def test_bad_scenarios_name_the_fix(tmp_path: Path, change: object, needle: str) -> None:
    doc = _base()
    change(doc)  # type: ignore[operator]
    with pytest.raises(ScenarioError, match=needle.replace("(", r"\(")):
        load_scenario(_write(tmp_path, doc))


def test_unknown_name_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"use one of .*steady"):
        load_scenario("no-such-scenario")
    with pytest.raises(ScenarioError, match="not valid YAML at line"):
        load_scenario(_write(tmp_path, "version: 1\nmix: [\n"))


def test_cli_bad_input_is_one_sentence_exit_1(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["sim", "nope"])
    assert res.exit_code == 1
    assert "Traceback" not in res.output and "no scenario 'nope'" in res.output
    res = runner.invoke(app, ["sim", "steady", "--days", "0"])
    assert res.exit_code == 1 and "--days must be between" in res.output
    bad = _base()
    bad["version"] = 9
    res = runner.invoke(app, ["sim", _write(tmp_path, bad)])
    assert res.exit_code == 1 and "set version: 1" in res.output
    lonely = _base()
    lonely["market"]["suppliers"] = {"vast": {}}
    lonely["market"]["gpus"] = ["V100"]  # no model of the mix fits a V100
    res = runner.invoke(app, ["sim", _write(tmp_path, lonely), "--days", "0.1"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "error:" in res.output
