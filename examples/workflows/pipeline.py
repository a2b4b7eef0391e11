"""Chain, group, chord and links, runnable as is: ``python pipeline.py``.

It runs in eager mode (each call runs here, through the same serialization as a
worker); drop ``eager=True`` and start ``taskq worker -A pipeline`` to run the
same workflows on workers.
"""

from __future__ import annotations

from taskq import App, chain, chord, group

app = App(eager=True)


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def mul(x: int, y: int) -> int:
    return x * y


@app.task
def total(values: list[int]) -> int:
    return sum(values)


@app.task
def log_result(value: object, label: str) -> None:
    print(f"{label}: {value!r}")


@app.task(max_retries=0)
def refuse(x: int) -> int:
    raise ValueError(f"refused {x}")


if __name__ == "__main__":
    # ((2 + 2) + 10) * 3: each result is the first argument of the next task.
    assert chain(add.s(2, 2), add.s(10), mul.s(3)).delay().get(timeout=10) == 42
    # The same with | ; add.si() ignores the parent's result.
    assert (add.s(1, 1) | add.si(5, 5)).delay().get(timeout=10) == 10
    # A group's result is the list of its values, in order.
    assert group(add.s(i, i) for i in range(5)).delay().get(timeout=10) == [0, 2, 4, 6, 8]
    # A chord's callback gets every member's result, once they have all ended.
    assert chord([add.s(i, i) for i in range(10)], total.s()).delay().get(timeout=10) == 90
    # link gets the result; link_error gets the failed task's id.
    add.apply_async((2, 3), link=log_result.s("sum"))
    failed = refuse.apply_async((7,), link_error=log_result.s("failed task id"))
    assert isinstance(failed.get(timeout=10, propagate=False), ValueError)
    print("all workflows ran")
