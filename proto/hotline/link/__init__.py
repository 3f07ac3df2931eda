"""The peer link's rules, with no I/O: sequences, batches, lanes, settlements, resume, heartbeats.

One lane of one direction of the hot line is one `PeerLinkService.Push` stream: the *sender*
gateway dials the *receiver* gateway and pushes its outbox, one stream per precedence (a
*lane*: its own sequences, Welcome and batch receipts), so that a FLASH is never processed
after ROUTINE deliveries in flight. This module holds both ends of one lane as plain classes
(in the style of h11 / wsproto) with the same shape:

    receive(frame, now)        a frame from the other end (already signature-checked by `wire`)
    tick(now)                  time passed: heartbeats, deadlines, batches to send
    persisted(token, result)   the adapter reports that a `Persist` action is durable
    drain() -> [actions]       what the adapter must do now, in order

and three kinds of action (etcd raft's `Ready` contract):

    Persist(token, record)     make `record` durable, then call `persisted(token, result)`
    Send(frame)                transmit `frame` now
    Event(event)               tell the gateway (link up/down, heartbeat measured)

The core never emits a `Send` that depends on a `Persist` not yet confirmed: a batch receipt
leaves only after `persisted()` said its batch is durable, a Welcome only after every batch
before it is durable, a Hello only after the settlements it claims are durable. So "persist,
then send" is a property of the core, tested without sockets; the gRPC adapters in
`server.peerlink` only do the I/O. Pings and pongs depend on nothing and leave at once, so
heartbeats never wait behind journal writes.

A message travels on the lane of its precedence; an UPDATE or CANCEL of a message unsettled on
another lane waits for that one's settlement (`OutboundLink(unsettled_elsewhere=...)`), which
its own lane sends next (`OutboundLink.hurry`).

A protocol violation by the peer raises `RemoteProtocolError` and changes no state; the adapter
ends the stream (the receiver with the status code the error names). The normative text is in
`proto/hotline/v1/peer_link.proto`.
"""

from __future__ import annotations

from hotline.link.receiver import (
    Checker,
    InboundLink,
    ReceiptArchive,
    ReceiverState,
    Verdict,
    check_hello,
)
from hotline.link.sender import (
    OutboundLink,
    Outgoing,
    SenderState,
)
from hotline.link.values import (
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_COUNT,
    DEFAULT_DEAD_AFTER,
    DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_LANES,
    DEFAULT_LOW_LANE,
    DEFAULT_WINDOW,
    DELIVERY_OVERHEAD,
    LANES,
    MAX_BATCH,
    MAX_ENVELOPE_BYTES,
    MAX_FRAME_BYTES,
    MAX_RESUME,
    NONCE_BYTES,
    ROUTINE_LANE,
    URGENT_LANES,
    Accepted,
    Action,
    BatchReceipt,
    Delivery,
    DeliveryBatch,
    Event,
    Heartbeat,
    Hello,
    JournalBatch,
    JournalLost,
    LinkDown,
    LinkEvent,
    LinkUp,
    Measured,
    PeerViolation,
    Persist,
    PersistRecord,
    Ping,
    Pong,
    ReceiptItem,
    ReceiverFrame,
    RejectionItem,
    RejectReason,
    Seen,
    Send,
    SenderFrame,
    SettleOutbound,
    StreamEnd,
    Welcome,
    WitnessedCheckpoint,
)

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_COUNT",
    "DEFAULT_DEAD_AFTER",
    "DEFAULT_HEARTBEAT_INTERVAL",
    "DEFAULT_LANES",
    "DEFAULT_LOW_LANE",
    "DEFAULT_WINDOW",
    "DELIVERY_OVERHEAD",
    "LANES",
    "MAX_BATCH",
    "MAX_ENVELOPE_BYTES",
    "MAX_FRAME_BYTES",
    "MAX_RESUME",
    "NONCE_BYTES",
    "ROUTINE_LANE",
    "URGENT_LANES",
    "Accepted",
    "Action",
    "BatchReceipt",
    "Checker",
    "Delivery",
    "DeliveryBatch",
    "Event",
    "Heartbeat",
    "Hello",
    "InboundLink",
    "JournalBatch",
    "JournalLost",
    "LinkDown",
    "LinkEvent",
    "LinkUp",
    "Measured",
    "OutboundLink",
    "Outgoing",
    "PeerViolation",
    "Persist",
    "PersistRecord",
    "Ping",
    "Pong",
    "ReceiptArchive",
    "ReceiptItem",
    "ReceiverFrame",
    "ReceiverState",
    "RejectReason",
    "RejectionItem",
    "Seen",
    "Send",
    "SenderFrame",
    "SenderState",
    "SettleOutbound",
    "StreamEnd",
    "Verdict",
    "Welcome",
    "WitnessedCheckpoint",
    "check_hello",
]
