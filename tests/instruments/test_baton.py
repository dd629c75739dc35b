"""Who serves the instrument server's socket: a short acquisition keeps it, a long one hands it over."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from instruments.baton import ServingBaton


class Ticks:
    """A settable monotonic clock (s)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _elsewhere(fn: Callable[[], object]) -> object:
    """``fn``'s result, called on another thread (the standby)."""
    out: list[object] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join(timeout=5)
    return out[0]


def test_the_standby_takes_the_socket_only_from_an_acquisition_older_than_takeover_s() -> None:
    ticks = Ticks()
    baton = ServingBaton(takeover_s=0.005, monotonic=ticks)
    baton.claim()
    assert _elsewhere(baton.take_over) is False  # nothing running on the serving thread
    baton.begin()
    ticks.now += 0.004
    assert _elsewhere(baton.take_over) is False  # not yet takeover_s
    assert baton.end() is True and baton.serving()
    baton.begin()
    ticks.now += 0.006
    assert _elsewhere(baton.take_over) is True
    assert not baton.serving() and baton.takeovers == 1
    assert baton.end() is False  # the thread that was acquiring hands its reply on
    assert _elsewhere(baton.take_over) is False  # taken once


def test_the_standby_dozes_after_an_idle_second_and_the_next_acquisition_says_so() -> None:
    ticks = Ticks()
    baton = ServingBaton(takeover_s=0.005, idle_s=1.0, monotonic=ticks)
    baton.claim()
    assert baton.standby_timeout() is None  # never acquired: doze
    assert baton.begin() is True  # ... so the first acquisition wakes the standby
    assert baton.standby_timeout() == 0.005  # and it watches while it runs
    baton.end()
    ticks.now += 0.5
    assert baton.standby_timeout() == 0.005  # still busy lately
    assert baton.begin() is False
    baton.end()
    ticks.now += 1.5
    assert baton.standby_timeout() is None


def test_release_lets_serve_return_and_a_second_claim_from_another_thread_is_refused() -> None:
    baton = ServingBaton(takeover_s=0.005)
    baton.claim()
    with pytest.raises(RuntimeError, match="already being served"):
        _elsewhere_raises(baton.claim)
    assert baton.wait_released(0.0) is False
    baton.release()
    assert baton.wait_released(0.0) is True
    with pytest.raises(ValueError, match="takeover_s"):
        ServingBaton(takeover_s=0)


def _elsewhere_raises(fn: Callable[[], object]) -> None:
    """Call ``fn`` on another thread and re-raise what it raised."""
    errors: list[BaseException] = []

    def call() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    t.join(timeout=5)
    if errors:
        raise errors[0]
