"""End-to-end integrity of a run: both journals compared, message by message.

After every run the simulator reads both gateways' journals (read-only, through the journal
file's reader `hotline.journal_file.JournalReader`) and checks, for each direction S -> R:

    lost        S journaled it as sent (MESSAGE_OUT) but R never journaled it as received
                (MESSAGE_IN), nor refused it, by the end of the drain period
    duplicated  R journaled the same message id, or the same (sender, lane, sequence), more than
                once
                (the schema forbids it; counted all the same)
    reordered   within one precedence, R journaled messages in an order other than S's journal
                order; or R's link sequences of a lane do not increase along its journal
    forged      R holds a message S never journaled, or whose bytes' SHA-256 differs from S's,
                or whose signature does not verify; or the two sides' settlements disagree
                about which message a sequence carried

and then verifies both journals' hash chains and every signature (`hotline.journal_verify`, what
`hotline journal verify` runs), and the checkpoints each side witnessed of the other. Any
non-zero count, or a journal that fails verification, fails the run.

When the simulator drives endpoints it did not start and cannot read their journals, the same
comparison is made over the operator API (`compare_records`): each message's record from both
gateways. That view cannot see duplicates or verify the chains, and says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from hotline.journal_file import JournalFileError, JournalReader, Kind
from hotline.journal_verify import check_witnessed, verify_journal
from hotline.v1 import common_pb2, envelope_pb2

PROBLEM_KINDS = ("lost", "duplicated", "reordered", "forged")
_SAMPLE = 20


@dataclass(frozen=True)
class _Out:
    message_id: str
    position: int
    digest: bytes
    precedence: int


@dataclass(frozen=True)
class _In:
    message_id: str
    position: int
    sequence: int
    digest: bytes
    precedence: int


@dataclass
class DirectionReport:
    """The comparison of one direction, sender -> receiver."""

    sender: str
    receiver: str
    sent: int = 0
    received: int = 0
    refused: int = 0
    unsettled: int = 0  # received by R, but S has no receipt yet (informational)
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    forged: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        return f"{self.sender}->{self.receiver}"

    def note(self, kind: str, text: str) -> None:
        found = self.examples.setdefault(kind, [])
        if len(found) < _SAMPLE:
            found.append(text)

    def to_json(self) -> dict[str, Any]:
        return {
            "direction": self.direction,
            "sent": self.sent,
            "received": self.received,
            "refused": self.refused,
            "unsettled": self.unsettled,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "forged": self.forged,
            "examples": self.examples,
        }


@dataclass
class IntegrityReport:
    method: str  # "journals" or "operator-api"
    directions: list[DirectionReport] = field(default_factory=list)
    journals: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def total(self, kind: str) -> int:
        return sum(int(getattr(d, kind)) for d in self.directions)

    @property
    def ok(self) -> bool:
        return not self.problems and all(self.total(k) == 0 for k in PROBLEM_KINDS)

    @property
    def verdict(self) -> str:
        return "PASS" if self.ok else "FAIL"

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "method": self.method,
            **{k: self.total(k) for k in PROBLEM_KINDS},
            "directions": [d.to_json() for d in self.directions],
            "journals": self.journals,
            "problems": self.problems,
            "notes": self.notes,
        }


# ---------------------------------------------------------------------------------------------
# Reading journals


def head_position(path: Path) -> int:
    """The journal's last entry position (0 if empty): where a Watch of new events starts."""
    with JournalReader(path) as journal:
        return journal.head_position()


def _payload(body: bytes) -> tuple[bytes, int]:
    """(SHA-256 of the signed envelope bytes, precedence) of a MESSAGE_* entry body."""
    signed = common_pb2.SignedPayload()
    signed.ParseFromString(body)
    envelope = envelope_pb2.Envelope()
    try:
        envelope.ParseFromString(signed.payload)
        precedence = int(envelope.precedence)
    except Exception:  # an unparsable payload is compared by digest only
        precedence = 0
    return hashlib.sha256(signed.payload).digest(), precedence


@dataclass
class _Journal:
    party: str
    out: list[_Out] = field(default_factory=list)
    inbound: list[_In] = field(default_factory=list)
    # id -> (lane, sequence, position)
    refused_inbound: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    refused_by_peer: set[str] = field(default_factory=set)
    receipted: set[str] = field(default_factory=set)
    # (sender party, lane, sequence) -> message id, from the settlements table
    settlements: dict[tuple[str, int, int], str] = field(default_factory=dict)


_COMPARED = (
    Kind.MESSAGE_OUT,
    Kind.MESSAGE_IN,
    Kind.REFUSED_INBOUND,
    Kind.REFUSED_BY_PEER,
    Kind.DELIVERED,
)


