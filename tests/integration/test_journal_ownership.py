"""One gateway owns one journal, and a journal that lost history is detected, never papered over.

Real gateway processes (`hotline serve`), real mTLS, real SQLite files: a second gateway on a
journal in use is refused; a journal deleted under a running gateway stops it with an alarm;
a journal replaced by an empty one is found on the next Welcome (DATA_LOSS, sending held);
and `hotline journal verify` recomputes the index tables and finds a reset journal from what
the peer's journal holds of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
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
from hotline.journal_verify import check_peer_holds, verify_journal
from hotline.v1 import bodies_pb2, operator_pb2, operator_pb2_grpc
from server.journal import Journal
from sim.pair import GatewayPair
from tests.harness import free_text, operator_channel, running_pair, wait_state

pytestmark = pytest.mark.slow

SECURITY = operator_pb2.EVENT_KIND_SECURITY_REFUSAL
DELIVERED = operator_pb2.DELIVERY_STATE_DELIVERED
ACKNOWLEDGED = operator_pb2.DELIVERY_STATE_ACKNOWLEDGED
HOTLINE = [sys.executable, "-m", "hotline.cli"]


@contextlib.asynccontextmanager
async def processes(tmp: Path) -> AsyncIterator[GatewayPair]:
    pair = await GatewayPair.start(tmp)
    try:
        yield pair
    finally:
        await pair.stop()


async def send(stub: operator_pb2_grpc.OperatorServiceAsyncStub, text: str, to: str) -> str:
    response = await stub.Send(
        operator_pb2.SendRequest(envelope=free_text(text, recipient=to)), timeout=10
    )
    return response.message_id


async def security_events(
    stub: operator_pb2_grpc.OperatorServiceAsyncStub, count: int, within: float = 20.0
) -> list[operator_pb2.Event]:
    """The first `count` security events on a Watch from the start of the journal."""
    found: list[operator_pb2.Event] = []
    call = stub.Watch(operator_pb2.WatchRequest(kinds=[SECURITY]))
    try:
        async with asyncio.timeout(within):
            async for response in call:
                found += response.events
                if len(found) >= count:
                    return found
    finally:
        call.cancel()
    return found


async def test_a_second_gateway_on_the_same_journal_is_refused_with_exit_2(
    tmp_path: Path,
) -> None:
    async with processes(tmp_path) as pair:
        assert pair.jp.proc is not None
        second = tmp_path / "jp-second.toml"
        text = pair.jp.config_path.read_text()
        second.write_text(re.sub(r'listen = "[^"]*"', 'listen = "127.0.0.1:0"', text))
        refused = subprocess.run(
            [*HOTLINE, "serve", "--config", str(second)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 2, refused.stderr
        assert f"journal {pair.jp.journal} is in use by pid {pair.jp.proc.pid}" in refused.stderr
        # the first gateway is unharmed: it still journals and delivers
        channel = operator_channel(pair.pki, "JP", pair.jp.port)
        try:
            stub = operator_pb2_grpc.OperatorServiceStub(channel)
            message_id = await send(stub, "still the only gateway here", "TW")
            await wait_state(stub, message_id, DELIVERED)
        finally:
            await channel.close()


async def test_a_journal_deleted_at_runtime_raises_an_alarm_and_the_gateway_exits(
    tmp_path: Path,
) -> None:
    async with processes(tmp_path) as pair:
        channel = operator_channel(pair.pki, "JP", pair.jp.port)
        try:
            stub = operator_pb2_grpc.OperatorServiceStub(channel)
            await wait_state(stub, await send(stub, "before", "TW"), DELIVERED)
            watching = asyncio.create_task(security_events(stub, 1))
            await asyncio.sleep(0.5)  # the Watch is following live commits
            os.unlink(pair.jp.journal)
            [alarm] = await watching
        finally:
            await channel.close()
        assert "JOURNAL LOST" in alarm.detail
        assert "was deleted" in alarm.detail
        proc = pair.jp.proc
        assert proc is not None
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert proc.returncode == 3, pair.jp.log_tail()
        assert "could not be journaled" in pair.jp.log_tail(400)


async def test_a_journal_replaced_by_an_empty_one_is_found_on_reconnect_and_nothing_new_is_sent(
    tmp_path: Path,
) -> None:
    async with processes(tmp_path) as pair:
        jp_channel = operator_channel(pair.pki, "JP", pair.jp.port)
        tw_channel = operator_channel(pair.pki, "TW", pair.tw.port)
        try:
            jp = operator_pb2_grpc.OperatorServiceStub(jp_channel)
            tw = operator_pb2_grpc.OperatorServiceStub(tw_channel)
            ours = [await send(jp, f"JP message {i}", "TW") for i in range(5)]
            theirs = [await send(tw, f"TW message {i}", "JP") for i in range(2)]
            for message_id in ours:
                await wait_state(jp, message_id, DELIVERED)
            for message_id in theirs:
                await wait_state(tw, message_id, DELIVERED)
            await pair.jp.terminate()
            # JP's journal is replaced by an empty one (a wrong restore, a wiped disk)
            for path in pair.jp.journal.parent.glob(pair.jp.journal.name + "*"):
                if not path.name.endswith(".lock"):
                    path.unlink()
            Journal(pair.jp.journal, party="JP").close()
            await pair.jp.restart()
            # outbound: TW's Welcome settles m1..m5 that JP has no record of;
            # inbound: TW's Hello claims our receipts for two batches JP no longer holds
            alarms = await security_events(jp, 2)
            details = sorted(a.detail for a in alarms)
            assert all(d.startswith("DATA LOSS") for d in details), details
            links = {a.link for a in alarms}
            assert links == {
                operator_pb2.LINK_DIRECTION_OUTBOUND,
                operator_pb2.LINK_DIRECTION_INBOUND,
            }
            outbound = next(a for a in alarms if a.link == operator_pb2.LINK_DIRECTION_OUTBOUND)
            assert "holds 5 of our messages" in outbound.detail
            assert "Recovering a lost journal" in outbound.detail
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await send(jp, "after the loss", "TW")
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "sending is held" in (refused.value.details() or "")
        finally:
            await jp_channel.close()
            await tw_channel.close()
    with JournalReader(pair.tw.journal) as reader:
        received = [e.message_id for e in reader.entries([Kind.MESSAGE_IN])]
    assert received == ours  # nothing new reached TW, nothing was sent under sequence 6
    journals = [str(pair.jp.journal), "--peer-journal", str(pair.tw.journal)]
    verified = subprocess.run(
        [*HOTLINE, "journal", "verify", *journals, "--pki", str(pair.pki)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 1, verified.stdout + verified.stderr
    assert "5 message(s) signed by JP that this journal lacks" in verified.stdout


@pytest.mark.must("LINK-28")
async def test_a_journal_that_lost_only_link_history_is_found_by_the_witnessed_checkpoint(
    tmp_path: Path,
) -> None:
    """No message at stake: JP's journal held only link events and checkpoints when it was
    replaced. TW's Welcome carries the latest checkpoint of JP's journal it witnessed, which
    JP's new journal cannot match: JP holds its sending end."""
    async with processes(tmp_path) as pair:
        tw_channel = operator_channel(pair.pki, "TW", pair.tw.port)
        try:
            # the first checkpoint goes out right after the Welcome: wait until TW holds one
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with JournalReader(pair.tw.journal) as reader:
                    if any(e.kind is Kind.CHECKPOINT_PEER for e in reader.entries()):
                        break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("TW witnessed no checkpoint of JP's journal")
            await pair.jp.terminate()
            for path in pair.jp.journal.parent.glob(pair.jp.journal.name + "*"):
                if not path.name.endswith(".lock"):
                    path.unlink()
            Journal(pair.jp.journal, party="JP").close()
            await pair.jp.restart()
            jp_channel = operator_channel(pair.pki, "JP", pair.jp.port)
            try:
                jp = operator_pb2_grpc.OperatorServiceStub(jp_channel)
                alarms = await security_events(jp, 1)
                outbound = [a for a in alarms if a.link == operator_pb2.LINK_DIRECTION_OUTBOUND]
                assert outbound, [a.detail for a in alarms]
                assert "the peer witnessed our journal at" in outbound[0].detail
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await send(jp, "after the loss", "TW")
                assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            finally:
                await jp_channel.close()
        finally:
            await tw_channel.close()


