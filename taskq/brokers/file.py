"""The file broker: a queue is a folder, a message is a file, a state change is a rename.

Layout under the root (created 0700)::

    secret                            the signing key, made once (0600)
    queues/<q>/tmp/                   being written; never read by consumers
    queues/<q>/ready/                 visible; names sort in delivery order
    queues/<q>/scheduled/             names start with the ETA
    queues/<q>/claimed/<consumer>/    one folder per live consumer, with a locked .lock
    queues/<q>/dead/                  dead messages, each beside <name>.json saying why
    events/events.jsonl               the event log, when events are on (file_events.py)
    results/<id>                      signed results
    rates/<task>                      when each rate-limited task's next slot starts (file_rates.py)
    unique/<key>                      a unique task's key: its holder's id (file_unique.py)

Every move is ``rename(2)`` within one filesystem, so a file is in exactly one
state and readers never see it half written.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import os
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..crashpoints import crash_point
from ..message import Message, new_id, validate_queue
from .base import Delivery
from .consumer import FileConsumer, read_claimed
from .file_admin import FileAdmin
from .file_events import FileEvents
from .file_rates import FileRates
from .file_revocations import FileRevocations
from .file_schedule import FileSchedule
from .file_stores import STATES
from .file_transfer import FileTransfer
from .fs import (
    fsync_dir,
    link_new,
    lock_is_free,
    prepare_root,
    raise_disk_full,
    release_lock,
    sync_files,
    try_lock,
    usable_cores,
    write_new,
)
from .names import eta_of, ready_name_of, scheduled_name
from .spares import SparePool
from .trust import Trust, check_umask, make_folder, private

_LOCK = ".lock"
_BATCH = 1000  # messages a durable publish_many makes durable with one flush
PROMOTE_MOST = 5000  # scheduled messages moved to ready/ per queue per promote_due call
_TWO_LANES_FROM = 64  # a batch this long is placed by two threads (a thread costs ~100 µs)


class FileBroker(FileEvents, FileAdmin, FileTransfer, FileSchedule, FileRates, FileRevocations):
    """A broker that is a directory. Safe for many processes on one host."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        durable: bool = False,
        poll_interval: float = 1.0,
        trust: Trust | None = None,
    ) -> None:
        """``trust``: whose folders and key to accept (default: the running user's only)."""
        self.root = Path(root).absolute()
        self.trust = private() if trust is None else trust
        self._mode = self.trust.file_mode
        self.durable = durable
        self.poll_interval = poll_interval
        self._queue_dirs: dict[str, Path] = {}
        self._recovering: dict[str, list[int]] = {}
        self._worker_locks: dict[str, int] = {}
        self._scheduled_seen: dict[str, tuple[int, float]] = {}
        self._nameless = True  # O_TMPFILE + linkat work here (until one fails)
        check_umask(self.trust)
        prepare_root(self.root, self.trust)
        self._results = self.root / "results"
        for folder in (self._results, self.root / "spare"):
            make_folder(folder, self.trust, self.root)
        self.spares = SparePool(self.root)

    def __repr__(self) -> str:
        return f"FileBroker({str(self.root)!r})"

    # -- layout ---------------------------------------------------------------

    def queue_dir(self, queue: str) -> Path:
        """The queue's folder, created with its state folders on first use."""
        path = self._queue_dirs.get(queue)
        if path is None:
            validate_queue(queue)
            path = self.root / "queues" / queue
            # Created and checked level by level, once a process: a queue that was
            # safe when first used stays cached, and publish checks nothing more.
            for folder in (path.parent, path, *(path / state for state in STATES)):
                make_folder(folder, self.trust, self.root)
            self._queue_dirs[queue] = path
        return path

    def queues(self) -> list[str]:
        with contextlib.suppress(FileNotFoundError):
            return sorted(e.name for e in os.scandir(self.root / "queues") if e.is_dir())
        return []

    def _claimed_path(self, d: Delivery) -> str:
        return os.path.join(self.root, "queues", d.queue, "claimed", d.consumer, d.name)

    # -- publishing -----------------------------------------------------------

    def _write_tmp(self, queue_dir: Path | str, data: bytes, sync: bool) -> str:
        tmp = self.spares.take(f"{queue_dir}/tmp", data, sync)
        if tmp is None:
            tmp = f"{queue_dir}/tmp/{new_id()}"
            write_new(tmp, data, sync, self._mode)
        return tmp

    def _target(self, message: Message) -> tuple[str, str]:
        if message.eta is not None and message.eta > time.time():
            return "scheduled", scheduled_name(message)
        return "ready", message.name

    def publish(self, message: Message, data: bytes) -> None:
        qdir = self.queue_dir(message.queue)
        state, name = self._target(message)
        try:
            self._place(qdir, state, name, data)
            crash_point("publish.visible")
            if self.durable:
                fsync_dir(qdir / state)
        except OSError as exc:
            raise_disk_full(exc, qdir / state)

    def _place(self, qdir: Path, state: str, name: str, data: bytes) -> None:
        # The message appears in its folder whole or not at all: a recycled spare
        # (no inode to allocate) rewritten in tmp/ and renamed, else a nameless
        # file linked in, else a new file written in tmp/ and renamed.
        target = f"{state}/{name}"
        tmp = self.spares.take(f"{qdir}/tmp", data, self.durable)
        if tmp is not None:
            crash_point("publish.written")
            self._into_view(tmp, qdir, target, data)
            return
        if self._nameless:
            if link_new(f"{qdir}/{state}", f"{qdir}/{target}", data, self.durable, self._mode):
                return
            # The filesystem cannot, unless the name was taken (the rename replaces it).
            self._nameless = os.path.exists(f"{qdir}/{target}")
        tmp = f"{qdir}/tmp/{new_id()}"
        write_new(tmp, data, self.durable, self._mode)
        crash_point("publish.written")
        self._into_view(tmp, qdir, target, data)

    def _into_view(self, tmp: str, qdir: Path, target: str, data: bytes) -> None:
        try:
            os.rename(tmp, f"{qdir}/{target}")
        except FileNotFoundError:
            # A recycled file swept from tmp/ as it was being rewritten (its old
            # mtime looked like litter): write a new one.
            tmp = f"{qdir}/tmp/{new_id()}"
            write_new(tmp, data, self.durable, self._mode)
            self._into_view(tmp, qdir, target, data)
        except OSError:
            # The folder cannot take another name (a full disk): nothing is visible.
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def publish_many(self, items: Iterable[tuple[Message, bytes]]) -> int:
        # Counted as messages become visible, for the error: those before the one that
        # failed, and those after it that a second thread placed meanwhile.
        published = [0, 0]
        try:
            for batch in _chunks(items):
                self._publish_batch(batch, published)
        except OSError as exc:
            before, after = published
            enqueued = f" for message {before + 1}; the {before} before it were enqueued"
            if after:
                enqueued += f", and {after} after it"
            raise_disk_full(exc, self.root / "queues", enqueued)
        return published[0]

    def _publish_batch(self, batch: Sequence[tuple[Message, bytes]], published: list[int]) -> None:
        if not self.durable:
            self._place_all(batch, published)
            return
        # Durable: write every file, make them all durable with one flush, then
        # rename them into view and flush each target folder once. One flush a
        # batch instead of two fsyncs a message.
        staged: list[tuple[str, Path, tuple[str, str]]] = []
        try:
            for message, data in batch:
                qdir = self.queue_dir(message.queue)
                staged.append((self._write_tmp(qdir, data, False), qdir, self._target(message)))
            sync_files(self.root, [tmp for tmp, _, _ in staged])
            crash_point("publish.written")
        except BaseException:
            for tmp, _, _ in staged:  # none of this batch is visible yet: leave none behind
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise
        touched = set()
        for (_, data), (tmp, qdir, (state, name)) in zip(batch, staged, strict=True):
            self._into_view(tmp, qdir, f"{state}/{name}", data)
            touched.add(qdir / state)
        crash_point("publish.visible")
        for folder in touched:
            fsync_dir(folder)
        published[0] += len(staged)

    def _place_all(self, batch: Sequence[tuple[Message, bytes]], published: list[int]) -> None:
        """Place each message of ``batch``, two at a time where two cores can: creating a
        file is mostly time in the kernel (no GIL held), so a second thread nearly
        doubles the rate (measured: 25k/s to 40k/s of 350 B files on this ext4).

        Every message before the first that fails is placed, as in a loop, so the
        error can say how many were enqueued; the other thread may have placed a
        few after it, counted in ``published[1]``.
        """
        lanes = 2 if len(batch) >= _TWO_LANES_FROM and usable_cores() > 1 else 1
        placed = [0] * lanes  # lane k places messages k, k + lanes, k + 2 * lanes, ...
        failed: list[tuple[int, BaseException]] = []
        end = [len(batch)]  # no lane starts a message from here on

        def place(lane: int) -> None:
            for i in range(lane, len(batch), lanes):
                if i >= end[0]:
                    return
                message, data = batch[i]
                try:
                    self._place(self.queue_dir(message.queue), *self._target(message), data)
                except BaseException as exc:
                    failed.append((i, exc))
                    end[0] = min(end[0], i)
                    return
                crash_point("publish.visible")
                placed[lane] += 1

        if lanes == 1:
            place(0)
        else:
            second = threading.Thread(target=place, args=(1,), name="taskq-publish")
            second.start()
            place(0)
            second.join()
        if not failed:
            published[0] += len(batch)
            return
        first, exc = min(failed, key=lambda f: f[0])
        published[0] += first
        published[1] += sum(placed) - first  # all before ``first`` are among them
        raise exc

    # -- consuming and settling ----------------------------------------------

    def open_consumer(
        self, queues: Sequence[str], name: str, *, watcher: str = "auto"
    ) -> FileConsumer:
        """A consumer of ``queues``; ``watcher`` forces a wake-up source (see ``wakeup.watch``)."""
        dirs = [self.queue_dir(validate_queue(q)) for q in queues]
        return FileConsumer(
            dirs, name, poll_interval=self.poll_interval, watcher=watcher, trust=self.trust
        )

    def ack(self, delivery: Delivery) -> None:
        self.spares.give(self._claimed_path(delivery), delivery.name)

    def retry_later(self, delivery: Delivery, message: Message, data: bytes) -> None:
        # The new attempt is visible before the old one goes: a crash between
        # the two leaves a duplicate, never a loss.
        self.publish(message, data)
        crash_point("retry.published")
        self.ack(delivery)

    def requeue(self, delivery: Delivery) -> None:
        ready = os.path.join(self.queue_dir(delivery.queue), "ready", delivery.name)
        os.rename(self._claimed_path(delivery), ready)

    def dead_letter(self, delivery: Delivery, record: Mapping[str, Any]) -> None:
        qdir = self.queue_dir(delivery.queue)
        self._write_dead_record(qdir, delivery.name, record)
        crash_point("dead.record-written")
        os.rename(self._claimed_path(delivery), qdir / "dead" / delivery.name)
        crash_point("dead.moved")

    def _write_dead_record(self, qdir: Path, name: str, record: Mapping[str, Any]) -> None:
        text = json.dumps(dict(record), indent=2, default=str).encode()
        os.rename(self._write_tmp(qdir, text, self.durable), qdir / "dead" / f"{name}.json")

    def promote_due(self, now: float) -> int:
        """At most ``PROMOTE_MOST`` per queue a call (the rest at the next call)."""
        moved = 0
        for queue in self.queues():
            scheduled = self.queue_dir(queue) / "scheduled"
            # Called every tick: list scheduled/ only when it changed or its
            # earliest ETA came due, not on every call.
            mtime = scheduled.stat().st_mtime_ns
            seen = self._scheduled_seen.get(queue)
            if seen is not None and seen[0] == mtime and now < seen[1]:
                continue
            next_eta = float("inf")
            names = sorted(os.listdir(scheduled))
            # Names taskq makes start with digits; one starting past "9" is not ours
            # and would sort after every future ETA: look at those too.
            foreign = names[bisect.bisect_left(names, ":") :]
            for promoted, name in enumerate(itertools.chain(foreign, names)):
                eta = eta_of(name)
                if eta > now or promoted == PROMOTE_MOST:
                    # At the bound, the rest waits for the next call: a supervisor's
                    # round is not held up by a backlog (its next listing finds them).
                    next_eta = eta if eta > now else now
                    break
                # A name that is not ours has no ETA (-1): it goes to ready/ as it is,
                # where a worker quarantines it like any bad entry.
                with contextlib.suppress(FileNotFoundError):
                    ready_name = ready_name_of(name) if eta >= 0 else name
                    os.rename(scheduled / name, scheduled.parent / "ready" / ready_name)
                    moved += 1
            # A directory's mtime ticks coarsely (a few ms): a name added in the tick
            # of this listing leaves it unchanged. Remember the listing only if the
            # mtime was already old when it was taken.
            listed = scheduled.stat().st_mtime_ns
            if listed / 1e9 < time.time() - 0.1:
                self._scheduled_seen[queue] = (listed, next_eta)
            else:
                self._scheduled_seen.pop(queue, None)
        return moved

    # -- dead consumers -------------------------------------------------------

    def _consumer_dirs(self, consumer: str) -> list[tuple[str, Path]]:
        dirs = [(q, self.root / "queues" / q / "claimed" / consumer) for q in self.queues()]
        return [(q, d) for q, d in dirs if d.is_dir()]

    def vouch(self, worker: str, consumers: Collection[str]) -> None:
        """Nothing to do: a consumer lives while its process holds its lock."""

    def has_consumer(self, consumer: str) -> bool:
        # Its claimed/<consumer>/ folders appear, already locked, when open_consumer
        # returns, and go with forget_consumer.
        return bool(self._consumer_dirs(consumer))

    def dead_consumers(self) -> list[str]:
        names = set()
        for queue in self.queues():
            with contextlib.suppress(FileNotFoundError):
                for entry in os.scandir(self.root / "queues" / queue / "claimed"):
                    # A dotted folder is a consumer being born (see consumer._register):
                    # its lock may not be taken yet, and it holds no claims.
                    if entry.name.startswith("."):
                        continue
                    folder = entry.is_dir(follow_symlinks=False)
                    if folder and lock_is_free(Path(entry.path) / _LOCK):
                        names.add(entry.name)
        return sorted(names)

    def recover(self, consumer: str) -> list[Delivery] | None:
        # Holding the dead consumer's locks while settling keeps a second
        # sweeper from recovering the same messages at the same time.
        fds: list[int] = []
        deliveries: list[Delivery] = []
        for queue, folder in self._consumer_dirs(consumer):
            fd = try_lock(folder / _LOCK)
            if fd is None:
                for held in fds:
                    release_lock(held)
                return None
            fds.append(fd)
            for entry in sorted(os.listdir(folder)):
                if entry != _LOCK:
                    delivery = read_claimed(queue, str(folder / entry), entry, consumer)
                    if delivery is not None:
                        deliveries.append(delivery)
        self._recovering[consumer] = fds
        return deliveries

    def abandon_recovery(self, consumer: str) -> None:
        for fd in self._recovering.pop(consumer, []):
            release_lock(fd)

    def forget_consumer(self, consumer: str) -> None:
        for _, folder in self._consumer_dirs(consumer):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(folder / _LOCK)
            with contextlib.suppress(OSError):
                folder.rmdir()
        for fd in self._recovering.pop(consumer, []):
            release_lock(fd)


def _chunks(items: Iterable[tuple[Message, bytes]]) -> Iterator[list[tuple[Message, bytes]]]:
    chunk: list[tuple[Message, bytes]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == _BATCH:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
