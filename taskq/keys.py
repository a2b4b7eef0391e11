"""Signing keys: the one that signs, the ones a rotation left that still verify.

A :class:`Keyring` signs with its current key and verifies with it first, so
a process that does not rotate pays nothing for rotation. Only on a mismatch
are the previous keys tried, and then, if the key files changed since they
were read, the files again: a worker accepts a key rotated by ``taskq key
rotate`` without a restart. A producer or worker also looks at the key files
once a second when it signs, so it signs with the new key within a second of
a rotation.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from .errors import TaskqError

if TYPE_CHECKING:
    from .brokers.base import Broker
    from .config import Settings

log = logging.getLogger("taskq.keys")

REFRESH_EVERY = 1.0  # seconds between looks at the key files when signing


class KeySource(Protocol):
    """Where a keyring's keys are kept (the file broker's ``secret`` files)."""

    def stamp(self) -> object:
        """Cheap (one ``stat``): changes whenever the keys may have changed."""

    def load(self) -> tuple[bytes, tuple[bytes, ...]]:
        """The current key and the previous ones, after checking who owns them."""


class Keyring:
    """The current key (signs and verifies) and previous keys (verify only)."""

    __slots__ = ("_next_refresh", "_source", "_stamp", "current", "previous")

    def __init__(
        self, current: bytes, previous: Iterable[bytes] = (), source: KeySource | None = None
    ) -> None:
        self.current = current
        self.previous = tuple(previous)
        self._source = source
        self._stamp: object = None
        self._next_refresh = time.monotonic() + REFRESH_EVERY

    @classmethod
    def from_source(cls, source: KeySource) -> Keyring:
        stamp = source.stamp()  # before loading: a change in between is seen next time
        keyring = cls(*source.load(), source=source)
        keyring._stamp = stamp
        return keyring

    def __repr__(self) -> str:
        return f"<Keyring: 1 current, {len(self.previous)} previous key(s)>"

    def signing_key(self) -> bytes:
        """The key to sign with, looking at the key files at most once a second."""
        if self._source is not None and time.monotonic() >= self._next_refresh:
            self._refresh()
        return self.current

    def verify_other(self, mac: bytes, body: bytes) -> bool:
        """Whether a key other than the current one signed ``body``. Called only
        when the current key did not match: previous keys, then the key files
        again if they changed (a rotation since we read them)."""
        if _signed_by_any(mac, body, self.previous):
            return True
        if not self._refresh():
            return False
        return _signed_by_any(mac, body, (self.current, *self.previous))

    def _refresh(self) -> bool:
        """Re-read the key files if their stamp changed; True if the keys did."""
        if self._source is None:
            return False
        self._next_refresh = time.monotonic() + REFRESH_EVERY
        # A stat per mismatch, not a re-read: a flood of forged files costs little,
        # and a rotated key is accepted at once, not after a rate limit.
        stamp = self._source.stamp()
        if stamp == self._stamp:
            return False
        self._stamp = stamp  # a broken key file is reported once per change, not per call
        try:
            current, previous = self._source.load()
        except (TaskqError, OSError) as exc:
            log.error("Keeping the keys read before: cannot read the key files again: %s", exc)
            return False
        self.current, self.previous = current, previous
        return True


def _signed_by_any(mac: bytes, body: bytes, keys: Iterable[bytes]) -> bool:
    return any(hmac.compare_digest(mac, hmac.digest(k, body, hashlib.sha256)) for k in keys)


def keyring_for(settings: Settings, broker: Broker | None) -> Keyring:
    """``secret_key`` (and ``previous_secret_keys``) if set, else the broker's key files."""
    if settings.secret_key:
        previous = (k.encode() for k in settings.previous_secret_keys)
        return Keyring(settings.secret_key.encode(), previous)
    if broker is None:
        raise TaskqError("no secret_key is set and no broker keeps a key")
    return broker.keys()


def rotate(settings: Settings, broker: Broker) -> None:
    """Make a new key; the current one moves to the previous keys, which still verify."""
    _refuse_configured(settings, "rotate")
    broker.rotate_key()


def prune(settings: Settings, broker: Broker) -> int:
    """Drop the previous keys once nothing in the broker needs them; how many."""
    _refuse_configured(settings, "prune")
    return broker.prune_keys()


def _refuse_configured(settings: Settings, what: str) -> None:
    if settings.secret_key:
        raise TaskqError(
            f"cannot {what} the key: it comes from secret_key, not from the broker; rotate it by "
            "moving the old value to previous_secret_keys and setting a new secret_key "
            "everywhere, and drop it from previous_secret_keys once the queues are drained"
        )
