"""Run metrics: latency histograms per stage, message type and precedence; counters; link downtime.

Latencies are recorded in microseconds into HDR histograms (`hdrhistogram`, 1 µs .. 1 h, three
significant digits), one per (stage, body type, precedence), so percentiles stay exact to 0.1 %
at any count and histograms from several runs merge without loss. Stages, all measured in the
simulator process with `time.monotonic()` from the message's *planned* submit time:

    journaled     Send returned (the sender's gateway made the message durable)
    delivered     the sender's Watch stream reported EVENT_KIND_MESSAGE_DELIVERED
    acknowledged  the sender's Watch stream reported EVENT_KIND_MESSAGE_ACKNOWLEDGED
    ack_system    acknowledged minus the responder's think time: the system's own share of
                  the answer's latency (both paths, both gateways), without the watch officer
    ack_return    from the responder's Acknowledge returning to that ACKNOWLEDGED event: the
                  return path of the answer, without the watch officer's think-time
    think         operator response time, apart from the system: from the responder seeing
                  the message (MESSAGE_RECEIVED) to it calling Acknowledge (scripted think time
                  plus the responder's own scheduling)

For scenario runs the planned time is the moment the send is started; in load mode it is the
arrival time planned in advance, so a stalled system is charged for every message it delayed
(no coordinated omission).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from sim.scenario import PRECEDENCE_NAMES

STAGES = ("journaled", "delivered", "acknowledged", "ack_system", "ack_return", "think")
# the stages that are the system's latency (think is the operator's, not the system's)
SYSTEM_STAGES = ("journaled", "delivered", "ack_system", "ack_return")
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT = 3
SCATTER_POINTS = 4000


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT)


def record_seconds(histogram: HdrHistogram, seconds: float) -> None:
    micros = round(seconds * 1e6)
    histogram.record_value(min(max(micros, LOWEST_US), HIGHEST_US))


def percentiles(histogram: HdrHistogram, wanted: Iterable[float]) -> dict[float, int]:
    """Values (µs) at the given percentiles: the library's own one-pass percentile call (the
    same values as `get_value_at_percentile`, HdrHistogram's rounding rules)."""
    wanted = list(wanted)
    if histogram.get_total_count() == 0:
        return dict.fromkeys(wanted, 0)
    found = histogram.get_percentile_to_value_dict(wanted)
    return {p: int(found[p]) for p in wanted}


def summarize(histogram: HdrHistogram) -> dict[str, float | int]:
    """count, min, mean, p50, p90, p99, p999, max, in milliseconds."""
    count = int(histogram.get_total_count())
    keys = ("min", "mean", "p50", "p90", "p99", "p999", "max")
    if count == 0:
        return {"count": 0, **dict.fromkeys(keys, 0.0)}

    def ms(value: float) -> float:
        return round(value / 1000.0, 3)

    # (the library's `get_mean_value` walks every bucket in Python, ~0.1 s per histogram: one
    # pass over the non-empty buckets gives the same mean)
    counts = histogram.counts
    mean = (
        sum(
            _middle(histogram, histogram.get_value_from_index(i)) * counts[i]
            for i in range(histogram.counts_len)
            if counts[i]
        )
        / count
    )
    at = percentiles(histogram, (50.0, 90.0, 99.0, 99.9))
    return {
        "count": count,
        "min": ms(histogram.get_min_value()),
        "mean": ms(mean),
        "p50": ms(at[50.0]),
        "p90": ms(at[90.0]),
        "p99": ms(at[99.0]),
        "p999": ms(at[99.9]),
        "max": ms(histogram.get_max_value()),
    }


def _middle(histogram: HdrHistogram, value: int) -> float:
    return (value + float(histogram.get_highest_equivalent_value(value))) / 2


# Percentiles for the percentile-distribution plot, HdrHistogram style: ever closer to 100.
PLOT_PERCENTILES = (
    0.0,
    10.0,
    25.0,
    50.0,
    75.0,
    90.0,
    95.0,
    99.0,
    99.5,
    99.9,
    99.95,
    99.99,
    99.999,
    100.0,
)


