"""The gateway's records on top of the journal: messages, settlements, events.

Each public method here is one journal operation: it appends the entries that record a fact
and updates the index tables in the same transaction, and its result is ready only after the
group commit that made it durable. The methods on the peer link's hot path submit their
operation at once and return a future, so deliveries are submitted in arrival order and many
share one commit; the others are coroutines. The functions that turn rows and entries into `hotline.v1` records and
events for operators live here too, so every reader sees the same picture.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from hotline import lifecycle, link
from hotline.journal_file import GENESIS
from hotline.signing import Signer, sha256
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2, peer_link_pb2
from hotline.wire import reason_to_wire, sign_batch_receipt, signed_of, timestamp_ns
from server.journal import EXPIRING, MAY_COME_DUE, OVERDUE, Entry, Journal, Kind, Txn

log = logging.getLogger("hotline.store")

OUT = operator_pb2.DIRECTION_OUTBOUND
IN = operator_pb2.DIRECTION_INBOUND
JOURNALED = operator_pb2.DELIVERY_STATE_JOURNALED
DELIVERED = operator_pb2.DELIVERY_STATE_DELIVERED
ACKNOWLEDGED = operator_pb2.DELIVERY_STATE_ACKNOWLEDGED
REJECTED = operator_pb2.DELIVERY_STATE_REJECTED
ACK_HISTORY = 32  # MessageRecord.acknowledgements holds at most the latest this many

BODY_TYPES: dict[str, int] = {
    field.name: index
    for index, field in enumerate(envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"].fields, 1)
}


def body_type_of(envelope: envelope_pb2.Envelope) -> int:
    which = envelope.WhichOneof("body")
    return BODY_TYPES.get(which or "", 0)


class DuplicateMessage(Exception):
    """A message id already journaled: `same` says whether the bytes are identical."""

    def __init__(self, message_id: str, same: bool, position: int) -> None:
        super().__init__(message_id)
        self.message_id = message_id
        self.same = same
        self.position = position


class NotFound(Exception):
    pass


class WrongState(Exception):
    pass


@dataclass(frozen=True)
class MessageFilter:
    """Which messages to list (`ListMessages`): every field given must match (AND); the values
    of one tuple are alternatives (OR). Empty / None / 0 means no condition."""

    direction: int = 0
    body_types: tuple[int, ...] = ()
    precedences: tuple[int, ...] = ()
    states: tuple[int, ...] = ()
    status: int = 0
    start_ns: int | None = None  # journaled at or after
    end_ns: int | None = None  # journaled before
    overdue_only: bool = False

    def sql(self) -> tuple[list[str], list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if self.direction:
            clauses.append("m.direction = ?")
            params.append(self.direction)
        for column, values in (
            ("m.body_type", self.body_types),
            ("m.precedence", self.precedences),
            ("m.state", self.states),
        ):
            if values:
                clauses.append(f"{column} IN ({','.join('?' * len(values))})")
                params.extend(values)
        if self.status:
            clauses.append("m.status = ?")
            params.append(self.status)
        if self.start_ns is not None:
            clauses.append("m.journal_time_ns >= ?")
            params.append(self.start_ns)
        if self.end_ns is not None:
            clauses.append("m.journal_time_ns < ?")
            params.append(self.end_ns)
        if self.overdue_only:
            # the index condition as written, so the partial index `messages_overdue` applies
            clauses.append(
                OVERDUE.replace("escalated", "m.escalated")
                .replace("expired", "m.expired")
                .replace("state", "m.state")
            )
        return clauses, params


@dataclass(frozen=True)
class Outbound:
    """A message we send, signed: the exact bytes to journal and the envelope they hold."""

    signed: common_pb2.SignedPayload
    envelope: envelope_pb2.Envelope


@dataclass(frozen=True)
class Journaled:
    message_id: str
    position: int
    journal_time_ns: int
    deadline_ns: int


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _rejection_json(rejection: link.RejectionItem, lane: int) -> bytes:
    """A rejection's entry body; `lane` says whose sequences `sequence` counts (an unreadable
    payload has no precedence to tell)."""
    return _json(
        {
            "lane": lane,
            "reason": rejection.reason.value,
            "detail": rejection.detail,
            "violations": [list(v) for v in rejection.violations],
        }
    )


class Store:
    """High-level, durable records of one gateway (party `party`, peer `peer_party`)."""

    def __init__(
        self,
        journal: Journal,
        *,
        party: str,
        peer_party: str,
        deadline_s: Callable[[int], float],
    ) -> None:
        self.journal = journal
        self.party = party
        self.peer_party = peer_party
        self._deadline_s = deadline_s
        # Every message id in the journal and where it stands in its chain, kept current here
        # (on the event loop): the peer link's receiving end detects duplicates (and reuse of
        # our own ids) and applies the rules of a message's life in memory, with no SQL per
        # delivery; `Send` applies the same rules from it.
        self.seen: dict[str, link.Seen] = self._load_index()
        # The records as the writer last wrote them (writer thread only): live Watch events are
        # built from them as each operation writes, never by re-reading the journal.
        self._records: OrderedDict[str, operator_pb2.MessageRecord] = OrderedDict()
        journal.on_rollback(self._records.clear)

    def _load_index(self) -> dict[str, link.Seen]:
        """The index of every message id, built from the `messages` table (at start).

        Received messages carry their sequence and digest, ours sequence 0; each carries its
        `lifecycle.Standing`, with the UPDATEs and CANCELs that were not refused applied in
        journal order.
        """
        rows = self.journal.query(
            "SELECT message_id, direction, sender_party, body_type, action, refers_to, state,"
            " sequence, digest, precedence FROM messages ORDER BY position"
        )
        index: dict[str, link.Seen] = {}
        for r in rows:
            inbound = r["direction"] == IN
            standing = lifecycle.Standing(
                r["sender_party"],
                lifecycle.body_name(r["body_type"]),
                r["action"],
                reference=r["refers_to"] if r["action"] in CHAIN_ACTIONS else "",
                rejected=r["state"] == REJECTED,
            )
            index[r["message_id"]] = (
                link.Seen(r["sequence"], bytes(r["digest"]), standing, r["precedence"])
                if inbound
                else link.Seen(0, b"", standing)
            )
            referenced = index.get(standing.reference) if standing.reference else None
            if referenced is not None and referenced.standing and not standing.rejected:
                index[standing.reference] = replace(
                    referenced,
                    standing=lifecycle.chained(referenced.standing, r["message_id"], r["action"]),
                )
        return index

    # ------------------------------------------------------------------ outbound

    def _insert_message(
        self,
        txn: Txn,
        *,
        entry: Entry,
        envelope: envelope_pb2.Envelope,
        direction: operator_pb2.Direction.ValueType,
        state: operator_pb2.DeliveryState.ValueType,
        digest: bytes,
        signed: common_pb2.SignedPayload,
        sequence: int = 0,
    ) -> int:
        refers_to = lifecycle.reference_of(envelope)
        if envelope.WhichOneof("body") == "acknowledgement":
            deadline = 0  # an acknowledgement is not itself acknowledged
            refers_to = envelope.acknowledgement.acknowledged_message_id
        else:
            deadline = entry.time_ns + int(self._deadline_s(envelope.precedence) * 1e9)
        expires = lifecycle.expire_ns(envelope)
        expired = lifecycle.is_expired(expires, entry.time_ns)  # received already stale
        record = operator_pb2.MessageRecord(
            envelope=envelope,
            signed_envelope=signed,
            direction=direction,
            state=state,
            journal_position=entry.position,
            sequence=sequence,
            journal_time=timestamp_ns(entry.time_ns),
            expired=expired,
        )
        if deadline:
            record.acknowledge_deadline_time.CopyFrom(timestamp_ns(deadline))
        if direction == IN:
            record.deliver_time.CopyFrom(timestamp_ns(entry.time_ns))
        self._remember(record)
        txn.execute(
            "INSERT INTO messages (message_id, direction, sender_party, body_type, precedence,"
            " status, state, position, journal_time_ns, deadline_ns, sequence, deliver_time_ns,"
            " digest, action, refers_to, expire_ns, expired)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                envelope.message_id,
                direction,
                envelope.sender_party,
                body_type_of(envelope),
                envelope.precedence,
                envelope.status,
                state,
                entry.position,
                entry.time_ns,
                deadline,
                sequence,
                entry.time_ns if direction == IN else 0,
                digest,
                envelope.action,
                refers_to,
                expires,
                int(expired),
            ),
        )
        self._chain(txn, envelope)
        return deadline

    def _chain(self, txn: Txn, envelope: envelope_pb2.Envelope, *, undo: bool = False) -> None:
        """Show an UPDATE or CANCEL on the cached record of the message it refers to (or take
        it off again, `undo`, when the peer refused it). The `messages` rows need no change:
        a record's chain is read through `refers_to`."""
        reference = lifecycle.reference_of(envelope)
        record = self._cached(txn, reference) if reference else None
        if record is None:
            return
        field = (
            "updated_by_message_id"
            if envelope.action == lifecycle.UPDATE
            else "cancelled_by_message_id"
        )
        if not undo:
            setattr(record, field, envelope.message_id)
        elif getattr(record, field) == envelope.message_id:
            # the one before, if any, stands again (read back from the journal)
            setattr(record, field, self._chain_of(txn, reference).get(field, ""))

    def _existing(self, txn: Txn, message_id: str, digest: bytes) -> None:
        row = txn.execute(
            "SELECT digest, position FROM messages WHERE message_id = ?", (message_id,)
        ).fetchone()
        if row is not None:
            raise DuplicateMessage(message_id, bytes(row[0]) == digest, row[1])

    # -- the record cache and the events of an operation (writer thread only)

    def _remember(self, record: operator_pb2.MessageRecord) -> None:
        self._records[record.envelope.message_id] = record
        self._records.move_to_end(record.envelope.message_id)
        while len(self._records) > RECORD_CACHE:
            self._records.popitem(last=False)

    def _cached(self, txn: Txn, message_id: str) -> operator_pb2.MessageRecord | None:
        """The record as this transaction leaves it (read once from the journal on a miss)."""
        record = self._records.get(message_id)
        if record is None:
            row = txn.row(
                "SELECT m.*, e.body FROM messages m JOIN entries e ON e.position = m.position"
                " WHERE m.message_id = ?",
                (message_id,),
            )
            if row is None:
                return None
            record = self.record_from_row(row, txn)
            self._remember(record)
        return record

    def _events(self, txn: Txn) -> None:
        """Attach to each entry this operation appended the event it stands for."""
        for entry in list(txn.appended):
            if entry.kind in EVENT_KINDS:
                txn.attach(entry, self.event_for(entry, lambda m: self._records.get(m)))

    def _set_delivered(self, txn: Txn, message_id: str, sequence: int, when_ns: int) -> None:
        txn.execute(
            "UPDATE messages SET state = CASE WHEN state = ? THEN ? ELSE state END,"
            " sequence = ?, deliver_time_ns = ? WHERE message_id = ? AND direction = ?",
            (JOURNALED, DELIVERED, sequence, when_ns, message_id, OUT),
        )
        record = self._cached(txn, message_id)
        if record is not None and record.direction == OUT:
            if record.state == JOURNALED:
                record.state = DELIVERED
            record.sequence = sequence
            record.deliver_time.CopyFrom(timestamp_ns(when_ns))

    def _set_rejected(self, txn: Txn, rejection: link.RejectionItem) -> None:
        txn.execute(
            "UPDATE messages SET state = ?, sequence = ?, rejection_reason = ?,"
            " rejection_detail = ? WHERE message_id = ? AND direction = ?",
            (
                REJECTED,
                rejection.sequence,
                rejection.reason.name,
                rejection.detail,
                rejection.message_id,
                OUT,
            ),
        )
        record = self._cached(txn, rejection.message_id)
        if record is not None and record.direction == OUT:
            record.state = REJECTED
            record.sequence = rejection.sequence
            record.rejection_reason = reason_to_wire(rejection.reason)
            record.rejection_detail = rejection.detail
            record.overdue = False
            self._chain(txn, record.envelope, undo=True)

    def _set_acknowledged(
        self,
        txn: Txn,
        acked: str,
        ack: envelope_pb2.Envelope,
        when_ns: int,
        *,
        direction: int,
    ) -> None:
        """`acked` (a message of `direction`) was answered by the acknowledgement `ack`: the
        latest acknowledgement stands, at both ends (ROGER, then WILCO: WILCO). Only a
        rejected message is never marked acknowledged."""
        states = (JOURNALED, DELIVERED, ACKNOWLEDGED)
        txn.execute(
            "UPDATE messages SET state = ?, ack_time_ns = ?, ack_message_id = ?"
            f" WHERE message_id = ? AND direction = ? AND state IN ({','.join('?' * len(states))})",
            (ACKNOWLEDGED, when_ns, ack.message_id, acked, direction, *states),
        )
        record = self._cached(txn, acked)
        if record is not None and record.direction == direction and record.state in states:
            record.state = ACKNOWLEDGED
            record.overdue = False
            record.acknowledge_time.CopyFrom(timestamp_ns(when_ns))
            record.acknowledgement_message_id = ack.message_id
            record.acknowledgement.CopyFrom(ack.acknowledgement)
            record.acknowledgements.add(
                acknowledgement_message_id=ack.message_id,
                acknowledgement=ack.acknowledgement,
                acknowledge_time=timestamp_ns(when_ns),
            )
            if len(record.acknowledgements) > ACK_HISTORY:
                del record.acknowledgements[: len(record.acknowledgements) - ACK_HISTORY]

    async def journal_outbound(
        self,
        signed: common_pb2.SignedPayload,
        envelope: envelope_pb2.Envelope,
        *,
        acknowledges: str = "",
    ) -> Journaled:
        """Journal a message we send (and, for an acknowledgement, mark what it answers)."""
        digest = sha256(signed.payload)

        def op(txn: Txn) -> Journaled:
            self._existing(txn, envelope.message_id, digest)
            if acknowledges:
                row = txn.execute(
                    "SELECT direction FROM messages WHERE message_id = ?", (acknowledges,)
                ).fetchone()
                if row is None or row[0] != IN:
                    raise WrongState(f"{acknowledges} is not a message received from the peer")
            entry = txn.append(
                Kind.MESSAGE_OUT,
                signed.SerializeToString(),
                message_id=envelope.message_id,
                party=self.party,
            )
            deadline = self._insert_message(
                txn,
                entry=entry,
                envelope=envelope,
                direction=OUT,
                state=JOURNALED,
                digest=digest,
                signed=signed,
            )
            if acknowledges:
                # The latest acknowledgement stands (ROGER, then WILCO, ...).
                self._set_acknowledged(txn, acknowledges, envelope, entry.time_ns, direction=IN)
                txn.append(
                    Kind.ACKNOWLEDGED,
                    _json({"acknowledgement": envelope.message_id}),
                    message_id=acknowledges,
                )
            self._events(txn)
            return Journaled(envelope.message_id, entry.position, entry.time_ns, deadline)

        journaled = await self.journal.run(op)
        self.seen.setdefault(
            envelope.message_id, link.Seen(0, b"", lifecycle.standing_of(envelope))
        )
        return journaled

    async def journal_outbound_many(
        self, batch: Sequence[Outbound], *, urgent: bool = False
    ) -> list[Journaled | DuplicateMessage]:
        """Journal messages we send, in order, in ONE operation (one savepoint, one commit).

        An id already journaled (a race with another call) is answered with its
        `DuplicateMessage` and the rest go on. `urgent` (a batch holding FLASH or IMMEDIATE)
        commits without waiting for the group commit in progress.
        """

        def op(txn: Txn) -> list[Journaled | DuplicateMessage]:
            out: list[Journaled | DuplicateMessage] = []
            for item in batch:
                envelope, digest = item.envelope, sha256(item.signed.payload)
                try:
                    self._existing(txn, envelope.message_id, digest)
                except DuplicateMessage as dup:
                    out.append(dup)
                    continue
                entry = txn.append(
                    Kind.MESSAGE_OUT,
                    item.signed.SerializeToString(),
                    message_id=envelope.message_id,
                    party=self.party,
                )
                deadline = self._insert_message(
                    txn,
                    entry=entry,
                    envelope=envelope,
                    direction=OUT,
                    state=JOURNALED,
                    digest=digest,
                    signed=item.signed,
                )
                out.append(Journaled(envelope.message_id, entry.position, entry.time_ns, deadline))
            self._events(txn)
            return out

        results = await self.journal.run(op, urgent=urgent)
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, Journaled):
                self.seen.setdefault(
                    result.message_id, link.Seen(0, b"", lifecycle.standing_of(item.envelope))
                )
        return results

    def unsettled_outbound(self) -> list[link.Outgoing]:
        rows = self.journal.query(
            "SELECT m.message_id, m.precedence, m.position, m.digest, e.body FROM messages m"
            " JOIN entries e ON e.position = m.position"
            " WHERE m.direction = ? AND m.state = ? ORDER BY m.position",
            (OUT, JOURNALED),
        )
        result = []
        for row in rows:
            signed = common_pb2.SignedPayload()
            signed.ParseFromString(bytes(row["body"]))
            envelope = envelope_pb2.Envelope()
            envelope.ParseFromString(signed.payload)
            result.append(
                outgoing(
                    signed,
                    row["message_id"],
                    row["precedence"],
                    row["position"],
                    after=lifecycle.reference_of(envelope),
                )
            )
        return result

    def last_settled_outbound(self, lane: int) -> int:
        return self.journal.last_sequence(self.party, lane)

    def record_settlement(self, plan: link.SettleOutbound) -> asyncio.Future[None]:
        """The peer settled some of our messages with a verified batch receipt: journal the
        signed receipt once (and, for duplicates, the original receipt that proves them), one
        DELIVERED entry per receipted message, one REFUSED_BY_PEER entry per refused one."""
        receipt = plan.receipt

        def op(txn: Txn) -> None:
            proofs: dict[int, int] = {}  # id(batch receipt) -> position of its RECEIPT entry

            def proof(of: link.BatchReceipt) -> int:
                key = id(of)
                if key not in proofs:
                    proofs[key] = txn.append(
                        Kind.RECEIPT,
                        signed_of(of).SerializeToString(),
                        party=self.peer_party,
                        sequence=of.first_sequence,
                    ).position
                return proofs[key]

            delivered = [(item, receipt) for item in plan.receipted]
            delivered += [
                (held, rejection.original_receipt)
                for rejection, held in plan.delivered_before
                if rejection.original_receipt is not None
            ]
            for item, by in delivered:
                position = proof(by)
                entry = txn.append(
                    Kind.DELIVERED,
                    _json({"receipt": position, "journal_position": item.journal_position}),
                    message_id=item.message_id,
                    party=self.peer_party,
                    sequence=item.sequence,
                )
                txn.execute(
                    "INSERT INTO settlements (sender_party, lane, sequence, message_id,"
                    " outcome, digest, batch_first) VALUES (?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                    (
                        self.party,
                        by.lane,
                        item.sequence,
                        item.message_id,
                        "receipt",
                        item.digest,
                        by.first_sequence,
                    ),
                )
                self._set_delivered(
                    txn, item.message_id, item.sequence, by.journal_time_ns or entry.time_ns
                )
            for rejection in plan.refused:
                proof(receipt)
                txn.append(
                    Kind.REFUSED_BY_PEER,
                    _rejection_json(rejection, receipt.lane),
                    message_id=rejection.message_id,
                    party=self.peer_party,
                    sequence=rejection.sequence,
                )
                txn.execute(
                    "INSERT INTO settlements (sender_party, lane, sequence, message_id,"
                    " outcome, digest, batch_first, detail) VALUES (?,?,?,?,?,?,?,?)"
                    " ON CONFLICT DO NOTHING",
                    (
                        self.party,
                        receipt.lane,
                        rejection.sequence,
                        rejection.message_id,
                        rejection.reason.name,
                        rejection.digest,
                        receipt.first_sequence,
                        rejection.detail,
                    ),
                )
                self._set_rejected(txn, rejection)
            self._events(txn)

        # a FLASH or IMMEDIATE lane's settlement does not wait for a ROUTINE group commit
        durable = self.journal.submit_async(op, urgent=receipt.lane in link.URGENT_LANES)
        if plan.refused:
            refused = [r.message_id for r in plan.refused]
            durable.add_done_callback(
                lambda f: None if f.cancelled() or f.exception() else self._refused(refused)
            )
        return durable

    def _refused(self, message_ids: Sequence[str]) -> None:
        """The peer refused these messages of ours (now durable): nothing may refer to them as
        a chain, and an UPDATE or CANCEL among them no longer counts (event loop only)."""
        for message_id in message_ids:
            held = self.seen.get(message_id)
            if held is None or held.standing is None:
                continue
            standing = replace(held.standing, rejected=True)
            self.seen[message_id] = replace(held, standing=standing)
            referenced = self.seen.get(standing.reference) if standing.reference else None
            if referenced is not None and referenced.standing is not None:
                self.seen[standing.reference] = replace(
                    referenced,
                    standing=lifecycle.unchained(referenced.standing, message_id),
                )

    # ------------------------------------------------------------------ inbound

    def journal_batch(
        self, batch: link.JournalBatch, signer: Signer
    ) -> asyncio.Future[link.BatchReceipt]:
        """Journal a batch from the peer (messages and rejections) and sign its batch receipt,
        in one transaction: the receipt exists only if the batch is durable."""

        def op(txn: Txn) -> link.BatchReceipt:
            held = self.journal.last_sequence_in(txn, batch.sender_party, batch.lane)
            if held != batch.first_sequence - 1:
                raise WrongState(
                    f"batch {batch.first_sequence}..{batch.last_sequence} of lane {batch.lane} "
                    f"does not follow sequence {held}, the last this journal settled there"
                )
            receipts: list[link.ReceiptItem] = []
            last_time = 0
            for accepted in batch.accepted:
                d = accepted.delivery
                envelope = accepted.envelope
                assert isinstance(envelope, envelope_pb2.Envelope)
                signed = d.payload
                assert isinstance(signed, common_pb2.SignedPayload)
                entry = txn.append(
                    Kind.MESSAGE_IN,
                    signed.SerializeToString(),
                    message_id=accepted.message_id,
                    party=batch.sender_party,
                    sequence=d.sequence,
                )
                last_time = entry.time_ns
                self._insert_message(
                    txn,
                    entry=entry,
                    envelope=envelope,
                    direction=IN,
                    state=DELIVERED,
                    digest=d.digest,
                    signed=signed,
                    sequence=d.sequence,
                )
                if envelope.WhichOneof("body") == "acknowledgement":
                    self._set_acknowledged(
                        txn,
                        envelope.acknowledgement.acknowledged_message_id,
                        envelope,
                        entry.time_ns,
                        direction=OUT,
                    )
                receipts.append(
                    link.ReceiptItem(d.sequence, accepted.message_id, d.digest, entry.position)
                )
            for rejection in batch.refused:
                last_time = txn.append(
                    Kind.REFUSED_INBOUND,
                    _rejection_json(rejection, batch.lane),
                    message_id=rejection.message_id,
                    party=batch.sender_party,
                    sequence=rejection.sequence,
                ).time_ns
            receipt = sign_batch_receipt(
                signer,
                sender_party=batch.sender_party,
                first_sequence=batch.first_sequence,
                last_sequence=batch.last_sequence,
                receipts=tuple(receipts),
                rejections=batch.refused,
                journal_time_ns=last_time or time.time_ns(),
                lane=batch.lane,
            )
            rows = [
                (batch.sender_party, batch.lane, r.sequence, r.message_id, "receipt", r.digest, "")
                for r in receipts
            ] + [
                (
                    batch.sender_party,
                    batch.lane,
                    r.sequence,
                    r.message_id,
                    r.reason.name,
                    r.digest,
                    r.detail,
                )
                for r in batch.refused
            ]
            txn.executemany(
                "INSERT INTO settlements (sender_party, lane, sequence, message_id, outcome,"
                f" digest, batch_first, detail) VALUES (?,?,?,?,?,?,{batch.first_sequence:d},?)",
                rows,
            )
            txn.execute(
                "INSERT INTO batch_receipts (sender_party, lane, first_sequence, last_sequence,"
                " receipt) VALUES (?,?,?,?,?)",
                (
                    batch.sender_party,
                    batch.lane,
                    batch.first_sequence,
                    batch.last_sequence,
                    signed_of(receipt).SerializeToString(),
                ),
            )
            self._events(txn)
            return receipt

        return self.journal.submit_async(op, urgent=batch.lane in link.URGENT_LANES)

    # ------------------------------------------------------------------ events

    async def record_event(
        self, kind: Kind, data: dict[str, Any], *, message_id: str = ""
    ) -> Entry:
        body = _json(data)

        def op(txn: Txn) -> Entry:
            entry = txn.append(kind, body, message_id=message_id)
            self._events(txn)
            return entry

        return await self.journal.run(op)

    async def record_key(self, der: bytes, party: str) -> None:
        """Journal a signing certificate once, so the journal verifies offline."""

        def op(txn: Txn) -> None:
            row = txn.execute(
                "SELECT 1 FROM entries WHERE kind = ? AND body = ?", (Kind.KEY.value, der)
            ).fetchone()
            if row is None:
                txn.append(Kind.KEY, der, party=party)

        await self.journal.run(op)

    async def record_revocation(self, party: str, issuer: str, number: int) -> None:
        """Journal that a revocation list of `issuer` (a CA's name, RFC 4514) with CRL number
        `number` was taken into force."""
        body = _json({"party": party, "issuer": issuer, "number": number})

        def op(txn: Txn) -> None:
            txn.append(Kind.REVOCATION, body, party=party)

        await self.journal.run(op)

    def revocation_numbers(self) -> dict[str, int]:
        """The highest CRL number taken into force per issuer, as journaled."""
        rows = self.journal.query(
            "SELECT body FROM entries WHERE kind = ?", (Kind.REVOCATION.value,)
        )
        highest: dict[str, int] = {}
        for row in rows:
            data = json.loads(bytes(row["body"]))
            issuer, number = str(data["issuer"]), int(data["number"])
            highest[issuer] = max(number, highest.get(issuer, number))
        return highest

    async def record_checkpoint(
        self, kind: Kind, signed: common_pb2.SignedPayload, party: str
    ) -> None:
        raw = signed.SerializeToString()

        def op(txn: Txn) -> None:
            txn.append(kind, raw, party=party)

        await self.journal.run(op)

    def latest_witnessed_checkpoint(self) -> common_pb2.SignedPayload | None:
        """The latest checkpoint of the peer's journal we witnessed, as the peer signed it."""
        rows = self.journal.query(
            "SELECT body FROM entries WHERE kind = ? ORDER BY position DESC LIMIT 1",
            (Kind.CHECKPOINT_PEER.value,),
        )
        if not rows:
            return None
        signed = common_pb2.SignedPayload()
        signed.ParseFromString(bytes(rows[0]["body"]))
        return signed

    def journal_hash_at(self, entry_count: int) -> bytes | None:
        """Our journal's chain hash after its first `entry_count` entries (the genesis hash
        for 0); None if it holds fewer."""
        if entry_count == 0:
            return GENESIS
        entry = self.journal.entry(entry_count)
        return entry.hash if entry is not None else None

    def witnessed_checkpoints(self, limit: int) -> list[peer_link_pb2.CheckpointBody]:
        """The latest `limit` checkpoints of the peer's journal we witnessed, oldest first.

        What the peer-link receiver's witness starts from, so that it survives a restart. The
        bodies were signature-checked when they were journaled (`journal verify` checks them
        again); one that no longer parses is skipped with a warning.
        """
        rows = self.journal.query(
            "SELECT position, body FROM entries WHERE kind = ? ORDER BY position DESC LIMIT ?",
            (Kind.CHECKPOINT_PEER.value, limit),
        )
        found = []
        for row in reversed(rows):
            signed = common_pb2.SignedPayload()
            body = peer_link_pb2.CheckpointBody()
            try:
                signed.ParseFromString(bytes(row["body"]))
                body.ParseFromString(signed.payload)
            except Exception as exc:
                log.warning(
                    "journal entry %d: a witnessed checkpoint does not parse: %s",
                    row["position"],
                    exc,
                )
                continue
            found.append(body)
        return found

    # The overdue check runs every 0.25-1 s inside the write transaction, so it reads only the
    # partial index `messages_due` (server.journal): the messages that may still come due, not
    # the journal. (An acknowledgement has no deadline, so it is never among them.)
    _DUE = (
        "SELECT message_id, direction, precedence, deadline_ns FROM messages"
        f" WHERE {MAY_COME_DUE} AND deadline_ns <= ? ORDER BY deadline_ns LIMIT 500"
    )
    _EXPIRING = (  # index messages_expiring
        "SELECT message_id, direction, precedence, expire_ns FROM messages"
        f" WHERE {EXPIRING} AND expire_ns <= ? ORDER BY expire_ns LIMIT 500"
    )
    _OVERDUE_COUNT = f"SELECT COUNT(*) FROM messages WHERE {OVERDUE}"  # index messages_overdue
    _QUEUE_DEPTH = "SELECT COUNT(*) FROM messages WHERE direction = ? AND state = ?"

    def query_plans(self) -> dict[str, list[str]]:
        """SQLite's plans for the checks that run all the time: each must read an index."""
        return {
            "mark_overdue": self.journal.explain(self._DUE, (now_ns(),)),
            "mark_expired": self.journal.explain(self._EXPIRING, (now_ns(),)),
            "overdue_count": self.journal.explain(self._OVERDUE_COUNT),
            "queue_depth": self.journal.explain(self._QUEUE_DEPTH, (OUT, JOURNALED)),
        }

    async def mark_overdue(self, now_ns: int) -> list[Entry]:
        """Escalate outbound and re-alert inbound messages past their deadline, once each; first
        mark the unanswered ones past their expiry (EXPIRED, once each), which are neither."""

        def op(txn: Txn) -> list[Entry]:
            entries = []
            for message_id, direction, precedence, expires in txn.execute(
                self._EXPIRING, (now_ns,)
            ).fetchall():
                who = "the peer" if direction == OUT else "we"
                entries.append(
                    txn.append(
                        Kind.EXPIRED,
                        _json(
                            {
                                "precedence": precedence,
                                "expired_s": round((now_ns - expires) / 1e9, 3),
                                "detail": f"expired before {who} acknowledged it: "
                                "no more escalations or re-alerts",
                            }
                        ),
                        message_id=message_id,
                    )
                )
                txn.execute("UPDATE messages SET expired = 1 WHERE message_id = ?", (message_id,))
                record = self._cached(txn, message_id)
                if record is not None:
                    record.expired = True
                    record.overdue = False
            rows = txn.execute(self._DUE, (now_ns,)).fetchall()
            for message_id, direction, precedence, deadline in rows:
                kind = Kind.ESCALATION if direction == OUT else Kind.REALERT
                overdue_s = (now_ns - deadline) / 1e9
                who = (
                    "the peer has not acknowledged"
                    if direction == OUT
                    else "we have not acknowledged"
                )
                entries.append(
                    txn.append(
                        kind,
                        _json(
                            {
                                "precedence": precedence,
                                "overdue_s": round(overdue_s, 3),
                                "detail": f"{who} it within its deadline",
                            }
                        ),
                        message_id=message_id,
                    )
                )
                txn.execute("UPDATE messages SET escalated = 1 WHERE message_id = ?", (message_id,))
                record = self._cached(txn, message_id)
                if record is not None:
                    record.overdue = True
            self._events(txn)
            return entries

        return await self.journal.run(op)

    # ------------------------------------------------------------------ reading

    def message_row(self, message_id: str) -> Any:
        rows = self.journal.query(
            "SELECT m.*, e.body FROM messages m JOIN entries e ON e.position = m.position"
            " WHERE m.message_id = ?",
            (message_id,),
        )
        return rows[0] if rows else None

    def record(self, message_id: str) -> operator_pb2.MessageRecord | None:
        row = self.message_row(message_id)
        return None if row is None else self.record_from_row(row)

    def record_from_row(self, row: Any, txn: Txn | None = None) -> operator_pb2.MessageRecord:
        signed = common_pb2.SignedPayload()
        signed.ParseFromString(bytes(row["body"]))
        envelope = envelope_pb2.Envelope()
        envelope.ParseFromString(signed.payload)
        expired = bool(row["expired"]) or lifecycle.is_expired(row["expire_ns"], now_ns())
        record = operator_pb2.MessageRecord(
            envelope=envelope,
            signed_envelope=signed,
            direction=row["direction"],
            state=row["state"],
            journal_position=row["position"],
            sequence=row["sequence"],
            journal_time=timestamp_ns(row["journal_time_ns"]),
            acknowledgement_message_id=row["ack_message_id"],
            overdue=bool(row["escalated"])
            and row["state"] in (JOURNALED, DELIVERED)
            and not expired,
            expired=expired,
        )
        if row["deadline_ns"]:
            record.acknowledge_deadline_time.CopyFrom(timestamp_ns(row["deadline_ns"]))
        if row["deliver_time_ns"]:
            record.deliver_time.CopyFrom(timestamp_ns(row["deliver_time_ns"]))
        if row["ack_time_ns"]:
            record.acknowledge_time.CopyFrom(timestamp_ns(row["ack_time_ns"]))
        if row["rejection_reason"]:
            record.rejection_reason = reason_to_wire(link.RejectReason[row["rejection_reason"]])
            record.rejection_detail = row["rejection_detail"]
        chain = self._chain_of(txn, row["message_id"], record)
        record.updated_by_message_id = chain.get("updated_by_message_id", "")
        record.cancelled_by_message_id = chain.get("cancelled_by_message_id", "")
        return record

    # What refers to a message: its acknowledgements and its UPDATEs and CANCELs (not those the
    # peer refused), in journal order, through the partial index `messages_refers`.
    _REFERRING = (
        "SELECT m.message_id, m.action, m.body_type, m.journal_time_ns, e.body FROM messages m"
        " JOIN entries e ON e.position = m.position"
        f" WHERE m.refers_to = ? AND m.refers_to != '' AND m.state != {REJECTED}"
        " ORDER BY m.position"
    )

    def _chain_of(
        self,
        txn: Txn | None,
        message_id: str,
        record: operator_pb2.MessageRecord | None = None,
    ) -> dict[str, str]:
        """The latest UPDATE and the CANCEL of `message_id` ({field name: id}); with `record`,
        fill its acknowledgement history (and the latest acknowledgement) too."""
        rows: Sequence[Sequence[Any]] = (
            self.journal.query(self._REFERRING, (message_id,))
            if txn is None
            else txn.execute(self._REFERRING, (message_id,)).fetchall()
        )
        chain: dict[str, str] = {}
        history: list[operator_pb2.AcknowledgementRecord] = []
        for referring, action, body_type, journal_time_ns, body in rows:
            if body_type == BODY_TYPES["acknowledgement"]:
                if record is None:
                    continue
                signed = common_pb2.SignedPayload()
                signed.ParseFromString(bytes(body))
                ack = envelope_pb2.Envelope()
                ack.ParseFromString(signed.payload)
                history.append(
                    operator_pb2.AcknowledgementRecord(
                        acknowledgement_message_id=referring,
                        acknowledgement=ack.acknowledgement,
                        acknowledge_time=timestamp_ns(journal_time_ns),
                    )
                )
            elif action == lifecycle.UPDATE:
                chain["updated_by_message_id"] = referring
            elif action == lifecycle.CANCEL:
                chain["cancelled_by_message_id"] = referring
        if record is not None and history:
            record.acknowledgements.extend(history[-ACK_HISTORY:])
            latest = history[-1]
            record.acknowledgement.CopyFrom(latest.acknowledgement)
            record.acknowledgement_message_id = latest.acknowledgement_message_id
            record.acknowledge_time.CopyFrom(latest.acknowledge_time)
        return chain

    def list_records(
        self, where: MessageFilter, *, before_position: int, limit: int
    ) -> list[operator_pb2.MessageRecord]:
        """Messages matching `where`, newest first, below a journal position (a page)."""
        clauses, params = where.sql()
        rows = self.journal.query(
            "SELECT m.*, e.body FROM messages m JOIN entries e ON e.position = m.position"
            f" WHERE {' AND '.join(['m.position < ?', *clauses])}"
            " ORDER BY m.position DESC LIMIT ?",
            (before_position, *params, limit),
        )
        return [self.record_from_row(r) for r in rows]

    def overdue_count(self) -> int:
        return int(self.journal.query(self._OVERDUE_COUNT)[0][0])

    def queue_depth(self) -> int:
        return int(self.journal.query(self._QUEUE_DEPTH, (OUT, JOURNALED))[0][0])

    def event_for(
        self,
        entry: Entry,
        record_of: Callable[[str], operator_pb2.MessageRecord | None] | None = None,
    ) -> operator_pb2.Event | None:
        """The operator event an entry stands for (None for entries operators don't see).

        Live entries carry the event their operation built (`entry.event`); for entries read
        back from the journal (a Watch replaying history) it is built here, with the records
        read from the journal unless `record_of` gives them.
        """
        if isinstance(entry.event, operator_pb2.Event):
            return entry.event
        kind = EVENT_KINDS.get(entry.kind)
        if kind is None:
            return None
        event = operator_pb2.Event(
            cursor=entry.position,
            kind=kind,
            event_time=timestamp_ns(entry.time_ns),
            message_id=entry.message_id,
        )
        message_id = entry.message_id
        answer = ""  # the acknowledgement message an ACKNOWLEDGED event is about
        if entry.kind is Kind.MESSAGE_IN:
            signed = common_pb2.SignedPayload()
            signed.ParseFromString(entry.body)
            envelope = envelope_pb2.Envelope()
            envelope.ParseFromString(signed.payload)
            if envelope.WhichOneof("body") == "acknowledgement":
                ack = envelope.acknowledgement
                event.kind = operator_pb2.EVENT_KIND_MESSAGE_ACKNOWLEDGED
                answer = envelope.message_id
                message_id = ack.acknowledged_message_id
                event.message_id = message_id
                level = bodies_pb2.AcknowledgementLevel.Name(ack.level).removeprefix(
                    "ACKNOWLEDGEMENT_LEVEL_"
                )
                event.detail = f"{ack.responder or envelope.originator} answered {level}"
        elif entry.kind in (
            Kind.LINK_UP,
            Kind.LINK_DOWN,
            Kind.SECURITY,
            Kind.ESCALATION,
            Kind.REALERT,
            Kind.EXPIRED,
            Kind.REFUSED_BY_PEER,
            Kind.REFUSED_INBOUND,
        ):
            data = entry.json_body()
            event.detail = str(data.get("detail", ""))
            direction = data.get("direction")
            if direction == "outbound":
                event.link = operator_pb2.LINK_DIRECTION_OUTBOUND
            elif direction == "inbound":
                event.link = operator_pb2.LINK_DIRECTION_INBOUND
            if entry.kind in (Kind.REFUSED_BY_PEER, Kind.REFUSED_INBOUND):
                event.detail = f"{data.get('reason')}: {data.get('detail')}"
        elif entry.kind is Kind.ACKNOWLEDGED:
            event.detail = "acknowledged by this party"
            answer = str(entry.json_body().get("acknowledgement", ""))
        elif entry.kind is Kind.CHECKPOINT_PEER:
            event.detail = f"{self.peer_party} journal checkpoint witnessed"
            event.link = operator_pb2.LINK_DIRECTION_INBOUND
        if message_id:
            record = (record_of or self.record)(message_id)
            if record is not None:
                event.message.CopyFrom(record)
                if answer:
                    _as_answered_by(event.message, answer)
        return event


