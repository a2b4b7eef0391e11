"""Medians per system, the markdown table with its notes, the comparison with the issue's
targets, and the bar chart."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .scenarios import Outcome
from .targets import targets

# (column heading, metric key, format) in table order.
COLUMNS = (
    ("W1 enqueue/s", "W1_per_s", "rate"),
    ("W1 batch/s", "W1batch_per_s", "rate"),
    ("W2 drain/s", "W2_per_s", "rate"),
    ("W2 first task ms", "W2_first_ms", "int"),
    ("W3 p50 ms", "W3_p50_ms", "ms"),
    ("W3 p99 ms", "W3_p99_ms", "ms"),
    ("W3 max ms", "W3_max_ms", "ms"),
    ("W4 enqueue/s", "W4_per_s", "rate"),
    ("W4 drain/s", "W4_drain_per_s", "rate"),
    ("idle RSS MB", "idle_rss_mb", "int"),
)
# The scenario that produces each metric, for marking timeouts in the right cell.
SOURCE = {
    "W1_per_s": "burst",
    "W1batch_per_s": "batch",
    "W2_per_s": "burst",
    "W2_first_ms": "burst",
    "W3_p50_ms": "latency",
    "W3_p99_ms": "latency",
    "W3_max_ms": "latency",
    "W4_per_s": "depth",
    "W4_drain_per_s": "depth",
    "idle_rss_mb": "latency",
}


CHAOS = "chaos"  # W5's scenario


@dataclass
class Row:
    system: str
    medians: dict[str, float] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)  # metric -> how many runs gave it
    partial: dict[str, float] = field(default_factory=dict)  # drain rate up to a timeout
    failed: dict[str, str] = field(default_factory=dict)  # scenario -> status of a failed run
    attempts: dict[str, int] = field(default_factory=dict)  # scenario -> runs of it
    missing: int = 0
    duplicated: int = 0
    notes: list[str] = field(default_factory=list)


def rows(outcomes: list[Outcome], order: list[str]) -> list[Row]:
    """The W1-W4 table's rows (W5 has a table of its own: ``chaos_table``)."""
    by_system: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        if o.scenario != CHAOS:
            by_system[o.system].append(o)
    return [summarize(name, by_system[name]) for name in order if name in by_system]


def summarize(system: str, outcomes: list[Outcome]) -> Row:
    row = Row(system)
    values: dict[str, list[float]] = defaultdict(list)
    for o in outcomes:
        row.attempts[o.scenario] = row.attempts.get(o.scenario, 0) + 1
        row.duplicated += o.duplicated
        if o.status in ("ok", "stalled"):
            row.missing += o.missing
        if o.status != "ok":
            row.failed[o.scenario] = o.status
            row.notes.append(f"run {o.run} {o.scenario}: {o.status}: {o.detail}")
        # A failed scenario still reports the phases that finished (its enqueue, say).
        for key, value in o.metrics.items():
            if key.endswith("_partial_per_s"):
                row.partial[key.replace("_partial", "")] = value
            else:
                values[key].append(value)
    for key, got in values.items():
        row.medians[key] = statistics.median(got)
        row.runs[key] = len(got)
    return row


def cell(row: Row, key: str, kind: str) -> str:
    value = row.medians.get(key)
    if value is None:
        status = row.failed.get(SOURCE[key])
        if status and key in row.partial:
            return f"{status} ({row.partial[key]:,.0f}/s)"
        return status or "—"
    text = f"{value:.2f}" if kind == "ms" else f"{value:,.0f}"
    return text + ("*" if row.runs[key] < row.attempts.get(SOURCE[key], 0) else "")


def table(rows_: list[Row], skipped: dict[str, str]) -> str:
    head = "| system | " + " | ".join(c[0] for c in COLUMNS) + " | missing | duplicated |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 3)]
    for row in rows_:
        cells = [cell(row, key, kind) for _, key, kind in COLUMNS]
        unfinished = "‡" if row.failed else ""
        lines.append(
            f"| {label(row.system)} | "
            + " | ".join(cells)
            + f" | {row.missing}{unfinished} | {row.duplicated} |"
        )
    for name in skipped:
        lines.append(f"| {name} | " + " | ".join("skipped" for _ in COLUMNS) + " | — | — |")
    return "\n".join(lines)


LABELS = {
    "limit": "limit (raw file ops, 1 process)",
    "limit-redis": "limit-redis (bare RESP, 1 connection)",
}
HOW_LIMITS_RAN = {
    "limit": (
        "create + write 300 B + close + rename (W1 column), "
        "rename + read + unlink (W2 column), in one process"
    ),
    "limit-redis": (
        "LPUSH of 300 B (W1 column), LMOVE + LREM (W2 column, two round trips), "
        "each reply awaited, on one plain socket with hand-written RESP"
    ),
}


