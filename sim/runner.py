"""Replaying a scenario against two gateways, then proving nothing was lost.

    result = await run_scenario(scenario, target, sides, RunOptions(speed=None, seed=7))

The run puts every message of the scenario's timeline and every fault on the virtual clock,
starts the clock, and lets the engine's scripted responders answer what arrives. When the
timeline is over it lifts any fault still in force and *drains*: it waits (up to `drain_s`
real seconds) until every message is delivered and every answer scripted for it has come back.
Then it waits (up to `checkpoint_wait_s`) until each gateway has witnessed a checkpoint of its
peer's journal made after the run settled, so that the checkpoint comparison covers the run's
last entries, and both journals are compared end to end (`sim.integrity`); when no checkpoint
was witnessed the integrity report says there was none to compare. A run passes when the
integrity check finds nothing lost, duplicated, reordered or forged **and** every threshold
(`sim.slo`: `--slo` and the scenario's `slo` list) holds.

Answers are drawn per message from a generator seeded with (seed, event, repetition), so the
same seed gives the same answers and think-times whatever order messages arrive in. A message
answered SAY_AGAIN is sent again once, as a new message referring to the first, after the
sender's own think-time, as the specification's acknowledgement ladder asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hotline.ids import new_message_id
from hotline.v1 import bodies_pb2, common_pb2
from sim.clock import VirtualClock
from sim.engine import LEVEL_NAMES, Engine, Side, Tracked
from sim.faults import FaultController, FaultRecord
from sim.integrity import IntegrityReport, RecordView, check_journals, compare_records, load_cas
from sim.machine import CpuMeter
from sim.metrics import Metrics
from sim.scenario import PRECEDENCE_NAMES, EventSpec, FaultSpec, Scenario
from sim.slo import Threshold, ThresholdResult, evaluate
from sim.target import Target

log = logging.getLogger("hotline.sim")


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass
class RunOptions:
    speed: float | None = 1.0
    seed: int = 1
    drain_s: float = 30.0
    progress_s: float = 5.0
    extra_faults: tuple[FaultSpec, ...] = ()
    verify: bool = True
    echo: Callable[[str], None] = _stderr
    thresholds: tuple[Threshold, ...] = ()
    # seconds to wait, once the run has settled, for a checkpoint exchange covering it
    checkpoint_wait_s: float = 8.0


@dataclass
class RunResult:
    """Everything one run measured, for the reports."""

    kind: str  # "scenario", "load" or "sweep-step"
    name: str
    title: str
    metrics: Metrics
    integrity: IntegrityReport
    config: dict[str, Any]
    started_wall: float
    wall_s: float
    active_s: float  # first planned send to the last delivery (throughput's denominator)
    counts: dict[str, int]
    faults: list[FaultRecord] = field(default_factory=list)
    drained: bool = True
    warnings: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    thresholds: list[ThresholdResult] = field(default_factory=list)
    # one row per message sent (see `message_rows`), for the per-message table and the series
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The verdict: integrity and every threshold."""
        return self.integrity.ok and all(t.passed for t in self.thresholds)

    @property
    def verdict(self) -> str:
        return "PASS" if self.ok else "FAIL"

    def check(self, thresholds: Sequence[Threshold]) -> None:
        """Measure the thresholds on this run (its verdict then includes them)."""
        self.thresholds = evaluate(thresholds, self)

    @property
    def throughput(self) -> float:
        delivered = self.counts.get("delivered", 0)
        return delivered / self.active_s if self.active_s > 0 else 0.0


def _rng_for(seed: int, event: EventSpec, n: int) -> random.Random:
    return random.Random(f"{seed}/{event.index}/{n}")


