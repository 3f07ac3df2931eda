"""An impostor TW gateway: the dialler authenticates the peer before it sends anything.

The impostor holds the TW gateway's real TLS certificate and key (a stolen key, a compromised
front end), so JP's dial to "TW" completes mutual TLS with it: TLS alone cannot tell it from
the real TW gateway. It does not hold TW's message-signing key. It is a real gRPC server on
127.0.0.1 serving `PeerLinkService.Push` with a hand-written servicer that records every frame
JP sends it and answers JP's Hello with a Welcome of the test's choosing; the real JP gateway
dials it (`peer_address`) with a message waiting in its outbox.

JP must verify the Welcome (signed by a TW signing key JP trusts, over the nonce of this very
Hello) before it sends anything, so for every bad Welcome, unsigned, signed by a key that is
not TW's, TW-signed over something else, or a genuine TW Welcome replayed from another
stream, the impostor receives nothing but Hellos: no DeliveryBatch, no checkpoint, not even a
ping. JP's message stays JOURNALED (neither DELIVERED nor REJECTED), its outbound settlements
are unchanged, the outbound link never comes up, and every attempt is journaled as a SECURITY
entry (code PROTOCOL_VIOLATION) that says what was wrong.

Once the Welcome is genuine, JP pushes its outbox (the control case: the recorder would have
caught a leak), and then believes only batch receipts signed by TW's key that match what it
sent: a forged or mismatched batch receipt, or a forged one resent in a later Welcome, settles
nothing and is journaled the same way. (An impostor that holds TW's signing key is out of
scope: it *is* TW, as far as the protocol goes; here the test plays that part only to get past
the Welcome.) Last, what JP journals of an impostor's frame must be bounded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs.pki import PartyPaths, init_pki
from certs.verify import public_key_id
from hotline import link, wire
from hotline.journal_file import JournalReader
from hotline.signing import PAYLOAD_TYPE_ENVELOPE, PAYLOAD_TYPE_WELCOME, Signer, sha256
from hotline.transport import SERVER_OPTIONS
from hotline.v1 import (
    common_pb2,
    envelope_pb2,
    operator_pb2,
    operator_pb2_grpc,
    peer_link_pb2,
    peer_link_pb2_grpc,
)
from server.gateway import Gateway
from server.journal import Kind
from tests.harness import config, free_port, free_text
from tests.security.conftest import (
    WAIT,
    FakePeer,
    Lone,
    eventually,
    gateway_of,
    lone_gateway,
    operator_of,
    security_details,
    signer_of,
    signing_der,
    tw_envelope,
)

Context = grpc.aio.ServicerContext[peer_link_pb2.PushRequest, peer_link_pb2.PushResponse]
WelcomeFor = Callable[[peer_link_pb2.Hello], peer_link_pb2.Welcome]
Settle = Callable[[peer_link_pb2.DeliveryBatch], peer_link_pb2.BatchReceipt]


# ------------------------------------------------------------------------------ the impostor


@dataclass
class Impostor(peer_link_pb2_grpc.PeerLinkServiceServicer):
    """A hand-written TW receiver: answers each Hello with `welcome(hello)`, each DeliveryBatch
    with `settle(batch)` (or hands it to `hold` and answers nothing), each Ping with a Pong;
    records every frame it receives."""

    welcome: WelcomeFor
    settle: Settle | None = None
    hold: Callable[[peer_link_pb2.DeliveryBatch], None] | None = None
    received: list[peer_link_pb2.PushRequest] = field(default_factory=list)
    by_stream: list[list[peer_link_pb2.PushRequest]] = field(default_factory=list)

    @property
    def streams(self) -> int:
        return len(self.by_stream)

    def kinds(self) -> list[str]:
        return [str(r.WhichOneof("frame")) for r in self.received]

    def hellos(self) -> list[peer_link_pb2.Hello]:
        return [r.hello for r in self.received if r.WhichOneof("frame") == "hello"]

    def batches(self) -> list[peer_link_pb2.DeliveryBatch]:
        return [r.deliveries for r in self.received if r.WhichOneof("frame") == "deliveries"]

    async def Push(
        self, request_iterator: AsyncIterator[peer_link_pb2.PushRequest], context: Context
    ) -> AsyncIterator[peer_link_pb2.PushResponse]:
        mine: list[peer_link_pb2.PushRequest] = []
        self.by_stream.append(mine)
        async for request in request_iterator:
            self.received.append(request)
            mine.append(request)
            which = request.WhichOneof("frame")
            if which == "hello":
                yield peer_link_pb2.PushResponse(welcome=self.welcome(request.hello))
            elif which == "deliveries" and self.hold is not None:
                self.hold(request.deliveries)
            elif which == "deliveries" and self.settle is not None:
                yield peer_link_pb2.PushResponse(batch_receipt=self.settle(request.deliveries))
            elif which == "ping":
                pong = peer_link_pb2.Pong(
                    nonce=request.ping.nonce,
                    origin_time=request.ping.transmit_time,
                    receive_time=wire.timestamp_ns(time.time_ns()),
                    transmit_time=wire.timestamp_ns(time.time_ns()),
                )
                yield peer_link_pb2.PushResponse(pong=pong)


@contextlib.asynccontextmanager
async def impostor_server(pki: Path, impostor: Impostor) -> AsyncIterator[int]:
    """Serve `impostor` on 127.0.0.1 with mTLS, as the TW gateway: TW's real gateway TLS
    certificate and key, TW's trust bundle, client certificates required."""
    tw = PartyPaths.of(pki, "TW")
    creds = grpc.ssl_server_credentials(
        [(tw.gateway_key.read_bytes(), tw.gateway_cert.read_bytes())],
        root_certificates=tw.bundle.read_bytes(),
        require_client_auth=True,
    )
    server = grpc.aio.server(options=list(SERVER_OPTIONS))
    peer_link_pb2_grpc.add_PeerLinkServiceServicer_to_server(impostor, server)
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def jp_dialling(tmp: Path, pki: Path, peer_port: int) -> AsyncIterator[Lone]:
    """The real JP gateway, its `peer_address` pointing at 127.0.0.1:`peer_port`."""
    cfg = config(pki, "JP", port=free_port(), peer_port=peer_port, journal=tmp / "jp-dials.db")
    gateway = Gateway(cfg)
    port = await gateway.start()
    try:
        yield Lone(pki, gateway, port)
    finally:
        await gateway.stop(0.5)


