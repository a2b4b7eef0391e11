"""The per-process copy of revoked ids behind ``Revocations.is_revoked``."""

from __future__ import annotations

import logging

import pytest

from taskq.brokers.revoked_copy import RevokedCopy


class Source:
    def __init__(self) -> None:
        self.marker: object = 1
        self.ids = {"a": False}
        self.looks = 0
        self.loads = 0
        self.error: OSError | None = None

    def look(self) -> object:
        self.looks += 1
        if self.error is not None:
            raise self.error
        return self.marker

    def load(self) -> dict[str, bool]:
        self.loads += 1
        return dict(self.ids)


def test_the_copy_is_loaded_again_only_when_the_marker_moves() -> None:
    source = Source()
    copy = RevokedCopy(source.look, source.load)

    assert copy.ids() == {"a": False}
    source.ids = {"a": False, "b": True}
    assert copy.ids() == {"a": False}  # same marker: the copy is not read again
    source.marker = 2
    assert copy.ids() == {"a": False, "b": True}
    assert source.loads == 2


def test_with_an_interval_the_marker_is_looked_at_once_per_interval() -> None:
    source = Source()
    copy = RevokedCopy(source.look, source.load, every=3600)

    for _ in range(100):
        copy.ids()

    assert source.looks == 1


def test_a_broker_that_cannot_be_read_keeps_the_last_copy_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = Source()
    copy = RevokedCopy(source.look, source.load)
    copy.ids()
    source.error = ConnectionRefusedError("Redis is down")

    with caplog.at_level(logging.ERROR, logger="taskq.worker"):
        assert copy.ids() == {"a": False}
        assert copy.ids() == {"a": False}

    assert [r.getMessage() for r in caplog.records] == [
        "Cannot read the revoked task ids (Redis is down): using the last ones read"
    ]
    source.error, source.marker, source.ids = None, 2, {}
    assert copy.ids() == {}
