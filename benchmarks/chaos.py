"""W5, chaos: a worker draining its queue while it is killed with SIGKILL, again and again.

Enqueue ``chaos_tasks`` calls of ``slow(i, ms)`` (each sleeps ``ms`` and then records
its run), start the system's worker (2 processes) and, until every call ran (or no new
call ran for ``chaos_stall_seconds``, or ``chaos_max_seconds`` passed):

- every 0.5-1 s, SIGKILL one of the worker's processes, picked at random among the
  supervisor's (consumer's) children;
- every 3-5 s, SIGKILL the whole worker (its process group: supervisor and children at
  once) and start it again;
- a worker whose supervisor exited by itself (Dramatiq stops when one of its processes
  dies) has what is left of its group killed and is started again.

Then the chaos stops: the worker running then (started again if it had exited) drains
for at most ``chaos_drain_seconds``, or longer where the system's documented recovery of
a dead worker's tasks acts after a short delay (``System.chaos_recovery_s``: that plus
``RECOVERY_MARGIN``). Counted: ids that never ran (missing), ids that ran more than once
(duplicated), messages the system set apart as poison (dead-lettered), the kills, and the
times. The kill schedule comes from ``random.Random(chaos_seed)``; every row of a run uses
the same seed, so each gets the same sequence of intervals and picks.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time

from . import procs
from .scenarios import Options, Outcome, PhaseEnded, Scenario
from .systems.base import System
from .tally import Tally

CHILD_EVERY = (0.5, 1.0)  # seconds between two kills of one worker process
GROUP_EVERY = (3.0, 5.0)  # seconds between two kills of the whole worker
RECOVERY_MARGIN = 20.0  # seconds the final drain waits beyond a short documented recovery
LATE = 1.0  # seconds to wait, once every id ran, for late duplicates
TICK = 0.01


def label(system: System, variant: str) -> str:
    """The row's name: the system, and the variant when it is not the system's own."""
    return f"{system.name} ({variant})" if variant else system.name


def drain_bound(system: System, options: Options) -> float:
    recovery = system.chaos_recovery_s
    if recovery is None:
        return options.chaos_drain_seconds
    return max(options.chaos_drain_seconds, recovery + RECOVERY_MARGIN)


class Chaos:
    """The kill schedule and its counts, on one scenario's worker."""

    def __init__(self, scenario: Scenario, seed: int) -> None:
        self.scenario = scenario
        self.rng = random.Random(seed)
        self.child_kills = self.group_kills = self.exits = self.starts = 0
        now = time.monotonic()
        self.next_child = now + self.rng.uniform(*CHILD_EVERY)
        self.next_group = now + self.rng.uniform(*GROUP_EVERY)

    def start(self) -> None:
        self.scenario.start_worker()
        self.starts += 1

    def restart_if_exited(self) -> None:
        proc = self.scenario.proc
        if proc is not None and proc.poll() is not None:
            self.exits += 1
            procs.kill_group(proc)  # what is left of it: children of a dead supervisor
            self.start()

    def tick(self, now: float) -> None:
        """Kill what is due at ``now``."""
        proc = self.scenario.proc
        assert proc is not None
        if now >= self.next_group:
            procs.kill_group(proc)
            self.group_kills += 1
            self.start()
            # Both clocks restart: a new worker first gets to start up.
            self.next_group = time.monotonic() + self.rng.uniform(*GROUP_EVERY)
            self.next_child = time.monotonic() + self.rng.uniform(*CHILD_EVERY)
        elif now >= self.next_child:
            children = procs.worker_children(proc.pid)
            if children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.rng.choice(children), signal.SIGKILL)
                    self.child_kills += 1
            self.next_child = now + self.rng.uniform(*CHILD_EVERY)


def run(system: System, variant: str, options: Options, outcome: Outcome) -> None:
    n, seed = options.chaos_tasks, options.chaos_seed
    outcome.metrics.update(W5_seed=seed, W5_task_ms=options.chaos_task_ms)
    system.chaos_variant = variant
    try:
        with Scenario(system, options) as scenario:
            tally = Tally(scenario.out, "runs", n)
            try:
                body(system, scenario, tally, options, outcome)
            except PhaseEnded as ended:
                outcome.status, outcome.detail = ended.status, ended.detail
            finally:
                scenario.stop_worker()
                tally.poll()
                tally.close()
                outcome.counted(tally)
            dead = system.dead_letters()
            if dead is not None:
                outcome.metrics["W5_dead"] = dead
    finally:
        system.chaos_variant = None


def body(
    system: System, scenario: Scenario, tally: Tally, options: Options, outcome: Outcome
) -> None:
    n = options.chaos_tasks
    laps = scenario.enqueue(system.slow_sender(options.chaos_task_ms), n, "W5 enqueue")
    outcome.metrics["W5_enqueue_per_s"] = n / sum(laps)

    chaos = Chaos(scenario, options.chaos_seed)
    started = time.monotonic()
    chaos.start()
    tally.last_progress = started
    deadline = started + options.chaos_max_seconds
    ended_by = "every id ran"
    while True:
        tally.poll()
        now = time.monotonic()
        if tally.distinct >= n:
            break
        if now - tally.last_progress > options.chaos_stall_seconds:
            ended_by = f"no id ran for {options.chaos_stall_seconds:g} s"
            break
        if now > deadline:
            ended_by = f"bound of {options.chaos_max_seconds:g} s"
            break
        chaos.restart_if_exited()
        chaos.tick(now)
        time.sleep(TICK)
    calm = time.monotonic()
    outcome.metrics.update(
        W5_child_kills=chaos.child_kills,
        W5_group_kills=chaos.group_kills,
        W5_chaos_s=calm - started,
        W5_ran_in_chaos=tally.distinct,
    )

    # The final drain: no more kills; the worker started again if it had exited.
    bound = drain_bound(system, options)
    outcome.metrics["W5_drain_bound_s"] = bound
    drained = calm if tally.distinct >= n else None
    while drained is None:
        tally.poll()
        now = time.monotonic()
        if tally.distinct >= n:
            drained = now
            break
        if now - calm > bound:
            break
        chaos.restart_if_exited()
        time.sleep(TICK)
    if drained is not None:
        outcome.metrics["W5_drain_s"] = drained - calm
        outcome.metrics["W5_all_s"] = drained - started
        time.sleep(LATE)  # a late redelivery shows up as a duplicate
    outcome.metrics.update(W5_exits=chaos.exits, W5_starts=chaos.starts)
    if drained is None:
        after = f"{n - tally.distinct:,} ids had not run {bound:g} s later"
    elif drained > calm:
        after = f"every id ran {drained - calm:.1f} s later"
    else:
        after = "every id ran during the chaos"
    outcome.detail = f"chaos ended: {ended_by}; {after}"
