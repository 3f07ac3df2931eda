"""Batched submission (`SendBatch`, `OperatorClient.send_many`), the outbox bound, request
bounds, and Watch events batched per commit, on two real gateways over real mTLS."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from client import OperatorClient
from client.errors import (
    AlreadyExists,
    ClientError,
    InvalidMessage,
    PermissionDenied,
    RateLimited,
)
from hotline.v1 import common_pb2, envelope_pb2, operator_pb2
from server.gateway import Gateway
from server.journal import Kind
from tests.conftest import JournalAt
from tests.harness import config, free_text, running_pair, wait_for, wait_state

FLASH = common_pb2.PRECEDENCE_FLASH
ROUTINE = common_pb2.PRECEDENCE_ROUTINE


def batch(*envelopes: envelope_pb2.Envelope) -> operator_pb2.SendBatchRequest:
    return operator_pb2.SendBatchRequest(envelopes=list(envelopes))


def message_in_order(gateway: Gateway) -> list[str]:
    return [
        e.message_id for e in gateway.journal.entries(limit=100_000) if e.kind is Kind.MESSAGE_IN
    ]


async def test_a_batch_journals_the_good_and_answers_each_bad_one_as_send_would(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(tmp_path, journals=journal_at) as pair:
        good = free_text("good")
        invalid = free_text("bad")
        invalid.language = "not a language"
        impostor = free_text("impostor")
        impostor.originator = "spiffe://jp.hotline/operator/someone-else"
        wrong_peer = free_text("wrong recipient", recipient="JP")
        response = await pair.jp.stub.SendBatch(batch(good, invalid, impostor, wrong_peer))
        outcomes = [r.WhichOneof("outcome") for r in response.results]
        assert outcomes == ["sent", "error", "error", "error"]
        codes = [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED]
        assert response.results[1].error.code == codes[0].value[0]
        assert "envelope.language" in response.results[1].error.message
        assert response.results[2].error.code == codes[1].value[0]
        assert response.results[3].error.code == codes[0].value[0]
        assert response.results[0].sent.message_id == good.message_id
        await wait_state(pair.jp.stub, good.message_id, operator_pb2.DELIVERY_STATE_DELIVERED)
        for refused in (invalid, impostor, wrong_peer):
            assert pair.jp.gateway.store.record(refused.message_id) is None
        assert message_in_order(pair.tw.gateway) == [good.message_id]


async def test_retrying_a_whole_batch_is_idempotent(tmp_path: Path, journal_at: JournalAt) -> None:
    async with running_pair(tmp_path, journals=journal_at) as pair:
        envelopes = [free_text(f"m{i}") for i in range(5)]
        first = await pair.jp.stub.SendBatch(batch(*envelopes))
        again = await pair.jp.stub.SendBatch(batch(*envelopes))
        positions = [r.sent.journal_position for r in first.results]
        assert [r.sent.journal_position for r in again.results] == positions
        assert len(set(positions)) == 5
        # a different envelope under a used id is refused, the rest of the batch goes on
        clash = free_text("something else", message_id=envelopes[0].message_id)
        mixed = await pair.jp.stub.SendBatch(batch(clash, free_text("new")))
        assert mixed.results[0].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
        assert mixed.results[1].WhichOneof("outcome") == "sent"
        for envelope in envelopes:
            await wait_state(
                pair.jp.stub, envelope.message_id, operator_pb2.DELIVERY_STATE_DELIVERED
            )
        outbound = [
            e for e in pair.jp.gateway.journal.entries(limit=1000) if e.kind is Kind.MESSAGE_OUT
        ]
        assert len(outbound) == 6  # five, once each, and "new"


@pytest.mark.must("LINK-12")
async def test_within_a_precedence_a_batch_travels_in_request_order(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(tmp_path, journals=journal_at) as pair:
        client = OperatorClient.from_pki(pair.pki, "JP", address=f"127.0.0.1:{pair.jp.port}")
        envelopes = [free_text(f"r{i}", precedence=ROUTINE) for i in range(300)]
        try:
            results = await client.send_many(envelopes, batch_size=64)
        finally:
            await client.close()
        assert all(not isinstance(r, ClientError) for r in results)
        ids = [e.message_id for e in envelopes]
        await wait_for(lambda: len(message_in_order(pair.tw.gateway)) == 300, 30, "delivery")
        assert message_in_order(pair.tw.gateway) == ids


async def test_send_many_reports_each_refusal_as_the_error_send_would_raise(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(tmp_path, journals=journal_at) as pair:
        client = OperatorClient.from_pki(pair.pki, "JP", address=f"127.0.0.1:{pair.jp.port}")
        good = free_text("good")
        invalid = free_text("bad")
        invalid.handling.classification = common_pb2.CLASSIFICATION_UNSPECIFIED
        impostor = free_text("impostor")
        impostor.sender_party = "TW"
        twice = free_text("twice")
        clash = free_text("other text", message_id=twice.message_id)
        try:
            results = await client.send_many([good, invalid, impostor, twice, clash])
        finally:
            await client.close()
        assert not isinstance(results[0], ClientError)
        assert isinstance(results[1], InvalidMessage)
        assert isinstance(results[2], PermissionDenied)
        assert not isinstance(results[3], ClientError)
        assert isinstance(results[4], AlreadyExists)
        assert "twice in this batch" in str(results[4])


async def test_a_full_outbox_refuses_new_sends_and_loses_nothing_accepted(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(tmp_path, journals=journal_at, overrides={"outbox_limit": 5}) as pair:
        tw_config = pair.tw.gateway.config
        await pair.tw.gateway.stop(0.2)  # the peer is away: the outbox fills
        await wait_for(lambda: not pair.jp.gateway.sender.status.up, 10, "the link down")
        accepted = [free_text(f"a{i}") for i in range(5)]
        response = await pair.jp.stub.SendBatch(batch(*accepted))
        assert all(r.WhichOneof("outcome") == "sent" for r in response.results)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=free_text("one more")))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "outbox full: 5 messages await delivery to TW (limit 5)" in (
            caught.value.details() or ""
        )
        with pytest.raises(grpc.aio.AioRpcError) as whole:
            await pair.jp.stub.SendBatch(batch(free_text("b1"), free_text("b2")))
        assert whole.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # the peer returns: everything accepted is delivered, and the outbox takes more
        tw = Gateway(tw_config)
        await tw.start()
        try:
            for envelope in accepted:
                await wait_state(
                    pair.jp.stub, envelope.message_id, operator_pb2.DELIVERY_STATE_DELIVERED
                )
            more = await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=free_text("after")))
            assert more.message_id
        finally:
            await tw.stop(0.2)


async def test_oversized_references_and_filters_get_bounded_invalid_argument(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(tmp_path, journals=journal_at) as pair:
        envelope = free_text("many references")
        envelope.references.extend([envelope.message_id] * 26_000)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=envelope), timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details = caught.value.details() or ""
        assert "envelope.references: at most 16 items, got 26000" in details
        assert len(details) < 1000
        request = operator_pb2.ListMessagesRequest(
            precedences=[common_pb2.PRECEDENCE_ROUTINE] * 200_000
        )
        with pytest.raises(grpc.aio.AioRpcError) as listed:
            await pair.jp.stub.ListMessages(request, timeout=10)
        assert listed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(listed.value.details() or "") < 5000


async def test_a_watch_resumed_from_any_cursor_sees_what_it_would_have_seen_live(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(tmp_path, journals=journal_at) as pair:
        live: list[operator_pb2.Event] = []
        commits: list[int] = []

        async def watch() -> None:
            async for response in pair.jp.stub.Watch(operator_pb2.WatchRequest()):
                commits.append(len(response.events))
                live.extend(response.events)

        watcher = asyncio.create_task(watch())
        try:
            envelopes = [free_text(f"w{i}") for i in range(40)]
            await pair.jp.stub.SendBatch(batch(*envelopes))
            for envelope in envelopes:
                await wait_state(
                    pair.jp.stub, envelope.message_id, operator_pb2.DELIVERY_STATE_DELIVERED
                )
            head = pair.jp.gateway.journal.head[0]
            await wait_for(lambda: live and live[-1].cursor >= head - 5, 10, "live events")
            await asyncio.sleep(0.3)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        assert max(commits) > 1  # events arrive batched per commit
        cursors = [e.cursor for e in live]
        assert cursors == sorted(cursors)
        assert len(set(cursors)) == len(cursors)
        for start in (0, cursors[0], cursors[len(cursors) // 2], cursors[-2]):
            replayed: list[operator_pb2.Event] = []
            call = pair.jp.stub.Watch(operator_pb2.WatchRequest(after_cursor=start))
            try:
                while not replayed or replayed[-1].cursor < cursors[-1]:
                    response = await asyncio.wait_for(call.read(), 10)
                    assert isinstance(response, operator_pb2.WatchResponse)
                    replayed.extend(response.events)
            finally:
                call.cancel()
            expected = [e for e in live if e.cursor > start]
            got = [e for e in replayed if e.cursor <= cursors[-1]]
            assert [(e.cursor, e.kind, e.message_id, e.detail) for e in got] == [
                (e.cursor, e.kind, e.message_id, e.detail) for e in expected
            ]
            # the records agree except for what changed since (later states are newer)
            for a, b in zip(got, expected, strict=True):
                assert a.message.envelope == b.message.envelope


async def test_a_flash_in_a_batch_of_routine_goes_first(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    """Lanes: a FLASH journaled after ROUTINE of the same batch is delivered before them."""
    async with running_pair(tmp_path, journals=journal_at) as pair:
        await pair.tw.gateway.stop(0.2)
        await wait_for(lambda: not pair.jp.gateway.sender.status.up, 10, "the link down")
        routine = [free_text(f"r{i}") for i in range(100)]
        flash = free_text("flash", precedence=FLASH)
        await pair.jp.stub.SendBatch(batch(*routine, flash))
        tw = Gateway(pair.tw.gateway.config)
        await tw.start()
        try:
            await wait_for(lambda: len(message_in_order(tw)) == 101, 30, "delivery")
            assert message_in_order(tw)[0] == flash.message_id
        finally:
            await tw.stop(0.2)


_ = config


async def test_a_send_stream_answers_each_request_in_order_and_survives_refusals(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(tmp_path, journals=journal_at, overrides={"outbox_limit": 50}) as pair:
        client = OperatorClient.from_pki(pair.pki, "JP", address=f"127.0.0.1:{pair.jp.port}")
        try:
            async with client.stream() as stream:
                one = await stream.send(free_text("one at a time"))
                concurrent = [free_text(f"c{i}") for i in range(20)]
                results = await asyncio.gather(*(stream.send(e) for e in concurrent))
                assert [r.message_id for r in results] == [e.message_id for e in concurrent]
                bad = free_text("bad")
                bad.language = "not a language"
                with pytest.raises(InvalidMessage):
                    await stream.send(bad)
                # a refusal of a whole request (outbox full) answers each envelope; the
                # stream goes on
                await pair.tw.gateway.stop(0.2)
                await wait_for(lambda: not pair.jp.gateway.sender.status.up, 10, "link down")
                filled = await stream.send_many([free_text(f"f{i}") for i in range(60)])
                assert all(isinstance(r, RateLimited) for r in filled)
                assert "outbox full" in str(filled[0])
                after = await stream.send_many([free_text("still open")])
                assert not isinstance(after[0], ClientError)
            await wait_state(pair.jp.stub, one.message_id, operator_pb2.DELIVERY_STATE_JOURNALED)
        finally:
            await client.close()
