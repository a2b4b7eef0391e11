"""What the memory broker keeps beside its queues: results, the signing keys and
the registry of live supervisors. The in-process counterpart of ``file_stores``."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ..errors import BrokerError
from ..keys import Keyring
from ..message import signed_by, validate_task_id
from .base import worker_name_taken


class MemoryStores:
    """Results with the time they were stored, one keyring made with the broker,
    and the states supervisors published. Guarded by the broker's lock."""

    _lock: threading.RLock

    def __init__(self) -> None:
        self._results: dict[str, tuple[float, bytes]] = {}
        # One keyring for the broker's life: every App on this broker signs with it,
        # and a rotation changes it in place, so they all see it at once.
        self._keyring = Keyring(os.urandom(32))
        self._workers: dict[str, dict[str, Any]] = {}

    # -- results --------------------------------------------------------------

    def store_result(self, task_id: str, data: bytes) -> None:
        with self._lock:
            self._results[validate_task_id(task_id)] = (time.time(), bytes(data))

    def load_result(self, task_id: str) -> bytes | None:
        validate_task_id(task_id)
        with self._lock:
            stored = self._results.get(task_id)
        return None if stored is None else stored[1]

    def delete_result(self, task_id: str) -> None:
        validate_task_id(task_id)
        with self._lock:
            self._results.pop(task_id, None)

    def expire_results(self, older_than: float) -> int:
        return sum(self.expiry_steps(older_than))

    def expiry_steps(self, older_than: float) -> Iterator[bool]:
        with self._lock:
            old = [tid for tid, (at, _) in self._results.items() if at < older_than]
        for task_id in old:
            with self._lock:
                stored = self._results.get(task_id)
                # Stored again since the listing: a new result, not an old one.
                expired = stored is not None and stored[0] < older_than
                if expired:
                    del self._results[task_id]
            yield expired

    # -- keys -----------------------------------------------------------------

    def keys(self) -> Keyring:
        return self._keyring

    def rotate_key(self) -> None:
        with self._lock:
            ring = self._keyring
            ring.previous = (ring.current, *ring.previous)
            ring.current = os.urandom(32)

    def prune_keys(self) -> int:
        with self._lock:
            ring = self._keyring
            if not ring.previous:
                return 0
            current = Keyring(ring.current)
            needing = sum(not signed_by(data, current) for data in self._stored_bytes())
            if needing:
                raise BrokerError(
                    f"{needing} message(s) or result(s) in the memory broker are signed with "
                    "a previous key, which they still need: run or purge them, then prune again"
                )
            dropped = len(ring.previous)
            ring.previous = ()
            return dropped

    def _stored_bytes(self) -> Iterable[bytes]:
        """Every signed message and result held (the broker adds its queues)."""
        return [data for _, data in self._results.values()]

    def check_trust(self) -> None:
        """Nothing to check: no file, folder or key file exists outside this process."""

    # -- supervisors ----------------------------------------------------------

    def register_worker(self, name: str) -> None:
        with self._lock:
            if name in self._workers:
                raise BrokerError(worker_name_taken(name, self))
            self._workers[name] = {}

    def publish_worker_state(self, name: str, state: Mapping[str, Any]) -> None:
        with self._lock:
            if name in self._workers:
                self._workers[name] = dict(state)

    def unregister_worker(self, name: str) -> None:
        with self._lock:
            self._workers.pop(name, None)

    def forget_dead_workers(self) -> list[str]:
        # A supervisor of a memory broker lives in this process: while the
        # process runs, a registered one is alive.
        return []

    def worker_states(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(state) for _, state in sorted(self._workers.items()) if state]


class MemorySchedule:
    """The periodic schedule's lease (an owner and a deadline) and last ticks."""

    _lock: threading.RLock

    @property
    def _schedule(self) -> tuple[dict[str, tuple[str, float]], dict[str, float]]:
        leases: dict[str, tuple[str, float]] = self.__dict__.setdefault("_leases", {})
        ticks: dict[str, float] = self.__dict__.setdefault("_ticks", {})
        return leases, ticks

    def acquire_lease(self, name: str, owner: str, ttl: float) -> bool:
        leases, _ = self._schedule
        now = time.monotonic()
        with self._lock:
            held = leases.get(name)
            if held is not None and held[0] != owner and held[1] > now:
                return False
            leases[name] = (owner, now + ttl)
            return True

    def release_lease(self, name: str, owner: str) -> None:
        leases, _ = self._schedule
        with self._lock:
            if leases.get(name, ("", 0.0))[0] == owner:
                del leases[name]

    def last_tick(self, task: str) -> float | None:
        with self._lock:
            return self._schedule[1].get(task)

    def record_tick(self, task: str, tick: float) -> bool:
        _, ticks = self._schedule
        with self._lock:
            last = ticks.get(task)
            if last is not None and last >= tick:
                return False
            ticks[task] = tick
            return True
