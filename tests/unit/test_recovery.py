"""Tests for taskq.recovery: settling a dead consumer's claims, and a recovery
that fails half-way (a full disk) losing nothing."""

from __future__ import annotations

import errno
import time
from pathlib import Path

import pytest

from taskq.brokers.file import FileBroker
from taskq.errors import WorkerLost
from taskq.keys import Keyring
from taskq.message import Message, decode, dump_call, encode, new_id
from taskq.policy import Outcome
from taskq.recovery import recover_consumer

KEY = Keyring(b"k" * 32)


def dead_consumer_holding(broker: FileBroker, count: int) -> list[str]:
    """Claims ``count`` messages as consumer "c1", then lets it die (its lock is freed)."""
    ids = []
    for _ in range(count):
        message = Message(id=new_id(), task="tests.t", created=time.time(), max_retries=3)
        broker.publish(message, encode(message, dump_call(message.task, (), {}), KEY))
        ids.append(message.id)
    consumer = broker.open_consumer(["default"], "c1")
    for _ in range(count):
        assert consumer.claim(timeout=1.0) is not None
    consumer.close()
    return ids


def claimed(broker: FileBroker) -> list[str]:
    folder = broker.root / "queues" / "default" / "claimed" / "c1"
    return sorted(n for n in folder.iterdir() if n.name != ".lock") if folder.is_dir() else []


def scheduled_ids(broker: FileBroker) -> set[str]:
    folder = broker.root / "queues" / "default" / "scheduled"
    return {decode(p.read_bytes(), KEY)[0].id for p in folder.iterdir()}


def test_recovery_failing_half_way_leaves_the_rest_claimed_for_the_next_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = FileBroker(tmp_path / "broker")
    ids = dead_consumer_holding(broker, 3)
    store = broker.store_result
    calls = []

    def fills_up(task_id: str, data: bytes) -> None:
        calls.append(task_id)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        store(task_id, data)

    monkeypatch.setattr(broker, "store_result", fills_up)
    with pytest.raises(OSError, match="No space"):
        recover_consumer(broker, KEY, "c1", Outcome.KILLED, WorkerLost, "test")

    # One settled (its retry is scheduled); two still claimed; the dead consumer
    # released, so a sweep (this process's or another's) takes it over.
    assert len(scheduled_ids(broker)) == 1
    assert len(claimed(broker)) == 2
    assert broker.dead_consumers() == ["c1"]
    other = FileBroker(tmp_path / "broker")
    assert [len(d.data) > 0 for d in other.recover("c1") or []] == [True, True]
    other.abandon_recovery("c1")

    monkeypatch.setattr(broker, "store_result", store)
    assert recover_consumer(broker, KEY, "c1", Outcome.KILLED, WorkerLost, "test") == 2
    assert scheduled_ids(broker) == set(ids)
    assert claimed(broker) == []
    assert broker.dead_consumers() == []
