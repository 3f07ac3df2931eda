"""The operator API on two real in-process gateways: deadlines, limits, listing, watching."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from hotline.v1 import bodies_pb2, common_pb2, operator_pb2, operator_pb2_grpc
from tests.conftest import JournalAt
from tests.harness import free_text, operator_channel, running_pair, wait_state

SHORT_DEADLINES = {"FLASH": 0.5, "IMMEDIATE": 60, "PRIORITY": 60, "ROUTINE": 60}


async def collect(
    stub: operator_pb2_grpc.OperatorServiceAsyncStub,
    kinds: list[operator_pb2.EventKind.ValueType],
    count: int,
    within: float = 10.0,
) -> list[operator_pb2.Event]:
    events: list[operator_pb2.Event] = []

    async def run() -> None:
        async for response in stub.Watch(operator_pb2.WatchRequest(kinds=kinds)):
            events.extend(response.events)
            if len(events) >= count:
                return

    await asyncio.wait_for(run(), within)
    return events


async def test_an_unanswered_flash_escalates_at_the_sender_and_realerts_at_the_receiver(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(
        tmp_path, journals=journal_at, overrides={"deadlines": SHORT_DEADLINES}
    ) as pair:
        sent = await pair.jp.stub.Send(
            operator_pb2.SendRequest(
                envelope=free_text("FLASH test", precedence=common_pb2.PRECEDENCE_FLASH)
            )
        )
        escalations = await collect(pair.jp.stub, [operator_pb2.EVENT_KIND_ESCALATION], 1)
        realerts = await collect(pair.tw.stub, [operator_pb2.EVENT_KIND_REALERT], 1)
        assert escalations[0].message_id == sent.message_id
        assert realerts[0].message_id == sent.message_id
        assert escalations[0].message.overdue
        status = await pair.jp.stub.GetLinkStatus(operator_pb2.GetLinkStatusRequest())
        assert status.overdue_count == 1
        overdue = await pair.jp.stub.ListMessages(
            operator_pb2.ListMessagesRequest(overdue_only=True)
        )
        assert [m.envelope.message_id for m in overdue.messages] == [sent.message_id]
        # answering late still climbs the ladder, and it is no longer overdue
        await pair.tw.stub.Acknowledge(
            operator_pb2.AcknowledgeRequest(
                message_id=sent.message_id, level=bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER
            )
        )
        await wait_state(pair.jp.stub, sent.message_id, operator_pb2.DELIVERY_STATE_ACKNOWLEDGED)
        status = await pair.jp.stub.GetLinkStatus(operator_pb2.GetLinkStatusRequest())
        assert status.overdue_count == 0


async def test_an_oversized_request_is_refused_with_resource_exhausted(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(
        tmp_path, journals=journal_at, overrides={"max_message_bytes": 1 << 20}
    ) as pair:
        oversized = free_text("x")
        oversized.references.extend(["y" * 100_000] * 11)  # > 1 MiB: refused before parsing
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=oversized), timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        ok = await pair.jp.stub.Send(
            operator_pb2.SendRequest(envelope=free_text("small")), timeout=10
        )
        assert ok.message_id


async def test_an_operator_over_the_rate_limit_is_told_to_back_off(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(
        tmp_path, journals=journal_at, overrides={"operator_rate_per_s": 1.0, "operator_burst": 3}
    ) as pair:
        for _ in range(3):
            await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=free_text("ok")))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=free_text("one too many")))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "faster than 1 messages/s" in (caught.value.details() or "")


async def test_send_is_idempotent_by_message_id_and_refuses_reuse_for_other_content(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(tmp_path, journals=journal_at) as pair:
        env = free_text("once")
        first = await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=env))
        again = await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=env))
        assert again.journal_position == first.journal_position
        other = free_text("different", message_id=env.message_id)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=other))
        assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
        listed = await pair.jp.stub.ListMessages(operator_pb2.ListMessagesRequest())
        assert [m.envelope.message_id for m in listed.messages] == [env.message_id]


async def test_list_pages_newest_first_and_filters(tmp_path: Path, journal_at: JournalAt) -> None:
    async with running_pair(tmp_path, journals=journal_at) as pair:
        ids = []
        for i in range(7):
            precedence = (
                common_pb2.PRECEDENCE_FLASH if i % 3 == 0 else common_pb2.PRECEDENCE_ROUTINE
            )
            sent = await pair.jp.stub.Send(
                operator_pb2.SendRequest(envelope=free_text(f"m{i}", precedence=precedence))
            )
            ids.append(sent.message_id)
        seen: list[str] = []
        token = ""
        while True:
            page = await pair.jp.stub.ListMessages(
                operator_pb2.ListMessagesRequest(page_size=3, page_token=token)
            )
            seen += [m.envelope.message_id for m in page.messages]
            token = page.next_page_token
            if not token:
                break
        assert seen == list(reversed(ids))
        flash = await pair.jp.stub.ListMessages(
            operator_pb2.ListMessagesRequest(precedences=[common_pb2.PRECEDENCE_FLASH])
        )
        assert len(flash.messages) == 3
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await pair.jp.stub.ListMessages(
                operator_pb2.ListMessagesRequest(
                    page_size=3, page_token=token or "bm90LWEtdG9rZW4="
                )
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_watch_replays_from_a_cursor_then_follows_live(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(tmp_path, journals=journal_at) as pair:
        first = await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=free_text("one")))
        events = await collect(pair.jp.stub, [operator_pb2.EVENT_KIND_MESSAGE_SENT], 1)
        cursor = events[0].cursor
        assert events[0].message_id == first.message_id

        async def later() -> None:
            await asyncio.sleep(0.3)
            await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=free_text("two")))

        sender = asyncio.create_task(later())
        got: list[operator_pb2.Event] = []
        async for response in pair.jp.stub.Watch(
            operator_pb2.WatchRequest(
                after_cursor=cursor, kinds=[operator_pb2.EVENT_KIND_MESSAGE_SENT]
            )
        ):
            got.extend(response.events)
            break
        await sender
        assert got[0].cursor > cursor
        assert got[0].message_id != first.message_id
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in pair.jp.stub.Watch(operator_pb2.WatchRequest(after_cursor=10**9)):
                pass
        assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_watch_by_originator_streams_only_those_operators_messages(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as pair:
        other = operator_channel(pair.pki, "JP", pair.jp.port, "watch-2")
        try:
            mine = await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=free_text("mine")))
            theirs = await operator_pb2_grpc.OperatorServiceStub(other).Send(
                operator_pb2.SendRequest(envelope=free_text("theirs"))
            )
            ours = {mine.message_id, theirs.message_id}
            for message_id in ours:
                await wait_state(pair.jp.stub, message_id, operator_pb2.DELIVERY_STATE_DELIVERED)
            watch_1 = "spiffe://jp.hotline/operator/watch-1"
            received = [operator_pb2.EVENT_KIND_MESSAGE_RECEIVED]
            delivered = [operator_pb2.EVENT_KIND_MESSAGE_DELIVERED]
            # unfiltered, both messages; filtered by watch-1, only watch-1's, at either party
            assert {e.message_id for e in await collect(pair.tw.stub, received, 2)} == ours
            for stub, kinds in ((pair.tw.stub, received), (pair.jp.stub, delivered)):
                got: list[operator_pb2.Event] = []
                async for response in stub.Watch(
                    operator_pb2.WatchRequest(kinds=kinds, originators=[watch_1])
                ):
                    got.extend(response.events)  # (replayed history: one commit per response)
                    if any(e.message_id == mine.message_id for e in got):
                        break
                assert {e.message_id for e in got} == {mine.message_id}
                assert all(e.message.envelope.originator == watch_1 for e in got)
            # events about no message (link changes, checkpoints) are not filtered away
            links: list[operator_pb2.Event] = []
            async for response in pair.jp.stub.Watch(
                operator_pb2.WatchRequest(
                    kinds=[operator_pb2.EVENT_KIND_LINK_UP],
                    originators=["spiffe://tw.hotline/operator/nobody"],
                )
            ):
                links.extend(response.events)
                break
            assert links[0].kind == operator_pb2.EVENT_KIND_LINK_UP
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in pair.jp.stub.Watch(
                    operator_pb2.WatchRequest(originators=["watch-1"])
                ):
                    pass
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "originators" in (caught.value.details() or "")
        finally:
            await other.close()
