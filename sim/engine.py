"""The simulator's engine: two parties' operator connections, message tracking, scripted watch.

Both scenario replay (`sim.runner`) and synthetic load (`sim.load`) run on this engine:

* it holds, per party, operator clients to that party's gateway (several for load, so the
  operator API's per-connection stream limit and per-operator rate limit are not the bottleneck);
* every message the simulator sends is *tracked* from its planned submit time: `send` records
  JOURNALED when Send returns; a Watch stream on each gateway reports DELIVERED and
  ACKNOWLEDGED at the sender (the event's arrival in this process is the time taken);
* the *scripted responder* watches the receiving gateway's EVENT_KIND_MESSAGE_RECEIVED events,
  and answers each tracked message at the level and after the think-time drawn for it when it
  was planned (think-times wait on the virtual clock, so they scale with `--speed`);
* escalations, re-alerts, rejections and link up/down events are counted as they stream by.

Only messages this run sent are answered or measured: events about anything else on the
gateways (earlier runs, other operators, scheduled link tests) are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.errors import ClientError, RateLimited, Timeout, Unavailable
from client.operator import OperatorClient
from hotline.display import escaped
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2
from sim.clock import VirtualClock
from sim.metrics import Metrics

log = logging.getLogger("hotline.sim")

EK = operator_pb2
WATCHED_KINDS = (
    EK.EVENT_KIND_MESSAGE_RECEIVED,
    EK.EVENT_KIND_MESSAGE_DELIVERED,
    EK.EVENT_KIND_MESSAGE_ACKNOWLEDGED,
    EK.EVENT_KIND_MESSAGE_REJECTED,
    EK.EVENT_KIND_ESCALATION,
    EK.EVENT_KIND_REALERT,
    EK.EVENT_KIND_MESSAGE_EXPIRED,
    EK.EVENT_KIND_LINK_UP,
    EK.EVENT_KIND_LINK_DOWN,
    EK.EVENT_KIND_CHECKPOINT,
)
LEVELS = {
    "roger": bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER,
    "wilco": bodies_pb2.ACKNOWLEDGEMENT_LEVEL_WILCO,
    "unable": bodies_pb2.ACKNOWLEDGEMENT_LEVEL_UNABLE,
    "say_again": bodies_pb2.ACKNOWLEDGEMENT_LEVEL_SAY_AGAIN,
}
LEVEL_NAMES: dict[int, str] = {int(v): k.upper() for k, v in LEVELS.items()}
RETRYABLE = (Unavailable, RateLimited, Timeout)

# What the scripted watch officer says when it cannot comply or did not understand, in the
# responding party's language (the ORIGINAL) with an English translation.
_REASONS: dict[str, dict[str, str]] = {
    "unable": {
        "ja": "現在、当該海域に対応可能な部隊がないため、対応できない。",
        "zh-Hant": "目前該海域無可用單位，無法配合。",
        "en": "Unable to comply: no unit is available in the area at present.",
    },
    "say_again": {
        "ja": "電文の一部が不明瞭。再送を求める。",
        "zh-Hant": "電文部分內容不清，請重發。",
        "en": "Part of the message is unclear; say again.",
    },
}
PARTY_LANGUAGE = {"JP": "ja", "TW": "zh-Hant"}


@dataclass
class Tracked:
    """One message the simulator sends, and everything measured about it."""

    message_id: str
    sender: str
    recipient: str
    body: str
    precedence: int
    planned: float  # time.monotonic() the send was due (latencies are measured from it)
    label: str = ""
    answer: str = "none"  # the level the responder will answer with ("none": no answer)
    think_s: float = 0.0  # scenario seconds the responder waits before answering
    ack_id: str = ""  # the acknowledgement's message id, chosen in advance (idempotent retry)
    submit: float | None = None  # when Send was first called
    journaled: float | None = None
    delivered: float | None = None
    acknowledged: float | None = None
    ack_level: int = 0
    received: float | None = None  # the responder saw it arrive
    ack_called: float | None = None  # the responder called Acknowledge (after its think time)
    resend_of: str = ""  # the message this one says again (after a SAY_AGAIN answer)
    ack_returned: float | None = None  # the responder's Acknowledge returned
    rejected: bool = False
    error: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)  # set once Send succeeded or failed
    attempts: int = 0
    on_answer: Callable[[Tracked], None] | None = None
    # called with the stage reached: journaled, failed, delivered, acknowledged, ack_returned,
    # ack_failed, rejected (the scenario runner's triggers and max-speed ordering use it)
    on_stage: Callable[[Tracked, str], None] | None = None
    # at max speed: the scenario time the answer is due (the clock orders it among the events)
    answer_at: float | None = None
    # the gRPC status the scenario expects Send to refuse this with ("ANY": any), "" none
    expected_refusal: str = ""
    refused_as_expected: bool = False
    event_index: int = -1  # the scenario event it was sent for (-1: none, e.g. load)

    @property
    def expects_ack(self) -> bool:
        return self.answer != "none"

    def reached(self, stage: str) -> None:
        if self.on_stage is not None:
            self.on_stage(self, stage)

    @property
    def settled(self) -> bool:
        """Nothing more is awaited for this message."""
        if self.error or self.rejected:
            return True
        if self.delivered is None:
            return False
        return not self.expects_ack or self.acknowledged is not None


@dataclass
class Side:
    """One party's gateway as the simulator reaches it."""

    party: str
    address: str
    clients: list[OperatorClient]
    journal: Path | None = None
    _next: int = 0

    @property
    def watcher(self) -> OperatorClient:
        return self.clients[0]

    def sender(self) -> OperatorClient:
        """Round-robin over the side's operator clients."""
        client = self.clients[self._next % len(self.clients)]
        self._next += 1
        return client


