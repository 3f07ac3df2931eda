"""Every body type of the spec, from the golden examples, delivered and acknowledged end to end."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format

from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2
from tests.harness import running_pair, wait_state

EXAMPLES = Path(__file__).resolve().parents[2] / "proto" / "examples" / "valid"


def load(path: Path) -> envelope_pb2.Envelope:
    envelope = envelope_pb2.Envelope()
    text_format.Parse(path.read_text(encoding="utf-8"), envelope)
    return envelope


async def test_a_message_of_every_body_type_is_delivered_and_acknowledged(tmp_path: Path) -> None:
    examples = sorted(EXAMPLES.glob("*.txtpb"))
    envelopes = [load(p) for p in examples]
    body_types = {e.WhichOneof("body") for e in envelopes}
    all_bodies = {f.name for f in envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"].fields}
    assert body_types == all_bodies, f"no golden example for {sorted(all_bodies - body_types)}"
    # NEW messages first, so that UPDATE and CANCEL find what they refer to
    envelopes.sort(key=lambda e: e.action != common_pb2.ACTION_NEW)
    async with running_pair(tmp_path) as pair:
        sides = {"JP": pair.jp, "TW": pair.tw}
        sent: list[tuple[str, str]] = []
        for envelope in envelopes:
            if envelope.WhichOneof("body") == "acknowledgement":
                continue  # acknowledgements are made with Acknowledge, below
            # The gateway fills who and when from the caller's certificate and its clock.
            envelope.originator = ""
            envelope.create_time.Clear()
            envelope.ClearField("create_time")
            envelope.ClearField("expire_time")
            side = sides[envelope.sender_party]
            response = await side.stub.Send(operator_pb2.SendRequest(envelope=envelope))
            sent.append((envelope.sender_party, response.message_id))
        for sender, message_id in sent:
            receiver = sides["TW" if sender == "JP" else "JP"]
            await wait_state(sides[sender].stub, message_id, operator_pb2.DELIVERY_STATE_DELIVERED)
            await receiver.stub.Acknowledge(
                operator_pb2.AcknowledgeRequest(
                    message_id=message_id, level=bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER
                )
            )
        for sender, message_id in sent:
            await wait_state(
                sides[sender].stub, message_id, operator_pb2.DELIVERY_STATE_ACKNOWLEDGED
            )
        assert len(sent) == len(envelopes) - 1