# ------------------------------------------------------------------------------ Welcomes


def welcome_body(
    hello: peer_link_pb2.Hello, nonce: bytes | None = None, last_sequence: int = 0
) -> bytes:
    """What TW would sign for `hello` (over `nonce` instead of the Hello's, if given)."""
    return peer_link_pb2.WelcomeBody(
        protocol_version=hello.protocol_version,
        receiver_party="TW",
        sender_party="JP",
        last_sequence=last_sequence,
        hello_nonce=hello.nonce if nonce is None else nonce,
        create_time=wire.timestamp_ns(time.time_ns()),
        lane=hello.lane,
    ).SerializeToString()


def welcome_signed(
    signer: Signer, certificates: list[bytes], payload_type: str = PAYLOAD_TYPE_WELCOME
) -> WelcomeFor:
    """A Welcome over each Hello's own nonce, signed by `signer`, carrying `certificates`."""

    def answer(hello: peer_link_pb2.Hello) -> peer_link_pb2.Welcome:
        frame = peer_link_pb2.Welcome(welcome=signer.sign(payload_type, welcome_body(hello)))
        frame.signing_certificates.extend(certificates)
        return frame

    return answer


def fresh_signer(party: str = "TW") -> Signer:
    """A new Ed25519 key claiming to be `party`'s, with no certificate from anyone."""
    key = Ed25519PrivateKey.generate()
    return Signer(party, key, public_key_id(key.public_key()), b"")


def unsigned_welcome(pki: Path) -> WelcomeFor:
    def answer(hello: peer_link_pb2.Hello) -> peer_link_pb2.Welcome:
        frame = peer_link_pb2.Welcome()  # no `welcome`: nothing signed at all
        frame.signing_certificates.append(signing_der(pki, "TW"))
        return frame

    return answer


def tw_message_as_welcome(pki: Path) -> WelcomeFor:
    """A genuine TW signature, but over a TW message (no secret: JP's operators read them),
    offered as the Welcome."""
    signed = signer_of(pki, "TW").sign(
        PAYLOAD_TYPE_ENVELOPE, tw_envelope("a TW message").SerializeToString()
    )

    def answer(hello: peer_link_pb2.Hello) -> peer_link_pb2.Welcome:
        frame = peer_link_pb2.Welcome(welcome=signed)
        frame.signing_certificates.append(signing_der(pki, "TW"))
        return frame

    return answer


