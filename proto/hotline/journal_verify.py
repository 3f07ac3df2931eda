"""Offline verification of a journal: the hash chain, every signature, and the witnesses.

Needs only the journal file(s) and the two parties' CA certificates: the signing certificates
are in the journal itself (KEY entries, and signed payloads name their key id), and each is
accepted only if it chains to the CA of the party it signs for.

With the peer's journal as well, the checkpoints each side signed of its own journal and sent
to the other are compared with the other journal's chain: a journal rewritten or truncated after
a checkpoint was witnessed no longer matches the head hash the peer holds.

`hotline journal verify` (`server.journal_cli`) and the simulator's integrity check
(`sim.integrity`) both run it, so it sits in the protocol package beside the journal file's
format, and reads journals only through its read-only `JournalReader`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from hotline.errors import SignatureError
from hotline.journal_file import Entry, JournalFileError, JournalReader, Kind, verify_chain
from hotline.signing import (
    PAYLOAD_TYPE_CHECKPOINT,
    PAYLOAD_TYPE_ENVELOPE,
    PAYLOAD_TYPE_RECEIPT,
    KeyRing,
)
from hotline.v1 import common_pb2, envelope_pb2, peer_link_pb2


@dataclass
class VerifyReport:
    path: Path
    party: str = ""
    entries: int = 0
    head_hash: str = ""
    signatures_checked: int = 0
    checkpoints_matched: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    first_bad: int | None = None
    problem: str = ""

    @property
    def ok(self) -> bool:
        return self.first_bad is None and not self.problem

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


def journal_party(path: Path) -> str:
    """Whose journal `path` is (raises JournalFileError, a ValueError, if it is not one)."""
    with JournalReader(path) as journal:
        return journal.party()


def verify_journal(path: Path, cas: Iterable[x509.Certificate]) -> VerifyReport:
    """Verify one journal's chain and signatures."""
    report = VerifyReport(path)
    if not path.exists():
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


def checkpoints_of(path: Path, kind: Kind) -> list[tuple[int, peer_link_pb2.CheckpointBody]]:
    found = []
    with JournalReader(path) as journal:
        for entry in journal.entries([kind]):
            signed = common_pb2.SignedPayload()
            signed.ParseFromString(entry.body)
            body = peer_link_pb2.CheckpointBody()
            body.ParseFromString(signed.payload)
            found.append((entry.position, body))
    return found


def check_witnessed(report: VerifyReport, witness_path: Path) -> VerifyReport:
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
