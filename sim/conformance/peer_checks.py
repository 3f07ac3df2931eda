"""The `peer` role's dialling checks: the suite is the other party's gateway, pushing to the
target's `PeerLinkService`.

They run in the order registered, on one `PeerSession`; each opens its own stream(s), so a
check that makes the target end a stream leaves the next one a clean start. The link's state
(the last settled sequence) carries over from check to check, as it would between a real
gateway's connections.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import grpc
from cryptography.hazmat.primitives.serialization import Encoding

from certs.errors import CertsError
from certs.identity import Role as IdentityRole
from certs.identity import identity_of
from certs.pki import load_certificate
from certs.verify import verify_chain
from hotline import link, wire
from hotline.errors import RemoteProtocolError
from hotline.signing import PAYLOAD_TYPE_CHECKPOINT, sha256
from hotline.transport import gateway_host
from hotline.v1 import common_pb2, envelope_pb2, peer_link_pb2
from sim.conformance.examples import Adapter, Example, free_text, load_refused
from sim.conformance.material import read_server_certificate
from sim.conformance.pushlink import Opened, PeerSession, PushStream, settlement_problems
from sim.conformance.registry import Failed, Skipped, check, expect

S = "Processing a delivery"
ENDING = "Ending a stream"


def _adapter(s: PeerSession) -> Adapter:
    """Examples fit for the suite's stream, which is on the ROUTINE lane."""
    return Adapter(s.us, s.target, lane=link.ROUTINE_LANE)


async def _expect_end(
    stream: PushStream, code: grpc.StatusCode, *, starts: str = "", why: str
) -> str:
    ended = await stream.ended()
    if ended is None:
        raise Failed(
            f"{why}: the stream is still open after {stream.timeout:g} s; the spec ends "
            f"it with {code.name}"
        )
    expect(
        ended.code == code,
        f"{why}: the stream ended with {ended.describe()}; the spec says {code.name}",
    )
    if starts:
        expect(
            ended.details.startswith(starts),
            f"{why}: status message {ended.details!r} does not start {starts!r}",
        )
    return ended.describe()


# ---------------------------------------------------------------------------- connection


@check(
    "peer.tls.identity",
    "the target's TLS certificate is its party's gateway, pinned and not revoked",
    spec="Topology",
    musts=("receiver-cert-pinned-name", "receiver-cert-gateway-spiffe-id"),
)
async def tls_identity(s: PeerSession) -> str:
    cert_path, key_path, ca = s.material.gateway_files()
    cert = await read_server_certificate(
        s.address, cert=cert_path, key=key_path, cafiles=[ca], server_name=gateway_host(s.target)
    )
    try:
        verify_chain(cert, load_certificate(ca))
        identity = identity_of(cert)
    except CertsError as exc:
        raise Failed(f"the certificate fails the checks: {exc}") from None
    expect(
        identity.role is IdentityRole.GATEWAY and identity.party == s.target,
        f"the certificate names {identity.spiffe_id}, not the {s.target} gateway",
    )
    expect(not s.material.revocations().is_revoked(cert), "the certificate is revoked")
    return f"{identity.spiffe_id}, DNS {gateway_host(s.target)}, issued by the {s.target} CA"


@check(
    "peer.hello.welcome",
    "the Welcome comes first, signed by the target's signing key over our Hello's nonce",
    spec="Frames",
    musts=(
        "welcome-first-response-frame",
        "welcome-signed-over-hello-nonce",
        "welcome-signing-certificates-of-receiver",
        "welcome-settles-every-sequence-after-hello",
    ),
)
async def hello_welcome(s: PeerSession) -> str:
    opened = await s.open()
    w = opened.welcome
    return (
        f"signed by {s.target} (key {opened.frame.welcome.key_id[:12]}…), nonce echoed, "
        f"last_sequence {w.last_sequence}, {len(w.batch_receipts)} batch receipt(s) verified"
    )


