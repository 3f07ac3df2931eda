"""The `peer` role's listening checks (`--listen PORT`): the target as a *sender*.

The target dials the suite's `Listener` and pushes its outbox; to give it something to push,
the suite sends messages through the target's Operator service as one of the target party's
operators (from the PKI). Whether the target accepted our signed batch receipts is read back
the same way: its messages reach DELIVERED.
"""

from __future__ import annotations

import asyncio
import time

import grpc

from hotline import PROTOCOL_VERSION, link
from hotline.errors import SignatureError
from hotline.signing import PAYLOAD_TYPE_CHECKPOINT
from hotline.transport import credentials, secure_channel
from hotline.v1 import operator_pb2, operator_pb2_grpc, peer_link_pb2
from sim.conformance import peer_checks  # noqa: F401  (the dialling checks run first)
from sim.conformance.examples import free_text
from sim.conformance.listener import Listener
from sim.conformance.pushlink import PeerSession
from sim.conformance.registry import Failed, Skipped, check, expect


def _listener(s: PeerSession) -> Listener:
    if s.listener is None:
        raise Skipped("not listening (--listen)")
    assert isinstance(s.listener, Listener)
    return s.listener


class _Operator:
    """The target party's operator, to make the target send and to read its messages' state."""

    def __init__(self, s: PeerSession) -> None:
        try:
            _, cert, key, ca = s.material.operator_files(s.operator)
        except Exception as exc:
            raise Skipped(f"no operator of {s.target} to make it send: {exc}") from None
        self.s = s
        self.channel = secure_channel(s.address, credentials(cert, key, ca), server_party=s.target)
        self.stub = operator_pb2_grpc.OperatorServiceStub(self.channel)

    async def __aenter__(self) -> _Operator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()

    async def send(self, count: int, what: str) -> list[str]:
        ids = []
        for i in range(count):
            env = free_text(self.s.target, self.s.us, f"{what} {i + 1} of {count}")
            env.ClearField("originator")
            try:
                response = await self.stub.Send(
                    operator_pb2.SendRequest(envelope=env), timeout=self.s.timeout
                )
            except grpc.aio.AioRpcError as exc:
                raise Failed(f"the target refused its operator's Send: {exc.code().name}") from None
            ids.append(response.message_id)
        return ids

    async def delivered(self, ids: list[str], within: float) -> list[str]:
        """The ids not DELIVERED (or further) within `within` seconds."""
        deadline = time.monotonic() + within
        waiting = list(ids)
        while waiting and time.monotonic() < deadline:
            still = []
            for message_id in waiting:
                record = (
                    await self.stub.GetMessage(
                        operator_pb2.GetMessageRequest(message_id=message_id),
                        timeout=self.s.timeout,
                    )
                ).message
                if record.state in (
                    operator_pb2.DELIVERY_STATE_JOURNALED,
                    operator_pb2.DELIVERY_STATE_REJECTED,
                ):
                    still.append(message_id)
            waiting = still
            if waiting:
                await asyncio.sleep(0.1)
        return waiting


def _within(s: PeerSession) -> float:
    return s.timeout * 3


@check(
    "peer.listen.hello",
    "the target dials as its gateway and opens with a Hello: version, party, a fresh nonce, its "
    "signing certificates",
    spec="message `Hello`",
    musts=("sender-hello-first", "hello-fresh-nonce", "hello-signing-certificates"),
    optional="listen",
)
async def listen_hello(s: PeerSession) -> str:
    listener = _listener(s)
    if not await listener.wait_for(lambda: listener.streams, _within(s)):
        raise Failed(f"the target did not dial 127.0.0.1:{listener.port} within {_within(s):g} s")
    seen = listener.streams[0]
    hello = seen.hello
    expect(
        seen.caller == f"spiffe://{s.target.lower()}.hotline/gateway",
        f"the caller is {seen.caller}",
    )
    expect(hello.protocol_version == PROTOCOL_VERSION, f"protocol_version {hello.protocol_version}")
    if not await listener.wait_for(
        lambda: {x.lane for x in listener.streams} == set(link.LANES), _within(s)
    ):
        lanes = sorted({x.lane for x in listener.streams})
        raise Failed(f"the target opened streams for lanes {lanes}, not one for each of 1..4")
    expect(hello.party == s.target, f"Hello.party {hello.party!r}")
    expect(16 <= len(hello.nonce) <= 64, f"a nonce of {len(hello.nonce)} bytes")
    expect(
        1 <= len(hello.signing_certificates) <= 4,
        f"{len(hello.signing_certificates)} signing certificates",
    )
    nonces = [bytes(x.hello.nonce) for x in listener.streams]
    expect(len(set(nonces)) == len(nonces), "a nonce was used on two streams")
    problems = [p for p in listener.problems if "Hello" in p]
    expect(not problems, "; ".join(problems[:2]))
    return (
        f"{len(listener.streams)} stream(s), one per lane, from {seen.caller}, version "
        f"{PROTOCOL_VERSION}, "
        f"{len(hello.nonce)}-byte nonces all distinct"
    )


