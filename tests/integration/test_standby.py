"""Active/standby on PostgreSQL, with real processes: JP runs two gateways on one PostgreSQL
journal; one holds the journal's lock and serves, the other stands by (health NOT_SERVING,
every other call UNAVAILABLE). Under a steady load the active is killed with SIGKILL; the
standby takes over; both parties' journals then hold every acknowledged message exactly once,
in order, and `hotline journal verify` passes on the database and the file alike.

Operators and TW address JP's pair as "host1:port,host2:port" (README "Running on
PostgreSQL"), tried in order.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from certs.pki import init_pki
from client.errors import ClientError
from client.operator import OperatorClient, RetryPolicy
from hotline.v1 import operator_pb2, operator_pb2_grpc
from sim.failover import gateway_process
from sim.integrity import check_journals, load_cas
from sim.pair import GatewayProcess, free_port
from tests import pg
from tests.harness import free_text, operator_channel

pytestmark = pytest.mark.slow

SETTINGS: dict[str, Any] = {
    "heartbeat_interval_s": 0.5,
    "dead_after_s": 2.0,
    "reconnect_min_s": 0.05,
    "reconnect_max_s": 0.5,
    "checkpoint_interval_s": 2.0,
    "deadline_check_s": 0.25,
    "operator_rate_per_s": 1e6,
    "operator_burst": 100000,
}


def gateway(
    work: Path, name: str, party: str, port: int, peer: str, journal: str, pki: Path
) -> GatewayProcess:
    return gateway_process(work, name, party, port, peer, journal, pki, SETTINGS)


async def health_of(pki: Path, port: int) -> int:
    channel = operator_channel(pki, "JP", port)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        return int(response.status)
    finally:
        await channel.close()


async def test_the_standby_takes_over_from_a_killed_active_and_nothing_is_lost(
    postgres: pg.PostgresServer, tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    init_pki(pki, ("JP", "TW"), ("watch-1",))
    url = postgres.new_database()
    ports = {"a": free_port(), "b": free_port(), "tw": free_port()}
    jp_pair = f"127.0.0.1:{ports['a']},127.0.0.1:{ports['b']}"
    tw_journal = tmp_path / "tw.db"
    tw = gateway(tmp_path, "tw", "TW", ports["tw"], jp_pair, str(tw_journal), pki)
    peer_tw = f"127.0.0.1:{ports['tw']}"
    active = gateway(tmp_path, "jp-a", "JP", ports["a"], peer_tw, url, pki)
    standby = gateway(tmp_path, "jp-b", "JP", ports["b"], peer_tw, url, pki)
    sides = (tw, active, standby)
    jp = OperatorClient.from_pki(
        pki, "JP", address=jp_pair, retry=RetryPolicy(attempts=40, initial_s=0.05, max_s=0.5)
    )
    try:
        for side in sides:  # the active first: it takes the lock
            await side.start()
        # The standby serves health, NOT_SERVING, and refuses the operator API UNAVAILABLE.
        assert await health_of(pki, ports["b"]) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await health_of(pki, ports["a"]) == health_pb2.HealthCheckResponse.SERVING
        channel = operator_channel(pki, "JP", ports["b"])
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await operator_pb2_grpc.OperatorServiceStub(channel).Send(
                operator_pb2.SendRequest(envelope=free_text("to the standby")), timeout=5
            )
        await channel.close()
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "standby" in (refused.value.details() or "")

        sent: list[str] = []
        in_doubt: list[str] = []
        stop = asyncio.Event()
        killed_at: list[float] = []
        first_after_kill: list[float] = []

        async def load(worker: int) -> None:
            n = 0
            while not stop.is_set() and n < 2000:  # bounded
                n += 1
                envelope = free_text(f"steady {worker}-{n}")
                try:
                    await jp.send(envelope)
                except ClientError:
                    in_doubt.append(envelope.message_id)  # may or may not be journaled
                    continue
                sent.append(envelope.message_id)
                if killed_at and not first_after_kill:
                    first_after_kill.append(time.monotonic())
                await asyncio.sleep(0.02)

        workers = [asyncio.create_task(load(w)) for w in range(4)]
        await asyncio.sleep(2.0)
        before = len(sent)
        active.kill()  # SIGKILL: the database ends its session, and the lock goes with it
        killed_at.append(time.monotonic())
        for _ in range(300):  # the standby takes over and the load flows again
            if len(sent) > before + 50 and first_after_kill:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*workers)
        assert first_after_kill, f"no Send succeeded after the kill; see {standby.log_path}"
        failover_s = first_after_kill[0] - killed_at[0]
        print(f"failover: first Send OK {failover_s:.2f} s after SIGKILL; {len(sent)} sent")
        assert await health_of(pki, ports["b"]) == health_pb2.HealthCheckResponse.SERVING
        assert "took over journal" in standby.log_tail(200)
        for message_id in sent:  # every acknowledged message reaches TW
            await jp.wait_for(message_id, operator_pb2.DELIVERY_STATE_DELIVERED, timeout=60)
    finally:
        await jp.close()
        for side in sides:
            await side.terminate()
    report = check_journals(
        {"JP": url, "TW": tw_journal},  # type: ignore[dict-item]
        load_cas(pki, ("JP", "TW")),
        scope=set(sent),
    )
    for kind in ("lost", "duplicated", "reordered", "forged"):
        assert report.total(kind) == 0, report.to_json()
    assert report.ok, report.to_json()
    verify = subprocess.run(
        [
            *(sys.executable, "-m", "hotline.cli", "journal", "verify", url),
            *("--pki", str(pki), "--peer-journal", str(tw_journal)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert verify.stdout.count(": OK party") == 2, verify.stdout


def test_an_unreachable_database_or_a_standby_on_a_file_is_refused_at_start_clearly(
    tmp_path: Path,
) -> None:
    pki = tmp_path / "pki"
    init_pki(pki, ("JP", "TW"), ("watch-1",))
    unreachable = f"postgresql://hotline@/jp?host={tmp_path}/nothing&port=5"
    peer = f"127.0.0.1:{free_port()}"
    config = tmp_path / "jp.toml"
    for journal, expected in (
        (unreachable, "cannot reach the journal database postgresql://hotline@/jp"),
        (str(tmp_path / "jp.db"), "standby needs a journal in PostgreSQL"),
    ):
        gateway(tmp_path, "jp", "JP", free_port(), peer, journal, pki)
        if not journal.startswith("postgresql://"):  # ask for a standby on a file
            text = config.read_text()
            assert "standby = false" in text
            config.write_text(text.replace("standby = false", "standby = true"))
        done = subprocess.run(
            [sys.executable, "-m", "hotline.cli", "serve", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert expected in done.stderr
        assert "Traceback" not in done.stderr
