"""How the periodic tasks of the integration tests mark a run: a file
``<tick id>.<pid>.<random>`` in the folder named by ``PERIODIC_RUNS``."""

from __future__ import annotations

import os
from typing import Any


def mark(task: Any) -> None:
    folder = os.environ["PERIODIC_RUNS"]
    name = f"{task.request.id}.{os.getpid()}.{os.urandom(4).hex()}"
    os.close(os.open(os.path.join(folder, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
