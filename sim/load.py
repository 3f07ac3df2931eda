"""Synthetic load at an open-loop arrival rate, and the latency-versus-load sweep.

Open loop, as wrk2 does it: every send time is planned before the run begins (a Poisson
process, or evenly spaced), and each message's latency is measured from its *planned* time.
Senders are tasks launched at their planned times, never a closed loop waiting for the previous
answer, so a stall of the system under test is charged to every message it delays instead of
silently slowing the generator down (coordinated omission).

    plan = plan_arrivals(rate=200, duration_s=10, ramp_s=2, arrival="poisson", rng=rng)
    result = await run_load(LoadSpec(rate=200, duration_s=10), target, sides, options)

With a ramp, the rate grows linearly from 0 to `rate` over `ramp_s` seconds and then holds;
arrival times come from inverting the cumulative rate, so the ramp is exact for both arrival
kinds. Achieved throughput is counted over the steady part only: deliveries whose message was
planned after the ramp, per second of steady time.

The generator checks itself: it reports how late each send started against its plan (lag)
and the CPU it used. If the lag or the CPU is high, the generator, not the gateways, may be the
bottleneck, and the report says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hotline.ids import new_message_id
from hotline.v1 import common_pb2, envelope_pb2
from sim.clock import VirtualClock
from sim.engine import Engine, Side, Tracked
from sim.faults import FaultController
from sim.live import REDRAW_S, load_status
from sim.machine import CpuMeter
from sim.metrics import Metrics, new_histogram, record_seconds, summarize
from sim.runner import (
    RunOptions,
    RunResult,
    active_seconds,
    check_integrity,
    exchange_checkpoints,
    message_rows,
    tally,
)
from sim.scenario import PRECEDENCE_NAMES, PRECEDENCES
from sim.target import Target

DEFAULT_MIX = "flash=0.05,immediate=0.15,priority=0.3,routine=0.5"
LAG_WARN_MS = 5.0
CPU_WARN_PCT = 85.0

LOAD_BATCH_MAX = 64  # messages of one sender due together, sent in one SendBatch


def parse_mix(text: str) -> tuple[tuple[int, float], ...]:
    """`flash=0.05,immediate=0.15,...` → ((PRECEDENCE_FLASH, 0.05), ...), normalised to 1."""
    weights: dict[int, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in PRECEDENCES:
            raise ValueError(
                f"precedence mix {text!r}: write name=weight with names {', '.join(PRECEDENCES)}"
            )
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"precedence mix {text!r}: {value!r} is not a number") from None
        if weight < 0 or not math.isfinite(weight):
            raise ValueError(f"precedence mix {text!r}: weights must be >= 0")
        weights[PRECEDENCES[name]] = weight
    total = sum(weights.values())
    if total <= 0:
        raise ValueError(f"precedence mix {text!r}: at least one weight must be positive")
    return tuple((p, w / total) for p, w in weights.items() if w > 0)


def plan_arrivals(
    *,
    rate: float,
    duration_s: float,
    ramp_s: float = 0.0,
    arrival: str = "poisson",
    rng: random.Random,
) -> list[float]:
    """Planned send times (seconds from the start) for an open-loop generator."""
    if rate <= 0 or duration_s <= 0:
        return []
    if arrival not in ("poisson", "constant"):
        raise ValueError(f"arrival must be poisson or constant, got {arrival!r}")
    ramp = min(max(ramp_s, 0.0), duration_s)
    ramp_mass = rate * ramp / 2.0  # expected arrivals during the ramp

    def invert(y: float) -> float:
        # cumulative rate: rate*t^2/(2*ramp) on the ramp, then linear
        if ramp > 0 and y <= ramp_mass:
            return math.sqrt(2.0 * ramp * y / rate)
        return ramp + (y - ramp_mass) / rate

    times: list[float] = []
    y = 0.0
    k = 0
    while True:
        if arrival == "poisson":
            y += rng.expovariate(1.0)
        else:
            k += 1
            y = k - 0.5
        t = invert(y)
        if t >= duration_s:
            return times
        times.append(t)


def choose(rng: random.Random, weighted: Sequence[tuple[int, float]]) -> int:
    x = rng.random()
    total = 0.0
    for value, weight in weighted:
        total += weight
        if x < total:
            return value
    return weighted[-1][0]


class Payloads:
    """Envelope templates (free text, status TEST) padded to about `size` serialized bytes."""

    def __init__(self, size: int, parties: tuple[str, str]) -> None:
        self.size = size
        self.parties = parties
        self._templates: dict[tuple[str, int], envelope_pb2.Envelope] = {}

    def template(self, recipient: str, precedence: int) -> envelope_pb2.Envelope:
        key = (recipient, precedence)
        found = self._templates.get(key)
        if found is not None:
            return found
        env = envelope_pb2.Envelope(
            message_id=new_message_id(),
            recipient_party=recipient,
            status=common_pb2.MESSAGE_STATUS_TEST,
            precedence=precedence,  # type: ignore[arg-type]
            language="en",
            action=common_pb2.ACTION_NEW,
        )
        env.handling.classification = common_pb2.CLASSIFICATION_UNCLASSIFIED
        env.handling.releasable_to.extend(self.parties)
        env.free_text.subject.variants.add(
            language="en", text="Load test", kind=common_pb2.TRANSLATION_KIND_ORIGINAL
        )
        body = env.free_text.text.variants.add(
            language="en", text="x", kind=common_pb2.TRANSLATION_KIND_ORIGINAL
        )
        filler = "The quick brown fox jumps over the lazy dog. "
        missing = max(1, self.size - env.ByteSize() + 1)
        body.text = (filler * (missing // len(filler) + 1))[:missing]
        while env.ByteSize() > self.size and len(body.text) > 1:  # varint lengths can grow
            body.text = body.text[:-1]
        self._templates[key] = env
        return env

    def make(self, recipient: str, precedence: int, message_id: str) -> envelope_pb2.Envelope:
        env = envelope_pb2.Envelope()
        env.CopyFrom(self.template(recipient, precedence))
        env.message_id = message_id
        return env


@dataclass(frozen=True)
class LoadSpec:
    rate: float
    duration_s: float
    ramp_s: float = 0.0
    arrival: str = "poisson"
    mix: tuple[tuple[int, float], ...] = field(default_factory=lambda: parse_mix(DEFAULT_MIX))
    payload_bytes: int = 300
    ack_fraction: float = 0.0
    think_s: float = 0.0
    direction: str = "both"  # "JP->TW", "TW->JP" or "both"

    def describe(self) -> dict[str, Any]:
        return {
            "rate_per_s": self.rate,
            "duration_s": self.duration_s,
            "ramp_s": self.ramp_s,
            "arrival": self.arrival,
            "precedence_mix": {PRECEDENCE_NAMES[p].lower(): round(w, 4) for p, w in self.mix},
            "payload_bytes": self.payload_bytes,
            "ack_fraction": self.ack_fraction,
            "think_s": self.think_s,
            "direction": self.direction,
        }


# One planned message: (seconds from the start, sender, recipient, precedence, answer level).
Arrival = tuple[float, str, str, int, str]


def plan_load(spec: LoadSpec, parties: tuple[str, str], seed: int) -> list[Arrival]:
    """Every message of a load run, planned in advance: its send time and what it is (the same
    plan for the same seed, whether one process or many workers send it)."""
    rng = random.Random(f"load/{seed}/{spec.rate}")
    directions = _directions(spec, parties)
    times = plan_arrivals(
        rate=spec.rate,
        duration_s=spec.duration_s,
        ramp_s=spec.ramp_s,
        arrival=spec.arrival,
        rng=rng,
    )
    plan: list[Arrival] = []
    for offset in times:
        sender, recipient = directions[0] if len(directions) == 1 else rng.choice(directions)
        precedence = choose(rng, spec.mix)
        answer = "roger" if rng.random() < spec.ack_fraction else "none"
        plan.append((offset, sender, recipient, precedence, answer))
    return plan


async def open_loop(
    engine: Engine,
    plan: Sequence[Arrival],
    t0: float,
    payloads: Payloads,
    lag: Any,
    think_s: float,
) -> None:
    """Send `plan` open loop from `t0` (a `time.monotonic()`), batched on the wire: every
    message keeps its planned send time (latency counts from it), and the messages of one
    sender that are due together leave in one SendBatch. `lag` (a histogram) gets how late
    each send started against its plan."""
    due_now: dict[str, list[tuple[Tracked, Any]]] = {}

    def flush() -> None:
        for items in due_now.values():
            if items:
                engine.spawn(engine.send_many(list(items)), "send")
        due_now.clear()

    for offset, sender, recipient, precedence, answer in plan:
        due = t0 + offset
        wait = due - time.monotonic()
        if wait > 0:
            flush()
            await asyncio.sleep(wait)
        record_seconds(lag, max(0.0, time.monotonic() - due))
        tracked = Tracked(
            message_id=new_message_id(),
            sender=sender,
            recipient=recipient,
            body="free_text",
            precedence=precedence,
            planned=due,
            answer=answer,
            think_s=think_s,
            ack_id=new_message_id(),
        )
        engine.track(tracked)
        envelope = payloads.make(recipient, precedence, tracked.message_id)
        batch = due_now.setdefault(sender, [])
        batch.append((tracked, envelope))
        if len(batch) >= LOAD_BATCH_MAX:
            flush()
    flush()


def _directions(spec: LoadSpec, parties: tuple[str, str]) -> list[tuple[str, str]]:
    a, b = parties
    both = [(a, b), (b, a)]
    if spec.direction == "both":
        return both
    for sender, recipient in both:
        if spec.direction == f"{sender}->{recipient}":
            return [(sender, recipient)]
    raise ValueError(f"direction must be {a}->{b}, {b}->{a} or both, got {spec.direction!r}")


async def run_load(
    spec: LoadSpec,
    target: Target,
    sides: dict[str, Side],
    options: RunOptions,
    *,
    name: str = "",
) -> RunResult:
    directions = _directions(spec, target.parties)
    plan = plan_load(spec, target.parties, options.seed)
    payloads = Payloads(spec.payload_bytes, target.parties)
    for _sender, recipient in directions:  # build the templates before the clock starts
        for precedence, _weight in spec.mix:
            payloads.template(recipient, precedence)
    clock = VirtualClock(1.0)
    metrics = Metrics(seed=options.seed)
    engine = Engine(sides, clock, metrics)
    faults = FaultController(target.pair, target.parties, seed=options.seed)
    lag = new_histogram()
    warnings: list[str] = []
    await engine.warm_up()
    await engine.start()
    if not await engine.wait_links_up(15.0):
        warnings.append("the peer link was not up in both directions when the load began")
    cpu = CpuMeter(target.gateway_pids()).start()
    started_wall = time.time()

    progress = asyncio.create_task(_progress(engine, options, spec, len(plan)), name="progress")
    t0 = time.monotonic() + 0.2
    drained = False
    try:
        async with clock:
            faults.schedule(
                sorted(options.extra_faults, key=lambda f: f.at),
                clock.call_at,
                lambda coro: engine.spawn(coro, "fault"),
            )
            await open_loop(engine, plan, t0, payloads, lag, spec.think_s)
            while engine.running("send", "fault"):
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
        warnings.append(
            f"{len(engine.unsettled())} message(s) were not settled after the "
            f"{options.drain_s:g} s drain"
        )
    integrity = await check_integrity(target, sides, engine, verify=options.verify)
    counts = tally(engine)

    steady_from = t0 + min(spec.ramp_s, spec.duration_s)
    steady_s = max(spec.duration_s - min(spec.ramp_s, spec.duration_s), 1e-9)
    in_window = [t for t in engine.tracked.values() if t.planned >= steady_from]
    offered = len(in_window) / steady_s
    achieved = (
        sum(
            1
            for t in engine.tracked.values()
            if t.delivered is not None and steady_from <= t.delivered < t0 + spec.duration_s
        )
        / steady_s
    )
    lag_stats = summarize(lag)
    sim_cpu = cpu_result.get("simulator", 0.0)
    if lag_stats["p99"] > LAG_WARN_MS:
        warnings.append(
            f"the generator started sends up to {lag_stats['p99']:g} ms late (p99): "
            "it may be the bottleneck"
        )
    if sim_cpu > CPU_WARN_PCT:
        warnings.append(f"the simulator used {sim_cpu:.0f}% of a core: it may be the bottleneck")
    load_info: dict[str, Any] = {
        **spec.describe(),
        "planned": len(plan),
        "offered_per_s": round(offered, 2),
        "achieved_per_s": round(achieved, 2),
        "generator_lag_ms": lag_stats,
        "generator_cpu_percent": sim_cpu,
        "operators_per_side": len(next(iter(sides.values())).clients),
    }
    result = RunResult(
        kind="load",
        name=name or f"load-{spec.rate:g}",
        title=f"Open-loop load, {spec.rate:g} messages/s for {spec.duration_s:g} s",
        metrics=metrics,
        integrity=integrity,
        config={
            **spec.describe(),
            "seed": options.seed,
            "drain_s": options.drain_s,
            "target": "own pair" if target.owned else target.addresses,
            "faults": [f.describe() for f in options.extra_faults],
        },
        started_wall=started_wall,
        wall_s=end_wall - started_wall,
        active_s=active_seconds(engine),
        counts=counts,
        faults=faults.records,
        drained=drained,
        warnings=warnings,
        cpu=cpu_result,
        extra={
            "load": load_info,
            "link_down_s": metrics.link_down_seconds(end_wall),
            "axis": {"origin_wall": engine.start_wall_ns / 1e9},
        },
        messages=message_rows(engine),
    )
    result.check(options.thresholds)
    return result


async def _progress(engine: Engine, options: RunOptions, spec: LoadSpec, planned: int) -> None:
    live = options.live
    if live is not None:
        try:
            while True:
                p = engine.progress
                live.show(
                    load_status(
                        rate=spec.rate,
                        elapsed_s=engine.elapsed(),
                        duration_s=spec.duration_s,
                        planned=planned,
                        sent=p.sent,
                        delivered=p.delivered,
                        acknowledged=p.acknowledged,
                        errors=p.errors,
                    )
                )
                await asyncio.sleep(REDRAW_S)
        finally:
            live.clear()
    if options.progress_s <= 0:
        return
    while True:
        await asyncio.sleep(options.progress_s)
        options.echo(engine.status_line() + f"  (plan {planned})")


def step_summary(result: RunResult) -> dict[str, Any]:
    load = result.extra["load"]
    return {
        "rate_per_s": load["rate_per_s"],
        "offered_per_s": load["offered_per_s"],
        "achieved_per_s": load["achieved_per_s"],
        "latency_ms": {
            stage: summarize(result.metrics.total(stage))
            for stage in ("journaled", "delivered", "acknowledged")
        },
        "generator_lag_ms": load["generator_lag_ms"],
        "cpu_percent": result.cpu,
        "send_errors": result.counts.get("send_errors", 0),
        "verdict": result.verdict,
    }


def find_saturation(steps: Sequence[dict[str, Any]]) -> tuple[float | None, str]:
    """The first offered rate the system could not carry: achieved below 95 % of offered, or
    send errors. (A step whose latency grew but whose achieved rate kept up with the offered
    one is not saturated: see `find_knee`.)"""
    if not steps:
        return None, "no steps"
    for step in steps:
        offered = float(step["offered_per_s"])
        achieved = float(step["achieved_per_s"])
        if offered > 0 and achieved < 0.95 * offered:
            return float(step["rate_per_s"]), (
                f"achieved {achieved:g}/s is below 95% of the offered {offered:g}/s"
            )
        if step["send_errors"]:
            return float(step["rate_per_s"]), f"{step['send_errors']} send errors"
    return None, "not reached at the rates tried"


def find_knee(steps: Sequence[dict[str, Any]]) -> tuple[float | None, str]:
    """The first offered rate whose p99 (submit → delivered) is ten times that of the lightest
    step: latency's knee, which may come before saturation."""
    if not steps:
        return None, "no steps"
    base_p99 = max(float(steps[0]["latency_ms"]["delivered"]["p99"]), 1.0)
    for step in steps:
        p99 = float(step["latency_ms"]["delivered"]["p99"])
        if p99 > 10 * base_p99:
            return float(step["rate_per_s"]), (
                f"p99 {p99:g} ms is more than 10x the {base_p99:g} ms at the lightest load"
            )
    return None, "p99 stayed within 10x of the lightest load's"
