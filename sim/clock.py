"""The simulator's virtual clock: scenario time as a queue of timed events (after SimPy).

Scenario time starts at 0 and is measured in seconds. Everything the simulator does at a
scenario time (a send, a responder's answer after its think-time, a fault) waits on this clock,
so one timeline can be replayed three ways:

* ``speed=1``: in real time (scenario second = wall second);
* ``speed=N``: N times faster (scenario second = 1/N wall second);
* ``speed=None`` ("max"): as fast as possible. Due events fire in time order without waiting,
  and scenario time jumps to the next event's time as soon as the one before has fired.

    clock = VirtualClock(speed=10)
    async with clock:                    # starts the driver task
        await clock.sleep_until(30.0)    # returns 3 wall seconds after start
        clock.call_at(45.0, do_something)

Events due at the same scenario time fire in the order they were scheduled. Latency is never
measured with this clock: the simulator always uses `time.monotonic()` for that.

At "max" speed the driver lets the event loop run between two events (a few rounds of
`asyncio.sleep(0)`), so the work one event starts (a send, say) gets going before the next
event fires; it waits for network round trips only where a `hold` asks it to: a hold at
scenario time `t` keeps anything due after `t` from firing until it is released (or runs out),
so what the timeline puts at `t` (an answer, a re-send) is never overtaken by a later event.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

log = logging.getLogger("hotline.sim")

# Rounds of the event loop granted between two events at max speed: enough for a callback
# that creates a task to see that task reach its first real await.
_MAX_SPEED_YIELDS = 3


@dataclass(order=True)
class _Timer:
    at: float
    order: int
    callback: Callable[[], Any] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class Hold:
    """At max speed, keeps the clock from firing anything due after `at` until released (or
    until `deadline`, a `time.monotonic()`): what is due at `at` (an answer, a re-send) then
    happens before any later event, as the timeline says."""

    at: float
    deadline: float
    released: bool = False


def parse_speed(text: str) -> float | None:
    """`--speed` values: a positive number, or "max" for as fast as possible (None)."""
    if text.strip().lower() in ("max", "inf", "infinity"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"speed must be a positive number or 'max', got {text!r}") from None
    if not value > 0 or math.isinf(value) or math.isnan(value):
        raise ValueError(f"speed must be a positive number or 'max', got {text!r}")
    return value


class VirtualClock:
    """Scenario time driven by a priority queue of timers."""

    def __init__(self, speed: float | None = 1.0) -> None:
        if speed is not None and not speed > 0:
            raise ValueError("speed must be positive (or None for max)")
        self.speed = speed
        self._heap: list[_Timer] = []
        self._order = itertools.count()
        self._now = 0.0
        self._start_real = 0.0
        self._wakeup = asyncio.Event()
        self._driver: asyncio.Task[None] | None = None
        self.fired = 0
        self.errors: list[Exception] = []
        self._holds: list[Hold] = []
        self.holds_expired = 0  # holds that ran out before they were released

    # ------------------------------------------------------------------ reading

    @property
    def max_speed(self) -> bool:
        return self.speed is None

    def now(self) -> float:
        """Current scenario time, seconds.

        At a finite speed it follows the wall clock between events; at max speed it is the time
        of the last event fired.
        """
        if self.speed is None or self._driver is None:
            return self._now
        real = (time.monotonic() - self._start_real) * self.speed
        return max(self._now, real)

    def real_time_of(self, at: float) -> float:
        """The `time.monotonic()` at which scenario time `at` is due (finite speed only)."""
        if self.speed is None:
            raise ValueError("at max speed scenario time has no fixed wall-clock mapping")
        return self._start_real + at / self.speed

    @property
    def pending(self) -> int:
        return sum(1 for t in self._heap if not t.cancelled)

    # ------------------------------------------------------------------ scheduling

    def call_at(self, at: float, callback: Callable[[], Any]) -> _Timer:
        """Run `callback()` at scenario time `at` (now, if `at` has passed)."""
        if math.isnan(at):
            raise ValueError("scenario time is NaN")
        timer = _Timer(max(at, self._now), next(self._order), callback)
        heapq.heappush(self._heap, timer)
        self._wakeup.set()
        return timer

    def call_later(self, delay: float, callback: Callable[[], Any]) -> _Timer:
        return self.call_at(self.now() + max(0.0, delay), callback)

    def hold(self, at: float, timeout_s: float) -> Hold:
        """Hold the timeline at scenario time `at` (max speed only: at a finite speed the wall
        clock orders events, and the hold is inert) until `release`, for at most `timeout_s`
        wall seconds."""
        hold = Hold(at, time.monotonic() + timeout_s, released=self.speed is not None)
        if not hold.released:
            self._holds.append(hold)
        return hold

    def release(self, hold: Hold) -> None:
        if not hold.released:
            hold.released = True
            self._wakeup.set()

    def _held_until(self) -> tuple[float, float] | None:
        """(earliest hold's time, earliest deadline) of the holds in force, or None."""
        now = time.monotonic()
        live = []
        for hold in self._holds:
            if hold.released:
                continue
            if hold.deadline <= now:
                hold.released = True
                self.holds_expired += 1
                log.warning("virtual clock: a hold at t=%g ran out; the timeline moves on", hold.at)
                continue
            live.append(hold)
        self._holds = live
        if not live:
            return None
        return min(h.at for h in live), min(h.deadline for h in live)

    async def sleep_until(self, at: float) -> None:
        """Wait until scenario time `at`."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.call_at(at, wake)
        try:
            await future
        finally:
            timer.cancel()

    async def sleep(self, delay: float) -> None:
        await self.sleep_until(self.now() + max(0.0, delay))

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        if self._driver is not None:
            return
        self._start_real = time.monotonic()
        self._driver = asyncio.create_task(self._drive(), name="virtual-clock")

    async def stop(self) -> None:
        if self._driver is None:
            return
        self._driver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._driver
        self._driver = None

    async def __aenter__(self) -> VirtualClock:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _drive(self) -> None:
        while True:
            while self._heap and self._heap[0].cancelled:
                heapq.heappop(self._heap)
            if not self._heap:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            head = self._heap[0]
            if self.speed is not None:
                wait = self.real_time_of(head.at) - time.monotonic()
                if wait > 0:
                    # Wake early if something is scheduled before the head meanwhile.
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), wait)
                    continue
            else:
                held = self._held_until()
                if held is not None and head.at > held[0]:
                    # something due at or before held[0] must happen first (max speed)
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._wakeup.wait(), max(0.0, held[1] - time.monotonic())
                        )
                    continue
            heapq.heappop(self._heap)
            if head.cancelled:
                continue
            self._now = max(self._now, head.at)
            self.fired += 1
            try:
                head.callback()
            except Exception as exc:  # one failing event must not stop the clock
                log.exception("virtual clock: event at t=%g failed", head.at)
                self.errors.append(exc)
            if self.speed is None:
                for _ in range(_MAX_SPEED_YIELDS):
                    await asyncio.sleep(0)
            else:
                await asyncio.sleep(0)
