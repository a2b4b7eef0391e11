"""The quickstart's tasks: run `taskq worker -A tasks` in this folder."""

import time

from taskq import task


@task
def add(x, y):
    return x + y


@task(priority=5)
def slow_square(n, seconds=0.2):
    time.sleep(seconds)
    return n * n
