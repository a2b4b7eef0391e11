"""Celery + kombu's filesystem transport, in the scenario's private folder.

Its consumer lists and sorts the whole folder on every fetch, and polls when idle:
the poll interval is set to 10 ms (kombu's default is 1 s) so latency is not a
matter of configuration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .celery_common import CelerySystem

POLL = 0.01


class CeleryFilesystemSystem(CelerySystem):
    name = "celery-filesystem"
    worker_mode = (
        "`celery worker -P prefork -c 2`, kombu filesystem transport "
        f"polling every {POLL * 1000:.0f} ms"
    )

    def config(self, work: Path, token: str) -> dict[str, Any]:
        data, control = work / "kombu-data", work / "kombu-control"
        data.mkdir()
        control.mkdir()
        options = {
            "data_folder_in": str(data),
            "data_folder_out": str(data),
            "control_folder": str(control),
            "store_processed": False,
            "polling_interval": POLL,
        }
        return {"broker_url": "filesystem://", "transport_options": options}


SYSTEM = CeleryFilesystemSystem