def replayed(welcome: peer_link_pb2.Welcome) -> WelcomeFor:
    """The same recorded Welcome, whatever the Hello."""

    def answer(hello: peer_link_pb2.Hello) -> peer_link_pb2.Welcome:
        return welcome

    return answer


async def captured_welcome(tmp: Path, pki: Path) -> peer_link_pb2.Welcome:
    """A genuine Welcome from the real TW gateway, to a Hello of JP's (with its own nonce)."""
    async with lone_gateway(tmp, pki, "TW") as tw:
        peer = FakePeer(gateway_of(pki, "JP", tw.port, "TW"), pki, party="JP", peer_party="TW")
        try:
            welcome = await peer.open([signing_der(pki, "JP")])  # verified, as JP would
            assert (welcome.receiver_party, welcome.sender_party) == ("TW", "JP")
            assert peer.welcome_frame is not None
            return peer.welcome_frame
        finally:
            await peer.close()


# ------------------------------------------------------------------------------ batch receipts


def forged_receipt(
    signer: Signer,
    *,
    refuse: bool = False,
    digest: Callable[[common_pb2.SignedPayload], bytes] = lambda s: sha256(s.payload),
) -> Settle:
    """Settle every delivery of a batch (receipt it, or refuse it as NOT_RELEASABLE) naming
    the right message ids, in a batch receipt signed by `signer`."""

    def settle(batch: peer_link_pb2.DeliveryBatch) -> peer_link_pb2.BatchReceipt:
        receipts: list[link.ReceiptItem] = []
        rejections: list[link.RejectionItem] = []
        lane = link.ROUTINE_LANE
        for position, d in enumerate(batch.deliveries, start=1):
            envelope = envelope_pb2.Envelope()
            envelope.ParseFromString(d.envelope.payload)
            lane = envelope.precedence  # a batch travels on its messages' lane
            if refuse:
                rejections.append(
                    link.RejectionItem(
                        d.sequence,
                        envelope.message_id,
                        link.RejectReason.NOT_RELEASABLE,
                        "not releasable to TW",
                        digest=digest(d.envelope),
                    )
                )
            else:
                receipts.append(
                    link.ReceiptItem(d.sequence, envelope.message_id, digest(d.envelope), position)
                )
        receipt = wire.sign_batch_receipt(
            signer,
            sender_party="JP",
            first_sequence=batch.deliveries[0].sequence,
            last_sequence=batch.deliveries[-1].sequence,
            receipts=tuple(receipts),
            rejections=tuple(rejections),
            journal_time_ns=time.time_ns(),
            lane=lane,
        )
        return wire.batch_receipt_to_wire(receipt)

    return settle


def unsigned_receipt(pki: Path) -> Settle:
    """TW's genuine batch receipt with its signature stripped."""
    genuine = forged_receipt(signer_of(pki, "TW"))

    def settle(batch: peer_link_pb2.DeliveryBatch) -> peer_link_pb2.BatchReceipt:
        receipt = genuine(batch)
        receipt.receipt.ClearField("signature")
        return receipt

    return settle


# ------------------------------------------------------------------------------ JP's side


async def send_from_jp(jp: Lone, text: str) -> str:
    ch = operator_of(jp.pki, "JP", "watch-1", jp.port, "JP")
    try:
        sent = await operator_pb2_grpc.OperatorServiceStub(ch).Send(
            operator_pb2.SendRequest(envelope=free_text(text)), timeout=WAIT
        )
    finally:
        await ch.close()
    assert sent.state == operator_pb2.DELIVERY_STATE_JOURNALED
    return sent.message_id


def outbound_settlements(jp: Lone) -> dict[str, Any]:
    """Everything JP holds about the peer settling its messages."""
    with JournalReader(jp.gateway.journal.path) as journal:
        settlements = journal.settlements("JP")
    return {
        "settlements": settlements,
        "last_settled": [jp.gateway.store.last_settled_outbound(lane) for lane in link.LANES],
        "core_last_settled": jp.gateway.sender.last_settled,
        "entries": {
            kind: len(jp.entries(kind))
            for kind in (Kind.RECEIPT, Kind.DELIVERED, Kind.REFUSED_BY_PEER)
        },
    }


def violations(jp: Lone) -> list[str]:
    """The details of JP's SECURITY entries; each must be a protocol violation by TW."""
    found = security_details(jp.gateway)
    for entry in found:
        assert entry["code"] == "PROTOCOL_VIOLATION", entry
        assert entry["detail"].startswith("the TW gateway broke the peer link protocol: "), entry
    return [str(e["detail"]) for e in found]


