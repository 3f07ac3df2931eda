"""The virtual clock: events fire in scenario-time order, at real speed, N times faster, or as
fast as possible, and one failing event does not stop the rest."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import pytest

from sim.clock import VirtualClock, parse_speed


async def test_events_fire_in_time_order_and_ties_in_scheduling_order() -> None:
    fired: list[str] = []
    clock = VirtualClock(speed=None)
    for at, name in ((5.0, "c"), (1.0, "a"), (5.0, "d"), (3.0, "b"), (0.0, "start")):
        clock.call_at(at, partial(fired.append, name))
    async with clock:
        await clock.sleep_until(10.0)
    assert fired == ["start", "a", "b", "c", "d"]
    assert clock.now() == 10.0


async def test_speed_scales_scenario_time_to_wall_time() -> None:
    clock = VirtualClock(speed=20.0)
    stamps: dict[float, float] = {}

    def stamp(at: float) -> None:
        stamps[at] = time.monotonic()

    for at in (0.0, 1.0, 2.0):
        clock.call_at(at, partial(stamp, at))
    async with clock:
        begin = time.monotonic()
        await clock.sleep_until(2.0)
    assert stamps[1.0] - begin == pytest.approx(0.05, abs=0.04)
    assert stamps[2.0] - begin == pytest.approx(0.10, abs=0.04)
    assert time.monotonic() - begin < 0.5


async def test_max_speed_replays_a_week_at_once() -> None:
    clock = VirtualClock(speed=None)
    fired: list[float] = []
    for hour in range(168):
        clock.call_at(hour * 3600.0, lambda: fired.append(clock.now()))
    begin = time.monotonic()
    async with clock:
        await clock.sleep_until(7 * 86400.0)
    assert time.monotonic() - begin < 2.0
    assert fired == [h * 3600.0 for h in range(168)]


async def test_events_scheduled_while_running_and_in_the_past_still_fire() -> None:
    clock = VirtualClock(speed=None)
    fired: list[str] = []

    def first() -> None:
        fired.append("first")
        clock.call_later(2.0, lambda: fired.append("later"))
        clock.call_at(0.0, lambda: fired.append("overdue"))  # in the past: runs now

    clock.call_at(1.0, first)
    async with clock:
        await clock.sleep_until(5.0)
    assert fired == ["first", "overdue", "later"]


async def test_a_failing_event_is_logged_and_the_clock_keeps_going() -> None:
    clock = VirtualClock(speed=None)
    fired: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    clock.call_at(1.0, boom)
    clock.call_at(2.0, lambda: fired.append(2))
    async with clock:
        await asyncio.wait_for(clock.sleep_until(3.0), 2.0)
    assert fired == [2]
    assert len(clock.errors) == 1


async def test_cancelled_timers_do_not_fire() -> None:
    clock = VirtualClock(speed=None)
    fired: list[int] = []
    timer = clock.call_at(1.0, lambda: fired.append(1))
    timer.cancel()
    async with clock:
        await clock.sleep_until(2.0)
    assert fired == []


def test_speed_option_accepts_numbers_and_max() -> None:
    assert parse_speed("max") is None
    assert parse_speed("60") == 60.0
    assert parse_speed("0.5") == 0.5
    for bad in ("0", "-1", "fast", "nan", "1e999"):
        with pytest.raises(ValueError, match="speed"):
            parse_speed(bad)


async def test_a_hold_keeps_later_events_waiting_until_released_at_max_speed() -> None:
    clock = VirtualClock(speed=None)
    fired: list[str] = []
    hold = clock.hold(2.0, timeout_s=30.0)
    clock.call_at(1.0, partial(fired.append, "before"))
    clock.call_at(2.0, partial(fired.append, "at the hold"))
    clock.call_at(3.0, partial(fired.append, "after"))

    async def answer_later() -> None:
        for _ in range(20):  # the answer's round trip: several turns of the event loop
            await asyncio.sleep(0)
        fired.append("answered")
        clock.release(hold)

    async with clock:
        task = asyncio.create_task(answer_later())
        await clock.sleep_until(5.0)
        await task
    assert fired == ["before", "at the hold", "answered", "after"]
    assert clock.holds_expired == 0


async def test_a_hold_that_is_never_released_runs_out() -> None:
    clock = VirtualClock(speed=None)
    fired: list[str] = []
    clock.hold(0.0, timeout_s=0.2)
    clock.call_at(1.0, partial(fired.append, "later"))
    async with clock:
        await clock.sleep_until(2.0)
    assert fired == ["later"]
    assert clock.holds_expired == 1


async def test_a_hold_is_inert_at_a_finite_speed() -> None:
    clock = VirtualClock(speed=50.0)
    hold = clock.hold(0.0, timeout_s=30.0)
    assert hold.released
    fired: list[str] = []
    clock.call_at(1.0, partial(fired.append, "later"))
    async with clock:
        await clock.sleep_until(2.0)
    assert fired == ["later"]
