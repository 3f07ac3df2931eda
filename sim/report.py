"""Reports of a run: a terminal summary, a JSON document, a self-contained HTML page.

The JSON document of one run has at least

    scenario, messages {sent, journaled, delivered, acknowledged, lost, duplicated, reordered,
    forged}, latency_ms {journaled, delivered, acknowledged: {p50, p90, p99, p999, max}},
    ack_ratio, overdue, link_down_s, throughput_msgs_per_s

and beside them the per type-and-precedence breakdown, latencies per precedence, the thresholds with
their measured values, the per-message table (`messages_table`), every histogram in
HdrHistogram's encoding (`histograms`), the integrity details, the faults, the CPU used, the
run's configuration and the machine. `verdict` is integrity **and** thresholds;
`integrity.verdict` is the integrity check's alone. Several runs in one command make one
document whose top level aggregates them (histograms merged, counts summed) with the
individual runs under `runs`, except a load sweep: its steps are different rates, never merged,
so its top level carries only the verdict, the sweep's table and the steps under `runs`.

The HTML page needs nothing from the network: its charts are SVG written here, inline, and its
per-message table sorts and filters with a few lines of inline script.
"""

from __future__ import annotations

import csv
import html
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sim.integrity import PROBLEM_KINDS, DirectionReport, IntegrityReport
from sim.machine import machine_info
from sim.metrics import (
    STAGES,
    Metrics,
    percentile_curve,
    summarize,
    supported_percentile,
)
from sim.runner import RunResult
from sim.scenario import PRECEDENCE_NAMES

MAIN_STAGES = ("journaled", "delivered", "acknowledged")
STAGE_COLOURS = {
    "journaled": "#2b6cb0",
    "delivered": "#2f855a",
    "acknowledged": "#c05621",
    "ack_return": "#6b46c1",
    "ack_system": "#b7791f",
    "think": "#718096",
}
PRECEDENCE_COLOURS = {
    "FLASH": "#c53030",
    "IMMEDIATE": "#dd6b20",
    "PRIORITY": "#2b6cb0",
    "ROUTINE": "#718096",
}
# the stages charted and tabled per precedence: delivery, and the answer without think time
PRECEDENCE_STAGES = ("delivered", "ack_system")
STAGE_TITLES = {
    "journaled": "submit → journaled",
    "delivered": "submit → delivered",
    "acknowledged": "submit → acknowledged (includes the operator's think time)",
    "ack_system": "submit → acknowledged, less the operator's think time (the system's share)",
    "ack_return": "Acknowledge → ACKNOWLEDGED at the sender (the answer's return path)",
    "think": "operator think time (received → Acknowledge called)",
}
MESSAGE_ROWS_JSON = 20_000  # rows of the per-message table in the JSON (flagged, slowest first)
MESSAGE_ROWS_HTML = 2_000  # and in the HTML page


# ---------------------------------------------------------------------------------------------
# JSON


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, tz=UTC).isoformat(timespec="seconds")


def run_json(result: RunResult) -> dict[str, Any]:
    metrics = result.metrics
    counts = result.counts
    integrity = result.integrity
    sent = counts.get("sent", 0)
    expected = counts.get("acks_expected", 0)
    link = result.extra.get("link_down_s", {}) or {}
    table, left_out = interesting_rows(result.messages, MESSAGE_ROWS_JSON)
    doc: dict[str, Any] = {
        "scenario": result.name,
        "title": result.title,
        "kind": result.kind,
        "verdict": result.verdict,
        "thresholds": [t.to_json() for t in result.thresholds],
        "started": _iso(result.started_wall),
        "wall_s": round(result.wall_s, 3),
        "messages": {
            "planned": counts.get("planned", 0),
            "sent": sent,
            "journaled": counts.get("journaled", 0),
            "delivered": counts.get("delivered", 0),
            "acknowledged": counts.get("acknowledged", 0),
            **{kind: integrity.total(kind) for kind in PROBLEM_KINDS},
            "rejected": counts.get("rejected", 0),
            "send_errors": counts.get("send_errors", 0),
            "acks_expected": counts.get("acks_expected", 0),
            "acks_sent": counts.get("acks_sent", 0),
        },
        "latency_ms": {stage: summarize(metrics.total(stage)) for stage in STAGES},
        "latency_by_precedence_ms": {
            stage: {_prec(p): summarize(h) for p, h in result.metrics.by_precedence(stage).items()}
            for stage in STAGES
        },
        # answered over the answers the scenario (or --ack) expected, not over all messages
        "ack_ratio": round(counts.get("acknowledged", 0) / expected, 4) if expected else None,
        "operator_think_ms": summarize(metrics.total("think")),
        "ack_levels": dict(metrics.ack_levels),
        "overdue": counts.get("overdue", 0),
        "realerts": counts.get("realerts", 0),
        "expired": len(metrics.expired),
        "link_down_s": link.get("any", 0.0),
        "link_down_by_direction": {k: v for k, v in link.items() if k != "any"},
        # (a load run's figure; a scenario's messages follow its timeline, not a rate)
        "throughput_msgs_per_s": round(result.throughput, 3),
        "breakdown": metrics.breakdown(),
        "messages_table": table,
        "messages_table_left_out": left_out,
        "histograms": metrics.encoded(),
        "integrity": integrity.to_json(),
        "faults": [
            {"at": f.at, "fault": f.description, "outcome": f.outcome} for f in result.faults
        ],
        "errors": dict(metrics.errors),
        "cpu_percent": result.cpu,
        "drained": result.drained,
        "warnings": result.warnings,
        "config": result.config,
    }
    if result.extra.get("load"):
        doc["load"] = result.extra["load"]
    return doc


def _prec(precedence: int) -> str:
    return PRECEDENCE_NAMES.get(precedence, str(precedence))


def interesting_rows(
    rows: Sequence[dict[str, Any]], limit: int
) -> tuple[list[dict[str, Any]], int]:
    """At most `limit` rows of the per-message table, in send order: all of them when they
    fit, else the flagged ones and then the slowest delivered. Returns (rows, left out)."""
    if len(rows) <= limit:
        return list(rows), 0

    def interest(row: dict[str, Any]) -> tuple[int, float]:
        delivered = row.get("delivered_ms")
        return (0 if row.get("flags") else 1, -(delivered if delivered is not None else 1e12))

    keep = sorted(range(len(rows)), key=lambda i: interest(rows[i]))[:limit]
    return [rows[i] for i in sorted(keep)], len(rows) - limit