@check(
    "peer.hello.fresh-nonce",
    "each new stream's Welcome signs that stream's nonce",
    spec="Resume after a reconnect",
    musts=("welcome-signed-over-hello-nonce",),
)
async def hello_fresh_nonce(s: PeerSession) -> str:
    first = await s.open()
    second = await s.open()
    expect(first.nonce != second.nonce, "our two nonces were equal (suite bug)")
    expect(
        first.frame.welcome.signature != second.frame.welcome.signature,
        "two Welcomes over different nonces carry the same signature",
    )
    return "two streams, two nonces, two Welcomes each over its own"


@check(
    "peer.heartbeat.pong",
    "a Ping is answered at once with a Pong echoing its nonce and time",
    spec="Heartbeats and liveness",
    musts=("answer-ping-with-pong",),
)
async def heartbeat(s: PeerSession) -> str:
    opened = await s.open()
    pong = await opened.stream.ping()
    expect(pong.HasField("origin_time"), "the Pong carries no origin_time")
    expect(
        pong.HasField("receive_time") and pong.HasField("transmit_time"),
        "the Pong lacks receive_time or transmit_time",
    )
    rtt = wire.from_timestamp(pong.transmit_time) - wire.from_timestamp(pong.receive_time)
    expect(rtt >= 0, "the Pong's transmit_time is before its receive_time")
    return "Pong with the Ping's nonce and origin_time, and the target's two times"


@check(
    "peer.checkpoint.witnessed-in-welcome",
    "a checkpoint of our journal the target witnessed comes back in its next Welcome",
    spec="Journal loss",
    musts=("welcome-carries-witnessed-checkpoint",),
)
async def witnessed_checkpoint(s: PeerSession) -> str:
    # A checkpoint of a journal of ours larger than any we could have sent before (a size
    # from the clock), so that the target's witness takes it as the newest, never as a fork.
    count = time.time_ns() // 1_000_000
    body = peer_link_pb2.CheckpointBody(
        party=s.us, entry_count=count, head_hash=secrets.token_bytes(32)
    )
    body.create_time.FromNanoseconds(time.time_ns())
    signed = s.signer.sign(PAYLOAD_TYPE_CHECKPOINT, body.SerializeToString())
    opened = await s.open()
    await opened.stream.send(
        peer_link_pb2.PushRequest(checkpoint=peer_link_pb2.Checkpoint(checkpoint=signed))
    )
    await opened.stream.ping()  # the checkpoint frame was read before the Ping was answered
    deadline = time.monotonic() + s.timeout
    while True:
        carried = (await s.open()).frame
        if carried.witnessed_checkpoint == signed:
            return f"our checkpoint at {count} entries came back byte for byte"
        if time.monotonic() > deadline:
            raise Failed(
                "the next Welcome does not carry the checkpoint we sent"
                + ("" if carried.HasField("witnessed_checkpoint") else " (it carries none)")
            )
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------------------- deliveries


async def _deliver_examples(
    s: PeerSession, examples: list[Example], adapter: Adapter
) -> tuple[list[Example], list[str], list[common_pb2.SignedPayload], link.BatchReceipt, int]:
    envelopes = [adapter.adapt(e) for e in examples]
    payloads = [s.sign(env) for env in envelopes]
    ids = [env.message_id for env in envelopes]
    opened = await s.open()
    settled = await s.deliver(opened.stream, payloads, ids)
    return examples, ids, payloads, settled.receipt, settled.first


