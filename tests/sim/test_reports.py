"""Histograms, the load plan, and the three reports: terminal, JSON (its keys), and a
self-contained HTML page."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram

from hotline.v1 import common_pb2
from sim.integrity import DirectionReport, IntegrityReport
from sim.load import Payloads, find_knee, find_saturation, parse_mix, plan_arrivals
from sim.metrics import Metrics, new_histogram, percentile_curve, record_seconds, summarize
from sim.report import document, html_report, terminal_summary, write_json
from sim.runner import RunResult

FLASH = common_pb2.PRECEDENCE_FLASH
ROUTINE = common_pb2.PRECEDENCE_ROUTINE


def test_summaries_agree_with_the_hdr_library() -> None:
    histogram = new_histogram()
    rng = random.Random(3)
    for _ in range(5000):
        record_seconds(histogram, rng.lognormvariate(-6, 1))
    s = summarize(histogram)
    assert s["count"] == 5000
    for key, p in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)):
        assert s[key] == round(histogram.get_value_at_percentile(p) / 1000, 3)
    assert s["max"] == round(histogram.get_max_value() / 1000, 3)
    assert s["mean"] == pytest.approx(histogram.get_mean_value() / 1000, rel=1e-3)
    curve = percentile_curve(histogram)
    assert curve[0][0] == 0.0
    assert curve[-1] == (100.0, s["max"])
    assert [v for _, v in curve] == sorted(v for _, v in curve)
    assert summarize(new_histogram())["count"] == 0


def test_histograms_are_kept_per_stage_type_and_precedence_and_merge() -> None:
    metrics = Metrics(seed=1)
    metrics.record("delivered", "free_text", ROUTINE, 0.010, at=1.0)
    metrics.record("delivered", "launch_warning", FLASH, 0.002, at=2.0)
    other = Metrics(seed=2)
    other.record("delivered", "free_text", ROUTINE, 0.030, at=0.5)
    metrics.merge(other)
    assert metrics.total("delivered").get_total_count() == 3
    rows = {(r["precedence"], r["type"]): r for r in metrics.breakdown()}
    assert rows[("ROUTINE", "free_text")]["delivered"]["count"] == 2
    assert next(iter(rows)) == ("FLASH", "launch_warning")  # FLASH first
    assert len(metrics.samples) == 3


def test_link_downtime_is_the_union_of_the_windows_reported() -> None:
    metrics = Metrics()
    metrics.link_down("JP->TW", 10.0)
    metrics.link_down("JP->TW", 11.0)  # the other side's view of the same outage
    metrics.link_up("JP->TW", 14.0)
    metrics.link_down("TW->JP", 12.0)
    metrics.link_up("TW->JP", 16.0)
    metrics.link_down("TW->JP", 30.0)  # still down at the end
    down = metrics.link_down_seconds(end=31.0)
    assert down == {"JP->TW": 4.0, "TW->JP": 5.0, "any": 7.0}


def test_open_loop_arrivals_follow_the_rate_and_the_ramp() -> None:
    rng = random.Random(1)
    poisson = plan_arrivals(rate=200, duration_s=20, arrival="poisson", rng=rng)
    assert 3700 < len(poisson) < 4300
    assert poisson == sorted(poisson)
    assert poisson[-1] < 20
    constant = plan_arrivals(rate=10, duration_s=2, arrival="constant", rng=rng)
    assert constant == pytest.approx([0.05 + i * 0.1 for i in range(20)])
    ramped = plan_arrivals(rate=100, duration_s=10, ramp_s=4, arrival="constant", rng=rng)
    assert len(ramped) == 800  # 100/s * 4 s / 2 on the ramp, then 100/s * 6 s
    first_second = sum(1 for t in ramped if t < 1)
    last_second = sum(1 for t in ramped if t >= 9)
    assert first_second < 20
    assert last_second == 100


def test_precedence_mix_and_payload_size() -> None:
    mix = dict(parse_mix("flash=1,routine=3"))
    assert mix == {FLASH: 0.25, ROUTINE: 0.75}
    with pytest.raises(ValueError, match="precedence mix"):
        parse_mix("urgent=1")
    payloads = Payloads(300, ("JP", "TW"))
    env = payloads.make("TW", FLASH, "0190a0a0-0000-7000-8000-000000000001")
    assert 290 <= env.ByteSize() <= 300
    assert env.precedence == FLASH


def test_saturation_is_the_first_rate_the_system_cannot_carry() -> None:
    def step(rate: float, achieved: float, p99: float) -> dict[str, object]:
        return {
            "rate_per_s": rate,
            "offered_per_s": rate,
            "achieved_per_s": achieved,
            "latency_ms": {"delivered": {"p99": p99}},
            "send_errors": 0,
        }

    assert find_saturation([step(100, 100, 5), step(200, 199, 6)])[0] is None
    assert find_saturation([step(100, 100, 5), step(200, 150, 6)])[0] == 200
    # latency grew tenfold but the achieved rate kept up: a knee, not saturation
    assert find_saturation([step(100, 100, 5), step(200, 200, 80)])[0] is None
    assert find_knee([step(100, 100, 5), step(200, 200, 80)])[0] == 200
    assert find_knee([step(100, 100, 5), step(200, 150, 6)])[0] is None


def sample_result(verdict_ok: bool = True) -> RunResult:
    metrics = Metrics(seed=1)
    rng = random.Random(5)
    for i in range(300):
        prec = FLASH if i % 10 == 0 else ROUTINE
        body = "launch_warning" if prec == FLASH else "free_text"
        base = rng.uniform(0.002, 0.004)
        metrics.record("journaled", body, prec, base, at=i * 0.01)
        metrics.record("delivered", body, prec, base * 3, at=i * 0.01)
        if i % 2:
            metrics.record("acknowledged", body, prec, base * 3 + 1.5, at=i * 0.01)
            metrics.record("ack_return", body, prec, base)
    metrics.link_down("JP->TW", 100.0)
    metrics.link_up("JP->TW", 102.5)
    integrity = IntegrityReport("journals")
    direction = DirectionReport("JP", "TW", sent=300, received=300)
    if not verdict_ok:
        direction.lost = 1
        direction.note("lost", "0190... (sender position 7)")
    integrity.directions = [direction, DirectionReport("TW", "JP")]
    return RunResult(
        kind="scenario",
        name="yonaguni-naval-encounter",
        title="Unplanned naval encounter near Yonaguni",
        metrics=metrics,
        integrity=integrity,
        config={"speed": "max", "seed": 1},
        started_wall=time.time(),
        wall_s=3.0,
        active_s=3.0,
        counts={
            "planned": 300,
            "sent": 300,
            "journaled": 300,
            "delivered": 300,
            "acknowledged": 150,
            "acks_expected": 150,
            "overdue": 2,
        },
        extra={"link_down_s": metrics.link_down_seconds(200.0)},
    )


def test_the_json_report_has_the_documented_keys(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    write_json(path, document([sample_result()], command="hotline sim run x"))
    doc = json.loads(path.read_text())
    for key in (
        "scenario",
        "messages",
        "latency_ms",
        "ack_ratio",
        "overdue",
        "link_down_s",
        "throughput_msgs_per_s",
        "breakdown",
        "integrity",
        "machine",
        "config",
    ):
        assert key in doc, key
    for key in (
        "sent",
        "journaled",
        "delivered",
        "acknowledged",
        "lost",
        "duplicated",
        "reordered",
        "forged",
    ):
        assert isinstance(doc["messages"][key], int), key
    for stage in ("journaled", "delivered", "acknowledged"):
        assert set(doc["latency_ms"][stage]) >= {"p50", "p90", "p99", "p999", "max"}
    assert doc["ack_ratio"] == 1.0  # 150 answers of the 150 expected, not of all 300 sent
    assert doc["overdue"] == 2
    assert doc["link_down_s"] == 2.5
    assert doc["throughput_msgs_per_s"] == 100.0
    assert doc["integrity"]["verdict"] == "PASS"
    both = document([sample_result(), sample_result(False)])
    assert len(both["runs"]) == 2
    assert both["messages"]["lost"] == 1
    assert both["messages"]["sent"] == 600


def test_the_terminal_summary_shows_verdict_latency_and_problems() -> None:
    text = terminal_summary(sample_result(False))
    assert "[FAIL]" in text
    assert "lost 1" in text
    assert re.search(r"delivered\s+300", text)
    assert "0190... (sender position 7)" in text


def test_the_html_report_is_self_contained_with_plots_and_verdict(tmp_path: Path) -> None:
    page = html_report([sample_result(), sample_result(False)], command="hotline sim run a b")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page
    assert "https://" not in page
    assert "<script src" not in page
    assert "<link" not in page
    assert page.count("<svg") >= 6  # percentile and scatter plots for the aggregate and each run
    assert "<polyline" in page
    assert "<circle" in page
    assert "Integrity: PASS" in page
    assert "Integrity: FAIL" in page
    sweep = {
        "sweep": {
            "steps": [
                {
                    "rate_per_s": r,
                    "offered_per_s": r,
                    "achieved_per_s": r * 0.99,
                    "latency_ms": {"delivered": {"p50": 3.0 * r / 100, "p99": 9.0, "max": 12.0}},
                    "generator_lag_ms": {"p99": 0.4},
                    "verdict": "PASS",
                }
                for r in (100, 200, 400)
            ],
            "saturation_per_s": None,
            "reason": "not reached",
        }
    }
    page = html_report([sample_result()], sweep=sweep)
    assert "Latency versus load" in page
    (tmp_path / "r.html").write_text(page, encoding="utf-8")


def test_an_empty_histogram_is_reported_as_zeros() -> None:
    h: HdrHistogram = new_histogram()
    assert percentile_curve(h) == []
    assert summarize(h)["p99"] == 0.0
