"""What the file broker keeps beside its queues: results, the signing key and
the registry of live supervisors that ``taskq status`` reads."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import BrokerError, UnsafeEntry
from ..message import new_id, validate_task_id
from .fs import (
    hold_lock,
    lock_is_free,
    read_file,
    read_signed,
    release_lock,
    remove_older,
    write_new,
)


class FileStores:
    """Results under ``results/``, the key in ``secret``, supervisors under ``workers/``."""

    root: Path
    _results: Path
    _worker_locks: dict[str, int]

    def register_worker(self, name: str) -> None:
        folder = self.root / "workers"
        folder.mkdir(mode=0o700, exist_ok=True)
        self._worker_locks[name] = hold_lock(folder / f"{name}.lock")

    def publish_worker_state(self, name: str, state: Mapping[str, Any]) -> None:
        folder = self.root / "workers"
        tmp = folder / f".{name}.{new_id()}.tmp"
        tmp.write_text(json.dumps(dict(state)))
        os.rename(tmp, folder / f"{name}.json")

    def unregister_worker(self, name: str) -> None:
        folder = self.root / "workers"
        for path in (folder / f"{name}.json", folder / f"{name}.lock"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        fd = self._worker_locks.pop(name, None)
        if fd is not None:
            release_lock(fd)

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
        write_new(tmp, data)
        os.rename(tmp, self._results / task_id)

    def load_result(self, task_id: str) -> bytes | None:
        validate_task_id(task_id)
        return read_signed(str(self._results / task_id))

    def delete_result(self, task_id: str) -> None:
        validate_task_id(task_id)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._results / task_id)

    def expire_results(self, older_than: float) -> int:
        return remove_older(self._results, older_than)

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


def _key_from(path: Path, data: bytes) -> bytes:
    # An empty key would sign with b"": anyone could forge messages that get unpickled.
    key = data.strip()
    if not key:
        raise BrokerError(
            f"signing key file {path} is empty: delete it to have a new key made, or set secret_key"
        )
    return key
