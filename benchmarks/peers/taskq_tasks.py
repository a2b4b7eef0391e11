"""taskq's benchmark tasks, as ``taskq worker -A benchmarks.peers.taskq_tasks`` imports them.

The producer declares the same names on its own ``App`` (``systems/taskq_default.py``);
the worker finds a task by name, so both sides agree.
"""

from __future__ import annotations

from taskq import task

from .record import noop as _noop
from .record import stamp as _stamp

noop = task(name="bench.noop", ignore_result=True)(_noop)
stamp = task(name="bench.stamp", ignore_result=True)(_stamp)
