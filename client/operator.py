"""The operator client: a watch officer's (or a simulator's) view of its own gateway.

`OperatorClient` hides gRPC behind the protocol's words: `send`, `acknowledge`, `get`, `list`,
`watch`, `wait_for`, `link_status`. It speaks to one gateway, its own party's, over mutual TLS
with the server's identity pinned (see `hotline.transport`):

    async with OperatorClient.from_pki(Path("pki"), "JP", address="127.0.0.1:50051") as jp:
        sent = await jp.send_body(bodies.free_text("Radio check", "How do you read?"),
                                  precedence=PRECEDENCE_ROUTINE)
        record = await jp.wait_for(sent.message_id, DELIVERY_STATE_ACKNOWLEDGED)

Failures are raised as `client.errors` exceptions, translated from gRPC status codes in one
place (`_call`). Each unary call has a deadline (10 s by default). A call that fails with
UNAVAILABLE, or with DEADLINE_EXCEEDED (every unary call of the operator API is idempotent), is
retried with capped exponential backoff and jitter for a window (`RetryPolicy.window_s`, 15 s by
default: long enough for a supervisor to restart a killed gateway). Retrying is safe because
every request that creates something carries an id chosen here, before the first attempt
(`message_id` for Send, `ack_message_id` for Acknowledge), and the same request is sent again,
so the gateway recognises a retry and answers it without sending twice (AIP-155). When the
window runs out, the error raised carries that id (`ClientError.message_id`), so a script that
retries on its own can send again with the same id. `watch` resumes a lost stream from the last cursor it yielded, so the
consumer sees every event once, in journal order, across reconnects.

A client belongs to one event loop (a gRPC channel does); its channel is opened on first use.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from certs.errors import CertsError
from certs.pki import PartyPaths
from client.bodies import body_field, localized, timestamp
from client.errors import (
    ClientError,
    InvalidMessage,
    MessageRejected,
    NotFound,
    RateLimited,
    Timeout,
    Unavailable,
    from_rpc_error,
    from_status,
)
from client.tracing import trace_metadata
from hotline.errors import ConfigError
from hotline.ids import is_message_id, new_message_id
from hotline.transport import credentials, secure_channel
from hotline.v1 import (
    common_pb2,
    envelope_pb2,
    operator_pb2,
    operator_pb2_grpc,
    peer_link_pb2,
)

log = logging.getLogger("hotline.client")

SEND_BATCH_MAX = 256  # envelopes per SendBatch call (the spec's bound)
_STATUS_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}

__all__ = [
    "ACKNOWLEDGED",
    "DEFAULT_TIMEOUT_S",
    "DELIVERED",
    "JOURNALED",
    "REJECTED",
    "AckResult",
    "Envelope",
    "Event",
    "GetLinkStatusResponse",
    "MessageRecord",
    "OperatorClient",
    "RetryPolicy",
    "SendResult",
    "state_name",
]

Envelope = envelope_pb2.Envelope
MessageRecord = operator_pb2.MessageRecord
Event = operator_pb2.Event
GetLinkStatusResponse = operator_pb2.GetLinkStatusResponse

DEFAULT_TIMEOUT_S = 10.0
MAX_PAGE_SIZE = 1000  # ListMessagesRequest.page_size: 1..1000

JOURNALED = operator_pb2.DELIVERY_STATE_JOURNALED
DELIVERED = operator_pb2.DELIVERY_STATE_DELIVERED
ACKNOWLEDGED = operator_pb2.DELIVERY_STATE_ACKNOWLEDGED
REJECTED = operator_pb2.DELIVERY_STATE_REJECTED

# The events that bring a message into the journal, move it up the ladder, or end it.
_PROGRESS_KINDS = (
    operator_pb2.EVENT_KIND_MESSAGE_SENT,  # also our operators' acknowledgements
    operator_pb2.EVENT_KIND_MESSAGE_RECEIVED,
    operator_pb2.EVENT_KIND_MESSAGE_DELIVERED,
    operator_pb2.EVENT_KIND_MESSAGE_ACKNOWLEDGED,
    operator_pb2.EVENT_KIND_MESSAGE_REJECTED,
)

R = TypeVar("R")


def state_name(state: int) -> str:
    """`DELIVERY_STATE_DELIVERED` -> `DELIVERED` (the number itself if unknown)."""
    try:
        return operator_pb2.DeliveryState.Name(cast(Any, state)).removeprefix("DELIVERY_STATE_")
    except ValueError:
        return str(state)


def _datetime(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


@dataclass(frozen=True)
class SendResult:
    """The gateway journaled the message: its id, where and when, and its acknowledgement due."""

    message_id: str
    journal_position: int
    state: int
    journal_time: datetime
    deadline: datetime


@dataclass(frozen=True)
class AckResult:
    """The gateway journaled the acknowledgement message (it is delivered afterwards)."""

    ack_message_id: str
    journal_position: int


DEFAULT_RETRY_WINDOW_S = 15.0


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed call is retried (UNAVAILABLE; DEADLINE_EXCEEDED too on idempotent calls).

    Retries go on while a new attempt would start within `window_s` seconds of the first one
    (0: never retry) and, if `attempts` is set, up to that many attempts in all. The backoff
    doubles from `initial_s` up to `max_s`, each delay drawn from its upper half ("equal
    jitter") so that clients spread out but always back off. The default window outlasts a
    gateway restarted by its supervisor (back in 1-3 s after a SIGKILL)."""

    window_s: float = DEFAULT_RETRY_WINDOW_S
    initial_s: float = 0.1
    max_s: float = 2.0
    multiplier: float = 2.0
    attempts: int | None = None

    def __post_init__(self) -> None:
        if self.window_s < 0 or self.initial_s <= 0 or self.max_s < self.initial_s:
            raise ValueError("RetryPolicy needs window_s >= 0 and 0 < initial_s <= max_s")
        if self.multiplier < 1 or (self.attempts is not None and self.attempts < 1):
            raise ValueError("RetryPolicy needs multiplier >= 1 and attempts >= 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (0-based)."""
        cap = min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 32))
        return cap / 2 + random.uniform(0, cap / 2)

    def allows(self, attempt: int, elapsed_s: float) -> bool:
        """Whether attempt number `attempt` (0-based) may start `elapsed_s` seconds after the
        first one began."""
        if self.attempts is not None and attempt >= self.attempts:
            return False
        return elapsed_s <= self.window_s


