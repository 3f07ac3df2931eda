"""Reports that answer a load tester's questions: thresholds in the verdict with their measured
values, per-precedence figures, the per-message table (JSON, CSV, HTML), throughput and backlog
over time with link-down and fault periods shaded, think time apart from the system's latency,
percentile curves limited by their sample count, sweeps never merged, and raw exports (.hgrm,
encoded histograms that decode and merge exactly)."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from hotline.v1 import common_pb2
from sim.faults import FaultRecord
from sim.metrics import Metrics, new_histogram, percentile_curve, record_seconds
from sim.report import (
    document,
    html_report,
    run_json,
    series,
    terminal_summary,
    write_csv,
    write_hgrm,
)
from sim.runner import RunResult
from sim.scenario import ScenarioError, parse_scenario
from sim.slo import ThresholdError, parse_threshold, parse_thresholds
from tests.sim.test_reports import sample_result

FLASH = common_pb2.PRECEDENCE_FLASH
ROUTINE = common_pb2.PRECEDENCE_ROUTINE


def rows_for(count: int = 300) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        flash = i % 10 == 0
        flags = ["overdue"] if i == 7 else (["resend"] if i == 9 else [])
        rows.append(
            {
                "id": f"0190a0a0-0000-7000-8000-{i:012d}",
                "label": "WARN" if flash else "",
                "sender": "JP" if i % 2 else "TW",
                "recipient": "TW" if i % 2 else "JP",
                "type": "launch_warning" if flash else "free_text",
                "precedence": "FLASH" if flash else "ROUTINE",
                "at_s": round(i * 0.01, 4),
                "expected_answer": "ROGER" if i % 2 else "",
                "answer": "ROGER" if i % 2 else "",
                "journaled_ms": 3.0,
                "delivered_ms": 9.0 + (500.0 if i == 250 else 0.0),
                "acknowledged_ms": 1509.0 if i % 2 else None,
                "think_ms": 1500.0 if i % 2 else None,
                "ack_system_ms": 9.0 if i % 2 else None,
                "flags": flags,
                "error": "",
                "resend_of": "",
            }
        )
    return rows


def rich_result(ok: bool = True) -> RunResult:
    result = sample_result(ok)
    result.messages = rows_for()
    result.extra["axis"] = {"origin_wall": 99.0}
    result.faults = [
        FaultRecord(at=0.5, description="drop JP->TW", outcome="applied", wall=99.5),
        FaultRecord(at=1.5, description="drop JP->TW", outcome="lifted", wall=100.5),
    ]
    for i in range(300):  # think time and the system's share of the answer
        if i % 2:
            prec = FLASH if i % 10 == 0 else ROUTINE
            body = "launch_warning" if prec == FLASH else "free_text"
            result.metrics.record("think", body, prec, 1.5)
            result.metrics.record("ack_system", body, prec, 0.009)
    return result


# ------------------------------------------------------------------ thresholds


def test_thresholds_parse_with_units_precedences_and_counters() -> None:
    t = parse_threshold("delivered.p99<50ms")
    assert (t.stage, t.stat, t.op, t.value, t.precedence) == ("delivered", "p99", "<", 50.0, None)
    assert parse_threshold("flash.delivered.p99 < 0.02s").value == 20.0
    assert parse_threshold("flash.delivered.p99<20ms").precedence == FLASH
    assert parse_threshold("journaled.p50<=800us").value == pytest.approx(0.8)
    assert parse_threshold("errors==0").metric == "errors"
    assert parse_threshold("ack_ratio>=99%").value == pytest.approx(0.99)
    assert parse_threshold("delivered.count>=100").value == 100
    for bad, words in (
        ("delivered.p99", "METRIC OP VALUE"),
        ("delivred.p99<5ms", "not a stage"),
        ("delivered.p98<5ms", "not a statistic"),
        ("urgent.delivered.p99<5ms", "not a precedence"),
        ("delivered.p99<5kg", "latency unit"),
        ("errorz==0", "not a counter"),
        ("ack_ratio>=150%", "at most 1"),
        ("errors==0ms", "takes no unit"),
    ):
        with pytest.raises(ThresholdError, match=words):
            parse_threshold(bad)


def test_the_verdict_is_integrity_and_thresholds_each_with_its_measured_value() -> None:
    result = rich_result()
    assert result.ok
    result.check(
        parse_thresholds(
            ["delivered.p99<50ms", "flash.delivered.p99<20ms", "errors==0", "ack_ratio>=99%"]
        )
    )
    assert result.ok, [t.describe() for t in result.thresholds]
    measured = {t.threshold.text: t.measured for t in result.thresholds}
    assert measured["errors==0"] == 0
    assert measured["ack_ratio>=99%"] == 1.0
    assert 6.0 <= (measured["delivered.p99<50ms"] or 0) <= 12.0
    result.check(parse_thresholds(["delivered.p99<1ms", "immediate.delivered.p50<5ms"]))
    assert result.verdict == "FAIL"
    assert result.integrity.verdict == "PASS"
    assert [t.passed for t in result.thresholds] == [False, False]
    assert result.thresholds[1].describe().endswith("(measured no samples)")
    doc = run_json(result)
    assert doc["verdict"] == "FAIL"
    assert doc["integrity"]["verdict"] == "PASS"
    assert doc["thresholds"][0]["threshold"] == "delivered.p99<1ms"
    assert doc["thresholds"][0]["passed"] is False
    assert doc["thresholds"][0]["measured"] > 1.0
    text = terminal_summary(result)
    assert "[FAIL]" in text
    assert re.search(r"threshold  delivered\.p99<1ms: FAIL \(measured [\d.]+ ms\)", text)
    assert "integrity PASS, 0/2 thresholds met" in text


def test_a_scenario_file_carries_thresholds_and_reports_a_bad_one_by_line(tmp_path: Path) -> None:
    text = """format = "hotline-scenario/1"