@check(
    "peer.deliver.valid-examples",
    "every valid golden example (fresh ids and times) is receipted",
    spec=S,
    musts=("deliver-valid-receipted", "batch-settled-by-one-receipt"),
)
async def valid_examples(s: PeerSession) -> str:
    valid = s.examples[0]
    adapter = _adapter(s)
    adapter.reserve(valid)
    # an update, cancel or acknowledgement after the message it refers to
    ordered = sorted(valid, key=lambda e: "references:" in e.text)
    examples, _, _, receipt, first = await _deliver_examples(s, ordered, adapter)
    for i, example in enumerate(examples):
        item = next((r for r in receipt.receipts if r.sequence == first + i), None)
        if item is not None:
            s.items.ok(example.name, f"sequence {first + i}")
            continue
        refused = next(r for r in receipt.rejections if r.sequence == first + i)
        s.items.fail(example.name, f"rejected {refused.reason.value}: {refused.detail}")
    return s.items.verdict("receipted in one batch receipt")


@check(
    "peer.deliver.invalid-examples",
    "every invalid golden example is rejected INVALID_MESSAGE, naming its violations' fields",
    spec=S,
    musts=("reject-constraint-violation-invalid-message", "rejection-lists-violations"),
)
async def invalid_examples(s: PeerSession) -> str:
    invalid = s.examples[1]
    adapter = _adapter(s)
    adapter.reserve(s.examples[0])
    examples, _, _, receipt, first = await _deliver_examples(s, invalid, adapter)
    for i, example in enumerate(examples):
        refused = next((r for r in receipt.rejections if r.sequence == first + i), None)
        if refused is None:
            s.items.fail(example.name, "receipted, not rejected")
            continue
        if refused.reason is not link.RejectReason.INVALID_MESSAGE:
            s.items.fail(example.name, f"rejected {refused.reason.value}, not INVALID_MESSAGE")
            continue
        got = sorted(field for field, _ in refused.violations)
        if got != example.paths:
            s.items.fail(example.name, f"violations name {got}, expected {example.paths}")
            continue
        s.items.ok(example.name, ", ".join(got))
    return s.items.verdict("rejected INVALID_MESSAGE with the expected field paths")


@check(
    "peer.deliver.refused-examples",
    "every refused golden example (it breaks an acceptance check, not a constraint) is "
    "rejected for the reason it states",
    spec=S,
    musts=("reject-wrong-party", "reject-not-releasable", "deliver-checks-in-order"),
)
async def refused_examples(s: PeerSession) -> str:
    refused = load_refused(s.examples_dir)
    if not refused:
        raise Skipped(f"no refused/ examples in {s.examples_dir}")
    adapter = _adapter(s)
    adapter.reserve(s.examples[0])
    examples, _, _, receipt, first = await _deliver_examples(s, refused, adapter)
    for i, example in enumerate(examples):
        item = next((r for r in receipt.rejections if r.sequence == first + i), None)
        if item is None:
            s.items.fail(example.name, "receipted")
        elif item.reason.value != example.rejection:
            s.items.fail(example.name, f"rejected {item.reason.value}, not {example.rejection}")
        else:
            s.items.ok(example.name, item.reason.value)
    return s.items.verdict("rejected for the stated reason")


@check(
    "peer.reject.bad-signature",
    "a delivery whose signature does not verify is rejected BAD_SIGNATURE",
    spec=S,
    musts=("reject-bad-signature", "verify-signature-before-parse"),
)
async def bad_signature(s: PeerSession) -> str:
    cases: list[tuple[str, common_pb2.SignedPayload]] = []
    env = free_text(s.us, s.target, "bad signature: one bit flipped")
    flipped = s.sign(env)
    flipped.signature = bytes([flipped.signature[0] ^ 1]) + flipped.signature[1:]
    cases.append(("signature with one bit flipped", flipped))
    env = free_text(s.us, s.target, "bad signature: checkpoint payload type")
    cases.append(
        ("signed as a Checkpoint", s.signer.sign(PAYLOAD_TYPE_CHECKPOINT, env.SerializeToString()))
    )
    env = free_text(s.us, s.target, "bad signature: unknown key")
    unknown = s.sign(env)
    unknown.key_id = sha256(b"no such key").hex()
    cases.append(("unknown key id", unknown))
    env = free_text(s.us, s.target, "bad signature: not a payload")
    garbage = s.sign(env)
    garbage.payload = garbage.payload + b"\x00"  # the signature no longer covers the bytes
    cases.append(("payload changed after signing", garbage))
    theirs = s.material.target_signer()
    if theirs is not None:
        env = free_text(s.us, s.target, "bad signature: the receiver's own key")
        cases.append(("signed with the target party's key", s.sign(env, theirs)))
    opened = await s.open()
    settled = await s.deliver(opened.stream, [p for _, p in cases], ["" for _ in cases])
    for i, (name, _) in enumerate(cases):
        refused = settled.rejection(settled.first + i)
        if refused is None:
            s.items.fail(name, "receipted")
        elif refused.reason is not link.RejectReason.BAD_SIGNATURE:
            s.items.fail(name, f"rejected {refused.reason.value}")
        else:
            s.items.ok(name)
    return s.items.verdict("rejected BAD_SIGNATURE")


