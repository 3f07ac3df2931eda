"""Attacks on the peer link's messages, made by a party holding the TW gateway's TLS identity.

The attacker here is as strong as a peer link attacker can be without TW's signing key: it
completes mutual TLS as `spiffe://tw.hotline/gateway` (so the interceptor admits it to
`PeerLinkService`) and then speaks the protocol (link protocol version 2) frame by frame
(`FakePeer`). What must still hold is the message layer: JP verifies every envelope's signature,
with the key of the party the link belongs to, over the exact bytes, before parsing; refuses a
bad delivery with a rejection that consumes the sequence, is journaled (Kind.REFUSED_INBOUND) and
travels in a batch receipt signed by JP (version 1 sent rejections unsigned); never lets a bad
delivery spoil the good ones of its batch; journals a message id at most once and never takes
over an id of JP's own; ends the stream, journaling nothing, when the attacker skips a sequence or
tries to rewrite a settled one (`OUT_OF_ORDER:`, which version 1 answered with a rejection); signs
each Welcome over the Hello's fresh nonce; and keeps serving.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from certs.pki import PartyPaths, init_pki, revoke
from hotline import link, wire
from hotline.signing import PAYLOAD_TYPE_ENVELOPE, PAYLOAD_TYPE_RECEIPT, sha256
from hotline.v1 import common_pb2, operator_pb2, operator_pb2_grpc
from server.journal import Kind
from tests.harness import free_text
from tests.security.conftest import (
    WAIT,
    FakePeer,
    Lone,
    eventually,
    fake_tw_peer,
    operator_of,
    signer_of,
    signing_der,
    tw_envelope,
)

BAD_SIGNATURE = link.RejectReason.BAD_SIGNATURE
WRONG_PARTY = link.RejectReason.WRONG_PARTY
DUPLICATE = link.RejectReason.DUPLICATE_MESSAGE_ID
INVALID_MESSAGE = link.RejectReason.INVALID_MESSAGE


def signed_by(
    pki: Path, party: str, text: str, payload_type: str = PAYLOAD_TYPE_ENVELOPE
) -> common_pb2.SignedPayload:
    return signer_of(pki, party).sign(payload_type, tw_envelope(text).SerializeToString())


def signed_tw(pki: Path, envelope: Any) -> common_pb2.SignedPayload:
    return signer_of(pki, "TW").sign(PAYLOAD_TYPE_ENVELOPE, envelope.SerializeToString())


def message_in(jp: Lone) -> list[str]:
    return [e.message_id for e in jp.entries(Kind.MESSAGE_IN)]


def refused_inbound(jp: Lone) -> list[tuple[int, str, str]]:
    """(sequence, reason, detail) of every REFUSED_INBOUND entry."""
    out = []
    for entry in jp.entries(Kind.REFUSED_INBOUND):
        body = entry.json_body()
        out.append((entry.sequence, str(body["reason"]), str(body["detail"])))
    return out


def raw(receipt: link.BatchReceipt) -> bytes:
    """The signed batch receipt exactly as it travelled."""
    return wire.signed_of(receipt).SerializeToString()


def signed_by_jp(peer: FakePeer, receipt: link.BatchReceipt) -> bool:
    """The batch receipt's key is JP's signing key (FakePeer already checked the signature)."""
    assert peer.keyring is not None
    key = peer.keyring.key(wire.signed_of(receipt).key_id)
    return key is not None and key.party == "JP"


def assert_rejected(
    receipt: link.BatchReceipt, sequence: int, reason: link.RejectReason, detail: str
) -> link.RejectionItem:
    """`receipt` settles exactly `sequence`, refusing it for `reason` (with `detail`)."""
    assert (receipt.first_sequence, receipt.last_sequence) == (sequence, sequence), receipt
    assert receipt.receipts == (), receipt
    [rejection] = receipt.rejections
    assert rejection.sequence == sequence
    assert rejection.reason is reason, rejection
    assert detail in rejection.detail, rejection.detail
    return rejection


def assert_receipted(
    receipt: link.BatchReceipt, sequence: int, signed: common_pb2.SignedPayload, message_id: str
) -> link.ReceiptItem:
    """`receipt` receipts `sequence` as `message_id`, over exactly `signed`'s payload bytes."""
    [item] = [r for r in receipt.receipts if r.sequence == sequence]
    assert item.message_id == message_id
    assert item.digest == sha256(signed.payload)
    assert item.journal_position > 0
    return item


