"""Who may connect and call: the TLS handshake, the interceptor, and the authorization matrix.

Each attack is made against a real JP gateway (mutual TLS on 127.0.0.1, real certificates, a
real journal) and each test asserts the exact refusal: the status code the attacker sees, a
distinctive part of its message, and the security entry the gateway journals for it.

Two layers refuse, and they look different to the caller:

* The **TLS handshake** (BoringSSL inside grpcio, client certificate required) refuses a
  missing certificate, an unknown CA, an expired certificate, and a certificate naming another
  party's trust domain (the CA's URI name constraint). grpc closes the connection before any
  handler or interceptor runs, so the caller sees only UNAVAILABLE "failed to connect to all
  addresses ... Socket closed", and the gateway can journal nothing: no Python code of ours
  sees the attempt. The reason appears only in grpc's own log line ("Handshake failed with
  error ..."), which these tests read from the process's stderr.
* The **interceptor** (server/auth.py) refuses a revoked certificate (UNAUTHENTICATED), a
  certificate whose issuer is not its identity's own CA (UNAUTHENTICATED), and any caller the
  authorization matrix does not allow (PERMISSION_DENIED), and journals each as Kind.SECURITY.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from certs.identity import Identity
from certs.pki import (
    PartyPaths,
    _issue_leaf,
    _new_ec_key,
    _write_pair,
    init_pki,
    issue_operator,
    load_certificate,
    load_key_pair,
    revoke,
)
from hotline.v1 import operator_pb2, operator_pb2_grpc
from server.journal import Kind
from server.store import MessageFilter
from tests.harness import free_text
from tests.security.conftest import (
    PKI_BACKDATE,
    WAIT,
    FakePeer,
    Lone,
    channel,
    eventually,
    fake_tw_peer,
    gateway_of,
    lone_gateway,
    operator_of,
    rpc_error,
    security_details,
    signing_der,
)

HANDSHAKE_REFUSED = "failed to connect to all addresses"


async def health_check(ch: grpc.aio.Channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(ch)
    response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT)
    return int(response.status)


async def handshake_refusal(
    jp: Lone, ch: grpc.aio.Channel, capfd: pytest.CaptureFixture[str], reason: str
) -> grpc.aio.AioRpcError:
    """Call Health over `ch`; assert grpc refused the connection in the handshake for `reason`."""
    try:
        error = await rpc_error(health_check(ch))
    finally:
        await ch.close()
    assert error.code() is grpc.StatusCode.UNAVAILABLE, error
    assert HANDSHAKE_REFUSED in (error.details() or ""), error.details()
    assert "Socket closed" in (error.details() or ""), error.details()
    # The server's reason, as grpc logs it (the only place it appears).
    seen: list[str] = []

    def logged() -> bool:
        seen.append(capfd.readouterr().err)
        return any("Handshake failed with error SSL_ERROR_SSL" in s and reason in s for s in seen)

    await eventually(logged, f"grpc's log line 'Handshake failed ... {reason}'", within=3.0)
    # Refused before any handler: nothing reached the interceptor, so nothing is journaled.
    assert security_details(jp.gateway) == []
    return error


# ------------------------------------------------------------------------------ the handshake


async def test_no_client_certificate_fails_the_handshake(
    jp: Lone, capfd: pytest.CaptureFixture[str]
) -> None:
    root = PartyPaths.of(jp.pki, "JP").ca_cert.read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=root)  # no certificate, no key
    ch = grpc.aio.secure_channel(
        f"127.0.0.1:{jp.port}", creds, options=[("grpc.ssl_target_name_override", "localhost")]
    )
    await handshake_refusal(jp, ch, capfd, "PEER_DID_NOT_RETURN_A_CERTIFICATE")


async def test_a_certificate_from_an_unknown_ca_fails_the_handshake(
    jp: Lone, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other-pki"
    init_pki(other, ("XX", "YY"), ("watch-1",))
    xx = PartyPaths.of(other, "XX")
    trust = PartyPaths.of(jp.pki, "JP").ca_cert  # the attacker does trust the real JP gateway
    ch = channel(jp.port, xx.operator_cert("watch-1"), xx.operator_key("watch-1"), trust)
    await handshake_refusal(jp, ch, capfd, "unable to get local issuer certificate")


async def test_an_expired_certificate_fails_the_handshake(
    jp: Lone, capfd: pytest.CaptureFixture[str]
) -> None:
    # Issued by the real (still valid) JP CA one day-long validity ago: expired about a day ago.
    issued = datetime.now(UTC) - PKI_BACKDATE + timedelta(hours=1)
    cert = issue_operator(jp.pki, "JP", "expired-1", now=issued, validity_days=1)
    assert load_certificate(cert).not_valid_after_utc < datetime.now(UTC) - timedelta(hours=12)
    ch = operator_of(jp.pki, "JP", "expired-1", jp.port, "JP")
    # BoringSSL checks the validity dates itself: the interceptor's own expiry check
    # (certs.verify.check_validity, UNAUTHENTICATED "expired on ...") is never reached.
    await handshake_refusal(jp, ch, capfd, "certificate has expired")


def forge_cross_domain_operator(pki: Path, out: Path) -> tuple[Path, Path]:
    """A certificate for `spiffe://jp.hotline/operator/mallory` issued by the *TW* CA."""
    tw = PartyPaths.of(pki, "TW")
    ca, ca_key = load_key_pair(tw.ca_cert, tw.ca_key)
    key = _new_ec_key()
    cert = _issue_leaf(
        ca,
        ca_key,  # type: ignore[arg-type]
        key.public_key(),
        Identity.operator("JP", "mallory"),
        at=datetime.now(UTC),
        days=1,
    )
    _write_pair(out / "mallory.crt", out / "mallory.key", cert, key)
    return out / "mallory.crt", out / "mallory.key"


async def test_one_partys_ca_cannot_mint_the_others_identities_in_the_handshake(
    jp: Lone, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cert, key = forge_cross_domain_operator(jp.pki, tmp_path)
    ch = channel(jp.port, cert, key, PartyPaths.of(jp.pki, "JP").ca_cert)
    # The TW CA's URI name constraint (tw.hotline) forbids spiffe://jp.hotline/...
    await handshake_refusal(jp, ch, capfd, "permitted subtree violation")


async def test_one_partys_ca_cannot_mint_the_others_identities_without_name_constraints(
    tmp_path: Path,
) -> None:
    # Without the name constraint the handshake accepts the forgery (it chains to a CA in the
    # bundle): the interceptor refuses it, because a JP identity must be issued by the JP CA.
    pki = tmp_path / "unconstrained"
    init_pki(pki, ("JP", "TW"), ("watch-1",), name_constraints=False)
    cert, key = forge_cross_domain_operator(pki, tmp_path)
    async with lone_gateway(tmp_path, pki) as jp:
        ch = channel(jp.port, cert, key, PartyPaths.of(pki, "JP").ca_cert)
        try:
            stub = operator_pb2_grpc.OperatorServiceStub(ch)
            error = await rpc_error(stub.GetLinkStatus(operator_pb2.GetLinkStatusRequest()))
        finally:
            await ch.close()
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "spiffe://jp.hotline/operator/mallory" in (error.details() or "")
        assert "was issued by" in (error.details() or "")
        [entry] = security_details(jp.gateway)
        assert entry["code"] == "UNAUTHENTICATED"
        assert "GetLinkStatus" in entry["detail"]
        assert "was issued by" in entry["detail"]


# ------------------------------------------------------------------------------ revocation


@pytest.mark.must("ID-6")
async def test_a_revoked_certificate_is_refused_once_the_crl_is_reloaded(jp: Lone) -> None:
    ch = operator_of(jp.pki, "JP", "watch-2", jp.port, "JP")
    stub = operator_pb2_grpc.OperatorServiceStub(ch)
    try:
        await stub.GetLinkStatus(operator_pb2.GetLinkStatusRequest(), timeout=WAIT)  # admitted
        serial = revoke(
            jp.pki,
            "JP",
            PartyPaths.of(jp.pki, "JP").operator_cert("watch-2"),
            reason="key_compromise",
        )
        started = time.monotonic()
        refused: list[grpc.aio.AioRpcError] = []

        async def refused_now() -> bool:
            try:
                await stub.GetLinkStatus(operator_pb2.GetLinkStatusRequest(), timeout=WAIT)
            except grpc.aio.AioRpcError as exc:
                refused.append(exc)
                return True
            return False

        deadline = time.monotonic() + WAIT
        while not await refused_now():  # the gateway polls its CRL files every 2 s
            assert time.monotonic() < deadline, "watch-2 was still admitted after revocation"
            await asyncio.sleep(0.1)
        assert time.monotonic() - started < 5.0  # within a couple of polling periods
        error = refused[0]
    finally:
        await ch.close()
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "has been revoked" in (error.details() or "")
    assert f"serial {serial:#x}" in (error.details() or "")
    assert "spiffe://jp.hotline/operator/watch-2" in (error.details() or "")
    [entry] = security_details(jp.gateway)
    assert entry["code"] == "UNAUTHENTICATED"
    assert "has been revoked" in entry["detail"]
    # watch-1, not revoked, is still served over a fresh connection.
    ok = operator_of(jp.pki, "JP", "watch-1", jp.port, "JP")
    try:
        await operator_pb2_grpc.OperatorServiceStub(ok).GetLinkStatus(
            operator_pb2.GetLinkStatusRequest(), timeout=WAIT
        )
    finally:
        await ok.close()


async def test_revoking_an_operator_ends_its_open_watch_stream(jp: Lone) -> None:
    ch = operator_of(jp.pki, "JP", "watch-2", jp.port, "JP")
    try:
        stub = operator_pb2_grpc.OperatorServiceStub(ch)
        watch = stub.Watch(operator_pb2.WatchRequest())
        # Any new journal entry makes an event: a TW operator's refused call will do.
        intruder = operator_of(jp.pki, "TW", "watch-1", jp.port, "JP")
        intruding = operator_pb2_grpc.OperatorServiceStub(intruder)
        await rpc_error(intruding.GetLinkStatus(operator_pb2.GetLinkStatusRequest()))
        first = await asyncio.wait_for(watch.read(), WAIT)  # watch-2 was admitted
        assert first is not grpc.aio.EOF
        revoke(jp.pki, "JP", PartyPaths.of(jp.pki, "JP").operator_cert("watch-2"))
        # The stream is checked again before its next event once the CRL is reloaded.

        async def drain() -> grpc.aio.AioRpcError:
            while True:
                try:
                    response = await watch.read()
                except grpc.aio.AioRpcError as exc:
                    return exc
                assert response is not grpc.aio.EOF, "Watch ended without an error"

        reader = asyncio.ensure_future(drain())
        try:
            deadline = time.monotonic() + WAIT
            while not reader.done():
                assert time.monotonic() < deadline, "the open Watch stream was not ended"
                await rpc_error(intruding.GetLinkStatus(operator_pb2.GetLinkStatusRequest()))
                await asyncio.sleep(0.3)
            error = await reader
        finally:
            reader.cancel()
            await intruder.close()
    finally:
        await ch.close()
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "spiffe://jp.hotline/operator/watch-2" in (error.details() or "")
    assert "has been revoked" in (error.details() or "")
    revoked = [e for e in security_details(jp.gateway) if "has been revoked" in e["detail"]]
    assert [e["code"] for e in revoked] == ["UNAUTHENTICATED"]
    assert "/hotline.v1.OperatorService/Watch" in revoked[0]["detail"]


@pytest.mark.must("ID-6", "LINK-1")
async def test_revoking_the_peer_gateway_ends_its_open_link(jp: Lone) -> None:
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        await eventually(lambda: jp.gateway.peer_service.status.up, "the inbound link up")
        revoke(jp.pki, "TW", PartyPaths.of(jp.pki, "TW").gateway_cert, reason="key_compromise")
        # JP pings every heartbeat (0.5 s here), and each ping is a response: the first one
        # after the CRL reload (every 2 s) finds the caller revoked and ends the stream.
        started = time.monotonic()
        error = await peer.ended()
        assert time.monotonic() - started < 5.0
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "spiffe://tw.hotline/gateway" in (error.details() or "")
    assert "has been revoked" in (error.details() or "")
    [entry] = security_details(jp.gateway)
    assert entry["code"] == "UNAUTHENTICATED"
    assert "/hotline.v1.PeerLinkService/Push" in entry["detail"]
    await eventually(lambda: not jp.gateway.peer_service.status.up, "the inbound link down")


# ------------------------------------------------------------------------------ the matrix


@pytest.mark.must("ID-3")
async def test_the_peer_gateway_may_not_call_operator_service(jp: Lone) -> None:
    ch = gateway_of(jp.pki, "TW", jp.port, "JP")
    try:
        stub = operator_pb2_grpc.OperatorServiceStub(ch)
        error = await rpc_error(stub.Send(operator_pb2.SendRequest(envelope=free_text())))
    finally:
        await ch.close()
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "spiffe://tw.hotline/gateway may not call hotline.v1.OperatorService" in (
        error.details() or ""
    )
    [entry] = security_details(jp.gateway)
    assert entry["code"] == "PERMISSION_DENIED"
    assert "/hotline.v1.OperatorService/Send" in entry["detail"]
    assert jp.gateway.store.list_records(MessageFilter(), before_position=2**62, limit=10) == []


@pytest.mark.must("ID-3", "LINK-1")
async def test_an_operator_may_not_call_peer_link_service(jp: Lone) -> None:
    peer = FakePeer(operator_of(jp.pki, "JP", "watch-1", jp.port, "JP"))
    try:
        await peer.hello([signing_der(jp.pki, "TW")])
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await peer.next()
    finally:
        await peer.close()
    error = caught.value
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "spiffe://jp.hotline/operator/watch-1 may not call PeerLinkService" in (
        error.details() or ""
    )
    [entry] = security_details(jp.gateway)
    assert entry["code"] == "PERMISSION_DENIED"
    assert "/hotline.v1.PeerLinkService/Push" in entry["detail"]
    assert not jp.gateway.peer_service.status.up


@pytest.mark.must("ID-3", "LINK-1")
async def test_the_gateways_own_certificate_may_not_push_to_it(jp: Lone) -> None:
    peer = FakePeer(gateway_of(jp.pki, "JP", jp.port, "JP"))
    try:
        await peer.hello([signing_der(jp.pki, "JP")], party="JP")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await peer.next()
    finally:
        await peer.close()
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "spiffe://jp.hotline/gateway may not call PeerLinkService" in (
        caught.value.details() or ""
    )
    assert [e["code"] for e in security_details(jp.gateway)] == ["PERMISSION_DENIED"]


@pytest.mark.must("ID-3")
async def test_the_other_partys_operator_may_not_call_operator_service(jp: Lone) -> None:
    # The JP gateway's bundle holds the TW CA (for the TW gateway), so a TW operator completes
    # the handshake; the matrix refuses it.
    ch = operator_of(jp.pki, "TW", "watch-1", jp.port, "JP")
    try:
        stub = operator_pb2_grpc.OperatorServiceStub(ch)
        error = await rpc_error(stub.Send(operator_pb2.SendRequest(envelope=free_text())))
        listing = await rpc_error(stub.ListMessages(operator_pb2.ListMessagesRequest()))
    finally:
        await ch.close()
    for refused in (error, listing):
        assert refused.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "spiffe://tw.hotline/operator/watch-1 may not call hotline.v1.OperatorService" in (
            refused.details() or ""
        )
        assert "only JP operators" in (refused.details() or "")
    entries = security_details(jp.gateway)
    assert [e["code"] for e in entries] == ["PERMISSION_DENIED", "PERMISSION_DENIED"]
    assert "OperatorService/Send" in entries[0]["detail"]
    assert "OperatorService/ListMessages" in entries[1]["detail"]


# ------------------------------------------------------------------------------ impersonation


async def test_send_refuses_a_sender_party_other_than_the_callers(jp: Lone) -> None:
    ch = operator_of(jp.pki, "JP", "watch-1", jp.port, "JP")
    try:
        stub = operator_pb2_grpc.OperatorServiceStub(ch)
        forged = free_text("claims to be from TW")
        forged.sender_party = "TW"
        error = await rpc_error(stub.Send(operator_pb2.SendRequest(envelope=forged)))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "sender_party is TW, but the caller spiffe://jp.hotline/operator/watch-1" in (
            error.details() or ""
        )
        forged = free_text("claims to be from watch-2")
        forged.originator = "spiffe://jp.hotline/operator/watch-2"
        error = await rpc_error(stub.Send(operator_pb2.SendRequest(envelope=forged)))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert (
            "originator is spiffe://jp.hotline/operator/watch-2, "
            "but the caller is spiffe://jp.hotline/operator/watch-1"
        ) in (error.details() or "")
        forged = free_text("claims to be from a TW officer")
        forged.originator = "spiffe://tw.hotline/operator/watch-1"
        error = await rpc_error(stub.Send(operator_pb2.SendRequest(envelope=forged)))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "originator is spiffe://tw.hotline/operator/watch-1" in (error.details() or "")
        listing = await stub.ListMessages(operator_pb2.ListMessagesRequest(), timeout=WAIT)
    finally:
        await ch.close()
    assert list(listing.messages) == []  # none was journaled
    assert jp.entries(Kind.MESSAGE_OUT) == []


# ------------------------------------------------------------------------------ allowed


async def test_an_operator_may_send_and_read(jp: Lone) -> None:
    ch = operator_of(jp.pki, "JP", "watch-1", jp.port, "JP")
    try:
        stub = operator_pb2_grpc.OperatorServiceStub(ch)
        sent = await stub.Send(operator_pb2.SendRequest(envelope=free_text("hi")), timeout=WAIT)
        assert sent.state == operator_pb2.DELIVERY_STATE_JOURNALED
        got = await stub.GetMessage(
            operator_pb2.GetMessageRequest(message_id=sent.message_id), timeout=WAIT
        )
    finally:
        await ch.close()
    assert got.message.envelope.sender_party == "JP"
    assert got.message.envelope.originator == "spiffe://jp.hotline/operator/watch-1"
    assert security_details(jp.gateway) == []


async def test_health_is_open_to_every_authenticated_caller(jp: Lone) -> None:
    callers = [
        operator_of(jp.pki, "JP", "watch-1", jp.port, "JP"),
        gateway_of(jp.pki, "TW", jp.port, "JP"),
        operator_of(jp.pki, "TW", "watch-1", jp.port, "JP"),  # refused everything else
        gateway_of(jp.pki, "JP", jp.port, "JP"),
    ]
    try:
        for ch in callers:
            assert await health_check(ch) == health_pb2.HealthCheckResponse.SERVING
            assert (
                await health_check(ch, "hotline.v1.PeerLinkService")
                == health_pb2.HealthCheckResponse.SERVING
            )
    finally:
        for ch in callers:
            await ch.close()
    assert security_details(jp.gateway) == []


async def list_services(ch: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(ch)
    call = stub.ServerReflectionInfo(timeout=WAIT)
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    await call.done_writing()
    response = await call.read()
    assert response is not grpc.aio.EOF
    return sorted(s.name for s in response.list_services_response.service)


async def test_reflection_is_open_to_own_operators_only(jp: Lone) -> None:
    ch = operator_of(jp.pki, "JP", "watch-1", jp.port, "JP")
    try:
        services = await list_services(ch)
    finally:
        await ch.close()
    assert "hotline.v1.OperatorService" in services
    assert "hotline.v1.PeerLinkService" in services
    assert security_details(jp.gateway) == []
    # The peer gateway is refused (server/auth.py: reflection goes with OperatorService; the
    # certs/README.md matrix says "allowed": see the report).
    ch = gateway_of(jp.pki, "TW", jp.port, "JP")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await list_services(ch)
    finally:
        await ch.close()
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "may not call grpc.reflection.v1alpha.ServerReflection" in (caught.value.details() or "")
    assert [e["code"] for e in security_details(jp.gateway)] == ["PERMISSION_DENIED"]


# ------------------------------------------------------------------------------ operators see it


async def test_a_security_refusal_is_an_event_in_the_operators_watch_stream(jp: Lone) -> None:
    watcher = operator_of(jp.pki, "JP", "watch-1", jp.port, "JP")
    intruder = operator_of(jp.pki, "TW", "watch-1", jp.port, "JP")
    try:
        watch = operator_pb2_grpc.OperatorServiceStub(watcher).Watch(
            operator_pb2.WatchRequest(kinds=[operator_pb2.EVENT_KIND_SECURITY_REFUSAL])
        )
        # Watch replays the journal, then follows it: the refusal is seen whenever it lands.
        stub = operator_pb2_grpc.OperatorServiceStub(intruder)
        await rpc_error(stub.GetLinkStatus(operator_pb2.GetLinkStatusRequest()))
        response = await asyncio.wait_for(watch.read(), WAIT)
        watch.cancel()
    finally:
        await watcher.close()
        await intruder.close()
    assert isinstance(response, operator_pb2.WatchResponse)
    [event] = response.events
    assert event.kind == operator_pb2.EVENT_KIND_SECURITY_REFUSAL
    assert "spiffe://tw.hotline/operator/watch-1 calling /hotline.v1.OperatorService/" in (
        event.detail
    )
    assert "may not call hotline.v1.OperatorService" in event.detail
    [entry] = jp.entries(Kind.SECURITY)
    assert event.cursor == entry.position
