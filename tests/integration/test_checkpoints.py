"""Checkpoints between two real gateways over mutual TLS: witnessed, and refused when they lie.

The JP gateway is made to lie by replacing the source of its outbound checkpoints (the
`checkpoints` callable its `PeerSender` calls when one is due) with one that signs a crafted
body with JP's own signing key: a fork (another head for an entry count TW witnessed), a stale
one (fewer entries than TW witnessed), a badly signed one, a checkpoint of another party's
journal, a malformed one. Everything else is the real link: TW must refuse the checkpoint,
journal a SECURITY entry its operators see on Watch, witness nothing of it, and keep the link
up, so that messages keep flowing.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hotline.journal_file import GENESIS
from hotline.signing import PAYLOAD_TYPE_CHECKPOINT, KeyRing
from hotline.v1 import common_pb2, operator_pb2, operator_pb2_grpc, peer_link_pb2
from hotline.wire import timestamp_ns
from server.gateway import Gateway
from server.journal import Entry, Journal, Kind, Txn
from server.peerlink.checkpoints import PeerCheckpoints
from server.store import Store
from tests.harness import (
    Pair,
    Side,
    free_text,
    operator_channel,
    running_pair,
    wait_for,
    wait_state,
)

WAIT = 10.0  # the bound on every wait here, seconds

CheckpointSource = Callable[[], common_pb2.SignedPayload | None]


def entries(gateway: Gateway, kind: Kind) -> list[Entry]:
    found: list[Entry] = []
    after = 0
    while batch := gateway.journal.entries(after=after, limit=1000):
        found += [e for e in batch if e.kind is kind]
        after = batch[-1].position
    return found


def witnessed(gateway: Gateway) -> list[peer_link_pb2.CheckpointBody]:
    """The bodies of the peer checkpoints `gateway` journaled, oldest first."""
    bodies = []
    for entry in entries(gateway, Kind.CHECKPOINT_PEER):
        signed = common_pb2.SignedPayload.FromString(entry.body)
        bodies.append(peer_link_pb2.CheckpointBody.FromString(signed.payload))
    return bodies


def checkpoint_refusals(gateway: Gateway) -> list[dict[str, object]]:
    return [
        body
        for body in (e.json_body() for e in entries(gateway, Kind.SECURITY))
        if body.get("code") == "CHECKPOINT_REFUSED"
    ]


def signed_body(
    gateway: Gateway, *, party: str, entry_count: int, head_hash: bytes
) -> common_pb2.SignedPayload:
    """A checkpoint body signed with `gateway`'s own signing key (a real, valid signature)."""
    body = peer_link_pb2.CheckpointBody(
        party=party,
        entry_count=entry_count,
        head_hash=head_hash,
        create_time=timestamp_ns(time.time_ns()),
    )
    return gateway.signer.sign(PAYLOAD_TYPE_CHECKPOINT, body.SerializeToString())


def send_once(gateway: Gateway, crafted: common_pb2.SignedPayload) -> list[int]:
    """Make `gateway` send `crafted` as its next checkpoint, then honest ones again.

    Returns a list that counts how often the crafted one was handed to the sender.
    """
    honest = gateway.sender._checkpoints
    assert honest is not None
    sent: list[int] = []

    def source() -> common_pb2.SignedPayload | None:
        if not sent:
            sent.append(1)
            return crafted
        return honest()

    gateway.sender._checkpoints = source
    return sent


def fork(jp: Gateway, seen: peer_link_pb2.CheckpointBody) -> common_pb2.SignedPayload:
    other = bytes(b ^ 0xFF for b in seen.head_hash)
    return signed_body(jp, party="JP", entry_count=seen.entry_count, head_hash=other)


def stale(jp: Gateway, seen: peer_link_pb2.CheckpointBody) -> common_pb2.SignedPayload:
    # JP's true history, but one entry shorter than what TW witnessed: a rolled-back journal
    # (the first checkpoint may come when JP's journal holds a single entry: then the empty one)
    assert seen.entry_count >= 1
    earlier = jp.journal.entry(seen.entry_count - 1)
    if earlier is None:
        return signed_body(jp, party="JP", entry_count=0, head_hash=GENESIS)
    return signed_body(jp, party="JP", entry_count=earlier.position, head_hash=earlier.hash)


def bad_signature(jp: Gateway, seen: peer_link_pb2.CheckpointBody) -> common_pb2.SignedPayload:
    count, head = jp.journal.head
    signed = signed_body(jp, party="JP", entry_count=count, head_hash=head)
    flipped = bytearray(signed.signature)
    flipped[0] ^= 0x01
    signed.signature = bytes(flipped)
    return signed


