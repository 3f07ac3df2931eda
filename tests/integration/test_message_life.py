"""A message's life on two real gateways: the acknowledgement ladder keeps its history and the
latest acknowledgement stands at both ends; UPDATE and CANCEL follow the rules of
`hotline.lifecycle` at `Send`, `SendBatch` and `SendStream`; expiry is refused at `Send` and
flagged, not escalated, once it passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format

from certs.pki import PartyPaths, load_certificate
from client.cli_common import event_line, record_line, record_text
from hotline.journal_verify import check_index, verify_journal
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2, operator_pb2_grpc
from tests.conftest import JournalAt
from tests.harness import Pair, free_text, running_pair, wait_for, wait_state

EXAMPLES = Path(__file__).resolve().parents[2] / "proto" / "examples" / "valid"
ROGER = bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER
WILCO = bodies_pb2.ACKNOWLEDGEMENT_LEVEL_WILCO
UNABLE = bodies_pb2.ACKNOWLEDGEMENT_LEVEL_UNABLE
UPDATE = common_pb2.ACTION_UPDATE
CANCEL = common_pb2.ACTION_CANCEL
ACKNOWLEDGED_EVENT = operator_pb2.EVENT_KIND_MESSAGE_ACKNOWLEDGED


async def record_of(
    stub: operator_pb2_grpc.OperatorServiceAsyncStub, message_id: str
) -> operator_pb2.MessageRecord:
    response = await stub.GetMessage(operator_pb2.GetMessageRequest(message_id=message_id))
    return response.message


async def watch_until(
    stub: operator_pb2_grpc.OperatorServiceAsyncStub,
    kinds: list[operator_pb2.EventKind.ValueType],
    message_id: str,
    count: int,
    *,
    after: int = 0,
) -> list[operator_pb2.Event]:
    """The first `count` events of these kinds about `message_id`, from cursor `after`."""
    events: list[operator_pb2.Event] = []

    async def run() -> None:
        request = operator_pb2.WatchRequest(after_cursor=after, kinds=kinds)
        async for response in stub.Watch(request):
            events.extend(e for e in response.events if e.message_id == message_id)
            if len(events) >= count:
                return

    await asyncio.wait_for(run(), 15)
    return events[:count]


def assert_index_agrees_with_the_chain(tmp_path: Path, journal_at: JournalAt) -> None:
    """`hotline journal verify` recomputes both journals' index tables (the chain, the
    acknowledgements, expiry) from their entries and finds every row as the store wrote it."""
    pki = tmp_path / "pki"
    cas = [load_certificate(PartyPaths.of(pki, party).ca_cert) for party in ("JP", "TW")]
    for name in ("jp.db", "tw.db"):
        report = check_index(verify_journal(journal_at(name), cas))
        assert report.ok, report
        assert report.index_problems == [], report.index_problems


def flat(text: str) -> str:
    """`hotline show` text with its column alignment collapsed to single spaces."""
    return " ".join(text.split())


def levels(record: operator_pb2.MessageRecord) -> list[int]:
    return [a.acknowledgement.level for a in record.acknowledgements]


def unable_reason(text: str) -> common_pb2.LocalizedText:
    reason = common_pb2.LocalizedText()
    reason.variants.add(language="en", text=text, kind=common_pb2.TRANSLATION_KIND_ORIGINAL)
    return reason


# --------------------------------------------------------------- the acknowledgement ladder


async def test_roger_then_wilco_then_unable_stands_as_unable_with_its_history_at_both_ends(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(tmp_path, journals=journal_at) as pair:
        sent = await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=free_text("assist?")))
        message_id = sent.message_id
        await wait_state(pair.jp.stub, message_id, operator_pb2.DELIVERY_STATE_DELIVERED)
        # JP's watch floor, live from here on.
        live = asyncio.ensure_future(
            watch_until(pair.jp.stub, [ACKNOWLEDGED_EVENT], message_id, 3, after=0)
        )
        answers = [
            operator_pb2.AcknowledgeRequest(message_id=message_id, level=ROGER),
            operator_pb2.AcknowledgeRequest(message_id=message_id, level=WILCO),
            operator_pb2.AcknowledgeRequest(
                message_id=message_id, level=UNABLE, reason=unable_reason("vessel diverted")
            ),
        ]
        acks = [(await pair.tw.stub.Acknowledge(a)).ack_message_id for a in answers]

        async def jp_level() -> int:
            return (await record_of(pair.jp.stub, message_id)).acknowledgement.level

        deadline = time.monotonic() + 15
        while await jp_level() != UNABLE:  # JP printed ROGER for ever before
            assert time.monotonic() < deadline, "JP never saw the latest acknowledgement"
            await asyncio.sleep(0.05)
        for side in (pair.jp, pair.tw):
            record = await record_of(side.stub, message_id)
            assert record.state == operator_pb2.DELIVERY_STATE_ACKNOWLEDGED
            assert record.acknowledgement.level == UNABLE
            assert record.acknowledgement.reason.variants[0].text == "vessel diverted"
            assert record.acknowledgement_message_id == acks[-1]
            assert levels(record) == [ROGER, WILCO, UNABLE]
            assert [a.acknowledgement_message_id for a in record.acknowledgements] == acks
            assert record.acknowledge_time == record.acknowledgements[-1].acknowledge_time
            shown = flat(record_text(record))
            assert "acknowledged: UNABLE by spiffe://tw.hotline/operator/watch-1" in shown
            assert "reason: vessel diverted" in shown
            assert "ack history: ROGER " in shown
            assert " -> WILCO " in shown
            assert " -> UNABLE " in shown
            assert "state: ACKNOWLEDGED UNABLE" in shown
            assert " UNABLE " in record_line(record).plain()
            # `history` lists it by its latest level too
            page = await side.stub.ListMessages(operator_pb2.ListMessagesRequest())
            [listed] = [m for m in page.messages if m.envelope.message_id == message_id]
            assert listed.acknowledgement.level == UNABLE
            assert levels(listed) == [ROGER, WILCO, UNABLE]

        # The watch shows each answer as it came: live, and replayed from the journal, each
        # event with the message as it stood right after it.
        replayed = await watch_until(pair.jp.stub, [ACKNOWLEDGED_EVENT], message_id, 3)
        for events in (await asyncio.wait_for(live, 15), replayed):
            assert [e.message.acknowledgement.level for e in events] == [ROGER, WILCO, UNABLE]
            assert [levels(e.message) for e in events] == [
                [ROGER],
                [ROGER, WILCO],
                [ROGER, WILCO, UNABLE],
            ]
            lines = [event_line(e, party="JP").plain() for e in events]
            assert "ROGER by" in lines[0]
            assert "WILCO by" in lines[1]
            assert "(was ROGER)" in lines[1]
            assert "UNABLE by" in lines[2]
            assert "vessel diverted (was WILCO)" in lines[2]
        # TW's own record of its answers, replayed
        tw_events = await watch_until(pair.tw.stub, [ACKNOWLEDGED_EVENT], message_id, 3)
        assert [e.message.acknowledgement.level for e in tw_events] == [ROGER, WILCO, UNABLE]
    assert_index_agrees_with_the_chain(tmp_path, journal_at)


async def test_a_restarted_sender_still_shows_the_latest_acknowledgement(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    """The history is read back from the journal, not only from the writer's cache."""
    async with running_pair(tmp_path, journals=journal_at) as pair:
        sent = await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=free_text("x")))
        await wait_state(pair.jp.stub, sent.message_id, operator_pb2.DELIVERY_STATE_DELIVERED)
        for level in (ROGER, WILCO):
            await pair.tw.stub.Acknowledge(
                operator_pb2.AcknowledgeRequest(message_id=sent.message_id, level=level)
            )
        await wait_for(
            lambda: (
                (r := pair.jp.gateway.store.record(sent.message_id)) is not None
                and r.acknowledgement.level == WILCO
            ),
            what="WILCO at JP",
        )
    async with running_pair(tmp_path, journals=journal_at, pki=tmp_path / "pki") as again:
        record = await record_of(again.jp.stub, sent.message_id)
        assert record.acknowledgement.level == WILCO
        assert levels(record) == [ROGER, WILCO]