async def assert_still_serving(jp: Lone, peer: FakePeer, sequence: int, text: str) -> str:
    """A proper delivery at `sequence` is journaled and receipted: JP kept serving."""
    envelope = tw_envelope(text)
    signed = signed_tw(jp.pki, envelope)
    receipt = await peer.deliver(sequence, signed)
    assert receipt.rejections == (), receipt
    assert_receipted(receipt, sequence, signed, envelope.message_id)
    return envelope.message_id


# ------------------------------------------------------------------------------ tampering


@pytest.mark.must("SIG-2", "LINK-14")
async def test_a_tampered_envelope_is_refused_as_bad_signature(jp: Lone) -> None:
    """Version 1 sent this refusal as an unsigned Rejection; now it is an item of a batch
    receipt signed by JP, naming the hash of the refused bytes."""
    async with fake_tw_peer(jp) as peer:
        welcome = await peer.open([signing_der(jp.pki, "TW")])
        assert (welcome.receiver_party, welcome.last_sequence) == ("JP", 0)
        envelope = tw_envelope("proceed to the agreed position")
        signed = signed_tw(jp.pki, envelope)
        tampered = common_pb2.SignedPayload()
        tampered.CopyFrom(signed)
        payload = bytearray(signed.payload)
        at = bytes(payload).index(b"agreed")
        payload[at] ^= 0x20  # "agreed" -> "Agreed": still a well-formed envelope, other bytes
        tampered.payload = bytes(payload)

        receipt = await peer.deliver(1, tampered)

        assert signed_by_jp(peer, receipt)
        rejection = assert_rejected(
            receipt, 1, BAD_SIGNATURE, "the signature does not match the payload"
        )
        # The id is not read from bytes whose signature failed: the rejection names none, only
        # the hash of the bytes refused.
        assert rejection.message_id == ""
        assert rejection.digest == sha256(tampered.payload)
        assert message_in(jp) == []
        assert jp.gateway.store.record(envelope.message_id) is None
        [(sequence, reason, detail)] = refused_inbound(jp)
        assert (sequence, reason) == (1, "BAD_SIGNATURE")
        assert "does not match the payload" in detail

        # JP keeps serving: the next delivery is journaled and receipted, and the batch receipt
        # is JP's signature over exactly those bytes at sequence 2.
        good = tw_envelope("the real message")
        signed_good = signed_tw(jp.pki, good)
        receipt = await peer.deliver(2, signed_good)
        assert signed_by_jp(peer, receipt)
        assert receipt.rejections == ()
        assert_receipted(receipt, 2, signed_good, good.message_id)
    assert message_in(jp) == [good.message_id]


@pytest.mark.must("SIG-2")
async def test_the_payload_type_is_bound_by_the_signature(jp: Lone) -> None:
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        # A TW signature over the same bytes as another payload type (a receipt) ...
        as_receipt = signed_by(jp.pki, "TW", "type confusion", PAYLOAD_TYPE_RECEIPT)
        receipt = await peer.deliver(1, as_receipt)
        assert_rejected(receipt, 1, BAD_SIGNATURE, "payload type is")
        # ... relabelled as an envelope: the label is inside the signed bytes (DSSE PAE).
        # (Other bytes than the first attempt's: see test_refused_bytes_sent_again_...)
        relabelled = common_pb2.SignedPayload()
        relabelled.CopyFrom(signed_by(jp.pki, "TW", "type confusion 2", PAYLOAD_TYPE_RECEIPT))
        relabelled.payload_type = PAYLOAD_TYPE_ENVELOPE
        receipt = await peer.deliver(2, relabelled)
        assert_rejected(receipt, 2, BAD_SIGNATURE, "the signature does not match the payload")
        await assert_still_serving(jp, peer, 3, "after the confusion")
    assert [r[:2] for r in refused_inbound(jp)] == [(1, "BAD_SIGNATURE"), (2, "BAD_SIGNATURE")]
    assert len(message_in(jp)) == 1


async def test_refused_bytes_sent_again_are_refused_for_what_they_are(jp: Lone) -> None:
    """Refused bytes under a new sequence are checked afresh and refused again; under the
    sequence that refused them they are a resend, answered with the stored batch receipt."""
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        forged = signed_by(jp.pki, "JP", "signed with JP's key")
        first = await peer.deliver(1, forged)
        assert_rejected(first, 1, BAD_SIGNATURE, "signed by party JP's")
        again = await peer.deliver(2, forged)
        assert_rejected(again, 2, BAD_SIGNATURE, "signed by party JP's")
        resent = await peer.deliver(1, forged)
        assert raw(resent) == raw(first)
    assert [r[:2] for r in refused_inbound(jp)] == [(1, "BAD_SIGNATURE"), (2, "BAD_SIGNATURE")]
    assert message_in(jp) == []


