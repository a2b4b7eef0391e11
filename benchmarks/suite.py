"""Run the chosen systems through the chosen workloads, taking turns: in each run every
system runs its scenarios once, and the order rotates from run to run so machine drift
hits all alike."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import chaos, limit_redis, scenarios
from .scenarios import Options, Outcome
from .systems import MODULES, load
from .systems.base import REDIS, System, reachable, redis_version

WORKLOADS = ("W1", "W2", "W3", "W4", "limit", "W5")
LIMIT = "limit"  # the workload, and the row of raw file operations
LIMIT_REDIS = "limit-redis"  # the row of bare RESP commands, also run by "limit"
LIMITS = {LIMIT: scenarios.limit, LIMIT_REDIS: limit_redis.limit}
PACKAGES = ("taskq", "celery", "kombu", "redis", "rq", "huey", "dramatiq", "pika", "matplotlib")


@dataclass
class Plan:
    systems: list[str]
    workloads: list[str]
    runs: int = 3
    depth_runs: int = 3
    options: Options = field(default_factory=Options)


@dataclass
class Results:
    plan: dict[str, Any]
    environment: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    chaos: dict[str, dict[str, Any]] = field(default_factory=dict)  # W5 row -> its settings
    outcomes: list[Outcome] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Results:
        data = json.loads(path.read_text())
        outcomes = [Outcome(**o) for o in data.pop("outcomes")]
        return cls(**data, outcomes=outcomes)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {**asdict(self), "outcomes": [asdict(o) for o in self.outcomes]}
        path.write_text(json.dumps(data, indent=1, default=str) + "\n")


def scenario_names(system: System, workloads: list[str], run: int, plan: Plan) -> list[str]:
    names = []
    if "W1" in workloads or "W2" in workloads:
        names.append("burst")
    if "W1" in workloads and system.batch_sender() is not None:
        names.append("batch")
    if "W3" in workloads:
        names.append("latency")
    if "W4" in workloads and run < plan.depth_runs:
        names.append("depth")
    if "W5" in workloads:
        names.append("chaos")
    return names


def run_scenario(system: System, name: str, options: Options, outcome: Outcome) -> None:
    if name == "burst":
        scenarios.burst(system, options, outcome, options.tasks, ("W1", "W2"))
    elif name == "batch":
        scenarios.burst(system, options, outcome, options.tasks, ("W1batch", "W1batch_drain"))
    elif name == "latency":
        scenarios.latency(system, options, outcome)
    elif name == "depth":
        scenarios.burst(system, options, outcome, options.depth, ("W4", "W4_drain"))


def run(plan: Plan, results: Results, save: Callable[[], None], keep: bool = False) -> None:
    """Run ``plan``, appending to ``results`` and calling ``save`` after each scenario.

    Every scenario's folder lives in one folder of this suite, deleted at the end
    (unless ``keep``), and each sits in block groups of its own: one scenario's
    deletes would slow the creates of whichever system came next (see
    ``scenarios.QuietDisk``)."""
    work = Path(tempfile.mkdtemp(prefix="taskq-bench-", dir=plan.options.workdir))
    scenarios.spread_subfolders(work)
    try:
        run_in(
            dataclasses.replace(plan, options=dataclasses.replace(plan.options, workdir=work)),
            results,
            save,
        )
    finally:
        if keep:
            say(f"kept the scenarios' folders and worker logs in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_in(plan: Plan, results: Results, save: Callable[[], None]) -> None:
    systems: dict[str, System] = {}
    for name in plan.systems:
        system = load(name)
        reason = system.unavailable()
        if reason:
            results.skipped[name] = reason
            say(f"skip {name}: {reason}")
        else:
            systems[name] = system
            results.modes[name] = system.worker_mode
            if "W5" in plan.workloads:
                for variant in system.chaos_variants:
                    results.chaos[chaos.label(system, variant)] = {
                        "settings": system.chaos_settings(variant),
                        "recovery": system.chaos_recovery,
                        "drain_bound_s": chaos.drain_bound(system, plan.options),
                    }
    results.environment["servers"] = servers(systems.values())
    limits = limit_rows(plan, results)
    order: list[str] = list(systems) + limits
    for run_index in range(plan.runs):
        shift = run_index % max(1, len(order))
        for name in order[shift:] + order[:shift]:
            if name in LIMITS:
                body = functools.partial(LIMITS[name], plan.options)
                one(results, name, "limit", run_index, body)
                save()
                continue
            system = systems[name]
            for scenario in scenario_names(system, plan.workloads, run_index, plan):
                if scenario == "chaos":  # one row per variant of the system's settings
                    for variant in system.chaos_variants:
                        body = functools.partial(chaos.run, system, variant, plan.options)
                        one(results, chaos.label(system, variant), "chaos", run_index, body)
                        save()
                    continue
                body = functools.partial(run_scenario, system, scenario, plan.options)
                one(results, name, scenario, run_index, body)
                save()


def limit_rows(plan: Plan, results: Results) -> list[str]:
    """The limit rows the run has: the file one, and the Redis one where Redis answers."""
    if LIMIT not in plan.workloads:
        return []
    if not reachable(*REDIS):
        results.skipped[LIMIT_REDIS] = f"Redis at {REDIS[0]}:{REDIS[1]} is not reachable"
        say(f"skip {LIMIT_REDIS}: {results.skipped[LIMIT_REDIS]}")
        return [LIMIT]
    results.environment["servers"].setdefault("Redis server", redis_version())
    return [LIMIT, LIMIT_REDIS]


def one(
    results: Results, system: str, scenario: str, run_index: int, body: Callable[[Outcome], None]
) -> None:
    outcome = Outcome(system, scenario, run_index + 1)
    t0 = time.monotonic()
    try:
        body(outcome)
    except Exception as exc:  # an adapter failing must not stop the other rows
        outcome.status = "error"
        outcome.detail = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    outcome.seconds = time.monotonic() - t0
    results.outcomes.append(outcome)
    say(describe(outcome))


def describe(o: Outcome) -> str:
    figures = ", ".join(
        f"{k} {v:,.2f}" if v < 100 else f"{k} {v:,.0f}" for k, v in o.metrics.items()
    )
    status = "" if o.status == "ok" else f" [{o.status}: {o.detail}]"
    return (
        f"run {o.run} {o.system} {o.scenario}: {figures}; ran {o.ran:,}/{o.expected:,}, "
        f"missing {o.missing}, duplicated {o.duplicated} ({o.seconds:.1f} s){status}"
    )


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def servers(systems: Any) -> dict[str, str]:
    found: dict[str, str] = {}
    for system in systems:
        with contextlib.suppress(Exception):
            found.update(system.versions())
    return found


def environment(options: Options) -> dict[str, Any]:
    """The machine, the filesystem under the work folder, and the package versions."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "workdir": str(options.workdir),
        "filesystem": filesystem(options.workdir),
        "taskq_commit": taskq_commit(),
        "packages": versions,
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def filesystem(path: Path) -> str:
    """The type of the filesystem holding ``path`` (the longest mount point above it)."""
    best, kind = "", "unknown"
    target = str(path.resolve())
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            _, mount, fstype, *_ = line.split()
            inside = target == mount or target.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) > len(best):
                best, kind = mount, fstype
    return kind


def taskq_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "taskq"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in taskq/' if dirty else ''}" if head else "unknown"


def all_systems() -> list[str]:
    return list(MODULES)
