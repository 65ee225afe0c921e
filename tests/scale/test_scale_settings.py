"""The settings of the many-process mode, and how processes are named."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from cambist.app.exchange import process_name
from cambist.config import ConfigError, load_settings


def test_scale_settings_from_the_environment(tmp_path: Path) -> None:
    s = load_settings(home=tmp_path, environ={
        "CAMBIST_REDIS_URL": "redis://10.0.0.5:6379/2", "CAMBIST_REDIS_PREFIX": "ex1",
        "CAMBIST_LIMIT_SLACK_FRACTION": "0.1", "CAMBIST_CREDIT_SLACK": "2.5",
        "CAMBIST_LEADER_RETRY_S": "0.5"})
    assert (s.redis_url, s.redis_prefix) == ("redis://10.0.0.5:6379/2", "ex1")
    assert (s.limit_slack_fraction, s.credit_slack, s.leader_retry_s) == (
        0.1, Decimal("2.5"), 0.5)
    assert load_settings(home=tmp_path, environ={}).redis_url == ""  # per process by default


@pytest.mark.parametrize(("key", "value", "names"), [
    ("CAMBIST_REDIS_URL", "http://localhost:6379", "redis_url"),
    ("CAMBIST_LIMIT_SLACK_FRACTION", "0", "limit_slack_fraction"),
    ("CAMBIST_LIMIT_SLACK_FRACTION", "1.5", "limit_slack_fraction"),
    ("CAMBIST_CREDIT_SLACK", "-1", "credit_slack"),
    ("CAMBIST_CREDIT_SLACK", "NaN", "credit_slack"),
    ("CAMBIST_LEADER_RETRY_S", "0", "leader_retry_s"),
    ("CAMBIST_REDIS_PREFIX", "a b", "redis_prefix"),
])
def test_bad_scale_settings_name_the_setting(tmp_path: Path, key: str, value: str,
                                             names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        load_settings(home=tmp_path, environ={key: value})


def test_process_names_are_stable_and_distinct(tmp_path: Path) -> None:
    sqlite = load_settings(home=tmp_path, environ={"CAMBIST_PORT": "8080"})
    pg = load_settings(home=tmp_path, environ={"CAMBIST_PORT": "8080",
                                               "CAMBIST_DATABASE_URL": "postgresql://h/db"})
    assert process_name(sqlite, "up") == "up"  # the embedded mode keeps its outbox name
    assert process_name(pg, "up") == "up-8080"  # several `up` share a database
    assert process_name(pg, "gateway") == "gateway-8080"
    assert [process_name(pg, "gateway", i) for i in range(2)] == [
        "gateway-8080-w0", "gateway-8080-w1"]
