"""Real `taskq worker` processes on the Redis broker: draining, kills, lost connections.

Each test's workers share one Redis key prefix of the test's own (the
``redis_url`` fixture) with a liveness timeout of 2 s, so a killed worker's
claims come back within seconds. Runs are counted from files the tasks append
to (``itasks_redis``), not from what the broker under test says.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import astuple
from pathlib import Path

import pytest
import redis
from helpers import wait_for
from itasks_redis import runs, tally

from taskq.app import App
from taskq.current import default_app, set_default_app
from taskq.errors import BrokerUnavailable, TaskqError
from taskq.results import SUCCESS
from taskq.testing import WorkerProcess

LIVENESS = 2.0  # seconds: a dead consumer's claims are recovered soon after
CONCURRENCY = 2  # children per worker: at most this many tasks die with a worker
MODULES = "itasks,itasks_redis"


@pytest.fixture
def broker_dir(request: pytest.FixtureRequest) -> str:
    """The broker of this module's workers and ``taskq_app``: a Redis URL, not a folder.

    ``taskq.testing``'s ``worker`` and ``taskq_app`` fixtures pass ``broker_dir``
    on as the broker setting, so overriding it here runs them on Redis.
    """
    url = request.getfixturevalue("redis_url")
    return f"{url}&liveness_timeout={LIVENESS:g}"


@pytest.fixture
def start_workers(
    start_worker: Callable[..., WorkerProcess],
) -> Callable[[int], list[WorkerProcess]]:
    """Start ``count`` workers; the ``worker`` fixture stops them by PID when the test ends."""

    def start(count: int) -> list[WorkerProcess]:
        return [start_worker(modules=MODULES, concurrency=CONCURRENCY) for _ in range(count)]

    return start


def pids_of(workers: Iterable[WorkerProcess]) -> set[int]:
    """The supervisors and children of ``workers``."""
    return {pid for w in workers for pid in (w.pid, *w.child_pids())}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped yet, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def duplicates(ran: dict[int, list[int]]) -> dict[int, list[int]]:
    return {n: pids for n, pids in ran.items() if len(pids) > 1}


def assert_drained(app: App, timeout: float = 15.0) -> None:
    """Nothing ready, scheduled, claimed or dead: every ack has landed."""
    wait_for(
        lambda: astuple(app.broker.counts()["default"]) == (0, 0, 0, 0),
        timeout,
        f"an empty queue (counts now {app.broker.counts()['default']})",
    )


def test_two_workers_drain_5000_tasks_each_run_once(
    start_workers, taskq_app: App, tmp_path: Path
) -> None:
    workers = start_workers(2)
    folder = tmp_path / "runs"
    folder.mkdir()
    total = 5000

    tally.map([(str(folder), n) for n in range(total)])
    wait_for(lambda: len(runs(folder)) == total, 40, f"{total} tasks to run")

    assert_drained(taskq_app)
    ran = runs(folder)
    assert sorted(ran) == list(range(total))  # none missing
    assert duplicates(ran) == {}  # none twice
    for w in workers:  # both drained, not one of them alone
        assert set(w.child_pids()) & {pid for pids in ran.values() for pid in pids}, w.log()


def test_sigkilled_worker_loses_no_task_and_reruns_at_most_its_running_ones(
    start_workers, taskq_app: App, tmp_path: Path
) -> None:
    victim, survivor = start_workers(2)
    victim_pids = pids_of([victim])
    folder = tmp_path / "runs"
    folder.mkdir()
    total = 1500

    tally.map([(str(folder), n, 0.005) for n in range(total)])
    wait_for(lambda: len(runs(folder)) >= 300, 20, "300 tasks to run")
    victim.kill()  # supervisor and children, by PID, as a crash would
    assert not [pid for pid in victim_pids if alive(pid)], "the victim outlived SIGKILL"
    killed_at = len(runs(folder))
    assert killed_at < total, "the drain ended before the kill: make the tasks longer"

    wait_for(lambda: len(runs(folder)) == total, 40, f"the survivor to run all {total} tasks")
    assert_drained(taskq_app)
    ran = runs(folder)
    assert sorted(ran) == list(range(total))
    # Only what was running in the victim's children may run again.
    again = duplicates(ran)
    assert len(again) <= CONCURRENCY, again
    # Each of them once more, cut short in the victim and run again in the survivor.
    assert all(len(set(pids) & victim_pids) == 1 for pids in again.values()), again
    assert all(len(pids) == 2 for pids in again.values()), again
    assert "Recovered" in survivor.log(), survivor.log()
    assert survivor.popen.poll() is None


def test_task_longer_than_liveness_timeout_runs_once(
    start_workers, taskq_app: App, tmp_path: Path
) -> None:
    workers = start_workers(2)  # the idle one sweeps for dead consumers every second
    folder = tmp_path / "runs"
    folder.mkdir()
    seconds = 3 * LIVENESS

    result = tally.delay(str(folder), 0, seconds)
    wait_for(lambda: runs(folder), 10, "the long task to start")
    started = time.monotonic()

    assert result.get(timeout=seconds + 10) == 0
    assert time.monotonic() - started >= seconds - 0.5  # it ran its length, not cut short
    assert result.status == SUCCESS
    assert_drained(taskq_app)
    assert len(runs(folder)[0]) == 1
    for w in workers:
        assert "Recovered" not in w.log(), w.log()
        assert w.popen.poll() is None, w.log()


def kill_connections(server: str, pids: set[int]) -> set[int]:
    """``CLIENT KILL`` every connection of the processes ``pids``, and no one else's
    (this Redis is shared): taskq names each connection ``taskq-<host>-<pid>``.
    Returns the pids that lost a connection."""
    owners = {f"taskq-{socket.gethostname()}-{pid}": pid for pid in pids}
    client = redis.Redis.from_url(server)
    try:
        hit = set()
        for connection in client.client_list():
            pid = owners.get(connection["name"])
            if pid is not None and client.client_kill_filter(_id=connection["id"]):
                hit.add(pid)
        return hit
    finally:
        client.close()


def test_killed_redis_connections_lose_no_task(
    start_workers, taskq_app: App, broker_dir: str, tmp_path: Path
) -> None:
    workers = start_workers(2)
    children = {pid for w in workers for pid in w.child_pids()}
    server = broker_dir.partition("?")[0]
    folder = tmp_path / "runs"
    folder.mkdir()
    total = 2000

    tally.map([(str(folder), n, 0.002) for n in range(total)])
    for share in (0.25, 0.6):
        wait_for(lambda s=share: len(runs(folder)) >= s * total, 20, f"{share:.0%} of the tasks")
        # The supervisors' connections go too (their liveness refreshes, their sweeps).
        hit = kill_connections(server, pids_of(workers))
        assert children <= hit, f"children {children - hit} had no connection to kill"
        assert len(runs(folder)) < total, "the drain ended before the kill: make tasks longer"

    wait_for(lambda: len(runs(folder)) == total, 40, f"all {total} tasks to run")
    assert_drained(taskq_app)
    ran = runs(folder)
    assert sorted(ran) == list(range(total))
    assert duplicates(ran) == {}  # no liveness lapsed: nothing recovered, nothing rerun
    for w in workers:
        assert "Lost the connection to Redis" in w.log(), w.log()
        assert "Recovered" not in w.log(), w.log()
        assert "found no claim" not in w.log(), w.log()  # acks sent again are no alarm
        assert w.popen.poll() is None, w.log()


def test_delay_with_redis_down_raises_naming_the_url_in_bounded_time() -> None:
    url = "redis://127.0.0.1:1/0"  # port 1: nothing listens there
    previous = default_app()
    set_default_app(App(broker=url))
    try:
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable, match=re.escape(url)) as raised:
            tally.delay("/nonexistent", 0)
        took = time.monotonic() - started
    finally:
        set_default_app(previous)
    assert isinstance(raised.value, TaskqError)
    assert took < 15, f".delay() took {took:.1f} s to give up"


def test_a_named_worker_killed_and_started_again_at_once_gets_its_name_back(
    start_worker: Callable[..., WorkerProcess], redis_url: str
) -> None:
    # A liveness far longer than the test: the name must not come back by lapsing.
    url = f"{redis_url}&liveness_timeout=60"
    first = start_worker("--broker", url, "-n", "named@%h", concurrency=1)
    first.kill()  # SIGKILL, as the OOM killer would: its liveness key stays

    again = start_worker("--broker", url, "-n", "named@%h", concurrency=1)

    assert again.popen.poll() is None
    assert "Took over the name named@" in again.log(), again.log()
