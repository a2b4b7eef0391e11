"""taskq: background tasks with no server to install.

from taskq import task

@task
def add(x, y):
    return x + y

add.delay(2, 3).get(timeout=10)   # 5, once `taskq worker -A tasks` runs
"""

from .app import App
from .canvas import GroupResult, Signature, chain, chord, group
from .errors import (
    BadSignature,
    ChordFailed,
    ConfigError,
    Retry,
    SoftTimeLimitExceeded,
    TaskExpired,
    TaskFailed,
    TaskqError,
    TaskRevokedError,
    TimeLimitExceeded,
    WorkerLost,
)
from .periodic import periodic
from .results import AsyncResult
from .task import Task, task

__all__ = [
    "App",
    "AsyncResult",
    "BadSignature",
    "ChordFailed",
    "ConfigError",
    "GroupResult",
    "Retry",
    "Signature",
    "SoftTimeLimitExceeded",
    "Task",
    "TaskExpired",
    "TaskFailed",
    "TaskRevokedError",
    "TaskqError",
    "TimeLimitExceeded",
    "WorkerLost",
    "chain",
    "chord",
    "group",
    "periodic",
    "task",
]
