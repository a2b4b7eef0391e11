"""Export and import of a deep queue: messages per second and peak memory.

    python -m benchmarks.export_import [--sizes 10000,100000] [--no-redis]

Fills a broker with N ready messages (a plain call each), then times
``taskq export FILE`` and ``taskq import FILE`` (into an empty broker of the
same key) as separate processes, and reads each process's RSS high-water mark
(VmHWM, read by the process as it exits). Flat memory shows as the same peak at 10k and 100k.
Runs on the file broker, and on Redis (127.0.0.1:6379, skipped if it does not
answer) under a prefix of its own, deleted afterwards.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from taskq.app import App
from taskq.message import Message, dump_call, new_id

REDIS = "redis://127.0.0.1:6379/0"


def fill(app: App, count: int) -> None:
    now = time.time()
    payload = dump_call("bench.add", (1, 2), {})
    batch = (
        (Message(id=new_id(), task="bench.add", created=now + i * 1e-6), payload)
        for i in range(count)
    )
    app.publish_many(batch)


# The command in a process of its own that reports its own peak RSS (VmHWM) at
# exit: wait4's ru_maxrss would also count this process's memory at the fork.
_REPORTING = """
import atexit, os, sys
def report():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["PEAK_RSS_FILE"], "w") as out:
        out.write(peak)
atexit.register(report)
sys.argv[0] = "taskq"
from taskq.cli import main
main()
"""


def timed(*args: str, cwd: Path) -> tuple[float, float, float]:
    """Run ``taskq ARGS``; its wall time (s), CPU time (s) and peak RSS (MB).

    CPU time says more than wall time on a machine busy with other work."""
    peak_file = cwd / "peak-rss"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKQ_")}
    env["PEAK_RSS_FILE"] = str(peak_file)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", _REPORTING, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"taskq {' '.join(args)} failed")
    return elapsed, usage.ru_utime + usage.ru_stime, int(peak_file.read_text()) / 1024


def run(kind: str, source: str, destination: str, count: int, work: Path) -> str:
    fill(App(broker=source), count)
    backup = work / f"{kind}-{count}.jsonl"
    export_s, export_cpu, export_mb = timed("--broker", source, "export", str(backup), cwd=work)
    import_s, import_cpu, import_mb = timed(
        "--broker", destination, "import", str(backup), "--keys-from", source, cwd=work
    )
    return (
        f"| {kind} | {count:,} | {count / export_s:,.0f} ({count / export_cpu:,.0f}) "
        f"| {export_mb:.0f} | {count / import_s:,.0f} ({count / import_cpu:,.0f}) "
        f"| {import_mb:.0f} |"
    )


def redis_answers() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping()
    except Exception:
        return False
    return True


def drop_redis(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--no-redis", action="store_true")
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    print(
        "| broker | messages | export msgs/s (per CPU-s) | peak RSS MB "
        "| import msgs/s (per CPU-s) | peak RSS MB |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="taskq-bench-export-") as tmp:
        work = Path(tmp)
        for count in sizes:
            source, destination = work / f"src-{count}", work / f"dst-{count}"
            App(broker=str(destination)).broker.keys()
            print(run("file", str(source), str(destination), count, work), flush=True)
        if options.no_redis or not redis_answers():
            return
        for count in sizes:
            tag = f"taskq-bench-export-{os.getpid()}-{count}"
            source, destination = f"{REDIS}?prefix={tag}-a:", f"{REDIS}?prefix={tag}-b:"
            try:
                App(broker=destination).broker.keys()
                print(run("redis", source, destination, count, work), flush=True)
            finally:
                drop_redis(tag)


if __name__ == "__main__":
    main()