def outbound_link_came_up(jp: Lone) -> bool:
    return any(e.json_body()["direction"] == "outbound" for e in jp.entries(Kind.LINK_UP))


async def refused_welcome(tmp: Path, pki: Path, welcome: WelcomeFor, expected: str) -> Impostor:
    """Point JP at an impostor answering with `welcome`, send a JP message, and check that JP
    refused the impostor's Welcomes (with `expected` in the detail), sent it nothing but
    Hellos, and finalised nothing."""
    impostor = Impostor(welcome)
    async with impostor_server(pki, impostor) as port, jp_dialling(tmp, pki, port) as jp:
        before = outbound_settlements(jp)
        message_id = await send_from_jp(jp, "for TW's eyes only")
        # At most one connection was under way when the message was journaled; two more
        # refusals mean at least one whole connection began with the message in the outbox.
        refused_before = len(violations(jp))
        await eventually(
            lambda: len(violations(jp)) >= refused_before + 2,
            "JP to refuse the impostor's Welcome on two more connections",
        )
        found = violations(jp)
        record = jp.gateway.store.record(message_id)
        assert record is not None
        assert record.state == operator_pb2.DELIVERY_STATE_JOURNALED
        assert outbound_settlements(jp) == before
        assert not outbound_link_came_up(jp)
        assert not jp.gateway.sender.status.up
    # Every stream carried one Hello and nothing else: JP stopped at the Welcome.
    assert impostor.batches() == []
    assert set(impostor.kinds()) == {"hello"}, impostor.kinds()
    hellos = impostor.hellos()
    assert 2 <= len(hellos) <= impostor.streams  # (a last stream may end before its Hello)
    assert all(h.party == "JP" and len(h.nonce) >= link.NONCE_BYTES for h in hellos)
    assert len({h.nonce for h in hellos}) == len(hellos), "a Hello nonce was used twice"
    assert found, "no SECURITY entry"
    for detail in found:
        assert expected in detail, detail
    return impostor


# ------------------------------------------------------------------------------ the Welcome


@pytest.mark.must("LINK-4", "LINK-6")
async def test_an_unsigned_welcome_is_refused(tmp_path: Path, pki: Path) -> None:
    await refused_welcome(tmp_path, pki, unsigned_welcome(pki), "the Welcome is not signed")


async def test_a_welcome_signed_by_a_key_of_no_party_is_refused(tmp_path: Path, pki: Path) -> None:
    """Signed over the right nonce with a fresh key, while carrying TW's real (public) signing
    certificate: the key id names no key JP trusts."""
    welcome = welcome_signed(fresh_signer(), [signing_der(pki, "TW")])
    await refused_welcome(tmp_path, pki, welcome, "bad Welcome signature: unknown signing key id")


async def test_a_welcome_signed_with_jps_own_key_is_refused(tmp_path: Path, pki: Path) -> None:
    """A valid signature by a key JP trusts, but JP's own: a Welcome must be TW's."""
    welcome = welcome_signed(signer_of(pki, "JP"), [signing_der(pki, "TW")])
    await refused_welcome(
        tmp_path,
        pki,
        welcome,
        "bad Welcome signature: signed by party JP's key, expected party TW's",
    )


async def test_a_welcome_signed_by_a_lookalike_tw_ca_is_refused(tmp_path: Path, pki: Path) -> None:
    """A signing certificate for `spiffe://tw.hotline/signing` from another "TW" CA, and a
    Welcome properly signed with its key: JP trusts only the TW CA it was configured with."""
    other = tmp_path / "lookalike-pki"
    init_pki(other, ("TW", "XX"), ("watch-1",))
    welcome = welcome_signed(signer_of(other, "TW"), [signing_der(other, "TW")])
    await refused_welcome(tmp_path, pki, welcome, "Welcome carries an untrusted signing key")


async def test_a_tw_signature_over_something_else_is_not_a_welcome(
    tmp_path: Path, pki: Path
) -> None:
    """TW's signature on a TW message is genuine, but binds its payload type (DSSE PAE): it
    cannot stand in for a Welcome."""
    await refused_welcome(
        tmp_path,
        pki,
        tw_message_as_welcome(pki),
        f"bad Welcome signature: payload type is '{PAYLOAD_TYPE_ENVELOPE}'",
    )


