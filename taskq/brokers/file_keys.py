"""The file broker's signing keys: ``<root>/secret`` signs, ``<root>/secret.previous``
(keys of before a rotation, newest first, one a line) still verifies.

A key is made only for a broker that holds no messages: a missing key with
messages queued is a lost key (deleted, or a backup restored without it), and
a new one would turn every one of them into a bad signature. Rotation writes
``secret.previous`` before it replaces ``secret``, so a reader that sees the
new key also finds the old one. Making, rotating and pruning hold an ``flock``
on the root, so two of them never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import BrokerError, MessageError
from ..keys import Keyring
from ..message import unseal
from .fs import fsync_dir, read_file
from .trust import Trust, check_folder, check_key

SECRET = "secret"
PREVIOUS = "secret.previous"
PRUNE_AFTER = 2.0  # seconds after a rotation: every producer signs with the new key by then


class FileKeys:
    """The key files of one broker root, read only after checking who owns them."""

    def __init__(self, root: Path, trust: Trust) -> None:
        self.root = root
        self.trust = trust
        self.secret = root / SECRET
        self.previous = root / PREVIOUS

    def stamp(self) -> object:
        try:
            st = os.stat(self.secret)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def load(self) -> tuple[bytes, tuple[bytes, ...]]:
        if self.secret.exists():
            return self._keys()
        with _locked(self.root):  # two processes starting at once make one key
            return self._keys()

    def check(self) -> None:
        """Check the key files there are; make none (a running worker keeps the key it
        read, and a missing one is reported when a new process needs it)."""
        check_folder(self.root, self.trust, self.root, follow=True)
        self._read(self.secret)
        self._read(self.previous)

    def _keys(self) -> tuple[bytes, tuple[bytes, ...]]:
        check_folder(self.root, self.trust, self.root, follow=True)
        current = self._read(self.secret)
        if current is None:
            current = self._make()
        return _one_key(self.secret, current), self._previous()

    def _read(self, path: Path) -> bytes | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise BrokerError(
                f"cannot read signing key {path}: {exc.strerror}; it must be a regular file"
            ) from exc
        try:
            check_key(path, os.fstat(fd), self.trust, self.root)
            return _read_all(fd)
        finally:
            os.close(fd)

    def _previous(self) -> tuple[bytes, ...]:
        data = self._read(self.previous)
        return tuple(line for line in (data or b"").split() if line)

    def _make(self) -> bytes:
        waiting = count_messages(self.root)
        if waiting:
            raise BrokerError(
                f"signing key {self.secret} is missing, yet {waiting} message(s) in {self.root} "
                "are signed with it (a new key would dead-letter them all): restore it from a "
                "backup (with secret.previous), or set secret_key to it"
            )
        key = os.urandom(32).hex().encode()
        self._write(self.secret, key)
        return key

    def _write(self, path: Path, data: bytes) -> None:
        """Replace ``path`` whole and durably: a lost key loses every message signed with it."""
        tmp = self.root / f".{path.name}.{os.urandom(8).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self.trust.key_mode)
        try:
            if self.trust.gid is not None:
                os.fchown(fd, -1, self.trust.gid)
                os.fchmod(fd, self.trust.key_mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        fsync_dir(self.root)

    def rotate(self) -> None:
        with _locked(self.root):
            current, previous = self._keys()
            kept = [current, *(k for k in previous if k != current)]
            self._write(self.previous, b"\n".join(kept) + b"\n")  # first: the old key stays valid
            self._write(self.secret, os.urandom(32).hex().encode())

    def prune(self) -> int:
        with _locked(self.root):
            current, previous = self._keys()
            if not previous:
                return 0
            age = time.time() - os.stat(self.secret).st_mtime
            if age < PRUNE_AFTER:
                raise BrokerError(
                    f"the key of {self.root} was rotated {age:.1f} s ago: producers may still "
                    f"sign with the old one for a second; run taskq key prune again in "
                    f"{PRUNE_AFTER:.0f} s"
                )
            messages, results = _needing_old_keys(self.root, current, previous)
            if messages or results:
                raise BrokerError(
                    f"{messages} message(s) and {results} result(s) in {self.root} are signed "
                    "with a previous key, which they still need: let the workers run the "
                    "messages, retry or purge dead letters (taskq dead retry --all), wait for "
                    "old results to expire (result_expires), then prune again"
                )
            os.unlink(self.previous)
            fsync_dir(self.root)
            return len(previous)


def _one_key(path: Path, data: bytes) -> bytes:
    # An empty key would sign with b"": anyone could forge messages that get unpickled.
    key = data.strip()
    if not key:
        raise BrokerError(
            f"signing key file {path} is empty: delete it to have a new key made "
            "(only possible while no message is queued), or set secret_key"
        )
    return key


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _message_files(root: Path) -> Iterator[Path]:
    """Every message the broker holds: ready, scheduled, claimed and dead."""
    for qdir in _folders(root / "queues"):
        for state in ("ready", "scheduled", "dead"):
            for name in _names(qdir / state):
                if not (state == "dead" and name.endswith(".json")):
                    yield qdir / state / name
        for consumer in _folders(qdir / "claimed"):
            yield from (consumer / name for name in _names(consumer) if name != ".lock")


def _folders(path: Path) -> list[Path]:
    with contextlib.suppress(FileNotFoundError), os.scandir(path) as entries:
        return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
    return []


def _names(path: Path) -> list[str]:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        return os.listdir(path)
    return []


def count_messages(root: Path) -> int:
    return sum(1 for _ in _message_files(root))


def _result_files(root: Path) -> Iterator[Path]:
    # .<id>.<random>.tmp: being written
    yield from (root / "results" / n for n in _names(root / "results") if n[:1] != ".")


def _needing_old_keys(root: Path, current: bytes, previous: tuple[bytes, ...]) -> tuple[int, int]:
    """How many messages and results verify with a previous key but not the current one."""
    now, old = Keyring(current), Keyring(previous[0], previous[1:])
    counts = [0, 0]
    for index, files in enumerate((_message_files(root), _result_files(root))):
        for path in files:
            data = read_file(str(path))
            if data is not None and not _verifies(data, now) and _verifies(data, old):
                counts[index] += 1
    return counts[0], counts[1]


def _verifies(data: bytes, keys: Keyring) -> bool:
    try:
        unseal(data, keys)
    except MessageError:  # a bad signature, or undecodable: no key helps it
        return False
    return True
