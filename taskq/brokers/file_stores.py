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

from ..errors import BrokerError
from ..message import new_id, validate_task_id
from .fs import lock_is_free, read_file, removal_steps, try_lock, write_new

# A dotted file in workers/ (a lock being registered, a status being written)
# older than this was left by a process that died in the middle.
_LITTER_AGE = 60.0


class FileStores:
    """Results under ``results/``, the key in ``secret``, supervisors under ``workers/``."""

    root: Path
    _results: Path
    _worker_locks: dict[str, int]

    def register_worker(self, name: str) -> None:
        folder = self.root / "workers"
        folder.mkdir(mode=0o700, exist_ok=True)
        # Locked under a dotted name, then renamed: a sweeper never meets the
        # <name>.lock of a supervisor being born while it is not locked yet.
        staging = folder / f".{name}.{new_id()}.lock"
        write_new(staging, b"")
        fd = try_lock(staging)
        if fd is None:
            raise BrokerError(f"cannot lock {staging}, a file this process just created")
        os.rename(staging, folder / f"{name}.lock")
        self._worker_locks[name] = fd

    def publish_worker_state(self, name: str, state: Mapping[str, Any]) -> None:
        folder = self.root / "workers"
        tmp = folder / f".{name}.{new_id()}.tmp"
        try:
            write_new(tmp, json.dumps(dict(state)).encode())
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
            os.close(fd)

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
                    data = read_file(str(folder / entry.replace(".lock", ".json")))
                    if data:
                        states.append(json.loads(data))
        return states

    def store_result(self, task_id: str, data: bytes) -> None:
        tmp = self._results / f".{task_id}.{new_id()}.tmp"
        write_new(tmp, data)
        os.rename(tmp, self._results / task_id)

    def load_result(self, task_id: str) -> bytes | None:
        validate_task_id(task_id)
        return read_file(str(self._results / task_id))

    def delete_result(self, task_id: str) -> None:
        validate_task_id(task_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._results / task_id)

    def expire_results(self, older_than: float) -> int:
        return sum(self.expiry_steps(older_than))

    def expiry_steps(self, older_than: float) -> Iterator[bool]:
        return removal_steps(self._results, older_than)

    def secret(self) -> bytes:
        path = self.root / "secret"
        existing = read_file(str(path))
        if existing is not None:
            return _key_from(path, existing)
        tmp = self.root / f".secret.{new_id()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(32).hex().encode())
        os.close(fd)
        # link() fails if another process made the key first; then use theirs.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
        return _key_from(path, path.read_bytes())


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
        os.close(fd)


def _key_from(path: Path, data: bytes) -> bytes:
    # An empty key would sign with b"": anyone could forge messages that get unpickled.
    key = data.strip()
    if not key:
        raise BrokerError(
            f"signing key file {path} is empty: delete it to have a new key made, or set secret_key"
        )
    return key