@check(
    "peer.reject.wrong-party",
    "an envelope not from the authenticated sender's people is rejected WRONG_PARTY",
    spec=S,
    musts=("reject-wrong-party",),
)
async def wrong_party(s: PeerSession) -> str:
    third = "ZZ" if "ZZ" not in (s.us, s.target) else "ZY"
    cases = []
    env = free_text(s.us, s.target, "wrong party: originator of the receiving party")
    env.originator = f"spiffe://{s.target.lower()}.hotline/operator/conformance"
    cases.append(("originator in the receiver's trust domain", env))
    env = free_text(third, s.target, "wrong party: sender is a third party")
    cases.append((f"sender_party {third}", env))
    env = free_text(s.us, third, "wrong party: recipient is a third party")
    cases.append((f"recipient_party {third}", env))
    opened = await s.open()
    payloads = [s.sign(e) for _, e in cases]
    settled = await s.deliver(opened.stream, payloads, [e.message_id for _, e in cases])
    for i, (name, _) in enumerate(cases):
        refused = settled.rejection(settled.first + i)
        if refused is None:
            s.items.fail(name, "receipted")
        elif refused.reason is not link.RejectReason.WRONG_PARTY:
            s.items.fail(name, f"rejected {refused.reason.value}: {refused.detail}")
        else:
            s.items.ok(name)
    return s.items.verdict("rejected WRONG_PARTY")


# ---------------------------------------------------------------------------- exactly once


async def _one_receipted(
    s: PeerSession, opened: Opened, text: str
) -> tuple[str, common_pb2.SignedPayload, int]:
    env = free_text(s.us, s.target, text)
    payload = s.sign(env)
    settled = await s.deliver(opened.stream, [payload], [env.message_id])
    expect(
        settled.receipt_item(settled.first) is not None,
        f"a valid message was rejected: {settled.rejection(settled.first)}",
    )
    return env.message_id, payload, settled.first


@check(
    "peer.duplicate.sequence",
    "a settled sequence resent with the same bytes gets its stored batch receipt again",
    spec=S,
    musts=("resend-same-bytes-stored-receipt",),
)
async def duplicate_sequence(s: PeerSession) -> str:
    opened = await s.open()
    _, payload, sequence = await _one_receipted(s, opened, "duplicate by sequence")
    original = s.held[sequence]
    batch = peer_link_pb2.DeliveryBatch()
    batch.deliveries.add(sequence=sequence, envelope=payload)
    await opened.stream.send(peer_link_pb2.PushRequest(deliveries=batch))
    frame = await opened.stream.expect_frame(
        "batch_receipt", f"the stored batch receipt for sequence {sequence}"
    )
    expect(
        frame.batch_receipt.receipt.SerializeToString()
        == wire.signed_of(original).SerializeToString(),
        "the batch receipt answering the resend differs from the one that settled it",
    )
    await opened.stream.ping()  # the stream is still up: the resend did not end it
    return f"sequence {sequence} resent: the same signed batch receipt, stream still open"


