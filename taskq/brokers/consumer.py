"""A file-broker consumer: claims messages by renaming them into its own folder.

Listing a folder costs ~0.4 µs per entry, so a consumer lists ready/ only
when its cached listing runs dry or events were lost; otherwise new names come
from the wake-up events themselves. The cost of a claim does not grow with
the depth of the queue.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import UnsafeEntry
from .base import Delivery
from .fs import hold_lock, read_signed, release_lock
from .trust import Trust
from .wakeup import Waiter, watch

_LOCK = ".lock"


class _Queue:
    """One queue as this consumer sees it: a heap of ready/ names, refreshed lazily."""

    def __init__(self, qdir: Path, consumer: str) -> None:
        self.name = qdir.name
        self.ready = str(qdir / "ready")
        self.claimed = str(qdir / "claimed" / consumer)
        self.names: list[str] = []
        self.stale = True

    def relist(self) -> None:
        self.names = os.listdir(self.ready)
        heapq.heapify(self.names)
        self.stale = False


class FileConsumer:
    def __init__(
        self,
        queue_dirs: Sequence[Path],
        name: str,
        poll_interval: float = 1.0,
        *,
        watcher: str = "auto",
        trust: Trust | None = None,
    ) -> None:
        """``watcher`` picks the wake-up source: "auto", "inotify", "watchdog", or
        anything else to poll every ``poll_interval`` seconds; ``trust`` gives
        the modes of this consumer's folder and lock (shared with a group or not)."""
        self.name = name
        self.poll_interval = poll_interval
        self._queues = [_Queue(d, name) for d in queue_dirs]
        shared = trust is not None and trust.gid is not None
        self._lock_fds = [_register(d / "claimed", name, shared) for d in queue_dirs]
        self._by_folder = {q.ready: q for q in self._queues}
        self._waiter = Waiter(watch([q.ready for q in self._queues], prefer=watcher))

    def claim(self, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + timeout
        while True:
            self._take_events()
            delivery = self._claim_listed()
            if delivery is not None:
                return delivery
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self._waiter.watcher is None:
                remaining = min(remaining, self.poll_interval)
            happened = self._waiter.wait(remaining)
            if self._waiter.woken:  # wake(): hand control back to the caller now
                self._waiter.woken = False
                return None
            if not happened:
                # No event for a while: list again next time, as a safety net
                # for names that arrived in ways inotify does not report.
                for queue in self._queues:
                    queue.stale = True
                if self._waiter.watcher is not None:
                    return None

    def _take_events(self) -> None:
        watcher = self._waiter.watcher
        if watcher is None:
            return
        arrivals = watcher.read()
        if arrivals is None:
            for queue in self._queues:
                queue.stale = True
            return
        for folder, name in arrivals:
            listed = self._by_folder.get(folder)
            if listed is not None and not listed.stale:
                heapq.heappush(listed.names, name)

    def _claim_listed(self) -> Delivery | None:
        # Queues in priority order: the first one with a claimable name wins.
        for queue in self._queues:
            if queue.stale:
                queue.relist()
            while queue.names:
                name = heapq.heappop(queue.names)
                target = os.path.join(queue.claimed, name)
                try:
                    os.rename(os.path.join(queue.ready, name), target)
                except FileNotFoundError:
                    continue  # another consumer won it
                delivery = read_claimed(queue.name, target, name, self.name)
                if delivery is not None:
                    return delivery
        return None

    def wake(self) -> None:
        self._waiter.wake()

    def close(self) -> None:
        self._waiter.close()
        for fd in self._lock_fds:
            with contextlib.suppress(OSError):
                release_lock(fd)
        self._lock_fds = []


def read_claimed(queue: str, path: str, name: str, consumer: str) -> Delivery | None:
    """The claimed entry at ``path`` as a delivery (None if it is gone).

    Anything but a regular file is claimed all the same (a rename moves any
    entry) and comes back marked ``unsafe``, unread, for the worker to
    quarantine in dead/ with the reason.
    """
    try:
        data = read_signed(path)
    except UnsafeEntry as exc:
        return Delivery(queue, name, b"", consumer, unsafe=str(exc))
    return None if data is None else Delivery(queue, name, data, consumer)


def _register(claimed_root: Path, name: str, shared: bool = False) -> int:
    """Make this consumer's folder and hold its lock for the consumer's whole life.

    The folder is prepared under a dotted name and renamed into place only
    once locked, so a sweeper never mistakes a consumer being born for a dead one.
    The kernel drops the lock when the process dies, even on SIGKILL.
    ``shared``: the broker's group may recover it (take the lock, move the files).
    """
    final = claimed_root / name
    if final.exists():
        raise FileExistsError(f"consumer {name} already exists in {claimed_root}")
    staging = claimed_root / f".new-{name}"
    staging.mkdir(mode=0o770 if shared else 0o700)  # claimed/ is setgid: the group follows
    fd = hold_lock(staging / _LOCK, 0o660 if shared else 0o600)
    os.rename(staging, final)
    return fd