@pytest.mark.must("LINK-4", "LINK-6")
async def test_a_replayed_genuine_welcome_is_refused(tmp_path: Path, pki: Path) -> None:
    """A Welcome the real TW gateway signed (captured from a real stream) is replayed to
    every Hello: its signature is good, but it signs another stream's nonce."""
    genuine = await captured_welcome(tmp_path, pki)
    impostor = await refused_welcome(
        tmp_path,
        pki,
        replayed(genuine),
        "Welcome signs another nonce than our Hello's: a replay",
    )
    body = peer_link_pb2.WelcomeBody()
    body.ParseFromString(genuine.welcome.payload)
    assert body.hello_nonce not in {h.nonce for h in impostor.hellos()}


async def test_a_welcome_for_an_old_nonce_of_jps_is_refused(tmp_path: Path, pki: Path) -> None:
    """A Welcome properly signed by TW's key, but over the nonce of JP's *previous* Hello (as
    if recorded from the connection before): only this Hello's nonce will do."""
    signer = signer_of(pki, "TW")
    previous: list[bytes] = []

    def answer(hello: peer_link_pb2.Hello) -> peer_link_pb2.Welcome:
        nonce = previous[-1] if previous else bytes(len(hello.nonce))
        previous.append(bytes(hello.nonce))
        frame = peer_link_pb2.Welcome(
            welcome=signer.sign(PAYLOAD_TYPE_WELCOME, welcome_body(hello, nonce))
        )
        frame.signing_certificates.append(signing_der(pki, "TW"))
        return frame

    await refused_welcome(
        tmp_path, pki, answer, "Welcome signs another nonce than our Hello's: a replay"
    )


# ------------------------------------------------------------------------------ batch receipts


async def refused_receipt(tmp: Path, pki: Path, settle: Settle, expected: str) -> None:
    """Past a genuine Welcome (the test plays TW's signing key for it), JP pushes its message
    to the impostor; the impostor's batch receipt must settle nothing."""
    impostor = Impostor(welcome_signed(signer_of(pki, "TW"), [signing_der(pki, "TW")]), settle)
    async with impostor_server(pki, impostor) as port, jp_dialling(tmp, pki, port) as jp:
        before = outbound_settlements(jp)
        message_id = await send_from_jp(jp, "settle me, if you can")
        await eventually(
            lambda: any(expected in d for d in violations(jp)) and len(violations(jp)) >= 2,
            "JP to refuse the impostor's batch receipt twice",
        )
        record = jp.gateway.store.record(message_id)
        assert record is not None
        assert record.state == operator_pb2.DELIVERY_STATE_JOURNALED
        assert outbound_settlements(jp) == before
        found = violations(jp)
    # The control: with a Welcome JP could verify, JP did push its message.
    pushed = [sha256(d.envelope.payload) for batch in impostor.batches() for d in batch.deliveries]
    assert record.signed_envelope.payload
    assert sha256(record.signed_envelope.payload) in pushed
    for detail in found:
        assert expected in detail, detail


async def test_a_batch_receipt_signed_by_a_key_of_no_party_is_refused(
    tmp_path: Path, pki: Path
) -> None:
    await refused_receipt(
        tmp_path,
        pki,
        forged_receipt(fresh_signer()),
        "bad batch receipt signature: unknown signing key id",
    )


@pytest.mark.must("LINK-4")
async def test_a_rejection_signed_with_jps_own_key_is_refused(tmp_path: Path, pki: Path) -> None:
    """An attempt to have JP mark its message REJECTED (final) with a signature JP trusts, but
    by JP's own key."""
    await refused_receipt(
        tmp_path,
        pki,
        forged_receipt(signer_of(pki, "JP"), refuse=True),
        "bad batch receipt signature: signed by party JP's key, expected party TW's",
    )


@pytest.mark.must("LINK-4")
async def test_an_unsigned_batch_receipt_is_refused(tmp_path: Path, pki: Path) -> None:
    await refused_receipt(
        tmp_path,
        pki,
        unsigned_receipt(pki),
        "bad batch receipt signature: the signature is missing",
    )


@pytest.mark.parametrize(
    ("refuse", "expected"),
    [
        (False, "covers different bytes than were sent"),
        (True, "names different bytes than were sent"),
    ],
    ids=["receipt", "rejection"],
)
@pytest.mark.must("LINK-4")
async def test_a_batch_receipt_for_other_bytes_is_refused(
    tmp_path: Path, pki: Path, refuse: bool, expected: str
) -> None:
    """Signed by TW's key, naming the right sequences and message ids, but the hash of other
    bytes than JP sent: it proves nothing about JP's message, so it settles nothing."""
    await refused_receipt(
        tmp_path,
        pki,
        forged_receipt(signer_of(pki, "TW"), refuse=refuse, digest=lambda s: bytes(32)),
        expected,
    )


