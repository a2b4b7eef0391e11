"""Worker processes: start in their own process group, stop by PID with bounded waits,
and measure their memory."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (its PID is its process group id), logging to ``log``.

    The repository root goes first on ``PYTHONPATH`` so workers import ``benchmarks.peers``.
    """
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            env={**os.environ, "PYTHONPATH": path, **env},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _live_processes() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, the fields of /proc/<pid>/stat after the command name) of every live
    process: fields[0] is the state, fields[1] the parent's PID, fields[2] the group."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if fields[0] != b"Z":
            yield int(entry.name), fields


def group_pids(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid`` (the worker and everything it forked)."""
    return [pid for pid, fields in _live_processes() if int(fields[2]) == pgid]


# Helpers a pool may start beside its workers; W5 kills workers, not these.
HELPERS = (b"resource_tracker", b"semaphore_tracker", b"forkserver")


def worker_children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid``, less multiprocessing's helper processes:
    the worker processes of a supervisor or consumer."""
    found = []
    for child, fields in _live_processes():
        if int(fields[1]) != pid:
            continue
        try:
            with open(f"/proc/{child}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if not any(h in cmdline for h in HELPERS):
            found.append(child)
    return sorted(found)


def kill_group(proc: subprocess.Popen[bytes], wait: float = 10.0) -> None:
    """SIGKILL ``proc``'s whole process group at once, then wait (bounded) until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(wait)
    deadline = time.monotonic() + wait
    while group_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def rss_mb(pgid: int) -> float:
    """Total resident memory of the process group, in MB (shared pages counted once per
    process, as ``ps`` adds them up)."""
    total = 0
    for pid in group_pids(pgid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def stop(proc: subprocess.Popen[bytes], term_wait: float = 20.0, kill_wait: float = 10.0) -> str:
    """SIGTERM the worker; SIGKILL its whole group if it is not gone within ``term_wait``.

    Returns how it ended: "exited" or "killed". Children that outlive their parent
    (they keep its process group) are killed too, so nothing is left running.
    """
    how = "exited"
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(term_wait)
        except subprocess.TimeoutExpired:
            how = "killed"
    deadline = time.monotonic() + (term_wait if how == "exited" else 0)
    while group_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if group_pids(proc.pid):
        how = "killed"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(kill_wait)
    return how


def log_tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])
