"""Between the wire and the link core: `hotline.v1` frames <-> `hotline.link` values.

Signed parts from the receiver (the Welcome, batch receipts and the original receipts nested in
their rejections) are verified here, before anything is parsed from them, so the sending end's
core only ever sees values whose signatures were good. Envelopes are verified by the receiving
end's acceptance checks (`hotline.acceptance`), which must refuse a bad one rather than fail.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from hotline import link
from hotline.errors import RemoteProtocolError, SignatureError
from hotline.signing import (
    PAYLOAD_TYPE_CHECKPOINT,
    PAYLOAD_TYPE_RECEIPT,
    PAYLOAD_TYPE_WELCOME,
    KeyRing,
    Signer,
    sha256,
)
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


# ---------------------------------------------------------------------- batch receipts

MAX_NESTING = 2  # an original receipt inside a rejection inside a batch receipt, and no deeper


def sign_batch_receipt(
    signer: Signer,
    *,
    sender_party: str,
    first_sequence: int,
    last_sequence: int,
    receipts: tuple[link.ReceiptItem, ...],
    rejections: tuple[link.RejectionItem, ...],
    journal_time_ns: int,
    lane: int,
) -> link.BatchReceipt:
    """Sign a batch receipt (the receiving end, inside the batch's journal transaction)."""
    body = peer_link_pb2.BatchReceiptBody(
        receiver_party=signer.party,
        sender_party=sender_party,
        first_sequence=first_sequence,
        last_sequence=last_sequence,
        journal_time=timestamp_ns(journal_time_ns),
        lane=lane_to_wire(lane),
    )
    for r in receipts:
        body.receipts.add(
            sequence=r.sequence,
            message_id=r.message_id,
            envelope_sha256=r.digest,
            journal_position=r.journal_position,
        )
    for j in rejections:
        body.rejections.append(rejection_item_to_wire(j))
    signed = signer.sign(PAYLOAD_TYPE_RECEIPT, body.SerializeToString())
    return link.BatchReceipt(
        first_sequence, last_sequence, receipts, rejections, signed, journal_time_ns, lane
    )


def lane_to_wire(lane: int) -> common_pb2.Precedence.ValueType:
    if lane not in link.LANES:
        raise ValueError(f"not a lane: {lane}")
    return common_pb2.Precedence.ValueType(lane)


def lane_from_wire(value: int, what: str) -> int:
    """A lane from a frame; RemoteProtocolError if it is not a precedence."""
    if value not in link.LANES:
        raise RemoteProtocolError(f"{what} names lane {value}, which is not a precedence")
    return value


def rejection_item_to_wire(item: link.RejectionItem) -> peer_link_pb2.RejectionItem:
    out = peer_link_pb2.RejectionItem(
        sequence=item.sequence,
        message_id=item.message_id,
        reason=reason_to_wire(item.reason),
        detail=item.detail,
        envelope_sha256=item.digest,
    )
    for field, description in item.violations:
        out.violations.add(field=field, description=description)
    if item.original_receipt is not None:
        out.original_receipt.CopyFrom(batch_receipt_to_wire(item.original_receipt))
    return out


def signed_of(receipt: link.BatchReceipt) -> common_pb2.SignedPayload:
    signed = receipt.signed
    if isinstance(signed, bytes):
        parsed = common_pb2.SignedPayload()
        parsed.ParseFromString(signed)
        return parsed
    if not isinstance(signed, common_pb2.SignedPayload):
        raise TypeError("batch receipt carries no signed form")
    return signed


def batch_receipt_to_wire(receipt: link.BatchReceipt) -> peer_link_pb2.BatchReceipt:
    return peer_link_pb2.BatchReceipt(receipt=signed_of(receipt))


def batch_receipt_from_signed(
    signed: common_pb2.SignedPayload,
    keyring: KeyRing | None,
    *,
    receiver_party: str,
    sender_party: str,
    depth: int = 0,
) -> link.BatchReceipt:
    """Verify (unless `keyring` is None: our own archive) and parse one signed batch receipt."""
    if keyring is None:
        payload = signed.payload
    else:
        try:
            payload = keyring.verify(
                signed, payload_type=PAYLOAD_TYPE_RECEIPT, party=receiver_party
            )
        except SignatureError as exc:
            raise RemoteProtocolError(f"bad batch receipt signature: {exc}") from None
    body = peer_link_pb2.BatchReceiptBody()
    try:
        body.ParseFromString(payload)
    except Exception as exc:
        raise RemoteProtocolError(f"malformed batch receipt: {exc}") from None
    if body.receiver_party != receiver_party or body.sender_party != sender_party:
        raise RemoteProtocolError(
            f"batch receipt is for {body.sender_party}->{body.receiver_party}, "
            f"expected {sender_party}->{receiver_party}"
        )
    receipts = tuple(
        link.ReceiptItem(r.sequence, r.message_id, bytes(r.envelope_sha256), r.journal_position)
        for r in body.receipts
    )
    rejections = []
    for j in body.rejections:
        original = None
        if j.HasField("original_receipt"):
            if depth >= MAX_NESTING:
                raise RemoteProtocolError("original receipts nested too deep")
            original = batch_receipt_from_signed(
                j.original_receipt.receipt,
                keyring,
                receiver_party=receiver_party,
                sender_party=sender_party,
                depth=depth + 1,
            )
        rejections.append(
            link.RejectionItem(
                j.sequence,
                j.message_id,
                reason_from_wire(j.reason),
                j.detail,
                tuple((v.field, v.description) for v in j.violations),
                bytes(j.envelope_sha256),
                original,
            )
        )
    receipt = link.BatchReceipt(
        body.first_sequence,
        body.last_sequence,
        receipts,
        tuple(rejections),
        signed,
        int(body.journal_time.ToNanoseconds()),
        lane_from_wire(body.lane, "a batch receipt"),
    )
    receipt.check_complete()
    return receipt


def batch_receipt_from_bytes(
    raw: bytes, *, receiver_party: str, sender_party: str
) -> link.BatchReceipt:
    """A batch receipt from our own journal (serialized SignedPayload), not re-verified."""
    signed = common_pb2.SignedPayload()
    signed.ParseFromString(raw)
    return batch_receipt_from_signed(
        signed, None, receiver_party=receiver_party, sender_party=sender_party
    )


# ---------------------------------------------------------------------- welcome


def welcome_to_wire(
    welcome: link.Welcome, signer: Signer, signing_certificates: list[bytes], now_ns: int
) -> peer_link_pb2.Welcome:
    """The Welcome frame; `welcome.witnessed`, if set, is the sender's signed checkpoint to
    carry as `witnessed_checkpoint`."""
    body = peer_link_pb2.WelcomeBody(
        protocol_version=welcome.protocol_version,
        receiver_party=welcome.receiver_party,
        sender_party=welcome.sender_party,
        last_sequence=welcome.last_sequence,
        hello_nonce=welcome.hello_nonce,
        create_time=timestamp_ns(now_ns),
        lane=lane_to_wire(welcome.lane),
    )
    frame = peer_link_pb2.Welcome(
        welcome=signer.sign(PAYLOAD_TYPE_WELCOME, body.SerializeToString())
    )
    frame.signing_certificates.extend(signing_certificates)
    for receipt in welcome.batch_receipts:
        frame.batch_receipts.append(batch_receipt_to_wire(receipt))
    if isinstance(welcome.witnessed, common_pb2.SignedPayload):
        frame.witnessed_checkpoint.CopyFrom(welcome.witnessed)
    return frame


def welcome_from_wire(
    frame: peer_link_pb2.Welcome, keyring: KeyRing, *, receiver_party: str, sender_party: str
) -> link.Welcome:
    """Check the Welcome's signing certificates and signature; parse it (the sender's side)."""
    if not 1 <= len(frame.signing_certificates) <= 4:
        raise RemoteProtocolError(
            f"the Welcome carries {len(frame.signing_certificates)} signing certificates, "
            "must be 1..4"
        )
    for der in frame.signing_certificates:
        try:
            key = keyring.add_der(der)
        except SignatureError as exc:
            raise RemoteProtocolError(f"Welcome carries an untrusted signing key: {exc}") from None
        if key.party != receiver_party:
            raise RemoteProtocolError(
                f"Welcome carries party {key.party}'s signing key; we dialled {receiver_party}"
            )
    if not frame.HasField("welcome"):
        raise RemoteProtocolError("the Welcome is not signed")
    try:
        payload = keyring.verify(
            frame.welcome, payload_type=PAYLOAD_TYPE_WELCOME, party=receiver_party
        )
    except SignatureError as exc:
        raise RemoteProtocolError(f"bad Welcome signature: {exc}") from None
    body = peer_link_pb2.WelcomeBody()
    try:
        body.ParseFromString(payload)
    except Exception as exc:
        raise RemoteProtocolError(f"malformed Welcome: {exc}") from None
    receipts = tuple(
        batch_receipt_from_signed(
            r.receipt, keyring, receiver_party=receiver_party, sender_party=sender_party
        )
        for r in frame.batch_receipts
    )
    return link.Welcome(
        body.receiver_party,
        body.sender_party,
        body.last_sequence,
        bytes(body.hello_nonce),
        receipts,
        body.protocol_version,
        witnessed_checkpoint_from_wire(frame, keyring, sender_party=sender_party),
        lane_from_wire(body.lane, "the Welcome"),
    )


def witnessed_checkpoint_from_wire(
    frame: peer_link_pb2.Welcome, keyring: KeyRing, *, sender_party: str
) -> link.WitnessedCheckpoint | None:
    """The Welcome's witnessed checkpoint of our own journal, verified with our own signing
    keys (LINK-28); None if absent, or signed by a key of ours we no longer hold (a rotated
    one: it cannot be checked, and must not keep the link down until a new one is
    witnessed). A bad signature by a key we hold, or another party's checkpoint, is a
    protocol violation."""
    if not frame.HasField("witnessed_checkpoint"):
        return None
    signed = frame.witnessed_checkpoint
    if keyring.key(signed.key_id) is None:
        return None
    try:
        payload = keyring.verify(signed, payload_type=PAYLOAD_TYPE_CHECKPOINT, party=sender_party)
    except SignatureError as exc:
        raise RemoteProtocolError(f"the Welcome's witnessed checkpoint: {exc}") from None
    body = peer_link_pb2.CheckpointBody()
    try:
        body.ParseFromString(payload)
    except Exception as exc:
        raise RemoteProtocolError(f"the Welcome's witnessed checkpoint: malformed: {exc}") from None
    if body.party != sender_party:
        raise RemoteProtocolError(
            f"the Welcome's witnessed checkpoint is of party {body.party}'s journal, "
            f"not ours ({sender_party})"
        )
    return link.WitnessedCheckpoint(body.entry_count, bytes(body.head_hash))


# ---------------------------------------------------------------------- sender side


def hello_to_wire(hello: link.Hello, signing_certificates: list[bytes]) -> peer_link_pb2.Hello:
    frame = peer_link_pb2.Hello(
        protocol_version=hello.protocol_version,
        party=hello.party,
        last_receipted_sequence=hello.last_receipted_sequence,
        nonce=hello.nonce,
        lane=lane_to_wire(hello.lane),
    )
    frame.signing_certificates.extend(signing_certificates)
    return frame


def hello_from_wire(frame: peer_link_pb2.Hello) -> link.Hello:
    """The Hello (a version 2 Hello, without a lane, parses with lane 0: the core refuses its
    version first)."""
    return link.Hello(
        frame.party,
        frame.last_receipted_sequence,
        bytes(frame.nonce),
        frame.protocol_version,
        frame.lane,
    )


def deliveries_to_wire(batch: link.DeliveryBatch) -> peer_link_pb2.DeliveryBatch:
    frame = peer_link_pb2.DeliveryBatch()
    for d in batch.deliveries:
        if not isinstance(d.payload, common_pb2.SignedPayload):
            raise TypeError("delivery carries no signed envelope")
        frame.deliveries.add(sequence=d.sequence, envelope=d.payload)
    return frame


def deliveries_from_wire(frame: peer_link_pb2.DeliveryBatch) -> link.DeliveryBatch:
    """The receiving end's view: digests computed; message ids unknown until verified."""
    return link.DeliveryBatch(
        tuple(
            link.Delivery(
                d.sequence, "", sha256(d.envelope.payload), d.envelope, len(d.envelope.payload)
            )
            for d in frame.deliveries
        )
    )


def sender_frame_to_wire(
    frame: link.SenderFrame, signing_certificates: list[bytes]
) -> peer_link_pb2.PushRequest:
    if isinstance(frame, link.DeliveryBatch):
        return peer_link_pb2.PushRequest(deliveries=deliveries_to_wire(frame))
    if isinstance(frame, link.Hello):
        return peer_link_pb2.PushRequest(hello=hello_to_wire(frame, signing_certificates))
    if isinstance(frame, link.Ping):
        return peer_link_pb2.PushRequest(ping=ping_to_wire(frame))
    return peer_link_pb2.PushRequest(pong=pong_to_wire(frame))


def receiver_frame_to_wire(
    frame: link.ReceiverFrame, signer: Signer, signing_certificates: list[bytes], now_ns: int
) -> peer_link_pb2.PushResponse:
    if isinstance(frame, link.BatchReceipt):
        return peer_link_pb2.PushResponse(batch_receipt=batch_receipt_to_wire(frame))
    if isinstance(frame, link.Welcome):
        return peer_link_pb2.PushResponse(
            welcome=welcome_to_wire(frame, signer, signing_certificates, now_ns)
        )
    if isinstance(frame, link.Ping):
        return peer_link_pb2.PushResponse(ping=ping_to_wire(frame))
    return peer_link_pb2.PushResponse(pong=pong_to_wire(frame))


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


def receiver_frame_from_wire(
    frame: peer_link_pb2.PushResponse, keyring: KeyRing, *, receiver_party: str, sender_party: str
) -> link.ReceiverFrame:
    """Parse and verify one frame from the receiving gateway (the sender's input)."""
    which = frame.WhichOneof("frame")
    if which == "batch_receipt":
        return batch_receipt_from_signed(
            frame.batch_receipt.receipt,
            keyring,
            receiver_party=receiver_party,
            sender_party=sender_party,
        )
    if which == "ping":
        return ping_from_wire(frame.ping)
    if which == "pong":
        return pong_from_wire(frame.pong)
    if which == "welcome":
        return welcome_from_wire(
            frame.welcome, keyring, receiver_party=receiver_party, sender_party=sender_party
        )
    raise RemoteProtocolError("empty frame from the peer")
