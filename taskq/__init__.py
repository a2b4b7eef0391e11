"""taskq: background tasks with no server to install.

from taskq import task

@task
def add(x, y):
    return x + y

add.delay(2, 3).get(timeout=10)   # 5, once `taskq worker -A tasks` runs
"""

from .app import App
from .errors import (
    BadSignature,
    ConfigError,
    Retry,
    SoftTimeLimitExceeded,
    TaskExpired,
    TaskFailed,
    TaskqError,
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
    "ConfigError",
    "Retry",
    "SoftTimeLimitExceeded",
    "Task",
    "TaskExpired",
    "TaskFailed",
    "TaskqError",
    "TimeLimitExceeded",
    "WorkerLost",
    "periodic",
    "task",
]
