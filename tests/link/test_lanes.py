"""Lanes on the wire (link protocol 3): each precedence has its own stream, sequences, Welcome
and batch receipts; the rules that tie the lanes together, tested on the cores alone."""

from __future__ import annotations

from hashlib import sha256

import pytest

from hotline.errors import RemoteProtocolError
from hotline.link import (
    BatchReceipt,
    DeliveryBatch,
    Hello,
    InboundLink,
    LinkUp,
    OutboundLink,
    Outgoing,
    PeerViolation,
    ReceiptItem,
    Send,
    StreamEnd,
    Welcome,
)

NONCE = b"n" * 16
FLASH, ROUTINE = 1, 4


def digest(message_id: str) -> bytes:
    return sha256(message_id.encode()).digest()


def message(message_id: str, rank: int, order: int, after: str = "") -> Outgoing:
    return Outgoing(message_id, rank, order, digest(message_id), after=after)


def opened(lane: int, **kwargs: object) -> OutboundLink:
    core = OutboundLink("JP", "TW", lane=lane, **kwargs)  # type: ignore[arg-type]
    core.connect(0.0, NONCE)
    core.receive(Welcome("TW", "JP", 0, NONCE, lane=lane), 0.0)
    core.drain()
    return core


def batches(core: OutboundLink) -> list[DeliveryBatch]:
    return [
        a.frame for a in core.drain() if isinstance(a, Send) and isinstance(a.frame, DeliveryBatch)
    ]


def receipt_for(batch: DeliveryBatch, lane: int) -> BatchReceipt:
    items = tuple(ReceiptItem(d.sequence, d.message_id, d.digest) for d in batch.deliveries)
    return BatchReceipt(batch.first_sequence, batch.last_sequence, items, lane=lane)


def test_hello_and_link_up_name_the_lane() -> None:
    core = OutboundLink("JP", "TW", lane=FLASH, last_receipted_sequence=7)
    core.connect(0.0, NONCE)
    [hello] = [a.frame for a in core.drain() if isinstance(a, Send)]
    assert isinstance(hello, Hello)
    assert hello.lane == FLASH
    core.receive(Welcome("TW", "JP", 7, NONCE, lane=FLASH), 0.0)
    events = [getattr(a, "event", None) for a in core.drain()]
    assert LinkUp(7, FLASH) in events


def test_a_welcome_or_receipt_for_another_lane_is_a_violation() -> None:
    core = OutboundLink("JP", "TW", lane=FLASH)
    core.connect(0.0, NONCE)
    with pytest.raises(RemoteProtocolError, match="lane"):
        core.receive(Welcome("TW", "JP", 0, NONCE, lane=ROUTINE), 0.0)
    assert not core.up  # nothing changed
    core.receive(Welcome("TW", "JP", 0, NONCE, lane=FLASH), 0.0)
    core.enqueue(message("f1", FLASH, 1))
    core.tick(0.0)
    [batch] = batches(core)
    with pytest.raises(RemoteProtocolError, match="of lane 4 arrived on lane 1"):
        core.receive(receipt_for(batch, ROUTINE), 0.0)
    assert core.queue_depth == 1  # still unsettled
    core.receive(receipt_for(batch, FLASH), 0.0)
    assert core.queue_depth == 0


@pytest.mark.must("LINK-13")
def test_an_update_waits_for_the_message_it_refers_to_on_another_lane() -> None:
    """A FLASH UPDATE of a ROUTINE report still in the ROUTINE backlog: the UPDATE waits at the
    head of the FLASH lane (and so does the FLASH after it: journal order); the report is sent
    next on its lane, ahead of the backlog; once it is settled, the UPDATE goes."""
    routine = opened(ROUTINE, window=2, lanes={ROUTINE: 2})
    flash = opened(FLASH, unsettled_elsewhere=routine.holds)
    for i in range(6):
        routine.enqueue(message(f"r{i}", ROUTINE, i))
    routine.tick(0.0)
    first = batches(routine)
    assert [d.message_id for b in first for d in b.deliveries] == ["r0", "r1"]  # lane full
    flash.enqueue(message("u", FLASH, 10, after="r4"))
    flash.enqueue(message("f", FLASH, 11))
    routine.hurry("r4")
    flash.tick(0.0)
    assert batches(flash) == []  # r4 is unsettled on the ROUTINE lane: nothing overtakes it
    routine.receive(receipt_for(first[0], ROUTINE), 0.0)
    routine.tick(0.0)
    hurried = batches(routine)
    assert next(d.message_id for b in hurried for d in b.deliveries) == "r4"
    flash.tick(0.0)
    assert batches(flash) == []  # sent, not yet settled
    routine.receive(receipt_for(hurried[0], ROUTINE), 0.0)
    flash.tick(0.0)
    assert [[d.message_id for d in b.deliveries] for b in batches(flash)] == [["u", "f"]]


def test_an_update_of_a_message_on_its_own_lane_does_not_wait() -> None:
    flash = opened(FLASH, unsettled_elsewhere=lambda message_id: False)
    flash.enqueue(message("a", FLASH, 1))
    flash.enqueue(message("u", FLASH, 2, after="a"))
    flash.tick(0.0)
    assert [[d.message_id for d in b.deliveries] for b in batches(flash)] == [["a", "u"]]


def receiver(lane: int) -> InboundLink:
    class Archive:
        def batch_receipts_after(self, party: str, lane: int, sequence: int) -> list[BatchReceipt]:
            return []

        def batch_receipt_for(self, party: str, lane: int, sequence: int) -> BatchReceipt | None:
            return None

    def never(*args: object) -> object:
        raise AssertionError("no delivery expected")

    return InboundLink(
        "TW",
        "JP",
        lane=lane,
        last_sequence=0,
        seen={},
        archive=Archive(),
        check=never,  # type: ignore[arg-type]
    )


def test_a_receiver_lane_welcomes_only_its_own_lane() -> None:
    core = receiver(FLASH)
    with pytest.raises(PeerViolation) as refused:
        core.hello(Hello("JP", 0, NONCE, lane=ROUTINE), 0.0)
    assert refused.value.end is StreamEnd.INVALID_ARGUMENT
    with pytest.raises(PeerViolation, match="lane 0") as refused:
        core.hello(Hello("JP", 0, NONCE, lane=0), 0.0)
    assert refused.value.end is StreamEnd.INVALID_ARGUMENT
    stream = core.hello(Hello("JP", 0, NONCE, lane=FLASH), 0.0)
    [welcome] = [a.frame for a in core.drain() if isinstance(a, Send)]
    assert isinstance(welcome, Welcome)
    assert welcome.lane == FLASH
    assert stream == 1


def test_a_version_2_hello_is_refused_for_its_version_first() -> None:
    core = receiver(ROUTINE)
    with pytest.raises(PeerViolation, match="protocol version 2") as refused:
        core.hello(Hello("JP", 0, NONCE, protocol_version=2, lane=0), 0.0)
    assert refused.value.end is StreamEnd.FAILED_PRECONDITION
