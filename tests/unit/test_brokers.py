"""Tests for taskq.brokers: the broker URL chooses the implementation, in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskq.brokers import display_url, local_directory, open_broker
from taskq.brokers.file import FileBroker
from taskq.config import Settings
from taskq.errors import ConfigError


@pytest.mark.parametrize("prefix", ["", "file://"])
def test_a_path_or_a_file_url_opens_the_file_broker(tmp_path: Path, prefix: str) -> None:
    broker = open_broker(Settings(broker=f"{prefix}{tmp_path / 'b'}"))
    assert isinstance(broker, FileBroker)
    assert broker.root == tmp_path / "b"


def test_an_unknown_scheme_is_refused_naming_the_known_ones() -> None:
    known = r"\(known: file://, memory://, redis://, rediss://\)"
    with pytest.raises(ConfigError, match=rf"unsupported scheme 'nope' {known}"):
        open_broker(Settings(broker="nope://host"))


def test_only_a_file_broker_has_a_local_directory(tmp_path: Path) -> None:
    assert local_directory(Settings(broker=str(tmp_path))) == tmp_path
    assert local_directory(Settings(broker=f"file://{tmp_path}")) == tmp_path
    assert local_directory(Settings(broker="nope://host")) is None


def test_a_broker_url_is_shown_without_its_password() -> None:
    assert display_url("redis://:s3cret@host:6379/0") == "redis://***@host:6379/0"
    assert (
        display_url("rediss://app:s3cret@host/1?prefix=a:") == "rediss://app:***@host/1?prefix=a:"
    )
    assert display_url("/var/lib/taskq") == "/var/lib/taskq"


def test_a_redis_url_carries_the_prefix_and_liveness_and_passes_the_rest_to_the_client() -> None:
    pytest.importorskip("redis")
    url = "redis://:pw@127.0.0.1:6379/2?prefix=app1:&liveness_timeout=3&health_check_interval=5"
    broker = open_broker(Settings(broker=url))

    assert (broker.prefix, broker.liveness_ms) == ("app1:", 3000)  # type: ignore[attr-defined]
    kwargs = broker.client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
    assert (kwargs["db"], kwargs["password"], kwargs["health_check_interval"]) == (2, "pw", 5)
    assert "pw" not in repr(broker)


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_redis_liveness_timeout_that_is_not_a_positive_number_is_refused(value: str) -> None:
    pytest.importorskip("redis")
    with pytest.raises(ConfigError, match=f"liveness_timeout='{value}' is not a positive"):
        open_broker(Settings(broker=f"redis://127.0.0.1/0?liveness_timeout={value}"))


def test_durable_on_a_redis_broker_is_refused_saying_where_durability_lives() -> None:
    pytest.importorskip("redis")
    with pytest.raises(ConfigError, match="Redis, whose durability is its own appendonly"):
        open_broker(Settings(broker="redis://127.0.0.1/0", durable=True))
