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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hotline import link
from hotline.signing import Signer, sha256
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2, peer_link_pb2
from hotline.wire import reason_to_wire, sign_batch_receipt, signed_of, timestamp_ns
from server.journal import MAY_COME_DUE, OVERDUE, Entry, Journal, Kind, Txn

log = logging.getLogger("hotline.store")

OUT = operator_pb2.DIRECTION_OUTBOUND
IN = operator_pb2.DIRECTION_INBOUND
JOURNALED = operator_pb2.DELIVERY_STATE_JOURNALED
DELIVERED = operator_pb2.DELIVERY_STATE_DELIVERED
ACKNOWLEDGED = operator_pb2.DELIVERY_STATE_ACKNOWLEDGED
REJECTED = operator_pb2.DELIVERY_STATE_REJECTED

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
class Journaled:
    message_id: str
    position: int
    journal_time_ns: int
    deadline_ns: int


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _rejection_json(rejection: link.RejectionItem) -> bytes:
    return _json(
        {
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
        # Every message id in the journal, kept current here: the peer link's receiving end
        # detects duplicates (and reuse of our own ids) in memory, with no SQL per delivery.
        self.seen: dict[str, link.Seen] = journal.seen_index()

    # ------------------------------------------------------------------ outbound

    def _insert_message(
        self,
        txn: Txn,
        *,
        entry: Entry,
        envelope: envelope_pb2.Envelope,
        direction: int,
        state: int,
        digest: bytes,
        sequence: int = 0,
    ) -> int:
        if envelope.WhichOneof("body") == "acknowledgement":
            deadline = 0  # an acknowledgement is not itself acknowledged
        else:
            deadline = entry.time_ns + int(self._deadline_s(envelope.precedence) * 1e9)
        txn.execute(
            "INSERT INTO messages (message_id, direction, sender_party, body_type, precedence,"
            " status, state, position, journal_time_ns, deadline_ns, sequence, deliver_time_ns,"
            " digest) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
            ),
        )
        return deadline

    def _existing(self, txn: Txn, message_id: str, digest: bytes) -> None:
        row = txn.execute(
            "SELECT digest, position FROM messages WHERE message_id = ?", (message_id,)
        ).fetchone()
        if row is not None:
            raise DuplicateMessage(message_id, bytes(row[0]) == digest, row[1])

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
                txn, entry=entry, envelope=envelope, direction=OUT, state=JOURNALED, digest=digest
            )
            if acknowledges:
                # The latest acknowledgement stands (ROGER, then WILCO, ...).
                txn.execute(
                    "UPDATE messages SET state = ?, ack_time_ns = ?, ack_message_id = ?"
                    " WHERE message_id = ?",
                    (ACKNOWLEDGED, entry.time_ns, envelope.message_id, acknowledges),
                )
                txn.append(
                    Kind.ACKNOWLEDGED,
                    _json({"acknowledgement": envelope.message_id}),
                    message_id=acknowledges,
                )
            return Journaled(envelope.message_id, entry.position, entry.time_ns, deadline)

        journaled = await self.journal.run(op)
        self.seen.setdefault(envelope.message_id, link.Seen(0))
        return journaled

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
            result.append(outgoing(signed, row["message_id"], row["precedence"], row["position"]))
        return result

    def last_settled_outbound(self) -> int:
        return self.journal.last_sequence(self.party)

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
                    "INSERT OR IGNORE INTO settlements (sender_party, sequence, message_id,"
                    " outcome, digest, batch_first) VALUES (?,?,?,?,?,?)",
                    (
                        self.party,
                        item.sequence,
                        item.message_id,
                        "receipt",
                        item.digest,
                        by.first_sequence,
                    ),
                )
                txn.execute(
                    "UPDATE messages SET state = CASE WHEN state = ? THEN ? ELSE state END,"
                    " sequence = ?, deliver_time_ns = ? WHERE message_id = ? AND direction = ?",
                    (
                        JOURNALED,
                        DELIVERED,
                        item.sequence,
                        by.journal_time_ns or entry.time_ns,
                        item.message_id,
                        OUT,
                    ),
                )
            for rejection in plan.refused:
                proof(receipt)
                txn.append(
                    Kind.REFUSED_BY_PEER,
                    _rejection_json(rejection),
                    message_id=rejection.message_id,
                    party=self.peer_party,
                    sequence=rejection.sequence,
                )
                txn.execute(
                    "INSERT OR IGNORE INTO settlements (sender_party, sequence, message_id,"
                    " outcome, digest, batch_first, detail) VALUES (?,?,?,?,?,?,?)",
                    (
                        self.party,
                        rejection.sequence,
                        rejection.message_id,
                        rejection.reason.name,
                        rejection.digest,
                        receipt.first_sequence,
                        rejection.detail,
                    ),
                )
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

        return self.journal.submit_async(op)

    # ------------------------------------------------------------------ inbound

    def journal_batch(
        self, batch: link.JournalBatch, signer: Signer
    ) -> asyncio.Future[link.BatchReceipt]:
        """Journal a batch from the peer (messages and rejections) and sign its batch receipt,
        in one transaction: the receipt exists only if the batch is durable."""

        def op(txn: Txn) -> link.BatchReceipt:
            held = self.journal.last_sequence_in(txn, batch.sender_party)
            if held != batch.first_sequence - 1:
                raise WrongState(
                    f"batch {batch.first_sequence}..{batch.last_sequence} does not follow "
                    f"sequence {held}, the last this journal settled"
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
                    sequence=d.sequence,
                )
                if envelope.WhichOneof("body") == "acknowledgement":
                    txn.execute(
                        "UPDATE messages SET state = ?, ack_time_ns = ?, ack_message_id = ?"
                        " WHERE message_id = ? AND direction = ? AND state IN (?, ?)",
                        (
                            ACKNOWLEDGED,
                            entry.time_ns,
                            envelope.message_id,
                            envelope.acknowledgement.acknowledged_message_id,
                            OUT,
                            JOURNALED,
                            DELIVERED,
                        ),
                    )
                receipts.append(
                    link.ReceiptItem(d.sequence, accepted.message_id, d.digest, entry.position)
                )
            for rejection in batch.refused:
                last_time = txn.append(
                    Kind.REFUSED_INBOUND,
                    _rejection_json(rejection),
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
            )
            rows = [
                (batch.sender_party, r.sequence, r.message_id, "receipt", r.digest, "")
                for r in receipts
            ] + [
                (
                    batch.sender_party,
                    r.sequence,
                    r.message_id,
                    r.reason.name,
                    r.digest,
                    r.detail,
                )
                for r in batch.refused
            ]
            txn.executemany(
                "INSERT INTO settlements (sender_party, sequence, message_id, outcome, digest,"
                f" batch_first, detail) VALUES (?,?,?,?,?,{batch.first_sequence:d},?)",
                rows,
            )
            txn.execute(
                "INSERT INTO batch_receipts (sender_party, first_sequence, last_sequence, receipt)"
                " VALUES (?,?,?,?)",
                (
                    batch.sender_party,
                    batch.first_sequence,
                    batch.last_sequence,
                    signed_of(receipt).SerializeToString(),
                ),
            )
            return receipt

        return self.journal.submit_async(op)

    # ------------------------------------------------------------------ events

    async def record_event(
        self, kind: Kind, data: dict[str, Any], *, message_id: str = ""
    ) -> Entry:
        body = _json(data)

        def op(txn: Txn) -> Entry:
            return txn.append(kind, body, message_id=message_id)

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

    async def record_checkpoint(
        self, kind: Kind, signed: common_pb2.SignedPayload, party: str
    ) -> None:
        raw = signed.SerializeToString()

        def op(txn: Txn) -> None:
            txn.append(kind, raw, party=party)

        await self.journal.run(op)

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
    _OVERDUE_COUNT = f"SELECT COUNT(*) FROM messages WHERE {OVERDUE}"  # index messages_overdue
    _QUEUE_DEPTH = "SELECT COUNT(*) FROM messages WHERE direction = ? AND state = ?"

    def query_plans(self) -> dict[str, list[str]]:
        """SQLite's plans for the checks that run all the time: each must read an index."""
        return {
            "mark_overdue": self.journal.explain(self._DUE, (now_ns(),)),
            "overdue_count": self.journal.explain(self._OVERDUE_COUNT),
            "queue_depth": self.journal.explain(self._QUEUE_DEPTH, (OUT, JOURNALED)),
        }

    async def mark_overdue(self, now_ns: int) -> list[Entry]:
        """Escalate outbound and re-alert inbound messages past their deadline, once each."""

        def op(txn: Txn) -> list[Entry]:
            rows = txn.execute(self._DUE, (now_ns,)).fetchall()
            entries = []
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

    def record_from_row(self, row: Any) -> operator_pb2.MessageRecord:
        signed = common_pb2.SignedPayload()
        signed.ParseFromString(bytes(row["body"]))
        envelope = envelope_pb2.Envelope()
        envelope.ParseFromString(signed.payload)
        record = operator_pb2.MessageRecord(
            envelope=envelope,
            signed_envelope=signed,
            direction=row["direction"],
            state=row["state"],
            journal_position=row["position"],
            sequence=row["sequence"],
            journal_time=timestamp_ns(row["journal_time_ns"]),
            acknowledgement_message_id=row["ack_message_id"],
            overdue=bool(row["escalated"]) and row["state"] in (JOURNALED, DELIVERED),
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
        if row["ack_message_id"]:
            ack = self.message_row(row["ack_message_id"])
            if ack is not None:
                ack_signed = common_pb2.SignedPayload()
                ack_signed.ParseFromString(bytes(ack["body"]))
                ack_env = envelope_pb2.Envelope()
                ack_env.ParseFromString(ack_signed.payload)
                if ack_env.WhichOneof("body") == "acknowledgement":
                    record.acknowledgement.CopyFrom(ack_env.acknowledgement)
        return record

    def list_records(
        self,
        *,
        before_position: int,
        limit: int,
        where: Sequence[str] = (),
        params: Sequence[Any] = (),
    ) -> list[operator_pb2.MessageRecord]:
        clauses = ["m.position < ?", *where]
        rows = self.journal.query(
            "SELECT m.*, e.body FROM messages m JOIN entries e ON e.position = m.position"
            f" WHERE {' AND '.join(clauses)} ORDER BY m.position DESC LIMIT ?",
            (before_position, *params, limit),
        )
        return [self.record_from_row(r) for r in rows]

    def overdue_count(self) -> int:
        return int(self.journal.query(self._OVERDUE_COUNT)[0][0])

    def queue_depth(self) -> int:
        return int(self.journal.query(self._QUEUE_DEPTH, (OUT, JOURNALED))[0][0])

    def event_for(self, entry: Entry) -> operator_pb2.Event | None:
        """The operator event an entry stands for (None for entries operators don't see)."""
        kinds = {
            Kind.MESSAGE_OUT: operator_pb2.EVENT_KIND_MESSAGE_SENT,
            Kind.MESSAGE_IN: operator_pb2.EVENT_KIND_MESSAGE_RECEIVED,
            Kind.DELIVERED: operator_pb2.EVENT_KIND_MESSAGE_DELIVERED,
            Kind.ACKNOWLEDGED: operator_pb2.EVENT_KIND_MESSAGE_ACKNOWLEDGED,
            Kind.REFUSED_BY_PEER: operator_pb2.EVENT_KIND_MESSAGE_REJECTED,
            Kind.REFUSED_INBOUND: operator_pb2.EVENT_KIND_MESSAGE_REJECTED,
            Kind.ESCALATION: operator_pb2.EVENT_KIND_ESCALATION,
            Kind.REALERT: operator_pb2.EVENT_KIND_REALERT,
            Kind.LINK_UP: operator_pb2.EVENT_KIND_LINK_UP,
            Kind.LINK_DOWN: operator_pb2.EVENT_KIND_LINK_DOWN,
            Kind.SECURITY: operator_pb2.EVENT_KIND_SECURITY_REFUSAL,
            Kind.CHECKPOINT_PEER: operator_pb2.EVENT_KIND_CHECKPOINT,
        }
        kind = kinds.get(entry.kind)
        if kind is None:
            return None
        event = operator_pb2.Event(
            cursor=entry.position,
            kind=kind,
            event_time=timestamp_ns(entry.time_ns),
            message_id=entry.message_id,
        )
        message_id = entry.message_id
        if entry.kind is Kind.MESSAGE_IN:
            signed = common_pb2.SignedPayload()
            signed.ParseFromString(entry.body)
            envelope = envelope_pb2.Envelope()
            envelope.ParseFromString(signed.payload)
            if envelope.WhichOneof("body") == "acknowledgement":
                ack = envelope.acknowledgement
                event.kind = operator_pb2.EVENT_KIND_MESSAGE_ACKNOWLEDGED
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
        elif entry.kind is Kind.CHECKPOINT_PEER:
            event.detail = f"{self.peer_party} journal checkpoint witnessed"
            event.link = operator_pb2.LINK_DIRECTION_INBOUND
        if message_id:
            record = self.record(message_id)
            if record is not None:
                event.message.CopyFrom(record)
        return event


def outgoing(
    signed: common_pb2.SignedPayload, message_id: str, precedence: int, position: int
) -> link.Outgoing:
    """The link's view of a journaled outbound message."""
    return link.Outgoing(
        message_id, precedence, position, sha256(signed.payload), signed, len(signed.payload)
    )


def now_ns() -> int:
    return time.time_ns()
