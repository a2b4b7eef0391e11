"""Tests for taskq.policy: backoff, expiry and every settle decision, with no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskq.message import Message
from taskq.policy import Ack, Dead, Outcome, RetryAt, backoff, is_expired, settle

NOW = 1_700_000_000.0


def msg(**fields: object) -> Message:
    base: dict[str, object] = {
        "id": "m1",
        "task": "t",
        "max_retries": 3,
        "retry_backoff": 2.0,
        "retry_backoff_max": 100.0,
        "retry_jitter": False,
    }
    return Message(**{**base, **fields})  # type: ignore[arg-type]


# -- backoff --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retries", "expected"), [(0, 2.0), (1, 4.0), (2, 8.0), (5, 64.0), (6, 100.0), (50, 100.0)]
)
def test_backoff_doubles_from_the_base_and_stops_at_the_cap(retries: int, expected: float) -> None:
    assert backoff(retries, base=2.0, cap=100.0, jitter=False) == expected


def test_backoff_does_not_overflow_after_very_many_retries() -> None:
    # A task with max_retries=5000 must still get a delay, not an OverflowError.
    assert backoff(1024, base=1.0, cap=600.0, jitter=False) == 600.0
    assert backoff(10**9, base=0.5, cap=60.0, jitter=True, rand=lambda: 0.0) == 30.0


@given(
    retries=st.integers(0, 5000),
    base=st.floats(0.001, 1000.0),
    cap=st.floats(0.001, 10_000.0),
    r=st.floats(0.0, 1.0, exclude_max=True),
)
def test_jitter_stays_between_half_and_all_of_the_delay(
    retries: int, base: float, cap: float, r: float
) -> None:
    full = backoff(retries, base, cap, jitter=False)

    jittered = backoff(retries, base, cap, jitter=True, rand=lambda: r)

    assert full / 2 <= jittered <= full
    assert full == min(base * 2.0 ** min(retries, 1000), cap)


@given(retries=st.integers(0, 20))
def test_jitter_with_the_real_random_source_stays_in_bounds(retries: int) -> None:
    full = backoff(retries, 1.0, 60.0, jitter=False)

    for _ in range(20):
        assert full / 2 <= backoff(retries, 1.0, 60.0, jitter=True) <= full


def test_jitter_actually_spreads_delays() -> None:
    delays = {backoff(3, 1.0, 60.0, jitter=True) for _ in range(50)}

    assert len(delays) > 1


# -- settle: every outcome has one answer ---------------------------------------------


def test_success_is_acked() -> None:
    assert settle(msg(), Outcome.SUCCEEDED, NOW) == Ack()


def test_success_is_acked_even_with_no_retries_left() -> None:
    assert settle(msg(retries=3), Outcome.SUCCEEDED, NOW) == Ack()


def test_expired_message_is_acked_not_retried_or_dead_lettered() -> None:
    assert settle(msg(), Outcome.EXPIRED, NOW) == Ack()
    assert settle(msg(retries=3), Outcome.EXPIRED, NOW) == Ack()


@pytest.mark.parametrize(
    "outcome", [Outcome.FAILED, Outcome.RETRY_REQUESTED, Outcome.TIME_LIMIT, Outcome.KILLED]
)
def test_retryable_failure_with_retries_left_is_retried_after_the_backoff(
    outcome: Outcome,
) -> None:
    decision = settle(msg(retries=2), outcome, NOW)

    assert decision == RetryAt(eta=NOW + 8.0, delay=8.0)


def test_retry_delay_uses_the_messages_own_backoff_settings() -> None:
    message = msg(retries=4, retry_backoff=0.5, retry_backoff_max=5.0, max_retries=10)

    assert settle(message, Outcome.FAILED, NOW) == RetryAt(NOW + 5.0, 5.0)


def test_retry_with_jitter_is_scheduled_within_the_jitter_bounds() -> None:
    decision = settle(msg(retries=1, retry_jitter=True), Outcome.FAILED, NOW, rand=lambda: 0.5)

    assert decision == RetryAt(NOW + 3.0, 3.0)


def test_countdown_overrides_the_backoff() -> None:
    decision = settle(msg(retries=2, retry_jitter=True), Outcome.RETRY_REQUESTED, NOW, 0.25)

    assert decision == RetryAt(NOW + 0.25, 0.25)


def test_countdown_of_zero_retries_at_once() -> None:
    assert settle(msg(), Outcome.RETRY_REQUESTED, NOW, countdown=0.0) == RetryAt(NOW, 0.0)


def test_countdown_does_not_extend_retries_past_the_maximum() -> None:
    assert settle(msg(retries=3), Outcome.RETRY_REQUESTED, NOW, 1.0) == Dead("max-retries")


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (Outcome.FAILED, "max-retries"),
        (Outcome.RETRY_REQUESTED, "max-retries"),
        (Outcome.KILLED, "poison"),
        (Outcome.TIME_LIMIT, "time-limit"),
    ],
)
def test_exhausted_retries_dead_letter_with_what_ended_the_last_attempt(
    outcome: Outcome, reason: str
) -> None:
    assert settle(msg(retries=3), outcome, NOW) == Dead(reason)
    assert settle(msg(retries=7), outcome, NOW) == Dead(reason)


def test_killed_message_is_redelivered_until_it_is_known_poison() -> None:
    message = msg(max_retries=2)
    decisions = []
    for _ in range(10):
        decision = settle(message, Outcome.KILLED, NOW)
        decisions.append(decision)
        if not isinstance(decision, RetryAt):
            break
        message = message.replace(retries=message.retries + 1)

    assert [type(d) for d in decisions] == [RetryAt, RetryAt, Dead]
    assert decisions[-1] == Dead("poison")


def test_max_retries_zero_dead_letters_the_first_failure() -> None:
    assert settle(msg(max_retries=0), Outcome.FAILED, NOW) == Dead("max-retries")


def test_final_failure_is_dead_at_once_whatever_retries_remain() -> None:
    assert settle(msg(retries=0, max_retries=10), Outcome.FAILED_FINAL, NOW) == Dead("failed")


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (Outcome.UNSAFE_ENTRY, "unsafe-entry"),
        (Outcome.BAD_SIGNATURE, "bad-signature"),
        (Outcome.UNDECODABLE, "undecodable"),
        (Outcome.UNKNOWN_TASK, "unknown-task"),
        (Outcome.UNSERIALIZABLE_RESULT, "failed"),
        (Outcome.FAILED_FINAL, "failed"),
    ],
)
def test_what_would_end_the_same_way_again_is_dead_at_once_with_its_reason(
    outcome: Outcome, reason: str
) -> None:
    assert settle(None, outcome, NOW) == Dead(reason)
    assert settle(msg(retries=0, max_retries=10), outcome, NOW) == Dead(reason)
    assert settle(msg(retries=0, max_retries=10), outcome, NOW, countdown=1.0) == Dead(reason)


@pytest.mark.parametrize("outcome", [Outcome.SUCCEEDED, Outcome.EXPIRED])
def test_acked_outcomes_need_no_message(outcome: Outcome) -> None:
    assert settle(None, outcome, NOW) == Ack()


@pytest.mark.parametrize(
    "outcome", [Outcome.FAILED, Outcome.RETRY_REQUESTED, Outcome.TIME_LIMIT, Outcome.KILLED]
)
def test_an_outcome_counted_against_retries_needs_the_message(outcome: Outcome) -> None:
    with pytest.raises(ValueError, match=outcome.value):
        settle(None, outcome, NOW)


@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_outcome_gets_a_decision_at_every_retry_count(outcome: Outcome) -> None:
    for retries in range(5):
        decision = settle(msg(retries=retries), outcome, NOW)
        assert isinstance(decision, Ack | RetryAt | Dead)


# -- expiry ----------------------------------------------------------------------------


def test_message_without_expires_never_expires() -> None:
    assert not is_expired(msg(), NOW + 10**9)


def test_message_expires_at_its_expires_time() -> None:
    message = msg(expires=NOW)

    assert not is_expired(message, NOW - 0.001)
    assert is_expired(message, NOW)
    assert is_expired(message, NOW + 1)
