"""``Revocations`` (taskq/brokers/base.py) on every broker of conftest.py: revoked
ids, terminate requests, and their expiry by housekeeping."""

from __future__ import annotations

import time
from typing import Any

import pytest

from taskq.errors import MessageError
from taskq.message import new_id

DAY = 86400.0


def test_revoked_ids_are_seen_as_revoked_and_others_are_not(broker: Any) -> None:
    first, second, other = new_id(), new_id(), new_id()
    assert not broker.is_revoked(first)  # nothing revoked yet

    broker.revoke([first, second], terminate=False, expires_at=time.time() + DAY)

    assert broker.is_revoked(first)
    assert broker.is_revoked(second)
    assert not broker.is_revoked(other)
    assert broker.terminations() == set()


def test_only_ids_revoked_with_terminate_are_terminations_and_terminate_stays(
    broker: Any,
) -> None:
    kill, keep = new_id(), new_id()
    until = time.time() + DAY
    broker.revoke([kill], terminate=True, expires_at=until)
    broker.revoke([keep], terminate=False, expires_at=until)
    broker.revoke([kill], terminate=False, expires_at=until)  # again, without terminate

    assert broker.terminations() == {kill}
    assert broker.is_revoked(keep)


def test_housekeeping_forgets_expired_revocations_and_keeps_the_others(broker: Any) -> None:
    now = time.time()
    old, fresh = new_id(), new_id()
    broker.revoke([old], terminate=True, expires_at=now - 10)
    broker.revoke([fresh], terminate=False, expires_at=now + DAY)

    removed = sum(broker.housekeeping_steps(now, results_before=now - DAY))

    assert removed >= 1
    assert not broker.is_revoked(old)
    assert old not in broker.terminations()
    assert broker.is_revoked(fresh)


def test_revoking_again_extends_a_revocation(broker: Any) -> None:
    now = time.time()
    task_id = new_id()
    broker.revoke([task_id], terminate=False, expires_at=now + 5)
    broker.revoke([task_id], terminate=False, expires_at=now + DAY)

    list(broker.revocation_steps(now + 10))

    assert broker.is_revoked(task_id)


def test_an_invalid_task_id_is_refused_by_name(broker: Any) -> None:
    with pytest.raises(MessageError, match=r"invalid task id '\.\./x'"):
        broker.revoke(["../x"], terminate=False, expires_at=time.time() + DAY)


def twin(broker: Any) -> Any:
    """Another handle on the same broker, as another process would open it."""
    from taskq.brokers.file import FileBroker
    from taskq.brokers.memory import MemoryBroker

    if isinstance(broker, MemoryBroker):
        return broker
    if isinstance(broker, FileBroker):
        return FileBroker(broker.root)
    from taskq.brokers.redis import RedisBroker

    return RedisBroker(broker.url, prefix=broker.prefix)


def test_a_revocation_reaches_a_process_that_looked_before_within_seconds(broker: Any) -> None:
    worker = twin(broker)
    task_id = new_id()
    assert not worker.is_revoked(task_id)  # its copy is loaded now

    broker.revoke([task_id], terminate=True, expires_at=time.time() + DAY)

    deadline = time.monotonic() + 3.0
    while not worker.is_revoked(task_id) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert worker.is_revoked(task_id)
    assert task_id in worker.terminations()
