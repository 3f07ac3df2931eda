"""Thresholds (service-level objectives) a run must meet, beside its integrity check.

    --slo delivered.p99<50ms --slo flash.delivered.p99<20ms --slo errors==0

A threshold is ``[PRECEDENCE.]STAGE.STAT OP VALUE[UNIT]`` for a latency, or ``COUNTER OP VALUE``
for a count or a ratio:

* STAGE is one of `sim.metrics.STAGES` (journaled, delivered, acknowledged, ack_system,
  ack_return, think); STAT one of p50, p90, p95, p99, p999, p9999, min, mean, max, count;
  PRECEDENCE (flash, immediate, priority, routine) limits it to that precedence's messages.
  A latency takes a unit, ``us``, ``ms`` (the default) or ``s``.
* COUNTER is one of `COUNTERS`: errors (every error the run counted: failed sends, refused
  messages, failed acknowledgements, watch failures), the integrity counts (lost, duplicated,
  reordered, forged), overdue, expired, realerts, rejected, send_errors, undelivered, a ratio
  (ack_ratio, delivered_ratio: 0..1, or written in %), link_down_s, or throughput (delivered
  messages per second; for load runs, the achieved rate over the steady part).
* OP is one of ``<``, ``<=``, ``>``, ``>=``, ``==``.

A run's verdict is PASS only when its integrity check passes **and** every threshold holds; each
threshold is reported with the value measured. A latency threshold on a stage or precedence
with no samples fails ("no samples"): a threshold nothing could check proves nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sim.metrics import STAGES, new_histogram, percentiles
from sim.scenario import PRECEDENCES

if TYPE_CHECKING:
    from sim.engine import Tracked
    from sim.runner import RunResult
    from sim.scenario import EventSpec

STATS = ("p50", "p90", "p95", "p99", "p999", "p9999", "min", "mean", "max", "count")
_STAT_PERCENTILE = {
    "p50": 50.0,
    "p90": 90.0,
    "p95": 95.0,
    "p99": 99.0,
    "p999": 99.9,
    "p9999": 99.99,
}
RATIOS = ("ack_ratio", "delivered_ratio")
COUNTERS = (
    "errors",
    "lost",
    "duplicated",
    "reordered",
    "forged",
    "overdue",
    "expired",
    "realerts",
    "rejected",
    "send_errors",
    "undelivered",
    *RATIOS,
    "link_down_s",
    "throughput",
    "untriggered",
    "refused_as_expected",
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
}
_LATENCY_UNITS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0}
_FORM = re.compile(
    r"^\s*(?P<metric>[a-z0-9_.]+)\s*(?P<op><=|>=|==|<|>)\s*"
    r"(?P<value>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[a-zµ%]*)\s*$"
)


class ThresholdError(ValueError):
    """A threshold that cannot be parsed: the message says what is wrong and what is valid."""


@dataclass(frozen=True)
class Threshold:
    text: str  # as written
    metric: str  # "delivered.p99", "flash.delivered.p99", "errors"
    op: str
    value: float  # in the metric's own unit: ms for latencies, 0..1 for ratios
    precedence: int | None = None
    stage: str = ""
    stat: str = ""

    @property
    def unit(self) -> str:
        if self.stage and self.stat != "count":
            return "ms"
        if self.metric == "link_down_s":
            return "s"
        if self.metric == "throughput":
            return "msg/s"
        return ""


@dataclass(frozen=True)
class ThresholdResult:
    threshold: Threshold
    measured: float | None  # None: nothing to measure (no samples)
    passed: bool
    note: str = ""  # said instead of the measured value when there is none

    def describe(self) -> str:
        t = self.threshold
        if self.measured is None:
            measured = self.note or "no samples"
        elif t.metric in RATIOS:
            measured = f"{100 * self.measured:.1f}%"
        else:
            measured = f"{self.measured:g}{(' ' + t.unit) if t.unit else ''}"
        return f"{t.text}: {'pass' if self.passed else 'FAIL'} (measured {measured})"

    def to_json(self) -> dict[str, Any]:
        t = self.threshold
        return {
            "threshold": t.text,
            "metric": t.metric,
            "op": t.op,
            "limit": t.value,
            "unit": t.unit,
            "measured": self.measured,
            "passed": self.passed,
            **({"note": self.note} if self.note else {}),
        }


def parse_threshold(text: str) -> Threshold:
    match = _FORM.match(text.strip().lower())
    if match is None:
        raise ThresholdError(
            f"threshold {text!r}: write METRIC OP VALUE, e.g. delivered.p99<50ms, "
            "flash.delivered.p99<20ms, errors==0 (OP is <, <=, >, >=, ==)"
        )
    metric, op, unit = match["metric"], match["op"], match["unit"]
    value = float(match["value"])
    parts = metric.split(".")
    if len(parts) == 1:
        name = parts[0]
        if name not in COUNTERS:
            raise ThresholdError(
                f"threshold {text!r}: {name!r} is not a counter ({', '.join(COUNTERS)}); "
                "a latency is STAGE.STAT, e.g. delivered.p99"
            )
        if name in RATIOS:
            if unit == "%":
                value /= 100.0
            elif unit:
                raise ThresholdError(f"threshold {text!r}: a ratio is 0..1 or a percentage (%)")
            if value > 1:
                raise ThresholdError(f"threshold {text!r}: a ratio is at most 1 (or 100%)")
        elif name == "link_down_s":
            if unit not in ("", "s"):
                raise ThresholdError(f"threshold {text!r}: link_down_s is in seconds")
        elif unit:
            raise ThresholdError(f"threshold {text!r}: {name} takes no unit")
        return Threshold(text.strip(), name, op, value)
    precedence: int | None = None
    if len(parts) == 3:
        if parts[0] not in PRECEDENCES:
            raise ThresholdError(
                f"threshold {text!r}: {parts[0]!r} is not a precedence ({', '.join(PRECEDENCES)})"
            )
        precedence = PRECEDENCES[parts[0]]
        parts = parts[1:]
    if len(parts) != 2:
        raise ThresholdError(f"threshold {text!r}: a latency is [PRECEDENCE.]STAGE.STAT")
    stage, stat = parts
    if stage not in STAGES:
        raise ThresholdError(f"threshold {text!r}: {stage!r} is not a stage ({', '.join(STAGES)})")
    if stat not in STATS:
        raise ThresholdError(
            f"threshold {text!r}: {stat!r} is not a statistic ({', '.join(STATS)})"
        )
    if stat == "count":
        if unit:
            raise ThresholdError(f"threshold {text!r}: a count takes no unit")
    else:
        if unit not in ("", *_LATENCY_UNITS):
            raise ThresholdError(f"threshold {text!r}: a latency unit is us, ms or s")
        value *= _LATENCY_UNITS.get(unit, 1.0)
    return Threshold(text.strip(), metric, op, value, precedence, stage, stat)


def parse_thresholds(texts: Iterable[str]) -> list[Threshold]:
    return [parse_threshold(text) for text in texts]


def measure(threshold: Threshold, result: RunResult) -> float | None:
    """The value a threshold is compared with, measured on one run."""
    t = threshold
    if t.stage:
        metrics = result.metrics
        if t.precedence is None:
            histogram = metrics.total(t.stage)
        else:
            histogram = metrics.by_precedence(t.stage).get(t.precedence, new_histogram())
        count = int(histogram.get_total_count())
        if t.stat == "count":
            return float(count)
        if count == 0:
            return None
        if t.stat == "min":
            micros = float(histogram.get_min_value())
        elif t.stat == "max":
            micros = float(histogram.get_max_value())
        elif t.stat == "mean":
            micros = float(histogram.get_mean_value())
        else:
            p = _STAT_PERCENTILE[t.stat]
            micros = float(percentiles(histogram, [p])[p])
        return round(micros / 1000.0, 3)
    counts = result.counts
    integrity = result.integrity
    name = t.metric
    if name == "errors":
        return float(sum(result.metrics.errors.values()) + counts.get("rejected", 0))
    if name in ("lost", "duplicated", "reordered", "forged"):
        return float(integrity.total(name))
    if name == "expired":
        return float(len(result.metrics.expired))
    if name == "undelivered":
        return float(counts.get("journaled", 0) - counts.get("delivered", 0))
    if name == "ack_ratio":
        expected = counts.get("acks_expected", 0)
        return round(counts.get("acknowledged", 0) / expected, 4) if expected else None
    if name == "delivered_ratio":
        journaled = counts.get("journaled", 0)
        return round(counts.get("delivered", 0) / journaled, 4) if journaled else None
    if name == "link_down_s":
        return float((result.extra.get("link_down_s") or {}).get("any", 0.0))
    if name == "throughput":
        load = result.extra.get("load")
        return float(load["achieved_per_s"]) if load else round(result.throughput, 3)
    return float(counts.get(name, 0))


def evaluate(thresholds: Iterable[Threshold], result: RunResult) -> list[ThresholdResult]:
    found = []
    for threshold in thresholds:
        measured = measure(threshold, result)
        passed = measured is not None and _OPS[threshold.op](measured, threshold.value)
        found.append(ThresholdResult(threshold, measured, passed))
    return found


def expectation_results(
    events: Iterable[EventSpec], tracked: Iterable[Tracked]
) -> list[ThresholdResult]:
    """A scenario's `expect` tables, checked on the messages each event sent (not their
    re-sends), one result per expectation beside the thresholds: the expected answer (measured:
    how many messages got another), the expected refusal (how many were not refused so), and
    each latency budget (the slowest message's latency, ms; a message that never reached the
    stage fails it)."""
    by_event: dict[int, list[Tracked]] = {}
    for t in tracked:
        if not t.resend_of:
            by_event.setdefault(t.event_index, []).append(t)
    found = []
    for event in events:
        expect = event.expect
        if expect is None:
            continue
        mine = by_event.get(event.index, [])
        name = event.name()
        if expect.answer:
            wrong = sum(1 for t in mine if _answer_of(t) != expect.answer)
            found.append(
                _counted(f"expect {name}: answer {expect.answer.upper()}", wrong, bool(mine))
            )
        if expect.refused:
            wrong = sum(1 for t in mine if not t.refused_as_expected)
            found.append(_counted(f"expect {name}: refused {expect.refused}", wrong, bool(mine)))
        for stage, budget_s in expect.budgets:
            threshold = Threshold(
                f"expect {name}: {stage} within {budget_s:g} s",
                f"expect.{name}.{stage}.max",
                "<=",
                budget_s * 1000.0,
                stage=stage,
                stat="max",
            )
            latencies = [_latency_ms(t, stage) for t in mine]
            missing = sum(1 for v in latencies if v is None)
            if missing or not mine:
                note = f"{missing} of {len(mine)} never {stage}" if mine else "nothing sent"
                found.append(ThresholdResult(threshold, None, False, note))
                continue
            worst = max(v for v in latencies if v is not None)
            found.append(ThresholdResult(threshold, worst, worst <= budget_s * 1000.0))
    return found


def _counted(text: str, wrong: int, any_sent: bool) -> ThresholdResult:
    threshold = Threshold(f"{text} (messages otherwise ==0)", text, "==", 0.0)
    if not any_sent:
        return ThresholdResult(threshold, None, False, "nothing sent")
    return ThresholdResult(threshold, float(wrong), wrong == 0)


def _answer_of(t: Tracked) -> str:
    from sim.engine import LEVEL_NAMES

    if t.acknowledged is None:
        return "none"
    return LEVEL_NAMES.get(t.ack_level, "?").lower()


def _latency_ms(t: Tracked, stage: str) -> float | None:
    if stage == "ack_system":
        if t.acknowledged is None or t.ack_called is None or t.received is None:
            return None
        think = t.ack_called - t.received
        return round(max(0.0, t.acknowledged - t.planned - think) * 1000.0, 3)
    at: float | None = getattr(t, stage)
    return None if at is None else round((at - t.planned) * 1000.0, 3)
