"""The receiving end of one direction of the link: batches checked, journaled, receipted."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from enum import Enum
from typing import Protocol

from hotline import PROTOCOL_VERSION
from hotline.errors import LocalProtocolError
from hotline.link.values import (
    DEFAULT_DEAD_AFTER,
    DEFAULT_HEARTBEAT_INTERVAL,
    LANES,
    MAX_BATCH,
    MAX_RESUME,
    NONCE_BYTES,
    ROUTINE_LANE,
    Accepted,
    BatchReceipt,
    Delivery,
    DeliveryBatch,
    Heartbeat,
    Hello,
    JournalBatch,
    LinkDown,
    LinkUp,
    PeerViolation,
    Ping,
    Pong,
    ReceiptItem,
    RejectionItem,
    RejectReason,
    Seen,
    StreamEnd,
    Welcome,
    _Actions,
)

# --------------------------------------------------------------------------- receiver


class ReceiptArchive(Protocol):
    """The receiver's stored batch receipts, by lane (the journal satisfies it); read rarely:
    at a Hello, for a resend, for a duplicate."""

    def batch_receipts_after(
        self, sender_party: str, lane: int, sequence: int
    ) -> list[BatchReceipt]: ...

    def batch_receipt_for(
        self, sender_party: str, lane: int, sequence: int
    ) -> BatchReceipt | None: ...


Verdict = Accepted | RejectionItem
Checker = Callable[[Delivery, Callable[[str], Seen | None]], Verdict]
"""The acceptance checks (`hotline.acceptance.check_delivery`, bound to keys and parties): takes
a delivery (message id still unknown: the payload is unverified) and a lookup of ids seen
before, and returns the verdict."""


def check_hello(hello: Hello, peer_party: str) -> None:
    """The checks of a Hello that do not depend on a lane's state, in order (raises
    PeerViolation): the version, the party, the lane, the nonce."""
    if hello.protocol_version != PROTOCOL_VERSION:
        raise PeerViolation(
            f"protocol version {hello.protocol_version} is not supported "
            f"(this gateway speaks {PROTOCOL_VERSION})"
        )
    if hello.party != peer_party:
        raise PeerViolation(
            f"Hello claims party {hello.party}, but the peer is party {peer_party}",
            StreamEnd.PERMISSION_DENIED,
        )
    if hello.lane not in LANES:
        raise PeerViolation(
            f"Hello names lane {hello.lane}; a lane is a precedence (1 FLASH .. 4 ROUTINE)",
            StreamEnd.INVALID_ARGUMENT,
        )
    if not NONCE_BYTES <= len(hello.nonce) <= 64:
        raise PeerViolation(
            f"Hello nonce has {len(hello.nonce)} bytes, must be 16..64",
            StreamEnd.INVALID_ARGUMENT,
        )


class ReceiverState(Enum):
    NO_STREAM = "no-stream"  # no stream from the peer, or it ended
    WELCOME_DUE = "welcome-due"  # a Hello arrived; the Welcome waits for earlier batches
    OPEN = "open"  # welcomed: batches are accepted


class InboundLink(_Actions):
    """The receiving end of one lane of one direction, across all the streams the peer opens
    for it. The lanes of a direction share the index of ids seen (`seen`), nothing else.

    State that outlives a stream: the last sequence settled (durable or not), the ids seen,
    and the persists not yet durable. A new stream's Welcome waits until every batch of the
    streams before it is durable, so that its `last_sequence` is exact.
    """

    def __init__(
        self,
        party: str,
        peer_party: str,
        *,
        lane: int = ROUTINE_LANE,
        last_sequence: int,
        seen: dict[str, Seen],
        archive: ReceiptArchive,
        check: Checker,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        dead_after: float = DEFAULT_DEAD_AFTER,
    ) -> None:
        super().__init__()
        if lane not in LANES:
            raise ValueError(f"lane must be one of {LANES}")
        self.party = party
        self.peer_party = peer_party
        self.lane = lane
        self.last_sequence = last_sequence  # accepted, durable or on its way
        self.durable_sequence = last_sequence
        self._seen = seen
        self._archive = archive
        self._check = check
        self._stream = 0  # the current stream; 0 = none
        self._welcomed = False
        self._welcome_due: Hello | None = None
        # token -> (stream, batch, the index entries it replaced: None where it added one)
        self._pending: dict[int, tuple[int, JournalBatch, dict[str, Seen | None]]] = {}
        self._heartbeat = Heartbeat(heartbeat_interval, dead_after)
        self._heartbeat_interval = heartbeat_interval
        self._dead_after = dead_after

    @property
    def stream(self) -> int:
        return self._stream

    @property
    def state(self) -> ReceiverState:
        if self._welcomed:
            return ReceiverState.OPEN
        return ReceiverState.WELCOME_DUE if self._welcome_due else ReceiverState.NO_STREAM

    # -- streams

    def hello(self, hello: Hello, now: float) -> int:
        """A new stream opens with `hello`: returns its stream id. The Welcome follows once
        every batch persisted before it is durable (raises PeerViolation for a bad Hello)."""
        check_hello(hello, self.peer_party)
        if hello.lane != self.lane:
            raise PeerViolation(
                f"Hello for lane {hello.lane} reached lane {self.lane}", StreamEnd.INVALID_ARGUMENT
            )
        self._stream += 1
        self._welcomed = False
        self._heartbeat = Heartbeat(self._heartbeat_interval, self._dead_after)
        self._heartbeat.heard(now)
        self._heartbeat.last_ping = now
        self._welcome_due = hello
        self._release_welcome()
        return self._stream

    def _release_welcome(self) -> None:
        hello = self._welcome_due
        if hello is None or self._pending:
            return
        self._welcome_due = None
        last = self.durable_sequence
        if hello.last_receipted_sequence > last:
            raise PeerViolation(
                f"sender claims settlements up to {hello.last_receipted_sequence}, "
                f"but this journal holds only up to {last}",
                StreamEnd.DATA_LOSS,
            )
        if last - hello.last_receipted_sequence > MAX_RESUME:
            raise PeerViolation(
                f"sender holds settlements only up to {hello.last_receipted_sequence} of {last}: "
                "more than a resume can carry; its journal was lost"
            )
        receipts = tuple(
            self._archive.batch_receipts_after(
                self.peer_party, self.lane, hello.last_receipted_sequence
            )
        )
        self._welcomed = True
        welcome = Welcome(self.party, self.peer_party, last, hello.nonce, receipts, lane=self.lane)
        self._send(welcome, self._stream)
        self._event(LinkUp(last, self.lane))

    def close(self, stream: int) -> None:
        """A stream ended: its pending batches still become durable, but send nothing more."""
        if stream == self._stream:
            self._welcomed = False
            self._welcome_due = None

    # -- input

    def receive(self, frame: DeliveryBatch | Ping | Pong, now: float, stream: int) -> None:
        if stream != self._stream or not stream:
            raise PeerViolation("a newer stream from the peer replaced this one", StreamEnd.ABORTED)
        self._heartbeat.heard(now)
        if isinstance(frame, Ping):
            self._send(Heartbeat.answer(frame, now, now), stream)
            return
        if isinstance(frame, Pong):
            self._event(Heartbeat.measure(frame, now))
            return
        if not self._welcomed:
            raise PeerViolation("a delivery batch before the Welcome")
        self._on_batch(frame)

    def _on_batch(self, batch: DeliveryBatch) -> None:
        deliveries = batch.deliveries
        if not 1 <= len(deliveries) <= MAX_BATCH:
            raise PeerViolation(
                f"a delivery batch holds {len(deliveries)} deliveries, must be 1..{MAX_BATCH}",
                StreamEnd.INVALID_ARGUMENT,
            )
        for a, b in itertools.pairwise(deliveries):
            if b.sequence != a.sequence + 1:
                raise PeerViolation(
                    f"a delivery batch is not consecutive ({a.sequence} then {b.sequence})",
                    StreamEnd.INVALID_ARGUMENT,
                )
        first = batch.first_sequence
        expected = self.last_sequence + 1
        if first > expected:
            raise PeerViolation(f"OUT_OF_ORDER: expected sequence {expected}, got {first}")
        if first < expected:
            self._resend(batch)
            return
        accepted: list[Accepted] = []
        refused: list[RejectionItem] = []
        fresh: dict[str, Seen] = {}  # what this batch adds to the index, in order

        def seen(message_id: str) -> Seen | None:
            return fresh.get(message_id) or self._seen.get(message_id)

        for d in deliveries:
            verdict = self._check(d, seen)
            if isinstance(verdict, Accepted):
                accepted.append(verdict)
                fresh[verdict.message_id] = Seen(d.sequence, d.digest, lane=self.lane)
                fresh.update(verdict.index)  # its own standing, and what it updates or cancels
                own = fresh[verdict.message_id]
                if own.lane != self.lane:
                    fresh[verdict.message_id] = replace(own, lane=self.lane)
                continue
            if verdict.reason is RejectReason.DUPLICATE_MESSAGE_ID:
                verdict = self._with_original(verdict, seen(verdict.message_id))
            refused.append(verdict)
        undo = {message_id: self._seen.get(message_id) for message_id in fresh}
        self._seen.update(fresh)
        self.last_sequence = batch.last_sequence
        record = JournalBatch(
            self.peer_party,
            first,
            batch.last_sequence,
            tuple(accepted),
            tuple(refused),
            lane=self.lane,
        )
        token = self._persist(record)
        self._pending[token] = (self._stream, record, undo)

    def _with_original(self, item: RejectionItem, held: Seen | None) -> RejectionItem:
        original = None
        if held is not None and held.sequence:
            original = self._archive.batch_receipt_for(self.peer_party, held.lane, held.sequence)
        if original is None:
            # Its first delivery's batch is not yet durable, so the original receipt a
            # duplicate rejection must carry does not exist yet. An honest sender never sends
            # a message twice before it is settled: end the stream (the whole batch is
            # dropped, nothing journaled); after the reconnect the Welcome settles the first
            # delivery and the sender does not send it again.
            raise PeerViolation(
                f"message {item.message_id} sent twice before its first batch was settled"
            )
        return RejectionItem(
            item.sequence,
            item.message_id,
            item.reason,
            item.detail,
            item.violations,
            item.digest,
            original,
        )

    def _resend(self, batch: DeliveryBatch) -> None:
        if batch.last_sequence > self.durable_sequence:
            raise PeerViolation(
                f"OUT_OF_ORDER: sequences {batch.first_sequence}..{batch.last_sequence} "
                f"resent before they were settled (expected {self.last_sequence + 1})"
            )
        receipts: dict[int, BatchReceipt] = {}
        for d in batch.deliveries:
            held = self._archive.batch_receipt_for(self.peer_party, self.lane, d.sequence)
            if held is None:
                raise LocalProtocolError(f"no batch receipt held for sequence {d.sequence}")
            items: list[ReceiptItem | RejectionItem] = [*held.receipts, *held.rejections]
            digest = next((i.digest for i in items if i.sequence == d.sequence), b"")
            if digest != d.digest:
                raise PeerViolation(
                    f"OUT_OF_ORDER: sequence {d.sequence} resent with other bytes than were "
                    f"settled (expected {self.last_sequence + 1})"
                )
            receipts[held.first_sequence] = held
        for _, held in sorted(receipts.items()):
            self._send(held, self._stream)

    def persisted(self, token: int, result: object) -> None:
        """A `JournalBatch` is durable; `result` is its signed `BatchReceipt`."""
        stream, record, _ = self._pending.pop(token)
        if not isinstance(result, BatchReceipt):
            raise LocalProtocolError("a journaled batch must report its batch receipt")
        self.durable_sequence = max(self.durable_sequence, record.last_sequence)
        if stream == self._stream and self._welcomed:
            self._send(result, stream)
        self._release_welcome()

    def failed(self, token: int) -> None:
        """A `JournalBatch` could not be made durable: forget it and everything after it.

        Nothing of it was sent; the sender will resend it after the stream ends (the adapter
        ends it) and the next Welcome tells it where the journal stands.
        """
        _, record, undo = self._pending.pop(token)
        for message_id, before in undo.items():
            if before is None:
                self._seen.pop(message_id, None)
            else:
                self._seen[message_id] = before  # e.g. a message this batch had cancelled
        self.last_sequence = min(self.last_sequence, record.first_sequence - 1)
        self._release_welcome()

    # -- time

    def tick(self, now: float) -> None:
        """A heartbeat when due. A peer silent for `dead_after` is declared down: an
        `Event(LinkDown)`, and the adapter ends the stream."""
        if not self._welcomed:
            return
        self._heartbeat.looked(now)
        if self._heartbeat.dead(now):
            self._welcomed = False
            self._event(LinkDown(f"no frame from the peer for {self._heartbeat.dead_after:g} s"))
            return
        ping = self._heartbeat.due(now)
        if ping is not None:
            self._send(ping, self._stream)
