"""Admission control against real gateways over real mutual TLS: floods of calls and connections.

* One operator's 500 Watch streams: it gets its allowance (32), the rest are refused at once
  with RESOURCE_EXHAUSTED naming the limit; another operator, the peer link (even one that
  reconnects during the flood) and health are served; closing the streams gives the slots back.
* The per-operator unary call limit refuses with RESOURCE_EXHAUSTED naming the limit.
* The peer link's own allowance.
* 1,100 silent TCP connections (plain sockets that never speak TLS): operators are served
  meanwhile, and grpc's handshake timeout closes every one of them.
* Connections beyond `max_connections` are closed at accept.
* An authenticated connection without a call for `connection_idle_s` is closed (GOAWAY).

Admission refusals are not security events: nothing is journaled for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hotline.v1 import operator_pb2, operator_pb2_grpc
from server.admission import Lane
from server.gateway import Gateway
from server.journal import Kind
from server.peerlink.peer_certificate import PeerCertificateError
from tests.harness import (
    config,
    free_port,
    free_text,
    operator_channel,
    running_pair,
    wait_for,
    wait_state,
)
from tests.security.conftest import (
    WAIT,
    FakePeer,
    Lone,
    eventually,
    gateway_of,
    journal_entries,
    operator_of,
    security_details,
    signing_der,
)

W1 = "spiffe://jp.hotline/operator/watch-1"
W2 = "spiffe://jp.hotline/operator/watch-2"


@contextlib.asynccontextmanager
async def jp_gateway(tmp: Path, pki: Path, **overrides: Any) -> AsyncIterator[Lone]:
    """The JP gateway alone (its peer address leads nowhere), with settings `overrides`."""
    cfg = config(
        pki,
        "JP",
        port=free_port(),
        peer_port=free_port(),
        journal=tmp / "jp-admission.db",
        **overrides,
    )
    gateway = Gateway(cfg)
    port = await gateway.start()
    try:
        yield Lone(pki, gateway, port)
    finally:
        await gateway.stop(0.5)


WatchCall = grpc.aio.UnaryStreamCall[operator_pb2.WatchRequest, operator_pb2.WatchResponse]


async def follow(call: WatchCall) -> grpc.aio.AioRpcError | None:
    """Read a Watch stream to its end: the error it ended with (None at EOF)."""
    try:
        while True:
            if await call.read() is grpc.aio.EOF:
                return None
    except grpc.aio.AioRpcError as exc:
        return exc


def inbound_link_ups(gateway: Gateway) -> int:
    return sum(
        1 for e in journal_entries(gateway, Kind.LINK_UP) if e.json_body()["direction"] == "inbound"
    )


# ------------------------------------------------------------------------------ streams and calls


async def test_500_watch_streams_from_one_operator_leave_others_and_the_peer_link_served(
    tmp_path: Path,
) -> None:
    async with running_pair(tmp_path) as pair:
        jp = pair.jp.gateway
        await wait_for(lambda: jp.peer_service.status.up, what="TW's link into JP")
        await wait_for(lambda: jp.sender.status.up, what="JP's link into TW")
        flood = operator_channel(pair.pki, "JP", pair.jp.port, "watch-1")
        watch2 = operator_channel(pair.pki, "JP", pair.jp.port, "watch-2")
        tw_gateway = gateway_of(pair.pki, "TW", pair.jp.port, "JP")
        calls: list[WatchCall] = []
        readers: list[asyncio.Task[grpc.aio.AioRpcError | None]] = []
        try:
            stub = operator_pb2_grpc.OperatorServiceStub(flood)
            calls = [stub.Watch(operator_pb2.WatchRequest()) for _ in range(500)]
            readers = [asyncio.ensure_future(follow(call)) for call in calls]
            await eventually(
                lambda: sum(r.done() for r in readers) >= 468, "468 Watch streams refused", 30.0
            )
            await asyncio.sleep(0.2)  # any more to end would end now
            refused = [r.result() for r in readers if r.done()]
            assert len(refused) == 468
            for error in refused:
                assert error is not None
                assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert error.details() == (
                    f"operator {W1} has 32 streams open (Watch, SendStream, reflection; limit 32, "
                    "operator_streams); close one before opening another"
                )
            assert jp.admission.open(W1, Lane.OPERATOR_STREAM) == 32
            assert jp.admission.refused[Lane.OPERATOR_STREAM] == 468

            # watch-1 itself may still make unary calls: another lane.
            await stub.GetLinkStatus(operator_pb2.GetLinkStatusRequest(), timeout=WAIT)
            # Another operator: a Watch of its own, and a message to TW delivered.
            other = operator_pb2_grpc.OperatorServiceStub(watch2)
            watching = other.Watch(
                operator_pb2.WatchRequest(kinds=[operator_pb2.EVENT_KIND_LINK_UP])
            )
            first = await asyncio.wait_for(watching.read(), WAIT)
            assert isinstance(first, operator_pb2.WatchResponse)
            watching.cancel()
            sent = await other.Send(
                operator_pb2.SendRequest(envelope=free_text("during the flood")), timeout=WAIT
            )
            await wait_state(other, sent.message_id, operator_pb2.DELIVERY_STATE_DELIVERED)

            # The peer link, made anew during the flood: TW's sender redials JP, and a TW
            # message is delivered into JP over the new Push stream.
            ups = inbound_link_ups(jp)
            pair.tw.gateway.sender.redial(PeerCertificateError("test: reconnect in the flood"))
            await wait_for(lambda: inbound_link_ups(jp) > ups, what="TW's link into JP again")
            tw_sent = await pair.tw.stub.Send(
                operator_pb2.SendRequest(envelope=free_text("TW in the flood", recipient="JP")),
                timeout=WAIT,
            )
            await wait_state(
                pair.tw.stub, tw_sent.message_id, operator_pb2.DELIVERY_STATE_DELIVERED
            )
            # And health, for the peer gateway as for anyone.
            health = await health_pb2_grpc.HealthStub(tw_gateway).Check(
                health_pb2.HealthCheckRequest(), timeout=WAIT
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        finally:
            for call in calls:
                call.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        try:
            # Closing the streams gives their slots back: watch-1 may watch again.
            await eventually(
                lambda: jp.admission.open(W1, Lane.OPERATOR_STREAM) == 0,
                "watch-1's streams released",
            )
            again = operator_pb2_grpc.OperatorServiceStub(flood).Watch(operator_pb2.WatchRequest())
            assert isinstance(
                await asyncio.wait_for(again.read(), WAIT), operator_pb2.WatchResponse
            )
            again.cancel()
        finally:
            for channel in (flood, watch2, tw_gateway):
                await channel.close()
        # Refusing for admission is not a security event: nothing was journaled for it.
        assert security_details(jp) == []


async def test_the_per_operator_call_limit_refuses_naming_the_limit(
    tmp_path: Path, pki: Path
) -> None:
    async with jp_gateway(tmp_path, pki, operator_calls=2) as jp:
        ch = operator_of(pki, "JP", "watch-1", jp.port, "JP")
        other = operator_of(pki, "JP", "watch-2", jp.port, "JP")
        try:
            stub = operator_pb2_grpc.OperatorServiceStub(ch)
            refused: list[grpc.aio.AioRpcError] = []
            accepted: list[operator_pb2.SendResponse] = []
            for _ in range(5):  # Sends overlap while they wait for the journal: bounded tries
                outcomes = await asyncio.gather(
                    *(
                        stub.Send(operator_pb2.SendRequest(envelope=free_text()), timeout=WAIT)
                        for _ in range(64)
                    ),
                    return_exceptions=True,
                )
                for outcome in outcomes:
                    if isinstance(outcome, grpc.aio.AioRpcError):
                        refused.append(outcome)
                    else:
                        assert isinstance(outcome, operator_pb2.SendResponse), outcome
                        accepted.append(outcome)
                if refused:
                    break
            assert refused, "320 concurrent Sends never had more than 2 in progress at once"
            for error in refused:
                assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert error.details() == (
                    f"operator {W1} has 2 calls in progress (limit 2, operator_calls); "
                    "retry with backoff"
                )
            assert all(a.state == operator_pb2.DELIVERY_STATE_JOURNALED for a in accepted)
            assert jp.gateway.admission.refused[Lane.OPERATOR_CALL] == len(refused)
            assert len(jp.entries(Kind.MESSAGE_OUT)) == len(accepted)
            # watch-2 has its own allowance; nothing is left held once the calls are done.
            await operator_pb2_grpc.OperatorServiceStub(other).Send(
                operator_pb2.SendRequest(envelope=free_text("watch-2")), timeout=WAIT
            )
            assert jp.gateway.admission.operators_open == 0
        finally:
            await ch.close()
            await other.close()
        assert security_details(jp.gateway) == []


async def test_the_peer_link_has_its_own_allowance(tmp_path: Path, pki: Path) -> None:
    async with jp_gateway(tmp_path, pki, peer_link_calls=1) as jp:
        first = FakePeer(gateway_of(pki, "TW", jp.port, "JP"), pki)
        try:
            await first.open([signing_der(pki, "TW")])
            # A second Push while the first is open: refused as the call starts, before any
            # frame (a FakePeer starts its call when it is made).
            second = FakePeer(gateway_of(pki, "TW", jp.port, "JP"), pki)
            try:
                error = await second.ended()
            finally:
                await second.close()
            assert jp.gateway.peer_service.status.up  # the first is untouched
        finally:
            await first.close()
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.details() == (
        "the peer gateway spiffe://tw.hotline/gateway has 1 PeerLinkService calls open "
        "(limit 1, peer_link_calls)"
    )


# ------------------------------------------------------------------------------ connections


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def silent_connections(port: int, count: int) -> list[socket.socket]:
    """`count` TCP connections to 127.0.0.1:`port` that will never say a word."""
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex(("127.0.0.1", port))
        assert err in (0, errno.EINPROGRESS), os.strerror(err)
        socks.append(s)
    return socks


def closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset
        return True


def need_descriptors(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        if hard != resource.RLIM_INFINITY and hard < count:
            pytest.skip(f"needs {count} descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


async def test_1100_silent_connections_leave_operators_served_and_are_closed_by_the_timeout(
    tmp_path: Path, pki: Path
) -> None:
    timeout_s = 3.0
    # This process holds both ends of every connection (the gateway runs in it).
    need_descriptors(2 * 1100 + 512)
    async with jp_gateway(tmp_path, pki, handshake_timeout_s=timeout_s) as jp:
        before = open_files()
        opened = time.monotonic()
        socks = silent_connections(jp.port, 1100)
        try:
            # grpc accepts them all (both ends now hold a descriptor) ...
            await eventually(
                lambda: open_files() >= before + 2 * 1100 - 20,
                "the gateway to accept 1,100 connections",
            )
            assert not any(closed_by_server(s) for s in socks)
            # ... and while they wait, an operator connects and is served.
            ch = operator_of(pki, "JP", "watch-1", jp.port, "JP")
            try:
                started = time.monotonic()
                await operator_pb2_grpc.OperatorServiceStub(ch).GetLinkStatus(
                    operator_pb2.GetLinkStatusRequest(), timeout=WAIT
                )
                served_in = time.monotonic() - started
                assert time.monotonic() - opened < timeout_s, "too slow to tell: raise the timeout"
            finally:
                await ch.close()
            assert served_in < 2.0
            # The handshake timeout closes every silent connection, and not before it.
            await eventually(
                lambda: all(closed_by_server(s) for s in socks),
                "the gateway to close 1,100 silent connections",
                within=timeout_s + 10.0,
            )
            assert time.monotonic() - opened >= timeout_s - 0.5
        finally:
            for s in socks:
                s.close()
        # The gateway's ends are gone too (a few descriptors of grpc's may come and go).
        await eventually(lambda: open_files() <= before + 20, "the gateway's descriptors freed")
        assert security_details(jp.gateway) == []  # nothing of ours ever saw them


async def test_connections_beyond_max_connections_are_closed_at_accept(
    tmp_path: Path, pki: Path
) -> None:
    timeout_s = 2.0
    async with jp_gateway(tmp_path, pki, max_connections=200, handshake_timeout_s=timeout_s) as jp:
        opened = time.monotonic()
        socks = silent_connections(jp.port, 300)
        try:
            # The 100 beyond the cap are closed at once; the 200 wait for the timeout.
            await eventually(
                lambda: sum(closed_by_server(s) for s in socks) >= 100, "100 closed at accept"
            )
            assert time.monotonic() - opened < timeout_s
            assert sum(closed_by_server(s) for s in socks) == 100
            # The cap cannot tell an operator from a flood: a fail-fast call is closed too ...
            ch = operator_of(pki, "JP", "watch-1", jp.port, "JP")
            try:
                stub = operator_pb2_grpc.OperatorServiceStub(ch)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.GetLinkStatus(operator_pb2.GetLinkStatusRequest(), timeout=WAIT)
                assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() - opened < timeout_s, "too slow to tell"
                # ... until the handshake timeout frees the slots the silent ones held.
                await stub.GetLinkStatus(
                    operator_pb2.GetLinkStatusRequest(), timeout=timeout_s + 10, wait_for_ready=True
                )
            finally:
                await ch.close()
            assert all(closed_by_server(s) for s in socks)
        finally:
            for s in socks:
                s.close()


async def test_an_idle_authenticated_connection_is_closed_and_the_client_reconnects(
    tmp_path: Path, pki: Path
) -> None:
    async with jp_gateway(tmp_path, pki, connection_idle_s=0.5) as jp:
        ch = operator_of(pki, "JP", "watch-1", jp.port, "JP")
        try:
            stub = operator_pb2_grpc.OperatorServiceStub(ch)
            await stub.GetLinkStatus(operator_pb2.GetLinkStatusRequest(), timeout=WAIT)
            assert ch.get_state() is grpc.ChannelConnectivity.READY
            # No call for 0.5 s: the gateway sends GOAWAY and the connection is gone ...
            await eventually(
                lambda: ch.get_state() is not grpc.ChannelConnectivity.READY,
                "the idle connection closed",
            )
            # ... and the next call connects again, transparently.
            await stub.GetLinkStatus(operator_pb2.GetLinkStatusRequest(), timeout=WAIT)
        finally:
            await ch.close()