@check(
    "peer.duplicate.message-id",
    "a message id delivered again under a new sequence is rejected DUPLICATE_MESSAGE_ID "
    "with the original batch receipt",
    spec=S,
    musts=("reject-duplicate-message-id", "duplicate-carries-original-receipt"),
)
async def duplicate_message_id(s: PeerSession) -> str:
    opened = await s.open()
    message_id, payload, sequence = await _one_receipted(s, opened, "duplicate by id")
    settled = await s.deliver(opened.stream, [payload], [message_id])
    refused = settled.rejection(settled.first)
    expect(refused is not None, f"{message_id} was receipted twice")
    assert refused is not None
    expect(
        refused.reason is link.RejectReason.DUPLICATE_MESSAGE_ID,
        f"rejected {refused.reason.value}, not DUPLICATE_MESSAGE_ID",
    )
    original = refused.original_receipt
    expect(original is not None, "the rejection carries no original_receipt")
    assert original is not None
    held = original.receipt_for(message_id)
    expect(held is not None, f"the original receipt does not receipt {message_id}")
    assert held is not None
    expect(
        held.sequence == sequence,
        f"the original receipt puts it at {held.sequence}, it was settled at {sequence}",
    )
    expect(held.digest == sha256(payload.payload), "the original receipt covers other bytes")
    return f"sequence {settled.first} refused, original receipt of sequence {sequence} verified"


@check(
    "peer.out-of-order.gap",
    "a delivery beyond the next sequence ends the stream FAILED_PRECONDITION "
    "'OUT_OF_ORDER:' and consumes nothing",
    spec=S,
    musts=("out-of-order-ends-stream-failed-precondition", "out-of-order-consumes-no-sequence"),
)
async def out_of_order_gap(s: PeerSession) -> str:
    opened = await s.open()
    before = opened.welcome.last_sequence
    env = free_text(s.us, s.target, "out of order: a gap")
    batch = peer_link_pb2.DeliveryBatch()
    batch.deliveries.add(sequence=before + 2, envelope=s.sign(env))
    await opened.stream.send(peer_link_pb2.PushRequest(deliveries=batch))
    ended = await _expect_end(
        opened.stream,
        grpc.StatusCode.FAILED_PRECONDITION,
        starts="OUT_OF_ORDER:",
        why=f"sequence {before + 2} when {before + 1} was expected",
    )
    after = await s.open()
    expect(
        after.welcome.last_sequence == before,
        f"the next Welcome says {after.welcome.last_sequence}, it was {before}: the gap "
        "consumed a sequence",
    )
    return f"{ended}; last_sequence still {before}"


@check(
    "peer.out-of-order.changed-resend",
    "a settled sequence resent with other bytes ends the stream FAILED_PRECONDITION "
    "'OUT_OF_ORDER:'",
    spec=S,
    musts=("resend-other-bytes-ends-stream",),
)
async def out_of_order_changed(s: PeerSession) -> str:
    opened = await s.open()
    _, _, sequence = await _one_receipted(s, opened, "changed resend: the original")
    env = free_text(s.us, s.target, "changed resend: other bytes")
    batch = peer_link_pb2.DeliveryBatch()
    batch.deliveries.add(sequence=sequence, envelope=s.sign(env))
    await opened.stream.send(peer_link_pb2.PushRequest(deliveries=batch))
    return await _expect_end(
        opened.stream,
        grpc.StatusCode.FAILED_PRECONDITION,
        starts="OUT_OF_ORDER:",
        why=f"sequence {sequence} resent with other bytes",
    )


