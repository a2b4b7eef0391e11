"""Trust and keys against real `taskq worker` processes: a broker owned by
another user is refused at start and noticed while running; a lost key is
never silently replaced; a rotation is taken by a worker running throughout."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import itasks
import pytest
from helpers import wait_for
from test_bad_input import assert_one_line_error, run_refused_worker
from test_cli import fails_in_one_line, taskq

from taskq.app import App
from taskq.brokers.file import FileBroker
from taskq.testing import WorkerProcess

HERE = Path(__file__).parent
OTHER = 65534  # nobody
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="giving the broker to another user (chown) needs root"
)


def other_user() -> str:
    return pwd.getpwuid(OTHER).pw_name


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


@needs_root
def test_worker_on_a_broker_owned_by_another_user_refuses_to_start(broker_dir: Path) -> None:
    FileBroker(broker_dir).keys()
    os.chown(broker_dir, OTHER, -1)

    returncode, stderr = run_refused_worker(
        "--broker", str(broker_dir), "worker", "-A", "itasks", "--concurrency", "1"
    )

    assert returncode == 1
    assert_one_line_error(
        stderr, f"broker folder {broker_dir} is owned by {other_user()}", "chown -R", "broker_users"
    )
    assert not (broker_dir / "workers").exists()  # refused before registering


@needs_root
def test_running_worker_stops_when_its_broker_is_given_to_another_user(
    worker: Callable[..., WorkerProcess], broker_dir: Path, taskq_app: App
) -> None:
    w = worker("itasks", concurrency=1, cwd=HERE, env={"TASKQ_TRUST_CHECK_INTERVAL": "0.3"})
    assert itasks.add.delay(1, 2).get(timeout=10) == 3
    children = w.child_pids()
    assert children

    os.chown(broker_dir, OTHER, -1)
    try:
        wait_for(lambda: w.popen.poll() is not None, timeout=15, what="the worker to stop")
    finally:
        os.chown(broker_dir, 0, -1)

    assert w.popen.returncode == 1
    log = w.log()
    assert "Broker no longer trusted, stopping" in log
    assert f"taskq: error: broker folder {broker_dir} is owned by {other_user()}" in log
    wait_for(lambda: not any(alive(pid) for pid in children), timeout=10, what="its children")


def produce(broker_dir: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new producer process on ``broker_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=HERE,
        env={**env, "TASKQ_BROKER": str(broker_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_new_producer_does_not_replace_a_deleted_key_while_messages_wait(
    start_worker: Callable[..., WorkerProcess], broker_dir: Path, taskq_app: App
) -> None:
    w = start_worker(concurrency=1)
    waiting = [itasks.add.apply_async((i, 1), countdown=60) for i in range(3)]
    (broker_dir / "secret").unlink()

    done = produce(broker_dir, "import itasks; itasks.add.delay(1, 2)")

    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("taskq.errors.BrokerError: signing key"), done.stderr
    assert f"{broker_dir / 'secret'} is missing, yet 3 message(s)" in last
    assert "restore it from a backup" in last
    assert not (broker_dir / "secret").exists()
    assert len(os.listdir(broker_dir / "queues" / "default" / "scheduled")) == len(waiting)
    assert w.popen.poll() is None  # the running worker keeps the key it read


def test_an_empty_broker_gets_a_key_from_its_first_producer(broker_dir: Path) -> None:
    done = produce(broker_dir, "import itasks; print(itasks.add.delay(1, 2).id)")

    assert done.returncode == 0, done.stderr
    assert len((broker_dir / "secret").read_bytes()) == 64


def test_key_rotation_with_a_worker_running_throughout(
    start_worker: Callable[..., WorkerProcess], broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    w = start_worker(concurrency=1)
    before = [itasks.add.apply_async((i, 100), countdown=8) for i in range(3)]
    old_key = (broker_dir / "secret").read_bytes()

    rotated = taskq("--broker", str(broker_dir), "key", "rotate", cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    assert (broker_dir / "secret").read_bytes() != old_key
    assert (broker_dir / "secret.previous").read_bytes().split() == [old_key]

    time.sleep(2.2)  # prune waits this long after a rotation for producers to follow
    refused = taskq("--broker", str(broker_dir), "key", "prune", cwd=tmp_path)
    fails_in_one_line(refused, "3 message(s) and 0 result(s)", "previous key")

    after = [itasks.add.delay(i, 200) for i in range(3)]  # this producer, since before
    fresh = produce(broker_dir, "import itasks; print(itasks.add.delay(5, 5).id)")
    assert fresh.returncode == 0, fresh.stderr
    after.append(taskq_app.AsyncResult(fresh.stdout.strip()))

    assert [r.get(timeout=20) for r in after] == [200, 201, 202, 10]
    assert [r.get(timeout=30) for r in before] == [100, 101, 102]
    assert os.listdir(broker_dir / "queues" / "default" / "dead") == []
    assert w.popen.poll() is None

    pruned = taskq("--broker", str(broker_dir), "key", "prune", cwd=tmp_path)
    assert pruned.returncode == 0, pruned.stderr
    assert "dropped 1 previous key(s)" in pruned.stdout
    assert not (broker_dir / "secret.previous").exists()
    assert itasks.add.delay(2, 2).get(timeout=10) == 4
