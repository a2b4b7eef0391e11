"""Tests for taskq.brokers: the broker URL chooses the implementation, in one place."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskq.brokers import local_directory, open_broker
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
