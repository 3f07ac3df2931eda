"""Fixtures for the security integration tests: a real PKI, real gateways, raw attackers.

Everything here is real: certificates from `certs.pki` on `tmp_path`, gateways serving mutual
TLS on 127.0.0.1, SQLite journals. The attackers are ordinary gRPC clients holding whatever
certificate the test gives them, and `FakePeer`, which speaks the peer-link protocol (version 2)
frame by frame as the TW gateway would (so a test can send what a well-behaved gateway never
sends). `FakePeer` checks what the gateway answers as a real sender must: the Welcome's
signature over its Hello's nonce, and every batch receipt's signature, with `hotline.wire`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certs.pki import PartyPaths, init_pki, load_certificate, load_signing_key
from hotline import PROTOCOL_VERSION, link, wire
from hotline.signing import KeyRing, Signer
from hotline.transport import credentials, secure_channel
from hotline.v1 import (
    common_pb2,
    envelope_pb2,
    peer_link_pb2,
    peer_link_pb2_grpc,
)
from server.gateway import Gateway
from server.journal import Entry, Kind
from tests.harness import OPERATORS, config, free_port, free_text

# The PKI is issued as of two days ago (valid for a year from then), so a test can also issue
# a certificate that has already expired from the same, still valid, CA (see test_tls_refusals).
PKI_BACKDATE = timedelta(days=2)
WAIT = 10.0  # the bound on every wait in these tests, seconds

PushCall = grpc.aio.StreamStreamCall[peer_link_pb2.PushRequest, peer_link_pb2.PushResponse]


def make_backdated_pki(directory: Path) -> Path:
    init_pki(directory, ("JP", "TW"), OPERATORS, now=datetime.now(UTC) - PKI_BACKDATE)
    return directory


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    return make_backdated_pki(tmp_path / "pki")


# ------------------------------------------------------------------------------ channels


def channel(
    port: int, cert: Path, key: Path, trust: Path, *, server_party: str = "JP"
) -> grpc.aio.Channel:
    """A client channel to a gateway on 127.0.0.1:`port` presenting `cert`, trusting `trust`."""
    return secure_channel(
        f"127.0.0.1:{port}", credentials(cert, key, trust), server_party=server_party
    )


def operator_of(pki: Path, party: str, name: str, port: int, server_party: str) -> grpc.aio.Channel:
    """Operator `name` of `party` dialling the gateway of `server_party`."""
    own = PartyPaths.of(pki, party)
    server = PartyPaths.of(pki, server_party)
    return channel(
        port, own.operator_cert(name), own.operator_key(name), server.ca_cert,
        server_party=server_party,
    )  # fmt: skip


def gateway_of(pki: Path, party: str, port: int, server_party: str) -> grpc.aio.Channel:
    """`party`'s gateway certificate dialling the gateway of `server_party`."""
    own = PartyPaths.of(pki, party)
    server = PartyPaths.of(pki, server_party)
    return channel(
        port, own.gateway_cert, own.gateway_key, server.ca_cert, server_party=server_party
    )


# ------------------------------------------------------------------------------ gateways


@dataclass
class Lone:
    """One gateway running without its peer (its outbound link keeps failing to connect)."""

    pki: Path
    gateway: Gateway
    port: int

    def entries(self, kind: Kind | None = None) -> list[Entry]:
        return journal_entries(self.gateway, kind)


@contextlib.asynccontextmanager
async def lone_gateway(
    tmp: Path, pki: Path, party: str = "JP", **overrides: Any
) -> AsyncIterator[Lone]:
    cfg = config(
        pki,
        party,
        port=free_port(),
        peer_port=free_port(),  # nobody listens there
        journal=tmp / f"{party.lower()}-alone.db",
        **overrides,
    )
    gateway = Gateway(cfg)
    port = await gateway.start()
    try:
        yield Lone(pki, gateway, port)
    finally:
        await gateway.stop(0.5)


@pytest.fixture
async def jp(tmp_path: Path, pki: Path) -> AsyncIterator[Lone]:
    """The JP gateway alone: the tests play every other part, the TW gateway included."""
    async with lone_gateway(tmp_path, pki, "JP") as lone:
        yield lone


def journal_entries(gateway: Gateway, kind: Kind | None = None) -> list[Entry]:
    found: list[Entry] = []
    after = 0
    while True:
        batch = gateway.journal.entries(after=after, limit=1000)
        if not batch:
            return found
        found += [e for e in batch if kind is None or e.kind is kind]
        after = batch[-1].position


