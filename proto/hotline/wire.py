"""Between the wire and the link core: `hotline.v1` frames <-> `hotline.link` values.

Signed parts (envelopes, receipts) are verified here, before anything is parsed from them,
so the link core only ever sees values whose signatures were good.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from hotline import link
from hotline.errors import RemoteProtocolError, SignatureError
from hotline.signing import PAYLOAD_TYPE_RECEIPT, KeyRing, Signer
from hotline.v1 import common_pb2, peer_link_pb2

_REASONS: dict[link.RejectReason, peer_link_pb2.RejectionReason.ValueType] = {
    link.RejectReason.INVALID_MESSAGE: peer_link_pb2.REJECTION_REASON_INVALID_MESSAGE,
    link.RejectReason.BAD_SIGNATURE: peer_link_pb2.REJECTION_REASON_BAD_SIGNATURE,
    link.RejectReason.WRONG_PARTY: peer_link_pb2.REJECTION_REASON_WRONG_PARTY,
    link.RejectReason.DUPLICATE_MESSAGE_ID: peer_link_pb2.REJECTION_REASON_DUPLICATE_MESSAGE_ID,
    link.RejectReason.OUT_OF_ORDER: peer_link_pb2.REJECTION_REASON_OUT_OF_ORDER,
    link.RejectReason.NOT_RELEASABLE: peer_link_pb2.REJECTION_REASON_NOT_RELEASABLE,
}
_REASONS_BACK: dict[int, link.RejectReason] = {int(v): k for k, v in _REASONS.items()}


def reason_to_wire(reason: link.RejectReason) -> peer_link_pb2.RejectionReason.ValueType:
    return _REASONS[reason]


def reason_from_wire(value: int) -> link.RejectReason:
    try:
        return _REASONS_BACK[value]
    except KeyError:
        raise RemoteProtocolError(f"unknown rejection reason {value}") from None


def to_timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def from_timestamp(ts: Timestamp) -> float:
    return int(ts.ToNanoseconds()) / 1e9


def timestamp_ns(ns: int) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(ns)
    return ts


# ---------------------------------------------------------------------- receipts


def sign_receipt(
    signer: Signer,
    *,
    message_id: str,
    sequence: int,
    envelope_bytes_digest: bytes,
    sender_party: str,
    journal_position: int,
    journal_time_ns: int,
) -> common_pb2.SignedPayload:
    body = peer_link_pb2.ReceiptBody(
        message_id=message_id,
        sequence=sequence,
        envelope_sha256=envelope_bytes_digest,
        receiver_party=signer.party,
        sender_party=sender_party,
        journal_position=journal_position,
        journal_time=timestamp_ns(journal_time_ns),
    )
    return signer.sign(PAYLOAD_TYPE_RECEIPT, body.SerializeToString())


def verify_receipt(
    signed: common_pb2.SignedPayload, keyring: KeyRing, *, receiver_party: str, sender_party: str
) -> tuple[peer_link_pb2.ReceiptBody, link.ReceiptInfo]:
    """Check a receipt's signature and parties; return its body and the link's view of it."""
    try:
        payload = keyring.verify(signed, payload_type=PAYLOAD_TYPE_RECEIPT, party=receiver_party)
    except SignatureError as exc:
        raise RemoteProtocolError(f"bad receipt signature: {exc}") from None
    body = peer_link_pb2.ReceiptBody()
    try:
        body.ParseFromString(payload)
    except Exception as exc:
        raise RemoteProtocolError(f"malformed receipt: {exc}") from None
    if body.receiver_party != receiver_party or body.sender_party != sender_party:
        raise RemoteProtocolError(
            f"receipt is for {body.sender_party}->{body.receiver_party}, "
            f"expected {sender_party}->{receiver_party}"
        )
    info = link.ReceiptInfo(body.sequence, body.message_id, bytes(body.envelope_sha256), signed)
    return body, info


def receipt_frame(info: link.ReceiptInfo) -> peer_link_pb2.Receipt:
    signed = info.signed
    if isinstance(signed, bytes):
        parsed = common_pb2.SignedPayload()
        parsed.ParseFromString(signed)
        signed = parsed
    if not isinstance(signed, common_pb2.SignedPayload):
        raise TypeError("receipt info carries no signed receipt")
    receipt: peer_link_pb2.Receipt = peer_link_pb2.Receipt(receipt=signed)
    return receipt


def rejection_frame(rejection: link.Rejection) -> peer_link_pb2.Rejection:
    frame = peer_link_pb2.Rejection(
        sequence=rejection.sequence,
        message_id=rejection.message_id,
        reason=reason_to_wire(rejection.reason),
        detail=rejection.detail,
    )
    for field, description in rejection.violations:
        frame.violations.add(field=field, description=description)
    if rejection.original_receipt is not None:
        frame.original_receipt.CopyFrom(receipt_frame(rejection.original_receipt))
    return frame


# ---------------------------------------------------------------------- sender side


def delivery_frame(delivery: link.Delivery) -> peer_link_pb2.PushRequest:
    signed = delivery.payload
    if not isinstance(signed, common_pb2.SignedPayload):
        raise TypeError("delivery carries no signed envelope")
    return peer_link_pb2.PushRequest(
        delivery=peer_link_pb2.Delivery(sequence=delivery.sequence, envelope=signed)
    )


def sender_frame_to_wire(
    frame: link.SenderFrame, signing_certificates: list[bytes]
) -> peer_link_pb2.PushRequest:
    if isinstance(frame, link.Delivery):
        return delivery_frame(frame)
    if isinstance(frame, link.Hello):
        hello = peer_link_pb2.Hello(
            protocol_version=frame.protocol_version,
            party=frame.party,
            last_receipted_sequence=frame.last_receipted_sequence,
        )
        hello.signing_certificates.extend(signing_certificates)
        return peer_link_pb2.PushRequest(hello=hello)
    if isinstance(frame, link.Ping):
        return peer_link_pb2.PushRequest(ping=ping_to_wire(frame))
    return peer_link_pb2.PushRequest(pong=pong_to_wire(frame))


def ping_to_wire(ping: link.Ping) -> peer_link_pb2.Ping:
    return peer_link_pb2.Ping(nonce=ping.nonce, transmit_time=to_timestamp(ping.transmit_time))


def pong_to_wire(pong: link.Pong) -> peer_link_pb2.Pong:
    return peer_link_pb2.Pong(
        nonce=pong.nonce,
        origin_time=to_timestamp(pong.origin_time),
        receive_time=to_timestamp(pong.receive_time),
        transmit_time=to_timestamp(pong.transmit_time),
    )


def ping_from_wire(ping: peer_link_pb2.Ping) -> link.Ping:
    return link.Ping(ping.nonce, from_timestamp(ping.transmit_time))


def pong_from_wire(pong: peer_link_pb2.Pong) -> link.Pong:
    return link.Pong(
        pong.nonce,
        from_timestamp(pong.origin_time),
        from_timestamp(pong.receive_time),
        from_timestamp(pong.transmit_time),
    )


def rejection_from_wire(
    frame: peer_link_pb2.Rejection, keyring: KeyRing, *, receiver_party: str, sender_party: str
) -> link.Rejection:
    original = None
    if frame.HasField("original_receipt"):
        _, original = verify_receipt(
            frame.original_receipt.receipt,
            keyring,
            receiver_party=receiver_party,
            sender_party=sender_party,
        )
    return link.Rejection(
        frame.sequence,
        frame.message_id,
        reason_from_wire(frame.reason),
        frame.detail,
        original_receipt=original,
        violations=tuple((v.field, v.description) for v in frame.violations),
    )


def receiver_frame_from_wire(
    frame: peer_link_pb2.PushResponse, keyring: KeyRing, *, receiver_party: str, sender_party: str
) -> link.ReceiverFrame:
    """Parse and verify one frame from the receiving gateway (the sender's input)."""
    which = frame.WhichOneof("frame")
    if which == "receipt":
        return link.Receipt(
            verify_receipt(
                frame.receipt.receipt,
                keyring,
                receiver_party=receiver_party,
                sender_party=sender_party,
            )[1]
        )
    if which == "rejection":
        return rejection_from_wire(
            frame.rejection, keyring, receiver_party=receiver_party, sender_party=sender_party
        )
    if which == "ping":
        return ping_from_wire(frame.ping)
    if which == "pong":
        return pong_from_wire(frame.pong)
    if which == "welcome":
        w = frame.welcome
        for der in w.signing_certificates:
            try:
                keyring.add_der(der)
            except SignatureError as exc:
                raise RemoteProtocolError(
                    f"Welcome carries an untrusted signing key: {exc}"
                ) from None
        receipts = tuple(
            verify_receipt(
                r.receipt, keyring, receiver_party=receiver_party, sender_party=sender_party
            )[1]
            for r in w.receipts
        )
        rejections = tuple(
            rejection_from_wire(
                r, keyring, receiver_party=receiver_party, sender_party=sender_party
            )
            for r in w.rejections
        )
        return link.Welcome(w.party, w.last_sequence, receipts, rejections, w.protocol_version)
    raise RemoteProtocolError("empty frame from the peer")