def label(system: str) -> str:
    return LABELS.get(system, system)


def markdown(
    results: dict[str, Any], rows_: list[Row], chart: str | None, chaos: Sequence[Outcome] = ()
) -> str:
    """The environment, then the W1-W4 table with its notes (if any row ran them), then
    the W5 table with its settings (if W5 ran)."""
    env = results["environment"]
    plan = results["plan"]
    parts = [
        "| | |\n|---|---|",
        f"| date | {env['date']} |",
        f"| machine | {env['cores']} cores ({env['cpu']}), {env['memory_gib']} GiB, "
        f"{env['platform']} |",
        f"| work folder | {env['workdir']} ({env['filesystem']}) |",
        f"| Python | {env['python']} |",
        f"| taskq | commit {env['taskq_commit']} |",
        "| packages | "
        + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if k != "taskq")
        + " |",
        "| servers | "
        + (", ".join(f"{k} {v}" for k, v in env.get("servers", {}).items()) or "—")
        + " |",
        f"| plan | {plan_text(plan)} |",
        "",
    ]
    if rows_:
        parts += w1_to_w4(results, rows_, chart)
    if chaos:
        parts += ([""] if rows_ else []) + chaos_section(results, list(chaos))
    return "\n".join(parts) + "\n"


def w1_to_w4(results: dict[str, Any], rows_: list[Row], chart: str | None) -> list[str]:
    parts = [
        table(rows_, results["skipped"]),
        "",
        "Medians of the runs that finished; `*` marks a median over fewer runs because another run "
        "of that scenario failed (see the notes). missing and duplicated add up every scenario of "
        "every run (ids not seen once a drain finished or stalled; ids seen more than once); "
        "`‡`: some scenario of the row timed out or its worker died, and the ids it had not run "
        "then are not counted as missing (the notes say what happened).",
        "",
    ]
    if chart:
        parts += [f"![side by side]({chart})", ""]
    lines = targets(rows_)
    if lines:
        parts += ["Against the targets of the performance issue:", "", *lines, ""]
    parts += ["How each row ran:", ""]
    for row in rows_:
        mode = HOW_LIMITS_RAN.get(row.system) or results["modes"].get(row.system, "")
        parts.append(f"- **{row.system}**: {mode}")
        parts += [f"  - {note}" for note in row.notes]
    parts += [f"- **{name}**: skipped: {why}" for name, why in results["skipped"].items()]
    return parts


CHAOS_HEAD = (
    "| system | run | ran | missing (never ran) | dead-lettered (poison) | duplicated "
    "| kills: one process / whole worker | exited by itself | chaos s | drain after chaos s "
    "| every id ran at s |"
)


def chaos_table(outcomes: list[Outcome], skipped: dict[str, str]) -> str:
    """W5: one line per row and run."""
    lines = [CHAOS_HEAD, "|" + "---|" * 11]
    for o in outcomes:
        m = o.metrics
        dead = f"{m['W5_dead']:.0f}" if "W5_dead" in m else "—"
        if o.status != "ok":
            ran = f"{o.status}: {o.ran:,} of {o.expected:,}"
        else:
            ran = f"{o.ran:,} of {o.expected:,}"
        kills = f"{m.get('W5_child_kills', 0):.0f} / {m.get('W5_group_kills', 0):.0f}"
        drain = (
            f"{m['W5_drain_s']:.1f}"
            if "W5_drain_s" in m
            else f"not all in {m.get('W5_drain_bound_s', 0):g} s"
        )
        done = f"{m['W5_all_s']:.1f}" if "W5_all_s" in m else "never"
        lines.append(
            f"| {o.system} | {o.run} | {ran} | {o.missing:,} | {dead} | {o.duplicated:,} "
            f"| {kills} | {m.get('W5_exits', 0):.0f} | {m.get('W5_chaos_s', 0):.1f} | {drain} "
            f"| {done} |"
        )
    for name in skipped:
        lines.append(f"| {name} | — | skipped | — | — | — | — | — | — | — | — |")
    return "\n".join(lines)


