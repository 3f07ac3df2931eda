"""Every state × every frame, on both ends of the link (in the style of h2's state-machine tests).

For each pair the table says what must happen: the frame is handled (and what comes out), or it
is refused with a protocol error — and a refused frame changes nothing: same state, same
counters, no action emitted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from hotline.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from hotline.link import (
    BatchReceipt,
    Delivery,
    DeliveryBatch,
    Event,
    Hello,
    InboundLink,
    Measured,
    OutboundLink,
    Outgoing,
    PeerViolation,
    Persist,
    Ping,
    Pong,
    ReceiptItem,
    ReceiverFrame,
    Send,
    SenderState,
    StreamEnd,
    Welcome,
)
from tests.link.test_link_properties import ReceiverDisk, check, digest_of

NONCE = b"n" * 16

# ------------------------------------------------------------------------------ the sender


def sender_in(state: str) -> OutboundLink:
    link = OutboundLink("JP", "TW", lanes={1: 4, 2: 4, 3: 4, 4: 4})
    link.enqueue(Outgoing("m1", 4, 1, digest_of("m1"), "m1", 2))
    if state == "idle":
        return link
    link.connect(0.0, NONCE)
    if state == "open":
        link.receive(Welcome("TW", "JP", 0, NONCE), 0.0)
        link.tick(0.0)  # m1 goes out as sequence 1
    link.drain()
    return link


SENDER_FRAMES: dict[str, ReceiverFrame] = {
    "welcome": Welcome("TW", "JP", 0, NONCE),
    "welcome-replayed": Welcome("TW", "JP", 0, b"r" * 16),
    "welcome-wrong-party": Welcome("KR", "JP", 0, NONCE),
    "welcome-lost-history": Welcome("TW", "JP", 0, NONCE),  # only wrong once we settled more
    "receipt-in-flight": BatchReceipt(1, 1, (ReceiptItem(1, "m1", digest_of("m1")),)),
    "receipt-never-sent": BatchReceipt(7, 7, (ReceiptItem(7, "m7", digest_of("m7")),)),
    "receipt-other-bytes": BatchReceipt(1, 1, (ReceiptItem(1, "m1", b"\x00" * 32),)),
    "ping": Ping(5, 0.0),
    "pong": Pong(1, 0.0, 0.1, 0.1),
}

# (state, frame) -> what must happen: an error class, or a check of the actions
OK = "ok"
SENDER_TABLE: dict[str, dict[str, type[ProtocolError] | str]] = {
    "idle": dict.fromkeys(SENDER_FRAMES, LocalProtocolError),
    "hello-sent": {
        "welcome": OK,
        "welcome-replayed": RemoteProtocolError,
        "welcome-wrong-party": RemoteProtocolError,
        "welcome-lost-history": OK,
        "receipt-in-flight": RemoteProtocolError,
        "receipt-never-sent": RemoteProtocolError,
        "receipt-other-bytes": RemoteProtocolError,
        "ping": RemoteProtocolError,
        "pong": RemoteProtocolError,
    },
    "open": {
        "welcome": RemoteProtocolError,
        "welcome-replayed": RemoteProtocolError,
        "welcome-wrong-party": RemoteProtocolError,
        "welcome-lost-history": RemoteProtocolError,
        "receipt-in-flight": OK,
        "receipt-never-sent": RemoteProtocolError,
        "receipt-other-bytes": RemoteProtocolError,
        "ping": OK,
        "pong": OK,
    },
}


def sender_snapshot(link: OutboundLink) -> tuple[object, ...]:
    return (link.state, link.last_settled, link.queue_depth, link.in_flight)


@pytest.mark.parametrize(("state", "frame"), [(s, f) for s in SENDER_TABLE for f in SENDER_FRAMES])
@pytest.mark.must("LINK-5", "LINK-6")
def test_sender_state_by_frame(state: str, frame: str) -> None:
    link = sender_in(state)
    expected = SENDER_TABLE[state][frame]
    before = sender_snapshot(link)
    if expected is OK:
        link.receive(SENDER_FRAMES[frame], 1.0)
        actions = link.drain()
        if frame.startswith("welcome"):
            assert link.state is SenderState.OPEN
            assert [type(a.event).__name__ for a in actions if isinstance(a, Event)] == ["LinkUp"]
        elif frame == "receipt-in-flight":
            assert link.last_settled == 1
            assert [type(a.record).__name__ for a in actions if isinstance(a, Persist)] == [
                "SettleOutbound"
            ]
        elif frame == "ping":
            assert [type(a.frame).__name__ for a in actions if isinstance(a, Send)] == ["Pong"]
        elif frame == "pong":
            assert [type(a.event) for a in actions if isinstance(a, Event)] == [Measured]
        return
    assert isinstance(expected, type)
    with pytest.raises(expected):
        link.receive(SENDER_FRAMES[frame], 1.0)
    assert sender_snapshot(link) == before
    assert link.drain() == []


# ------------------------------------------------------------------------------ the receiver


def receiver_in(state: str) -> tuple[InboundLink, int]:
    link, stream = _receiver_in(state)
    assert link.state.value == ("open" if state == "welcomed" else state)
    return link, stream


def _receiver_in(state: str) -> tuple[InboundLink, int]:
    disk = ReceiverDisk()
    link = InboundLink("TW", "JP", last_sequence=0, seen={}, archive=disk, check=check)
    if state == "no-stream":
        return link, 1
    if state == "welcome-due":
        # a batch of an earlier stream is still persisting: the new stream's Welcome waits
        stream = link.hello(Hello("JP", 0, NONCE), 0.0)
        link.receive(batch(1), 0.0, stream)
        stream = link.hello(Hello("JP", 0, NONCE), 0.0)
        link.drain()
        return link, stream
    stream = link.hello(Hello("JP", 0, NONCE), 0.0)
    link.drain()
    return link, stream


def batch(first: int, count: int = 1) -> DeliveryBatch:
    return DeliveryBatch(
        tuple(
            Delivery(first + i, "", digest_of(f"m{first + i}"), f"m{first + i}", 2)
            for i in range(count)
        )
    )


RECEIVER_FRAMES: dict[str, Callable[[int], tuple[object, int]]] = {
    "batch-next": lambda s: (batch(1, 2), s),
    "batch-gap": lambda s: (batch(3), s),
    "batch-not-consecutive": lambda s: (
        DeliveryBatch((batch(1).deliveries[0], batch(3).deliveries[0])),
        s,
    ),
    "batch-empty": lambda s: (DeliveryBatch(()), s),
    "ping": lambda s: (Ping(5, 0.0), s),
    "pong": lambda s: (Pong(1, 0.0, 0.1, 0.1), s),
    "old-stream": lambda s: (Ping(5, 0.0), s - 1),
}

RECEIVER_TABLE: dict[str, dict[str, StreamEnd | str]] = {
    "no-stream": dict.fromkeys(RECEIVER_FRAMES, StreamEnd.ABORTED),
    "welcome-due": {
        "batch-next": StreamEnd.FAILED_PRECONDITION,  # a batch before the Welcome
        "batch-gap": StreamEnd.FAILED_PRECONDITION,
        "batch-not-consecutive": StreamEnd.FAILED_PRECONDITION,
        "batch-empty": StreamEnd.FAILED_PRECONDITION,
        "ping": OK,
        "pong": OK,
        "old-stream": StreamEnd.ABORTED,
    },
    "welcomed": {
        "batch-next": OK,
        "batch-gap": StreamEnd.FAILED_PRECONDITION,
        "batch-not-consecutive": StreamEnd.INVALID_ARGUMENT,
        "batch-empty": StreamEnd.INVALID_ARGUMENT,
        "ping": OK,
        "pong": OK,
        "old-stream": StreamEnd.ABORTED,
    },
}


@pytest.mark.parametrize(
    ("state", "frame"), [(s, f) for s in RECEIVER_TABLE for f in RECEIVER_FRAMES]
)
@pytest.mark.must("LINK-5", "LINK-10", "LINK-22")
def test_receiver_state_by_frame(state: str, frame: str) -> None:
    link, stream = receiver_in(state)
    value, on = RECEIVER_FRAMES[frame](stream)
    expected = RECEIVER_TABLE[state][frame]
    before = (link.stream, link.last_sequence, link.durable_sequence)
    if expected == OK:
        link.receive(value, 1.0, on)  # type: ignore[arg-type]
        actions = link.drain()
        if frame == "batch-next":
            assert link.last_sequence == 2
            [persist] = actions
            assert isinstance(persist, Persist)
            assert [a.message_id for a in persist.record.accepted] == ["m1", "m2"]  # type: ignore[union-attr]
        elif frame == "ping":
            assert [type(a.frame).__name__ for a in actions if isinstance(a, Send)] == ["Pong"]
        return
    assert isinstance(expected, StreamEnd)
    with pytest.raises(PeerViolation) as raised:
        link.receive(value, 1.0, on)  # type: ignore[arg-type]
    assert raised.value.end is expected
    assert (link.stream, link.last_sequence, link.durable_sequence) == before
    assert link.drain() == []


@pytest.mark.parametrize(
    ("hello", "end"),
    [
        (Hello("KR", 0, NONCE), StreamEnd.PERMISSION_DENIED),
        (Hello("JP", 0, b"short"), StreamEnd.INVALID_ARGUMENT),
        (Hello("JP", 0, NONCE, protocol_version=1), StreamEnd.FAILED_PRECONDITION),
        (Hello("JP", 9, NONCE), StreamEnd.DATA_LOSS),
    ],
)
@pytest.mark.must("VER-1", "LINK-20", "LINK-24")
def test_a_bad_hello_ends_the_stream_with_the_specified_code(hello: Hello, end: StreamEnd) -> None:
    link = InboundLink("TW", "JP", last_sequence=0, seen={}, archive=ReceiverDisk(), check=check)
    with pytest.raises(PeerViolation) as raised:
        link.hello(hello, 0.0)
    assert raised.value.end is end
    assert not any(isinstance(a, Send) for a in link.drain())


def test_a_welcome_after_lost_history_is_refused() -> None:
    """The sender settled 3 sequences; a Welcome holding only 1 means the peer lost entries."""
    link = OutboundLink("JP", "TW", last_receipted_sequence=3)
    link.connect(0.0, NONCE)
    link.drain()
    with pytest.raises(RemoteProtocolError, match="lost entries"):
        link.receive(replace(Welcome("TW", "JP", 1, NONCE)), 0.0)
    assert link.state is SenderState.HELLO_SENT
