"""The performance issue's targets, each judged on the medians of one run: a line per
target the run can judge (``report.markdown`` puts them under the table)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import Row


def fastest(rows_: list[Row], key: str, low: bool = False) -> tuple[str, float] | None:
    peers = [(r.system, r.medians[key]) for r in rows_ if is_peer(r.system) and key in r.medians]
    if not peers:
        return None
    return (min if low else max)(peers, key=lambda p: p[1])


def is_peer(system: str) -> bool:
    return not system.startswith(("taskq", "limit"))


def targets(rows_: list[Row]) -> list[str]:
    """The issue's targets, each as measured in this run (a line per target it can judge)."""
    by = {r.system: r.medians for r in rows_}
    mine, lines = by.get("taskq", {}), []
    limit = by.get("limit", {})

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    best = fastest(rows_, "W1_per_s")
    if "W1_per_s" in mine and best:
        ratio = mine["W1_per_s"] / best[1]
        line = f"- W1 enqueue: taskq {mine['W1_per_s']:,.0f}/s = {versus(ratio, best)}"
        if "W1_per_s" in limit:
            share = mine["W1_per_s"] / limit["W1_per_s"]
            line += f", {share:.0%} of the create+write+rename limit ({limit['W1_per_s']:,.0f}/s)"
            lines.append(line + f": target 2x and 60%: {verdict(ratio >= 2 and share >= 0.6)}")
        else:
            lines.append(line + f": target 2x: {verdict(ratio >= 2)}")
    best = fastest(rows_, "W2_per_s")
    if "W2_per_s" in mine and best:
        ratio = mine["W2_per_s"] / best[1]
        line = f"- W2 drain: taskq {mine['W2_per_s']:,.0f}/s = {versus(ratio, best)}"
        if "W2_per_s" in limit:
            line += f"; the rename+read+unlink limit is {limit['W2_per_s']:,.0f}/s in one process"
        lines.append(line + f": target 2x: {verdict(ratio >= 2)}")
    lines += latency_target(rows_, mine) + depth_target(mine) + durable_target(by, mine)
    return lines


def versus(ratio: float, best: tuple[str, float]) -> str:
    return f"{ratio:.2f}x the fastest peer ({best[0]}, {best[1]:,.0f}/s)"


def latency_target(rows_: list[Row], mine: dict[str, float]) -> list[str]:
    best = fastest(rows_, "W3_p50_ms", low=True)
    if "W3_p50_ms" not in mine or not best:
        return []
    peer = next(r.medians for r in rows_ if r.system == best[0])
    ok = mine["W3_p50_ms"] < peer["W3_p50_ms"] and mine["W3_p99_ms"] < peer["W3_p99_ms"]
    return [
        f"- W3 latency: taskq p50 {mine['W3_p50_ms']:.2f} ms / p99 {mine['W3_p99_ms']:.2f} ms; "
        f"best peer {best[0]} p50 {peer['W3_p50_ms']:.2f} ms / p99 {peer['W3_p99_ms']:.2f} ms: "
        f"target both lower: {'met' if ok else 'NOT met'}"
    ]


def depth_target(mine: dict[str, float]) -> list[str]:
    """Cost per task at 200,000 deep against 20,000 deep: the drain against W2's, and
    the enqueue's last 20,000 calls (180,000 to 200,000 deep) against its first 20,000."""
    lines = []
    if "W4_drain_per_s" in mine and "W2_per_s" in mine:
        growth = mine["W2_per_s"] / mine["W4_drain_per_s"] - 1
        lines.append(
            f"- W4 depth: taskq's cost per drained task at depth is {growth:+.0%} against W2 "
            f"({mine['W4_drain_per_s']:,.0f}/s vs {mine['W2_per_s']:,.0f}/s): "
            f"target within 15%: {'met' if growth <= 0.15 else 'NOT met'}"
        )
    if "W4_last_per_s" in mine and "W4_first_per_s" in mine:
        growth = mine["W4_first_per_s"] / mine["W4_last_per_s"] - 1
        lines.append(
            f"- W4 depth: taskq's cost per enqueued task from 180,000 to 200,000 deep is "
            f"{growth:+.0%} against the first 20,000 of the same enqueue "
            f"({mine['W4_last_per_s']:,.0f}/s vs {mine['W4_first_per_s']:,.0f}/s; "
            f"all 200,000 at {mine.get('W4_per_s', 0):,.0f}/s): "
            f"target within 15%: {'met' if growth <= 0.15 else 'NOT met'}"
        )
    return lines


def durable_target(by: dict[str, dict[str, float]], mine: dict[str, float]) -> list[str]:
    durable = by.get("taskq-durable", {})
    lines = []
    if "W1batch_per_s" in durable and "W1_per_s" in mine:
        share = durable["W1batch_per_s"] / mine["W1_per_s"]
        lines.append(
            "- Durable bulk enqueue (`Task.map`, batches of 1,000): "
            f"{durable['W1batch_per_s']:,.0f}/s "
            f"= {share:.0%} of non-durable W1: target 50%: {'met' if share >= 0.5 else 'NOT met'}"
        )
    celery = [
        v["idle_rss_mb"] for k, v in by.items() if k.startswith("celery") and "idle_rss_mb" in v
    ]
    if "idle_rss_mb" in mine and celery:
        ok = mine["idle_rss_mb"] <= min(celery)
        lines.append(
            f"- Memory: taskq supervisor + 2 idle workers {mine['idle_rss_mb']:.0f} MB RSS, "
            f"Celery prefork -c 2 {min(celery):.0f} MB: "
            f"target no larger: {'met' if ok else 'NOT met'}"
        )
    return lines