class OperatorClient:
    """An operator's connection to its own party's gateway."""

    def __init__(
        self,
        address: str,
        *,
        cert: Path,
        key: Path,
        ca: Path,
        party: str,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        options: Sequence[tuple[str, int | str]] = (),
        on_retry: Callable[[ClientError], Awaitable[None]] | None = None,
    ) -> None:
        """`party` is the gateway's party: its server name is pinned to that party's gateway,
        and `ca` (that party's CA certificate) is the only root trusted. Reads the certificate
        files now, so a missing file fails here (`ConfigError`), not at the first call.
        `on_retry(error)` is awaited before the first retry of each call and may raise to stop
        retrying (the CLI checks there whether a certificate is the problem).

        `address` may list an active/standby pair, `"host1:port,host2:port"`: calls go to the
        first; a call that fails UNAVAILABLE (the gateway is down, or is a standby) is retried
        on the next one, in order and round again, within the retry policy."""
        self.address = address
        self.addresses = [a.strip() for a in address.split(",") if a.strip()] or [address]
        self._current = 0  # the address in use
        self._retired: list[grpc.aio.Channel] = []  # channels of addresses left, closed at close()
        self._retired_stubs: list[Any] = []
        self.party = party
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._credentials = credentials(Path(cert), Path(key), Path(ca))
        self._options = tuple(options)
        self._on_retry = on_retry
        self._channel: grpc.aio.Channel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stub: operator_pb2_grpc.OperatorServiceAsyncStub | None = None
        self._peer_party: str | None = None

    @classmethod
    def from_pki(
        cls,
        pki: Path,
        party: str,
        operator: str = "watch-1",
        *,
        address: str,
        timeout: float = DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
    ) -> OperatorClient:
        """A client for operator `operator` of `party`, with its files from a PKI directory
        made by `hotline certs init` (`<pki>/<party>/operators/<operator>.crt` ...)."""
        try:
            paths = PartyPaths.of(Path(pki), party)
            cert, key = paths.operator_cert(operator), paths.operator_key(operator)
        except CertsError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            address,
            cert=cert,
            key=key,
            ca=paths.ca_cert,
            party=party,
            timeout=timeout,
            retry=retry,
        )

    def __repr__(self) -> str:
        return f"OperatorClient({self.address!r}, party={self.party!r})"

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> OperatorClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (calls in progress are cancelled). The client may be reused."""
        channel, self._channel, self._stub = self._channel, None, None
        retired, self._retired = self._retired, []
        for old in [*retired, channel]:
            if old is not None:
                await old.close()

    def _service(self) -> operator_pb2_grpc.OperatorServiceAsyncStub:
        loop = asyncio.get_running_loop()
        if self._stub is None or self._loop is not loop:
            # A channel is bound to the loop that made it; a new loop needs a new channel.
            self._channel = secure_channel(
                self.addresses[self._current],
                self._credentials,
                server_party=self.party,
                options=self._options,
            )
            self._loop = loop
            self._stub = operator_pb2_grpc.OperatorServiceStub(self._channel)
        return self._stub

    async def _call(
        self,
        rpc: Callable[..., Awaitable[R]],
        request: Message,
        timeout: float | None = None,
        *,
        idempotent: bool = True,
    ) -> R:
        """One unary call: a deadline per attempt; UNAVAILABLE (and DEADLINE_EXCEEDED when the
        call is idempotent) retried with the same request within the retry window; errors
        translated. The first retry of a call is logged as one WARNING line, without a
        traceback: a gateway restarting is an expected fault, not a bug."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                result = await rpc(
                    request,
                    timeout=self.timeout if timeout is None else timeout,
                    metadata=trace_metadata(),
                )
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
            else:
                if attempt:
                    log.info("gateway at %s answered after %d retries", self.address, attempt)
                return result
            retryable = error.retryable or (idempotent and isinstance(error, Timeout))
            delay = self.retry.delay(attempt)
            attempt += 1
            if not retryable or not self.retry.allows(attempt, time.monotonic() - started + delay):
                raise error
            rpc = self._fail_over(rpc)
            if attempt == 1:
                if self._on_retry is not None:
                    await self._on_retry(error)
                log.warning(
                    "gateway at %s: %s; retrying the same request for up to %g s",
                    self.address,
                    error.code.name if error.code is not None else type(error).__name__,
                    self.retry.window_s,
                )
            await asyncio.sleep(delay)

    def _next_address(self) -> None:
        """Leave the address in use for the next one (several addresses only)."""
        if len(self.addresses) < 2:
            return
        self._current = (self._current + 1) % len(self.addresses)
        if self._channel is not None:
            self._retired.append(self._channel)  # closed at close(), after its calls
        self._channel, self._stub = None, None

    def _fail_over(self, rpc: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        """After UNAVAILABLE, with several addresses: move on to the next one (unless another
        call already did), and return `rpc` on the address now in use."""
        if len(self.addresses) < 2 or self._stub is None:
            return rpc
        current = self._stub
        if any(method is rpc for method in vars(current).values()):
            self._next_address()
        for old in (current, *self._retired_stubs):
            for name, method in vars(old).items():
                if method is rpc:
                    self._retired_stubs = [*self._retired_stubs[-7:], current]
                    return cast(Callable[..., Awaitable[R]], getattr(self._service(), name))
        return rpc

    # ------------------------------------------------------------------ sending

    async def send(self, envelope: Envelope) -> SendResult:
        """Send an envelope as it is (a `message_id` is chosen here if it has none, so that a
        retry is recognised by the gateway). Returns once the gateway has journaled it."""
        request = operator_pb2.SendRequest()
        request.envelope.CopyFrom(envelope)
        if not request.envelope.message_id:
            request.envelope.message_id = new_message_id()
        try:
            response = await self._call(self._service().Send, request)
        except ClientError as exc:
            # whoever retries after us must reuse this id, or the gateway may send it twice
            exc.message_id = exc.message_id or request.envelope.message_id
            raise
        return _send_result(response)

    async def send_many(
        self, envelopes: Sequence[Envelope], *, batch_size: int = SEND_BATCH_MAX
    ) -> list[SendResult | ClientError]:
        """Send many envelopes, up to `batch_size` (at most 256) per `SendBatch` call.

        One result per envelope, in order: its `SendResult`, or the `ClientError` that `send`
        would have raised for it alone (one refused envelope does not stop the others). Each
        batch is journaled in one commit; within a precedence, messages travel in this order.
        An error of a whole call (rate limit, outbox full, gateway unreachable) is raised, and
        the envelopes of earlier calls stay sent: retrying is safe (ids are set here).
        """
        if not 1 <= batch_size <= SEND_BATCH_MAX:
            raise ValueError(f"batch_size must be 1..{SEND_BATCH_MAX}")
        results: list[SendResult | ClientError] = []
        for start in range(0, len(envelopes), batch_size):
            request = operator_pb2.SendBatchRequest()
            for envelope in envelopes[start : start + batch_size]:
                added = request.envelopes.add()
                added.CopyFrom(envelope)
                if not added.message_id:
                    added.message_id = new_message_id()
            response = await self._call(self._service().SendBatch, request)
            results += _results_of(response.results)
        return results

    def stream(self) -> SendStream:
        """A long-lived `SendStream` to the gateway: `await stream.send(envelope)` sends one
        message with no call set up for it (the lowest latency one at a time); sends from
        several tasks are pipelined in order. Close it with `await stream.close()` (or use it as
        an async context manager)."""
        return SendStream(self)

    async def send_body(
        self,
        body: Message,
        *,
        precedence: int,
        status: int = common_pb2.MESSAGE_STATUS_EXERCISE,
        language: str = "en",
        recipient: str | None = None,
        classification: int = common_pb2.CLASSIFICATION_UNCLASSIFIED,
        releasable_to: Sequence[str] | None = None,
        caveat: str = "",
        action: int = common_pb2.ACTION_NEW,
        references: Sequence[str] = (),
        message_id: str | None = None,
        expire_time: datetime | None = None,
    ) -> SendResult:
        """Wrap a body (see `client.bodies`) in an envelope and send it.

        The body goes into the `Envelope.body` member of its type. The recipient defaults to
        the peer party (asked of the gateway once), releasability to both parties, and the
        message id to a new UUIDv7, chosen once and kept across this call's own retries. A
        script that retries on its own passes the same `message_id` each time (choose it with
        `hotline.ids.new_message_id()` before the loop, or take it from the error's
        `message_id`), so the gateway journals and sends the message once. `sender_party`, `originator` and `create_time` are left for
        the gateway to fill from our certificate and its clock.
        """
        member = body_field(body)
        if member == "acknowledgement":
            raise TypeError("acknowledgements are sent with acknowledge(), not send_body()")
        if recipient is None:
            recipient = await self.peer_party()
        envelope = envelope_pb2.Envelope(
            message_id=message_id or new_message_id(),
            recipient_party=recipient,
            status=cast(Any, status),
            precedence=cast(Any, precedence),
            language=language,
            action=cast(Any, action),
            references=list(references),
        )
        envelope.handling.classification = cast(Any, classification)
        envelope.handling.releasable_to.extend(
            [self.party, recipient] if releasable_to is None else list(releasable_to)
        )
        if caveat:
            envelope.handling.caveat = caveat
        getattr(envelope, member).CopyFrom(body)
        if expire_time is not None:
            envelope.expire_time.CopyFrom(timestamp(expire_time))
        return await self.send(envelope)

    async def acknowledge(
        self,
        message_id: str,
        level: int,
        *,
        remarks: str | common_pb2.LocalizedText | None = None,
        reason: str | common_pb2.LocalizedText | None = None,
        language: str = "en",
        ack_message_id: str | None = None,
    ) -> AckResult:
        """Acknowledge an inbound message at `level` (ROGER, WILCO, UNABLE with a `reason`,
        SAY_AGAIN). The acknowledgement's id is chosen here, so a retry is not a second ack."""
        request = operator_pb2.AcknowledgeRequest(
            message_id=message_id,
            level=cast(Any, level),
            ack_message_id=ack_message_id or new_message_id(),
        )
        if remarks is not None:
            request.remarks.CopyFrom(
                localized(remarks, language) if isinstance(remarks, str) else remarks
            )
        if reason is not None:
            request.reason.CopyFrom(
                localized(reason, language) if isinstance(reason, str) else reason
            )
        response = await self._call(self._service().Acknowledge, request)
        return AckResult(response.ack_message_id, response.journal_position)

    # ------------------------------------------------------------------ reading

    async def resolve_id(self, text: str, *, search: int = 5000) -> str:
        """The full message id that `text` stands for: a full id as it is, or a short unique
        part of one among the latest `search` messages, either its start (`0192f3c4`) or,
        after "…" or "...", its end as `hotline watch` and the demo show it (`…440eeac7`).
        Raises `NotFound` if none matches and `InvalidMessage` if several do."""
        if is_message_id(text):
            return text
        parsed = id_part(text)
        if parsed is None:
            raise InvalidMessage(f"{text!r} is not a message id or a short part of one")
        part, tail = parsed
        matches = [
            r.envelope.message_id
            for r in await self.list(limit=search)
            if (
                r.envelope.message_id.lower().endswith(part)
                if tail
                else r.envelope.message_id.lower().startswith(part)
            )
        ]
        if not matches:
            raise NotFound(
                f"no message id {'ends' if tail else 'starts'} with {part!r} "
                f"among the latest {search} messages"
            )
        if len(set(matches)) > 1:
            raise InvalidMessage(
                f"{text!r} matches {len(set(matches))} messages ({', '.join(sorted(set(matches))[:3])}"
                f"{', ...' if len(set(matches)) > 3 else ''}): give more of the id"
            )
        return matches[0]

    async def get(self, message_id: str) -> MessageRecord:
        """One message, inbound or outbound, as it stands now (NotFound if not journaled)."""
        response = await self._call(
            self._service().GetMessage, operator_pb2.GetMessageRequest(message_id=message_id)
        )
        return response.message

    async def list(
        self,
        *,
        direction: int = 0,
        body_types: Sequence[int] = (),
        precedences: Sequence[int] = (),
        states: Sequence[int] = (),
        status: int = 0,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        overdue_only: bool = False,
        page_size: int = 100,
        limit: int | None = None,
    ) -> builtins.list[MessageRecord]:
        """Messages matching every filter given, newest first, following pages up to `limit`."""
        if limit is not None and limit <= 0:
            return []
        page_size = min(max(page_size, 1), MAX_PAGE_SIZE)
        request = operator_pb2.ListMessagesRequest(
            page_size=min(page_size, limit) if limit else page_size,
            direction=cast(Any, direction),
            body_types=cast(Any, list(body_types)),
            precedences=cast(Any, list(precedences)),
            states=cast(Any, list(states)),
            status=cast(Any, status),
            overdue_only=overdue_only,
        )
        if start_time is not None:
            request.start_time.CopyFrom(timestamp(start_time))
        if end_time is not None:
            request.end_time.CopyFrom(timestamp(end_time))
        records: builtins.list[MessageRecord] = []
        seen_tokens: set[str] = set()
        while True:
            response = await self._call(self._service().ListMessages, request)
            records.extend(response.messages)
            if limit is not None and len(records) >= limit:
                return records[:limit]
            token = response.next_page_token
            if not token or token in seen_tokens:  # a repeated token would loop forever
                return records
            seen_tokens.add(token)
            request.page_token = token

    async def link_status(self) -> GetLinkStatusResponse:
        """Both directions of the peer link, and the number of overdue messages."""
        status = await self._call(
            self._service().GetLinkStatus, operator_pb2.GetLinkStatusRequest()
        )
        if status.peer_party:
            self._peer_party = status.peer_party
        return status

    async def peer_party(self) -> str:
        """The other party's code, as the gateway knows it (asked once, then remembered)."""
        if self._peer_party is None:
            await self.link_status()
        if not self._peer_party:
            raise ClientError("the gateway did not say who its peer party is")
        return self._peer_party

    # ------------------------------------------------------------------ events

    async def watch(
        self,
        after_cursor: int = 0,
        kinds: Sequence[int] = (),
        *,
        reconnect: bool = True,
        on_reconnect: Callable[[ClientError, float], None] | None = None,
        originators: Sequence[str] = (),
    ) -> AsyncGenerator[Event, None]:
        """Events after `after_cursor` (0: from the start of the journal), then live ones;
        with `originators` (SPIFFE IDs), only the message events about messages they originated
        (and every event about no message: `WatchRequest.originators`).

        With `reconnect`, a lost stream (UNAVAILABLE, the gateway ending it while shutting down,
        or RESOURCE_EXHAUSTED because we fell behind its buffer) is reopened after a backoff
        from the cursor of the last event yielded, without end: nothing is missed and nothing
        repeated. `on_reconnect(error, delay_s)` is told
        each time. Any other failure is raised. Stop by leaving the loop (or cancelling).
        """
        request = operator_pb2.WatchRequest(
            after_cursor=after_cursor, kinds=cast(Any, kinds), originators=list(originators)
        )
        failures = 0
        while True:
            stub = self._service()
            call = stub.Watch(request, metadata=trace_metadata())
            try:
                async for response in call:
                    failures = 0
                    for event in response.events:  # one commit's events, in cursor order
                        if event.cursor <= request.after_cursor:
                            continue  # never repeat an event already yielded
                        request.after_cursor = event.cursor
                        yield event
                error: ClientError = Unavailable("the gateway ended the watch stream")
            except grpc.aio.AioRpcError as exc:
                error = from_rpc_error(exc)
            finally:
                call.cancel()
            if not reconnect or not (error.retryable or isinstance(error, RateLimited)):
                raise error
            if error.retryable and not isinstance(error, RateLimited) and stub is self._stub:
                self._next_address()  # an active/standby pair: try the other gateway
            delay = self.retry.delay(failures)
            failures += 1
            if on_reconnect is not None:
                on_reconnect(error, delay)
            await asyncio.sleep(delay)

    async def wait_for(
        self, message_id: str, state: int, *, timeout: float = 30.0
    ) -> MessageRecord:
        """Wait until a message has reached `state` (JOURNALED, DELIVERED or ACKNOWLEDGED) and
        return it as it then stood.

        Follows the message on `watch` from its own journal position (no polling), so an update
        that lands while we start is not missed. A message not yet in this gateway's journal
        (an inbound one still on its way) is waited for from the newest message on. Raises
        `MessageRejected` if the message was refused, and `Timeout` after `timeout` seconds.
        """
        if state not in (JOURNALED, DELIVERED, ACKNOWLEDGED):
            raise ValueError(f"cannot wait for state {state_name(state)}")
        current = "not in the journal"
        try:
            async with asyncio.timeout(timeout):
                try:
                    record = await self.get(message_id)
                except NotFound:
                    # Anything journaled from now on lies after the newest message we can see
                    # (or is that message, if it landed in between): follow from just before it.
                    newest = await self.list(limit=1)
                    after = newest[0].journal_position - 1 if newest else 0
                else:
                    current = state_name(record.state)
                    if _reached(record, state):
                        return record
                    after = record.journal_position
                events = self.watch(after, _PROGRESS_KINDS)
                async with contextlib.aclosing(events):
                    async for event in events:
                        if event.message_id == message_id and event.HasField("message"):
                            record = event.message
                        elif _acknowledges(event, message_id):
                            record = await self.get(message_id)
                        else:
                            continue
                        current = state_name(record.state)
                        if _reached(record, state):
                            return record
        except TimeoutError:
            raise Timeout(
                f"{message_id} did not reach {state_name(state)} within {timeout:g} s "
                f"(it is {current})"
            ) from None
        raise AssertionError("unreachable: watch reconnects until cancelled")


def id_part(text: str) -> tuple[str, bool] | None:
    """A short id as typed: (its hex part, whether it is the end of the id: "…" or "..." in
    front), or None if it cannot be part of a message id (fewer than 4 hex digits)."""
    tail = text.startswith(("…", "..."))
    part = text.lstrip(".…").strip().lower()
    if len(part.replace("-", "")) < 4 or not all(c in "0123456789abcdef-" for c in part):
        return None
    return part, tail


def _acknowledges(event: Event, message_id: str) -> bool:
    """Whether the event is one of our operators' acknowledgements of `message_id`."""
    envelope = event.message.envelope
    return (
        envelope.WhichOneof("body") == "acknowledgement"
        and envelope.acknowledgement.acknowledged_message_id == message_id
    )


def _reached(record: MessageRecord, state: int) -> bool:
    if record.state == REJECTED:
        reason = peer_link_pb2.RejectionReason.Name(record.rejection_reason).removeprefix(
            "REJECTION_REASON_"
        )
        raise MessageRejected(
            f"{record.envelope.message_id} was refused by the receiving gateway: {reason}"
            + (f": {record.rejection_detail}" if record.rejection_detail else ""),
            message_id=record.envelope.message_id,
            reason=reason,
        )
    return int(record.state) >= state


def _results_of(results: Iterable[operator_pb2.SendResult]) -> list[SendResult | ClientError]:
    """A SendBatch's or SendStream's results: each a `SendResult` or the `ClientError` that a
    lone `send` would have raised."""
    out: list[SendResult | ClientError] = []
    for result in results:
        if result.WhichOneof("outcome") == "error":
            code = _STATUS_BY_VALUE.get(result.error.code, grpc.StatusCode.UNKNOWN)
            out.append(from_status(code, result.error.message))
        else:
            out.append(_send_result(result.sent))
    return out


def _send_result(response: operator_pb2.SendResponse) -> SendResult:
    return SendResult(
        message_id=response.message_id,
        journal_position=response.journal_position,
        state=int(response.state),
        journal_time=_datetime(response.journal_time),
        deadline=_datetime(response.acknowledge_deadline_time),
    )


class SendStream:
    """One long-lived `SendStream` call: requests go out in order, answers come back in order.

    `send(envelope)` / `send_many(envelopes)` resolve with the same results as the client's
    `send` / `send_many` (a refused envelope raises, resp. is returned as, its `ClientError`).
    If the stream fails, every request awaiting an answer fails with the translated error and
    the next send opens a new stream; ids are set before sending, so a retry is idempotent.
    """

    def __init__(self, client: OperatorClient) -> None:
        self._client = client
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: collections.deque[asyncio.Future[list[SendResult | ClientError]]] = (
            collections.deque()
        )
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> SendStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def send(self, envelope: Envelope) -> SendResult:
        [result] = await self.send_many([envelope])
        if isinstance(result, ClientError):
            raise result
        return result

    async def send_many(self, envelopes: Sequence[Envelope]) -> list[SendResult | ClientError]:
        if not 1 <= len(envelopes) <= SEND_BATCH_MAX:
            raise ValueError(f"1..{SEND_BATCH_MAX} envelopes per request")
        request = operator_pb2.SendStreamRequest()
        for envelope in envelopes:
            added = request.envelopes.add()
            added.CopyFrom(envelope)
            if not added.message_id:
                added.message_id = new_message_id()
        answer: asyncio.Future[list[SendResult | ClientError]] = (
            asyncio.get_running_loop().create_future()
        )
        async with self._lock:  # one write at a time, answers queued in the same order
            if self._call is None:
                self._open()
            self._waiting.append(answer)
            try:
                await self._call.write(request)
            except grpc.aio.AioRpcError as exc:
                self._fail(from_rpc_error(exc))
        return await answer

    def _open(self) -> None:
        self._call = self._client._service().SendStream(metadata=trace_metadata())
        self._reader = asyncio.ensure_future(self._read(self._call))

    async def _read(self, call: Any) -> None:
        try:
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise Unavailable("the gateway ended the send stream")
                results = _results_of(response.results)
                if self._waiting:
                    answer = self._waiting.popleft()
                    if not answer.done():
                        answer.set_result(results)
        except grpc.aio.AioRpcError as exc:
            self._fail(from_rpc_error(exc), call)
        except ClientError as exc:
            self._fail(exc, call)
        except asyncio.CancelledError:
            self._fail(Unavailable("the send stream was closed"), call)
            raise

    def _fail(self, error: ClientError, call: Any = None) -> None:
        if call is None or call is self._call:
            self._call = None
        while self._waiting:
            answer = self._waiting.popleft()
            if not answer.done():
                answer.set_exception(error)

    async def close(self) -> None:
        """Wait (up to the client's timeout) for the answers still due, then end the stream."""
        if self._waiting:
            await asyncio.wait(list(self._waiting), timeout=self._client.timeout)
        call, reader = self._call, self._reader
        self._call = self._reader = None
        if call is not None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await call.done_writing()
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if call is not None:
            call.cancel()