# --------------------------------------------------------------- UPDATE and CANCEL at Send


def example(name: str) -> envelope_pb2.Envelope:
    """A golden example's body in a fresh JP->TW envelope (for a body of another type)."""
    envelope = envelope_pb2.Envelope()
    text_format.Parse((EXAMPLES / f"{name}.txtpb").read_text(encoding="utf-8"), envelope)
    fresh = free_text("placeholder")
    member = envelope.WhichOneof("body")
    assert member is not None
    getattr(fresh, member).CopyFrom(getattr(envelope, member))
    return fresh


def referring(
    action: common_pb2.Action.ValueType, reference: str, body: envelope_pb2.Envelope | None = None
) -> envelope_pb2.Envelope:
    envelope = body if body is not None else free_text(f"{action} of {reference}")
    envelope.action = action
    envelope.references[:] = [reference]
    return envelope


async def refused(
    stub: operator_pb2_grpc.OperatorServiceAsyncStub, envelope: envelope_pb2.Envelope
) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Send(operator_pb2.SendRequest(envelope=envelope))
    return caught.value.code(), caught.value.details() or ""


async def send(pair: Pair, envelope: envelope_pb2.Envelope) -> str:
    return (await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=envelope))).message_id


async def test_send_applies_every_rule_of_update_and_cancel(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    failed = grpc.StatusCode.FAILED_PRECONDITION
    async with running_pair(tmp_path, journals=journal_at) as pair:
        first = await send(pair, free_text("original"))

        # An UPDATE keeps the body type; a CANCEL restates it or gives a reason in free text.
        code, detail = await refused(pair.jp.stub, referring(UPDATE, first, example("sar_request")))
        assert code is failed
        assert "is a free_text; an UPDATE keeps the body type, got sar_request" in detail
        assert "(UPDATE rule update-body-type)" in detail
        assert detail.startswith("references[0]:")
        call = example("call_request")
        code, detail = await refused(pair.jp.stub, referring(CANCEL, first, call))
        assert (code, "(CANCEL rule cancel-body-type)" in detail) == (failed, True)

        # A reference to an unknown id stays refused, as NOT_FOUND.
        code, detail = await refused(pair.jp.stub, referring(UPDATE, free_text().message_id))
        assert code is grpc.StatusCode.NOT_FOUND
        assert "no message" in detail

        update = await send(pair, referring(UPDATE, first))
        update_of_update = await send(pair, referring(UPDATE, update))
        cancel = await send(pair, referring(CANCEL, first))

        # Nothing follows a CANCEL: no UPDATE, no second CANCEL; a cancellation is final.
        code, detail = await refused(pair.jp.stub, referring(UPDATE, first))
        assert (code, f"was cancelled by {cancel}" in detail) == (failed, True)
        assert "(UPDATE rule update-after-cancel)" in detail
        code, detail = await refused(pair.jp.stub, referring(CANCEL, first))
        assert (code, "(CANCEL rule cancel-once)" in detail) == (failed, True)
        code, detail = await refused(pair.jp.stub, referring(UPDATE, cancel))
        assert (code, "(UPDATE rule reference-cancellation)" in detail) == (failed, True)

        # Only our own messages, and not acknowledgements.
        theirs = await pair.tw.stub.Send(
            operator_pb2.SendRequest(envelope=free_text("from TW", recipient="JP"))
        )
        await wait_state(pair.tw.stub, theirs.message_id, operator_pb2.DELIVERY_STATE_DELIVERED)
        code, detail = await refused(pair.jp.stub, referring(UPDATE, theirs.message_id))
        assert (code, "(UPDATE rule reference-other-party)" in detail) == (failed, True)
        ack = await pair.jp.stub.Acknowledge(
            operator_pb2.AcknowledgeRequest(message_id=theirs.message_id, level=ROGER)
        )
        code, detail = await refused(pair.jp.stub, referring(CANCEL, ack.ack_message_id))
        assert (code, "(CANCEL rule reference-acknowledgement)" in detail) == (failed, True)

        # Both ends show where each message stands in its chain.
        await wait_state(pair.jp.stub, cancel, operator_pb2.DELIVERY_STATE_DELIVERED)
        for side in (pair.jp, pair.tw):
            original = await record_of(side.stub, first)
            assert original.updated_by_message_id == update
            assert original.cancelled_by_message_id == cancel
            shown = flat(record_text(original))
            assert f"cancelled by: {cancel}" in shown
            assert f"updated by: {update} (supersedes this content)" in shown
            assert "CANCELLED" in record_line(original).plain()
            assert (await record_of(side.stub, update)).updated_by_message_id == update_of_update
            assert f"action: CANCEL of {first}" in flat(
                record_text(await record_of(side.stub, cancel))
            )
    assert_index_agrees_with_the_chain(tmp_path, journal_at)


async def test_send_batch_and_send_stream_apply_the_rules_within_one_request(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(tmp_path, journals=journal_at) as pair:
        new = free_text("new in the batch")
        update = referring(UPDATE, new.message_id)
        cancel = referring(CANCEL, new.message_id)
        again = referring(CANCEL, new.message_id)
        late = referring(UPDATE, new.message_id)
        response = await pair.jp.stub.SendBatch(
            operator_pb2.SendBatchRequest(envelopes=[new, update, cancel, again, late])
        )
        outcomes = [r.WhichOneof("outcome") for r in response.results]
        assert outcomes == ["sent", "sent", "sent", "error", "error"]
        assert response.results[3].error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert "cancel-once" in response.results[3].error.message
        assert "update-after-cancel" in response.results[4].error.message
        # The index survives the batch: a later call sees the cancellation too.
        _, detail = await refused(pair.jp.stub, referring(CANCEL, new.message_id))
        assert "cancel-once" in detail

        stream_new = free_text("new on the stream")

        async def requests() -> AsyncIterator[operator_pb2.SendStreamRequest]:
            yield operator_pb2.SendStreamRequest(envelopes=[stream_new])
            yield operator_pb2.SendStreamRequest(
                envelopes=[referring(UPDATE, stream_new.message_id, example("sar_request"))]
            )

        results = [r async for r in pair.jp.stub.SendStream(requests())]
        assert results[0].results[0].WhichOneof("outcome") == "sent"
        error = results[1].results[0].error
        assert error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert "update-body-type" in error.message
        await wait_state(pair.jp.stub, cancel.message_id, operator_pb2.DELIVERY_STATE_DELIVERED)
        received = await record_of(pair.tw.stub, new.message_id)
        assert received.cancelled_by_message_id == cancel.message_id
        assert received.updated_by_message_id == update.message_id


# --------------------------------------------------------------------------------- expiry


async def test_send_refuses_an_envelope_already_expired(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(tmp_path, journals=journal_at) as pair:
        stale = free_text("too late")
        stale.create_time.FromNanoseconds(time.time_ns() - 120 * 10**9)
        stale.expire_time.FromNanoseconds(time.time_ns() - 60 * 10**9)
        code, detail = await refused(pair.jp.stub, stale)
        assert code is grpc.StatusCode.INVALID_ARGUMENT
        assert "envelope.expire_time: already past" in detail
        page = await pair.jp.stub.ListMessages(operator_pb2.ListMessagesRequest())
        assert list(page.messages) == []


async def test_a_message_that_expires_unanswered_stops_escalating_at_both_ends(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    short = {"FLASH": 0.3, "IMMEDIATE": 60, "PRIORITY": 60, "ROUTINE": 60}
    expired_kind = operator_pb2.EVENT_KIND_MESSAGE_EXPIRED
    async with running_pair(tmp_path, journals=journal_at, overrides={"deadlines": short}) as pair:
        envelope = free_text("brief window", precedence=common_pb2.PRECEDENCE_FLASH)
        envelope.expire_time.FromNanoseconds(time.time_ns() + 3 * 10**9)
        sent = await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=envelope))
        # Overdue first (escalated at JP, re-alerted at TW), then expired at both ends.
        escalation, expired_jp = await watch_until(
            pair.jp.stub, [operator_pb2.EVENT_KIND_ESCALATION, expired_kind], sent.message_id, 2
        )
        realert, expired_tw = await watch_until(
            pair.tw.stub, [operator_pb2.EVENT_KIND_REALERT, expired_kind], sent.message_id, 2
        )
        assert escalation.kind == operator_pb2.EVENT_KIND_ESCALATION
        assert realert.kind == operator_pb2.EVENT_KIND_REALERT
        for event in (expired_jp, expired_tw):
            assert event.kind == expired_kind
            assert event.message.expired
            assert not event.message.overdue
            assert (
                "EXPIRED unanswered: no more escalations or re-alerts" in event_line(event).plain()
            )
        for side in (pair.jp, pair.tw):
            status = await side.stub.GetLinkStatus(operator_pb2.GetLinkStatusRequest())
            assert status.overdue_count == 0
            overdue = await side.stub.ListMessages(
                operator_pb2.ListMessagesRequest(overdue_only=True)
            )
            assert list(overdue.messages) == []
            record = await record_of(side.stub, sent.message_id)
            assert record.expired
            assert not record.overdue
            shown = flat(record_text(record))
            assert "EXPIRED: no more escalations or re-alerts" in shown
            assert "OVERDUE" not in shown
            assert "EXPIRED" in record_line(record).plain()
        # Still acknowledged if the watch answers late: the ladder climbs on.
        await pair.tw.stub.Acknowledge(
            operator_pb2.AcknowledgeRequest(message_id=sent.message_id, level=ROGER)
        )
        await wait_state(pair.jp.stub, sent.message_id, operator_pb2.DELIVERY_STATE_ACKNOWLEDGED)
    assert_index_agrees_with_the_chain(tmp_path, journal_at)
