import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from taskq.testing import WorkerProcess

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


@pytest.fixture
def start_worker(
    worker: Callable[..., WorkerProcess], taskq_app: object
) -> Callable[..., WorkerProcess]:
    """A worker running the tasks of `itasks`, with the test's app as the default."""

    def start(
        *args: str, modules: str = "itasks", concurrency: int = 2, ready: bool = True
    ) -> WorkerProcess:
        return worker(modules, *args, concurrency=concurrency, cwd=HERE, ready=ready)

    return start