@check(
    "peer.resume.lost-receipt",
    "after a reconnect the Welcome resends the batch receipts we say we lack",
    spec="Resume after a reconnect",
    musts=("welcome-resends-receipts-after-hello", "welcome-settles-every-sequence-after-hello"),
)
async def resume_lost_receipt(s: PeerSession) -> str:
    opened = await s.open()
    before = opened.welcome.last_sequence
    env = [free_text(s.us, s.target, f"lost receipt {i}") for i in range(3)]
    payloads = [s.sign(e) for e in env]
    settled = await s.deliver(opened.stream, payloads, [e.message_id for e in env])
    got = wire.signed_of(settled.receipt).SerializeToString()
    # As if the connection had died before this batch receipt arrived: say we hold only `before`.
    again = await s.open(last_receipted=before)
    expect(
        again.welcome.last_sequence >= settled.first + 2,
        f"the Welcome says last_sequence {again.welcome.last_sequence}, but "
        f"{settled.first}..{settled.first + 2} were settled",
    )
    resent = [wire.signed_of(r).SerializeToString() for r in again.welcome.batch_receipts]
    expect(got in resent, "the Welcome does not carry the batch receipt that settled our batch")
    return (
        f"Hello at {before}: the Welcome resent {len(resent)} batch receipt(s), with ours for "
        f"{settled.first}..{settled.first + 2}"
    )


@check(
    "peer.batch-receipt.verified",
    "every batch receipt is signed by the target and settles exactly the batch sent, in order, "
    "with its ids and digests",
    spec="Processing a delivery",
    musts=(
        "batch-receipt-signed-by-receiver",
        "batch-receipt-settles-every-sequence-once",
        "batch-receipt-in-sequence-order",
        "receipt-digest-of-payload",
    ),
)
async def batch_receipts(s: PeerSession) -> str:
    if not s.receipts_checked:
        raise Skipped("no batch receipt was received")
    if s.receipt_problems:
        raise Failed(f"{len(s.receipt_problems)} problem(s): " + "; ".join(s.receipt_problems[:3]))
    return f"{s.receipts_checked} batch receipts verified"


# ---------------------------------------------------------------------------- stream ends


@check(
    "peer.stream.hello-first",
    "a stream that does not open with Hello ends FAILED_PRECONDITION",
    spec=ENDING,
    musts=("hello-first-request-frame",),
)
async def hello_first(s: PeerSession) -> str:
    s.close_streams()
    stream = s.call()
    env = free_text(s.us, s.target, "before the Hello")
    batch = peer_link_pb2.DeliveryBatch()
    batch.deliveries.add(sequence=s.settled_up_to + 1, envelope=s.sign(env))
    await stream.send(peer_link_pb2.PushRequest(deliveries=batch))
    return await _expect_end(stream, grpc.StatusCode.FAILED_PRECONDITION, why="a delivery first")


@check(
    "peer.stream.second-hello",
    "a second Hello on a stream ends it FAILED_PRECONDITION",
    spec=ENDING,
    musts=("hello-not-repeated",),
)
async def second_hello(s: PeerSession) -> str:
    opened = await s.open()
    await opened.stream.send(s.hello())
    return await _expect_end(opened.stream, grpc.StatusCode.FAILED_PRECONDITION, why="Hello twice")


async def _refused_hello(
    s: PeerSession, request: peer_link_pb2.PushRequest, code: grpc.StatusCode, why: str
) -> str:
    s.close_streams()
    stream = s.call()
    await stream.send(request)
    return await _expect_end(stream, code, why=why)


@check(
    "peer.stream.hello-party",
    "a Hello claiming another party than the caller's certificate ends PERMISSION_DENIED",
    spec=ENDING,
    musts=("hello-party-is-caller",),
)
async def hello_party(s: PeerSession) -> str:
    return await _refused_hello(
        s,
        s.hello(party=s.target),
        grpc.StatusCode.PERMISSION_DENIED,
        f"Hello.party {s.target} from the {s.us} gateway",
    )


@check(
    "peer.stream.hello-version",
    "a Hello of an unsupported protocol version ends FAILED_PRECONDITION",
    spec=ENDING,
    musts=("unsupported-version-failed-precondition",),
)
async def hello_version(s: PeerSession) -> str:
    return await _refused_hello(
        s, s.hello(version=999), grpc.StatusCode.FAILED_PRECONDITION, "protocol_version 999"
    )


