"""A full disk under a real broker (a 2 MB tmpfs): `.delay()` either puts the
whole message in place or raises `DiskFull`; nothing partial is ever visible,
and every accepted message runs exactly once when space returns."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import itasks_faults
import pytest
from helpers import wait_for
from itasks import lines

from taskq.app import App, set_default_app
from taskq.errors import DiskFull
from taskq.message import decode
from taskq.testing import WorkerProcess

FILLER = 256 * 1024  # bytes set aside before filling, freed to give the worker room


@pytest.fixture
def broker_dir(small_disk: Path) -> Path:  # the plugin's fixtures put the broker on the tmpfs
    return small_disk / "broker"


def publish_until_full(send: Callable[[int], object], tries: int) -> tuple[list[int], int]:
    """Call ``send(i)`` ``tries`` times: the i accepted, and how many raised DiskFull."""
    accepted, refused = [], 0
    for i in range(tries):
        try:
            send(i)
        except DiskFull:
            refused += 1
        else:
            accepted.append(i)
    return accepted, refused


def assert_nothing_partial(app: App, broker_dir: Path) -> None:
    queue = broker_dir / "queues" / "default"
    assert os.listdir(queue / "tmp") == []
    for name in os.listdir(queue / "ready"):
        decode((queue / "ready" / name).read_bytes(), app.key)  # whole and signed


def drain(start_worker: Callable[..., WorkerProcess], app: App, log: Path, count: int) -> None:
    worker = start_worker(modules="itasks_faults")
    wait_for(lambda: len(lines(str(log))) >= count, timeout=60, what=f"{count} tasks to run")
    wait_for(lambda: app.broker.counts()["default"].claimed == 0, timeout=10, what="the last acks")
    worker.stop()


def test_delay_on_a_full_disk_raises_and_every_accepted_message_runs_once(
    taskq_app: App, start_worker: Callable[..., WorkerProcess], broker_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "ran"
    taskq_app.broker.queue_dir("default")
    filler = broker_dir.parent / "filler"
    filler.write_bytes(b"\0" * FILLER)

    # New files: stopped by the disk, not by taskq.
    first, refused = publish_until_full(
        lambda i: itasks_faults.note_padded.delay(str(log), i, "y" * 10_000), tries=400
    )
    assert refused > 0 and len(first) > 50
    assert_nothing_partial(taskq_app, broker_dir)

    filler.unlink()
    drain(start_worker, taskq_app, log, len(first))
    assert sorted(int(n) for n in lines(str(log))) == first
    assert len(os.listdir(broker_dir / "spare")) == len(first)  # acked files kept for reuse

    # Recycled spares that must grow to hold a bigger message: the disk runs out
    # mid-rewrite, and the spare is dropped rather than left half written.
    filler.write_bytes(b"\0" * FILLER)
    log.unlink()
    set_default_app(App(broker=str(broker_dir)))  # a new producer: it lists spare/ at once
    second, refused = publish_until_full(
        lambda i: itasks_faults.note_padded.delay(str(log), i, "z" * 30_000), tries=100
    )
    assert refused > 0 and second
    assert_nothing_partial(taskq_app, broker_dir)

    filler.unlink()
    drain(start_worker, taskq_app, log, len(second))
    assert sorted(int(n) for n in lines(str(log))) == second
    assert taskq_app.broker.dead_letters() == []


def test_a_result_that_cannot_be_stored_waits_for_space_and_the_task_runs_once(
    taskq_app: App, start_worker: Callable[..., WorkerProcess], broker_dir: Path, tmp_path: Path
) -> None:
    log = tmp_path / "ran"
    worker = start_worker(modules="itasks_faults", concurrency=1)
    result = itasks_faults.note_and_return.apply_async((str(log), 7), countdown=1.0)
    filler = broker_dir.parent / "filler"
    with pytest.raises(OSError), open(filler, "wb") as f:
        for _ in range(1000):
            f.write(b"\0" * 65536)
            f.flush()

    wait_for(lambda: lines(str(log)) == ["7"], timeout=20, what="the task to run")
    wait_for(lambda: "Cannot settle a message" in worker.log(), timeout=10, what="the settle error")
    assert result.status != "SUCCESS"

    filler.unlink()
    assert result.get(timeout=20) == 7
    assert lines(str(log)) == ["7"]  # stored once space returned, never run again
    assert worker.log().count("Cannot settle a message") == 1
    assert taskq_app.broker.dead_letters() == []