@pytest.mark.must("LINK-15")
async def test_a_bad_delivery_does_not_spoil_its_batch(jp: Lone) -> None:
    """A batch is settled delivery by delivery in one signed batch receipt: a forgery among
    good deliveries is refused on its own, and the good ones are journaled."""
    before, after = tw_envelope("before the forgery"), tw_envelope("after the forgery")
    signed_before, signed_after = signed_tw(jp.pki, before), signed_tw(jp.pki, after)
    forged = signed_by(jp.pki, "JP", "a forgery in the middle")
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        receipt = await peer.deliver_batch(1, [signed_before, forged, signed_after])
        assert signed_by_jp(peer, receipt)
        assert [r.sequence for r in receipt.receipts] == [1, 3]
        assert_receipted(receipt, 1, signed_before, before.message_id)
        assert_receipted(receipt, 3, signed_after, after.message_id)
        [rejection] = receipt.rejections
        assert (rejection.sequence, rejection.reason) == (2, BAD_SIGNATURE)
        assert rejection.digest == sha256(forged.payload)
    assert message_in(jp) == [before.message_id, after.message_id]
    assert [e.sequence for e in jp.entries(Kind.MESSAGE_IN)] == [1, 3]
    assert [r[:2] for r in refused_inbound(jp)] == [(2, "BAD_SIGNATURE")]


# ------------------------------------------------------------------------------ wrong keys


@pytest.mark.must("ID-5")
async def test_a_valid_signature_by_the_wrong_partys_key_is_refused(jp: Lone) -> None:
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        # An envelope that looks like TW's, validly signed with JP's own signing key (which
        # JP's key ring knows, for JP's own party).
        forged = signed_by(jp.pki, "JP", "signed with JP's key")
        receipt = await peer.deliver(1, forged)
        assert_rejected(receipt, 1, BAD_SIGNATURE, "signed by party JP's key, expected party TW's")
        await assert_still_serving(jp, peer, 2, "after the forgery")
    assert [r[:2] for r in refused_inbound(jp)] == [(1, "BAD_SIGNATURE")]
    assert len(message_in(jp)) == 1


@pytest.mark.must("ID-5")
async def test_a_signature_by_an_unknown_key_is_refused(jp: Lone, tmp_path: Path) -> None:
    other = tmp_path / "other-pki"
    init_pki(other, ("TW", "XX"), ("watch-1",))  # another "TW" CA: not the one JP trusts
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        receipt = await peer.deliver(1, signed_by(other, "TW", "from a lookalike TW"))
        assert_rejected(receipt, 1, BAD_SIGNATURE, "unknown signing key id")
    assert message_in(jp) == []


@pytest.mark.must("LINK-7", "ID-5")
async def test_a_hello_carrying_the_wrong_partys_signing_certificate_is_refused(
    jp: Lone,
) -> None:
    async with fake_tw_peer(jp) as peer:
        await peer.hello([signing_der(jp.pki, "JP")])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await peer.next()
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "Hello carries party JP's signing key; the peer is TW" in (caught.value.details() or "")
    assert not jp.gateway.peer_service.status.up


@pytest.mark.must("LINK-7", "ID-5")
async def test_a_hello_carrying_an_untrusted_signing_certificate_is_refused(
    jp: Lone, tmp_path: Path
) -> None:
    other = tmp_path / "other-pki"
    init_pki(other, ("TW", "XX"), ("watch-1",))
    async with fake_tw_peer(jp) as peer:
        await peer.hello([signing_der(other, "TW")])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await peer.next()
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "signing certificate refused" in (caught.value.details() or "")
    assert "spiffe://tw.hotline/signing is not trusted" in (caught.value.details() or "")


async def test_a_hello_claiming_another_party_is_refused(jp: Lone) -> None:
    async with fake_tw_peer(jp) as peer:
        await peer.hello([signing_der(jp.pki, "TW")], party="JP")
        error = await peer.ended()
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "Hello claims party JP, but the caller is the TW gateway" in (error.details() or "")
    assert not jp.gateway.peer_service.status.up