def aggregate(results: Sequence[RunResult]) -> RunResult:
    """One result standing for several runs: histograms merged, counts summed."""
    if len(results) == 1:
        return results[0]
    metrics = Metrics()
    integrity = IntegrityReport(results[0].integrity.method)
    counts: dict[str, int] = {}
    for result in results:
        metrics.merge(result.metrics)
        for key, value in result.counts.items():
            counts[key] = counts.get(key, 0) + value
        for direction in result.integrity.directions:
            _add_direction(integrity, direction)
        integrity.problems += [f"{result.name}: {p}" for p in result.integrity.problems]
    link_total: dict[str, float] = {}
    for result in results:
        for key, value in (result.extra.get("link_down_s") or {}).items():
            link_total[key] = round(link_total.get(key, 0.0) + value, 3)
    return RunResult(
        kind="aggregate",
        name="+".join(r.name for r in results),
        title=f"{len(results)} runs",
        metrics=metrics,
        integrity=integrity,
        config={"runs": [r.name for r in results]},
        started_wall=min(r.started_wall for r in results),
        wall_s=sum(r.wall_s for r in results),
        active_s=sum(r.active_s for r in results),
        counts=counts,
        faults=[f for r in results for f in r.faults],
        drained=all(r.drained for r in results),
        warnings=[f"{r.name}: {w}" for r in results for w in r.warnings],
        cpu={},
        extra={"link_down_s": link_total},
        thresholds=[t for r in results for t in r.thresholds],
        messages=[m for r in results for m in r.messages],
    )


def _add_direction(integrity: IntegrityReport, more: DirectionReport) -> None:
    """Sum one run's direction into the aggregate's row for the same direction."""
    for mine in integrity.directions:
        if mine.direction == more.direction:
            for name in ("sent", "received", "refused", "unsettled", *PROBLEM_KINDS):
                setattr(mine, name, getattr(mine, name) + getattr(more, name))
            for kind, examples in more.examples.items():
                for example in examples:
                    mine.note(kind, example)
            return
    copy = DirectionReport(more.sender, more.receiver)
    integrity.directions.append(copy)
    _add_direction(integrity, more)


def document(
    results: Sequence[RunResult], *, command: str = "", merge: bool = True
) -> dict[str, Any]:
    """The JSON document for a command's runs (one run: that run's document). `merge=False`
    (a sweep's steps): the top level holds no merged figures, only the verdict and the runs."""
    if not merge and len(results) > 1:
        top: dict[str, Any] = {
            "kind": "sweep",
            "verdict": "PASS" if all(r.ok for r in results) else "FAIL",
            "machine": machine_info(),
            "runs": [run_json(r) for r in results],
        }
        if command:
            top["command"] = command
        return top
    top = run_json(aggregate(results))
    top["machine"] = machine_info()
    if command:
        top["command"] = command
    if len(results) > 1:
        top["runs"] = [run_json(r) for r in results]
    return top


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Terminal


def _fmt_ms(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:.1f}s"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}"


def terminal_summary(result: RunResult) -> str:
    doc = run_json(result)
    m = doc["messages"]
    lines = []
    verdict = doc["verdict"]
    lines.append(f"== {result.name} — {result.title}   [{verdict}]")
    lines.append(
        f"   messages   sent {m['sent']}  journaled {m['journaled']}  delivered {m['delivered']}"
        f"  acknowledged {_ack_ratio(doc)}  rejected {m['rejected']}"
        f"  send errors {m['send_errors']}"
    )
    lines.append(
        "   integrity  "
        + "  ".join(f"{kind} {m[kind]}" for kind in PROBLEM_KINDS)
        + _journal_note(result.integrity)
    )
    lines.append(
        f"   {'latency ms':<14}{'count':>7}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}{'max':>9}"
    )
    for stage in STAGES:
        s = doc["latency_ms"][stage]
        if not s["count"]:
            continue
        lines.append(
            f"     {stage:<12}{s['count']:>7}"
            + "".join(f"{_fmt_ms(s[k]):>9}" for k in ("p50", "p90", "p99", "p999", "max"))
        )
    by_prec = doc["latency_by_precedence_ms"]
    if len(by_prec["delivered"]) > 1 or by_prec["ack_system"]:
        lines.append(
            "   by precedence    n   delivered p50/p99   answered p50/p99 (system)   think p50"
        )
        for name in by_prec["delivered"]:
            d = by_prec["delivered"][name]
            a = by_prec["ack_system"].get(name, {})
            t = by_prec["think"].get(name, {})
            think = _fmt_ms(t["p50"]) if t.get("count") else "-"
            lines.append(
                f"     {name:<10}{d['count']:>6}   {_pair(d):>17}   {_pair(a):>26}   {think:>9}"
            )
    breakdown = doc["breakdown"]
    if len({row["type"] for row in breakdown}) > 1:
        lines.append("   by precedence and type        n   delivered p50/p99   acked p50/p99 ms")
        for row in breakdown:
            d = row.get("delivered", {})
            a = row.get("acknowledged", {})
            j = row.get("journaled", {})
            n = j.get("count", 0)
            lines.append(
                f"     {row['precedence']:<10}{row['type']:<20}{n:>4}"
                f"   {_pair(d):>17}   {_pair(a):>13}"
            )
    throughput = (
        f"  throughput {doc['throughput_msgs_per_s']:.3g} msg/s" if result.kind == "load" else ""
    )
    lines.append(
        f"   overdue {doc['overdue']}  expired {doc['expired']}  re-alerts {doc['realerts']}"
        f"  link down {doc['link_down_s']:.1f} s{throughput}  wall {doc['wall_s']:.1f} s"
    )
    if doc["ack_levels"]:
        lines.append(
            "   answers    " + "  ".join(f"{k} {v}" for k, v in sorted(doc["ack_levels"].items()))
        )
    if result.cpu:
        lines.append("   cpu        " + "  ".join(f"{k} {v:.0f}%" for k, v in result.cpu.items()))
    for fault in result.faults:
        lines.append(f"   fault      {fault.description}: {fault.outcome}")
    for error, count in sorted(result.metrics.errors.items()):
        lines.append(f"   error      {error} x{count}")
    for warning in result.warnings:
        lines.append(f"   warning    {warning}")
    for problem in result.integrity.problems:
        lines.append(f"   PROBLEM    {problem}")
    for note in result.integrity.notes:
        lines.append(f"   note       {note}")
    for threshold in result.thresholds:
        lines.append(f"   threshold  {threshold.describe()}")
    if result.thresholds:
        lines.append(
            f"   verdict    {doc['verdict']}: integrity {result.integrity.verdict}, "
            f"{sum(t.passed for t in result.thresholds)}/{len(result.thresholds)} thresholds met"
        )
    for direction in result.integrity.directions:
        for kind, examples in direction.examples.items():
            for example in examples[:5]:
                lines.append(f"   {kind:<10} {direction.direction}: {example}")
    return "\n".join(lines)


