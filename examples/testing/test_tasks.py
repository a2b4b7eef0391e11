"""Testing tasks with the memory broker and App.join (docs/testing.md)."""

import pytest
from tasks import add, app, charge, flaky


@pytest.fixture(autouse=True)
def empty_broker():
    yield
    app.broker.reset()  # the next test starts with an empty memory broker


def test_add():
    result = add.delay(2, 3)
    app.join()
    assert result.get(timeout=1) == 5


def test_a_failing_task_is_raised_by_join():
    charge.delay("no-such-order")
    with pytest.raises(KeyError, match="no-such-order"):
        app.join()


def test_retries_run_inside_join():
    result = flaky.delay(fail_times=2)
    app.join(run_scheduled=True)  # retries run at once, without their backoff
    assert result.get(timeout=1) == 2
