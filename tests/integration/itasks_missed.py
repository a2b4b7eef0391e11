"""Hourly periodic tasks whose ticks a test marks as missed, one per policy."""

from __future__ import annotations

from typing import Any

from itasks_marks import mark

from taskq import periodic


@periodic(every=3600, bind=True, max_retries=0)
def hourly_once(self: Any) -> None:
    mark(self)


@periodic(every=3600, bind=True, max_retries=0, missed="skip")
def hourly_skip(self: Any) -> None:
    mark(self)
