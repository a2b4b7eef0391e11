"""A process's copy of the revoked task ids, for ``Revocations.is_revoked``: a
worker asks about every message it opens, so the answer must come from memory.
The copy is reloaded only when the broker's change marker moves, and the marker
is looked at no more often than ``every`` seconds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("taskq.worker")


class RevokedCopy:
    """Revoked ids (each mapped to whether it was revoked with ``terminate``)."""

    def __init__(
        self,
        marker: Callable[[], object],
        load: Callable[[], Mapping[str, bool]],
        every: float = 0.0,
    ) -> None:
        """``marker()`` is cheap and changes whenever the revocations do (None: no
        revocations yet); ``load()`` reads them all."""
        self._marker = marker
        self._load = load
        self._every = every
        self._seen: object = None
        self._ids: Mapping[str, bool] = {}
        self._next = 0.0
        self._failing = False

    def ids(self) -> Mapping[str, bool]:
        if self._every:
            now = time.monotonic()
            if now < self._next:
                return self._ids
            self._next = now + self._every
        try:
            marker = self._marker()
            if marker is None:
                self._ids = {}
            elif marker != self._seen:
                self._ids = self._load()  # the marker is read first: a change meanwhile moves it
        except OSError as exc:  # BrokerUnavailable too: a task is not failed for this
            if not self._failing:
                log.error("Cannot read the revoked task ids (%s): using the last ones read", exc)
            self._failing = True
            return self._ids
        if self._failing:
            log.warning("Reading the revoked task ids again")
            self._failing = False
        self._seen = marker
        return self._ids
