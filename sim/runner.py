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
from sim.clock import Hold, VirtualClock
from sim.engine import LEVEL_NAMES, Engine, Side, Tracked
from sim.faults import FaultController, FaultRecord
from sim.integrity import IntegrityReport, RecordView, check_journals, compare_records, load_cas
from sim.live import StatusLine
from sim.machine import CpuMeter
from sim.metrics import Metrics
from sim.scenario import LITERAL_REF, PRECEDENCE_NAMES, EventSpec, FaultSpec, Scenario
from sim.slo import Threshold, ThresholdResult, evaluate, expectation_results, parse_threshold
from sim.target import Target

log = logging.getLogger("hotline.sim")

BURST_BATCH = 64  # a burst's messages leave in SendBatch calls of this many


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
    # `sim load` on a terminal: a status line redrawn in place instead of progress lines
    live: StatusLine | None = None
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
    timeline = _Timeline(scenario, engine, options)
    started_wall = time.time()
    await engine.warm_up()
    await engine.start()
    if not await engine.wait_links_up(15.0):
        warnings.append("the peer link was not up in both directions when the run began")
        options.echo("warning: the peer link is not up in both directions; starting anyway")
    cpu.start()
    timeline.schedule()
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
            # A triggered event may still wait (for the link to come back once the faults are
            # lifted, or for an answer): give it the drain's time to fire.
            await timeline.wait_triggers(options.drain_s)
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
    for event in timeline.untriggered():
        warnings.append(
            f"{event.name()} was never sent: its trigger ({event.trigger.describe()}) "  # type: ignore[union-attr]
            "did not happen"
        )
    if clock.holds_expired:
        warnings.append(
            f"{clock.holds_expired} answer(s) or send(s) took over {engine.send_timeout_s:g} s: "
            "the timeline moved on without them (max speed)"
        )
    integrity = await check_integrity(target, sides, engine, verify=options.verify)
    counts = tally(engine)
    counts["untriggered"] = len(timeline.untriggered())
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
    implicit = [parse_threshold("untriggered==0")] if scenario.triggered() else []
    result.check([*options.thresholds, *scenario.slo, *implicit])
    result.thresholds += expectation_results(scenario.events, engine.tracked.values())
    return result


_STAGE_ORDER = {"journaled": 0, "delivered": 1, "acknowledged": 2}


