"""The periodic task of ``benchmarks.periodic``: each run leaves a file
``<tick in ms>.<pid>.<start time>`` in the folder named by ``PERIODIC_RUNS``."""

from __future__ import annotations

import os
import time
from typing import Any

from taskq import periodic


@periodic(every=1, bind=True, max_retries=0)
def beat(self: Any) -> None:
    started = time.time()
    tick = self.request.id.rsplit("-", 1)[1]
    path = os.path.join(os.environ["PERIODIC_RUNS"], f"{tick}.{os.getpid()}.{started:.6f}")
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
