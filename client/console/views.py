"""The console's JSON: operator API events, message records and link status as the page shows
them.

Every judgement the page displays is made here, from the gateway's own answers: a message's
rung on the ladder (`state`), whether an acknowledgement is awaited and by when (`awaiting_ack`,
`deadline`), whether the page's party may acknowledge it (`can_acknowledge`). The page renders
these values and counts down to a deadline it is given; it applies no rule of its own.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from client.bodies import describe_body, short_id, text_of
from client.cli_common import (
    awaiting_ack,
    body_label,
    enum_label,
    kind_name,
    level_name,
    precedence_name,
    status_name,
)
from client.operator import state_name
from hotline.v1 import bodies_pb2, common_pb2, operator_pb2, peer_link_pb2

__all__ = [
    "ACK_LEVELS",
    "event_view",
    "link_view",
    "record_detail",
    "record_view",
    "time_text",
]

# The levels an operator may answer with, in the order the page offers them.
ACK_LEVELS = {
    level_name(number): number
    for number in bodies_pb2.AcknowledgementLevel.values()
    if number != bodies_pb2.ACKNOWLEDGEMENT_LEVEL_UNSPECIFIED
}


def time_text(ts: Timestamp) -> str:
    """RFC 3339 in UTC with milliseconds (`2026-12-01T17:23:44.446Z`)."""
    when = ts.ToDatetime()
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _optional_time(record: Any, name: str) -> str | None:
    return time_text(getattr(record, name)) if record.HasField(name) else None


def _ms(duration: Duration) -> float:
    return round(duration.ToNanoseconds() / 1e6, 3)


def record_view(record: operator_pb2.MessageRecord) -> dict[str, Any]:
    """A message as it stood at an event (or now): what, how urgent, where on the ladder."""
    env = record.envelope
    body = env.WhichOneof("body")
    inbound = record.direction == operator_pb2.DIRECTION_INBOUND
    view: dict[str, Any] = {
        "message_id": env.message_id,
        "short_id": short_id(env.message_id),
        "type": body_label(env),
        "summary": describe_body(env),
        "precedence": precedence_name(env.precedence),
        "status": status_name(env.status),
        "action": enum_label(common_pb2.Action, env.action, "ACTION_"),
        "references": list(env.references),
        "sender": env.sender_party,
        "recipient": env.recipient_party,
        "direction": "in" if inbound else "out",
        "state": state_name(record.state),
        "journal_position": record.journal_position,
        "journal_time": _optional_time(record, "journal_time"),
        "deliver_time": _optional_time(record, "deliver_time"),
        "acknowledge_time": _optional_time(record, "acknowledge_time"),
        "deadline": _optional_time(record, "acknowledge_deadline_time"),
        "overdue": record.overdue,
        "awaiting_ack": awaiting_ack(record),
        "can_acknowledge": inbound
        and body != "acknowledgement"
        and record.state != operator_pb2.DELIVERY_STATE_REJECTED,
        "answers": env.acknowledgement.acknowledged_message_id
        if body == "acknowledgement"
        else None,
        "ack": None,
        "rejection": None,
    }
    if record.HasField("acknowledgement"):
        ack = record.acknowledgement
        view["ack"] = {
            "level": level_name(ack.level),
            "responder": ack.responder,
            "reason": text_of(ack.reason) if ack.HasField("reason") else None,
            "remarks": text_of(ack.remarks) if ack.HasField("remarks") else None,
        }
    if record.state == operator_pb2.DELIVERY_STATE_REJECTED:
        view["rejection"] = {
            "reason": enum_label(
                peer_link_pb2.RejectionReason, record.rejection_reason, "REJECTION_REASON_"
            ),
            "detail": record.rejection_detail,
        }
    return view


def record_detail(record: operator_pb2.MessageRecord) -> dict[str, Any]:
    """The full record, for the page's detail panel: the view plus everything else the journal
    holds (handling, originator, sequence, signature, the body field by field)."""
    env = record.envelope
    view = record_view(record)
    body = env.WhichOneof("body")
    handling = env.handling
    view.update(
        {
            "originator": env.originator,
            "create_time": _optional_time(env, "create_time"),
            "expire_time": _optional_time(env, "expire_time"),
            "language": env.language,
            "classification": enum_label(
                common_pb2.Classification, handling.classification, "CLASSIFICATION_"
            ),
            "releasable_to": list(handling.releasable_to),
            "caveat": handling.caveat,
            "sequence": record.sequence,
            "signed_by_key": record.signed_envelope.key_id,
            "acknowledgement_message_id": record.acknowledgement_message_id,
            "body": json_format.MessageToDict(getattr(env, body), preserving_proto_field_name=True)
            if body
            else None,
        }
    )
    return view


def event_view(party: str, event: operator_pb2.Event) -> dict[str, Any]:
    """One event on one party's watch floor."""
    link = {
        operator_pb2.LINK_DIRECTION_OUTBOUND: "outbound",
        operator_pb2.LINK_DIRECTION_INBOUND: "inbound",
    }.get(event.link, "")
    message = record_view(event.message) if event.HasField("message") else None
    return {
        "party": party,
        "cursor": event.cursor,
        "kind": kind_name(event.kind),
        "time": time_text(event.event_time),
        "message_id": event.message_id or None,
        "link": link or None,
        "detail": event.detail or None,
        "message": message,
        "note": _note(event, message),
    }


def _note(event: operator_pb2.Event, message: dict[str, Any] | None) -> str | None:
    """What an event asks of the watch, or what the answer was, in one line."""
    if message is None:
        return None
    if event.kind == operator_pb2.EVENT_KIND_ESCALATION:
        return f"no acknowledgement from {message['recipient']} by the deadline: follow it up"
    if event.kind == operator_pb2.EVENT_KIND_REALERT:
        return "not acknowledged by us by the deadline: answer it now"
    if event.kind == operator_pb2.EVENT_KIND_MESSAGE_REJECTED:
        return event.detail or "refused"
    ack = message["ack"]
    if event.kind == operator_pb2.EVENT_KIND_MESSAGE_ACKNOWLEDGED and ack is not None:
        words = ack["reason"] or ack["remarks"]
        who = ack["responder"].rsplit("/", 1)[-1]
        return f"{ack['level']} by {who}" + (f": {words}" if words else "")
    return None


def _direction(status: operator_pb2.LinkStatus) -> dict[str, Any]:
    return {
        "up": status.up,
        "since": _optional_time(status, "since_time"),
        "rtt_ms": _ms(status.rtt) if status.HasField("rtt") else None,
        "clock_offset_ms": _ms(status.clock_offset) if status.HasField("clock_offset") else None,
        "queue_depth": status.queue_depth,
        "last_sequence": status.last_sequence,
        "detail": status.detail or None,
    }


def link_view(
    party: str, status: operator_pb2.GetLinkStatusResponse | None, error: str = ""
) -> dict[str, Any]:
    """Both directions of the peer link as `party`'s gateway sees them (or why it cannot say)."""
    if status is None:
        return {"party": party, "reachable": False, "error": error or "not asked yet"}
    return {
        "party": party,
        "reachable": True,
        "peer": status.peer_party,
        "outbound": _direction(status.outbound),
        "inbound": _direction(status.inbound),
        "overdue_count": status.overdue_count,
        "error": None,
    }
