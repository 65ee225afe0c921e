"""``cambist market`` without an exchange: durations, sparklines, bad input."""

from __future__ import annotations

from decimal import Decimal

import pytest
from typer.testing import CliRunner

from cambist.cli.commands_market_data import parse_duration, sparkline
from cambist.cli.main import app


@pytest.mark.parametrize(("text", "seconds"), [
    ("90m", 5400), ("24h", 86400), ("7d", 7 * 86400), ("30d", 30 * 86400), ("2W", 14 * 86400),
    (" 5 h ", 18000),
])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["7x", "", "d7", "1.5h", "-3d", "0d", "7 days"])
def test_bad_durations(text: str) -> None:
    assert parse_duration(text) is None


def test_sparkline_scales_from_low_to_high() -> None:
    assert sparkline([Decimal(1), Decimal(2), None, Decimal(3)]) == "▁▅ █"
    assert sparkline([2.0, 2.0]) == "▁▁"
    assert sparkline([None, None]) == "  "


@pytest.mark.parametrize(("args", "message"), [
    (["--gpu", "H100-80GB-SXM", "--history", "7x"],
     "--history takes a duration such as 90m, 24h, 7d or 30d"),
    (["--gpu", "H100-80GB-SXM", "--history", "7d", "--interval", "5m"],
     "--interval takes 1m, 1h or 1d"),
    (["--gpu", "H100-80GB-SXM", "--history", "90d", "--interval", "1m"],
     "use a coarser --interval"),
    (["--history", "7d"], "need a SKU: add --gpu"),
])
def test_bad_input_is_one_sentence_naming_the_fix(args: list[str], message: str) -> None:
    r = CliRunner().invoke(app, ["--url", "http://127.0.0.1:9", "--key", "k", "market", *args])
    assert r.exit_code == 1
    assert message in " ".join(r.output.split())