async def test_a_forged_batch_receipt_resent_in_a_welcome_is_refused(
    tmp_path: Path, pki: Path
) -> None:
    """The Welcome's resend path: the impostor takes JP's batch (past a genuine Welcome) and
    never answers it; when JP reconnects, a Welcome (genuinely signed, the test playing TW's
    key for it) claims the batch settled and carries a batch receipt for it signed with a key
    of no party. JP refuses the whole Welcome and sends nothing more."""
    tw = signer_of(pki, "TW")
    forge = forged_receipt(fresh_signer())
    taken: list[peer_link_pb2.DeliveryBatch] = []
    forged_for: set[bytes] = set()  # the nonces of the Hellos answered with the forgery

    def answer(hello: peer_link_pb2.Hello) -> peer_link_pb2.Welcome:
        last = taken[-1].deliveries[-1].sequence if taken else 0
        frame = peer_link_pb2.Welcome(
            welcome=tw.sign(PAYLOAD_TYPE_WELCOME, welcome_body(hello, last_sequence=last))
        )
        frame.signing_certificates.append(signing_der(pki, "TW"))
        if taken:
            frame.batch_receipts.append(forge(taken[-1]))
            forged_for.add(bytes(hello.nonce))
        return frame

    def hold(batch: peer_link_pb2.DeliveryBatch) -> None:
        taken.append(batch)

    impostor = Impostor(answer, hold=hold)
    expected = "bad batch receipt signature: unknown signing key id"
    async with impostor_server(pki, impostor) as port, jp_dialling(tmp_path, pki, port) as jp:
        before = outbound_settlements(jp)
        message_id = await send_from_jp(jp, "settle me by the back door")
        await eventually(lambda: taken, "JP to push its message past the genuine Welcome")
        # JP gives up on the unanswered batch after dead_after (2 s), reconnects, and refuses.
        await eventually(
            lambda: len(violations(jp)) >= 2, "JP to refuse the Welcome twice", within=2 * WAIT
        )
        record = jp.gateway.store.record(message_id)
        assert record is not None
        assert record.state == operator_pb2.DELIVERY_STATE_JOURNALED
        assert outbound_settlements(jp) == before
        found = violations(jp)
    assert [d.sequence for batch in taken for d in batch.deliveries] == [1]
    assert taken[0].deliveries[0].envelope.payload == record.signed_envelope.payload
    # Every stream answered with the forgery carried JP's Hello and nothing else.
    forged = [st for st in impostor.by_stream if st and bytes(st[0].hello.nonce) in forged_for]
    assert len(forged) >= 2
    assert all([r.WhichOneof("frame") for r in st] == ["hello"] for st in forged)
    for detail in found:
        assert expected in detail, detail


# ------------------------------------------------------------------------------ what JP records


MAX_RECORDED_DETAIL = 2048  # generous: the spec bounds a peer's RejectionItem.detail to 1024


async def test_what_jp_journals_of_a_bad_welcome_is_bounded(tmp_path: Path, pki: Path) -> None:
    """The SECURITY entry quotes the impostor's frame, but only so much of it: an impostor
    with no signing key must not be able to write 100 kB into JP's journal per connection.
    (Control characters are already escaped: `repr` quotes the key id.)"""
    key_id = "\n\x1b[31mFORGED LOG LINE " + "A" * 100_000

    def answer(hello: peer_link_pb2.Hello) -> peer_link_pb2.Welcome:
        signed = fresh_signer().sign(PAYLOAD_TYPE_WELCOME, welcome_body(hello))
        signed.key_id = key_id
        frame = peer_link_pb2.Welcome(welcome=signed)
        frame.signing_certificates.append(signing_der(pki, "TW"))
        return frame

    impostor = Impostor(answer)
    async with impostor_server(pki, impostor) as port, jp_dialling(tmp_path, pki, port) as jp:
        await eventually(lambda: violations(jp), "JP to refuse the Welcome")
        [first, *_] = violations(jp)
        status = jp.gateway.sender.status.detail
    assert "unknown signing key id" in first
    assert "\n" not in first
    assert "\x1b" not in first
    assert len(first) <= MAX_RECORDED_DETAIL, f"{len(first)} characters journaled"
    assert len(status) <= MAX_RECORDED_DETAIL, f"{len(status)} characters of link status"
