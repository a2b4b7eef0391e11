"""Huey + files (``FileHuey``), in the scenario's folder. Its dequeue lists and sorts the
queue folder under a lock on every call."""

from __future__ import annotations

from pathlib import Path

from .huey_common import POLL, HueySystem


class HueyFileSystem(HueySystem):
    name = "huey-file"
    storage = "file"
    worker_mode = HueySystem.worker_mode + f", polling every {float(POLL) * 1000:.0f} ms"

    def location(self, work: Path, token: str) -> str:
        return str(work / "huey-files")


SYSTEM = HueyFileSystem