async def test_an_envelope_claiming_another_sender_party_is_refused(jp: Lone) -> None:
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        # A well-formed JP->TW envelope, signed by TW, pushed on the TW->JP link.
        envelope = tw_envelope("I am JP, honestly")
        envelope.sender_party = "JP"
        envelope.recipient_party = "TW"
        envelope.originator = "spiffe://jp.hotline/operator/watch-1"
        receipt = await peer.deliver(1, signed_tw(jp.pki, envelope))
        rejection = assert_rejected(receipt, 1, WRONG_PARTY, "envelope is JP->TW")
        assert rejection.message_id == envelope.message_id  # verified, so it may be named
    assert [r[:2] for r in refused_inbound(jp)] == [(1, "WRONG_PARTY")]
    assert message_in(jp) == []


@pytest.mark.must("ID-4", "LINK-14")
async def test_an_originator_outside_the_senders_trust_domain_is_refused(jp: Lone) -> None:
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        envelope = tw_envelope("signed by TW in a JP officer's name")
        envelope.originator = "spiffe://jp.hotline/operator/watch-1"
        receipt = await peer.deliver(1, signed_tw(jp.pki, envelope))
        assert_rejected(receipt, 1, WRONG_PARTY, "originator")
    assert message_in(jp) == []


@pytest.mark.must("ID-5", "ID-6")
async def test_a_revoked_signing_key_is_refused(jp: Lone) -> None:
    reloaded = jp.gateway.authorizer.generation
    revoke(jp.pki, "TW", PartyPaths.of(jp.pki, "TW").signing_cert, reason="key_compromise")
    await eventually(  # the gateway polls the CRL files every 2 s
        lambda: jp.gateway.authorizer.generation > reloaded, "the CRLs to be reloaded"
    )
    async with fake_tw_peer(jp) as peer:
        refused: grpc.aio.AioRpcError | None = None
        try:
            await peer.open([signing_der(jp.pki, "TW")])
        except grpc.aio.AioRpcError as exc:  # refusing the Hello is a correct answer too
            refused = exc
        if refused is not None:
            assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
            assert "has been revoked" in (refused.details() or "")
        else:
            receipt = await peer.deliver(1, signed_by(jp.pki, "TW", "with a revoked key"))
            assert_rejected(receipt, 1, BAD_SIGNATURE, "revoked")
    assert message_in(jp) == []


# ------------------------------------------------------------------------------ message ids


@pytest.mark.must("LINK-14")
async def test_a_message_id_of_jp_itself_is_refused(jp: Lone) -> None:
    """TW may not journal a message under an id JP already used for its own: ids are unique
    across both parties, so the delivery is refused as INVALID_MESSAGE (not as a duplicate,
    which would point at a batch receipt that does not exist)."""
    ch = operator_of(jp.pki, "JP", "watch-1", jp.port, "JP")
    try:
        sent = await operator_pb2_grpc.OperatorServiceStub(ch).Send(
            operator_pb2.SendRequest(envelope=free_text("JP's own message")), timeout=WAIT
        )
    finally:
        await ch.close()
    hijack = tw_envelope("TW's message under JP's id", message_id=sent.message_id)
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        receipt = await peer.deliver(1, signed_tw(jp.pki, hijack))
        rejection = assert_rejected(
            receipt, 1, INVALID_MESSAGE, "already names a message of party JP"
        )
        assert rejection.original_receipt is None
        await assert_still_serving(jp, peer, 2, "a fresh id")
    assert [r[:2] for r in refused_inbound(jp)] == [(1, "INVALID_MESSAGE")]
    record = jp.gateway.store.record(sent.message_id)
    assert record is not None
    assert record.direction == operator_pb2.DIRECTION_OUTBOUND
    assert record.state == operator_pb2.DELIVERY_STATE_JOURNALED
    assert record.envelope.sender_party == "JP"
    assert sent.message_id not in message_in(jp)


# ------------------------------------------------------------------------------ ordering


