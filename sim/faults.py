"""Faults applied during a run: through the pair's TCP proxies, or to the gateway processes.

A direction `A->B` is A's push link to B, which runs through the proxy in front of B's gateway
(`GatewayPair.proxy_to(B)`); `both` is both directions. Kill and restart act on one party's
gateway process (SIGKILL; restart with the same ports and journal).

A fault with a duration is lifted that many scenario seconds later (`wall_duration_s`: that many
wall seconds after it was applied, whatever the speed): delay, jitter and bandwidth
go back to none, a stall resumes, a refusal ends, a killed gateway restarts, and a drop becomes
an outage (the link is cut and new connections are refused for the duration). At the end of a
run every fault still in force is lifted, so the drain can deliver what was held back.

When the simulator drives endpoints it did not start, it has neither proxies nor processes:
faults are then skipped with a warning, and so are link faults on a pair without proxies.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sim.pair import GatewayPair
from sim.proxy import FaultProxy
from sim.scenario import PARTY_FAULTS, FaultSpec

log = logging.getLogger("hotline.sim")


@dataclass
class FaultRecord:
    """What happened to one fault, for the report."""

    at: float  # scenario time
    description: str
    outcome: str  # "applied", "lifted", "skipped: why", "failed: why"
    wall: float = field(default_factory=time.time)


class FaultController:
    def __init__(
        self,
        pair: GatewayPair | None,
        parties: tuple[str, str],
        *,
        seed: int = 0,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.pair = pair
        self.parties = parties
        self.records: list[FaultRecord] = []
        self._rng = random.Random(seed)
        self._warn = warn or (lambda text: log.warning("%s", text))
        self._active: list[FaultSpec] = []
        self._killed: set[str] = set()

    def _note(self, at: float, fault: FaultSpec, outcome: str) -> None:
        self.records.append(FaultRecord(at, fault.describe(), outcome))
        if outcome.startswith(("skipped", "failed")):
            self._warn(f"fault {fault.describe()}: {outcome}")

    def proxies(self, target: str) -> list[FaultProxy]:
        """The proxies a link fault on `target` acts on (empty if there are none)."""
        if self.pair is None or not self.pair.proxies:
            return []
        a, b = self.parties
        receivers = [a, b] if target == "both" else [target.split("->", 1)[1]]
        return [self.pair.proxy_to(party) for party in receivers if party in self.pair.proxies]

    def unsupported(self, fault: FaultSpec) -> str:
        """Why this fault cannot be applied here ("" if it can)."""
        if self.pair is None:
            return "the simulator did not start these gateways (no proxy, no process control)"
        if fault.kind not in PARTY_FAULTS and not self.proxies(fault.target):
            return "these gateways were started without fault proxies"
        return ""

    async def apply(self, fault: FaultSpec, at: float) -> None:
        why = self.unsupported(fault)
        if why:
            self._note(at, fault, f"skipped: {why}")
            return
        try:
            await self._apply(fault)
        except Exception as exc:
            self._note(at, fault, f"failed: {exc}")
            return
        self._active.append(fault)
        self._note(at, fault, "applied")

    async def _apply(self, fault: FaultSpec) -> None:
        assert self.pair is not None
        kind = fault.kind
        if kind == "kill":
            self.pair.side(fault.target).kill()
            self._killed.add(fault.target)
            return
        if kind == "restart":
            await self.pair.side(fault.target).restart()
            self._killed.discard(fault.target)
            return
        for proxy in self.proxies(fault.target):
            f = proxy.faults
            if kind == "delay":
                f.delay_s = fault.params["delay_s"]
            elif kind == "jitter":
                f.jitter_s = fault.params["jitter_s"]
                f.rng = random.Random(self._rng.random())
            elif kind == "bandwidth":
                f.bandwidth_bps = fault.params["bandwidth_bps"]
            elif kind == "stall":
                proxy.stall()
            elif kind == "resume":
                proxy.resume()
            elif kind == "drop":
                if fault.duration_s or fault.wall_duration_s:
                    proxy.refuse(True)
                proxy.drop()
            elif kind == "refuse":
                proxy.refuse(True)

    async def apply_for_wall_time(self, fault: FaultSpec, at: float) -> None:
        """Apply a fault and lift it `wall_duration_s` wall seconds later, whatever the speed
        (at max speed the timeline goes on meanwhile; the run waits for the lifting before it
        ends)."""
        await self.apply(fault, at)
        assert fault.wall_duration_s is not None
        await asyncio.sleep(fault.wall_duration_s)
        await self.lift(fault, at)

    async def lift(self, fault: FaultSpec, at: float) -> None:
        """Undo a fault with a duration (or any fault still active at the end of a run)."""
        if fault not in self._active:
            return
        self._active.remove(fault)
        try:
            await self._lift(fault)
        except Exception as exc:
            self._note(at, fault, f"failed to lift: {exc}")
            return
        self._note(at, fault, "lifted")

    async def _lift(self, fault: FaultSpec) -> None:
        assert self.pair is not None
        kind = fault.kind
        if kind == "kill":
            if fault.target in self._killed:
                await self.pair.side(fault.target).restart()
                self._killed.discard(fault.target)
            return
        for proxy in self.proxies(fault.target):
            f = proxy.faults
            if kind == "delay":
                f.delay_s = 0.0
            elif kind == "jitter":
                f.jitter_s = 0.0
            elif kind == "bandwidth":
                f.bandwidth_bps = 0.0
            elif kind == "stall":
                proxy.resume()
            elif kind in ("drop", "refuse"):
                proxy.refuse(False)

    async def lift_all(self, at: float) -> None:
        """Lift every fault still in force, and restart any gateway left dead."""
        for fault in list(self._active):
            await self.lift(fault, at)
        if self.pair is not None:
            for party in list(self._killed):
                await self.pair.side(party).restart()
                self._killed.discard(party)
            for proxy in self.pair.proxies.values():
                proxy.resume()
                proxy.refuse(False)
                proxy.faults.delay_s = proxy.faults.jitter_s = proxy.faults.bandwidth_bps = 0.0

    def schedule(
        self,
        faults: list[FaultSpec],
        call_at: Callable[[float, Callable[[], Any]], Any],
        spawn: Callable[[Coroutine[Any, Any, None]], Any],
    ) -> None:
        """Put each fault (and its lifting, if it has a duration) on the clock."""
        for fault in faults:
            action = self.apply_for_wall_time if fault.wall_duration_s else self.apply
            call_at(fault.at, _later(spawn, action, fault, fault.at))
            if fault.duration_s:
                end = fault.at + fault.duration_s
                call_at(end, _later(spawn, self.lift, fault, end))


def _later(
    spawn: Callable[[Coroutine[Any, Any, None]], Any],
    action: Callable[[FaultSpec, float], Coroutine[Any, Any, None]],
    fault: FaultSpec,
    at: float,
) -> Callable[[], Any]:
    return lambda: spawn(action(fault, at))
