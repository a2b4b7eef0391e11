"""``App.control``: asking workers to do something to tasks, under Celery's names.

Celery broadcasts a control message to live workers; taskq records the request
in the broker (``Revocations``), where every worker, started now or later, finds it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .message import validate_task_id

if TYPE_CHECKING:
    from .app import App


class Control:
    """What ``app.control`` offers: ``revoke``."""

    def __init__(self, app: App) -> None:
        self.app = app

    def revoke(self, task_id: str | Iterable[str], terminate: bool = False) -> None:
        """Revoke a task id, or many: a message under a revoked id that has not
        started is never started (a worker settles it as REVOKED: acked, with the
        ``REVOKED`` state stored, and ``.get()`` raising ``TaskRevokedError``); one
        that runs finishes, unless ``terminate`` has its worker process killed.

        An id may be revoked before a message carries it (a later chain step).
        A revocation is kept for ``result_expires`` seconds; workers see it within
        about a second.
        """
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        for one in ids:
            validate_task_id(one)
        expires_at = time.time() + self.app.settings.result_expires
        self.app.broker.revoke(ids, terminate=terminate, expires_at=expires_at)
