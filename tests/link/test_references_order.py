"""An UPDATE or CANCEL is never transmitted before the message it refers to (`Outgoing.after`).

The receiver checks an UPDATE against the message it updates, in sequence order; a FLASH update
of a ROUTINE message still queued would otherwise overtake it and be refused. Instead it takes
that message along into its own lane, ahead of itself.
"""

from __future__ import annotations

from hotline.link import DeliveryBatch, OutboundLink, Outgoing, Send, Welcome
from tests.link.test_link_properties import digest_of

NONCE = b"n" * 16
FLASH, ROUTINE = 1, 4


def message(message_id: str, rank: int, order: int, after: str = "") -> Outgoing:
    return Outgoing(message_id, rank, order, digest_of(message_id), message_id, 10, after)


def opened(lanes: dict[int, int]) -> OutboundLink:
    link = OutboundLink("JP", "TW", lanes=lanes)
    link.connect(0.0, NONCE)
    link.receive(Welcome("TW", "JP", 0, NONCE), 0.0)
    link.drain()
    return link


def transmitted(link: OutboundLink) -> list[tuple[int, str]]:
    """(sequence, id) of every delivery sent by the next tick."""
    link.tick(0.0)
    return [
        (d.sequence, d.message_id)
        for action in link.drain()
        if isinstance(action, Send) and isinstance(action.frame, DeliveryBatch)
        for d in action.frame.deliveries
    ]


def test_a_flash_update_takes_the_routine_message_it_updates_along() -> None:
    link = opened({FLASH: 4, ROUTINE: 1})
    link.enqueue(message("r1", ROUTINE, 1))
    link.enqueue(message("x", ROUTINE, 2))
    assert transmitted(link) == [(1, "r1")]  # the ROUTINE lane is full; x waits
    link.enqueue(message("u", FLASH, 3, after="x"))
    assert transmitted(link) == [(2, "x"), (3, "u")]
    assert link.in_flight == 3


def test_an_update_without_a_queued_reference_goes_as_usual() -> None:
    link = opened({FLASH: 4, ROUTINE: 1})
    link.enqueue(message("x", ROUTINE, 1))
    assert transmitted(link) == [(1, "x")]  # already in flight: nothing to wait for
    link.enqueue(message("u", FLASH, 2, after="x"))
    link.enqueue(message("v", FLASH, 3, after="settled-long-ago"))
    assert transmitted(link) == [(2, "u"), (3, "v")]


def test_the_order_holds_when_everything_is_resent_after_a_reconnect() -> None:
    link = opened({FLASH: 4, ROUTINE: 1})
    link.enqueue(message("r1", ROUTINE, 1))
    link.enqueue(message("x", ROUTINE, 2))
    link.enqueue(message("u", FLASH, 3, after="x"))
    link.enqueue(message("c", FLASH, 4, after="u"))  # a chain: x, then u, then c
    assert [m for _, m in transmitted(link)] == ["x", "u", "c", "r1"]
    link.disconnect("test")
    link.connect(1.0, NONCE)
    link.receive(Welcome("TW", "JP", 0, NONCE), 1.0)
    link.drain()
    assert [m for _, m in transmitted(link)] == ["x", "u", "c", "r1"]