def security_details(gateway: Gateway) -> list[dict[str, Any]]:
    """The bodies of the gateway's SECURITY entries: {code, detail, peer}."""
    return [e.json_body() for e in journal_entries(gateway, Kind.SECURITY)]


async def eventually(
    predicate: Callable[[], Any], what: str, within: float = WAIT, every: float = 0.05
) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(every)


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    """Await `call` (a unary call or a coroutine) and return the AioRpcError it must raise."""
    try:
        await asyncio.wait_for(call, WAIT)
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded; it should have been refused")


# ------------------------------------------------------------------------------ envelopes


def signer_of(pki: Path, party: str) -> Signer:
    paths = PartyPaths.of(pki, party)
    return Signer.from_certificate(
        load_signing_key(paths.signing_key), load_certificate(paths.signing_cert)
    )


def signing_der(pki: Path, party: str) -> bytes:
    return load_certificate(PartyPaths.of(pki, party).signing_cert).public_bytes(Encoding.DER)


def tw_envelope(text: str = "from TW", *, message_id: str = "") -> envelope_pb2.Envelope:
    """A complete TW->JP envelope, as the TW gateway would sign it after filling it."""
    env = free_text(text, recipient="JP", message_id=message_id)
    env.sender_party = "TW"
    env.originator = "spiffe://tw.hotline/operator/watch-1"
    env.create_time.FromNanoseconds(time.time_ns())
    return env


# ------------------------------------------------------------------------------ the fake peer


def party_keyring(pki: Path, party: str) -> KeyRing:
    """The key ring `party`'s gateway starts with: its own CA and the peer's CA, no keys yet
    (the peer's signing certificates arrive in its Hello or Welcome)."""
    paths = PartyPaths.of(pki, party)
    return KeyRing([load_certificate(paths.ca_cert), load_certificate(paths.peer_ca_cert)])


