"""The sender finds its own journal's loss in the Welcome, and holds instead of papering over it.

The peer's Welcome says how far it holds our sequences and carries the batch receipts that
settle everything above our last settled one. When those receipts name messages our outbox
has no record of, our journal lost history (replaced by an empty one, restored from an old
copy): the sender must not adopt the peer's sequence and go on, as it once did. It holds,
for good, and says what is missing. State × frame, no sockets.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from hotline.errors import LocalProtocolError, RemoteProtocolError
from hotline.link import (
    BatchReceipt,
    Event,
    JournalLost,
    LinkUp,
    OutboundLink,
    Outgoing,
    Persist,
    ReceiptItem,
    RejectionItem,
    RejectReason,
    Send,
    SenderState,
    SettleOutbound,
    Welcome,
    WitnessedCheckpoint,
)
from tests.link.test_link_properties import digest_of
from tests.link.test_link_states import SENDER_FRAMES

NONCE = b"n" * 16


def receipts(*ids: str, first: int = 1) -> BatchReceipt:
    items = tuple(ReceiptItem(first + i, m, digest_of(m)) for i, m in enumerate(ids))
    return BatchReceipt(first, first + len(ids) - 1, items)


def dialled(*outbox: str, last_settled: int = 0) -> OutboundLink:
    """A sender whose journal holds `outbox` unsettled, after its Hello went out."""
    link = OutboundLink("JP", "TW", last_receipted_sequence=last_settled)
    for order, message_id in enumerate(outbox, 1):
        link.enqueue(Outgoing(message_id, 4, order, digest_of(message_id), message_id, 2))
    link.connect(0.0, NONCE)
    link.drain()
    return link


def events(actions: Sequence[object]) -> list[object]:
    return [a.event for a in actions if isinstance(a, Event)]


@pytest.mark.must("LINK-27")
def test_a_welcome_settling_messages_our_journal_never_held_holds_the_sender() -> None:
    """Our journal was replaced by an empty one; the peer settled m1..m5 from us before, and
    an operator journaled m6 since. The sender holds: m6 is not sent under sequence 6."""
    link = dialled("m6")
    link.receive(Welcome("TW", "JP", 5, NONCE, (receipts("m1", "m2", "m3", "m4", "m5"),)), 1.0)
    actions = link.drain()
    assert link.state is SenderState.HELD
    assert not link.up
    [lost] = events(actions)
    assert isinstance(lost, JournalLost)
    assert lost.missing == tuple((s, f"m{s}") for s in range(1, 6))
    assert (lost.last_settled, lost.peer_last_sequence) == (0, 5)
    assert "lost history" in lost.detail
    assert not any(isinstance(a, Send | Persist) for a in actions)
    assert link.last_settled == 0  # the peer's sequence is not adopted
    link.tick(2.0)
    link.tick(30.0)  # no deadline, no heartbeat, no batch: nothing ever leaves
    assert link.drain() == []
    assert link.lost is lost


def test_a_welcome_settling_our_unsettled_messages_is_no_loss() -> None:
    """The ordinary resume: we crashed before journaling settlements of m1, m2; the Welcome
    brings them, and the link opens past them."""
    link = dialled("m1", "m2", "m3")
    link.receive(Welcome("TW", "JP", 2, NONCE, (receipts("m1", "m2"),)), 1.0)
    actions = link.drain()
    assert link.state is SenderState.OPEN
    assert [type(e) for e in events(actions)] == [LinkUp]
    [persist] = [a for a in actions if isinstance(a, Persist)]
    assert isinstance(persist.record, SettleOutbound)
    assert [r.message_id for r in persist.record.receipted] == ["m1", "m2"]
    assert link.last_settled == 2
    link.tick(1.0)
    [sent] = [a.frame for a in link.drain() if isinstance(a, Send)]
    assert [d.sequence for d in sent.deliveries] == [3]  # type: ignore[union-attr]


def test_one_unknown_message_among_known_ones_is_a_loss() -> None:
    link = dialled("m1")
    link.receive(Welcome("TW", "JP", 2, NONCE, (receipts("m1", "gone"),)), 1.0)
    [lost] = events(link.drain())
    assert isinstance(lost, JournalLost)
    assert lost.missing == ((2, "gone"),)
    assert link.state is SenderState.HELD


def test_settlements_we_hold_already_are_not_a_loss() -> None:
    """A batch receipt may also cover sequences at or below our last settled one: those
    messages left our outbox long ago and are not missing."""
    link = dialled("m3", last_settled=2)
    link.receive(Welcome("TW", "JP", 3, NONCE, (receipts("m1", "m2", "m3"),)), 1.0)
    assert link.state is SenderState.OPEN
    assert link.last_settled == 3


def test_a_rejection_of_an_unreadable_payload_names_no_message_and_is_no_loss() -> None:
    link = dialled("m1")
    rejected = BatchReceipt(
        1, 1, rejections=(RejectionItem(1, "", RejectReason.INVALID_MESSAGE, "garbage"),)
    )
    link.receive(Welcome("TW", "JP", 1, NONCE, (rejected,)), 1.0)
    assert link.state is SenderState.OPEN


@pytest.mark.must("LINK-26")
def test_a_welcome_claiming_sequences_it_does_not_settle_is_refused_and_changes_nothing() -> None:
    """Adopting a sequence nobody settled is how a loss was once papered over."""
    link = dialled("m1")
    with pytest.raises(RemoteProtocolError, match="do not settle sequence 4"):
        link.receive(Welcome("TW", "JP", 5, NONCE, (receipts("m1", "x2", "x3"),)), 1.0)
    assert link.state is SenderState.HELLO_SENT
    assert link.last_settled == 0
    assert link.drain() == []


@pytest.mark.parametrize("frame", list(SENDER_FRAMES))
def test_a_held_sender_ignores_every_frame(frame: str) -> None:
    link = dialled()
    link.receive(Welcome("TW", "JP", 1, NONCE, (receipts("gone"),)), 1.0)
    link.drain()
    link.receive(SENDER_FRAMES[frame], 2.0)
    assert link.drain() == []
    assert link.state is SenderState.HELD


def test_a_held_sender_stays_held_across_disconnects_and_refuses_to_dial() -> None:
    link = dialled()
    link.receive(Welcome("TW", "JP", 1, NONCE, (receipts("gone"),)), 1.0)
    link.drain()
    link.disconnect("the adapter ended the stream")
    assert link.state is SenderState.HELD
    assert link.drain() == []  # no LinkDown: it never came up
    link.enqueue(Outgoing("new", 1, 9, digest_of("new"), "new", 2))
    assert link.queue_depth == 1  # journaled messages wait in the outbox ...
    with pytest.raises(LocalProtocolError, match="held"):
        link.connect(3.0, NONCE)  # ... and are never sent until a restart on a recovered journal


# --------------------------------------------------------------------------- LINK-28


def _checked_sender(journal: dict[int, bytes]) -> OutboundLink:
    """A sender whose own journal holds `journal` (entry count -> chain hash after it)."""
    sender = OutboundLink("JP", "TW", journal_hash_at=journal.get)
    sender.connect(0.0, NONCE)
    sender.drain()
    return sender


def _welcome_with(checkpoint: WitnessedCheckpoint | None) -> Welcome:
    return Welcome("TW", "JP", 0, NONCE, witnessed=checkpoint)


@pytest.mark.must("LINK-28")
def test_a_witnessed_checkpoint_beyond_our_journal_holds_the_sender() -> None:
    sender = _checked_sender({0: b"g" * 32, 1: b"a" * 32, 2: b"b" * 32})
    sender.receive(_welcome_with(WitnessedCheckpoint(11, b"x" * 32)), 1.0)
    assert sender.state is SenderState.HELD
    assert sender.lost is not None
    assert sender.lost.checkpoint == (11, 2)
    assert "witnessed our journal at 11 entries, but this journal holds only 2" in (
        sender.lost.detail
    )
    events = [a.event for a in sender.drain() if isinstance(a, Event)]
    assert events == [sender.lost]


@pytest.mark.must("LINK-28")
def test_a_witnessed_checkpoint_off_our_chain_holds_the_sender() -> None:
    sender = _checked_sender({0: b"g" * 32, 1: b"a" * 32, 2: b"b" * 32})
    sender.receive(_welcome_with(WitnessedCheckpoint(2, b"other" * 6 + b"..")), 1.0)
    assert sender.state is SenderState.HELD
    assert sender.lost is not None
    assert sender.lost.forked
    assert "rewritten or replaced" in sender.lost.detail


def test_a_witnessed_checkpoint_on_our_chain_lets_the_link_up() -> None:
    sender = _checked_sender({0: b"g" * 32, 1: b"a" * 32, 2: b"b" * 32})
    sender.receive(_welcome_with(WitnessedCheckpoint(1, b"a" * 32)), 1.0)
    assert sender.state is SenderState.OPEN
    assert sender.lost is None
