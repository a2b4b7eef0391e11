import os
import subprocess
import sys
from collections.abc import Callable, Iterator
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


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs of the test's own, to fill up (root only); unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {disk}: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, timeout=30)
