"""The failed sign-in limiter, on a fake clock."""

from __future__ import annotations

import pytest

from bosbase_pubsub.server.auth import SigninLimiter
from bosbase_pubsub.server.auth.ratelimit import retry_after_header

WINDOW = 300.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(
    clock: Clock, *, per_address: int = 20, per_identity: int = 5, max_keys: int = 10_000
) -> SigninLimiter:
    return SigninLimiter(
        per_address=per_address,
        per_identity=per_identity,
        window=WINDOW,
        max_keys=max_keys,
        clock=clock,
    )


def fail(limits: SigninLimiter, address: str, identity: str) -> float | None:
    """One failed attempt; returns the wait if it was refused instead."""
    wait = limits.begin(address, identity)
    if wait is None:
        limits.end(address, identity, failed=True)
    return wait


def test_failures_up_to_the_limit_are_allowed_then_refused() -> None:
    clock = Clock()
    limits = limiter(clock)
    for _ in range(5):
        assert fail(limits, "10.0.0.1", "a@example.com") is None
        clock.now += 1
    wait = limits.begin("10.0.0.1", "a@example.com")
    assert wait == pytest.approx(WINDOW - 5)
    assert limits.retry_after("10.0.0.1", "a@example.com") == pytest.approx(WINDOW - 5)


def test_the_window_slides() -> None:
    clock = Clock()
    limits = limiter(clock)
    for _ in range(5):
        fail(limits, "10.0.0.1", "a@example.com")
        clock.now += 10
    # The oldest failure leaves the window first, freeing one attempt.
    clock.now = 1000.0 + WINDOW + 0.5
    assert limits.begin("10.0.0.1", "a@example.com") is None
    limits.end("10.0.0.1", "a@example.com", failed=True)
    assert limits.begin("10.0.0.1", "a@example.com") is not None


def test_successes_do_not_count() -> None:
    clock = Clock()
    limits = limiter(clock)
    for _ in range(50):
        assert limits.begin("10.0.0.1", "a@example.com") is None
        limits.end("10.0.0.1", "a@example.com", failed=False)
    assert limits.retry_after("10.0.0.1", "a@example.com") is None


def test_success_clears_the_identity_but_not_the_address() -> None:
    clock = Clock()
    limits = limiter(clock, per_address=6)
    for _ in range(4):
        fail(limits, "10.0.0.1", "a@example.com")
    assert limits.begin("10.0.0.1", "a@example.com") is None
    limits.end("10.0.0.1", "a@example.com", failed=False)
    # The identity starts over...
    for _ in range(2):
        assert fail(limits, "10.0.0.9", "a@example.com") is None
    # ...but the address still remembers its 4 failures: 2 more reach its limit of 6.
    for _ in range(2):
        assert fail(limits, "10.0.0.1", "b@example.com") is None
    assert limits.begin("10.0.0.1", "c@example.com") is not None


def test_identity_limit_applies_across_addresses() -> None:
    clock = Clock()
    limits = limiter(clock)
    for number in range(5):
        assert fail(limits, f"10.0.0.{number}", "a@example.com") is None
    assert limits.begin("10.9.9.9", "a@example.com") is not None
    assert limits.begin("10.9.9.9", "b@example.com") is None


def test_address_limit_applies_across_identities() -> None:
    clock = Clock()
    limits = limiter(clock, per_address=3)
    for number in range(3):
        assert fail(limits, "10.0.0.1", f"user{number}@example.com") is None
    assert limits.begin("10.0.0.1", "fresh@example.com") is not None
    assert limits.begin("10.0.0.2", "fresh@example.com") is None


def test_attempts_in_flight_count_until_they_end() -> None:
    clock = Clock()
    limits = limiter(clock)
    for _ in range(5):
        assert limits.begin("10.0.0.1", "a@example.com") is None
    assert limits.begin("10.0.0.1", "a@example.com") == 1.0
    for _ in range(5):
        limits.end("10.0.0.1", "a@example.com", failed=False)
    assert limits.begin("10.0.0.1", "a@example.com") is None


def test_expired_keys_are_forgotten() -> None:
    clock = Clock()
    limits = limiter(clock)
    for number in range(100):
        fail(limits, f"10.0.{number}.1", f"user{number}@example.com")
    assert len(limits) == 200
    clock.now += WINDOW + 1
    assert limits.retry_after("10.1.1.1", "x@example.com") is None
    assert len(limits) == 0


def test_number_of_keys_is_capped() -> None:
    clock = Clock()
    limits = limiter(clock, max_keys=50)
    for number in range(1000):
        fail(limits, f"10.{number // 250}.{number % 250}.1", f"user{number}@example.com")
        clock.now += 0.01
        assert len(limits) <= 100
    # The most recent keys are the ones remembered.
    for _ in range(4):
        fail(limits, "10.3.249.1", "user999@example.com")
    assert limits.begin("10.7.7.7", "user999@example.com") is not None


def test_zero_disables_a_limit() -> None:
    clock = Clock()
    limits = limiter(clock, per_address=0, per_identity=0)
    for _ in range(100):
        assert fail(limits, "10.0.0.1", "a@example.com") is None
    assert len(limits) == 0


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="window"):
        SigninLimiter(per_address=1, per_identity=1, window=0)
    with pytest.raises(ValueError, match="max_keys"):
        SigninLimiter(per_address=1, per_identity=1, window=1, max_keys=0)


@pytest.mark.parametrize(("wait", "header"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (299.1, "300")])
def test_retry_after_header(wait: float, header: str) -> None:
    assert retry_after_header(wait) == header