@check(
    "peer.stream.hello-signing-certificate",
    "a Hello whose signing certificate is not one of the sender's signing certificates ends "
    "PERMISSION_DENIED",
    spec=ENDING,
    musts=("hello-signing-certificates-of-sender",),
)
async def hello_signing_certificate(s: PeerSession) -> str:
    cert, _, _ = s.material.gateway_files()
    tls_der = load_certificate(cert).public_bytes(Encoding.DER)
    return await _refused_hello(
        s,
        s.hello(signing_certificates=[tls_der]),
        grpc.StatusCode.PERMISSION_DENIED,
        "our TLS gateway certificate offered as a signing certificate",
    )


@check(
    "peer.stream.data-loss",
    "a Hello claiming settlements beyond the target's last sequence ends DATA_LOSS",
    spec="Resume after a reconnect",
    musts=("hello-beyond-last-sequence-data-loss",),
)
async def data_loss(s: PeerSession) -> str:
    opened = await s.open()
    claim = opened.welcome.last_sequence + 10
    return await _refused_hello(
        s,
        s.hello(last_receipted=claim),
        grpc.StatusCode.DATA_LOSS,
        f"last_receipted_sequence {claim} > last_sequence {opened.welcome.last_sequence}",
    )


@check(
    "peer.stream.empty-frame",
    "a frame with no member set ends the stream INVALID_ARGUMENT",
    spec=ENDING,
    musts=("empty-frame-invalid-argument",),
)
async def empty_frame(s: PeerSession) -> str:
    opened = await s.open()
    await opened.stream.send(peer_link_pb2.PushRequest())
    return await _expect_end(opened.stream, grpc.StatusCode.INVALID_ARGUMENT, why="an empty frame")


@check(
    "peer.stream.bad-batch",
    "an empty or non-consecutive delivery batch ends the stream INVALID_ARGUMENT",
    spec=ENDING,
    musts=("bad-batch-invalid-argument",),
)
async def bad_batch(s: PeerSession) -> str:
    opened = await s.open()
    await opened.stream.send(peer_link_pb2.PushRequest(deliveries=peer_link_pb2.DeliveryBatch()))
    first = await _expect_end(opened.stream, grpc.StatusCode.INVALID_ARGUMENT, why="an empty batch")
    opened = await s.open()
    batch = peer_link_pb2.DeliveryBatch()
    n = opened.welcome.last_sequence + 1
    for sequence in (n, n + 2):
        batch.deliveries.add(
            sequence=sequence, envelope=s.sign(free_text(s.us, s.target, "not consecutive"))
        )
    await opened.stream.send(peer_link_pb2.PushRequest(deliveries=batch))
    second = await _expect_end(
        opened.stream, grpc.StatusCode.INVALID_ARGUMENT, why=f"a batch of {n} and {n + 2}"
    )
    after = await s.open()
    expect(after.welcome.last_sequence == n - 1, "the refused batch consumed a sequence")
    return f"empty: {first}; not consecutive: {second}"


@check(
    "peer.stream.replaced",
    "a new stream from the same sender ends the older one ABORTED",
    spec="Topology",
    musts=("one-stream-per-sender-older-aborted",),
)
async def replaced(s: PeerSession) -> str:
    older = await s.open()
    newer = s.call()
    request = s.hello()
    await newer.send(request)
    frame = await newer.expect_frame("welcome", "a Welcome on the newer stream")
    s.verify_welcome(newer, request.hello, frame.welcome)
    ended = await _expect_end(older.stream, grpc.StatusCode.ABORTED, why="the older stream")
    return f"older stream: {ended}; newer stream welcomed"


