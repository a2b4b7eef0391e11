"""Progress of long commands (export, import, migrate, purge, dead retry --all):
a tqdm bar on stderr when it is a terminal, nothing otherwise (the command then
prints its one-line summary only, which scripts and logs can read)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress(
    what: str, total: int | Callable[[], int] | None = None
) -> Iterator[Callable[[int], object]]:
    """A function to call with how many more are done. ``total`` may be a function,
    called only when a bar is drawn (counting may cost a listing of the queues)."""
    if not sys.stderr.isatty():
        yield lambda n: None
        return
    from tqdm import tqdm

    if callable(total):
        total = total()
    with tqdm(total=total, desc=what, unit="msg", file=sys.stderr, leave=False) as bar:
        yield bar.update