def wrong_party(jp: Gateway, seen: peer_link_pb2.CheckpointBody) -> common_pb2.SignedPayload:
    count, head = jp.journal.head
    return signed_body(jp, party="TW", entry_count=count, head_hash=head)


def malformed(jp: Gateway, seen: peer_link_pb2.CheckpointBody) -> common_pb2.SignedPayload:
    count, _ = jp.journal.head
    return signed_body(jp, party="JP", entry_count=count, head_hash=b"not a sha-256")


async def security_refusal_events(side: Side, within: float = WAIT) -> list[operator_pb2.Event]:
    """Every SECURITY_REFUSAL event a Watch from the start of `side`'s journal replays."""
    call = side.stub.Watch(
        operator_pb2.WatchRequest(kinds=[operator_pb2.EVENT_KIND_SECURITY_REFUSAL])
    )
    events: list[operator_pb2.Event] = []
    head = side.gateway.journal.head[0]
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            try:
                response = await asyncio.wait_for(call.read(), 1.0)
            except TimeoutError:
                break  # replayed everything up to the head
            assert isinstance(response, operator_pb2.WatchResponse)
            events.extend(response.events)
            if response.events[-1].cursor >= head:
                break
    finally:
        call.cancel()
    return events


async def first_witnessed(pair: Pair) -> peer_link_pb2.CheckpointBody:
    """Wait until TW has witnessed a checkpoint of JP's journal; the latest one."""
    await wait_for(lambda: witnessed(pair.tw.gateway), WAIT, "TW to witness a JP checkpoint")
    return witnessed(pair.tw.gateway)[-1]


async def assert_link_still_carries_messages(pair: Pair) -> None:
    sent = await pair.jp.stub.Send(
        operator_pb2.SendRequest(envelope=free_text("after the refused checkpoint")), timeout=WAIT
    )
    await wait_state(pair.jp.stub, sent.message_id, operator_pb2.DELIVERY_STATE_DELIVERED, WAIT)
    assert entries(pair.tw.gateway, Kind.LINK_DOWN) == []
    assert entries(pair.jp.gateway, Kind.LINK_DOWN) == []
    assert pair.tw.gateway.peer_service.status.up


@pytest.mark.parametrize(
    ("craft", "problem", "words"),
    [
        (fork, "fork", "checkpoint fork: JP says entry"),
        (stale, "stale", "stale checkpoint: JP says its journal has"),
        (bad_signature, "bad signature", "checkpoint with a bad signature"),
        (wrong_party, "wrong party", "checkpoint for the wrong party"),
        (malformed, "malformed", "malformed checkpoint"),
    ],
    ids=["fork", "stale", "bad-signature", "wrong-party", "malformed"],
)
@pytest.mark.must("CHK-1", "CHK-2")
async def test_a_lying_checkpoint_is_refused_reported_and_the_link_stays_up(
    tmp_path: Path,
    craft: Callable[[Gateway, peer_link_pb2.CheckpointBody], common_pb2.SignedPayload],
    problem: str,
    words: str,
) -> None:
    async with running_pair(tmp_path) as pair:
        jp, tw = pair.jp.gateway, pair.tw.gateway
        seen = await first_witnessed(pair)
        crafted = craft(jp, seen)
        sent = send_once(jp, crafted)
        refusals = await wait_for(
            lambda: checkpoint_refusals(tw), WAIT, f"TW to refuse the {problem} checkpoint"
        )
        assert sent == [1]
        assert len(refusals) == 1, refusals
        refusal = refusals[0]
        assert refusal["problem"] == problem
        assert words in str(refusal["detail"]), refusal["detail"]
        assert refusal["party"] == "JP"
        assert refusal["direction"] == "inbound"
        # the evidence: the checkpoint exactly as it arrived
        assert base64.b64decode(str(refusal["checkpoint"])) == crafted.SerializeToString()
        # nothing of it was witnessed
        raw = crafted.SerializeToString()
        assert all(e.body != raw for e in entries(tw, Kind.CHECKPOINT_PEER))

        events = await security_refusal_events(pair.tw)
        refused = [e for e in events if words in e.detail]
        assert len(refused) == 1, [e.detail for e in events]
        assert refused[0].link == operator_pb2.LINK_DIRECTION_INBOUND

        # honest checkpoints after it are witnessed again, and messages keep flowing
        after = len(witnessed(tw))
        await wait_for(lambda: len(witnessed(tw)) > after, WAIT, "an honest checkpoint after it")
        await assert_link_still_carries_messages(pair)
        assert len(checkpoint_refusals(tw)) == 1


