"""The `hotline sim` commands end to end (run, load, sweep, bench), each starting its own pair
of gateway processes, with the reports they write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hotline.cli import main

pytestmark = pytest.mark.slow


def run_cli(*args: str) -> int:
    return main(["sim", *args])


def test_sim_run_writes_json_and_html_reports(tmp_path: Path) -> None:
    out, page = tmp_path / "run.json", tmp_path / "run.html"
    code = run_cli(
        "run",
        "ballistic-launch-warning",
        "--speed",
        "max",
        "--quiet",
        "--json",
        str(out),
        "--html",
        str(page),
        "--workdir",
        str(tmp_path / "pair"),
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["scenario"] == "ballistic-launch-warning"
    assert doc["messages"]["lost"] == 0
    assert doc["messages"]["delivered"] == 6
    assert doc["integrity"]["verdict"] == "PASS"
    assert "<svg" in page.read_text()


def test_sim_load_runs_open_loop_and_reports_the_generator(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    code = run_cli(
        "load",
        "--rate",
        "50",
        "--duration",
        "2",
        "--ack",
        "0.5",
        "--seed",
        "4",
        "--quiet",
        "--json",
        str(out),
    )
    assert code == 0
    doc = json.loads(out.read_text())
    for key in (
        "scenario",
        "messages",
        "latency_ms",
        "ack_ratio",
        "overdue",
        "link_down_s",
        "throughput_msgs_per_s",
        "load",
    ):
        assert key in doc, key
    assert doc["messages"]["lost"] == 0
    assert 50 <= doc["messages"]["sent"] <= 150
    assert {"offered_per_s", "achieved_per_s", "generator_lag_ms", "generator_cpu_percent"} <= set(
        doc["load"]
    )


def test_sim_load_sweep_reports_the_curve(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    code = run_cli(
        "load",
        "--sweep",
        "20,40",
        "--duration",
        "1",
        "--quiet",
        "--json",
        str(out),
        "--html",
        str(tmp_path / "sweep.html"),
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert [s["rate_per_s"] for s in doc["sweep"]["steps"]] == [20.0, 40.0]
    assert "saturation_per_s" in doc["sweep"]
    assert "Latency versus load" in (tmp_path / "sweep.html").read_text()


def test_sim_bench_reports_baseline_hotline_and_ratios(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert run_cli("bench", "--duration", "2", "--json", str(out)) == 0
    doc = json.loads(out.read_text())
    assert set(doc["baseline"]) >= {"p50_ms", "p99_ms", "msgs_per_s"}
    assert set(doc["hotline"]) >= {"delivered_p50_ms", "delivered_p99_ms", "delivered_msgs_per_s"}
    assert set(doc["ratios"]) >= {
        "delivered_p50_over_baseline_p50",
        "flash_backlog_p50_over_idle_p50",
        "link_msgs_per_s_over_baseline",
    }
    assert "machine" in doc
    assert doc["command"].startswith("hotline")
    # CPU per delivered message, per process, at every throughput step and the best one
    assert {"simulator", "JP", "TW"} <= set(doc["hotline"]["cpu_us_per_msg"])
    assert all("cpu_us_per_msg" in step for step in doc["throughput_steps"])
    # precedence under backlog: every ROUTINE and the FLASH delivered, the FLASH placed in order
    flash = doc["precedence"]
    backlog = flash["routine_backlog"]
    assert flash["idle"]["samples"] == 20
    assert flash["idle"]["p50_ms"] > 0
    assert flash["backlog"]["samples"] == len(flash["rounds"]) >= 1
    for round_ in flash["rounds"]:
        assert round_["flash_delivered"]
        assert round_["routine_journaled"] == round_["routine_delivered"] == backlog
        assert round_["routine_delivered_at_flash_send"] >= backlog // 4
        after = round_["routine_delivered_after_flash"]
        assert 0 <= after <= backlog
        assert 0 <= round_["routine_ahead_of_flash"] <= backlog - after
        assert 0 <= round_["routine_overtaken_by_flash"] <= after
    assert flash["backlog_over_idle_p50"] > 0
    # the link alone: everything journaled while TW was down is delivered
    link = doc["link"]
    assert link["delivered"] == link["messages"] > 0
    assert link["msgs_per_s"] > 0
    assert {"simulator", "JP", "TW"} <= set(link["cpu_us_per_msg"])
