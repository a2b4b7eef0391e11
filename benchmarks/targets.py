"""The performance issue's targets, each judged on the medians of one run: a line per
target the run can judge (``report.markdown`` puts them under the table)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import Row

# The peers taskq-redis is judged against: the same server, the same round trips.
REDIS_PEERS = ("celery-redis", "rq", "huey-redis", "dramatiq-redis")


def is_peer(system: str) -> bool:
    return not system.startswith(("taskq", "limit"))


def is_redis_peer(system: str) -> bool:
    return system in REDIS_PEERS


def fastest(
    rows_: list[Row], key: str, low: bool = False, among: Callable[[str], bool] = is_peer
) -> tuple[str, float] | None:
    peers = [(r.system, r.medians[key]) for r in rows_ if among(r.system) and key in r.medians]
    if not peers:
        return None
    return (min if low else max)(peers, key=lambda p: p[1])


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def targets(rows_: list[Row]) -> list[str]:
    """The issue's targets, each as measured in this run (a line per target it can judge)."""
    by = {r.system: r.medians for r in rows_}
    mine, lines = by.get("taskq", {}), []
    limit = by.get("limit", {})
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
    return lines + redis_targets(rows_)


def versus(ratio: float, best: tuple[str, float], peer: str = "peer") -> str:
    return f"{ratio:.2f}x the fastest {peer} ({best[0]}, {best[1]:,.0f}/s)"


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


def redis_targets(rows_: list[Row]) -> list[str]:
    """taskq-redis against the Redis-backed peers and the bare RESP ``limit-redis`` row."""
    row = next((r for r in rows_ if r.system == "taskq-redis"), None)
    if row is None:
        return []
    mine = row.medians
    limit = next((r.medians for r in rows_ if r.system == "limit-redis"), {})
    lines = []
    best = fastest(rows_, "W1_per_s", among=is_redis_peer)
    if "W1_per_s" in mine and best:
        ratio = mine["W1_per_s"] / best[1]
        line = f"- W1 enqueue: taskq-redis {mine['W1_per_s']:,.0f}/s = "
        line += versus(ratio, best, "Redis-backed peer")
        if "W1_per_s" in limit:
            share = mine["W1_per_s"] / limit["W1_per_s"]
            line += f", {share:.0%} of the bare LPUSH limit ({limit['W1_per_s']:,.0f}/s)"
            lines.append(line + f": target 1x and 70%: {verdict(ratio >= 1 and share >= 0.7)}")
        else:
            lines.append(line + f": target 1x: {verdict(ratio >= 1)}")
    if "W1batch_per_s" in mine and "W1_per_s" in mine:
        ratio = mine["W1batch_per_s"] / mine["W1_per_s"]
        lines.append(
            f"- W1 batch: taskq-redis `Task.map` {mine['W1batch_per_s']:,.0f}/s = {ratio:.1f}x "
            f"its `.delay()` loop: target 10x: {verdict(ratio >= 10)}"
        )
    best = fastest(rows_, "W2_per_s", among=is_redis_peer)
    if "W2_per_s" in mine and best:
        ratio = mine["W2_per_s"] / best[1]
        line = f"- W2 drain: taskq-redis {mine['W2_per_s']:,.0f}/s = "
        line += versus(ratio, best, "Redis-backed peer")
        if "W2_per_s" in limit:
            line += f"; the bare LMOVE+LREM limit is {limit['W2_per_s']:,.0f}/s on one connection"
        lines.append(line + f": target 2x: {verdict(ratio >= 2)}")
    return lines + redis_latency_target(rows_, mine) + [exactly_once_line(row)]


def redis_latency_target(rows_: list[Row], mine: dict[str, float]) -> list[str]:
    p50 = fastest(rows_, "W3_p50_ms", low=True, among=is_redis_peer)
    p99 = fastest(rows_, "W3_p99_ms", low=True, among=is_redis_peer)
    if "W3_p50_ms" not in mine or not p50 or not p99:
        return []
    ok = mine["W3_p50_ms"] < p50[1] and mine["W3_p99_ms"] < p99[1]
    return [
        f"- W3 latency: taskq-redis p50 {mine['W3_p50_ms']:.2f} ms / p99 "
        f"{mine['W3_p99_ms']:.2f} ms; lowest of the Redis-backed peers p50 {p50[1]:.2f} ms "
        f"({p50[0]}) / p99 {p99[1]:.2f} ms ({p99[0]}): target both lower than every one: "
        f"{verdict(ok)}"
    ]


def exactly_once_line(row: Row) -> str:
    """Missing and duplicated ids over the row's W1-W4 scenarios (W5 has its own table)."""
    unfinished = (
        "; some scenario did not finish, its unrun ids are not counted (see the notes)"
        if row.failed
        else ""
    )
    ok = row.missing == 0 and row.duplicated == 0 and not row.failed
    return (
        f"- Delivery: taskq-redis {row.missing} missing, {row.duplicated} duplicated over its "
        f"W1-W4 scenarios{unfinished}: target 0 and 0: {verdict(ok)}"
    )
