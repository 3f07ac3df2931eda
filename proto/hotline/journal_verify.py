"""Offline verification of a journal: the hash chain, every signature, and the witnesses.

Needs only the journal file(s) and the two parties' CA certificates: the signing certificates
are in the journal itself (KEY entries, and signed payloads name their key id), and each is
accepted only if it chains to the CA of the party it signs for.

With the peer's journal as well, the checkpoints each side signed of its own journal and sent
to the other are compared with the other journal's chain: a journal rewritten or truncated after
a checkpoint was witnessed no longer matches the head hash the peer holds. And, whether or not a
checkpoint was ever exchanged, the peer's journal is searched for what it holds *of ours*: our
signed messages it received and our signed batch receipts it was given; any our journal lacks
means our journal was reset, truncated or replaced (`check_peer_holds`).

`check_index` recomputes the gateway's index tables (`messages`, `settlements`,
`batch_receipts`), which operators are served from, from the chain, and reports every row that
disagrees: a row edited to show a message ACKNOWLEDGED, a settlement that no entry records,
a batch receipt not signed by us or settling other messages than the chain holds.

`hotline journal verify` (`server.journal_cli`) and the simulator's integrity check
(`sim.integrity`) both run it, so it sits in the protocol package beside the journal file's
format, and reads journals only through its read-only `JournalReader`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from hotline import lifecycle
from hotline.errors import SignatureError
from hotline.journal_file import (
    Entry,
    JournalFileError,
    JournalLocation,
    JournalReader,
    Kind,
    is_database_url,
    verify_chain,
)
from hotline.link import ReceiptItem, RejectionItem
from hotline.signing import (
    PAYLOAD_TYPE_CHECKPOINT,
    PAYLOAD_TYPE_ENVELOPE,
    PAYLOAD_TYPE_RECEIPT,
    KeyRing,
    sha256,
)
from hotline.v1 import common_pb2, envelope_pb2, operator_pb2, peer_link_pb2
from hotline.wire import batch_receipt_from_bytes

MAX_INDEX_PROBLEMS = 1000  # rows reported by check_index; the rest are counted


@dataclass
class VerifyReport:
    path: JournalLocation  # a SQLite file, or a postgresql:// URL
    party: str = ""
    entries: int = 0
    head_hash: str = ""
    signatures_checked: int = 0
    checkpoints_matched: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    first_bad: int | None = None
    problem: str = ""
    index_rows_checked: int = 0
    index_problems: list[str] = field(default_factory=list)
    index_problems_more: int = 0  # beyond MAX_INDEX_PROBLEMS

    @property
    def ok(self) -> bool:
        return self.first_bad is None and not self.problem and not self.index_problems

    def fail(self, position: int | None, problem: str) -> VerifyReport:
        if self.ok:
            self.first_bad, self.problem = position, problem
        return self


_SIGNED = {
    Kind.MESSAGE_OUT: PAYLOAD_TYPE_ENVELOPE,
    Kind.MESSAGE_IN: PAYLOAD_TYPE_ENVELOPE,
    Kind.RECEIPT: PAYLOAD_TYPE_RECEIPT,
    Kind.CHECKPOINT_OWN: PAYLOAD_TYPE_CHECKPOINT,
    Kind.CHECKPOINT_PEER: PAYLOAD_TYPE_CHECKPOINT,
}


def journal_party(path: JournalLocation) -> str:
    """Whose journal `path` is (raises JournalFileError, a ValueError, if it is not one)."""
    with JournalReader(path) as journal:
        return journal.party()


def verify_journal(path: JournalLocation, cas: Iterable[x509.Certificate]) -> VerifyReport:
    """Verify one journal's chain and signatures."""
    report = VerifyReport(path)
    if not is_database_url(path) and not Path(path).exists():
        return report.fail(None, f"{path} does not exist")
    try:
        with JournalReader(path) as journal:
            report.party = party = journal.party()
            entries = list(journal.entries())
    except JournalFileError as exc:
        return report.fail(None, f"cannot read {path}: {exc}")
    chain = verify_chain(entries)
    report.entries, report.kinds = chain.entries, chain.kinds
    report.head_hash = chain.head_hash.hex()
    if chain.first_bad is not None:
        return report.fail(chain.first_bad, chain.problem)
    keyring = KeyRing(list(cas))
    for entry in entries:
        if entry.kind is Kind.KEY:
            try:
                keyring.add_der(entry.body)
            except SignatureError as exc:
                return report.fail(entry.position, f"untrusted signing certificate: {exc}")
    for entry in entries:
        payload_type = _SIGNED.get(entry.kind)
        if payload_type is None:
            continue
        problem = _check_signature(entry, payload_type, party, keyring)
        if problem:
            return report.fail(entry.position, problem)
        report.signatures_checked += 1
    by_position = {e.position: e for e in entries}
    for entry in entries:
        if entry.kind is Kind.DELIVERED:
            problem = _check_delivered(entry, by_position)
            if problem:
                return report.fail(entry.position, problem)
    return report