def supported_percentile(count: int) -> float:
    """The highest percentile `count` samples can tell apart from the maximum: 1 - 1/count
    (5 samples say nothing about the 99.999th percentile; their curve stops at 80 %)."""
    return 100.0 * (1.0 - 1.0 / count) if count > 0 else 0.0


def percentile_curve(histogram: HdrHistogram) -> list[tuple[float, float]]:
    """(percentile, latency ms) points for a percentile plot, limited by the sample count:
    the percentiles the samples support, then the maximum at 100."""
    count = int(histogram.get_total_count())
    if count == 0:
        return []
    limit = supported_percentile(count)
    wanted = [p for p in PLOT_PERCENTILES[:-1] if p <= limit + 1e-9]
    at = percentiles(histogram, wanted)
    points = [(p, round(at[p] / 1000.0, 3)) for p in wanted]
    points.append((100.0, round(histogram.get_max_value() / 1000.0, 3)))
    return points


@dataclass
class LinkWindow:
    """One stretch of time a link direction was reported down (wall-clock seconds)."""

    direction: str
    down: float
    up: float | None


@dataclass
class Metrics:
    """Everything measured in one run; merge runs with `merge`."""

    seed: int = 0
    histograms: dict[tuple[str, str, int], HdrHistogram] = field(default_factory=dict)
    totals: dict[str, HdrHistogram] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    # Messages answered, by the level of their latest acknowledgement (the one that stands).
    ack_levels: Counter[str] = field(default_factory=Counter)
    overdue: set[str] = field(default_factory=set)
    realerts: set[str] = field(default_factory=set)
    expired: set[str] = field(default_factory=set)
    link_windows: list[LinkWindow] = field(default_factory=list)
    # Scatter samples: (seconds since the run began, stage, latency ms, precedence name).
    samples: list[tuple[float, str, float, str]] = field(default_factory=list)
    _seen: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(0))

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        for stage in STAGES:
            self.totals.setdefault(stage, new_histogram())

    # ------------------------------------------------------------------ recording

    def record(
        self, stage: str, body: str, precedence: int, seconds: float, at: float | None = None
    ) -> None:
        key = (stage, body, precedence)
        histogram = self.histograms.get(key)
        if histogram is None:
            histogram = self.histograms[key] = new_histogram()
        record_seconds(histogram, seconds)
        record_seconds(self.totals[stage], seconds)
        if at is not None and stage in ("journaled", "delivered", "acknowledged"):
            self._sample((round(at, 4), stage, round(seconds * 1000.0, 3), _prec(precedence)))

    def _sample(self, point: tuple[float, str, float, str]) -> None:
        # Reservoir sampling (Algorithm R): a fair sample of every point, bounded in size.
        self._seen += 1
        if len(self.samples) < SCATTER_POINTS:
            self.samples.append(point)
            return
        slot = self._rng.randrange(self._seen)
        if slot < SCATTER_POINTS:
            self.samples[slot] = point

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def error(self, what: str) -> None:
        self.errors[what] += 1

    def link_down(self, direction: str, at: float) -> None:
        if any(w.direction == direction and w.up is None for w in self.link_windows):
            return
        self.link_windows.append(LinkWindow(direction, at, None))

    def link_up(self, direction: str, at: float) -> None:
        for window in self.link_windows:
            if window.direction == direction and window.up is None:
                window.up = max(at, window.down)

    # ------------------------------------------------------------------ reading

    def total(self, stage: str) -> HdrHistogram:
        return self.totals[stage]

    def link_down_seconds(self, end: float) -> dict[str, float]:
        """Seconds each direction was down, and "any" (the union), closing open windows at end."""
        result: dict[str, float] = {}
        spans: list[tuple[float, float]] = []
        for window in self.link_windows:
            up = window.up if window.up is not None else max(end, window.down)
            result[window.direction] = result.get(window.direction, 0.0) + (up - window.down)
            spans.append((window.down, up))
        result["any"] = _union_length(spans)
        return {k: round(v, 3) for k, v in result.items()}

    def by_precedence(self, stage: str) -> dict[int, HdrHistogram]:
        """One stage's histograms per precedence (message types merged), FLASH first."""
        result: dict[int, HdrHistogram] = {}
        for (s, _body, precedence), histogram in sorted(
            self.histograms.items(), key=lambda kv: (kv[0][2], kv[0][1])
        ):
            if s == stage:
                result.setdefault(precedence, new_histogram()).add(histogram)
        return dict(sorted(result.items()))

    def encoded(self) -> dict[str, str]:
        """Every histogram in HdrHistogram's compressed, base64 encoding (`encode()`), keyed
        `stage/PRECEDENCE/type` and `stage` for the totals: any HdrHistogram library decodes
        them (`decode_and_add` in Python), and histograms of several runs merge exactly."""
        found: dict[str, str] = {}
        for stage, histogram in self.totals.items():
            if histogram.get_total_count():
                found[stage] = histogram.encode().decode("ascii")
        for (stage, body, precedence), histogram in sorted(
            self.histograms.items(), key=lambda kv: (STAGES.index(kv[0][0]), kv[0][2], kv[0][1])
        ):
            found[f"{stage}/{_prec(precedence)}/{body}"] = histogram.encode().decode("ascii")
        return found

    def add_encoded(self, encoded: dict[str, str]) -> None:
        """Merge histograms in the form `encoded` gives (from another process): exact, as
        HdrHistogram's `decode_and_add` is."""
        by_name = {name.upper(): value for value, name in PRECEDENCE_NAMES.items()}
        for key, text in encoded.items():
            stage, _, rest = key.partition("/")
            if not rest:
                self.totals.setdefault(stage, new_histogram()).decode_and_add(text)
                continue
            precedence, _, body = rest.partition("/")
            number = by_name.get(precedence, int(precedence) if precedence.isdigit() else 0)
            histogram = self.histograms.get((stage, body, number))
            if histogram is None:
                histogram = self.histograms[(stage, body, number)] = new_histogram()
            histogram.decode_and_add(text)

    def breakdown(self) -> list[dict[str, Any]]:
        """Latency per (body type, precedence), for the report's table."""
        keys = sorted({(body, prec) for _, body, prec in self.histograms}, key=_breakdown_order)
        rows = []
        for body, prec in keys:
            row: dict[str, Any] = {"type": body, "precedence": _prec(prec)}
            for stage in STAGES:
                histogram = self.histograms.get((stage, body, prec))
                if histogram is not None:
                    row[stage] = summarize(histogram)
            rows.append(row)
        return rows

    def merge(self, other: Metrics) -> None:
        for key, histogram in other.histograms.items():
            mine = self.histograms.get(key)
            if mine is None:
                mine = self.histograms[key] = new_histogram()
            mine.add(histogram)
        for stage, histogram in other.totals.items():
            self.totals.setdefault(stage, new_histogram()).add(histogram)
        self.counts.update(other.counts)
        self.errors.update(other.errors)
        self.ack_levels.update(other.ack_levels)
        self.overdue |= other.overdue
        self.realerts |= other.realerts
        self.expired |= other.expired
        self.link_windows += other.link_windows
        for point in other.samples:
            self._sample(point)


def _prec(precedence: int) -> str:
    return PRECEDENCE_NAMES.get(precedence, str(precedence))


def _breakdown_order(key: tuple[str, int]) -> tuple[int, str]:
    body, precedence = key
    return precedence, body


def _union_length(spans: Iterable[tuple[float, float]]) -> float:
    total = 0.0
    current: tuple[float, float] | None = None
    for start, end in sorted(spans):
        if current is None or start > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = (start, end)
        else:
            current = (current[0], max(current[1], end))
    if current is not None:
        total += current[1] - current[0]
    return total
