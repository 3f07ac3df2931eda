"""Every golden valid example goes through a real gateway pair end to end, as written.

Only what must be fresh is changed: every message id (references follow their message) and every
time, shifted by one amount so that their order and spans stay as written. Everything else,
the originator included, is sent exactly as the example has it: each operator example by that
operator's own certificate over `OperatorService.Send`, the gateway's scheduled link test by
the gateway itself (its service layer, as its schedule would), and the acknowledgement by its
responder over `OperatorService.Acknowledge`. The receiving gateway must hold each envelope
exactly as sent.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from google.protobuf import text_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from certs.identity import Identity, Role, parse_spiffe_id
from certs.pki import init_pki
from hotline.ids import new_message_id
from hotline.v1 import common_pb2, envelope_pb2, operator_pb2, operator_pb2_grpc
from tests.harness import Pair, operator_channel, running_pair, wait_state

VALID = sorted(
    (Path(__file__).resolve().parents[2] / "proto" / "examples" / "valid").glob("*.txtpb")
)


def load(path: Path) -> envelope_pb2.Envelope:
    return text_format.Parse(path.read_text(encoding="utf-8"), envelope_pb2.Envelope())


def shift_times(message: Message, delta_ns: int) -> None:
    """Add `delta_ns` to every Timestamp set anywhere in `message`."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        values = value if field.is_repeated else [value]
        for item in values:
            if isinstance(item, Timestamp):
                item.FromNanoseconds(item.ToNanoseconds() + delta_ns)
            else:
                shift_times(item, delta_ns)


def fresh(envelopes: list[envelope_pb2.Envelope]) -> None:
    """New ids (and references to them), and times moved so that creation is now."""
    ids = {e.message_id: new_message_id() for e in envelopes}
    now = time.time_ns()
    for envelope in envelopes:
        delta = now - envelope.create_time.ToNanoseconds()
        shift_times(envelope, delta)
        envelope.message_id = ids[envelope.message_id]
        refs = [ids.get(r, r) for r in envelope.references]
        del envelope.references[:]
        envelope.references.extend(refs)
        if envelope.WhichOneof("body") == "acknowledgement":
            ack = envelope.acknowledgement
            ack.acknowledged_message_id = ids.get(ack.acknowledged_message_id, "")


def operators(envelopes: list[envelope_pb2.Envelope]) -> list[str]:
    names = {parse_spiffe_id(e.originator).name for e in envelopes}
    return sorted(name for name in names if name is not None)


async def send_as_written(pair: Pair, envelope: envelope_pb2.Envelope) -> str:
    side = pair.jp if envelope.sender_party == "JP" else pair.tw
    author = parse_spiffe_id(envelope.originator)
    if author.role is Role.GATEWAY:  # a scheduled link test: the gateway originates it
        [result] = await side.gateway.service.submit([envelope], Identity.gateway(author.party))
        assert isinstance(result, operator_pb2.SendResponse), result
        return result.message_id
    assert author.name is not None
    channel = operator_channel(pair.pki, author.party, side.port, author.name)
    try:
        stub = operator_pb2_grpc.OperatorServiceStub(channel)
        if envelope.WhichOneof("body") == "acknowledgement":
            ack = envelope.acknowledgement
            request = operator_pb2.AcknowledgeRequest(
                message_id=ack.acknowledged_message_id,
                level=ack.level,
                ack_message_id=envelope.message_id,
            )
            if ack.HasField("remarks"):
                request.remarks.CopyFrom(ack.remarks)
            if ack.HasField("reason"):
                request.reason.CopyFrom(ack.reason)
            answer = await stub.Acknowledge(request, timeout=15)
            return answer.ack_message_id
        sent = await stub.Send(operator_pb2.SendRequest(envelope=envelope), timeout=15)
        return sent.message_id
    finally:
        await channel.close()


@pytest.mark.must("ID-4")
async def test_every_valid_example_is_delivered_as_written_by_a_real_gateway_pair(
    tmp_path: Path,
) -> None:
    envelopes = [load(p) for p in VALID]
    fresh(envelopes)
    # NEW first (UPDATE and CANCEL refer to them), acknowledgements last (they answer one)
    envelopes.sort(
        key=lambda e: (e.WhichOneof("body") == "acknowledgement", e.action != common_pb2.ACTION_NEW)
    )
    pki = tmp_path / "pki"
    init_pki(pki, ("JP", "TW"), operators(envelopes))
    async with running_pair(tmp_path, pki) as pair:
        for envelope in envelopes:
            if envelope.WhichOneof("body") == "acknowledgement":
                # the message it acknowledges must have arrived first
                origin = pair.jp if envelope.sender_party == "TW" else pair.tw
                await wait_state(
                    origin.stub,
                    envelope.acknowledgement.acknowledged_message_id,
                    operator_pb2.DELIVERY_STATE_DELIVERED,
                )
            assert await send_as_written(pair, envelope) == envelope.message_id
        for envelope in envelopes:
            sender = pair.jp if envelope.sender_party == "JP" else pair.tw
            receiver = pair.tw if envelope.sender_party == "JP" else pair.jp
            await wait_state(
                sender.stub, envelope.message_id, operator_pb2.DELIVERY_STATE_DELIVERED
            )
            held = await receiver.stub.GetMessage(
                operator_pb2.GetMessageRequest(message_id=envelope.message_id)
            )
            if envelope.WhichOneof("body") == "acknowledgement":
                # the gateway makes the acknowledgement's envelope; its body is as written
                got = held.message.envelope.acknowledgement
                assert got == envelope.acknowledgement
                assert held.message.envelope.originator == envelope.originator
            else:
                assert held.message.envelope == envelope, envelope.WhichOneof("body")
            assert held.message.direction == operator_pb2.DIRECTION_INBOUND