class _Timeline:
    """The scenario's messages on the virtual clock: timed sends, triggered events, answers and
    re-sends, and (at max speed) the holds that keep them in timeline order.

    At max speed nothing waits for the wall clock, so without holds an event could overtake
    the answer or re-send that the timeline puts before it (a CANCEL journaled before the
    re-send it follows). Each message sent at scenario time `t` holds the clock at `t` until it
    is journaled (and delivered, if a trigger waits on that); one with a scripted answer holds
    it at `t + think` until the answer is journaled at both ends (and, after SAY_AGAIN, its
    re-send is on the clock). A burst does not hold the clock until it is journaled: it is a
    backlog, and what follows is submitted while it is still being taken in. A hold runs out
    after the engine's send timeout."""

    def __init__(self, scenario: Scenario, engine: Engine, options: RunOptions) -> None:
        self.scenario = scenario
        self.engine = engine
        self.clock = engine.clock
        self.options = options
        self.labels: dict[str, Tracked] = {}  # label -> its latest message started
        self.armed: list[EventSpec] = []  # triggered events waiting for their trigger
        self.unarmed = {e.index for e in scenario.triggered()}
        self.firing = 0  # triggered events fired, not yet started
        self.holds: dict[str, list[tuple[Hold, Callable[[Tracked], bool]]]] = {}
        self.ack_failed: set[str] = set()
        self.watched_delivery = {
            e.trigger.label.partition("#")[0]
            for e in scenario.events
            if e.trigger is not None and e.trigger.state == "delivered"
        }
        engine.link_listeners.append(self.on_link)

    # -- scheduling

    def schedule(self) -> None:
        for at, event, n in self.scenario.timeline():
            if event.burst:
                if n == 1:
                    self.clock.call_at(at, lambda e=event, a=at: self.start(e, a))  # type: ignore[misc]
            else:
                self.clock.call_at(
                    at,
                    lambda e=event, n=n, a=at: self.start_one(e, n, self.planned(a), a),  # type: ignore[misc]
                )
        for event in self.scenario.triggered():
            self.clock.call_at(event.at, lambda e=event: self.arm(e))  # type: ignore[misc]

    def planned(self, at: float) -> float:
        # At a finite speed a send is due at a fixed instant, and latency counts from it (any
        # lag of the simulator's own scheduling is charged too); at max speed, from now.
        return time.monotonic() if self.clock.speed is None else self.clock.real_time_of(at)

    def start(self, event: EventSpec, at: float) -> None:
        """Every message of a fired triggered event or a burst (sent in batches)."""
        planned = self.planned(at)
        if event.burst:
            items = [(n, self.make(event, n, planned, at)) for n in range(1, event.count + 1)]
            named = self.named(event)
            for first in range(0, len(items), BURST_BATCH):
                chunk = items[first : first + BURST_BATCH]
                self.engine.spawn(self.send_batch(chunk, event, named), f"send-{event.index}-b")
            return
        for n in range(1, event.count + 1):
            self.start_one(event, n, planned, at)

    def start_one(
        self, event: EventSpec, n: int, planned: float, at: float, again_of: str = ""
    ) -> None:
        """Create and track the message now (so later events can name it), send it in a task."""
        tracked = self.make(event, n, planned, at, again_of)
        named = [] if again_of else self.named(event)
        self.engine.spawn(self.send(tracked, event, n, named, again_of), f"send-{event.index}-{n}")

    def named(self, event: EventSpec) -> list[Tracked | str]:
        return [
            ref if ref.startswith(LITERAL_REF) else self.labels[ref]
            for ref in event.refs
            if ref.startswith(LITERAL_REF) or ref in self.labels
        ]

    def make(
        self, event: EventSpec, n: int, planned: float, at: float, again_of: str = ""
    ) -> Tracked:
        rng = _rng_for(self.options.seed, event, n if not again_of else -n)
        table = event.resend if again_of and event.resend is not None else None
        answer = (table.answer if table else event.answer).draw(rng)
        think = (table.think if table else event.think).sample(rng)
        if again_of:
            label = table.label if table and table.label else event.label_of(n) + "+again"
        else:
            label = event.label_of(n)
        tracked = Tracked(
            message_id=new_message_id(),
            sender=event.sender,
            recipient=event.recipient,
            body=event.body,
            precedence=event.precedence,
            planned=planned,
            label=label,
            answer=answer,
            think_s=think,
            ack_id=new_message_id(),
            resend_of=again_of,
            event_index=event.index,
            expected_refusal=event.expect.refused if event.expect and not again_of else "",
        )
        if self.clock.max_speed and tracked.expects_ack:
            tracked.answer_at = at + think
        if not again_of:
            tracked.on_answer = lambda t: self.on_answer(event, n, t)
            if event.label:
                self.labels[event.label] = tracked
                self.labels[label] = tracked
        elif label:
            self.labels[label] = tracked
        tracked.on_stage = self.on_stage
        self.hold(tracked, at, burst=bool(event.burst))
        self.engine.track(tracked)
        return tracked

    async def wait_named(self, named: list[Tracked | str]) -> list[str]:
        # A message refers only to messages already journaled: wait for the sends it names
        # (at max speed they may still be in flight), as a watch officer would.
        for earlier in named:
            if isinstance(earlier, Tracked):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(earlier.done.wait(), self.engine.send_timeout_s)
        return [e if isinstance(e, str) else e.message_id for e in named]

    async def send(
        self,
        tracked: Tracked,
        event: EventSpec,
        n: int,
        named: list[Tracked | str],
        again_of: str,
    ) -> None:
        refs = [again_of] if again_of else await self.wait_named(named)
        envelope = event.envelope(
            n=n, now_ns=time.time_ns(), refs=refs, message_id=tracked.message_id
        )
        if again_of:
            envelope.action = common_pb2.ACTION_NEW  # a new message referring to the first
        await self.engine.send(tracked, envelope)

    async def send_batch(
        self, items: list[tuple[int, Tracked]], event: EventSpec, named: list[Tracked | str]
    ) -> None:
        refs = await self.wait_named(named)
        now_ns = time.time_ns()
        envelopes = [
            (t, event.envelope(n=n, now_ns=now_ns, refs=refs, message_id=t.message_id))
            for n, t in items
        ]
        await self.engine.send_many(envelopes)

    def on_answer(self, event: EventSpec, n: int, tracked: Tracked) -> None:
        if tracked.ack_level != bodies_pb2.ACKNOWLEDGEMENT_LEVEL_SAY_AGAIN:
            return
        delay = event.think.sample(_rng_for(self.options.seed, event, -n))
        at = self.clock.now() + delay
        self.clock.call_at(
            at,
            lambda: self.start_one(event, n, time.monotonic(), at, again_of=tracked.message_id),
        )

    # -- max-speed ordering

    def hold(self, tracked: Tracked, at: float, *, burst: bool) -> None:
        if not self.clock.max_speed:
            return
        timeout = self.engine.send_timeout_s
        watched = tracked.label.partition("#")[0] in self.watched_delivery

        def sent(t: Tracked) -> bool:
            if t.error or t.rejected:
                return True
            return t.journaled is not None and (not watched or t.delivered is not None)

        holds: list[tuple[Hold, Callable[[Tracked], bool]]] = []
        if not burst or watched:
            # (a burst is a backlog: what comes after it is submitted while it is still being
            # journaled, as it would be at any finite speed)
            holds.append((self.clock.hold(at, timeout), sent))
        if tracked.expects_ack:

            def answered(t: Tracked) -> bool:
                if t.error or t.rejected or t.message_id in self.ack_failed:
                    return True
                return t.acknowledged is not None and t.ack_returned is not None

            assert tracked.answer_at is not None
            holds.append((self.clock.hold(tracked.answer_at, timeout), answered))
        self.holds[tracked.message_id] = holds

    def on_stage(self, tracked: Tracked, stage: str) -> None:
        if stage == "ack_failed":
            self.ack_failed.add(tracked.message_id)
        self.fire_after(tracked)
        holds = self.holds.get(tracked.message_id)
        if holds:
            left = []
            for hold, done in holds:
                if done(tracked):
                    self.clock.release(hold)
                else:
                    left.append((hold, done))
            self.holds[tracked.message_id] = left

    # -- triggers

    def arm(self, event: EventSpec) -> None:
        self.unarmed.discard(event.index)
        self.armed.append(event)
        trigger = event.trigger
        assert trigger is not None
        if trigger.label:
            target = self.labels.get(trigger.label)
            if target is not None:
                self.fire_after(target)

    def fire_after(self, tracked: Tracked) -> None:
        for event in list(self.armed):
            trigger = event.trigger
            assert trigger is not None
            if not trigger.label or self.labels.get(trigger.label) is not tracked:
                continue
            if getattr(tracked, trigger.state) is not None:
                self.fire(event)

    def on_link(self, direction: str, up: bool) -> None:
        for event in list(self.armed):
            trigger = event.trigger
            assert trigger is not None
            wanted = trigger.on_link and trigger.state == ("up" if up else "down")
            if wanted and trigger.direction in ("", direction):
                self.fire(event)

    def fire(self, event: EventSpec) -> None:
        self.armed.remove(event)
        self.firing += 1
        at = self.clock.now() + event.delay_s

        def go() -> None:
            self.firing -= 1
            self.start(event, at)

        self.clock.call_at(at, go)

    def untriggered(self) -> list[EventSpec]:
        waiting = {e.index for e in self.armed} | self.unarmed
        return [e for e in self.scenario.events if e.index in waiting]

    async def wait_triggers(self, timeout: float) -> None:
        """Until every triggered event has fired and started (or `timeout` wall seconds)."""
        deadline = time.monotonic() + timeout
        while (self.armed or self.unarmed or self.firing) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        while self.engine.running("send-") and time.monotonic() < deadline:
            await asyncio.sleep(0.02)


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
            flags.append("refused" if t.refused_as_expected else "error")
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
        "send_errors": sum(1 for t in tracked if t.error and not t.refused_as_expected),
        "refused_as_expected": sum(1 for t in tracked if t.refused_as_expected),
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
        return await check_journals_in_scope(target, scope, verify=verify)
    journaled = [
        (t.message_id, t.sender, t.recipient)
        for t in engine.tracked.values()
        if t.journaled is not None
    ]
    return await compare_through_api(target, sides, journaled)


async def check_journals_in_scope(
    target: Target, scope: set[str], *, verify: bool = True
) -> IntegrityReport:
    """Compare both journals (the *lost* count limited to `scope`), then verify each."""
    assert target.journals
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


async def compare_through_api(
    target: Target, sides: dict[str, Side], journaled: Sequence[tuple[str, str, str]]
) -> IntegrityReport:
    """The integrity check without the journals: each (message id, sender, recipient) read
    back from both gateways through the operator API."""
    sent: dict[str, RecordView] = {}
    received: dict[str, RecordView | None] = {}
    from client.errors import ClientError, NotFound

    for message_id, sender, recipient in journaled:
        try:
            sent[message_id] = RecordView.of(await sides[sender].watcher.get(message_id))
            received[message_id] = RecordView.of(await sides[recipient].watcher.get(message_id))
        except NotFound:
            received[message_id] = None
        except ClientError as exc:
            log.warning("cannot read %s for the integrity check: %s", message_id, exc)
    return compare_records(sent, received, target.parties)
