"""What the file broker keeps beside its queues: results, the signing key and
the registry of live supervisors that ``taskq status`` reads."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import BrokerError, UnsafeEntry
from ..keys import Keyring
from ..message import new_id, validate_task_id
from .base import worker_name_taken
from .file_keys import FileKeys
from .fs import (
    lock_is_free,
    read_file,
    read_signed,
    release_lock,
    removal_steps,
    try_lock,
    write_new,
)
from .trust import Trust, check_folder, make_folder

STATES = ("tmp", "ready", "scheduled", "claimed", "dead")  # the folders of each queue
# A dotted file in workers/ (a lock being registered, a status being written)
# older than this was left by a process that died in the middle.
_LITTER_AGE = 60.0


class FileStores:
    """Results under ``results/``, the keys in ``secret*``, supervisors under ``workers/``;
    and the re-check of the whole broker's owners and modes."""

    root: Path
    trust: Trust
    _results: Path
    _worker_locks: dict[str, int]

    def register_worker(self, name: str) -> None:
        folder = self.root / "workers"
        make_folder(folder, self.trust, self.root)
        # Taken while its lock is held; a lock a sweeper removes meanwhile is free.
        held = folder / f"{name}.lock"
        if name in self._worker_locks or (not _remove_if_dead(folder, name) and held.exists()):
            raise BrokerError(worker_name_taken(name, self.root))
        # Locked under a dotted name, then renamed: a sweeper never meets the
        # <name>.lock of a supervisor being born while it is not locked yet.
        staging = folder / f".{name}.{new_id()}.lock"
        write_new(staging, b"", mode=self.trust.file_mode)
        fd = try_lock(staging)
        if fd is None:
            raise BrokerError(f"cannot lock {staging}, a file this process just created")
        os.rename(staging, folder / f"{name}.lock")
        self._worker_locks[name] = fd

    def publish_worker_state(self, name: str, state: Mapping[str, Any]) -> None:
        folder = self.root / "workers"
        tmp = folder / f".{name}.{new_id()}.tmp"
        try:
            write_new(tmp, json.dumps(dict(state)).encode(), mode=self.trust.file_mode)
            os.rename(tmp, folder / f"{name}.json")
        except OSError:
            # A full disk fails this every second: leave no litter each time.
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    def unregister_worker(self, name: str) -> None:
        folder = self.root / "workers"
        for path in (folder / f"{name}.json", folder / f"{name}.lock"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        fd = self._worker_locks.pop(name, None)
        if fd is not None:
            release_lock(fd)

    def forget_dead_workers(self) -> list[str]:
        folder = self.root / "workers"
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return []
        litter_before = time.time() - _LITTER_AGE
        gone = []
        for entry in entries:
            if entry.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat().st_mtime < litter_before:
                        os.unlink(entry.path)
                continue
            name = entry.name.removesuffix(".lock")
            # Never probe our own lock: a record lock looks free to its owner, and
            # closing the probe's descriptor would drop it.
            mine = name in self._worker_locks
            if entry.name.endswith(".lock") and not mine and _remove_if_dead(folder, name):
                gone.append(name)
        return gone

    def worker_states(self) -> list[dict[str, Any]]:
        states = []
        folder = self.root / "workers"
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(os.listdir(folder)):
                if entry.endswith(".lock") and not lock_is_free(folder / entry):
                    with contextlib.suppress(ValueError, UnsafeEntry):  # torn or not ours: skip
                        state = json.loads(read_file(str(folder / f"{entry[:-5]}.json")) or "0")
                        if isinstance(state, dict):
                            states.append(state)
        return states

    def store_result(self, task_id: str, data: bytes) -> None:
        tmp = self._results / f".{task_id}.{new_id()}.tmp"
        write_new(tmp, data, mode=self.trust.file_mode)
        os.rename(tmp, self._results / task_id)

    def load_result(self, task_id: str) -> bytes | None:
        validate_task_id(task_id)
        return read_signed(str(self._results / task_id))

    def delete_result(self, task_id: str) -> None:
        validate_task_id(task_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._results / task_id)

    def expire_results(self, older_than: float) -> int:
        return sum(self.expiry_steps(older_than))

    def expiry_steps(self, older_than: float) -> Iterator[bool]:
        return removal_steps(self._results, older_than)

    def keys(self) -> Keyring:
        return Keyring.from_source(FileKeys(self.root, self.trust))

    def rotate_key(self) -> None:
        FileKeys(self.root, self.trust).rotate()

    def prune_keys(self) -> int:
        return FileKeys(self.root, self.trust).prune()

    def check_trust(self) -> None:
        """Check every folder and key file again, as a worker that ran for a while does."""
        check_folder(self.root, self.trust, self.root, follow=True)
        for name in (
            "queues",
            "results",
            "spare",
            "workers",
            "chords",
            "schedule",
            "revoked",
            "rates",
            "unique",
            "events",
        ):
            if os.path.lexists(self.root / name):
                check_folder(self.root / name, self.trust, self.root)
        queues: list[Path] = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.root / "queues") as entries:
            # A link is refused, not skipped.
            queues = [Path(e.path) for e in entries if e.is_dir() or e.is_symlink()]
        for qdir in queues:
            for folder in (qdir, *(qdir / state for state in STATES)):
                check_folder(folder, self.trust, self.root)
        FileKeys(self.root, self.trust).check()


def _remove_if_dead(folder: Path, name: str) -> bool:
    lock = folder / f"{name}.lock"
    fd = try_lock(lock)
    if fd is None:
        return False
    try:
        # Still the file we locked, not one a new supervisor of the same name
        # (a reused pid) renamed in meanwhile.
        if os.fstat(fd).st_ino != os.stat(lock).st_ino:
            return False
        for path in (folder / f"{name}.json", lock):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return True
    except FileNotFoundError:
        return False
    finally:
        release_lock(fd)
