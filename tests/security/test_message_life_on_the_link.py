"""The receiver applies the rules of a message's life to every delivery (check 7).

A sender that breaks them (here a fake TW gateway with TW's TLS identity and signing key, which
the real gateway's `Send` would have stopped) gets REJECTION_REASON_INVALID_MESSAGE in a signed
batch receipt, naming the rule on `references[0]`; the rejection is journaled and nothing of the
delivery is. The rules hold within one batch and across a restart (the index is loaded from the
journal). An envelope already past its expiry is not refused: it is journaled, flagged expired,
and never re-alerted.
"""

from __future__ import annotations

import time
from pathlib import Path

from google.protobuf import text_format

from hotline import link
from hotline.signing import PAYLOAD_TYPE_ENVELOPE
from hotline.v1 import common_pb2, envelope_pb2, operator_pb2, operator_pb2_grpc
from server.journal import Kind
from tests.harness import free_text, wait_for
from tests.security.conftest import (
    FakePeer,
    Lone,
    fake_tw_peer,
    lone_gateway,
    operator_of,
    signer_of,
    signing_der,
    tw_envelope,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "proto" / "examples" / "valid"
INVALID_MESSAGE = link.RejectReason.INVALID_MESSAGE
UPDATE = common_pb2.ACTION_UPDATE
CANCEL = common_pb2.ACTION_CANCEL


def signed(pki: Path, envelope: envelope_pb2.Envelope) -> common_pb2.SignedPayload:
    return signer_of(pki, "TW").sign(PAYLOAD_TYPE_ENVELOPE, envelope.SerializeToString())


def tw(
    action: common_pb2.Action.ValueType = common_pb2.ACTION_NEW,
    reference: str = "",
    body: str = "",
) -> envelope_pb2.Envelope:
    """A TW->JP envelope (free text, or the golden example's `body`), NEW or referring."""
    envelope = tw_envelope(f"{action} {reference}")
    if body:
        example = envelope_pb2.Envelope()
        text_format.Parse((EXAMPLES / f"{body}.txtpb").read_text(encoding="utf-8"), example)
        member = example.WhichOneof("body")
        assert member is not None
        getattr(envelope, member).CopyFrom(getattr(example, member))
    envelope.action = action
    if reference:
        envelope.references[:] = [reference]
    return envelope


def refusal(receipt: link.BatchReceipt, sequence: int) -> link.RejectionItem:
    [item] = [r for r in receipt.rejections if r.sequence == sequence]
    return item


def assert_life_rejection(receipt: link.BatchReceipt, sequence: int, rule: str) -> None:
    item = refusal(receipt, sequence)
    assert item.reason is INVALID_MESSAGE, item
    assert f"rule {rule})" in item.detail, item.detail
    [(field, description)] = item.violations
    assert field == "references[0]"
    assert rule in description


class Sender:
    """The fake TW gateway's side of one stream: its next sequence, and what JP received."""

    def __init__(self, jp: Lone, peer: FakePeer, next_sequence: int = 1) -> None:
        self.jp = jp
        self.peer = peer
        self.sequence = next_sequence

    async def batch(self, *envelopes: envelope_pb2.Envelope) -> tuple[int, link.BatchReceipt]:
        first = self.sequence
        receipt = await self.peer.deliver_batch(first, [signed(self.jp.pki, e) for e in envelopes])
        self.sequence += len(envelopes)
        return first, receipt

    async def accepted(self, envelope: envelope_pb2.Envelope) -> None:
        _, receipt = await self.batch(envelope)
        assert receipt.rejections == (), receipt

    async def refused(self, envelope: envelope_pb2.Envelope, rule: str) -> None:
        sequence, receipt = await self.batch(envelope)
        assert_life_rejection(receipt, sequence, rule)
        assert self.jp.gateway.store.record(envelope.message_id) is None


def journaled_in(jp: Lone) -> set[str]:
    return {e.message_id for e in jp.entries(Kind.MESSAGE_IN)}


async def test_every_rule_of_update_and_cancel_is_applied_to_deliveries(jp: Lone) -> None:
    # One message of JP's own, to refer to wrongly.
    operator = operator_of(jp.pki, "JP", "watch-1", jp.port, "JP")
    try:
        stub = operator_pb2_grpc.OperatorServiceStub(operator)
        ours = await stub.Send(operator_pb2.SendRequest(envelope=free_text("JP's own")))
    finally:
        await operator.close()
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        sender = Sender(jp, peer)
        first = tw()
        await sender.accepted(first)
        reference = first.message_id

        await sender.refused(tw(UPDATE, reference, body="sar_request"), "update-body-type")
        await sender.refused(tw(CANCEL, reference, body="call_request"), "cancel-body-type")
        await sender.refused(tw(UPDATE, free_text().message_id), "reference-unknown")
        await sender.refused(tw(UPDATE, ours.message_id), "reference-other-party")

        update = tw(UPDATE, reference)
        await sender.accepted(update)
        cancel = tw(CANCEL, reference)
        await sender.accepted(cancel)
        await sender.refused(tw(UPDATE, reference), "update-after-cancel")
        await sender.refused(tw(CANCEL, reference), "cancel-once")
        await sender.refused(tw(CANCEL, cancel.message_id), "reference-cancellation")

        # A CANCEL restating the content (same body type) is as good as a free-text reason.
        restated = tw(body="sar_request")
        await sender.accepted(restated)
        await sender.accepted(tw(CANCEL, restated.message_id, body="sar_request"))

    record = jp.gateway.store.record(reference)
    assert record is not None
    assert record.updated_by_message_id == update.message_id
    assert record.cancelled_by_message_id == cancel.message_id
    refused = [e.json_body() for e in jp.entries(Kind.REFUSED_INBOUND)]
    assert [r["reason"] for r in refused] == ["INVALID_MESSAGE"] * 7
    assert all(r["violations"][0][0] == "references[0]" for r in refused)


async def test_the_rules_hold_within_one_batch_and_after_a_restart(
    tmp_path: Path, pki: Path
) -> None:
    new = tw()
    update = tw(UPDATE, new.message_id)
    cancel = tw(CANCEL, new.message_id)
    twice = tw(CANCEL, new.message_id)
    async with lone_gateway(tmp_path, pki) as jp:
        async with fake_tw_peer(jp) as peer:
            await peer.open([signing_der(pki, "TW")])
            sender = Sender(jp, peer)
            first, receipt = await sender.batch(new, update, cancel, twice)
            assert [r.sequence for r in receipt.receipts] == [first, first + 1, first + 2]
            assert_life_rejection(receipt, first + 3, "cancel-once")
        assert journaled_in(jp) == {new.message_id, update.message_id, cancel.message_id}
    async with lone_gateway(tmp_path, pki) as jp, fake_tw_peer(jp) as peer:
        welcome = await peer.open([signing_der(pki, "TW")], last_receipted=4)
        sender = Sender(jp, peer, welcome.last_sequence + 1)
        await sender.refused(tw(CANCEL, new.message_id), "cancel-once")
        await sender.refused(tw(UPDATE, new.message_id), "update-after-cancel")
        await sender.refused(tw(UPDATE, update.message_id, body="sar_request"), "update-body-type")
        await sender.accepted(tw(UPDATE, update.message_id))


async def test_a_delivery_already_expired_is_journaled_flagged_and_never_realerted(
    tmp_path: Path, pki: Path
) -> None:
    """The expired message and a live one come due together; only the live one is re-alerted
    (the re-alert proves the check ran past both deadlines)."""
    short = {"FLASH": 0.2, "IMMEDIATE": 60, "PRIORITY": 60, "ROUTINE": 60}
    now = time.time_ns()
    stale = tw()
    stale.precedence = common_pb2.PRECEDENCE_FLASH
    stale.create_time.FromNanoseconds(now - 120 * 10**9)
    stale.expire_time.FromNanoseconds(now - 60 * 10**9)
    live = tw()
    live.precedence = common_pb2.PRECEDENCE_FLASH
    async with lone_gateway(tmp_path, pki, deadlines=short) as jp:
        async with fake_tw_peer(jp) as peer:
            await peer.open([signing_der(pki, "TW")], lane=common_pb2.PRECEDENCE_FLASH)
            sender = Sender(jp, peer)
            _, receipt = await sender.batch(stale, live)
            assert receipt.rejections == ()
        store = jp.gateway.store
        await wait_for(
            lambda: any(e.message_id == live.message_id for e in jp.entries(Kind.REALERT)),
            what="the live message's re-alert",
        )
        assert [e.message_id for e in jp.entries(Kind.REALERT)] == [live.message_id]
        record = store.record(stale.message_id)
        assert record is not None
        assert record.expired
        assert not record.overdue
        assert record.state == operator_pb2.DELIVERY_STATE_DELIVERED
        assert store.overdue_count() == 1  # the live one only
        [received] = [
            event
            for entry in jp.entries(Kind.MESSAGE_IN)
            if entry.message_id == stale.message_id
            and (event := store.event_for(entry)) is not None
        ]
        assert received.message.expired
        # It arrived expired: no EXPIRED event either (that is for messages that expire while
        # they wait for an answer).
        assert jp.entries(Kind.EXPIRED) == []