async def test_the_first_checkpoint_follows_the_welcome_without_waiting_an_interval(
    tmp_path: Path,
) -> None:
    """With the default 60 s interval, each side witnesses the other's journal at link up."""
    started = time.monotonic()
    async with running_pair(tmp_path, overrides={"checkpoint_interval_s": 60.0}) as pair:
        await wait_for(lambda: witnessed(pair.tw.gateway), WAIT, "TW to witness JP's journal")
        await wait_for(lambda: witnessed(pair.jp.gateway), WAIT, "JP to witness TW's journal")
        assert time.monotonic() - started < WAIT
        jp_seen, tw_seen = witnessed(pair.tw.gateway), witnessed(pair.jp.gateway)
        assert [b.party for b in jp_seen] == ["JP"]
        assert [b.party for b in tw_seen] == ["TW"]
        # and the next one waits for the interval (several heartbeats pass meanwhile)
        await asyncio.sleep(4 * 0.5)
        assert len(entries(pair.jp.gateway, Kind.CHECKPOINT_OWN)) == 1
        assert len(witnessed(pair.tw.gateway)) == 1
        # the journal it describes: JP's chain head after that many entries
        entry = pair.jp.gateway.journal.entry(jp_seen[0].entry_count)
        assert entry is not None
        assert entry.hash == jp_seen[0].head_hash
        assert checkpoint_refusals(pair.tw.gateway) == []
        assert checkpoint_refusals(pair.jp.gateway) == []


async def test_the_witness_survives_a_restart_of_the_receiving_gateway(tmp_path: Path) -> None:
    """After TW restarts, a fork of a checkpoint it witnessed before is still refused."""
    async with running_pair(tmp_path) as pair:
        jp = pair.jp.gateway
        seen = await first_witnessed(pair)
        await pair.tw.channel.close()
        await pair.tw.gateway.stop(0.5)
        # JP's next checkpoint (the first after it reconnects) is the fork
        crafted = fork(jp, seen)
        sent = send_once(jp, crafted)
        tw = Gateway(pair.tw.gateway.config)
        channel = None
        try:
            assert tw.peer_service._checkpoints.witness.largest_entry_count is not None
            assert tw.peer_service._checkpoints.witness.head_at(seen.entry_count) == seen.head_hash
            port = await tw.start()
            channel = operator_channel(pair.pki, "TW", port)
            restarted = Side(
                "TW", tw, port, channel, operator_pb2_grpc.OperatorServiceStub(channel)
            )
            refusals = await wait_for(
                lambda: checkpoint_refusals(tw), WAIT, "the restarted TW to refuse the fork"
            )
            assert sent == [1]
            assert refusals[0]["problem"] == "fork"
            assert "checkpoint fork: JP says entry" in str(refusals[0]["detail"])
            events = await security_refusal_events(restarted)
            assert any("checkpoint fork" in e.detail for e in events)
            sent_after = await pair.jp.stub.Send(
                operator_pb2.SendRequest(envelope=free_text("after the restart")), timeout=WAIT
            )
            await wait_state(
                pair.jp.stub, sent_after.message_id, operator_pb2.DELIVERY_STATE_DELIVERED, WAIT
            )
        finally:
            if channel is not None:
                await channel.close()
            await tw.stop(0.5)


def test_the_witness_starts_from_the_checkpoints_in_the_journal(tmp_path: Path) -> None:
    """Journaled peer checkpoints are replayed through the rule: one a journal written before
    the rule existed holds, but the rule refuses (here a stale one), is not witnessed."""
    journal = Journal(tmp_path / "tw.db", party="TW")
    try:
        store = Store(journal, party="TW", peer_party="JP", deadline_s=lambda _: 60.0)

        def checkpoint(count: int, head: bytes) -> bytes:
            body = peer_link_pb2.CheckpointBody(party="JP", entry_count=count, head_hash=head)
            return common_pb2.SignedPayload(payload=body.SerializeToString()).SerializeToString()

        def op(txn: Txn) -> None:
            for count in (3, 9, 5):  # the last is stale
                txn.append(Kind.CHECKPOINT_PEER, checkpoint(count, bytes([count]) * 32), party="JP")

        journal.run_sync(op)
        assert [b.entry_count for b in store.witnessed_checkpoints(limit=2)] == [9, 5]
        witness = PeerCheckpoints(store, KeyRing([])).witness
        assert witness.largest_entry_count == 9
        assert witness.head_at(3) == bytes([3]) * 32
        assert witness.head_at(5) is None
    finally:
        journal.close()
