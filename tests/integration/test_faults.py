"""Fault tests with real gateway processes: link cuts and stalls, SIGKILL mid-burst, tampering.

Each test states the exactly-once promise it checks: every message whose Send returned OK
(it was journaled) reaches the peer's journal exactly once, in journal order within each
precedence, whatever happens to the link or the processes in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from hotline.journal_file import JournalReader, Kind
from hotline.v1 import common_pb2, envelope_pb2, operator_pb2, operator_pb2_grpc
from sim.pair import GatewayPair
from tests.harness import free_text, operator_channel

pytestmark = pytest.mark.slow

PRECEDENCES = (
    common_pb2.PRECEDENCE_FLASH,
    common_pb2.PRECEDENCE_IMMEDIATE,
    common_pb2.PRECEDENCE_PRIORITY,
    common_pb2.PRECEDENCE_ROUTINE,
)


@contextlib.asynccontextmanager
async def pair_of_processes(tmp: Path) -> AsyncIterator[GatewayPair]:
    pair = await GatewayPair.start(
        tmp, settings={"operator_rate_per_s": 1e6, "operator_burst": 100000}
    )
    try:
        yield pair
    finally:
        await pair.stop()


def inbound(journal: Path) -> list[tuple[str, int, int]]:
    """(message id, sequence, precedence) of every message journaled as received, in order."""
    found = []
    with JournalReader(journal) as reader:
        for e in reader.entries([Kind.MESSAGE_IN]):
            signed = common_pb2.SignedPayload.FromString(e.body)
            precedence = envelope_pb2.Envelope.FromString(signed.payload).precedence
            found.append((e.message_id, e.sequence, int(precedence)))
    return found


def outbound_order(journal: Path) -> dict[str, int]:
    with JournalReader(journal) as reader:
        return {e.message_id: e.position for e in reader.entries([Kind.MESSAGE_OUT])}


def check_exactly_once(sent: list[str], sender_journal: Path, receiver_journal: Path) -> None:
    got = inbound(receiver_journal)
    print(f"{len(sent)} sends acknowledged by the sender; receiver journaled {len(got)}")
    ids = [m for m, _, _ in got]
    assert len(ids) == len(set(ids)), "a message was journaled twice by the receiver"
    missing = set(sent) - set(ids)
    assert not missing, f"{len(missing)} acknowledged sends never arrived: {sorted(missing)[:5]}"
    for lane in PRECEDENCES:  # each precedence is a lane with sequences of its own
        sequences = [s for _, s, p in got if p == lane]
        assert sequences == list(range(1, len(sequences) + 1)), (
            f"lane {lane}: receiver journal not in sequence order, or a sequence skipped"
        )
    order = outbound_order(sender_journal)
    for precedence in PRECEDENCES:
        positions = [order[m] for m, _, p in got if p == precedence and m in order]
        assert positions == sorted(positions), f"precedence {precedence} reordered"


async def send_burst(
    stub: operator_pb2_grpc.OperatorServiceAsyncStub,
    count: int,
    *,
    concurrency: int = 8,
    tolerate_errors: bool = False,
) -> list[str]:
    """Send `count` messages, `concurrency` at a time; return the ids whose Send returned OK."""
    ok: list[str] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            env = free_text(f"burst {i}", precedence=PRECEDENCES[i % 4])
            try:
                response = await stub.Send(operator_pb2.SendRequest(envelope=env), timeout=10)
            except grpc.aio.AioRpcError:
                if not tolerate_errors:
                    raise
                return
            ok.append(response.message_id)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


async def all_delivered(
    stub: operator_pb2_grpc.OperatorServiceAsyncStub, ids: list[str], within: float = 60.0
) -> None:
    deadline = time.monotonic() + within
    pending = set(ids)
    while pending:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(pending)} messages not delivered within {within} s")
        for message_id in list(pending)[:200]:
            record = await stub.GetMessage(
                operator_pb2.GetMessageRequest(message_id=message_id),
                timeout=10,
                wait_for_ready=True,
            )
            if record.message.state >= operator_pb2.DELIVERY_STATE_DELIVERED:
                pending.discard(message_id)
        if pending:
            await asyncio.sleep(0.2)


async def test_link_cut_and_stalled_mid_stream_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    async with pair_of_processes(tmp_path) as pair:
        channel = operator_channel(pair.pki, "JP", pair.jp.port)
        stub = operator_pb2_grpc.OperatorServiceStub(channel)
        proxy = pair.proxy_to("TW")
        try:
            burst = asyncio.create_task(send_burst(stub, 600))
            for _ in range(3):  # cut the JP->TW link three times while the burst flows
                await asyncio.sleep(0.3)
                proxy.drop()
            proxy.stall()  # then a silent link: bytes held, connection open
            await asyncio.sleep(2.5)  # longer than dead_after (2 s): declared down
            proxy.resume()
            proxy.drop()
            sent = await burst
            assert len(sent) == 600
            await all_delivered(stub, sent)
            assert proxy.stats.dropped >= 3
        finally:
            await channel.close()
    check_exactly_once(sent, pair.jp.journal, pair.tw.journal)


@pytest.mark.parametrize("victim", ["JP", "TW"])
async def test_sigkill_during_a_burst_loses_nothing_that_was_acknowledged(
    tmp_path: Path, victim: str
) -> None:
    """Kill the sender (JP) or the receiver (TW) with SIGKILL mid-burst, restart it, check."""
    async with pair_of_processes(tmp_path) as pair:
        channel = operator_channel(pair.pki, "JP", pair.jp.port)
        stub = operator_pb2_grpc.OperatorServiceStub(channel)
        try:
            burst = asyncio.create_task(send_burst(stub, 1500, tolerate_errors=True))
            await asyncio.sleep(1.0)
            pair.side(victim).kill()
            sent = await burst
            assert 0 < len(sent) < 1500 or victim == "TW"
            await pair.side(victim).restart()
            # the JP channel reconnects by itself once JP is back
            await all_delivered(stub, sent)
        finally:
            await channel.close()
    check_exactly_once(sent, pair.jp.journal, pair.tw.journal)


async def test_an_invalid_message_gets_invalid_argument_with_violations_and_the_gateway_keeps_serving(
    tmp_path: Path,
) -> None:
    async with pair_of_processes(tmp_path) as pair:
        channel = operator_channel(pair.pki, "JP", pair.jp.port)
        stub = operator_pb2_grpc.OperatorServiceStub(channel)
        try:
            bad = free_text("x")
            bad.precedence = common_pb2.PRECEDENCE_UNSPECIFIED
            bad.message_id = "not-a-uuid"
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Send(operator_pb2.SendRequest(envelope=bad), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "message_id" in (caught.value.details() or "")
            assert "precedence" in (caught.value.details() or "")
            good = await stub.Send(
                operator_pb2.SendRequest(envelope=free_text("after")), timeout=10
            )
            await all_delivered(stub, [good.message_id])
        finally:
            await channel.close()


async def test_journal_verify_finds_a_row_edited_by_hand(tmp_path: Path) -> None:
    async with pair_of_processes(tmp_path) as pair:
        channel = operator_channel(pair.pki, "JP", pair.jp.port)
        stub = operator_pb2_grpc.OperatorServiceStub(channel)
        try:
            sent = await send_burst(stub, 20)
            await all_delivered(stub, sent)
            await asyncio.sleep(2.5)  # let a checkpoint of each journal reach the other side
        finally:
            await channel.close()
    hotline = [sys.executable, "-m", "hotline.cli", "journal", "verify"]
    cas = ["--pki", str(pair.pki)]
    clean = subprocess.run(
        [*hotline, str(pair.jp.journal), *cas, "--peer-journal", str(pair.tw.journal)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "witnessed checkpoints" in clean.stdout
    edited = tmp_path / "edited.db"
    shutil.copy(pair.tw.journal, edited)
    with JournalReader(edited) as reader:
        position = [e.position for e in reader.entries([Kind.MESSAGE_IN])][5]
    conn = sqlite3.connect(edited)  # edit one entry by hand, as a forger would
    conn.execute("UPDATE entries SET time_ns = time_ns + 1 WHERE position = ?", (position,))
    conn.commit()
    conn.close()
    bad = subprocess.run([*hotline, str(edited), *cas], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1
    assert f"first bad entry: {position}" in bad.stdout
