"""Two real gateways on loopback with mTLS and real journals: the thin path end to end."""

from __future__ import annotations

from pathlib import Path

from hotline.v1 import bodies_pb2, operator_pb2
from tests.conftest import JournalAt
from tests.harness import free_text, running_pair, wait_state

DELIVERED = operator_pb2.DELIVERY_STATE_DELIVERED
ACKNOWLEDGED = operator_pb2.DELIVERY_STATE_ACKNOWLEDGED


async def test_a_signed_message_is_journaled_delivered_receipted_and_acknowledged(
    tmp_path: Path, journal_at: JournalAt
) -> None:
    async with running_pair(tmp_path, journals=journal_at) as pair:
        sent = await pair.jp.stub.Send(operator_pb2.SendRequest(envelope=free_text("hello TW")))
        assert sent.state == operator_pb2.DELIVERY_STATE_JOURNALED
        await wait_state(pair.jp.stub, sent.message_id, DELIVERED)
        received = await pair.tw.stub.GetMessage(
            operator_pb2.GetMessageRequest(message_id=sent.message_id)
        )
        assert received.message.direction == operator_pb2.DIRECTION_INBOUND
        assert received.message.envelope.free_text.text.variants[0].text == "hello TW"
        assert received.message.envelope.originator == "spiffe://jp.hotline/operator/watch-1"
        ack = await pair.tw.stub.Acknowledge(
            operator_pb2.AcknowledgeRequest(
                message_id=sent.message_id, level=bodies_pb2.ACKNOWLEDGEMENT_LEVEL_WILCO
            )
        )
        await wait_state(pair.jp.stub, sent.message_id, ACKNOWLEDGED)
        at_jp = await pair.jp.stub.GetMessage(
            operator_pb2.GetMessageRequest(message_id=sent.message_id)
        )
        assert at_jp.message.acknowledgement.level == bodies_pb2.ACKNOWLEDGEMENT_LEVEL_WILCO
        assert at_jp.message.acknowledgement.responder == "spiffe://tw.hotline/operator/watch-1"
        assert at_jp.message.acknowledgement_message_id == ack.ack_message_id