def _ack_ratio(doc: dict[str, Any]) -> str:
    """ "9/10 expected (90%)": answers over the answers expected."""
    m = doc["messages"]
    expected = m["acks_expected"]
    if not expected:
        return f"{m['acknowledged']} (none expected)"
    return f"{m['acknowledged']}/{expected} expected ({100 * doc['ack_ratio']:.0f}%)"


def _pair(stats: dict[str, Any]) -> str:
    if not stats or not stats.get("count"):
        return "-"
    return f"{_fmt_ms(stats['p50'])}/{_fmt_ms(stats['p99'])}"


def _journal_note(integrity: IntegrityReport) -> str:
    if not integrity.journals:
        return f"   ({integrity.method})"
    parts = []
    for party, info in integrity.journals.items():
        state = "ok" if info.get("ok") else "FAILED"
        parts.append(
            f"{party} {info.get('entries', 0)} entries, {info.get('signatures_checked', 0)} sig,"
            f" {info.get('checkpoints_matched', 0)} witnessed: {state}"
        )
    return "   (journals verified: " + "; ".join(parts) + ")"


# ---------------------------------------------------------------------------------------------
# HTML


_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "Noto Sans", "Noto Sans CJK JP",
       sans-serif; margin: 24px auto; max-width: 1120px; color: #1a202c; padding: 0 16px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px;
  border-bottom: 1px solid #e2e8f0; padding-bottom: 4px; } h3 { font-size: 15px; margin: 18px 0 6px; }
