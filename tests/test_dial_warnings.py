"""How often a peer that stays away is worth a warning (`discovery._worth_a_warning`)."""

import time

from bzzz.discovery import (
    BOOTSTRAP_POLICY,
    LAN_POLICY,
    UNREACHABLE_AFTER,
    DialPolicy,
    _worth_a_warning,
)


def warnings_over(policy: DialPolicy, seconds: float) -> list[int]:
    """The attempts that warn over `seconds` of failures, with the dialer's backoff (no jitter)."""
    warned: list[int] = []
    warned_at: float | None = None
    warned_longest = False
    now, failures = 0.0, 0
    while now < seconds:
        failures += 1
        step = min(policy.max_backoff, policy.min_backoff * 2 ** (failures - 1))
        longest = step >= policy.max_backoff
        # Reminders come an hour apart on the monotonic clock: none within this loop.
        if _worth_a_warning(failures, longest, warned_at, warned_longest):
            warned.append(failures)
            warned_at, warned_longest = time.monotonic(), longest
        now += step
    return warned


def test_a_bootstrap_peer_down_two_minutes_is_two_warnings_not_one_per_attempt():
    warned = warnings_over(BOOTSTRAP_POLICY, 120)
    assert warned[0] == UNREACHABLE_AFTER
    assert len(warned) == 2  # unreachable; retries at their longest step (60 s)


def test_a_lan_peer_reaches_its_longest_step_at_once_one_warning():
    assert warnings_over(LAN_POLICY, 120) == [UNREACHABLE_AFTER]


def test_the_first_failures_are_never_warnings():
    assert not _worth_a_warning(1, True, None, False)
    assert not _worth_a_warning(UNREACHABLE_AFTER - 1, True, None, False)
