"""Export and import of a deep queue: messages per second and peak memory.

    python -m benchmarks.export_import [--sizes 10000,100000] [--runs N] [--no-redis]

Fills a broker with N ready messages (a plain call each), then times
``taskq export FILE`` and ``taskq import FILE`` (into an empty broker of the
same key) as separate processes, and reads each process's RSS high-water mark
(VmHWM, read by the process as it exits). Flat memory shows as the same peak at 10k and 100k.
Runs on the file broker, and on Redis (127.0.0.1:6379, skipped if it does not
answer) under a prefix of its own, deleted afterwards.

After each file broker run, a row "file, ceiling" gives the filesystem's own
rate for creating as many files of a message's size in one folder, the way
the broker places them, in the same minutes: the most an import could reach.

Each run's folders are placed in block groups of their own and each timed
phase waits for file creates to be quick again (``scenarios.QuietDisk``, as
the side-by-side suite does): on ext4, a run's creates right after many
deletes (the last run's folders removed) are 5-20x slower for a minute or
more, which would measure the disk's recovery instead of taskq.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from taskq.app import App
from taskq.brokers.fs import link_new, usable_cores
from taskq.message import Message, dump_call, new_id

from .scenarios import QuietDisk, spread_subfolders

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


def run(kind: str, source: str, destination: str, count: int, work: Path, quiet: QuietDisk) -> str:
    fill(App(broker=source), count)
    backup = work / f"{kind}-{count}.jsonl"
    waited = quiet.wait(work)
    export_s, export_cpu, export_mb = timed("--broker", source, "export", str(backup), cwd=work)
    waited += quiet.wait(work)
    import_s, import_cpu, import_mb = timed(
        "--broker", destination, "import", str(backup), "--keys-from", source, cwd=work
    )
    backup.unlink()
    return (
        f"| {kind} | {count:,} | {count / export_s:,.0f} ({count / export_cpu:,.0f}) "
        f"| {export_mb:.0f} | {count / import_s:,.0f} ({count / import_cpu:,.0f}) "
        f"| {import_mb:.0f} | {waited:.0f} |"
    )


def ceiling(count: int, size: int, work: Path, quiet: QuietDisk) -> str:
    """The filesystem's own rate for what an import into the file broker must do
    at least: ``count`` new files of ``size`` bytes in one folder, each written
    nameless and linked into place (``fs.link_new``, as the broker places a
    message), two threads as the broker uses on two cores. No taskq code else."""
    folder = work / "ceiling"
    folder.mkdir()
    data = b"x" * size
    lanes = 2 if usable_cores() > 1 else 1  # as the broker decides

    def lane(k: int) -> None:
        for i in range(k, count, lanes):
            if not link_new(str(folder), str(folder / f"{i:012d}"), data):
                raise SystemExit("no O_TMPFILE here: no ceiling to measure")

    waited = quiet.wait(work)
    threads = [threading.Thread(target=lane, args=(k,)) for k in range(lanes)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    return f"| file, ceiling | {count:,} | | | {count / elapsed:,.0f} | | {waited:.0f} |"


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
    parser.add_argument("--runs", type=int, default=1, help="runs of each size and broker")
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    print(
        "| broker | messages | export msgs/s (per CPU-s) | peak RSS MB "
        "| import msgs/s (per CPU-s) | peak RSS MB | disk wait s |"
    )
    print("|---|---|---|---|---|---|---|")
    quiet = QuietDisk()
    with tempfile.TemporaryDirectory(prefix="taskq-bench-export-") as tmp:
        work = Path(tmp)
        spread_subfolders(work)
        for count in sizes:
            for n in range(options.runs):
                # Each run's folders in block groups of their own; none removed until the end.
                run_dir = work / f"file-{count}-{n}"
                run_dir.mkdir()
                source, destination = run_dir / "source", run_dir / "destination"
                App(broker=str(destination)).broker.keys()
                print(run("file", str(source), str(destination), count, run_dir, quiet), flush=True)
                size = next(source.glob("queues/*/ready/*")).stat().st_size  # one message
                print(ceiling(count, size, run_dir, quiet), flush=True)
        if options.no_redis or not redis_answers():
            return
        for count in sizes:
            for n in range(options.runs):
                tag = f"taskq-bench-export-{os.getpid()}-{count}-{n}"
                source, destination = f"{REDIS}?prefix={tag}-a:", f"{REDIS}?prefix={tag}-b:"
                try:
                    App(broker=destination).broker.keys()
                    print(run("redis", source, destination, count, work, quiet), flush=True)
                finally:
                    drop_redis(tag)


if __name__ == "__main__":
    main()
