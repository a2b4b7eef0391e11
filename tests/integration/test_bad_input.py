"""Hostile and broken input: files a worker must dead-letter without running
(or unpickling) them, an unsafe broker root, and queue names that climb out."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import itasks
import pytest
from helpers import wait_for

from taskq.app import App
from taskq.errors import TaskqError
from taskq.keys import Keyring
from taskq.message import Message, dump_call, encode, new_id, seal

HERE = Path(__file__).parent


class CreatesMarker:
    """Unpickling this creates a file: proof that a payload was loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (self.marker, "w")


def drop(broker_dir: Path, name: str, data: bytes) -> None:
    """Put a file in ready/ whole, as a publisher would (written aside, then renamed)."""
    queue = broker_dir / "queues" / "default"
    aside = queue / "tmp" / f"drop-{name}"
    aside.write_bytes(data)
    os.rename(aside, queue / "ready" / name)


def dead_records(broker_dir: Path) -> dict[str, dict[str, Any]]:
    folder = broker_dir / "queues" / "default" / "dead"
    return {
        name.removesuffix(".json"): json.loads((folder / name).read_text())
        for name in os.listdir(folder)
        # The record is written first, then the message is moved beside it.
        if name.endswith(".json") and (folder / name.removesuffix(".json")).is_file()
    }


def run_taskq(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    return subprocess.run(
        [sys.executable, "-m", "taskq", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def message_name(kind: str) -> str:
    """A ready/ name that sorts like a real one (priority 9 first), ending in ``kind``."""
    return f"0-{int(time.time() * 1e6):017d}-{kind}"


def test_garbage_truncated_forged_and_unknown_messages_are_dead_lettered_and_never_loaded(
    start_worker, broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    w = start_worker()
    children = w.child_pids()
    marker = tmp_path / "marker"

    evil = Message(id=new_id(), task=itasks.add.name, created=time.time())
    forged = seal(
        dataclasses.asdict(evil),
        b"p" + pickle.dumps(CreatesMarker(str(marker))),
        Keyring(b"not the broker's key"),
    )
    ghost = Message(id=new_id(), task="itasks.no_such_task", created=time.time())
    unknown = encode(ghost, dump_call(ghost.task, (1,), {}), taskq_app.key)
    real = itasks.add.message((1, 2), {})
    sealed = encode(real, dump_call(real.task, (1, 2), {}), taskq_app.key)

    kinds = ("garbage", "truncated", "forged", "unknown")
    names = {kind: message_name(kind) for kind in kinds}
    drop(broker_dir, names["garbage"], b"this is not a taskq message\n" * 10)
    drop(broker_dir, names["truncated"], sealed[: len(sealed) // 2])
    drop(broker_dir, names["forged"], forged)
    drop(broker_dir, names["unknown"], unknown)

    wait_for(lambda: len(dead_records(broker_dir)) == 4, timeout=10, what="4 dead letters")
    records = {kind: dead_records(broker_dir)[name] for kind, name in names.items()}
    assert {kind: r["reason"] for kind, r in records.items()} == {
        "garbage": "undecodable",
        "truncated": "undecodable",
        "forged": "bad-signature",
        "unknown": "unknown-task",
    }
    dead = broker_dir / "queues" / "default" / "dead"
    assert all((dead / name).is_file() for name in names.values())
    assert records["garbage"]["exc_type"] == "MessageError"
    assert records["truncated"]["exc_type"] == "MessageError"
    assert "truncated" in records["truncated"]["exc_message"]
    assert records["forged"]["exc_type"] == "BadSignature"
    assert records["unknown"]["exc_type"] == "TaskNotFound"
    assert records["unknown"]["id"] == ghost.id
    assert "itasks.no_such_task" in records["unknown"]["exc_message"]
    assert os.listdir(broker_dir / "queues" / "default" / "ready") == []
    assert not marker.exists()

    # The worker and its children live on and still run tasks.
    assert itasks.add.delay(2, 3).get(timeout=10) == 5
    assert w.popen.poll() is None
    assert w.child_pids() == children
    assert not marker.exists()


def run_refused_worker(*args: str) -> tuple[int, str]:
    """Run `taskq ARGS` expecting it to refuse to start; its exit code and stderr.

    Bounded: a worker that starts after all is killed (with its children) and fails the test.
    """
    worker = subprocess.Popen(
        [sys.executable, "-m", "taskq", *args],
        cwd=HERE,
        env={k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
    return worker.returncode, stderr


def test_world_writable_broker_root_is_refused_in_one_line(tmp_path: Path) -> None:
    root = tmp_path / "open"
    root.mkdir()
    root.chmod(0o777)
    assert stat.S_IMODE(root.stat().st_mode) & stat.S_IWOTH

    returncode, stderr = run_refused_worker("--broker", str(root), "worker", "-A", "itasks")

    assert returncode != 0
    assert_one_line_error(stderr, str(root), "world-writable")
    assert os.listdir(root) == []


def snapshot(folder: Path, skip: Path) -> set[str]:
    return {
        str(Path(dirpath, name).relative_to(folder))
        for dirpath, dirnames, filenames in os.walk(folder)
        if not Path(dirpath).is_relative_to(skip)
        for name in dirnames + filenames
    }


@pytest.mark.parametrize(
    "command",
    [
        ("purge", "../x", "--yes"),
        ("purge", "../../x", "--yes"),
        ("dead", "list", "--queue", "../x"),
        ("dead", "purge", "--queue", "../x", "--yes"),
        ("result", "../x"),
    ],
)
def test_cli_rejects_paths_as_queue_names_and_ids(
    broker_dir: Path, tmp_path: Path, taskq_app: App, command: tuple[str, ...]
) -> None:
    itasks.add.delay(1, 2)  # the broker exists, with a real queue
    before = snapshot(tmp_path, broker_dir)

    result = run_taskq("--broker", str(broker_dir), *command, cwd=tmp_path)

    assert result.returncode != 0
    assert_one_line_error(result.stderr, "../x", "invalid")
    assert snapshot(tmp_path, broker_dir) == before
    assert sorted(os.listdir(broker_dir / "queues")) == ["default"]
    assert len(os.listdir(broker_dir / "queues" / "default" / "ready")) == 1


def test_apply_async_rejects_a_queue_name_that_is_a_path(
    broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    itasks.add.delay(1, 2)
    before = snapshot(tmp_path, broker_dir)
    for queue in ("../x", "../../x", "/tmp/x", "a/b", ".."):
        with pytest.raises(TaskqError, match="invalid queue name"):
            itasks.add.apply_async((1, 2), queue=queue)
    assert snapshot(tmp_path, broker_dir) == before
    assert sorted(os.listdir(broker_dir / "queues")) == ["default"]


def test_worker_rejects_a_queue_name_that_is_a_path(
    broker_dir: Path, tmp_path: Path, taskq_app: App
) -> None:
    itasks.add.delay(1, 2)
    before = snapshot(tmp_path, broker_dir)
    returncode, stderr = run_refused_worker(
        "--broker", str(broker_dir), "worker", "-A", "itasks", "-Q", "../x", "--concurrency", "1"
    )

    assert returncode != 0
    assert_one_line_error(stderr, "../x", "invalid queue name")
    assert snapshot(tmp_path, broker_dir) == before