def _check_delivered(entry: Entry, by_position: dict[int, Entry]) -> str:
    """A DELIVERED entry must point to an earlier batch receipt that receipts this message."""
    try:
        position = int(entry.json_body()["receipt"])
    except (ValueError, KeyError, TypeError) as exc:
        return f"entry {entry.position}: delivered entry names no batch receipt ({exc})"
    proof = by_position.get(position)
    if proof is None or proof.kind is not Kind.RECEIPT or position >= entry.position:
        return f"entry {entry.position}: entry {position} is not an earlier batch receipt"
    signed = common_pb2.SignedPayload()
    signed.ParseFromString(proof.body)
    body = peer_link_pb2.BatchReceiptBody()
    body.ParseFromString(signed.payload)  # its signature was checked above
    if not any(
        r.message_id == entry.message_id and r.sequence == entry.sequence for r in body.receipts
    ):
        return (
            f"entry {entry.position}: the batch receipt at entry {position} does not receipt "
            f"{entry.message_id} under sequence {entry.sequence}"
        )
    return ""


def _check_signature(entry: Entry, payload_type: str, party: str, keyring: KeyRing) -> str:
    signed = common_pb2.SignedPayload()
    try:
        signed.ParseFromString(entry.body)
    except Exception as exc:
        return f"entry {entry.position}: signed payload does not parse: {exc}"
    own = entry.kind in (Kind.MESSAGE_OUT, Kind.CHECKPOINT_OWN)
    key = keyring.key(signed.key_id)
    signer_party = party if own else (key.party if key is not None else "")
    if not own and signer_party == party:
        return f"entry {entry.position}: a peer's {entry.kind.value} is signed with our own key"
    try:
        payload = keyring.verify(signed, payload_type=payload_type, party=signer_party or "?")
    except SignatureError as exc:
        return f"entry {entry.position} ({entry.kind.value}): {exc}"
    if entry.kind in (Kind.MESSAGE_OUT, Kind.MESSAGE_IN):
        envelope = envelope_pb2.Envelope()
        envelope.ParseFromString(payload)
        if envelope.message_id != entry.message_id:
            return (
                f"entry {entry.position}: envelope id {envelope.message_id} != {entry.message_id}"
            )
        if envelope.sender_party != signer_party:
            return f"entry {entry.position}: envelope from {envelope.sender_party} signed by {signer_party}"
    return ""


def checkpoints_of(
    path: JournalLocation, kind: Kind
) -> list[tuple[int, peer_link_pb2.CheckpointBody]]:
    found = []
    with JournalReader(path) as journal:
        for entry in journal.entries([kind]):
            signed = common_pb2.SignedPayload()
            signed.ParseFromString(entry.body)
            body = peer_link_pb2.CheckpointBody()
            body.ParseFromString(signed.payload)
            found.append((entry.position, body))
    return found


