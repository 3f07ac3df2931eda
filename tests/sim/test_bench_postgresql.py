"""`hotline sim bench`'s PostgreSQL part: the hot line with both journals in PostgreSQL beside
SQLite, and the failover of JP's active/standby pair, in the table and the JSON (synthetic
results); then the part itself on the session's throwaway server with a tiny budget (real
processes; no timing is asserted, only what was counted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sim.bench import DATABASE, BenchResult, Budget, format_bench, measure_postgresql
from tests import pg
from tests.sim.test_bench import _synthetic

FAILOVER: dict[str, Any] = {
    "rounds": 5,
    "first_send_ok_p50_ms": 420.5,
    "first_send_ok_max_ms": 610.0,
    "first_delivered_p50_ms": 480.25,
    "first_delivered_max_ms": 700.0,
    "senders": 4,
    "load_msgs_per_s": 150.0,
    "acknowledged": 1500,
    "lost": 0,
    "duplicated": 0,
    "reordered": 0,
    "integrity_ok": True,
}


def _with_postgresql() -> BenchResult:
    result = _synthetic()  # SQLite: p50 5.0 ms, p99 9.0 ms, 500 msgs/s
    result.postgresql = {
        "server": "postgres (PostgreSQL) 15.18",
        "hotline": {
            "delivered_p50_ms": 7.5,
            "delivered_p99_ms": 18.0,
            "delivered_msgs_per_s": 250.0,
            "cpu_us_per_msg": {"simulator": 50.0, "JP": 700.0, "TW": 450.0, DATABASE: 680.0},
        },
        "throughput_steps": [
            {"senders": 16, "batch": 1, "delivered_msgs_per_s": 200.0},
            {"senders": 2, "batch": 32, "delivered_msgs_per_s": 250.0},
        ],
        "failover": FAILOVER,
    }
    return result


def test_the_table_and_the_json_put_postgresql_beside_sqlite_with_the_failover() -> None:
    result = _with_postgresql()
    text = format_bench(result)
    assert "hotline   on PostgreSQL, both journals (1 | max)" in text
    assert "7.500   18.000       250" in text
    assert "ratio     PostgreSQL / SQLite" in text
    assert "1.5x     2.0x     0.50x" in text
    assert "16 senders 200/s, 2 senders x SendBatch 32 250/s" in text
    assert "failover  kill -9 of JP's active (5 rounds)" in text
    rows = {r.strip().split("  ")[0]: r for r in text.splitlines() if "  to the first" in r}
    assert rows["to the first Send answered"].endswith("420.5    610.0")
    assert rows["to the first DELIVERED of a Send after the kill"].endswith("480.2    700.0")
    assert "1500 acknowledged: 0 lost, 0 duplicated, 0 reordered" in text
    assert "on PostgreSQL:       simulator 50, JP 700, TW 450, PostgreSQL 680" in text
    doc = result.to_json("hotline sim bench")
    assert doc["ratios"]["postgresql_delivered_p50_over_sqlite_p50"] == 1.5
    assert doc["ratios"]["postgresql_delivered_p99_over_sqlite_p99"] == 2.0
    assert doc["ratios"]["postgresql_delivered_msgs_per_s_over_sqlite"] == 0.5
    assert doc["postgresql"]["failover"]["first_delivered_p50_ms"] == 480.25
    assert doc["postgresql"]["hotline"]["cpu_us_per_msg"][DATABASE] == 680.0


def test_a_postgresql_part_skipped_or_failed_is_reported_and_the_rest_still_printed() -> None:
    result = _synthetic()
    result.postgresql = {"skipped": "PostgreSQL is not installed (no initdb)"}
    text = format_bench(result)
    assert "PostgreSQL both journals, and an active/standby failover: skipped, " in text
    assert "no initdb" in text
    assert "drain of 5000 ROUTINE" in text  # the rest of the table is there
    doc = result.to_json("hotline sim bench")
    assert doc["postgresql"] == {"skipped": "PostgreSQL is not installed (no initdb)"}
    assert not any(key.startswith("postgresql_") for key in doc["ratios"])

    result.postgresql = {
        "hotline": {"failed": "RuntimeError: gateway JP exited with 2"},
        "failover": FAILOVER,
    }
    text = format_bench(result)
    assert "hotline   on PostgreSQL" in text
    assert "FAILED, RuntimeError: gateway JP exited with 2" in text
    assert "failover  kill -9 of JP's active (5 rounds)" in text
    assert not any(key.startswith("postgresql_") for key in result.ratios())


def test_the_failover_rounds_scale_with_the_duration() -> None:
    assert Budget(1).failover_rounds == 2
    assert Budget(30).failover_rounds == 3
    assert Budget(60).failover_rounds == 5


@pytest.mark.slow
async def test_the_postgresql_part_measures_both_journals_and_a_failover_losing_nothing(
    postgres: pg.PostgresServer, tmp_path: Path
) -> None:
    lines: list[str] = []
    figures = await measure_postgresql(
        tmp_path, 300, Budget(1), lines.append, steps=((2, 8),), server=postgres
    )
    hotline, failover = figures["hotline"], figures["failover"]
    assert "failed" not in hotline, hotline
    assert hotline["latency"]["count"] > 0
    assert hotline["delivered_msgs_per_s"] > 0
    assert [(s["senders"], s["batch"]) for s in figures["throughput_steps"]] == [(2, 8)]
    assert {"simulator", "JP", "TW", DATABASE} <= set(hotline["cpu_us_per_msg"])
    assert "failed" not in failover, failover
    assert failover["rounds"] == Budget(1).failover_rounds
    assert len(failover["first_delivered_ms"]) == failover["rounds"]
    assert failover["acknowledged"] > 0
    assert (failover["lost"], failover["duplicated"], failover["reordered"]) == (0, 0, 0)
    assert failover["integrity_ok"]
    assert failover["undelivered_after_60_s"] == 0
    assert any("kill -9" in line for line in lines)
