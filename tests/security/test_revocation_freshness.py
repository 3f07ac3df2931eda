"""Revocation lists a gateway can trust: never rolled back, never used stale.

Against a real JP gateway (mutual TLS on loopback, SQLite journal, the CRL files it polls every
2 s):

* putting back an older, validly signed CRL (a lower CRL number) is refused: the revoked
  operator stays refused, the list held stays in force, and a `CRL_ROLLBACK` security event is
  journaled and shown on Watch;
* a CRL past its nextUpdate (no grace, the default) refuses the calls of its party: the TW
  gateway's open link is ended and its new calls refused, a `CRL_STALE` alarm is shown on
  Watch, and a current list loaded afterwards lets the peer in again;
* within the configured grace, the same stale list still admits the peer;
* at the JP end of a real pair, a stale TW list stops JP dialling TW.

The grace's boundary is proven deterministically on the `Authorizer` with a fake wall clock,
and the replacement rule on `certs.revocation.replacement_problem`.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from certs.pki import PartyPaths, load_certificate, load_party_revocations, revoke
from certs.revocation import RevocationList, RevocationSet, build_crl, replacement_problem
from hotline.errors import ConfigError
from hotline.v1 import operator_pb2, operator_pb2_grpc
from server.auth import AuthError, Authorizer
from server.gateway import Gateway
from tests.harness import config, free_port, running_pair
from tests.security.conftest import (
    WAIT,
    Lone,
    eventually,
    fake_tw_peer,
    operator_of,
    rpc_error,
    security_details,
    signing_der,
)

GET_STATUS = "/hotline.v1.OperatorService/GetLinkStatus"


def ca_key(pki: Path, party: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(
        PartyPaths.of(pki, party).ca_key.read_bytes(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def write_crl(
    pki: Path, party: str, target: Path, *, number: int, next_update_in: timedelta
) -> RevocationList:
    """Sign an (empty) CRL of `party`'s CA with `number`, due for renewal `next_update_in`
    from now (negative: already stale), and write it to `target`."""
    ca = load_certificate(PartyPaths.of(pki, party).ca_cert)
    issued = datetime.now(UTC) - timedelta(days=3)
    crl = build_crl(
        ca,
        ca_key(pki, party),
        [],
        number=number,
        now=issued,
        validity=datetime.now(UTC) + next_update_in - issued,
    )
    target.write_bytes(crl.public_bytes(Encoding.PEM))
    return RevocationList(crl, ca)


async def watch_details(pki: Path, port: int, code: str) -> list[str]:
    """The SECURITY REFUSAL events JP's watch-1 sees on Watch whose detail names `code`'s
    story (read from the start of the journal until idle)."""
    ch = operator_of(pki, "JP", "watch-1", port, "JP")
    found: list[str] = []
    try:
        stub = operator_pb2_grpc.OperatorServiceStub(ch)
        stream = stub.Watch(
            operator_pb2.WatchRequest(kinds=[operator_pb2.EVENT_KIND_SECURITY_REFUSAL])
        )
        while True:
            try:
                response = await asyncio.wait_for(stream.read(), 1.0)
            except TimeoutError:
                break
            assert isinstance(response, operator_pb2.WatchResponse)
            found += [e.detail for e in response.events if code in e.detail]
        stream.cancel()
    finally:
        await ch.close()
    return found


def codes(gateway: Gateway) -> list[str]:
    return [str(e["code"]) for e in security_details(gateway)]


# ------------------------------------------------------------------------------ rollback


async def test_an_older_crl_put_back_is_refused_and_the_revocation_stands(jp: Lone) -> None:
    paths = PartyPaths.of(jp.pki, "JP")
    before = paths.crl.read_bytes()  # number 1, nothing revoked
    revoke(jp.pki, "JP", paths.operator_cert("watch-2"), reason="key_compromise")  # number 2
    await eventually(
        lambda: any(rl.number == 2 for rl in jp.gateway.authorizer.revocations),
        "JP to load CRL number 2",
    )
    paths.crl.write_bytes(before)  # validly signed by the JP CA, but older
    await eventually(lambda: "CRL_ROLLBACK" in codes(jp.gateway), "a CRL_ROLLBACK event")

    [entry] = [e for e in security_details(jp.gateway) if e["code"] == "CRL_ROLLBACK"]
    assert "CRL number 1 is not greater than 2" in entry["detail"]
    assert "stays in force" in entry["detail"]
    assert sorted(rl.number or 0 for rl in jp.gateway.authorizer.revocations) == [1, 2]
    # watch-2 is still refused, on a fresh connection
    ch = operator_of(jp.pki, "JP", "watch-2", jp.port, "JP")
    try:
        error = await rpc_error(
            operator_pb2_grpc.OperatorServiceStub(ch).GetLinkStatus(
                operator_pb2.GetLinkStatusRequest(), timeout=WAIT
            )
        )
    finally:
        await ch.close()
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "has been revoked" in (error.details() or "")
    # the alarm is on the watch floor
    [shown] = await watch_details(jp.pki, jp.port, "not greater than")
    assert "refused the new JP revocation list" in shown


async def test_an_older_crl_put_back_while_the_gateway_is_stopped_is_refused_at_start(
    tmp_path: Path, pki: Path
) -> None:
    """The CRL number taken into force is journaled: a list rolled back while the gateway was
    stopped is refused at the next start (the gateway does not serve on it), not taken."""
    cfg = config(pki, "JP", port=free_port(), peer_port=free_port(), journal=tmp_path / "jp.db")
    older = write_crl(pki, "JP", cfg.paths.crl, number=5, next_update_in=timedelta(days=7))
    old_bytes = cfg.paths.crl.read_bytes()
    write_crl(pki, "JP", cfg.paths.crl, number=6, next_update_in=timedelta(days=7))
    gateway = Gateway(cfg)
    await gateway.start()
    await gateway.stop(0.5)
    cfg.paths.crl.write_bytes(old_bytes)  # put back while stopped: validly signed, but older
    assert older.number == 5
    gateway = Gateway(cfg)
    with pytest.raises(ConfigError, match="already took number 6 into force"):
        await gateway.start()
    assert "CRL_ROLLBACK" in codes(gateway)
    await gateway.stop(0.5)
    # the current list lets it start again
    write_crl(pki, "JP", cfg.paths.crl, number=7, next_update_in=timedelta(days=7))
    gateway = Gateway(cfg)
    await gateway.start()
    await gateway.stop(0.5)


# ------------------------------------------------------------------------------ stale lists


async def test_a_stale_peer_crl_ends_and_refuses_the_peer_link_with_an_alarm(jp: Lone) -> None:
    peer_crl = PartyPaths.of(jp.pki, "JP").peer_crl
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        await eventually(lambda: jp.gateway.peer_service.status.up, "the inbound link up")
        # A newer TW list (so it is taken), whose next update is already past.
        write_crl(jp.pki, "TW", peer_crl, number=2, next_update_in=-timedelta(minutes=5))
        error = await peer.ended()
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "spiffe://tw.hotline/gateway" in (error.details() or "")
    assert "is stale" in (error.details() or "")
    [alarm] = [e for e in security_details(jp.gateway) if e["code"] == "CRL_STALE"]
    assert "CA 'CN=Hotline TW Root CA,O=Hotline TW' (number 2) is stale" in alarm["detail"]
    assert "hotline certs crl --party TW" in alarm["detail"]
    [shown] = await watch_details(jp.pki, jp.port, "every call of a TW certificate")
    assert "is stale" in shown

    # A new call of the TW gateway is refused as well...
    async with fake_tw_peer(jp) as again:
        await again.hello([signing_der(jp.pki, "TW")])
        refused = await again.ended()
    assert refused.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "is stale" in (refused.details() or "")
    # ... while JP's own operators, whose CA's list is current, are served.
    ch = operator_of(jp.pki, "JP", "watch-1", jp.port, "JP")
    try:
        await operator_pb2_grpc.OperatorServiceStub(ch).GetLinkStatus(
            operator_pb2.GetLinkStatusRequest(), timeout=WAIT
        )
    finally:
        await ch.close()

    # A current list lets the TW gateway in again.
    write_crl(jp.pki, "TW", peer_crl, number=3, next_update_in=timedelta(days=7))
    await eventually(lambda: not jp.gateway.authorizer.stale(), "JP to load the current TW list")
    async with fake_tw_peer(jp) as back:
        await back.open([signing_der(jp.pki, "TW")])
    assert codes(jp.gateway).count("CRL_STALE") == 1


async def test_within_the_grace_a_stale_peer_crl_still_admits_the_peer(
    tmp_path: Path, pki: Path
) -> None:
    cfg = config(
        pki,
        "JP",
        port=free_port(),
        peer_port=free_port(),
        journal=tmp_path / "jp.db",
        crl_grace_s=86400.0,
    )
    # Stale for five minutes already, but within a day's grace.
    write_crl(pki, "TW", cfg.paths.peer_crl, number=2, next_update_in=-timedelta(minutes=5))
    gateway = Gateway(cfg)
    port = await gateway.start()
    try:
        jp = Lone(pki, gateway, port)
        assert [rl.number for rl in gateway.authorizer.revocations] == [1, 2]
        async with fake_tw_peer(jp) as peer:
            await peer.open([signing_der(pki, "TW")])
        assert "CRL_STALE" not in codes(gateway)
    finally:
        await gateway.stop(0.5)


async def test_a_stale_own_crl_at_start_refuses_own_operators_with_an_alarm(
    tmp_path: Path, pki: Path
) -> None:
    cfg = config(pki, "JP", port=free_port(), peer_port=free_port(), journal=tmp_path / "jp.db")
    write_crl(pki, "JP", cfg.paths.crl, number=2, next_update_in=-timedelta(seconds=1))
    gateway = Gateway(cfg)
    port = await gateway.start()
    try:
        assert "CRL_STALE" in codes(gateway)  # raised at start, before any call
        ch = operator_of(pki, "JP", "watch-1", port, "JP")
        try:
            error = await rpc_error(
                operator_pb2_grpc.OperatorServiceStub(ch).GetLinkStatus(
                    operator_pb2.GetLinkStatusRequest(), timeout=WAIT
                )
            )
        finally:
            await ch.close()
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "spiffe://jp.hotline/operator/watch-1" in (error.details() or "")
        assert "is stale" in (error.details() or "")
    finally:
        await gateway.stop(0.5)


async def test_a_stale_peer_crl_stops_the_gateway_dialling_the_peer(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as pair:
        jp = pair.jp.gateway
        await eventually(lambda: jp.sender.status.up, "JP's outbound link up")
        write_crl(
            pair.pki,
            "TW",
            jp.config.paths.peer_crl,
            number=2,
            next_update_in=-timedelta(seconds=1),
        )
        await eventually(
            lambda: not jp.sender.status.up and "stale" in jp.sender.status.detail,
            "JP's outbound link ended because the TW list is stale",
        )
        await eventually(lambda: "PEER_REVOCATION_STALE" in codes(jp), "JP to refuse dialling TW")
        assert "CRL_STALE" in codes(jp)


# ------------------------------------------------------------------------------ the rules


def test_replacement_needs_a_greater_crl_number(pki: Path) -> None:
    paths = PartyPaths.of(pki, "JP")
    held = load_party_revocations(paths).lists[0]
    assert held.number == 1
    scratch = pki.parent / "scratch.pem"
    newer = write_crl(pki, "JP", scratch, number=2, next_update_in=timedelta(days=7))
    same_number = write_crl(pki, "JP", scratch, number=1, next_update_in=timedelta(days=7))
    assert replacement_problem(held, newer) is None
    assert replacement_problem(held, held) is None  # the same list again: nothing to refuse
    problem = replacement_problem(newer, same_number)
    assert problem is not None
    assert "CRL number 1 is not greater than 2" in problem
    assert replacement_problem(held, same_number) is not None  # same number, other contents


def test_a_stale_list_refuses_its_party_only_after_the_grace(pki: Path) -> None:
    paths = PartyPaths.of(pki, "JP")
    jp_list = load_party_revocations(paths).lists[0]
    tw_list = write_crl(
        pki, "TW", pki.parent / "tw.pem", number=2, next_update_in=timedelta(days=30)
    )
    lists = RevocationSet([jp_list, tw_list])
    due = jp_list.next_update
    assert due is not None
    now = [due.timestamp() + 30.0]  # 30 s past JP's list's next update
    authorizer = Authorizer(
        "JP",
        "TW",
        [load_certificate(paths.ca_cert), load_certificate(paths.peer_ca_cert)],
        lists,
        wall_clock=lambda: now[0],
        crl_grace=timedelta(seconds=60),
    )
    watch = paths.operator_cert("watch-1").read_bytes()
    assert authorizer.check(watch, GET_STATUS).who.endswith("/watch-1")  # within the grace
    generation = authorizer.generation
    now[0] = due.timestamp() + 61.0
    with pytest.raises(AuthError) as caught:
        authorizer.check(watch, GET_STATUS)
    assert caught.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert "is stale" in caught.value.reason
    assert "grace 60 s" in caught.value.reason
    assert authorizer.generation > generation  # open streams are checked again
    # the peer gateway's certificate (TW CA, whose list is current) is still accepted
    tw = PartyPaths.of(pki, "TW").gateway_cert.read_bytes()
    assert authorizer.check(tw, "/hotline.v1.PeerLinkService/Push").who.endswith("/gateway")
