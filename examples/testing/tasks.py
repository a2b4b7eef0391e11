"""Tasks for the testing example (docs/testing.md): an App on the memory broker."""

from taskq import App

app = App(broker="memory://")


@app.task
def add(a, b):
    return a + b


@app.task(max_retries=0)
def charge(order_id):
    raise KeyError(order_id)


@app.task(bind=True, max_retries=3)
def flaky(self, fail_times):
    if self.request.retries < fail_times:
        raise ConnectionError(f"attempt {self.request.retries + 1} failed")
    return self.request.retries