@dataclass
class Progress:
    planned: int = 0
    sent: int = 0
    journaled: int = 0
    delivered: int = 0
    acknowledged: int = 0
    errors: int = 0


@dataclass
class Engine:
    sides: dict[str, Side]
    clock: VirtualClock
    metrics: Metrics
    send_timeout_s: float = 30.0
    start_wall_ns: int = 0
    start_mono: float = 0.0
    tracked: dict[str, Tracked] = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)
    cursors: dict[str, int] = field(default_factory=dict)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _watchers: list[asyncio.Task[None]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    acks_sent: int = 0
    _acks_pending: int = 0
    # the wall time (ns) of the latest checkpoint each party witnessed of its peer
    checkpoints: dict[str, int] = field(default_factory=dict)
    # called with (direction "A->B", up) for each link change reported after the start
    link_listeners: list[Callable[[str, bool], None]] = field(default_factory=list)
    # watch only the message events about messages these operators (SPIFFE IDs) originated:
    # a load worker's own messages and its peer-side twin's (WatchRequest.originators)
    originators: tuple[str, ...] = ()

    @property
    def parties(self) -> tuple[str, str]:
        a, b = self.sides
        return a, b

    def peer_of(self, party: str) -> str:
        a, b = self.parties
        return b if party == a else a

    def elapsed(self, mono: float | None = None) -> float:
        return (time.monotonic() if mono is None else mono) - self.start_mono

    # ------------------------------------------------------------------ lifecycle

    async def start(self, cursors: dict[str, int] | None = None) -> None:
        """Begin watching both gateways from `cursors` (default: their current heads)."""
        self.start_wall_ns = time.time_ns()
        self.start_mono = time.monotonic()
        for party, side in self.sides.items():
            cursor = (cursors or {}).get(party)
            if cursor is None:
                cursor = await head_cursor(side)
            self.cursors[party] = cursor
            self._watchers.append(
                asyncio.create_task(self._watch(side, cursor), name=f"watch-{party}")
            )

    async def stop(self) -> None:
        for task in self._watchers:
            task.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._watchers, *self._tasks, return_exceptions=True)
        self._watchers.clear()
        self._tasks.clear()

    def spawn(self, coro: Awaitable[Any], name: str = "") -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("simulator task %s failed", task.get_name(), exc_info=task.exception())
            self.metrics.error(f"internal: {type(task.exception()).__name__}")

    def running(self, *prefixes: str) -> int:
        """How many of the engine's tasks whose name starts with one of `prefixes` still run."""
        return sum(1 for t in self._tasks if t.get_name().startswith(prefixes))

    # ------------------------------------------------------------------ sending

    def track(self, tracked: Tracked) -> Tracked:
        self.tracked[tracked.message_id] = tracked
        self.progress.planned += 1
        return tracked

    async def send(
        self,
        tracked: Tracked,
        envelope: envelope_pb2.Envelope,
        client: OperatorClient | None = None,
    ) -> bool:
        """Submit one envelope (its id already set and tracked); retry what is retryable."""
        side = self.sides[tracked.sender]
        client = client or side.sender()
        deadline = time.monotonic() + self.send_timeout_s
        delay = 0.05
        tracked.submit = time.monotonic()
        self.progress.sent += 1
        while True:
            tracked.attempts += 1
            try:
                await client.send(envelope)
                break
            except RETRYABLE as exc:
                if time.monotonic() + delay > deadline:
                    return self._failed(tracked, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except ClientError as exc:
                return self._failed(tracked, exc)
        self._journaled(tracked, time.monotonic())
        self._changed.set()
        return True

    def _journaled(self, tracked: Tracked, now: float) -> None:
        tracked.journaled = now
        tracked.done.set()
        self.progress.journaled += 1
        self.metrics.count("journaled")
        self.metrics.record(
            "journaled",
            tracked.body,
            tracked.precedence,
            now - tracked.planned,
            self.elapsed(tracked.planned),
        )
        tracked.reached("journaled")

    async def send_many(
        self,
        items: list[tuple[Tracked, envelope_pb2.Envelope]],
        client: OperatorClient | None = None,
    ) -> None:
        """Submit envelopes of one sender in one `SendBatch` (ids set and tracked); a batch
        refused as a whole for a retryable reason is retried, each envelope's own refusal is
        final for it, as with `send`."""
        if not items:
            return
        side = self.sides[items[0][0].sender]
        client = client or side.sender()
        deadline = time.monotonic() + self.send_timeout_s
        delay = 0.05
        submit = time.monotonic()
        for tracked, _ in items:
            tracked.submit = submit
            self.progress.sent += 1
        while True:
            for tracked, _ in items:
                tracked.attempts += 1
            try:
                results = await client.send_many([envelope for _, envelope in items])
                break
            except RETRYABLE as exc:
                if time.monotonic() + delay > deadline:
                    for tracked, _ in items:
                        self._failed(tracked, exc)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except ClientError as exc:
                for tracked, _ in items:
                    self._failed(tracked, exc)
                return
        now = time.monotonic()
        for (tracked, _), result in zip(items, results, strict=True):
            if isinstance(result, ClientError):
                self._failed(tracked, result)
            else:
                self._journaled(tracked, now)
        self._changed.set()

    def _failed(self, tracked: Tracked, exc: ClientError) -> bool:
        code = exc.code.name if exc.code is not None else type(exc).__name__
        tracked.error = f"{code}: {escaped(exc.detail)}"
        tracked.done.set()
        if tracked.expected_refusal in (code, "ANY"):
            # a refusal the scenario asked for (a reference to an unknown id, say): not an error
            tracked.refused_as_expected = True
            self.metrics.count("refused_as_expected")
        else:
            self.metrics.error(f"send {code}")
            self.progress.errors += 1
            log.warning(
                "send of %s %s failed: %s", tracked.body, tracked.message_id, escaped(str(exc))
            )
        tracked.reached("failed")
        self._changed.set()
        return False

    # ------------------------------------------------------------------ responding

    async def _acknowledge(self, tracked: Tracked) -> None:
        try:
            await self._acknowledge_once(tracked)
        finally:
            self._acks_pending -= 1
            self._changed.set()
            tracked.reached("ack_returned" if tracked.ack_returned is not None else "ack_failed")

    async def _acknowledge_once(self, tracked: Tracked) -> None:
        side = self.sides[tracked.recipient]
        tracked.ack_called = time.monotonic()
        if tracked.received is not None:
            self.metrics.record(
                "think", tracked.body, tracked.precedence, tracked.ack_called - tracked.received
            )
        level = LEVELS[tracked.answer]
        language = PARTY_LANGUAGE.get(side.party, "en")
        reason = None
        if tracked.answer in _REASONS:
            texts = _REASONS[tracked.answer]
            reason = _localized({language: texts.get(language, texts["en"]), "en": texts["en"]})
            if language not in texts:
                language = "en"
        deadline = time.monotonic() + self.send_timeout_s
        delay = 0.05
        while True:
            try:
                await side.watcher.acknowledge(
                    tracked.message_id,
                    level,
                    reason=reason,
                    language=language if reason is not None else "en",
                    ack_message_id=tracked.ack_id,
                )
                break
            except RETRYABLE as exc:
                if time.monotonic() + delay > deadline:
                    self.metrics.error(f"acknowledge {type(exc).__name__}")
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except ClientError as exc:
                self.metrics.error(f"acknowledge {exc.code.name if exc.code else exc}")
                log.warning("acknowledge of %s failed: %s", tracked.message_id, escaped(str(exc)))
                return
        tracked.ack_returned = time.monotonic()
        self.acks_sent += 1
        self.metrics.count("acks_sent")
        if tracked.acknowledged is not None:  # the ACKNOWLEDGED event overtook this reply
            self._record_ack_return(tracked)

    def _on_received(self, tracked: Tracked) -> None:
        if tracked.received is not None:
            return
        tracked.received = time.monotonic()
        if not tracked.expects_ack:
            return
        self._acks_pending += 1

        def answer() -> None:
            self.spawn(self._acknowledge(tracked), f"ack-{tracked.message_id[:8]}")

        if tracked.answer_at is not None and self.clock.max_speed:
            self.clock.call_at(tracked.answer_at, answer)
        else:
            self.clock.call_later(tracked.think_s, answer)

    # ------------------------------------------------------------------ watching

    async def _watch(self, side: Side, cursor: int) -> None:
        try:
            async for event in side.watcher.watch(
                cursor, WATCHED_KINDS, reconnect=True, originators=self.originators
            ):
                self.cursors[side.party] = max(self.cursors[side.party], int(event.cursor))
                try:
                    self._on_event(side.party, event)
                except Exception:  # one bad event must not stop the measurements
                    log.exception("simulator: cannot handle event %s", event)
                    self.metrics.error("internal: event handling")
        except asyncio.CancelledError:
            raise
        except ClientError as exc:
            log.error("watch of %s ended: %s", side.party, escaped(str(exc)))
            self.metrics.error(f"watch {side.party} {type(exc).__name__}")

    def _on_event(self, party: str, event: operator_pb2.Event) -> None:
        now = time.monotonic()
        kind = event.kind
        if kind in (EK.EVENT_KIND_LINK_UP, EK.EVENT_KIND_LINK_DOWN):
            self._on_link(party, event)
            return
        if kind == EK.EVENT_KIND_CHECKPOINT:
            self.checkpoints[party] = max(
                self.checkpoints.get(party, 0), event.event_time.ToNanoseconds()
            )
            self._changed.set()
            return
        tracked = self.tracked.get(event.message_id)
        if tracked is None:
            return
        if kind == EK.EVENT_KIND_MESSAGE_RECEIVED and party == tracked.recipient:
            self._on_received(tracked)
        elif kind == EK.EVENT_KIND_MESSAGE_DELIVERED and party == tracked.sender:
            if tracked.delivered is None:
                tracked.delivered = now
                self.progress.delivered += 1
                self.metrics.count("delivered")
                self.metrics.record(
                    "delivered",
                    tracked.body,
                    tracked.precedence,
                    now - tracked.planned,
                    self.elapsed(tracked.planned),
                )
                tracked.reached("delivered")
        elif kind == EK.EVENT_KIND_MESSAGE_ACKNOWLEDGED and party == tracked.sender:
            level = int(event.message.acknowledgement.level)
            if tracked.acknowledged is not None and level != tracked.ack_level:
                # Answered again (ROGER, then WILCO): the latest stands, in the counts too;
                # the latency stays that of the first answer.
                self._count_level(tracked.ack_level, -1)
                tracked.ack_level = level
                self._count_level(level, +1)
            if tracked.acknowledged is None:
                # (The receipt's DELIVERED event may still trail the answer: the sender journals
                # the receipt and the answer in separate commits. It is measured when it comes.)
                tracked.acknowledged = now
                tracked.ack_level = level
                self._count_level(level, +1)
                self.progress.acknowledged += 1
                self.metrics.count("acknowledged")
                self.metrics.record(
                    "acknowledged",
                    tracked.body,
                    tracked.precedence,
                    now - tracked.planned,
                    self.elapsed(tracked.planned),
                )
                if tracked.ack_returned is not None:
                    self._record_ack_return(tracked)
                if tracked.ack_called is not None and tracked.received is not None:
                    think = tracked.ack_called - tracked.received
                    self.metrics.record(
                        "ack_system",
                        tracked.body,
                        tracked.precedence,
                        max(0.0, now - tracked.planned - think),
                    )
                if tracked.on_answer is not None:
                    tracked.on_answer(tracked)
                tracked.reached("acknowledged")
        elif kind == EK.EVENT_KIND_MESSAGE_REJECTED and party == tracked.sender:
            tracked.rejected = True
            self.metrics.count("rejected")
            tracked.reached("rejected")
            log.warning("%s was rejected: %s", tracked.message_id, escaped(event.detail))
        elif kind == EK.EVENT_KIND_ESCALATION and party == tracked.sender:
            self.metrics.overdue.add(tracked.message_id)
        elif kind == EK.EVENT_KIND_REALERT and party == tracked.recipient:
            self.metrics.realerts.add(tracked.message_id)
        elif kind == EK.EVENT_KIND_MESSAGE_EXPIRED:
            self.metrics.expired.add(tracked.message_id)
        self._changed.set()

    def _count_level(self, level: int, change: int) -> None:
        """`metrics.ack_levels` counts each message once, by its latest acknowledgement."""
        name = LEVEL_NAMES.get(level, "?")
        self.metrics.ack_levels[name] += change
        if self.metrics.ack_levels[name] <= 0:
            del self.metrics.ack_levels[name]

    def _record_ack_return(self, tracked: Tracked) -> None:
        assert tracked.acknowledged is not None
        assert tracked.ack_returned is not None
        self.metrics.record(
            "ack_return",
            tracked.body,
            tracked.precedence,
            max(0.0, tracked.acknowledged - tracked.ack_returned),
        )

    def _on_link(self, party: str, event: operator_pb2.Event) -> None:
        at_ns = event.event_time.ToNanoseconds()
        if at_ns < self.start_wall_ns:
            return
        peer = self.peer_of(party)
        if event.link == EK.LINK_DIRECTION_OUTBOUND:
            direction = f"{party}->{peer}"
        elif event.link == EK.LINK_DIRECTION_INBOUND:
            direction = f"{peer}->{party}"
        else:
            return
        at = at_ns / 1e9
        up = event.kind != EK.EVENT_KIND_LINK_DOWN
        if up:
            self.metrics.link_up(direction, at)
        else:
            self.metrics.link_down(direction, at)
        for listener in list(self.link_listeners):
            listener(direction, up)

    # ------------------------------------------------------------------ waiting

    def unsettled(self) -> list[Tracked]:
        return [t for t in self.tracked.values() if not t.settled]

    async def drain(self, timeout: float) -> bool:
        """Wait until every tracked message is settled (delivered and, if due, answered)."""
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            if not self.unsettled() and not self._pending_acks():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    def _pending_acks(self) -> bool:
        return self._acks_pending > 0

    async def warm_up(self) -> None:
        """Open every operator connection (TLS handshakes) before anything is measured."""
        calls = [client.link_status() for side in self.sides.values() for client in side.clients]
        await asyncio.gather(*calls, return_exceptions=True)

    async def wait_links_up(self, timeout: float = 15.0) -> bool:
        """Wait until both gateways report both link directions up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = [await side.watcher.link_status() for side in self.sides.values()]
            except ClientError:
                states = []
            if states and all(s.outbound.up and s.inbound.up for s in states):
                return True
            await asyncio.sleep(0.1)
        return False

    async def wait_checkpoints(self, after_ns: int, timeout: float) -> bool:
        """Wait until each party has witnessed a checkpoint of its peer's journal made after
        `after_ns` (wall time): the run's last entries are then covered by a checkpoint that
        the integrity check compares. False when `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while True:
            self._changed.clear()
            if all(self.checkpoints.get(party, 0) > after_ns for party in self.sides):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    def status_line(self) -> str:
        p = self.progress
        return (
            f"t={self.elapsed():7.1f}s  scenario={self.clock.now():8.1f}s  "
            f"sent {p.sent}/{p.planned}  journaled {p.journaled}  delivered {p.delivered}  "
            f"acked {p.acknowledged}  errors {p.errors}"
        )


async def head_cursor(side: Side) -> int:
    """Where a Watch of only new events starts: the journal's head (or its newest message)."""
    if side.journal is not None and side.journal.exists():
        from sim.integrity import head_position

        with contextlib.suppress(Exception):
            return head_position(side.journal)
    try:
        newest = await side.watcher.list(limit=1)
    except ClientError:
        return 0
    return int(newest[0].journal_position) if newest else 0


def _localized(texts: dict[str, str]) -> common_pb2.LocalizedText:
    """Variants in dict order: the first is the ORIGINAL, the others translations."""
    text = common_pb2.LocalizedText()
    for i, (language, value) in enumerate(texts.items()):
        text.variants.add(
            language=language,
            text=value,
            kind=common_pb2.TRANSLATION_KIND_ORIGINAL
            if i == 0
            else common_pb2.TRANSLATION_KIND_HUMAN_CONFIRMED,
        )
    return text


async def connect_side(
    party: str,
    address: str,
    pki: Path,
    operators: Sequence[str],
    *,
    journal: Path | None = None,
) -> Side:
    """Open one OperatorClient per operator name to `party`'s gateway at `address`."""
    clients: list[OperatorClient] = []
    try:
        for name in operators:
            client = OperatorClient.from_pki(pki, party, name, address=address)
            await client.__aenter__()
            clients.append(client)
    except BaseException:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)
        raise
    return Side(party, address, clients, journal)


async def close_side(side: Side) -> None:
    for client in side.clients:
        with contextlib.suppress(Exception):
            await client.__aexit__(None, None, None)