def check_witnessed(report: VerifyReport, witness_path: JournalLocation) -> VerifyReport:
    """Compare our chain with the checkpoints of it that the peer's journal holds.

    Safe on live journals: the witness is read first and our chain after it, so every
    checkpoint the witness holds was of entries already committed when we read ours (a
    checkpoint is sent only after its entries are durable).
    """
    if not report.ok:
        return report
    try:
        witnessed = checkpoints_of(witness_path, Kind.CHECKPOINT_PEER)
        with JournalReader(report.path) as journal:
            heads = journal.hashes()
    except JournalFileError as exc:
        return report.fail(None, f"cannot compare with the peer's witness: {exc}")
    held = max(heads, default=0)
    for position, body in witnessed:
        if body.party != report.party:
            continue
        if body.entry_count > held:
            return report.fail(
                held + 1,
                f"the peer witnessed {body.entry_count} entries (its entry {position}), "
                f"but this journal has only {held}: it was truncated",
            )
        if body.entry_count and heads.get(body.entry_count) != bytes(body.head_hash):
            return report.fail(
                body.entry_count,
                f"entry {body.entry_count} differs from the head the peer witnessed "
                f"(its entry {position}): this journal was rewritten",
            )
        report.checkpoints_matched += 1
    return report


# ---------------------------------------------------------------------- what the peer holds of ours


def check_peer_holds(
    report: VerifyReport, peer_path: JournalLocation, *, examples: int = 3
) -> VerifyReport:
    """Find what the peer's journal holds of ours that our journal lacks.

    The peer's journal holds our signed envelopes (its MESSAGE_IN entries from our party) and
    the batch receipts we signed for its batches (its RECEIPT entries): each must be in our
    journal, as a MESSAGE_OUT and as the MESSAGE_IN / REFUSED_INBOUND entries the receipt
    settles. Anything missing means our journal lost history; unlike the checkpoint
    comparison, this needs no checkpoint to have been exchanged. Verify the peer's journal
    first: only its verified signatures make this evidence. Safe on live journals: the peer's
    is read first, and everything it holds of ours was durable here before it got it.
    """
    if not report.ok:
        return report
    ours = report.party
    try:
        with JournalReader(peer_path) as peer:
            peer_party = peer.party()
            sent = [
                (e.position, e.message_id)
                for e in peer.entries([Kind.MESSAGE_IN])
                if e.party == ours
            ]
            receipted: list[tuple[int, int, str]] = []  # (peer position, sequence, id)
            for e in peer.entries([Kind.RECEIPT]):
                if e.party != ours:
                    continue
                receipt = batch_receipt_from_bytes(
                    e.body, receiver_party=ours, sender_party=peer_party
                )
                items: list[ReceiptItem | RejectionItem] = [
                    *receipt.receipts,
                    *receipt.rejections,
                ]
                receipted += [(e.position, i.sequence, i.message_id) for i in items]
        with JournalReader(report.path) as journal:
            out_ids = {e.message_id for e in journal.entries([Kind.MESSAGE_OUT])}
            settled_in = {
                e.sequence
                for e in journal.entries([Kind.MESSAGE_IN, Kind.REFUSED_INBOUND])
                if e.party == peer_party
            }
    except (JournalFileError, ValueError) as exc:
        return report.fail(None, f"cannot compare with the peer's journal: {exc}")
    lost = [(p, m) for p, m in sent if m not in out_ids]
    if lost:
        shown = ", ".join(f"{m} (its entry {p})" for p, m in lost[:examples])
        return report.fail(
            None,
            f"the peer's journal holds {len(lost)} message(s) signed by {ours} that this "
            f"journal lacks, e.g. {shown}: this journal was reset, truncated or replaced",
        )
    unreceipted = sorted({(s, p) for p, s, _ in receipted if s not in settled_in})
    if unreceipted:
        sequence, position = unreceipted[0]
        return report.fail(
            None,
            f"the peer's journal holds batch receipts signed by {ours} for "
            f"{len(unreceipted)} sequence(s) of its messages that this journal does not "
            f"hold, from sequence {sequence} (its entry {position}): this journal was reset, "
            "truncated or replaced",
        )
    return report


# ---------------------------------------------------------------------- the index tables