EVENT_KINDS: dict[Kind, operator_pb2.EventKind.ValueType] = {
    Kind.MESSAGE_OUT: operator_pb2.EVENT_KIND_MESSAGE_SENT,
    Kind.MESSAGE_IN: operator_pb2.EVENT_KIND_MESSAGE_RECEIVED,
    Kind.DELIVERED: operator_pb2.EVENT_KIND_MESSAGE_DELIVERED,
    Kind.ACKNOWLEDGED: operator_pb2.EVENT_KIND_MESSAGE_ACKNOWLEDGED,
    Kind.REFUSED_BY_PEER: operator_pb2.EVENT_KIND_MESSAGE_REJECTED,
    Kind.REFUSED_INBOUND: operator_pb2.EVENT_KIND_MESSAGE_REJECTED,
    Kind.ESCALATION: operator_pb2.EVENT_KIND_ESCALATION,
    Kind.REALERT: operator_pb2.EVENT_KIND_REALERT,
    Kind.EXPIRED: operator_pb2.EVENT_KIND_MESSAGE_EXPIRED,
    Kind.LINK_UP: operator_pb2.EVENT_KIND_LINK_UP,
    Kind.LINK_DOWN: operator_pb2.EVENT_KIND_LINK_DOWN,
    Kind.SECURITY: operator_pb2.EVENT_KIND_SECURITY_REFUSAL,
    Kind.CHECKPOINT_PEER: operator_pb2.EVENT_KIND_CHECKPOINT,
}
RECORD_CACHE = 20_000  # message records the writer keeps for building live events


def _as_answered_by(record: operator_pb2.MessageRecord, answer: str) -> None:
    """`record` as it stood right after the acknowledgement message `answer` (an event read
    back from the journal): that one stands, and the history ends with it."""
    ids = [a.acknowledgement_message_id for a in record.acknowledgements]
    if answer not in ids:
        return
    del record.acknowledgements[ids.index(answer) + 1 :]
    latest = record.acknowledgements[-1]
    record.acknowledgement.CopyFrom(latest.acknowledgement)
    record.acknowledgement_message_id = latest.acknowledgement_message_id
    record.acknowledge_time.CopyFrom(latest.acknowledge_time)


CHAIN_ACTIONS = (lifecycle.UPDATE, lifecycle.CANCEL)


def outgoing(
    signed: common_pb2.SignedPayload,
    message_id: str,
    precedence: int,
    position: int,
    *,
    after: str = "",
) -> link.Outgoing:
    """The link's view of a journaled outbound message (`after`: what an UPDATE or CANCEL
    refers to, never transmitted after it)."""
    return link.Outgoing(
        message_id,
        precedence,
        position,
        sha256(signed.payload),
        signed,
        len(signed.payload),
        after,
    )


def now_ns() -> int:
    return time.time_ns()