name = "t"
title = "t"
slo = ["flash.delivered.p99<20ms", "errors==0"]

[[event]]
at = 0
from = "JP"
type = "free_text"
fields.subject = "s"
fields.text = "x"
"""
    scenario = parse_scenario(text, source="t.toml")
    assert [t.text for t in scenario.slo] == ["flash.delivered.p99<20ms", "errors==0"]
    with pytest.raises(ScenarioError, match=r"t\.toml:4: threshold 'delivered<2'"):
        parse_scenario(text.replace('"errors==0"', '"delivered<2"'), source="t.toml")


# ------------------------------------------------------------------ figures


def test_precedences_think_time_and_the_ack_ratio_are_reported_apart() -> None:
    doc = run_json(rich_result())
    by_prec = doc["latency_by_precedence_ms"]
    assert list(by_prec["delivered"]) == ["FLASH", "ROUTINE"]
    assert by_prec["delivered"]["FLASH"]["count"] == 30
    assert doc["operator_think_ms"]["p50"] == pytest.approx(1500, rel=0.01)
    assert doc["latency_ms"]["ack_system"]["p50"] == pytest.approx(9, rel=0.01)
    assert doc["ack_ratio"] == 1.0
    text = terminal_summary(rich_result())
    assert "acknowledged 150/150 expected (100%)" in text
    assert re.search(r"FLASH\s+30\s+", text)


def test_percentile_curves_stop_where_the_sample_count_does() -> None:
    five = new_histogram()
    for ms in (1, 2, 3, 4, 5):
        record_seconds(five, ms / 1000)
    curve = percentile_curve(five)
    assert max(p for p, _ in curve if p < 100) <= 80.0  # 1 - 1/5
    assert curve[-1] == (100.0, round(five.get_max_value() / 1000, 3))
    many = new_histogram()
    for i in range(100_000):
        record_seconds(many, (1 + i % 97) / 1000)
    assert max(p for p, _ in percentile_curve(many) if p < 100) == 99.999


def test_the_per_message_table_and_the_time_series_with_shaded_periods() -> None:
    result = rich_result()
    doc = run_json(result)
    table = doc["messages_table"]
    assert len(table) == 300
    assert doc["messages_table_left_out"] == 0
    assert table[7]["flags"] == ["overdue"]
    assert {"sender", "type", "precedence", "answer", "delivered_ms", "think_ms"} <= set(table[0])
    data = series(result)
    assert sum(p["planned_per_s"] for p in data["points"]) * data["bin_s"] == pytest.approx(300)
    assert data["points"][-1]["backlog"] == 0
    kinds = {(p["kind"], p["what"]) for p in data["periods"]}
    assert ("fault", "drop JP->TW") in kinds
    assert ("link", "link JP->TW down") in kinds
    fault = next(p for p in data["periods"] if p["kind"] == "fault")
    assert (fault["start"], fault["end"]) == (0.5, 1.5)
    page = html_report([result])
    assert page.count('class="period"') >= 2  # both charts shade the periods
    assert 'data-chart="precedence-delivered"' in page
    assert 'data-chart="throughput"' in page
    assert 'data-chart="backlog"' in page
    assert page.count('<tr class="msg') == 300
    assert "<script>" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)


def test_a_sweep_reports_each_step_and_never_merges_them() -> None:
    steps = [rich_result(), rich_result()]
    steps[0].name, steps[1].name = "load-100", "load-200"
    doc = document(steps, merge=False)
    assert doc["kind"] == "sweep"
    assert "latency_ms" not in doc
    assert [r["scenario"] for r in doc["runs"]] == ["load-100", "load-200"]
    assert doc["runs"][0]["latency_ms"]["delivered"]["count"] == 300
    sweep: dict[str, Any] = {
        "sweep": {"steps": [], "saturation_per_s": None, "reason": "not reached"}
    }
    page = html_report(steps, sweep=sweep)
    assert "All runs" not in page  # no merged section
    assert "never merged" in page


# ------------------------------------------------------------------ raw exports


def test_encoded_histograms_decode_and_merge_exactly() -> None:
    a, b = Metrics(seed=1), Metrics(seed=2)
    for i in range(601):
        a.record("delivered", "free_text", ROUTINE, (1 + i % 50) / 1000)
    for i in range(619):
        b.record("delivered", "free_text", ROUTINE, (3 + i % 70) / 1000)
    merged: HdrHistogram = new_histogram()
    for metrics in (a, b):
        encoded = metrics.encoded()["delivered/ROUTINE/free_text"]
        base64.b64decode(encoded)  # plain base64 text in the JSON
        merged.decode_and_add(encoded)
    direct = new_histogram()
    direct.add(a.total("delivered"))
    direct.add(b.total("delivered"))
    assert merged.get_total_count() == 1220
    for p in (50.0, 90.0, 99.0, 99.9, 100.0):
        assert merged.get_value_at_percentile(p) == direct.get_value_at_percentile(p)
    doc = json.loads(json.dumps(run_json(rich_result())))
    assert "delivered/FLASH/launch_warning" in doc["histograms"]


def test_hgrm_and_csv_exports(tmp_path: Path) -> None:
    result = rich_result()
    written = write_hgrm(tmp_path / "hgrm", [result])
    names = {p.name for p in written}
    assert "yonaguni-naval-encounter-delivered.hgrm" in names
    assert "yonaguni-naval-encounter-delivered-flash.hgrm" in names
    text = (tmp_path / "hgrm" / "yonaguni-naval-encounter-delivered.hgrm").read_text()
    assert "Percentile" in text
    assert "#[Max" in text
    assert re.search(r"TotalCount\s+=\s+300", text)
    assert write_csv(tmp_path / "m.csv", [result]) == 300
    with (tmp_path / "m.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[7]["flags"] == "overdue"
    assert rows[0]["run"] == "yonaguni-naval-encounter"
    assert rows[0]["delivered_ms"] == "9.0"