_OUT = operator_pb2.DIRECTION_OUTBOUND
_IN = operator_pb2.DIRECTION_INBOUND
_JOURNALED = operator_pb2.DELIVERY_STATE_JOURNALED
_DELIVERED = operator_pb2.DELIVERY_STATE_DELIVERED
_ACKNOWLEDGED = operator_pb2.DELIVERY_STATE_ACKNOWLEDGED
_REJECTED = operator_pb2.DELIVERY_STATE_REJECTED
_BODY_TYPES = {
    f.name: index
    for index, f in enumerate(envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"].fields, 1)
}
# The `messages` columns recomputed from the chain (others, such as deadlines that depend on the
# gateway's configuration, are not compared).
_COMPARED = (
    "direction",
    "sender_party",
    "body_type",
    "precedence",
    "status",
    "state",
    "position",
    "journal_time_ns",
    "sequence",
    "digest",
    "escalated",
    "rejection_reason",
    "action",
    "refers_to",
    "expire_ns",
    "expired",
)


def _state_name(value: object) -> str:
    try:
        return operator_pb2.DeliveryState.Name(int(value))  # type: ignore[call-overload]
    except (ValueError, TypeError):
        return repr(value)


def _display(column: str, value: object) -> str:
    if column == "state":
        return _state_name(value)
    if isinstance(value, bytes):
        return value.hex()[:16]
    return repr(value)


@dataclass
class _Expected:
    """What the chain says the index holds."""

    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    acks: dict[str, set[str]] = field(default_factory=dict)  # message id -> acknowledgements
    # (sender party, lane, sequence) -> (message id, outcome)
    settlements: dict[tuple[str, int, int], tuple[str, str]] = field(default_factory=dict)


def _envelope(entry: Entry) -> tuple[envelope_pb2.Envelope, bytes]:
    signed = common_pb2.SignedPayload()
    signed.ParseFromString(entry.body)
    return envelope_pb2.Envelope.FromString(signed.payload), sha256(signed.payload)


def expected_index(entries: Iterable[Entry], party: str) -> _Expected:
    """Replay the chain as the gateway's store applies it (`server.store`): the index rows
    each entry implies, in journal order."""
    want = _Expected()
    rows = want.messages

    def acknowledged(
        target: str, ack_id: str, direction: int, from_states: tuple[int, ...]
    ) -> None:
        row = rows.get(target)
        want.acks.setdefault(target, set()).add(ack_id)
        if row is not None and row["direction"] == direction and row["state"] in from_states:
            row["state"] = _ACKNOWLEDGED

    for e in entries:
        if e.kind in (Kind.MESSAGE_OUT, Kind.MESSAGE_IN):
            envelope, digest = _envelope(e)
            inbound = e.kind is Kind.MESSAGE_IN
            refers_to = lifecycle.reference_of(envelope)
            if envelope.WhichOneof("body") == "acknowledgement":
                refers_to = envelope.acknowledgement.acknowledged_message_id
            expires = lifecycle.expire_ns(envelope)
            rows[e.message_id] = {
                "direction": _IN if inbound else _OUT,
                "sender_party": envelope.sender_party,
                "body_type": _BODY_TYPES.get(envelope.WhichOneof("body") or "", 0),
                "precedence": envelope.precedence,
                "status": envelope.status,
                "state": _DELIVERED if inbound else _JOURNALED,
                "position": e.position,
                "journal_time_ns": e.time_ns,
                "sequence": e.sequence if inbound else 0,
                "digest": digest,
                "escalated": 0,
                "rejection_reason": "",
                "action": envelope.action,
                "refers_to": refers_to,
                "expire_ns": expires,
                "expired": int(lifecycle.is_expired(expires, e.time_ns)),
            }
            if inbound:
                lane: int = envelope.precedence  # a message travels on its precedence's lane
                want.settlements[(e.party, lane, e.sequence)] = (e.message_id, "receipt")
                if envelope.WhichOneof("body") == "acknowledgement":
                    target = envelope.acknowledgement.acknowledged_message_id
                    # the peer's answer to one of ours: the latest stands
                    acknowledged(
                        target, e.message_id, _OUT, (_JOURNALED, _DELIVERED, _ACKNOWLEDGED)
                    )
        elif e.kind is Kind.ACKNOWLEDGED:
            # our operator's answer to an inbound message: the latest stands
            ack_id = str(e.json_body().get("acknowledgement", ""))
            acknowledged(e.message_id, ack_id, _IN, (_JOURNALED, _DELIVERED, _ACKNOWLEDGED))
        elif e.kind is Kind.DELIVERED:
            row = rows.get(e.message_id)
            if row is not None and row["direction"] == _OUT:
                if row["state"] == _JOURNALED:
                    row["state"] = _DELIVERED
                row["sequence"] = e.sequence
            lane = int(row["precedence"]) if row is not None else 0
            want.settlements.setdefault((party, lane, e.sequence), (e.message_id, "receipt"))
        elif e.kind is Kind.REFUSED_BY_PEER:
            reason = str(e.json_body().get("reason", ""))
            row = rows.get(e.message_id)
            if row is not None and row["direction"] == _OUT:
                row.update(state=_REJECTED, sequence=e.sequence, rejection_reason=reason)
            lane = int(e.json_body().get("lane", 0))
            want.settlements.setdefault((party, lane, e.sequence), (e.message_id, reason))
        elif e.kind is Kind.REFUSED_INBOUND:
            reason = str(e.json_body().get("reason", ""))
            lane = int(e.json_body().get("lane", 0))
            want.settlements[(e.party, lane, e.sequence)] = (e.message_id, reason)
        elif e.kind in (Kind.ESCALATION, Kind.REALERT):
            row = rows.get(e.message_id)
            if row is not None:
                row["escalated"] = 1
        elif e.kind is Kind.EXPIRED:
            row = rows.get(e.message_id)
            if row is not None:
                row["expired"] = 1
    return want


def check_index(report: VerifyReport, cas: Iterable[x509.Certificate] = ()) -> VerifyReport:
    """Recompute the index tables from the chain; add every row that disagrees to
    `report.index_problems`. Run it on a verified chain (it trusts the entries), on a
    journal no gateway is writing (a live journal may commit between the two reads)."""
    if not report.ok:
        return report
    problems: list[str] = []
    try:
        with JournalReader(report.path) as journal:
            party = journal.party()
            entries = list(journal.entries())
            want = expected_index(entries, party)
            messages = journal.index_rows("messages")
            settlements = journal.index_rows("settlements")
            batch_receipts = journal.index_rows("batch_receipts")
    except (JournalFileError, ValueError) as exc:
        return report.fail(None, f"cannot recompute the index tables: {exc}")
    report.index_rows_checked = len(messages) + len(settlements) + len(batch_receipts)
    problems += _compare_messages(want, messages)
    problems += _compare_settlements(want, settlements)
    trusted = list(cas)
    keyring = KeyRing(trusted) if trusted else None  # without CAs, signatures are not checked
    for entry in entries:
        if keyring is not None and entry.kind is Kind.KEY:
            with contextlib.suppress(SignatureError):  # verify_journal reported it
                keyring.add_der(entry.body)
    problems += _compare_batch_receipts(want, batch_receipts, party, keyring)
    report.index_problems = problems[:MAX_INDEX_PROBLEMS]
    report.index_problems_more = max(0, len(problems) - MAX_INDEX_PROBLEMS)
    return report


def _compare_messages(want: _Expected, rows: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    held: set[str] = set()
    for row in sorted(rows, key=lambda r: (r.get("position") or 0, str(r.get("message_id")))):
        message_id = str(row.get("message_id"))
        held.add(message_id)
        expected = want.messages.get(message_id)
        if expected is None:
            problems.append(f"messages row {message_id}: no message entry in the chain")
            continue
        for column in _COMPARED:
            value = row.get(column)
            if isinstance(value, memoryview):
                value = bytes(value)
            if value != expected[column]:
                problems.append(
                    f"messages row {message_id}: {column} is {_display(column, value)}, "
                    f"the chain says {_display(column, expected[column])}"
                )
        ack = str(row.get("ack_message_id") or "")
        acks = want.acks.get(message_id, set())
        if row.get("state") == _ACKNOWLEDGED and ack not in acks:
            problems.append(
                f"messages row {message_id}: acknowledged by {ack or 'nothing'}, but the "
                "chain holds no such acknowledgement of it"
            )
        elif ack and ack not in acks:
            problems.append(
                f"messages row {message_id}: ack_message_id is {ack}, which the chain does "
                "not hold as an acknowledgement of it"
            )
    for message_id, expected in sorted(want.messages.items(), key=lambda i: i[1]["position"]):
        if message_id not in held:
            problems.append(
                f"messages row {message_id} is missing (journaled at entry {expected['position']})"
            )
    return problems


def _compare_settlements(want: _Expected, rows: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    held: set[tuple[str, int, int]] = set()

    def order(r: dict[str, Any]) -> tuple[str, int, int]:
        return str(r["sender_party"]), int(r["lane"]), int(r["sequence"])

    for row in sorted(rows, key=order):
        key = order(row)
        held.add(key)
        got = (str(row["message_id"]), str(row["outcome"]))
        expected = want.settlements.get(key)
        name = f"settlements row {key[0]} lane {key[1]} sequence {key[2]}"
        if expected is None:
            problems.append(f"{name}: no entry in the chain settles it")
        elif got != expected:
            problems.append(
                f"{name}: {got[1]} of {got[0] or 'an unreadable message'}, the chain says "
                f"{expected[1]} of {expected[0] or 'an unreadable message'}"
            )
    for key in sorted(set(want.settlements) - held):
        problems.append(f"settlements row {key[0]} lane {key[1]} sequence {key[2]} is missing")
    return problems


def _compare_batch_receipts(
    want: _Expected, rows: list[dict[str, Any]], party: str, keyring: KeyRing | None
) -> list[str]:
    """Each batch receipt we signed for the peer's batches: signed by us, and settling what
    the chain says was settled; every inbound settlement covered by one."""
    problems: list[str] = []
    covered: set[tuple[str, int, int]] = set()

    def order(r: dict[str, Any]) -> tuple[str, int, int]:
        return str(r["sender_party"]), int(r["lane"]), int(r["first_sequence"])

    for row in sorted(rows, key=order):
        sender, lane, first = order(row)
        name = f"batch_receipts row {sender} lane {lane} {first}..{row['last_sequence']}"
        raw = bytes(row["receipt"])
        try:
            if keyring is not None:
                signed = common_pb2.SignedPayload.FromString(raw)
                keyring.verify(signed, payload_type=PAYLOAD_TYPE_RECEIPT, party=party)
            receipt = batch_receipt_from_bytes(raw, receiver_party=party, sender_party=sender)
        except Exception as exc:
            problems.append(f"{name}: not a batch receipt signed by {party}: {exc}")
            continue
        if (receipt.lane, receipt.first_sequence, receipt.last_sequence) != (
            lane,
            first,
            int(row["last_sequence"]),
        ):
            problems.append(
                f"{name}: the signed receipt covers lane {receipt.lane} "
                f"{receipt.first_sequence}..{receipt.last_sequence}"
            )
        items: list[ReceiptItem | RejectionItem] = [*receipt.receipts, *receipt.rejections]
        for item in items:
            key = (sender, receipt.lane, item.sequence)
            covered.add(key)
            outcome = item.reason.name if isinstance(item, RejectionItem) else "receipt"
            expected = want.settlements.get(key)
            if expected is None or expected != (item.message_id, outcome):
                problems.append(
                    f"{name}: settles sequence {item.sequence} as {outcome} of "
                    f"{item.message_id or 'an unreadable message'}, the chain says "
                    + (f"{expected[1]} of {expected[0]}" if expected else "nothing")
                )
    for key in sorted(k for k in want.settlements if k[0] != party and k not in covered):
        problems.append(
            f"no batch receipt row covers sequence {key[2]} of lane {key[1]} from {key[0]}"
        )
    return problems
