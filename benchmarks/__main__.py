"""Side-by-side benchmark of taskq and its peers (the performance issue's suite).

    python -m benchmarks --all
    python -m benchmarks --systems taskq,huey-redis --workloads W1,W2,W3 --runs 3
    python -m benchmarks --systems taskq,celery-redis --workloads W5 --runs 1   # chaos

Prints a markdown table, writes it to --markdown (with the raw figures beside it as
JSON) and a bar chart to --chart. Install the peers with ``pip install -e '.[bench]'``;
Redis must listen on 127.0.0.1:6379 and RabbitMQ on 127.0.0.1:5672 (guest/guest), or
the rows that need them are skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from . import report, suite
from .scenarios import Options

HERE = Path(__file__).resolve().parent


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--all", action="store_true", help="every system and every workload")
    p.add_argument(
        "--systems", default="", help="comma-separated: " + ",".join(suite.all_systems())
    )
    p.add_argument("--workloads", default="", help="comma-separated: " + ",".join(suite.WORKLOADS))
    p.add_argument("--runs", type=int, default=3, help="runs per system (medians are reported)")
    p.add_argument("--depth-runs", type=int, help="runs that include W4 (default: --runs)")
    p.add_argument(
        "--tasks", type=int, default=20_000, help="W1/W2 tasks, and the limit rows' messages"
    )
    p.add_argument("--depth", type=int, default=200_000, help="W4 tasks")
    p.add_argument("--latency-tasks", type=int, default=1_000, help="W3 tasks")
    p.add_argument("--interval-ms", type=float, default=5.0, help="W3 time between two sends")
    p.add_argument("--max-seconds", type=float, default=600.0, help="bound on each phase")
    p.add_argument(
        "--stall-seconds", type=float, default=120.0, help="a drain with no progress this long ends"
    )
    p.add_argument("--chaos-tasks", type=int, default=3_000, help="W5 tasks")
    p.add_argument("--chaos-task-ms", type=float, default=5.0, help="W5: how long each task works")
    p.add_argument("--seed", type=int, default=12, help="W5: seed of the kill schedule")
    p.add_argument(
        "--chaos-max-seconds", type=float, default=100.0, help="W5: bound on the chaos phase"
    )
    p.add_argument(
        "--chaos-stall-seconds",
        type=float,
        default=15.0,
        help="W5: the chaos stops once no new id ran this long",
    )
    p.add_argument(
        "--chaos-drain-seconds",
        type=float,
        default=30.0,
        help="W5: bound on the final drain (longer for a system whose recovery acts later)",
    )
    p.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()), help="where brokers' files go"
    )
    p.add_argument("--keep", action="store_true", help="keep each scenario's folder (worker logs)")
    p.add_argument(
        "--markdown",
        type=Path,
        help="default: results/latest.md, or results/chaos.md when W5 is the only workload",
    )
    p.add_argument("--chart", type=Path, default=HERE / "results" / "chart.png")
    p.add_argument(
        "--render", type=Path, metavar="JSON", help="no run: rebuild table and chart from a JSON"
    )
    args = p.parse_args(argv)
    if not (args.all or args.systems or args.workloads or args.render):
        p.error("give --all, or --systems and/or --workloads")
    return args


def choose(given: str, everything: list[str] | tuple[str, ...], what: str) -> list[str]:
    if not given:
        return list(everything)
    chosen = [name.strip() for name in given.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in everything]
    if unknown:
        sys.exit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(everything)})")
    return chosen


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    # Stopped by SIGTERM (or SIGINT, which a shell's background job ignores), the
    # driver still stops its worker and deletes its folders on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.render:
        results = suite.Results.load(args.render)
        default_markdown(args, results.plan["workloads"])
        write(args, results, results.plan["systems"], args.render)
        return
    options = Options(
        tasks=args.tasks,
        depth=args.depth,
        latency_tasks=args.latency_tasks,
        interval=args.interval_ms / 1000,
        max_seconds=args.max_seconds,
        stall_seconds=args.stall_seconds,
        workdir=args.workdir,
        chaos_tasks=args.chaos_tasks,
        chaos_task_ms=args.chaos_task_ms,
        chaos_seed=args.seed,
        chaos_max_seconds=args.chaos_max_seconds,
        chaos_stall_seconds=args.chaos_stall_seconds,
        chaos_drain_seconds=args.chaos_drain_seconds,
    )
    plan = suite.Plan(
        systems=choose("" if args.all else args.systems, suite.all_systems(), "system"),
        workloads=choose("" if args.all else args.workloads, suite.WORKLOADS, "workload"),
        runs=args.runs,
        depth_runs=args.runs if args.depth_runs is None else args.depth_runs,
        options=options,
    )
    default_markdown(args, plan.workloads)
    results = suite.Results(plan=asdict(plan), environment=suite.environment(options))
    raw = args.markdown.with_suffix(".json")
    suite.run(plan, results, lambda: results.save(raw), keep=args.keep)
    results.save(raw)
    write(args, results, plan.systems, raw)


def default_markdown(args: argparse.Namespace, workloads: list[str]) -> None:
    """W5 alone writes ``results/chaos.md``, so it leaves the W1-W4 figures alone."""
    if args.markdown is None:
        only_chaos = list(workloads) == ["W5"]
        args.markdown = HERE / "results" / ("chaos.md" if only_chaos else "latest.md")


def write(args: argparse.Namespace, results: suite.Results, systems: list[str], raw: Path) -> None:
    """Print the markdown table and write it to --markdown, and the chart to --chart."""
    rows = report.rows(results.outcomes, [*systems, *suite.LIMITS])
    chaos = [o for o in results.outcomes if o.scenario == report.CHAOS]
    chart = None
    try:
        if rows:  # the chart has W1-W4 only
            report.chart(rows, args.chart)
            chart = os.path.relpath(args.chart, args.markdown.parent)
    except ImportError:
        print("matplotlib is not installed: no chart (pip install -e '.[bench]')", file=sys.stderr)
    text = report.markdown(asdict(results) | {"outcomes": None}, rows, chart, chaos)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(text)
    print(text)
    print(
        f"wrote {args.markdown} ({raw})" + (f" and {args.chart}" if chart else ""), file=sys.stderr
    )


if __name__ == "__main__":
    main()