async def run_scenario(
    scenario: Scenario,
    target: Target,
    sides: dict[str, Side],
    options: RunOptions,
) -> RunResult:
    clock = VirtualClock(options.speed)
    metrics = Metrics(seed=options.seed)
    engine = Engine(sides, clock, metrics)
    faults = FaultController(
        target.pair, target.parties, seed=options.seed, warn=lambda t: options.echo(f"warning: {t}")
    )
    warnings: list[str] = []
    cpu = CpuMeter(target.gateway_pids())
    labels: dict[str, Tracked] = {}  # event id -> its latest repetition started
    started_wall = time.time()
    await engine.warm_up()
    await engine.start()
    if not await engine.wait_links_up(15.0):
        warnings.append("the peer link was not up in both directions when the run began")
        options.echo("warning: the peer link is not up in both directions; starting anyway")
    cpu.start()

    def start_send(event: EventSpec, n: int, planned: float, again_of: str = "") -> None:
        """Create and track the message now (so later events can name it), send it in a task."""
        rng = _rng_for(options.seed, event, n if not again_of else -n)
        answer = event.answer.draw(rng)
        think = event.think.sample(rng)
        named = [] if again_of else [labels[label] for label in event.refs if label in labels]
        tracked = Tracked(
            message_id=new_message_id(),
            sender=event.sender,
            recipient=event.recipient,
            body=event.body,
            precedence=event.precedence,
            planned=planned,
            label=event.label + ("+again" if again_of else ""),
            answer=answer,
            think_s=think,
            ack_id=new_message_id(),
            resend_of=again_of,
        )
        if not again_of:
            tracked.on_answer = lambda t: on_answer(event, n, t)
            if event.label:
                labels[event.label] = tracked
        engine.track(tracked)
        engine.spawn(send(tracked, event, n, named, again_of), f"send-{event.index}-{n}")

    async def send(
        tracked: Tracked, event: EventSpec, n: int, named: list[Tracked], again_of: str
    ) -> None:
        # A message refers only to messages already journaled: wait for the sends it names
        # (at max speed they may still be in flight), as a watch officer would.
        for earlier in named:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(earlier.done.wait(), engine.send_timeout_s)
        refs = [again_of] if again_of else [earlier.message_id for earlier in named]
        envelope = event.envelope(
            n=n, now_ns=time.time_ns(), refs=refs, message_id=tracked.message_id
        )
        if again_of:
            envelope.action = common_pb2.ACTION_NEW  # a new message referring to the first
        await engine.send(tracked, envelope)

    def on_answer(event: EventSpec, n: int, tracked: Tracked) -> None:
        if tracked.ack_level != bodies_pb2.ACKNOWLEDGEMENT_LEVEL_SAY_AGAIN:
            return
        delay = event.think.sample(_rng_for(options.seed, event, -n))
        clock.call_later(
            delay, lambda: start_send(event, n, time.monotonic(), again_of=tracked.message_id)
        )

    def planned_time(at: float) -> float:
        # At a finite speed a send is due at a fixed instant, and latency counts from it (any
        # lag of the simulator's own scheduling is charged too); at max speed, from now.
        return time.monotonic() if clock.speed is None else clock.real_time_of(at)

    def schedule_send(at: float, event: EventSpec, n: int) -> None:
        clock.call_at(at, lambda: start_send(event, n, planned_time(at)))

    for at, event, n in scenario.timeline():
        schedule_send(at, event, n)
    all_faults = sorted([*scenario.faults, *options.extra_faults], key=lambda f: f.at)
    faults.schedule(all_faults, clock.call_at, lambda coro: engine.spawn(coro, "fault"))

    progress = asyncio.create_task(_progress(engine, options), name="progress")
    drained = False
    try:
        async with clock:
            await clock.sleep_until(scenario.duration_s)
            # Every send has been started; wait for the sends and any fault action in flight.
            while engine.running("send-", "fault"):
                await asyncio.sleep(0.02)
            await faults.lift_all(clock.now())
            drained = await engine.drain(options.drain_s)
            end_wall = time.time()
            await exchange_checkpoints(engine, options, warnings)
    finally:
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await progress
        await engine.stop()
    cpu_result = cpu.stop()
    if not drained:
        left = engine.unsettled()
        warnings.append(
            f"{len(left)} message(s) were not settled after the {options.drain_s:g} s drain"
        )
    integrity = await check_integrity(target, sides, engine, verify=options.verify)
    counts = tally(engine)
    active = active_seconds(engine)
    metrics_end = end_wall
    axis: dict[str, Any] = {"origin_wall": engine.start_wall_ns / 1e9}
    if clock.speed is not None:
        axis.update(
            scenario_origin_s=clock.real_time_of(0.0) - engine.start_mono, speed=clock.speed
        )
    result = RunResult(
        kind="scenario",
        name=scenario.name,
        title=scenario.title,
        metrics=metrics,
        integrity=integrity,
        config={
            "scenario": scenario.name,
            "source": scenario.source,
            "speed": "max" if options.speed is None else options.speed,
            "seed": options.seed,
            "drain_s": options.drain_s,
            "target": "own pair" if target.owned else target.addresses,
            "faults": [f.describe() for f in all_faults],
            "scenario_duration_s": scenario.duration_s,
        },
        started_wall=started_wall,
        wall_s=metrics_end - started_wall,
        active_s=active,
        counts=counts,
        faults=faults.records,
        drained=drained,
        warnings=warnings,
        cpu=cpu_result,
        extra={"link_down_s": metrics.link_down_seconds(end_wall), "axis": axis},
        messages=message_rows(engine),
    )
    result.check([*options.thresholds, *scenario.slo])
    return result


async def exchange_checkpoints(engine: Engine, options: RunOptions, warnings: list[str]) -> None:
    """Wait for a checkpoint exchange covering the settled run (both directions)."""
    if options.checkpoint_wait_s <= 0:
        return
    if not await engine.wait_checkpoints(time.time_ns(), options.checkpoint_wait_s):
        warnings.append(
            f"no checkpoint exchange covering the end of the run within "
            f"{options.checkpoint_wait_s:g} s: the integrity check compares only the "
            "checkpoints witnessed before"
        )


