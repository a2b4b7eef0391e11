"""Tasks for the crash-point test, and the producer it kills mid-publish
(run as ``python -c "import itasks_crashpoints as m; m.produce(...)"`` so
that the tasks keep their module's name).

Each task notes "done <id> <pid>" (one O_APPEND write) when its side effect
is complete, so the test counts how often a message really ran.
"""

from __future__ import annotations

import os

from itasks import lines, note

from taskq import task


@task(bind=True, max_retries=3, retry_backoff=0.1, retry_jitter=False)
def succeeds(self, path: str) -> str:  # type: ignore[no-untyped-def]
    note(path, f"done {self.request.id} {os.getpid()}")
    return "ok"


@task(bind=True, max_retries=3, retry_backoff=0.1, retry_jitter=False)
def fails_first(self, path: str) -> str:  # type: ignore[no-untyped-def]
    """Fails its first attempt (noting "failed"), so the message is retried."""
    if not any(line.startswith("failed") for line in lines(path)):
        note(path, f"failed {self.request.id} {os.getpid()}")
        raise ConnectionError("the first attempt fails on purpose")
    note(path, f"done {self.request.id} {os.getpid()}")
    return "ok"


@task(bind=True, max_retries=0)
def always_fails(self, path: str) -> str:  # type: ignore[no-untyped-def]
    """Fails with no retries left, so the message is dead-lettered."""
    note(path, f"done {self.request.id} {os.getpid()}")
    raise ValueError("fails on purpose")


def produce(broker: str, how: str, task_id: str, path: str) -> None:
    """Publish one ``succeeds`` call the way ``how`` says: "spare" (a recycled
    file is left in spare/ first), "nameless" (O_TMPFILE + link, the default
    with no spare) or "new-file" (as where O_TMPFILE is missing)."""
    from taskq.app import App, set_default_app

    app = App(broker=broker)
    set_default_app(app)
    broker_obj = app.broker
    if how == "spare":
        spare = os.path.join(broker, "spare", "9-00000000000000001-acked")
        with open(spare, "wb") as f:
            f.write(b"an acked message's old bytes")
    elif how == "new-file":
        broker_obj._nameless = False  # type: ignore[attr-defined]
    succeeds.apply_async((path,), task_id=task_id)
    print("returned", flush=True)
