"""Tasks of ``benchmarks.chords``: a member that returns its argument, a callback
that sums the list."""

from __future__ import annotations

from taskq import task


@task
def echo(i: int) -> int:
    return i


@task
def total(values: list[int]) -> int:
    return sum(values)
