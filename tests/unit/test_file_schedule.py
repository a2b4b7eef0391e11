"""The file broker's schedule (taskq/brokers/file_schedule.py): the lease is a
flock on a file in schedule/, ticks are small files; both refuse what the
running user did not make as it makes it (links, folders others can write)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from taskq.brokers.file import FileBroker
from taskq.errors import BrokerError, UnsafeEntry


@pytest.fixture
def broker(tmp_path: Path) -> FileBroker:
    return FileBroker(tmp_path / "broker")


def test_the_lease_file_names_its_holder_and_the_lock_is_the_lease(broker: FileBroker) -> None:
    assert broker.acquire_lease("periodic:tasks.beat", "vm-1/scheduler-a", 3.0)
    lease = broker.root / "schedule" / "periodic%3Atasks.beat.lease"
    assert lease.read_text() == "vm-1/scheduler-a"
    other = FileBroker(broker.root)  # another open file: the flock refuses it
    assert not other.acquire_lease("periodic:tasks.beat", "vm-2/scheduler-b", 3.0)
    broker.release_lease("periodic:tasks.beat", "vm-1/scheduler-a")
    assert other.acquire_lease("periodic:tasks.beat", "vm-2/scheduler-b", 3.0)
    assert lease.read_text() == "vm-2/scheduler-b"


def test_a_lease_file_replaced_by_a_link_is_refused_not_followed(
    broker: FileBroker, tmp_path: Path
) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    (broker.root / "schedule").mkdir(mode=0o700)
    (broker.root / "schedule" / "periodic%3At.lease").symlink_to(target)
    with pytest.raises(OSError) as error:
        broker.acquire_lease("periodic:t", "me", 3.0)
    assert error.value.errno == errno.ELOOP
    assert target.read_text() == "untouched"


def test_a_tick_file_that_is_a_link_is_refused(broker: FileBroker, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("1000.0")
    (broker.root / "schedule").mkdir(mode=0o700)
    (broker.root / "schedule" / "tasks.beat.tick").symlink_to(target)
    with pytest.raises(UnsafeEntry):
        broker.last_tick("tasks.beat")


def test_a_world_writable_schedule_folder_is_refused(broker: FileBroker) -> None:
    broker.record_tick("tasks.beat", 1000.0)
    folder = broker.root / "schedule"
    folder.chmod(0o777)
    with pytest.raises(BrokerError, match=f"{folder} is world-writable"):
        broker.last_tick("tasks.beat")
    with pytest.raises(BrokerError, match=f"{folder} is world-writable"):
        broker.check_trust()


def test_a_garbled_tick_reads_as_none_and_the_next_tick_replaces_it(broker: FileBroker) -> None:
    broker.record_tick("tasks.beat", 1000.0)
    (broker.root / "schedule" / "tasks.beat.tick").write_text("10o0.")
    assert broker.last_tick("tasks.beat") is None
    assert broker.record_tick("tasks.beat", 1060.0)
    assert broker.last_tick("tasks.beat") == 1060.0
    assert [p.name for p in (broker.root / "schedule").iterdir()] == ["tasks.beat.tick"]