async def _open_lane(s: PeerSession, lane: int) -> tuple[PushStream, link.Welcome]:
    """A stream of its own for `lane` beside the suite's ROUTINE one: Hello (nothing claimed
    settled), and the Welcome, verified and checked to be for that lane."""
    stream = s.call()
    request = s.hello(last_receipted=0, lane=lane)
    await stream.send(request)
    frame = await stream.expect_frame("welcome", f"a Welcome on the lane {lane} stream")
    try:
        welcome = wire.welcome_from_wire(
            frame.welcome, s.keyring, receiver_party=s.target, sender_party=s.us
        )
    except RemoteProtocolError as exc:
        raise Failed(f"the lane {lane} Welcome: {exc}") from None
    expect(welcome.lane == lane, f"a Welcome for lane {welcome.lane} answered lane {lane}")
    expect(welcome.hello_nonce == request.hello.nonce, "the Welcome signs another nonce")
    return stream, welcome


async def _settle_on(
    s: PeerSession, stream: PushStream, sequence: int, env: envelope_pb2.Envelope, lane: int
) -> link.BatchReceipt:
    """Deliver `env` alone at `sequence` on a lane's stream; its verified batch receipt."""
    payload = s.sign(env)
    batch = peer_link_pb2.DeliveryBatch()
    batch.deliveries.add(sequence=sequence, envelope=payload)
    await stream.send(peer_link_pb2.PushRequest(deliveries=batch))
    frame = await stream.expect_frame("batch_receipt", f"a batch receipt on lane {lane}")
    found = settlement_problems(
        frame.batch_receipt,
        sequence,
        [payload],
        [env.message_id],
        s.keyring,
        receiver=s.target,
        sender=s.us,
    )
    if isinstance(found, list):
        raise Failed(f"the lane {lane} batch receipt: {'; '.join(found[:3])}")
    expect(found.lane == lane, f"a batch receipt of lane {found.lane} on the lane {lane} stream")
    return found


@check(
    "peer.lanes.flash",
    "the FLASH lane is a link of its own: its stream opens beside the ROUTINE one (which stays "
    "open), with its own sequences, and its batch receipts name the lane",
    spec="Precedence lanes",
    musts=("lanes-independent",),
)
async def flash_lane(s: PeerSession) -> str:
    routine = await s.open()
    stream, welcome = await _open_lane(s, link.LANES[0])
    env = free_text(s.us, s.target, "conformance: on the FLASH lane")
    env.precedence = common_pb2.PRECEDENCE_FLASH
    receipt = await _settle_on(s, stream, welcome.last_sequence + 1, env, link.LANES[0])
    expect(receipt.receipts and not receipt.rejections, "the FLASH was not receipted")
    expect(routine.stream.end is None, f"the ROUTINE stream ended: {routine.stream.end}")
    stream.call.cancel()
    return (
        f"FLASH lane welcomed at sequence {welcome.last_sequence} beside the ROUTINE stream; "
        f"sequence {welcome.last_sequence + 1} receipted with lane FLASH"
    )


@check(
    "peer.lanes.wrong-lane",
    "a message on another precedence's lane is rejected INVALID_MESSAGE naming `precedence`",
    spec=S,
    musts=("reject-wrong-lane",),
)
async def wrong_lane(s: PeerSession) -> str:
    stream, welcome = await _open_lane(s, link.LANES[0])
    env = free_text(s.us, s.target, "conformance: a ROUTINE message on the FLASH lane")
    receipt = await _settle_on(s, stream, welcome.last_sequence + 1, env, link.LANES[0])
    stream.call.cancel()
    expect(len(receipt.rejections) == 1, "a ROUTINE message on the FLASH lane was receipted")
    refused = receipt.rejections[0]
    expect(
        refused.reason is link.RejectReason.INVALID_MESSAGE,
        f"rejected {refused.reason.value}, not INVALID_MESSAGE",
    )
    fields = [f for f, _ in refused.violations]
    expect(fields == ["precedence"], f"the violations name {fields}, not precedence")
    return f"rejected INVALID_MESSAGE: {refused.detail}"