def _read(path: Path) -> _Journal:
    with JournalReader(path) as reader:
        journal = _Journal(reader.party())
        for e in reader.entries(_COMPARED):
            if e.kind is Kind.MESSAGE_OUT:
                digest, precedence = _payload(e.body)
                journal.out.append(_Out(e.message_id, e.position, digest, precedence))
            elif e.kind is Kind.MESSAGE_IN:
                digest, precedence = _payload(e.body)
                journal.inbound.append(
                    _In(e.message_id, e.position, e.sequence, digest, precedence)
                )
            elif e.kind is Kind.REFUSED_INBOUND:
                lane = int(e.json_body().get("lane", 0))
                journal.refused_inbound[e.message_id] = (lane, e.sequence, e.position)
            elif e.kind is Kind.REFUSED_BY_PEER:
                journal.refused_by_peer.add(e.message_id)
            else:  # DELIVERED: one per message a batch receipt receipted
                journal.receipted.add(e.message_id)
        for s in reader.settlements():
            journal.settlements[(s.sender_party, s.lane, s.sequence)] = s.message_id
    return journal


# ---------------------------------------------------------------------------------------------
# Comparing


def compare_direction(
    sender: _Journal, receiver: _Journal, scope: set[str] | None = None
) -> DirectionReport:
    report = DirectionReport(sender.party, receiver.party)
    sent = {m.message_id: m for m in sender.out}
    report.sent = len(sent) if scope is None else len(scope & set(sent))
    inbound = list(receiver.inbound)
    report.received = sum(1 for m in inbound if scope is None or m.message_id in scope)
    report.refused = sum(1 for m in receiver.refused_inbound if scope is None or m in scope)

    # duplicated: by message id and by (lane, sequence); a message's lane is its precedence
    seen_ids: set[str] = set()
    seen_seqs: set[tuple[int, int]] = set()
    for m in inbound:
        if m.message_id in seen_ids:
            report.duplicated += 1
            report.note("duplicated", f"{m.message_id} journaled again at {m.position}")
        if (m.precedence, m.sequence) in seen_seqs:
            report.duplicated += 1
            report.note(
                "duplicated",
                f"sequence {m.sequence} of lane {m.precedence} journaled again at {m.position}",
            )
        seen_ids.add(m.message_id)
        seen_seqs.add((m.precedence, m.sequence))

    # forged: unknown to the sender, or different bytes
    for m in inbound:
        original = sent.get(m.message_id)
        if original is None:
            report.forged += 1
            report.note("forged", f"{m.message_id}: the sender never journaled it")
        elif original.digest != m.digest:
            report.forged += 1
            report.note("forged", f"{m.message_id}: bytes differ from the sender's")
    # the two sides' settlements must agree on which message each sequence carried
    for (party, lane, sequence), message_id in sender.settlements.items():
        if party != sender.party:
            continue
        theirs = receiver.settlements.get((party, lane, sequence))
        if theirs is not None and theirs != message_id:
            report.forged += 1
            report.note(
                "forged",
                f"sequence {sequence} of lane {lane}: sender settled {message_id}, receiver "
                f"holds {theirs}",
            )

    # lost: journaled as sent, never received nor refused
    received_ids = {m.message_id for m in inbound}
    for out in sender.out:
        if scope is not None and out.message_id not in scope:
            continue
        if out.message_id in received_ids:
            if out.message_id not in sender.receipted:
                report.unsettled += 1
            continue
        if out.message_id in receiver.refused_inbound or out.message_id in sender.refused_by_peer:
            continue
        report.lost += 1
        report.note("lost", f"{out.message_id} (sender position {out.position})")

    # reordered: within one precedence, receiver order must follow sender order
    latest: dict[int, int] = {}
    for m in inbound:
        original = sent.get(m.message_id)
        if original is None:
            continue
        before = latest.get(original.precedence, 0)
        if original.position < before:
            report.reordered += 1
            report.note(
                "reordered",
                f"{m.message_id} (sender position {original.position}) arrived after "
                f"sender position {before}",
            )
        latest[original.precedence] = max(before, original.position)
    # and each lane's sequences must increase along the receiver's journal
    settled = sorted(
        [(m.position, m.precedence, m.sequence) for m in inbound]
        + [(p, lane, s) for lane, s, p in receiver.refused_inbound.values()]
    )
    last_sequence: dict[int, int] = {}
    for position, lane, sequence in settled:
        if sequence <= last_sequence.get(lane, 0):
            report.reordered += 1
            report.note(
                "reordered",
                f"sequence {sequence} of lane {lane} at position {position} went backwards",
            )
        last_sequence[lane] = max(last_sequence.get(lane, 0), sequence)
    return report


