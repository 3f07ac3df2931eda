"""Rotating a gateway's TLS certificate without downtime, then revoking the old one.

The procedure (certs/README.md, "Writes, rotation, revocation"): `rotate_gateway` writes a new
key and certificate beside the running gateway; the gateway's dynamic server credentials pick
them up before the next TLS handshake, without a restart; its outbound link picks them up when
it next reconnects (a new channel reads the files again). Once the links have moved over, the
old certificate is revoked.

What `test_rotation_loses_no_link_and_no_message` proves, step by step:

1. Rotating TW's certificate drops nothing: the links open at that moment keep running, and
   messages sent right after it are delivered both ways with no reconnection.
2. TW presents the *new* certificate to new connections at once, without a restart: a raw TLS
   handshake with Python's `ssl` module (as the JP gateway: its certificate and its trust in the
   TW CA) receives exactly the new certificate's DER; and a new gRPC connection configured as
   JP's dialer configures it (JP's certificate, only TW's CA trusted, TW's gateway name pinned)
   is served.
3. Revoking the old certificate at JP takes effect: a client holding the old TW pair is refused
   UNAUTHENTICATED "has been revoked", and the TW->JP stream still running on the old
   certificate is ended by JP (server/auth.py re-checks open streams when the revocation lists
   change; that stream's refusal is the one security entry on PeerLinkService).
4. TW's dialer reconnects on its own with the new certificate: later TW->JP messages are
   delivered, and JP journals no other refusal, so every new TW connection was authenticated
   with a certificate that is not revoked, which can only be the new one.
5. Nothing is lost or duplicated: each side's outbound list equals the other side's inbound
   list, message for message, each once, each DELIVERED.

Not proven, because grpcio gives a client no view of the server's certificate: which certificate
the already-open JP->TW connection was established with (it predates the rotation and, being
a TLS session, keeps it). That JP's dialer refuses a revoked TW server certificate is proven in
test_peer_certificate.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from pathlib import Path

import grpc
from cryptography.hazmat.primitives.serialization import Encoding
from grpc_health.v1 import health_pb2, health_pb2_grpc

from certs.pki import PartyPaths, load_certificate, revoke, rotate_gateway
from hotline import link
from hotline.v1 import operator_pb2
from server.journal import Kind
from tests.harness import Pair, Side, free_text, running_pair
from tests.security.conftest import (
    WAIT,
    channel,
    eventually,
    gateway_of,
    journal_entries,
    rpc_error,
    security_details,
)

DELIVERED = operator_pb2.DELIVERY_STATE_DELIVERED
REJECTED = operator_pb2.DELIVERY_STATE_REJECTED


async def presented_certificate(pki: Path, port: int) -> bytes:
    """The certificate TW's gateway presents to a new TLS connection (DER), via Python's ssl."""
    jp, tw = PartyPaths.of(pki, "JP"), PartyPaths.of(pki, "TW")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tw.ca_cert))
    context.load_cert_chain(jp.gateway_cert, jp.gateway_key)
    context.set_alpn_protocols(["h2"])
    _, writer = await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="gateway.tw.hotline"
        ),
        WAIT,
    )
    try:
        tls = writer.get_extra_info("ssl_object")
        assert isinstance(tls, ssl.SSLObject)
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 2.0)


async def send(side: Side, text: str) -> str:
    recipient = "TW" if side.party == "JP" else "JP"
    response = await side.stub.Send(
        operator_pb2.SendRequest(envelope=free_text(text, recipient=recipient)), timeout=WAIT
    )
    return response.message_id


async def delivered(side: Side, message_id: str) -> None:
    """Wait until the message is DELIVERED; fail at once if the peer rejected it.

    (`tests.harness.wait_state` waits for a state *at least* DELIVERED, which REJECTED is.)
    """
    deadline = time.monotonic() + WAIT
    while True:
        response = await side.stub.GetMessage(
            operator_pb2.GetMessageRequest(message_id=message_id), timeout=WAIT
        )
        record = response.message
        assert record.state != REJECTED, f"{message_id} rejected: {record.rejection_detail}"
        if record.state == DELIVERED:
            return
        assert time.monotonic() < deadline, f"{message_id} not delivered within {WAIT} s"
        await asyncio.sleep(0.05)


async def exchange(pair: Pair, label: str, count: int = 3) -> list[str]:
    """`count` messages each way, all awaited to DELIVERED."""
    sent: list[tuple[Side, str]] = []
    for i in range(count):
        for side in (pair.jp, pair.tw):
            sent.append((side, await send(side, f"{label} {i} from {side.party}")))
    for side, message_id in sent:
        await delivered(side, message_id)
    return [message_id for _, message_id in sent]


async def listing(
    side: Side, direction: operator_pb2.Direction.ValueType
) -> list[operator_pb2.MessageRecord]:
    response = await side.stub.ListMessages(
        operator_pb2.ListMessagesRequest(direction=direction, page_size=1000), timeout=WAIT
    )
    assert not response.next_page_token
    return list(response.messages)


def link_events(side: Side, kind: Kind, direction: str) -> int:
    return sum(
        1 for e in journal_entries(side.gateway, kind) if e.json_body()["direction"] == direction
    )


async def test_rotation_loses_no_link_and_no_message(tmp_path: Path, pki: Path) -> None:
    tw = PartyPaths.of(pki, "TW")
    async with running_pair(tmp_path, pki=pki) as pair:
        before = await exchange(pair, "before")
        old = load_certificate(tw.gateway_cert)
        ups = {s.party: link_events(s, Kind.LINK_UP, "inbound") for s in (pair.jp, pair.tw)}

        # 1. Rotate. Nothing is dropped: the open links carry the next messages.
        rotate_gateway(pki, "TW")
        new = load_certificate(tw.gateway_cert)
        assert new.serial_number != old.serial_number
        assert load_certificate(tw.gateway_cert_prev).serial_number == old.serial_number
        during = await exchange(pair, "during")
        for side in (pair.jp, pair.tw):
            assert link_events(side, Kind.LINK_UP, "inbound") == ups[side.party]
            assert link_events(side, Kind.LINK_DOWN, "inbound") == 0

        # 2. TW presents the new certificate to new connections, with no restart.
        assert await presented_certificate(pki, pair.tw.port) == new.public_bytes(Encoding.DER)
        dialer = gateway_of(pki, "JP", pair.tw.port, "TW")  # as JP's dialer is configured
        try:
            health = await health_pb2_grpc.HealthStub(dialer).Check(
                health_pb2.HealthCheckRequest(), timeout=WAIT
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            await dialer.close()

        # 3. Revoke the old certificate: JP refuses it, on new calls and on the open stream.
        revoked_at = time.monotonic()
        revoke(pki, "TW", tw.gateway_cert_prev, reason="superseded")
        old_pair = channel(
            pair.jp.port,
            tw.gateway_cert_prev,
            tw.gateway_key_prev,
            PartyPaths.of(pki, "JP").ca_cert,
        )
        try:
            probe = health_pb2_grpc.HealthStub(old_pair)

            async def old_refused() -> grpc.aio.AioRpcError | None:
                try:
                    await probe.Check(health_pb2.HealthCheckRequest(), timeout=WAIT)
                except grpc.aio.AioRpcError as exc:
                    return exc
                return None

            deadline = time.monotonic() + WAIT
            while (error := await old_refused()) is None:
                assert time.monotonic() < deadline, "JP still admits the old TW certificate"
                await asyncio.sleep(0.1)
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED
            assert "spiffe://tw.hotline/gateway" in (error.details() or "")
            assert f"serial {old.serial_number:#x}" in (error.details() or "")
            assert "has been revoked" in (error.details() or "")
            # once refused, always refused (also over a fresh connection)
            assert (await rpc_error(probe.Check(health_pb2.HealthCheckRequest()))).code() is (
                grpc.StatusCode.UNAUTHENTICATED
            )
        finally:
            await old_pair.close()

        # The TW->JP stream that ran on the old certificate is ended by JP ...
        await eventually(
            lambda: link_events(pair.jp, Kind.LINK_DOWN, "inbound") >= 1,
            "JP to end the TW stream authenticated with the revoked certificate",
        )
        # 4. ... and TW's dialer comes back by itself with the new certificate.
        await eventually(
            lambda: link_events(pair.jp, Kind.LINK_UP, "inbound") > ups["JP"],
            "TW to reconnect to JP with its new certificate",
        )
        after = await exchange(pair, "after")
        assert time.monotonic() - revoked_at < 20.0

        push_refusals = [
            e for e in security_details(pair.jp.gateway) if "PeerLinkService" in e["detail"]
        ]
        # the old connection's streams (one per lane), and nothing after
        assert 1 <= len(push_refusals) <= len(link.LANES), push_refusals
        assert len({e["peer"] for e in push_refusals}) == 1, push_refusals  # one connection
        for refusal in push_refusals:
            assert refusal["code"] == "UNAUTHENTICATED"
            assert f"serial {old.serial_number:#x}" in refusal["detail"]
        assert all(
            f"serial {old.serial_number:#x}" in e["detail"]
            for e in security_details(pair.jp.gateway)
        )  # every refusal at JP was of the old certificate: none of the new one
        assert security_details(pair.tw.gateway) == []

        # 5. Nothing lost, nothing duplicated, in either direction.
        sent = before + during + after
        for sender, receiver in ((pair.jp, pair.tw), (pair.tw, pair.jp)):
            out = await listing(sender, operator_pb2.DIRECTION_OUTBOUND)
            into = await listing(receiver, operator_pb2.DIRECTION_INBOUND)
            out_ids = [m.envelope.message_id for m in out]
            in_ids = [m.envelope.message_id for m in into]
            assert len(out_ids) == len(set(out_ids)) == 9
            assert sorted(out_ids) == sorted(in_ids)
            assert set(out_ids) <= set(sent)
            assert all(m.state == DELIVERED for m in out)
            assert sorted(m.sequence for m in into) == list(range(1, 10))
            assert len(journal_entries(receiver.gateway, Kind.MESSAGE_IN)) == 9
