"""The driver's side of ``peers/record.py``: read the per-process files as they grow,
and count distinct, duplicated and out-of-range ids (and latencies)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


@dataclass
class Tally:
    """Ids ``0 .. expected-1`` of one kind ("runs" or "latency") seen in ``out``."""

    out: Path
    kind: str
    expected: int
    distinct: int = 0
    duplicated: int = 0
    foreign: int = 0  # ids outside the range (warm-up calls use -1)
    latencies_ms: list[float] = field(default_factory=list)
    first_at: float | None = None  # time.monotonic() when the first id was seen
    last_progress: float = field(default_factory=time.monotonic)
    _seen: bytearray = field(init=False)
    _files: dict[str, IO[bytes]] = field(default_factory=dict)
    _partial: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._seen = bytearray(self.expected)

    @property
    def missing(self) -> int:
        return self.expected - self.distinct

    def poll(self) -> int:
        """Read what was appended since the last poll; returns ``distinct``."""
        prefix = self.kind + "."
        for entry in os.scandir(self.out):
            if entry.name.startswith(prefix) and entry.name not in self._files:
                self._files[entry.name] = open(entry.path, "rb")  # noqa: SIM115 - kept open
        before = self.distinct + self.duplicated
        for name, f in self._files.items():
            data = f.read()
            if not data:
                continue
            data = self._partial.pop(name, b"") + data
            lines = data.split(b"\n")
            if lines[-1]:
                self._partial[name] = lines[-1]
            for line in lines[:-1]:
                self._count(line)
        if self.distinct + self.duplicated > before:
            now = time.monotonic()
            self.last_progress = now
            if self.first_at is None:
                self.first_at = now
        return self.distinct

    def _count(self, line: bytes) -> None:
        parts = line.split()
        i = int(parts[0])
        if not 0 <= i < self.expected:
            self.foreign += 1
            return
        if self._seen[i]:
            self.duplicated += 1
            return
        self._seen[i] = 1
        self.distinct += 1
        if len(parts) > 1:
            self.latencies_ms.append(float(parts[1]))

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
