"""The sending end's gate between lanes: no lane sends before every higher lane is open; while
a FLASH is in flight (until its settlement is durable) no other lane sends a new batch, and
their batch receipts wait (the cores alone, no sockets)."""

from __future__ import annotations

from hashlib import sha256
from typing import cast

import grpc

from hotline import link
from hotline.signing import KeyRing
from server.peerlink.sender import PeerSender
from tests.peerlink.test_sender_vets_peer import EmptyOutbox

NONCE = b"n" * 16


async def on_link(up: bool, detail: str) -> None:
    return None


def sender() -> PeerSender:
    return PeerSender(
        party="JP",
        peer_party="TW",
        outbox=EmptyOutbox(),
        keyring=cast(KeyRing, None),
        signing_certificates=[],
        channel_factory=lambda: cast(grpc.aio.Channel, None),
        on_link=on_link,
    )


def message(message_id: str, rank: int, order: int) -> link.Outgoing:
    return link.Outgoing(message_id, rank, order, sha256(message_id.encode()).digest())


def sent(core: link.OutboundLink) -> list[str]:
    return [
        d.message_id
        for a in core.drain()
        if isinstance(a, link.Send) and isinstance(a.frame, link.DeliveryBatch)
        for d in a.frame.deliveries
    ]


def welcome(core: link.OutboundLink) -> None:
    core.receive(link.Welcome("TW", "JP", 0, NONCE, lane=core.lane), 0.0)


async def test_lanes_start_in_precedence_order_and_hold_while_a_flash_is_in_flight() -> None:
    s = sender()
    for core in s.cores.values():
        core.connect(0.0, NONCE)
        core.drain()
    flash, routine = s.cores[1], s.cores[4]
    s.cores[1].enqueue(message("f", 1, 2))
    s.cores[4].enqueue(message("r", 4, 1))
    welcome(routine)  # the ROUTINE lane's Welcome comes first ...
    s._gate()
    routine.tick(0.0)
    assert sent(routine) == []  # ... but it waits for the higher lanes
    for lane in (1, 2, 3):
        welcome(s.cores[lane])
    s._gate()
    flash.tick(0.0)
    assert sent(flash) == ["f"]
    s._gate()  # the FLASH is in flight now
    routine.tick(0.0)
    assert sent(routine) == []
    s._note_flash()
    assert not s._flash_idle.is_set()  # the other lanes' batch receipts wait
    flash.receive(
        link.BatchReceipt(1, 1, (link.ReceiptItem(1, "f", sha256(b"f").digest()),), lane=1), 0.0
    )
    assert flash.in_flight == 0
    [persist] = [a for a in flash.drain() if isinstance(a, link.Persist)]
    s._note_flash()
    assert not s._flash_idle.is_set()  # settled, not yet durable
    flash.persisted(persist.token)
    s._note_flash()
    assert s._flash_idle.is_set()
    s._gate()
    routine.tick(0.0)
    assert sent(routine) == ["r"]
