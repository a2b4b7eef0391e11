"""A periodic task for the integration tests: every second, it marks its run
(see ``itasks_marks``) so that the test counts runs per tick and process."""

from __future__ import annotations

from typing import Any

from itasks_marks import mark

from taskq import periodic


@periodic(every=1, bind=True, max_retries=0)
def beat(self: Any) -> None:
    mark(self)