.sub { color: #4a5568; margin: 0 0 12px; }
.verdict { display: inline-block; padding: 2px 10px; border-radius: 4px; font-weight: 700;
  color: white; margin-left: 8px; font-size: 14px; vertical-align: middle; }
.PASS { background: #2f855a; } .FAIL { background: #c53030; }
table { border-collapse: collapse; margin: 6px 0 12px; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #e2e8f0; padding: 3px 8px; text-align: right; }
th { background: #f7fafc; } td.l, th.l { text-align: left; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.card { border: 1px solid #e2e8f0; border-radius: 6px; padding: 8px 12px; min-width: 120px; }
.card b { display: block; font-size: 20px; } .card span { color: #4a5568; font-size: 12px; }
.bad { color: #c53030; } .good { color: #2f855a; }
.integrity { border-left: 6px solid; padding: 8px 14px; margin: 10px 0; background: #f7fafc; }
.integrity.PASS { border-color: #2f855a; } .integrity.FAIL { border-color: #c53030; }
svg text { font: 11px system-ui, sans-serif; fill: #2d3748; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px;
  vertical-align: -1px; border-radius: 2px; }
footer { color: #718096; font-size: 12px; margin-top: 30px; }
.scroll { max-height: 480px; overflow: auto; border: 1px solid #e2e8f0; }
table.messages { margin: 0; font-size: 12px; } table.messages th { cursor: pointer;
  position: sticky; top: 0; } table.messages tr.flagged td { background: #fffaf0; }
tr.bad td { color: #c53030; } tr.good td { color: #2f855a; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


class _Chart:
    """A small SVG chart: scales, axes, and marks (the whole plotting library of the report)."""

    def __init__(
        self,
        width: int = 1040,
        height: int = 340,
        *,
        x: tuple[float, float],
        y: tuple[float, float],
        x_label: str,
        y_label: str,
        log_y: bool = False,
        x_transform: Callable[[float], float] | None = None,
    ) -> None:
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = 64, 36, 14, 44
        self.log_y = log_y
        self.xt = x_transform or (lambda v: v)
        self.x0, self.x1 = self.xt(x[0]), self.xt(x[1])
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1.0
        lo, hi = y
        if log_y:  # whole decades, so that every tick is a power of ten
            lo = max(lo, 1e-3)
            self.y0 = float(math.floor(math.log10(lo)))
            self.y1 = float(max(math.ceil(math.log10(max(hi, lo))), self.y0 + 1))
        else:
            self.y0, self.y1 = 0.0, (hi * 1.08 if hi > 0 else 1.0)
        self.parts: list[str] = []
        self.x_label, self.y_label = x_label, y_label

    def px(self, x: float) -> float:
        span = self.width - self.left - self.right
        return self.left + (self.xt(x) - self.x0) / (self.x1 - self.x0) * span

    def py(self, y: float) -> float:
        span = self.height - self.top - self.bottom
        v = math.log10(max(y, 10**self.y0)) if self.log_y else y
        return self.top + span - (v - self.y0) / (self.y1 - self.y0) * span

    def axes(self, x_ticks: Iterable[tuple[float, str]]) -> None:
        w, h = self.width, self.height
        base = h - self.bottom
        self.parts.append(
            f'<rect x="{self.left}" y="{self.top}" width="{w - self.left - self.right}" '
            f'height="{base - self.top}" fill="white" stroke="#cbd5e0"/>'
        )
        for value, label in x_ticks:
            x = self.px(value)
            self.parts.append(
                f'<line x1="{x:.1f}" y1="{self.top}" x2="{x:.1f}" y2="{base}" stroke="#edf2f7"/>'
                f'<text x="{x:.1f}" y="{base + 15}" text-anchor="middle">{_esc(label)}</text>'
            )
        for value in self._y_ticks():
            y = self.py(value)
            self.parts.append(
                f'<line x1="{self.left}" y1="{y:.1f}" x2="{w - self.right}" y2="{y:.1f}" '
                f'stroke="#edf2f7"/><text x="{self.left - 6}" y="{y + 4:.1f}" '
                f'text-anchor="end">{_esc(_tick(value))}</text>'
            )
        self.parts.append(
            f'<text x="{(self.left + w - self.right) / 2:.0f}" y="{h - 8}" '
            f'text-anchor="middle">{_esc(self.x_label)}</text>'
            f'<text transform="translate(14,{(self.top + base) / 2:.0f}) rotate(-90)" '
            f'text-anchor="middle">{_esc(self.y_label)}</text>'
        )

    def _y_ticks(self) -> list[float]:
        if self.log_y:
            return [10.0**e for e in range(math.floor(self.y0), math.ceil(self.y1) + 1)]
        step = _nice_step(self.y1 / 5)
        return [i * step for i in range(int(self.y1 / step) + 1)]

    def line(self, points: Sequence[tuple[float, float]], colour: str, label: str = "") -> None:
        if not points:
            return
        path = " ".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in points)
        title = f"<title>{_esc(label)}</title>" if label else ""
        self.parts.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2">'
            f"{title}</polyline>"
        )
        for x, y in points:
            self.parts.append(
                f'<circle cx="{self.px(x):.1f}" cy="{self.py(y):.1f}" r="2.5" fill="{colour}">'
                f"<title>{_esc(label)} {x:g}: {y:g} ms</title></circle>"
            )

    def shade(self, start: float, end: float, colour: str, label: str) -> None:
        """A shaded band over [start, end] on the x axis (a link-down or fault period)."""
        x0 = max(self.px(start), self.left)
        x1 = min(self.px(end), self.width - self.right)
        if x1 <= x0:
            return
        self.parts.append(
            f'<rect class="period" x="{x0:.1f}" y="{self.top}" width="{x1 - x0:.1f}" '
            f'height="{self.height - self.bottom - self.top}" fill="{colour}" '
            f'fill-opacity="0.18"><title>{_esc(label)}</title></rect>'
        )

    def dots(self, points: Sequence[tuple[float, float]], colour: str) -> None:
        radius = 3.0 if len(points) < 300 else 1.8
        for x, y in points:
            self.parts.append(
                f'<circle cx="{self.px(x):.1f}" cy="{self.py(y):.1f}" r="{radius}" '
                f'fill="{colour}" fill-opacity="0.55"/>'
            )

    def svg(self, name: str = "") -> str:
        named = f' class="chart" data-chart="{_esc(name)}"' if name else ""
        return (
            f'<svg{named} width="{self.width}" '
            f'height="{self.height}" viewBox="0 0 {self.width} {self.height}" role="img">'
            + "".join(self.parts)
            + "</svg>"
        )


def _nice_step(raw: float) -> float:
    if raw <= 0:
        return 1.0
    exponent = math.floor(math.log10(raw))
    base = raw / 10**exponent
    nice = 1 if base <= 1 else 2 if base <= 2 else 5 if base <= 5 else 10
    return float(nice * 10**exponent)


def _tick(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}s"
    return f"{value:g}"


def _percentile_x(p: float) -> float:
    """HdrHistogram's percentile axis: 1/(1-p), logarithmic, so the tail gets the room."""
    return math.log10(1.0 / max(1.0 - p / 100.0, 1e-6))


_PERCENTILE_TICKS = (0.0, 90.0, 99.0, 99.9, 99.99, 99.999)


def _curves_chart(
    curves: dict[str, tuple[list[tuple[float, float]], int]],
    colours: dict[str, str],
    name: str,
) -> str:
    """Percentile curves, each up to the percentile its sample count supports (1 - 1/count),
    where it rises to its maximum; the axis ends at the best supported percentile."""
    curves = {k: v for k, v in curves.items() if v[0]}
    if not curves:
        return "<p>No latencies were recorded.</p>"
    values = [v for c, _ in curves.values() for _, v in c]
    lo, hi = min(values), max(values)
    log_y = hi / max(lo, 1e-3) > 50
    x_hi = min(max(max(supported_percentile(n) for _, n in curves.values()), 50.0), 99.999)
    chart = _Chart(
        x=(0.0, x_hi),
        y=(lo, hi),
        x_label="percentile (each curve ends where its sample count does: 1 - 1/n)",
        y_label="latency (ms)",
        log_y=log_y,
        x_transform=_percentile_x,
    )
    chart.axes([(p, f"{p:g}%") for p in _PERCENTILE_TICKS if p <= x_hi + 1e-9])
    for key, (curve, count) in curves.items():
        end = min(supported_percentile(count), x_hi)
        points = [(p if p < 100.0 else end, v) for p, v in curve]
        chart.line(points, colours.get(key, "#4a5568"), f"{key} (n={count})")
    return _legend(curves, colours) + chart.svg(name)


def percentile_chart(metrics: Metrics, stages: Sequence[str] = MAIN_STAGES) -> str:
    curves = {
        s: (percentile_curve(metrics.total(s)), int(metrics.total(s).get_total_count()))
        for s in stages
    }
    return _curves_chart(curves, STAGE_COLOURS, "percentiles")


def precedence_chart(metrics: Metrics, stage: str) -> str:
    """One stage's percentile curves, one per precedence: was FLASH fast under the backlog?"""
    curves = {
        _prec(p): (percentile_curve(h), int(h.get_total_count()))
        for p, h in metrics.by_precedence(stage).items()
    }
    return _curves_chart(curves, PRECEDENCE_COLOURS, f"precedence-{stage}")


def scatter_chart(metrics: Metrics, stages: Sequence[str] = MAIN_STAGES) -> str:
    samples = [s for s in metrics.samples if s[1] in stages]
    if not samples:
        return "<p>No latencies were recorded.</p>"
    xs = [s[0] for s in samples]
    ys = [s[2] for s in samples]
    lo, hi = min(ys), max(ys)
    log_y = hi / max(lo, 1e-3) > 50
    x_max = max(xs) if max(xs) > 0 else 1.0
    chart = _Chart(
        x=(0.0, x_max),
        y=(lo, hi),
        x_label="time since the run began, seconds (at the planned send)",
        y_label="latency (ms)",
        log_y=log_y,
    )
    step = _nice_step(x_max / 8)
    chart.axes([(i * step, f"{i * step:g}") for i in range(int(x_max / step) + 1)])
    for stage in stages:
        chart.dots([(s[0], s[2]) for s in samples if s[1] == stage], STAGE_COLOURS[stage])
    present = {s[1]: True for s in samples}
    return _legend(present) + chart.svg("scatter")


def _legend(keys: Iterable[str], colours: dict[str, str] = STAGE_COLOURS) -> str:
    return (
        '<div class="legend">'
        + "".join(
            f'<span><i style="background:{colours.get(k, "#4a5568")}"></i>{_esc(k)}</span>'
            for k in keys
        )
        + "</div>"
    )


def _periods(result: RunResult, end: float) -> list[tuple[float, float, str, str]]:
    """(start, end, kind, label) in seconds since the run began: link-down windows and the
    spans during which a fault was in force."""
    origin = float(result.extra.get("axis", {}).get("origin_wall", result.started_wall))
    found = []
    for window in result.metrics.link_windows:
        up = window.up if window.up is not None else origin + end
        found.append((window.down - origin, up - origin, "link", f"link {window.direction} down"))
    applied: dict[str, float] = {}
    for record in result.faults:
        if record.outcome == "applied":
            applied[record.description] = record.wall - origin
        elif record.outcome == "lifted" and record.description in applied:
            start = applied.pop(record.description)
            found.append((start, record.wall - origin, "fault", record.description))
    for description, start in applied.items():
        found.append((start, end, "fault", description))
    return found


def series(result: RunResult) -> dict[str, Any]:
    """Messages per second (planned and delivered), backlog and errors over time, in bins of
    the run's time (or scenario time, at a finite speed), from the per-message rows."""
    rows = result.messages
    if not rows:
        return {}
    planned = [float(r["at_s"]) for r in rows]
    delivered = sorted(
        float(r["at_s"]) + float(r["delivered_ms"]) / 1000.0
        for r in rows
        if r.get("delivered_ms") is not None
    )
    failed = [float(r["at_s"]) for r in rows if {"error", "rejected"} & set(r.get("flags", ()))]
    end = max([*planned, *delivered, 1e-3])
    width = max(_nice_step(end / 60.0), 0.01)
    bins = int(end / width) + 1
    per_bin = [[0, 0, 0] for _ in range(bins)]  # planned, delivered, errors
    for t in planned:
        per_bin[min(int(t / width), bins - 1)][0] += 1
    for t in delivered:
        per_bin[min(int(t / width), bins - 1)][1] += 1
    for t in failed:
        per_bin[min(int(t / width), bins - 1)][2] += 1
    axis = result.extra.get("axis", {})
    speed = axis.get("speed")
    scenario_origin = float(axis.get("scenario_origin_s", 0.0))

    def x(t: float) -> float:
        return round((t - scenario_origin) * speed, 4) if speed else round(t, 4)

    points = []
    waiting = 0
    for i, (p, d, e) in enumerate(per_bin):
        waiting += p - d - e
        points.append(
            {
                "t": x((i + 1) * width),
                "planned_per_s": round(p / width, 3),
                "delivered_per_s": round(d / width, 3),
                "errors": e,
                "backlog": max(waiting, 0),
            }
        )
    return {
        "axis": "scenario time (s)" if speed else "time since the run began (s)",
        "bin_s": width * speed if speed else width,
        "points": points,
        "periods": [
            {"start": x(a), "end": x(b), "kind": kind, "what": label}
            for a, b, kind, label in _periods(result, end)
        ],
    }


_PERIOD_COLOURS = {"link": "#e53e3e", "fault": "#805ad5"}


def series_charts(result: RunResult) -> str:
    """Throughput, backlog and errors over time, with link-down and fault periods shaded."""
    data = series(result)
    if not data:
        return "<p>No messages were sent.</p>"
    points = data["points"]
    xs = [p["t"] for p in points]
    x_lo, x_hi = min(0.0, xs[0]), max(xs[-1], 1e-3)
    step = _nice_step((x_hi - x_lo) / 8)
    ticks = [(i * step, f"{i * step:g}") for i in range(int(x_lo / step), int(x_hi / step) + 1)]
    html_parts = [
        '<div class="legend"><span><i style="background:#a0aec0"></i>planned/s</span>'
        '<span><i style="background:#2f855a"></i>delivered/s</span>'
        '<span><i style="background:#c53030"></i>errors per bin</span>'
        '<span><i style="background:#2b6cb0"></i>backlog (sent, not yet delivered)</span>'
        '<span><i style="background:#e53e3e;opacity:.35"></i>link down</span>'
        '<span><i style="background:#805ad5;opacity:.35"></i>fault in force</span></div>'
    ]
    for name, keys, label in (
        ("throughput", ("planned_per_s", "delivered_per_s", "errors"), "messages per second"),
        ("backlog", ("backlog",), "messages waiting"),
    ):
        top = max(max(float(p[k]) for p in points) for k in keys)
        chart = _Chart(
            height=220,
            x=(x_lo, x_hi),
            y=(0.0, max(top, 1.0)),
            x_label=f"{data['axis']}, bins of {data['bin_s']:.3g} s",
            y_label=label,
        )
        chart.axes(ticks)
        for period in data["periods"]:
            chart.shade(
                period["start"], period["end"], _PERIOD_COLOURS[period["kind"]], period["what"]
            )
        colours = {
            "planned_per_s": "#a0aec0",
            "delivered_per_s": "#2f855a",
            "errors": "#c53030",
            "backlog": "#2b6cb0",
        }
        for key in keys:
            if key == "errors" and not any(p["errors"] for p in points):
                continue
            chart.line([(p["t"], float(p[key])) for p in points], colours[key], key)
        html_parts.append(chart.svg(name))
    return "".join(html_parts)


def sweep_chart(steps: Sequence[dict[str, Any]]) -> str:
    """Latency (p50, p99) and achieved rate against offered rate, for a load sweep."""
    if not steps:
        return ""
    rates = [float(s["offered_per_s"]) for s in steps]
    p50 = [(float(s["offered_per_s"]), float(s["latency_ms"]["delivered"]["p50"])) for s in steps]
    p99 = [(float(s["offered_per_s"]), float(s["latency_ms"]["delivered"]["p99"])) for s in steps]
    ys = [v for _, v in p50 + p99]
    chart = _Chart(
        x=(0.0, max(rates)),
        y=(min(ys), max(ys)),
        x_label="offered rate (messages/s)",
        y_label="submit→delivered (ms)",
        log_y=max(ys) / max(min(ys), 1e-3) > 50,
    )
    chart.axes([(r, f"{r:g}") for r in rates])
    chart.line(p50, "#2f855a", "p50")
    chart.line(p99, "#c53030", "p99")
    achieved = [(float(s["offered_per_s"]), float(s["achieved_per_s"])) for s in steps]
    top = max(max(rates), max(a for _, a in achieved))
    rate_chart = _Chart(
        x=(0.0, max(rates)),
        y=(0.0, top),
        x_label="offered rate (messages/s)",
        y_label="delivered rate (messages/s)",
    )
    rate_chart.axes([(r, f"{r:g}") for r in rates])
    rate_chart.line([(0.0, 0.0), (max(rates), max(rates))], "#a0aec0", "offered")
    rate_chart.line(achieved, "#2b6cb0", "achieved")
    legend = (
        '<div class="legend"><span><i style="background:#2f855a"></i>p50</span>'
        '<span><i style="background:#c53030"></i>p99</span></div>'
    )
    legend2 = (
        '<div class="legend"><span><i style="background:#a0aec0"></i>offered</span>'
        '<span><i style="background:#2b6cb0"></i>achieved</span></div>'
    )
    return legend + chart.svg() + legend2 + rate_chart.svg()


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1) -> str:
    head = "".join(
        f'<th class="{"l" if i < left else ""}">{_esc(h)}</th>' for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"l" if i < left else ""}">{_esc(c)}</td>' for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


MESSAGE_COLUMNS = (
    ("at_s", "sent at (s)", "n"),
    ("sender", "from", "s"),
    ("recipient", "to", "s"),
    ("label", "label", "s"),
    ("type", "type", "s"),
    ("precedence", "precedence", "p"),
    ("expected_answer", "expected", "s"),
    ("answer", "answer", "s"),
    ("journaled_ms", "journaled ms", "n"),
    ("delivered_ms", "delivered ms", "n"),
    ("acknowledged_ms", "acknowledged ms", "n"),
    ("think_ms", "think ms", "n"),
    ("ack_system_ms", "answered (system) ms", "n"),
    ("flags", "flags", "s"),
    ("id", "message id", "s"),
)
_PRECEDENCE_RANK = {"FLASH": 0, "IMMEDIATE": 1, "PRIORITY": 2, "ROUTINE": 3}


def message_table(result: RunResult) -> str:
    """Every message (or the flagged and slowest, past `MESSAGE_ROWS_HTML`): sortable by
    clicking a heading, filterable by typing; the inline script needs no network."""
    rows, left_out = interesting_rows(result.messages, MESSAGE_ROWS_HTML)
    if not rows:
        return "<p>No messages were sent.</p>"
    head = "".join(
        f'<th class="l" data-kind="{kind}" title="sort">{_esc(title)}</th>'
        for _, title, kind in MESSAGE_COLUMNS
    )
    body = []
    for row in rows:
        cells = []
        for key, _, kind in MESSAGE_COLUMNS:
            value = row.get(key)
            if key == "flags":
                value = " ".join(value or ())
            text = "" if value is None else str(value)
            sort = text
            if kind == "p":
                sort = str(_PRECEDENCE_RANK.get(text, 9))
            elif kind == "n":
                sort = text if text else "-1"
            cls = "l" if kind != "n" else ""
            cells.append(f'<td class="{cls}" data-v="{_esc(sort)}">{_esc(text)}</td>')
        flagged = " flagged" if row.get("flags") else ""
        body.append(f'<tr class="msg{flagged}">{"".join(cells)}</tr>')
    table_id = "messages-" + re.sub(r"[^a-z0-9]+", "-", result.name.lower())[:60]
    note = (
        f" Showing {len(rows)} of {len(rows) + left_out}: the flagged and the slowest delivered."
        if left_out
        else ""
    )
    return (
        f'<p class="sub">Click a heading to sort; type to filter (every column).{_esc(note)}</p>'
        f'<input class="msg-filter" data-for="{table_id}" placeholder="filter, e.g. FLASH or '
        'overdue" size="40">'
        f'<div class="scroll"><table class="messages" id="{table_id}"><thead><tr>{head}</tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table></div>"
    )


# Sorting and filtering of the per-message tables: inline, no library, no network.
_SCRIPT = """
document.querySelectorAll('table.messages').forEach(function (table) {
  var heads = table.querySelectorAll('th');
  heads.forEach(function (th, col) {
    th.addEventListener('click', function () {
      var numeric = th.dataset.kind !== 's';
      var down = th.dataset.dir !== 'asc';
      heads.forEach(function (h) { delete h.dataset.dir; });
      th.dataset.dir = down ? 'asc' : 'desc';
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        var r = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return down ? r : -r;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
document.querySelectorAll('input.msg-filter').forEach(function (input) {
  var table = document.getElementById(input.dataset.for);
  input.addEventListener('input', function () {
    var words = input.value.toLowerCase().split(/\\s+/).filter(Boolean);
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var text = row.textContent.toLowerCase();
      row.hidden = !words.every(function (w) { return text.indexOf(w) >= 0; });
    });
  });
});
"""


def thresholds_box(result: RunResult) -> str:
    if not result.thresholds:
        return ""
    rows = []
    for t in result.thresholds:
        measured = t.describe().split("(measured ", 1)[1].rstrip(")")
        rows.append(
            f'<tr class="{"good" if t.passed else "bad"}"><td class="l">{_esc(t.threshold.text)}'
            f"</td><td>{_esc(measured)}</td><td>{'pass' if t.passed else 'FAIL'}</td></tr>"
        )
    return (
        '<table class="thresholds"><thead><tr><th class="l">threshold</th><th>measured</th>'
        f"<th>result</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _run_section(result: RunResult, *, heading: str = "h2") -> str:
    doc = run_json(result)
    m = doc["messages"]
    verdict = doc["verdict"]
    parts = [
        f"<{heading}>{_esc(result.name)} — {_esc(result.title)}"
        f'<span class="verdict {verdict}">{verdict}</span></{heading}>'
    ]
    cards: list[tuple[str, Any]] = [
        ("sent", m["sent"]),
        ("delivered", m["delivered"]),
        ("acknowledged / expected", _ack_ratio(doc).replace(" expected", "")),
    ]
    for name, stats in doc["latency_by_precedence_ms"]["delivered"].items():
        cards.append((f"{name} delivered p50 / p99", f"{_pair(stats)} ms"))
    if result.kind == "load":
        cards.append(("throughput", f"{doc['throughput_msgs_per_s']:.3g} msg/s"))
    cards += [
        ("operator think p50", f"{doc['operator_think_ms']['p50']:g} ms")
        if doc["operator_think_ms"]["count"]
        else ("operator think", "-"),
        ("overdue", doc["overdue"]),
        ("link down", f"{doc['link_down_s']:.1f} s"),
    ]
    parts.append(
        '<div class="cards">'
        + "".join(f"<div class=card><b>{_esc(v)}</b><span>{_esc(k)}</span></div>" for k, v in cards)
        + "</div>"
    )
    if result.thresholds:
        parts.append("<h3>Thresholds</h3>")
        parts.append(thresholds_box(result))
    parts.append(_integrity_box(result.integrity))
    for stage in PRECEDENCE_STAGES:
        if result.metrics.total(stage).get_total_count():
            parts.append(f"<h3>By precedence: {_esc(STAGE_TITLES[stage])}</h3>")
            parts.append(precedence_chart(result.metrics, stage))
    prows = []
    by_prec = doc["latency_by_precedence_ms"]
    for name, d in by_prec["delivered"].items():
        a = by_prec["ack_system"].get(name, {})
        t = by_prec["think"].get(name, {})
        prows.append(
            [name, d["count"], d["p50"], d["p99"], d["max"]]
            + [a.get(k, "-") for k in ("p50", "p99")]
            + [t.get(k, "-") for k in ("p50", "p99")]
        )
    if prows:
        parts.append(
            _table(
                [
                    "precedence",
                    "n",
                    "delivered p50",
                    "delivered p99",
                    "delivered max",
                    "answered p50 (system)",
                    "answered p99 (system)",
                    "think p50",
                    "think p99",
                ],
                prows,
            )
        )
    parts.append("<h3>Throughput, backlog and errors over time</h3>")
    parts.append(series_charts(result))
    parts.append("<h3>Latency distribution by stage (percentiles)</h3>")
    parts.append(percentile_chart(result.metrics))
    parts.append("<h3>Latency over time</h3>")
    parts.append(scatter_chart(result.metrics))
    rows = []
    for stage in STAGES:
        s = doc["latency_ms"][stage]
        rows.append(
            [STAGE_TITLES[stage], s["count"], s["p50"], s["p90"], s["p99"], s["p999"], s["max"]]
        )
    parts.append("<h3>Latency (ms)</h3>")
    parts.append(_table(["stage", "count", "p50", "p90", "p99", "p99.9", "max"], rows))
    if doc["breakdown"]:
        parts.append("<h3>By precedence and message type (ms)</h3>")
        brows = []
        for row in doc["breakdown"]:
            j, d, a = (row.get(s, {}) for s in MAIN_STAGES)
            brows.append(
                [
                    row["precedence"],
                    row["type"],
                    j.get("count", 0),
                    j.get("p50", "-"),
                    d.get("p50", "-"),
                    d.get("p99", "-"),
                    a.get("p50", "-"),
                    a.get("p99", "-"),
                ]
            )
        parts.append(
            _table(
                [
                    "precedence",
                    "type",
                    "n",
                    "journaled p50",
                    "delivered p50",
                    "delivered p99",
                    "acked p50",
                    "acked p99",
                ],
                brows,
                left=2,
            )
        )
    if result.faults:
        parts.append("<h3>Faults</h3>")
        parts.append(
            _table(
                ["scenario time (s)", "fault", "outcome"],
                [[f"{f.at:g}", f.description, f.outcome] for f in result.faults],
                left=0,
            )
        )
    if doc.get("load"):
        load = doc["load"]
        parts.append("<h3>Load generator</h3>")
        parts.append(
            _table(
                ["what", "value"],
                [
                    [k, json.dumps(v) if isinstance(v, dict | list) else v]
                    for k, v in load.items()
                    if k != "steps"
                ],
            )
        )
        if load.get("steps"):
            parts.append("<h3>Latency and throughput against offered load</h3>")
            parts.append(sweep_chart(load["steps"]))
    if result.messages:
        parts.append("<h3>Messages</h3>")
        parts.append(message_table(result))
    details = [
        ["answers", ", ".join(f"{k} {v}" for k, v in sorted(doc["ack_levels"].items())) or "-"],
        ["re-alerts", doc["realerts"]],
        ["rejected", m["rejected"]],
        ["send errors", m["send_errors"]],
        ["wall time", f"{doc['wall_s']:.1f} s"],
        ["CPU", ", ".join(f"{k} {v:.0f}%" for k, v in result.cpu.items()) or "-"],
        ["configuration", json.dumps(doc["config"], ensure_ascii=False)],
    ]
    details += [["warning", w] for w in result.warnings]
    details += [["error", f"{k} x{v}"] for k, v in sorted(doc["errors"].items())]
    parts.append("<h3>Run</h3>")
    parts.append(_table(["", ""], details))
    return "\n".join(parts)


def _integrity_box(integrity: IntegrityReport) -> str:
    verdict = integrity.verdict
    counts = " · ".join(
        f'<span class="{"bad" if integrity.total(k) else "good"}">{k} {integrity.total(k)}</span>'
        for k in PROBLEM_KINDS
    )
    lines = [
        f'<div class="integrity {verdict}"><b>Integrity: {verdict}</b> — {counts}'
        f" <span class=sub>(compared via {_esc(integrity.method)})</span>"
    ]
    rows = [
        [
            d.direction,
            d.sent,
            d.received,
            d.refused,
            d.lost,
            d.duplicated,
            d.reordered,
            d.forged,
        ]
        for d in integrity.directions
    ]
    lines.append(
        _table(
            [
                "direction",
                "sent",
                "received",
                "refused",
                "lost",
                "duplicated",
                "reordered",
                "forged",
            ],
            rows,
        )
    )
    if integrity.journals:
        lines.append(
            _table(
                ["journal", "entries", "signatures checked", "checkpoints witnessed", "verified"],
                [
                    [
                        party,
                        info.get("entries", 0),
                        info.get("signatures_checked", 0),
                        info.get("checkpoints_matched", 0),
                        "yes" if info.get("ok") else f"NO: {info.get('problem', '')}",
                    ]
                    for party, info in integrity.journals.items()
                ],
            )
        )
    for problem in integrity.problems:
        lines.append(f'<p class="bad">{_esc(problem)}</p>')
    for note in integrity.notes:
        lines.append(f'<p class="sub">{_esc(note)}</p>')
    for direction in integrity.directions:
        for kind, examples in direction.examples.items():
            for example in examples[:10]:
                lines.append(
                    f'<p class="bad">{_esc(kind)} {direction.direction}: {_esc(example)}</p>'
                )
    lines.append("</div>")
    return "\n".join(lines)


def html_report(
    results: Sequence[RunResult],
    *,
    title: str = "",
    command: str = "",
    sweep: dict[str, Any] | None = None,
) -> str:
    """A self-contained HTML page: summary, integrity verdict and charts for every run."""
    is_sweep = bool(sweep and sweep.get("sweep"))
    overall = aggregate(results)
    verdict = "PASS" if all(r.ok for r in results) else "FAIL"
    heading = title or (results[0].title if len(results) == 1 else f"{len(results)} scenarios")
    machine = machine_info()
    body = [
        f'<h1>Hotline simulator — {_esc(heading)}<span class="verdict {verdict}">{verdict}'
        "</span></h1>",
        f'<p class="sub">{_esc(_iso(overall.started_wall))} · {_esc(command)}</p>',
    ]
    if sweep and sweep.get("sweep"):
        info = sweep["sweep"]
        saturation = info.get("saturation_per_s")
        body.append("<h2>Latency versus load</h2>")
        body.append(
            f"<p>Saturation: {_esc(f'{saturation:g} msg/s' if saturation else 'not reached')}"
            f" — {_esc(info.get('reason', ''))}</p>"
        )
        if info.get("latency_knee_per_s"):
            body.append(
                f"<p>Latency knee: {info['latency_knee_per_s']:g} msg/s — "
                f"{_esc(info.get('knee_reason', ''))}</p>"
            )
        body.append(
            '<p class="sub">Each step is reported on its own below: steps at different rates '
            "are never merged.</p>"
        )
        body.append(sweep_chart(info["steps"]))
        body.append(
            _table(
                [
                    "rate",
                    "offered/s",
                    "achieved/s",
                    "delivered p50",
                    "delivered p99",
                    "delivered max",
                    "lag p99",
                    "verdict",
                ],
                [
                    [
                        s["rate_per_s"],
                        s["offered_per_s"],
                        s["achieved_per_s"],
                        s["latency_ms"]["delivered"]["p50"],
                        s["latency_ms"]["delivered"]["p99"],
                        s["latency_ms"]["delivered"]["max"],
                        s["generator_lag_ms"]["p99"],
                        s["verdict"],
                    ]
                    for s in info["steps"]
                ],
                left=0,
            )
        )
    if len(results) > 1 and not is_sweep:
        body.append("<h2>All runs</h2>")
        rows = []
        for r in results:
            d = run_json(r)
            rows.append(
                [
                    r.name,
                    d["verdict"],
                    d["messages"]["sent"],
                    d["messages"]["delivered"],
                    d["messages"]["acknowledged"],
                    d["latency_ms"]["delivered"]["p50"],
                    d["latency_ms"]["delivered"]["p99"],
                    sum(d["messages"][k] for k in PROBLEM_KINDS),
                    f"{sum(t.passed for t in r.thresholds)}/{len(r.thresholds)}",
                ]
            )
        body.append(
            _table(
                [
                    "run",
                    "verdict",
                    "sent",
                    "delivered",
                    "acked",
                    "delivered p50 ms",
                    "delivered p99 ms",
                    "integrity problems",
                    "thresholds met",
                ],
                rows,
            )
        )
        body.append(_run_section(overall))
    for result in results:
        body.append(_run_section(result, heading="h2"))
    body.append(
        "<footer>Machine: "
        + _esc(", ".join(f"{k} {v}" for k, v in machine.items()))
        + ". Latencies are measured in the simulator process with a monotonic clock from each"
        " message's planned send time; histograms are HDR (3 significant digits).</footer>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Hotline simulator — {_esc(heading)}</title>"
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + f"\n<script>{_SCRIPT}</script>\n</body></html>\n"
    )


def write_html(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Raw exports


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:80] or "run"


def write_hgrm(folder: Path, results: Sequence[RunResult]) -> list[Path]:
    """HdrHistogram percentile distributions (`.hgrm`, values in ms), written by the library's
    own `output_percentile_distribution`: one file per run and stage, and one per run, stage
    and precedence. HdrHistogram's plotter and any tool that reads .hgrm can read them."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for result in results:
        run = _slug(result.name)
        for stage in STAGES:
            histograms = {"": result.metrics.total(stage)}
            histograms |= {
                f"-{_prec(p).lower()}": h for p, h in result.metrics.by_precedence(stage).items()
            }
            for suffix, histogram in histograms.items():
                if not histogram.get_total_count():
                    continue
                path = folder / f"{run}-{stage}{suffix}.hgrm"
                with path.open("wb") as out:
                    histogram.output_percentile_distribution(out, 1000.0)
                written.append(path)
    return written


CSV_COLUMNS = (
    "run",
    "id",
    "label",
    "sender",
    "recipient",
    "type",
    "precedence",
    "at_s",
    "expected_answer",
    "answer",
    "journaled_ms",
    "delivered_ms",
    "acknowledged_ms",
    "think_ms",
    "ack_system_ms",
    "flags",
    "error",
    "resend_of",
)


def write_csv(path: Path, results: Sequence[RunResult]) -> int:
    """The raw samples: one row per message of every run (latencies in ms from its planned
    send time, empty when that stage never came). Returns the number of rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for result in results:
            for row in result.messages:
                writer.writerow({**row, "run": result.name, "flags": " ".join(row["flags"])})
                count += 1
    return count