class FakePeer:
    """Plays a sending gateway (TW by default) on one raw `PeerLinkService.Push` stream.

    A background reader answers the receiver's pings (so the stream stays alive however slow
    the test) and queues every other frame for `next()`; the stream's final status, if it ends,
    is queued as the `AioRpcError`. With `pki`, the peer verifies what the receiver signs (the
    Welcome, batch receipts) as the real sending gateway would, with `party`'s key ring.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        pki: Path | None = None,
        *,
        party: str = "TW",
        peer_party: str = "JP",
    ) -> None:
        self.channel = channel
        self.party = party
        self.peer_party = peer_party
        self.keyring = party_keyring(pki, party) if pki is not None else None
        self.nonce = b""  # the nonce of the last Hello sent
        self.welcome_frame: peer_link_pb2.Welcome | None = None  # as received, unparsed
        self.call: PushCall = peer_link_pb2_grpc.PeerLinkServiceStub(channel).Push()
        self._frames: asyncio.Queue[peer_link_pb2.PushResponse | BaseException] = asyncio.Queue()
        self._write_lock = asyncio.Lock()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                response = await self.call.read()
                if response is grpc.aio.EOF:
                    self._frames.put_nowait(EOFError("the receiver ended the stream"))
                    return
                assert isinstance(response, peer_link_pb2.PushResponse)
                if response.WhichOneof("frame") == "ping":
                    now = time.time_ns()
                    pong = peer_link_pb2.Pong(
                        nonce=response.ping.nonce, origin_time=response.ping.transmit_time
                    )
                    pong.receive_time.FromNanoseconds(now)
                    pong.transmit_time.FromNanoseconds(now)
                    with contextlib.suppress(Exception):
                        await self.send(peer_link_pb2.PushRequest(pong=pong))
                    continue
                self._frames.put_nowait(response)
        except grpc.aio.AioRpcError as exc:
            self._frames.put_nowait(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._frames.put_nowait(exc)

    async def send(self, request: peer_link_pb2.PushRequest) -> None:
        async with self._write_lock:
            await self.call.write(request)

    async def next(self, within: float = WAIT) -> peer_link_pb2.PushResponse:
        """The next frame other than a ping; raises the stream's error if it ended."""
        item = await asyncio.wait_for(self._frames.get(), within)
        if isinstance(item, BaseException):
            raise item
        return item

    async def ended(self, within: float = WAIT) -> grpc.aio.AioRpcError:
        """Skip frames until the receiver ends the stream; return the status it ended with."""
        deadline = time.monotonic() + within
        while True:
            try:
                await self.next(within=max(0.0, deadline - time.monotonic()))
            except grpc.aio.AioRpcError as exc:
                return exc

    def _ring(self) -> KeyRing:
        if self.keyring is None:
            raise AssertionError("this FakePeer was made without a PKI: it cannot verify")
        return self.keyring

    async def hello(
        self,
        certificates: Iterable[bytes],
        *,
        last_receipted: int = 0,
        party: str | None = None,
        nonce: bytes | None = None,
        lane: int = link.ROUTINE_LANE,
    ) -> bytes:
        """Send a Hello with a fresh random nonce (or `nonce`) for the lane `lane` (ROUTINE by
        default: the messages a FakePeer pushes are ROUTINE); returns the nonce."""
        self.nonce = secrets.token_bytes(link.NONCE_BYTES) if nonce is None else nonce
        hello = peer_link_pb2.Hello(
            protocol_version=PROTOCOL_VERSION,
            party=self.party if party is None else party,
            last_receipted_sequence=last_receipted,
            nonce=self.nonce,
            lane=common_pb2.Precedence.ValueType(lane),
        )
        hello.signing_certificates.extend(certificates)
        await self.send(peer_link_pb2.PushRequest(hello=hello))
        return self.nonce

    async def open(
        self,
        certificates: Iterable[bytes],
        *,
        last_receipted: int = 0,
        lane: int = link.ROUTINE_LANE,
    ) -> link.Welcome:
        """Hello, then the Welcome, verified as the real sender verifies it (its signature by
        the receiving party over this Hello's nonce, its parties and version, and the batch
        receipts it resends). The raw frame is kept in `welcome_frame`."""
        nonce = await self.hello(certificates, last_receipted=last_receipted, lane=lane)
        first = await self.next()
        assert first.WhichOneof("frame") == "welcome", first
        self.welcome_frame = first.welcome
        welcome = wire.welcome_from_wire(
            first.welcome, self._ring(), receiver_party=self.peer_party, sender_party=self.party
        )
        assert welcome.hello_nonce == nonce, "the Welcome signs another nonce than our Hello's"
        assert welcome.protocol_version == PROTOCOL_VERSION
        assert (welcome.receiver_party, welcome.sender_party) == (self.peer_party, self.party)
        assert welcome.lane == lane
        return welcome

    async def push(
        self, first_sequence: int, envelopes: Sequence[common_pb2.SignedPayload]
    ) -> None:
        """Send one DeliveryBatch (consecutive sequences from `first_sequence`); wait for nothing."""
        batch = peer_link_pb2.DeliveryBatch()
        for sequence, signed in enumerate(envelopes, start=first_sequence):
            batch.deliveries.add(sequence=sequence, envelope=signed)
        await self.send(peer_link_pb2.PushRequest(deliveries=batch))

    async def batch_receipt(self) -> link.BatchReceipt:
        """The next batch receipt from the receiver, its signature verified, parsed."""
        while True:
            answer = await self.next()
            if answer.WhichOneof("frame") == "batch_receipt":
                return wire.batch_receipt_from_signed(
                    answer.batch_receipt.receipt,
                    self._ring(),
                    receiver_party=self.peer_party,
                    sender_party=self.party,
                )

    async def deliver_batch(
        self, first_sequence: int, envelopes: Sequence[common_pb2.SignedPayload]
    ) -> link.BatchReceipt:
        """Push one batch and return the receiver's verified batch receipt for it."""
        await self.push(first_sequence, envelopes)
        receipt = await self.batch_receipt()
        assert (receipt.first_sequence, receipt.last_sequence) == (
            first_sequence,
            first_sequence + len(envelopes) - 1,
        ), receipt
        return receipt

    async def deliver(self, sequence: int, signed: common_pb2.SignedPayload) -> link.BatchReceipt:
        """Push a one-delivery batch and return the receiver's verified batch receipt for it."""
        return await self.deliver_batch(sequence, [signed])

    async def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.channel.close()


@contextlib.asynccontextmanager
async def fake_tw_peer(jp: Lone) -> AsyncIterator[FakePeer]:
    """A Push stream to the JP gateway authenticated with the TW gateway's own certificate."""
    peer = FakePeer(gateway_of(jp.pki, "TW", jp.port, "JP"), jp.pki)
    try:
        yield peer
    finally:
        await peer.close()
