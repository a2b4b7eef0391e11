"""Memory of an idle worker with two processes: taskq against Celery's prefork pool.

    python -m benchmarks.memory

Starts `taskq worker --concurrency 2` and `celery worker --pool prefork
--concurrency 2` (Redis broker at 127.0.0.1:6379, skipped if it does not
answer), waits until they are idle, and sums the RSS of each one's whole
process tree (PSS too: RSS counts pages shared after fork once per process).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REDIS_PREFIX = f"taskq-bench-memory-{os.getpid()}:"
SETTLE = 5.0  # seconds for the workers to finish starting and go idle


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        pids += map(int, children)
        frontier += map(int, children)
    return pids


def memory_kb(pids: list[int]) -> tuple[int, int]:
    rss = pss = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss


def measure(name: str, command: list[str], env: dict[str, str], cwd: Path) -> None:
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(SETTLE)
        if proc.poll() is not None:
            print(f"{name}: exited with {proc.returncode} before it was measured")
            return
        pids = tree(proc.pid)
        rss, pss = memory_kb(pids)
        print(
            f"{name:<28} {len(pids)} processes  RSS {rss / 1024:6.1f} MB  PSS {pss / 1024:6.1f} MB"
        )
    finally:
        pids = tree(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait(10)


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def _forget_celery_keys() -> None:
    """Delete the keys kombu made for our queue (the Redis server is shared: only ours)."""
    _forget_redis_keys("*taskq-bench-memory*")


def _forget_redis_keys(pattern: str) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    for key in client.scan_iter(match=pattern):
        client.delete(key)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="taskq-mem-"))
    try:
        for label, broker in (
            ("taskq (file broker)", str(work / "broker")),
            ("taskq (Redis broker)", f"redis://127.0.0.1:6379/0?prefix={REDIS_PREFIX}"),
        ):
            if broker.startswith("redis") and not redis_answers():
                print(f"{label}: skipped, Redis at 127.0.0.1:6379 does not answer")
                continue
            argv = ["-m", "taskq", "--broker", broker, "worker", "-A", "bench_tasks"]
            measure(
                label,
                [sys.executable, *argv, "--concurrency", "2", "--loglevel", "WARNING"],
                {"BENCH_OUT": str(work), "PYTHONPATH": str(HERE)},
                HERE,
            )
        _forget_redis_keys(f"{REDIS_PREFIX}*")
        if not redis_answers():
            print("celery prefork: skipped, Redis at 127.0.0.1:6379 does not answer")
            return
        try:
            import celery  # noqa: F401
        except ImportError:
            print("celery prefork: skipped, celery is not installed (pip install -e '.[bench]')")
            return
        app = work / "celery_mem_app.py"
        app.write_text(
            "from celery import Celery\n"
            "app = Celery('mem', broker='redis://127.0.0.1:6379/0')\n"
            "app.conf.task_default_queue = 'taskq-bench-memory'\n"
            "@app.task\ndef noop(i):\n    return None\n"
        )
        try:
            measure(
                "celery prefork (Redis)",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "celery_mem_app",
                    "worker",
                    "--pool",
                    "prefork",
                    "--concurrency",
                    "2",
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                {"PYTHONPATH": str(work)},
                work,
            )
        finally:
            _forget_celery_keys()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