@check(
    "peer.listen.deliveries",
    "the target's deliveries pass every acceptance check, in sequence, and our signed batch "
    "receipts take them to DELIVERED",
    spec="Processing a delivery",
    musts=(
        "sender-sequences-consecutive",
        "sender-signs-envelopes",
        "sender-accepts-batch-receipt",
    ),
    optional="listen",
)
async def listen_deliveries(s: PeerSession) -> str:
    listener = _listener(s)
    async with _Operator(s) as operator:
        ids = await operator.send(3, "conformance: the target delivers")
        arrived = await listener.wait_for(
            lambda: all(i in listener.accepted for i in ids), _within(s)
        )
        refused = [r for r in listener.refused if r.message_id in ids]
        if refused:
            raise Failed(
                f"our core refused the target's message: {refused[0].reason.value} "
                f"{refused[0].detail}"
            )
        expect(arrived, f"not all of {len(ids)} messages arrived within {_within(s):g} s")
        late = await operator.delivered(ids, _within(s))
    expect(not late, f"{len(late)} message(s) not DELIVERED after our batch receipt")
    violations = [p for p in listener.problems if "broke the protocol" in p]
    expect(not violations, "; ".join(violations[:2]))
    return f"{len(ids)} messages accepted, receipted and DELIVERED at the target"


@check(
    "peer.listen.checkpoint",
    "the target sends a signed checkpoint of its own journal after the Welcome",
    spec="Checkpoints",
    musts=("checkpoint-after-welcome", "checkpoint-signed-by-sender"),
    optional="listen",
)
async def listen_checkpoint(s: PeerSession) -> str:
    listener = _listener(s)
    if not await listener.wait_for(lambda: listener.checkpoints, _within(s)):
        raise Failed(f"no Checkpoint within {_within(s):g} s of the Welcome")
    frame = listener.checkpoints[-1]
    try:
        payload = listener.keyring.verify(
            frame.checkpoint, payload_type=PAYLOAD_TYPE_CHECKPOINT, party=s.target
        )
    except SignatureError as exc:
        raise Failed(f"the checkpoint's signature: {exc}") from None
    body = peer_link_pb2.CheckpointBody()
    body.ParseFromString(payload)
    expect(body.party == s.target, f"a checkpoint of party {body.party!r}'s journal")
    expect(len(body.head_hash) == 32, f"a head hash of {len(body.head_hash)} bytes")
    sizes = []
    for c in listener.checkpoints:
        b = peer_link_pb2.CheckpointBody()
        b.ParseFromString(c.checkpoint.payload)
        sizes.append(b.entry_count)
    expect(sizes == sorted(sizes), f"entry counts go backwards: {sizes}")
    return f"{len(listener.checkpoints)} checkpoint(s), latest {body.entry_count} entries, signed"


@check(
    "peer.listen.resume",
    "when our batch receipt is lost, the target resumes from the Welcome's batch receipts "
    "without sending the messages again",
    spec="Resume after a reconnect",
    musts=("sender-records-welcome-receipts", "sender-resumes-after-last-sequence"),
    optional="listen",
)
async def listen_resume(s: PeerSession) -> str:
    listener = _listener(s)
    async with _Operator(s) as operator:
        listener.hold = True
        try:
            ids = await operator.send(2, "conformance: receipt lost")
            held = await listener.wait_for(
                lambda: all(i in listener.accepted for i in ids) and listener.held, _within(s)
            )
            expect(held, f"the messages did not arrive within {_within(s):g} s")
            streams = len(listener.streams)
            listener.end_current("conformance: the connection died before the batch receipt")
        finally:
            listener.hold = False
        came_back = await listener.wait_for(lambda: len(listener.streams) > streams, _within(s))
        expect(came_back, f"the target did not reconnect within {_within(s):g} s")
        late = await operator.delivered(ids, _within(s))
        hello = listener.streams[streams].hello
    expect(not late, f"{len(late)} message(s) not DELIVERED from the Welcome's batch receipts")
    twice = [i for i in ids if listener.accepted.get(i, 0) > 1]
    expect(not twice, f"{len(twice)} message(s) delivered again after the resume")
    dupes = [r for r in listener.refused if r.reason is link.RejectReason.DUPLICATE_MESSAGE_ID]
    expect(not any(r.message_id in ids for r in dupes), "the target resent a settled message")
    return (
        f"reconnected with last_receipted_sequence {hello.last_receipted_sequence}; "
        f"{len(ids)} messages DELIVERED from the Welcome, none resent"
    )


@check(
    "peer.listen.bad-welcome",
    "a Welcome signed over another nonce gets no delivery: the target ends the stream",
    spec="Ending a stream",
    musts=("sender-verifies-welcome-before-delivery",),
    optional="listen",
)
async def listen_bad_welcome(s: PeerSession) -> str:
    listener = _listener(s)
    streams = len(listener.streams)
    listener.bad_welcome = True
    listener.end_current("conformance: reconnect, please")
    try:
        came = await listener.wait_for(lambda: len(listener.streams) > streams, _within(s))
        expect(came, f"the target did not reconnect within {_within(s):g} s")
    finally:
        listener.bad_welcome = False
    bad = listener.streams[streams]
    expect(bad.bad_welcome, "suite bug: the bad Welcome went to another stream")
    async with _Operator(s) as operator:
        ids = await operator.send(1, "conformance: after a bad Welcome")
        ended = await listener.wait_for(lambda: bool(bad.ended), _within(s))
        expect(ended, f"the stream with the bad Welcome is still open after {_within(s):g} s")
        late = await operator.delivered(ids, _within(s) * 2)
    wrong = [f for f in bad.frames_after_welcome if f in ("deliveries", "checkpoint")]
    expect(
        not wrong, f"the target sent {' and '.join(wrong[:2])} after a Welcome over another nonce"
    )
    expect(not late, "the message was not delivered on a later, good stream")
    return f"stream ended ({bad.ended}); message delivered on the next stream"
