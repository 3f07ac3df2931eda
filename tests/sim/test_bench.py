"""`hotline sim bench`'s peer-link figures: the budget that sizes them, CPU per message, the
printed table, and the link drain against a pair whose TW gateway starts late (real processes,
a tiny message count; no timing is asserted, only what was counted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.bench import (
    BACKLOG_MAX,
    LINK_MAX,
    BenchResult,
    Budget,
    drain_order,
    format_bench,
    measure_link,
    measure_metrics_cost,
)
from sim.machine import CpuMeter
from sim.pair import GatewayPair


def test_the_budget_sizes_the_counted_parts_and_scales_them_down() -> None:
    full = Budget(60)
    assert (full.backlog_messages, full.backlog_rounds, full.link_messages) == (
        BACKLOG_MAX,
        5,
        LINK_MAX,
    )
    assert Budget(30).backlog_messages == BACKLOG_MAX
    assert Budget(30).backlog_rounds == 5
    tiny = Budget(1)
    assert tiny.backlog_rounds == 1
    assert 0 < tiny.backlog_messages < BACKLOG_MAX
    assert 0 < tiny.link_messages < LINK_MAX
    assert tiny.idle_flash_samples == 20


def test_cpu_per_message_divides_each_process_cpu_by_the_messages() -> None:
    meter = CpuMeter({})
    meter.start()
    meter.stop()
    meter.seconds = {"simulator": 0.5, "JP": 2.0, "TW": 1.0}
    assert meter.per_message_us(1000) == {"simulator": 500.0, "JP": 2000.0, "TW": 1000.0}
    assert meter.per_message_us(0) == {}


def test_the_drain_order_is_read_from_journal_positions_and_link_sequences() -> None:
    # (journal position, settled sequence, settlement position); the FLASH journaled at 100
    records = {
        "done": (10, 1, 50),  # settled before the FLASH was journaled: not counted as ahead
        "in-flight-1": (60, 2, 105),  # unsettled at 100, settled ahead of the FLASH
        "in-flight-2": (70, 3, 106),
        "flash": (100, 4, 110),
        "queued": (80, 5, 120),  # journaled before, overtaken
        "later": (130, 6, 140),  # journaled after, delivered after
    }
    assert drain_order(records, "flash") == {
        "routine_unsettled_when_flash_journaled": 3,
        "routine_ahead_of_flash": 2,
        "routine_overtaken_by_flash": 1,
        "routine_journaled_after_flash_settled_before": 0,
        "routine_delivered_after_flash": 2,
    }
    records["late-but-first"] = (101, 3, 104)  # journaled after the FLASH, settled ahead
    assert drain_order(records, "flash")["routine_journaled_after_flash_settled_before"] == 1


def _synthetic() -> BenchResult:
    cpu = {"simulator": 400.0, "JP": 2500.0, "TW": 1600.0}
    return BenchResult(
        baseline={"p50_ms": 0.3, "p99_ms": 0.5, "msgs_per_s": 5000.0, "payload_bytes": 300},
        hotline={
            "delivered_p50_ms": 5.0,
            "delivered_p99_ms": 9.0,
            "delivered_msgs_per_s": 500.0,
            "cpu_percent": {"simulator": 20.0, "JP": 98.0, "TW": 50.0},
            "cpu_us_per_msg": cpu,
        },
        steps=[{"senders": 16, "delivered_msgs_per_s": 500.0}],
        precedence={
            "routine_backlog": 2000,
            "flash_sent_at_delivered_fraction": 0.25,
            "idle": {
                "samples": 20,
                "p50_ms": 5.0,
                "max_ms": 8.0,
                "send_p50_ms": 2.0,
                "link_p50_ms": 3.0,
            },
            "backlog": {
                "samples": 5,
                "p50_ms": 250.0,
                "max_ms": 400.0,
                "send_p50_ms": 120.0,
                "link_p50_ms": 130.0,
                "routine_unsettled_when_flash_journaled_p50": 150,
                "routine_ahead_of_flash_p50": 140,
                "routine_ahead_of_flash_max": 256,
                "routine_overtaken_by_flash_p50": 10,
                "routine_journaled_after_flash_settled_before_max": 0,
                "routine_delivered_after_flash_p50": 1300,
            },
            "ingest": {
                "samples": 5,
                "p50_ms": 90.0,
                "max_ms": 120.0,
                "send_p50_ms": 60.0,
                "link_p50_ms": 30.0,
            },
            "routine_senders": 64,
            "backlog_over_idle_p50": 50.0,
            "backlog_over_idle_link_p50": 43.33,
            "ingest_over_idle_p50": 18.0,
        },
        link={
            "messages": 5000,
            "msgs_per_s": 700.0,
            "drain_s": 7.14,
            "first_settlement_s": 0.07,
            "steady_msgs_per_s": 707.0,
            "journal_msgs_per_s": 800.0,
            "cpu_us_per_msg": {"simulator": 60.0, "JP": 900.0, "TW": 1000.0},
        },
    )


def test_the_table_and_the_json_carry_precedence_link_and_cpu_per_message() -> None:
    result = _synthetic()
    text = format_bench(result)
    assert "behind 2000 ROUTINE draining (5 rounds)" in text
    assert "50.0x" in text  # backlog / idle
    assert "while 2000 ROUTINE are sent (5 rounds)" in text
    assert "18.0x" in text  # sending / idle
    assert "waited behind 140 (max 256), overtook 10; 1300 delivered after it" in text
    assert "drain of 5000 ROUTINE" in text
    assert "link drain:          simulator 60, JP 900, TW 1000" in text
    assert "max throughput step: simulator 400, JP 2500, TW 1600" in text
    doc = result.to_json("hotline sim bench")
    assert doc["ratios"]["flash_backlog_p50_over_idle_p50"] == 50.0
    assert doc["ratios"]["flash_sending_p50_over_idle_p50"] == 18.0
    assert doc["ratios"]["link_msgs_per_s_over_baseline"] == 0.14
    assert doc["precedence"]["routine_backlog"] == 2000
    assert doc["link"]["messages"] == 5000


def test_the_table_and_the_json_carry_the_cost_of_metrics_on_over_off() -> None:
    result = _synthetic()
    result.metrics_cost = {
        "senders": 4,
        "batch": 64,
        "scrape_interval_s": 1.0,
        "scrapes": 12,
        "scraped_journaled": 6400.0,
        "rounds": [{"metrics": m} for m in ("off", "on", "on", "off")],
        "off": {"delivered_msgs_per_s": 1000.0, "cpu_us_per_msg": {"JP": 600.0, "TW": 300.0}},
        "on": {"delivered_msgs_per_s": 980.0, "cpu_us_per_msg": {"JP": 620.0, "TW": 307.0}},
    }
    text = format_bench(result)
    assert "/metrics on vs off (4 x SendBatch 64; off, on, on, off)" in text
    assert "on, scraped every 1 s (12 scrapes)" in text
    assert "0.98x" in text  # delivered per second, on / off
    assert "cpu per message on / off: 1.03x" in text  # (620 + 307) / (600 + 300)
    ratios = result.to_json("hotline sim bench")["ratios"]
    assert ratios["metrics_on_over_off_delivered_msgs_per_s"] == 0.98
    assert ratios["metrics_on_over_off_gateway_cpu_us_per_msg"] == 1.03
    result.metrics_cost = {"failed": "RuntimeError: no pair"}
    assert "/metrics on vs off" in format_bench(result)
    assert "FAILED, RuntimeError: no pair" in format_bench(result)


@pytest.mark.slow
async def test_the_metrics_cost_runs_the_same_load_with_metrics_off_then_on(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    cost = await measure_metrics_cost(tmp_path, 300, Budget(1), lines.append)
    assert [r["metrics"] for r in cost["rounds"]] == ["off", "on"]
    assert all(r["delivered"] > 0 for r in cost["rounds"])
    # the "on" pair served /metrics and counted the load; both sides measured
    assert cost["scrapes"] > 0
    assert cost["scraped_journaled"] > 0
    for mode in ("off", "on"):
        assert cost[mode]["delivered_msgs_per_s"] > 0
        assert {"simulator", "JP", "TW"} <= set(cost[mode]["cpu_us_per_msg"])
    assert any("/metrics on" in line for line in lines)


@pytest.mark.slow
async def test_a_gateway_can_be_left_out_of_a_pair_and_started_later(tmp_path: Path) -> None:
    pair = await GatewayPair.start(tmp_path, proxies=False, start=("JP",))
    try:
        assert pair.jp.running
        assert pair.tw.proc is None  # configured, never spawned
        await pair.tw.start()
        assert pair.tw.running
        with pytest.raises(RuntimeError, match="already running"):
            await pair.tw.start()
    finally:
        await pair.stop()


@pytest.mark.slow
async def test_the_link_drain_delivers_everything_journaled_while_the_peer_was_down(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    link = await measure_link(tmp_path, 300, Budget(1), lines.append)
    assert link["messages"] == Budget(1).link_messages
    assert link["delivered"] == link["messages"]
    assert link["drain_s"] > 0
    assert link["msgs_per_s"] > 0
    assert 0 <= link["first_settlement_s"] <= link["drain_s"]
    assert {"simulator", "JP", "TW"} <= set(link["cpu_us_per_msg"])
    assert {"simulator", "JP", "TW"} <= set(link["cpu_percent"])
    assert any("start TW" in line for line in lines)