@pytest.mark.must("LINK-17", "LINK-24")
async def test_a_sequence_gap_ends_the_stream_and_settles_nothing(jp: Lone) -> None:
    """Version 1 refused a delivery out of order with a Rejection; now the stream ends with
    FAILED_PRECONDITION `OUT_OF_ORDER:`, nothing is journaled and no sequence is consumed."""
    envelope = tw_envelope("skipping ahead")
    signed = signed_tw(jp.pki, envelope)
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        await peer.push(2, [signed])
        error = await peer.ended()
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert (error.details() or "").startswith("OUT_OF_ORDER:"), error.details()
    assert "expected sequence 1" in (error.details() or "")
    assert message_in(jp) == []
    assert refused_inbound(jp) == []
    assert jp.gateway.store.record(envelope.message_id) is None

    # The link resynchronises through Hello and Welcome, and the message was not consumed.
    async with fake_tw_peer(jp) as peer:
        welcome = await peer.open([signing_der(jp.pki, "TW")])
        assert welcome.last_sequence == 0
        receipt = await peer.deliver(1, signed)
        assert_receipted(receipt, 1, signed, envelope.message_id)
    assert message_in(jp) == [envelope.message_id]


@pytest.mark.must("LINK-17")
async def test_a_settled_sequence_cannot_be_rewritten(jp: Lone) -> None:
    """A resend of a settled sequence with other bytes (validly signed by TW) does not replace
    what JP journaled: the stream ends with `OUT_OF_ORDER:` and the journal is unchanged."""
    original, substitute = tw_envelope("the original order"), tw_envelope("a substitute order")
    signed_original, signed_substitute = (
        signed_tw(jp.pki, original),
        signed_tw(jp.pki, substitute),
    )
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        first = await peer.deliver(1, signed_original)
        assert_receipted(first, 1, signed_original, original.message_id)
        await peer.push(1, [signed_substitute])
        error = await peer.ended()
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert (error.details() or "").startswith("OUT_OF_ORDER:"), error.details()
    assert "resent with other bytes" in (error.details() or "")
    assert message_in(jp) == [original.message_id]
    assert refused_inbound(jp) == []
    record = jp.gateway.store.record(original.message_id)
    assert record is not None
    assert record.sequence == 1
    assert record.signed_envelope.payload == signed_original.payload
    assert jp.gateway.store.record(substitute.message_id) is None

    # After a reconnect JP resends the stored batch receipt for sequence 1, byte for byte, and
    # the substitute (never consumed) travels as the next sequence.
    async with fake_tw_peer(jp) as peer:
        welcome = await peer.open([signing_der(jp.pki, "TW")])
        assert welcome.last_sequence == 1
        assert [raw(r) for r in welcome.batch_receipts] == [raw(first)]
        receipt = await peer.deliver(2, signed_substitute)
        assert_receipted(receipt, 2, signed_substitute, substitute.message_id)
    assert message_in(jp) == [original.message_id, substitute.message_id]


async def test_one_message_twice_in_one_batch_is_journaled_once(jp: Lone) -> None:
    """The same message id twice before its first delivery is settled: no batch receipt can
    point at the original yet, so JP ends the stream and journals nothing of the batch; the
    id is journaled once when it is sent properly."""
    envelope = tw_envelope("twice in one batch")
    signed = signed_tw(jp.pki, envelope)
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        await peer.push(1, [signed, signed])
        error = await peer.ended()
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "sent twice before its first batch was settled" in (error.details() or "")
    assert message_in(jp) == []
    async with fake_tw_peer(jp) as peer:
        welcome = await peer.open([signing_der(jp.pki, "TW")])
        assert welcome.last_sequence == 0
        receipt = await peer.deliver(1, signed)
        assert_receipted(receipt, 1, signed, envelope.message_id)
    assert message_in(jp) == [envelope.message_id]


# ------------------------------------------------------------------------------ replay


async def test_each_welcome_is_signed_over_its_own_hellos_nonce(jp: Lone) -> None:
    """JP proves itself to every dialler afresh: each stream's Welcome is signed by JP's
    signing key over that stream's nonce (FakePeer.open checks both), so a recorded Welcome
    is worthless on another stream. A Hello whose nonce is too short to be fresh is refused."""
    nonces: list[bytes] = []
    frames: list[bytes] = []
    for _ in range(2):
        async with fake_tw_peer(jp) as peer:
            welcome = await peer.open([signing_der(jp.pki, "TW")])
            assert peer.welcome_frame is not None
            assert peer.keyring is not None
            key = peer.keyring.key(peer.welcome_frame.welcome.key_id)
            assert key is not None
            assert key.party == "JP"
            nonces.append(welcome.hello_nonce)
            frames.append(peer.welcome_frame.welcome.SerializeToString())
    assert nonces[0] != nonces[1]
    assert frames[0] != frames[1]

    async with fake_tw_peer(jp) as peer:
        await peer.hello([signing_der(jp.pki, "TW")], nonce=b"\x00" * 15)
        error = await peer.ended()
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "Hello nonce has 15 bytes, must be 16..64" in (error.details() or "")


