"""Tasks that fail on purpose, to watch retries and dead letters: `taskq worker -A tasks`."""

from taskq import task


@task(bind=True, max_retries=4, retry_backoff=0.5, autoretry_for=(ConnectionError,))
def flaky(self, fail_times=2):
    """Fail the first `fail_times` attempts with ConnectionError, then succeed.

    `bind=True` passes the task itself as `self`: `self.request.retries` is 0 on
    the first attempt, 1 on the first retry, and so on. A ConnectionError is
    retried automatically (autoretry_for), after 0.5 s, then 1 s, ... (backoff).
    """
    attempt = self.request.retries + 1
    if self.request.retries < fail_times:
        raise ConnectionError(f"attempt {attempt}: the service is down (on purpose)")
    return f"succeeded on attempt {attempt}"


@task(max_retries=2, retry_backoff=0.2, retry_jitter=False)
def always_fails(order_id):
    """Fail every attempt: after 1 try and 2 retries the message lands in dead/."""
    raise ValueError(f"order {order_id} cannot be processed (this task always fails)")