def chaos_section(results: dict[str, Any], outcomes: list[Outcome]) -> list[str]:
    o = results["plan"]["options"]
    settings = results.get("chaos", {})
    parts = [
        f"W5, chaos: {o['chaos_tasks']:,} tasks of {o['chaos_task_ms']:g} ms each "
        f"(sleep, then record the run), a worker of 2 processes; one of its processes "
        f"SIGKILLed every 0.5-1 s, the whole worker (process group) SIGKILLed and started "
        f"again every 3-5 s, kill schedule from seed {o['chaos_seed']}; the chaos stops once "
        f"every id ran, or after {o['chaos_stall_seconds']:g} s without a new id, or at "
        f"{o['chaos_max_seconds']:g} s; then the worker drains with no kills for at most "
        f"{o['chaos_drain_seconds']:g} s (longer where a system's documented recovery acts "
        "within a minute or two: see below).",
        "",
        chaos_table(outcomes, results["skipped"]),
        "",
        "*missing*: ids that never ran, dead-lettered ones included; *dead-lettered*: "
        "messages the system set apart as poison (taskq's dead letters, what `taskq dead "
        "list` shows; RQ's FailedJobRegistry), `—` where the system keeps no such record of a"
        " task lost with its worker; *duplicated*: runs beyond the first (a kill after the "
        "task recorded its run and before its acknowledgement gives one under at-least-once "
        "delivery); *exited by itself*: the worker's main process exited after one of its "
        "processes was killed, and the driver started it again; *drain after chaos*: from the"
        " end of the chaos to the last id; *every id ran at*: from the first start of the "
        "worker to the last id.",
        "",
        "Settings and recovery of each row:",
        "",
    ]
    for name, row in settings.items():
        parts.append(
            f"- **{name}**: {row['settings']}. Recovery of a killed worker's tasks: "
            f"{row['recovery'] or 'not described'}; final drain bound "
            f"{row['drain_bound_s']:g} s."
        )
        parts += [f"  - run {x.run}: {x.status}: {x.detail}" for x in outcomes if x.system == name]
    parts += [f"- **{name}**: skipped: {why}" for name, why in results["skipped"].items()]
    return parts


def plan_text(plan: dict[str, Any]) -> str:
    o = plan["options"]
    workloads = plan["workloads"]
    text = f"workloads {','.join(workloads)}; {plan['runs']} runs"
    if any(w in workloads for w in ("W1", "W2", "W3", "W4", "limit")):
        text += (
            f" (W4 in {plan['depth_runs']}); W1/W2 {o['tasks']:,} tasks, "
            f"W3 {o['latency_tasks']:,} tasks every {o['interval'] * 1000:g} ms, "
            f"W4 {o['depth']:,} tasks; each phase bounded by {o['max_seconds']:g} s"
        )
    if "W5" in workloads:
        text += f"; W5 {o.get('chaos_tasks', 0):,} tasks, seed {o.get('chaos_seed')}"
    return text


def chart(rows_: list[Row], path: Path) -> None:
    """Four panels of horizontal bars: W1, W2, W3 (p50 and p99, log scale), W4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [label(r.system) for r in rows_]
    fig, axes = plt.subplots(
        2, 2, figsize=(14, 1.2 + 0.45 * len(rows_) * 2), constrained_layout=True
    )
    panels = (
        (
            axes[0][0],
            "W1 enqueue, tasks/s (one producer)",
            [("W1_per_s", "delay"), ("W1batch_per_s", "batch")],
            False,
        ),
        (axes[0][1], "W2 drain, tasks/s (2 processes, incl. start-up)", [("W2_per_s", "")], False),
        (
            axes[1][0],
            "W3 enqueue-to-start latency, ms (log)",
            [("W3_p50_ms", "p50"), ("W3_p99_ms", "p99")],
            True,
        ),
        (
            axes[1][1],
            "W4 at depth, tasks/s",
            [("W4_per_s", "enqueue"), ("W4_drain_per_s", "drain")],
            False,
        ),
    )
    for ax, title, series, log in panels:
        bars(ax, rows_, names, series)
        ax.set_title(title, fontsize=10, loc="left")
        if log:
            ax.set_xscale("log")
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bars(ax: Any, rows_: list[Row], names: list[str], series: list[tuple[str, str]]) -> None:
    height = 0.8 / len(series)
    for k, (key, name) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * height
        points = [(i + offset, r.medians[key]) for i, r in enumerate(rows_) if r.medians.get(key)]
        if points:
            ys, values = zip(*points, strict=True)
            ax.barh(ys, values, height=height, label=name or None)
            for y, v in points:
                ax.text(v, y, f" {v:,.0f}" if v >= 10 else f" {v:.2f}", va="center", fontsize=7)
    for i, r in enumerate(rows_):
        stopped = [r.partial[key] for key, _ in series if key not in r.medians and key in r.partial]
        if stopped:
            text = f" timeout ({stopped[0]:,.0f}/s)"
            ax.text(
                0.01, i + 0.2, text, fontsize=7, color="grey", transform=ax.get_yaxis_transform()
            )
        elif not any(r.medians.get(key) for key, _ in series):
            ax.text(
                0.01,
                i,
                "n/a",
                va="center",
                fontsize=7,
                color="grey",
                transform=ax.get_yaxis_transform(),
            )
    ax.set_yticks(range(len(rows_)))
    ax.set_yticklabels(names, fontsize=8)
    if len(series) > 1:
        ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(series))