def check_journals(
    paths: Mapping[str, Path],
    cas: Sequence[x509.Certificate] = (),
    *,
    scope: set[str] | None = None,
    verify: bool = True,
) -> IntegrityReport:
    """Compare the two journals `{party: path}` both ways, then verify each (unless not `verify`).

    `scope` limits the *lost* count to the message ids this run sent (other checks cover the
    whole journals: a problem left by an earlier run on the same journals still fails this one).
    """
    report = IntegrityReport("journals")
    (a, path_a), (b, path_b) = list(paths.items())
    try:
        ja, jb = _read(path_a), _read(path_b)
    except (OSError, JournalFileError) as exc:
        report.problems.append(f"cannot read the journals: {exc}")
        return report
    for party, journal in ((a, ja), (b, jb)):
        if journal.party != party:
            report.problems.append(f"{paths[party]} is {journal.party}'s journal, not {party}'s")
    if report.problems:
        return report
    report.directions = [compare_direction(ja, jb, scope), compare_direction(jb, ja, scope)]
    if verify:
        _verify(report, paths, cas)
    return report


def _verify(
    report: IntegrityReport, paths: Mapping[str, Path], cas: Sequence[x509.Certificate]
) -> None:
    parties = list(paths)
    for party in parties:
        path = paths[party]
        witness = paths[parties[1] if party == parties[0] else parties[0]]
        result = verify_journal(path, cas)
        signatures_ok = result.ok
        if result.ok:
            result = check_witnessed(result, witness)
        report.journals[party] = {
            "path": str(path),
            "entries": result.entries,
            "head_hash": result.head_hash,
            "signatures_checked": result.signatures_checked,
            "checkpoints_matched": result.checkpoints_matched,
            "ok": result.ok,
            "problem": result.problem,
        }
        if not result.ok:
            report.problems.append(f"{party} journal: {result.problem}")
            if not signatures_ok and result.first_bad is not None:
                _count_bad_signature(report, party, path, result.first_bad)


def _count_bad_signature(report: IntegrityReport, party: str, path: Path, position: int) -> None:
    """A received message whose signature or chain fails verification counts as forged."""
    with JournalReader(path) as journal:
        entry = journal.entry(position)
    if entry is not None and entry.kind is Kind.MESSAGE_IN:
        for direction in report.directions:
            if direction.receiver == party:
                direction.forged += 1
                direction.note(
                    "forged", f"{entry.message_id}: fails verification at position {position}"
                )


def load_cas(pki: Path, parties: Iterable[str]) -> list[x509.Certificate]:
    from certs.pki import PartyPaths

    return [
        x509.load_pem_x509_certificate(PartyPaths.of(pki, party).ca_cert.read_bytes())
        for party in parties
    ]


# ---------------------------------------------------------------------------------------------
# Over the operator API (endpoints whose journals we cannot read)


@dataclass(frozen=True)
class RecordView:
    """What the comparison needs of one MessageRecord."""

    message_id: str
    sender: str
    journal_position: int
    sequence: int
    precedence: int
    digest: bytes

    @classmethod
    def of(cls, record: Any) -> RecordView:
        envelope = record.envelope
        return cls(
            message_id=str(envelope.message_id),
            sender=str(envelope.sender_party),
            journal_position=int(record.journal_position),
            sequence=int(record.sequence),
            precedence=int(envelope.precedence),
            digest=hashlib.sha256(record.signed_envelope.payload).digest(),
        )


def compare_records(
    sent: Mapping[str, RecordView],
    received: Mapping[str, RecordView | None],
    parties: tuple[str, str],
) -> IntegrityReport:
    """`sent`: id -> sender's record; `received`: id -> receiver's record (None: not found)."""
    report = IntegrityReport("operator-api")
    report.notes.append(
        "journals not readable: duplicates, hash chains, signatures and witnessed checkpoints "
        "were not checked (pass --journal-jp/--journal-tw to check them)"
    )
    a, b = parties
    for sender, receiver in ((a, b), (b, a)):
        direction = DirectionReport(sender, receiver)
        mine = sorted(
            (v for v in sent.values() if v.sender == sender), key=lambda v: v.journal_position
        )
        direction.sent = len(mine)
        arrived: list[tuple[int, RecordView]] = []
        for view in mine:
            got = received.get(view.message_id)
            if got is None:
                direction.lost += 1
                direction.note("lost", view.message_id)
                continue
            direction.received += 1
            if got.digest != view.digest:
                direction.forged += 1
                direction.note("forged", f"{view.message_id}: bytes differ from the sender's")
            arrived.append((got.sequence or got.journal_position, view))
        latest: dict[int, int] = {}
        for _, view in sorted(arrived, key=lambda item: item[0]):
            before = latest.get(view.precedence, 0)
            if view.journal_position < before:
                direction.reordered += 1
                direction.note("reordered", view.message_id)
            latest[view.precedence] = max(before, view.journal_position)
        report.directions.append(direction)
    return report
