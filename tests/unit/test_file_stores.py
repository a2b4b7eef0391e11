"""Tests for the registry of supervisors in taskq.brokers.file_stores: what a
dead supervisor leaves is swept, never a live one's or one being registered."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from taskq.brokers.file import FileBroker

REGISTER = """
import sys, time
from taskq.brokers.file import FileBroker
broker = FileBroker(sys.argv[1])
broker.register_worker(sys.argv[2])
broker.publish_worker_state(sys.argv[2], {"name": sys.argv[2]})
print("registered", flush=True)
time.sleep(60)
"""


def files(broker: FileBroker) -> list[str]:
    return sorted(os.listdir(broker.root / "workers"))


def test_files_of_a_dead_supervisor_are_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    broker = FileBroker(tmp_path / "broker")
    live = subprocess.Popen(
        [sys.executable, "-c", REGISTER, str(broker.root), "live"],
        stdout=subprocess.PIPE,
    )
    try:
        assert live.stdout is not None
        assert live.stdout.readline() == b"registered\n"
        dead = subprocess.run(
            [
                sys.executable,
                "-c",
                REGISTER.replace("time.sleep(60)", ""),
                str(broker.root),
                "dead",
            ],
            capture_output=True,
            timeout=30,
            check=True,
        )
        assert dead.stdout == b"registered\n"
        assert files(broker) == ["dead.json", "dead.lock", "live.json", "live.lock"]

        assert broker.forget_dead_workers() == ["dead"]
        assert files(broker) == ["live.json", "live.lock"]
        assert [s["name"] for s in broker.worker_states()] == ["live"]
    finally:
        live.kill()
        live.wait(10)
        if live.stdout is not None:
            live.stdout.close()
    assert broker.forget_dead_workers() == ["live"]
    assert files(broker) == []


def test_own_registration_is_kept(tmp_path: Path) -> None:
    broker = FileBroker(tmp_path / "broker")
    broker.register_worker("me")
    broker.publish_worker_state("me", {"name": "me"})
    assert broker.forget_dead_workers() == []
    assert files(broker) == ["me.json", "me.lock"]


def test_registration_leaves_no_unlocked_lock_and_litter_is_removed_only_when_old(
    tmp_path: Path,
) -> None:
    broker = FileBroker(tmp_path / "broker")
    broker.register_worker("me")
    folder = broker.root / "workers"
    # What a process killed mid-registration or mid-status-write leaves behind.
    fresh = folder / ".other.1234.lock"
    fresh.write_bytes(b"")
    old = folder / ".other.5678.tmp"
    old.write_bytes(b"{")
    os.utime(old, (time.time() - 120, time.time() - 120))

    assert broker.forget_dead_workers() == []
    assert files(broker) == [".other.1234.lock", "me.lock"]
