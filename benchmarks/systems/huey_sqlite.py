"""Huey + SQLite (``SqliteHuey``), a database file in the scenario's folder."""

from __future__ import annotations

from pathlib import Path

from .huey_common import POLL, HueySystem


class HueySqliteSystem(HueySystem):
    name = "huey-sqlite"
    storage = "sqlite"
    worker_mode = HueySystem.worker_mode + f", polling every {float(POLL) * 1000:.0f} ms"

    def location(self, work: Path, token: str) -> str:
        return str(work / "huey.db")


SYSTEM = HueySqliteSystem