async def test_journal_verify_recomputes_the_index_tables_and_finds_a_reset_journal(
    tmp_path: Path,
) -> None:
    async with running_pair(tmp_path) as pair:
        jp, tw = pair.jp.stub, pair.tw.stub
        sent = [await send(jp, f"message {i}", "TW") for i in range(4)]
        for message_id in sent:
            await wait_state(jp, message_id, DELIVERED)
        acked = sent[0]
        await tw.Acknowledge(
            operator_pb2.AcknowledgeRequest(
                message_id=acked, level=bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER
            ),
            timeout=10,
        )
        await wait_state(jp, acked, ACKNOWLEDGED)
    jp_db, tw_db = tmp_path / "jp.db", tmp_path / "tw.db"
    verify = [*HOTLINE, "journal", "verify", "--pki", str(pair.pki)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*verify, *args], capture_output=True, text=True, timeout=60)

    clean = run(str(jp_db), "--peer-journal", str(tw_db))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "index tables: OK" in clean.stdout
    # an unacknowledged message edited to show ACKNOWLEDGED, in the index only
    edited = tmp_path / "edited.db"
    shutil.copy(jp_db, edited)
    with contextlib.closing(sqlite3.connect(edited)) as conn:
        conn.execute("UPDATE messages SET state = ? WHERE message_id = ?", (ACKNOWLEDGED, sent[2]))
        conn.execute("DELETE FROM settlements WHERE sequence = 4")
        conn.commit()
    bad = run(str(edited))
    assert bad.returncode == 1
    assert (
        f"messages row {sent[2]}: state is DELIVERY_STATE_ACKNOWLEDGED, the chain says "
        "DELIVERY_STATE_DELIVERED" in bad.stdout
    )
    assert f"messages row {sent[2]}: acknowledged by nothing" in bad.stdout
    assert "settlements row JP lane 4 sequence 4 is missing" in bad.stdout
    assert "index tables: BAD" in bad.stdout
    # a journal reset to an empty one, with no checkpoint to compare: TW holds our messages
    reset = tmp_path / "reset.db"
    Journal(reset, party="JP").close()
    lost = run(str(reset), "--peer-journal", str(tw_db))
    assert lost.returncode == 1
    assert "4 message(s) signed by JP that this journal lacks" in lost.stdout
    # the comparison needs no checkpoint: it reads only messages and batch receipts
    found = check_peer_holds(verify_journal(reset, []), tw_db)
    assert "4 message(s) signed by JP that this journal lacks" in found.problem
