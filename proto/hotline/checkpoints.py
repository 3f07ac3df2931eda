"""Witnessing the peer's checkpoints, with no I/O: accept what is consistent, refuse the rest.

Each gateway sends its peer signed checkpoints of its own journal: "my journal holds
`entry_count` entries and its hash-chain head after them is `head_hash`". The peer keeps what
it accepted (it *witnesses* them), so neither side can later rewrite or truncate its history
without contradicting a signed statement the other holds. That only works if the witness also
notices a contradiction when it is made, on the link, rather than only in an offline
`hotline journal verify`. This module is that rule; the receiving adapter
(`server.peerlink.checkpoints`) checks the signature first and then asks a `CheckpointWitness`.

An honest journal only grows, and its head after N entries never changes. So a checkpoint is
refused when:

* it is of another party's journal than the peer's (`WRONG_PARTY`): a peer's key may only
  speak for the peer's own journal;
* its head hash is not a SHA-256 digest (`MALFORMED`);
* it names an entry count already witnessed with another head hash (`FORK`): the peer signed
  two different histories of the same length, so at least one of them was rewritten;
* its entry count is smaller than the largest witnessed (`STALE`): the peer's journal lost
  entries (truncated, or restored from an old backup), or an old checkpoint is being replayed.
  This holds even when the checkpoint is identical to one witnessed earlier: a journal
  restored to an earlier state would send exactly that.

A checkpoint identical to the latest one witnessed (same count, same head) is accepted as a
repeat: a gateway whose journal did not grow between two checkpoints sends the same statement
twice. A refusal leaves the witness unchanged.

The witness keeps the latest `history` checkpoints it accepted, so that a fork below the
latest one can be named as a fork. The decisions themselves need only the latest, so the bound
costs nothing in what is detected: any count below the latest is refused either way.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

HEAD_HASH_BYTES = 32
DEFAULT_HISTORY = 1024  # accepted checkpoints kept for naming forks below the latest


class CheckpointProblem(Enum):
    """Why a witness refused a checkpoint."""

    WRONG_PARTY = "wrong party"
    MALFORMED = "malformed"
    STALE = "stale"
    FORK = "fork"


# Results are frozen: a decision is a value the adapter journals and reports; it cannot be
# changed after the witness made it, and tests compare decisions by value.


@dataclass(frozen=True)
class CheckpointAccepted:
    """The checkpoint is consistent with everything witnessed; it is now witnessed too.

    `repeat` is true when it is identical to the latest checkpoint already witnessed.
    """

    party: str
    entry_count: int
    head_hash: bytes
    repeat: bool = False


@dataclass(frozen=True)
class CheckpointRefused:
    """The checkpoint contradicts what was witnessed, or is not the peer's; `detail` says how.

    `witnessed_head_hash` is the head witnessed before at `entry_count` (for a fork), and
    `largest_entry_count` the largest count witnessed before (0 when none), as evidence.
    """

    problem: CheckpointProblem
    detail: str
    party: str
    entry_count: int
    head_hash: bytes
    witnessed_head_hash: bytes = b""
    largest_entry_count: int = 0


CheckpointDecision = CheckpointAccepted | CheckpointRefused


def short_hash(digest: bytes) -> str:
    """The first 12 hex digits of a hash, for details and logs."""
    return digest[:6].hex() + "…"


class CheckpointWitness:
    """What has been witnessed of party `party`'s journal, and the rule for the next checkpoint.

    `observe` decides on one checkpoint whose signature has already been checked, and records
    it when it is accepted. Decisions depend only on what was witnessed before, never on a
    clock, so a witness rebuilt by replaying the journaled checkpoints decides as before.
    """

    def __init__(self, party: str, *, history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise ValueError("history must keep at least the latest checkpoint")
        self.party = party
        self._history = history
        self._heads: OrderedDict[int, bytes] = OrderedDict()  # entry_count -> head, ascending
        self._largest: int | None = None

    @property
    def history(self) -> int:
        """How many accepted checkpoints are kept (the latest ones)."""
        return self._history

    @property
    def largest_entry_count(self) -> int | None:
        """The largest entry count witnessed; None before the first checkpoint."""
        return self._largest

    def head_at(self, entry_count: int) -> bytes | None:
        """The head hash witnessed for `entry_count`, if it is still held."""
        return self._heads.get(entry_count)

    def __len__(self) -> int:
        return len(self._heads)

    def observe(self, party: str, entry_count: int, head_hash: bytes) -> CheckpointDecision:
        """Decide on a signature-checked checkpoint of `party`'s journal; witness it if accepted."""
        head_hash = bytes(head_hash)
        largest = self._largest

        def refuse(
            problem: CheckpointProblem, detail: str, witnessed: bytes = b""
        ) -> CheckpointRefused:
            return CheckpointRefused(
                problem, detail, party, entry_count, head_hash, witnessed, largest or 0
            )

        if party != self.party:
            return refuse(
                CheckpointProblem.WRONG_PARTY,
                f"checkpoint for the wrong party: the {self.party} gateway sent a checkpoint "
                f"of party {party[:16]!r}'s journal",
            )
        if len(head_hash) != HEAD_HASH_BYTES:
            return refuse(
                CheckpointProblem.MALFORMED,
                f"malformed checkpoint: {self.party} sent a head hash of {len(head_hash)} "
                f"bytes, not {HEAD_HASH_BYTES}",
            )
        witnessed = self._heads.get(entry_count)
        if witnessed is not None and witnessed != head_hash:
            below = (
                f" (and {largest} entries were witnessed since)"
                if largest is not None and entry_count < largest
                else ""
            )
            return refuse(
                CheckpointProblem.FORK,
                f"checkpoint fork: {self.party} says entry {entry_count} has head "
                f"{short_hash(head_hash)}, but witnessed {short_hash(witnessed)} before{below}",
                witnessed,
            )
        if largest is not None and entry_count < largest:
            return refuse(
                CheckpointProblem.STALE,
                f"stale checkpoint: {self.party} says its journal has {entry_count} entries "
                f"(head {short_hash(head_hash)}), but {largest} were witnessed before: "
                "its journal lost entries, or an old checkpoint was sent again",
            )
        if witnessed is not None:  # identical to the latest: nothing new to keep
            return CheckpointAccepted(party, entry_count, head_hash, repeat=True)
        self._heads[entry_count] = head_hash
        self._largest = entry_count
        while len(self._heads) > self._history:
            self._heads.popitem(last=False)
        return CheckpointAccepted(party, entry_count, head_hash)