def message_rows(engine: Engine) -> list[dict[str, Any]]:
    """One row per message the run sent: who sent what, its answer, each stage's latency (ms
    from its planned send time), and flags (resend, overdue, expired, realerted, rejected,
    error). `at_s` is the planned send time in seconds since the run began."""
    metrics = engine.metrics

    def ms(at: float | None, since: float) -> float | None:
        return None if at is None else round((at - since) * 1000.0, 3)

    rows = []
    for t in sorted(engine.tracked.values(), key=lambda t: t.planned):
        flags = []
        if t.resend_of:
            flags.append("resend")
        if t.message_id in metrics.overdue:
            flags.append("overdue")
        if t.message_id in metrics.expired:
            flags.append("expired")
        if t.message_id in metrics.realerts:
            flags.append("realerted")
        if t.rejected:
            flags.append("rejected")
        if t.error:
            flags.append("error")
        think = (
            None
            if t.ack_called is None or t.received is None
            else round((t.ack_called - t.received) * 1000.0, 3)
        )
        acked = ms(t.acknowledged, t.planned)
        rows.append(
            {
                "id": t.message_id,
                "label": t.label,
                "sender": t.sender,
                "recipient": t.recipient,
                "type": t.body,
                "precedence": PRECEDENCE_NAMES.get(t.precedence, str(t.precedence)),
                "at_s": round(engine.elapsed(t.planned), 4),
                "expected_answer": t.answer.upper() if t.expects_ack else "",
                "answer": LEVEL_NAMES.get(t.ack_level, "") if t.acknowledged else "",
                "journaled_ms": ms(t.journaled, t.planned),
                "delivered_ms": ms(t.delivered, t.planned),
                "acknowledged_ms": acked,
                "think_ms": think,
                "ack_system_ms": None
                if acked is None or think is None
                else round(max(0.0, acked - think), 3),
                "flags": flags,
                "error": t.error,
                "resend_of": t.resend_of,
            }
        )
    return rows


async def _progress(engine: Engine, options: RunOptions) -> None:
    if options.progress_s <= 0:
        return
    while True:
        await asyncio.sleep(options.progress_s)
        options.echo(engine.status_line())


def tally(engine: Engine) -> dict[str, int]:
    tracked = list(engine.tracked.values())
    return {
        "planned": len(tracked),
        "sent": sum(1 for t in tracked if t.submit is not None),
        "journaled": sum(1 for t in tracked if t.journaled is not None),
        "delivered": sum(1 for t in tracked if t.delivered is not None),
        "acknowledged": sum(1 for t in tracked if t.acknowledged is not None),
        "acks_expected": sum(1 for t in tracked if t.expects_ack and t.journaled is not None),
        "acks_sent": engine.acks_sent,
        "send_errors": sum(1 for t in tracked if t.error),
        "rejected": sum(1 for t in tracked if t.rejected),
        "overdue": len(engine.metrics.overdue),
        "realerts": len(engine.metrics.realerts),
    }


def active_seconds(engine: Engine) -> float:
    tracked = [t for t in engine.tracked.values() if t.delivered is not None]
    if not tracked:
        return 0.0
    first = min(t.planned for t in engine.tracked.values())
    last = max(t.delivered for t in tracked if t.delivered is not None)
    return max(last - first, 1e-6)


def run_scope(engine: Engine) -> set[str]:
    """The ids this run journaled: its messages and its responders' acknowledgements."""
    scope = {t.message_id for t in engine.tracked.values() if t.journaled is not None}
    scope |= {t.ack_id for t in engine.tracked.values() if t.ack_returned is not None}
    return scope


async def check_integrity(
    target: Target, sides: dict[str, Side], engine: Engine, *, verify: bool = True
) -> IntegrityReport:
    """Compare the journals (or, when they cannot be read, the operator API's records)."""
    scope = run_scope(engine)
    if target.journals:
        cas = load_cas(target.pki, target.parties) if verify else []
        report = await asyncio.to_thread(
            check_journals, target.journals, cas, scope=scope, verify=verify
        )
        for party, info in report.journals.items():
            if info.get("ok") and not info.get("checkpoints_matched"):
                report.notes.append(
                    f"{party}'s journal: no checkpoint of it was witnessed by the peer, so the "
                    "checkpoint comparison had nothing to compare"
                )
        return report
    sent: dict[str, RecordView] = {}
    received: dict[str, RecordView | None] = {}
    from client.errors import ClientError, NotFound

    for tracked in engine.tracked.values():
        if tracked.journaled is None:
            continue
        try:
            sent[tracked.message_id] = RecordView.of(
                await sides[tracked.sender].watcher.get(tracked.message_id)
            )
            received[tracked.message_id] = RecordView.of(
                await sides[tracked.recipient].watcher.get(tracked.message_id)
            )
        except NotFound:
            received[tracked.message_id] = None
        except ClientError as exc:
            log.warning("cannot read %s for the integrity check: %s", tracked.message_id, exc)
    return compare_records(sent, received, target.parties)