async def watched_received(jp: Lone) -> list[str]:
    """Message ids of every MESSAGE_RECEIVED event a JP operator's Watch replays."""
    ch = operator_of(jp.pki, "JP", "watch-1", jp.port, "JP")
    ids: list[str] = []
    try:
        call = operator_pb2_grpc.OperatorServiceStub(ch).Watch(
            operator_pb2.WatchRequest(kinds=[operator_pb2.EVENT_KIND_MESSAGE_RECEIVED])
        )
        head = jp.gateway.journal.head[0]
        while True:  # replay up to the journal's head (the stream itself never ends)
            try:
                response = await asyncio.wait_for(call.read(), 1.0)
            except TimeoutError:
                break
            assert isinstance(response, operator_pb2.WatchResponse)
            ids.extend(e.message_id for e in response.events)
            if response.events[-1].cursor >= head:
                break
        call.cancel()
    finally:
        await ch.close()
    return ids


@pytest.mark.must("LINK-14")
async def test_a_replayed_message_is_journaled_once(jp: Lone) -> None:
    envelope = tw_envelope("only once")
    signed = signed_tw(jp.pki, envelope)
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        first = await peer.deliver(1, signed)
        assert_receipted(first, 1, signed, envelope.message_id)

        # The same delivery again at the same sequence: the stored batch receipt, byte for byte.
        again = await peer.deliver(1, signed)
        assert raw(again) == raw(first)

        # The same signed envelope at a new sequence: refused as a duplicate, with the
        # original batch receipt (which covers the same bytes, so the sender counts it
        # delivered).
        duplicate = await peer.deliver(2, signed)
        rejection = assert_rejected(duplicate, 2, DUPLICATE, "message id already received")
        assert rejection.message_id == envelope.message_id
        assert rejection.original_receipt is not None
        assert raw(rejection.original_receipt) == raw(first)
        held = rejection.original_receipt.receipt_for(envelope.message_id)
        assert held is not None
        assert held.digest == sha256(signed.payload)

    # A new stream (a reconnect) that missed the last batch receipt: the Welcome resends it,
    # signed as before; and the same envelope once more is still a duplicate.
    async with fake_tw_peer(jp) as peer:
        welcome = await peer.open([signing_der(jp.pki, "TW")], last_receipted=1)
        assert welcome.last_sequence == 2
        assert [raw(r) for r in welcome.batch_receipts] == [raw(duplicate)]
        receipt = await peer.deliver(3, signed)
        rejection = assert_rejected(receipt, 3, DUPLICATE, "message id already received")
        assert rejection.original_receipt is not None
        assert raw(rejection.original_receipt) == raw(first)

    assert message_in(jp) == [envelope.message_id]
    assert [r[:2] for r in refused_inbound(jp)] == [
        (2, "DUPLICATE_MESSAGE_ID"),
        (3, "DUPLICATE_MESSAGE_ID"),
    ]
    ch = operator_of(jp.pki, "JP", "watch-1", jp.port, "JP")
    try:
        listing = await operator_pb2_grpc.OperatorServiceStub(ch).ListMessages(
            operator_pb2.ListMessagesRequest(), timeout=WAIT
        )
    finally:
        await ch.close()
    assert [m.envelope.message_id for m in listing.messages] == [envelope.message_id]
    assert listing.messages[0].sequence == 1
    assert await watched_received(jp) == [envelope.message_id]


async def test_jp_keeps_serving_the_real_peer_link_after_the_attacks(jp: Lone) -> None:
    """Refusals never wedge the link: the sequence advances and later deliveries are receipted."""
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        attacks = [
            signed_by(jp.pki, "JP", "wrong key"),
            signed_by(jp.pki, "TW", "wrong type", PAYLOAD_TYPE_RECEIPT),
        ]
        for sequence, signed in enumerate(attacks, start=1):
            receipt = await peer.deliver(sequence, signed)
            assert_rejected(receipt, sequence, BAD_SIGNATURE, "")
        ids = [
            await assert_still_serving(jp, peer, sequence, f"good {sequence}")
            for sequence in range(len(attacks) + 1, len(attacks) + 4)
        ]
    await eventually(lambda: message_in(jp) == ids, "three messages journaled in order")
