"""The start window: never more than N starts in any one-second window."""

from __future__ import annotations

import itertools

import pytest

from pipeline._core.ratelimit import StartWindow


def starts_when_asked(window: StartWindow, asks: list[float]) -> list[float]:
    """When each request, asked for at the given times, actually starts."""
    started: list[float] = []
    clock = 0.0
    for asked in asks:
        clock = max(clock, asked)
        clock += window.wait(clock)
        window.start(clock)
        started.append(clock)
    return started


def most_in_any_second(starts: list[float]) -> int:
    return max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts)


@pytest.mark.parametrize("rate", [1, 2.5, 5, 10])
def test_a_burst_is_spread(rate: float) -> None:
    """Fifty requests asked at once start no more than floor(rate) in any second."""
    started = starts_when_asked(StartWindow(rate), [0.0] * 50)
    assert most_in_any_second(started) <= max(1, int(rate))


@pytest.mark.parametrize("rate", [1, 2.5, 5, 10])
def test_starts_are_spread_evenly(rate: float) -> None:
    """Requests asked at once start one by one, window / capacity apart (0.2 s at 5)."""
    window = StartWindow(rate)
    started = starts_when_asked(window, [0.0] * 12)
    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert min(gaps) >= window.spacing - 1e-9
    assert window.spacing == pytest.approx(window.window / max(1, int(rate)))


def test_bursts_after_a_quiet_spell_stay_under_the_rate() -> None:
    """Two bursts either side of a pause never put more than the rate in one second."""
    asks = [0.0] * 5 + [0.9] * 5 + [5.0] * 5 + [5.5] * 5
    started = starts_when_asked(StartWindow(5), asks)
    assert most_in_any_second(started) <= 5


def test_slow_rates_space_single_starts() -> None:
    """Below one a second, starts are 1/rate seconds apart."""
    started = starts_when_asked(StartWindow(0.5), [0.0, 0.0, 0.0])
    assert started[1] - started[0] >= 2.0
    assert started[2] - started[1] >= 2.0


def test_under_the_rate_nothing_waits() -> None:
    """Requests already slower than the rate start when asked."""
    window = StartWindow(10)
    for n in range(20):
        assert window.wait(n * 0.2) == 0
        window.start(n * 0.2)


def test_rate_must_be_positive() -> None:
    """A rate of zero or less is refused."""
    with pytest.raises(ValueError, match="rate"):
        StartWindow(0)
