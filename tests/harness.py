"""Shared test fixtures: a real PKI on disk, real gateways on loopback, real operator channels."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from certs.pki import PartyPaths, init_pki
from hotline.ids import new_message_id
from hotline.transport import credentials, secure_channel
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2, operator_pb2_grpc
from server.config import GatewayConfig
from server.gateway import Gateway

OPERATORS = ("watch-1", "watch-2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_pki(directory: Path) -> Path:
    init_pki(directory, ("JP", "TW"), OPERATORS)
    return directory


def config(
    pki: Path,
    party: str,
    *,
    port: int,
    peer_port: int,
    journal: Path | str,
    **overrides: Any,
) -> GatewayConfig:
    peer = "TW" if party == "JP" else "JP"
    raw: dict[str, Any] = {
        "party": party,
        "peer_party": peer,
        "listen": f"127.0.0.1:{port}",
        "peer_address": f"127.0.0.1:{peer_port}",
        "journal": str(journal),
        "pki_dir": str(pki),
        "heartbeat_interval_s": 0.5,
        "dead_after_s": 2.0,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
        "checkpoint_interval_s": 1.0,
        "deadline_check_s": 0.2,
    }
    raw.update(overrides)
    return GatewayConfig.from_mapping(raw, base=pki.parent)


def operator_channel(pki: Path, party: str, port: int, name: str = "watch-1") -> grpc.aio.Channel:
    paths = PartyPaths.of(pki, party)
    creds = credentials(paths.operator_cert(name), paths.operator_key(name), paths.ca_cert)
    return secure_channel(f"127.0.0.1:{port}", creds, server_party=party)


@dataclass
class Side:
    party: str
    gateway: Gateway
    port: int
    channel: grpc.aio.Channel
    stub: operator_pb2_grpc.OperatorServiceAsyncStub


@dataclass
class Pair:
    pki: Path
    jp: Side
    tw: Side


@contextlib.asynccontextmanager
async def running_pair(
    tmp: Path,
    pki: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    journals: Callable[[str], Path | str] | None = None,
) -> AsyncIterator[Pair]:
    """Two gateways on loopback; their journals `jp.db` and `tw.db` in `tmp`, or where
    `journals(name)` says (`journal_at` in tests/conftest.py: a file or a PostgreSQL database)."""
    pki = pki or make_pki(tmp / "pki")
    ports = {"JP": free_port(), "TW": free_port()}
    sides: dict[str, Side] = {}
    try:
        for party, peer in (("JP", "TW"), ("TW", "JP")):
            cfg = config(
                pki,
                party,
                port=ports[party],
                peer_port=ports[peer],
                journal=(journals or tmp.joinpath)(f"{party.lower()}.db"),
                **dict(overrides or {}),
            )
            gateway = Gateway(cfg)
            port = await gateway.start()
            channel = operator_channel(pki, party, port)
            sides[party] = Side(
                party, gateway, port, channel, operator_pb2_grpc.OperatorServiceStub(channel)
            )
        yield Pair(pki, sides["JP"], sides["TW"])
    finally:
        for side in sides.values():
            await side.channel.close()
            await side.gateway.stop(0.5)


def free_text(
    text: str = "test",
    *,
    precedence: common_pb2.Precedence.ValueType = common_pb2.PRECEDENCE_ROUTINE,
    recipient: str = "TW",
    message_id: str = "",
) -> envelope_pb2.Envelope:
    """A small valid message (free text) as an operator would send it."""
    env = envelope_pb2.Envelope(
        message_id=message_id or new_message_id(),
        recipient_party=recipient,
        status=common_pb2.MESSAGE_STATUS_EXERCISE,
        precedence=precedence,
        language="en",
        action=common_pb2.ACTION_NEW,
    )
    env.handling.classification = common_pb2.CLASSIFICATION_UNCLASSIFIED
    env.handling.releasable_to.extend(["JP", "TW"] if recipient == "TW" else ["TW", "JP"])
    env.free_text.subject.variants.add(
        language="en", text="Test", kind=common_pb2.TRANSLATION_KIND_ORIGINAL
    )
    env.free_text.text.variants.add(
        language="en", text=text, kind=common_pb2.TRANSLATION_KIND_ORIGINAL
    )
    return env


async def wait_for(
    predicate: Callable[[], Any], within: float = 15.0, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.05)


async def state_of(stub: operator_pb2_grpc.OperatorServiceAsyncStub, message_id: str) -> int:
    response = await stub.GetMessage(operator_pb2.GetMessageRequest(message_id=message_id))
    return int(response.message.state)


async def wait_state(
    stub: operator_pb2_grpc.OperatorServiceAsyncStub,
    message_id: str,
    state: int,
    within: float = 15.0,
) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            current = await state_of(stub, message_id)
            if current == operator_pb2.DELIVERY_STATE_REJECTED != state:
                raise AssertionError(f"{message_id} was rejected by the peer")
            if current >= state:
                return
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"{message_id} did not reach state {state} within {within} s")
        await asyncio.sleep(0.05)


_ = bodies_pb2
