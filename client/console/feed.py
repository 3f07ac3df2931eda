"""The console's feed: both watch floors merged into one numbered log that pages follow.

One `Feed` watches each connected gateway (`OperatorClient.watch`, from the start of its
journal, resuming after a lost stream) and polls its link status. Every event becomes a JSON
view (`client.console.views`), with the map change it causes (`client.console.geo.Situation`),
and is appended to an in-memory log under a console sequence number. A page follows the log from
the sequence it last saw, so a reconnecting page misses nothing and repeats nothing; the log's
`epoch` changes with each console process, so a page that outlived its console starts over.

Bounds: the log keeps the last `log_limit` entries; a page asking for older ones is told to
start over from the oldest kept (a `reset`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from client.console.geo import Situation
from client.console.views import event_view, link_view
from client.errors import ClientError
from client.operator import OperatorClient
from hotline.v1 import operator_pb2

__all__ = ["Feed", "Update"]

LOG_LIMIT = 20_000
LINK_POLL_S = 1.0
# Checkpoints come every few seconds and say nothing a watch officer acts on.
WATCH_KINDS = [
    k for k in operator_pb2.EventKind.values() if k not in (0, operator_pb2.EVENT_KIND_CHECKPOINT)
]


@dataclass(frozen=True)
class Update:
    """What a follower is given: entries after its position, the link states if they changed
    since it last looked, and whether it must start over (`reset`)."""

    entries: list[dict[str, Any]]
    links: dict[str, dict[str, Any]] | None
    reset: bool = False


def _now_text() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class Feed:
    """Both floors' events, in arrival order, numbered from 1 within this console's `epoch`."""

    def __init__(
        self,
        clients: Mapping[str, OperatorClient],
        *,
        log_limit: int = LOG_LIMIT,
        link_poll_s: float = LINK_POLL_S,
    ) -> None:
        if not clients:
            raise ValueError("the console needs at least one gateway")
        self.clients = dict(clients)
        self.epoch = secrets.token_hex(4)
        self.situation = Situation()
        self._log: deque[dict[str, Any]] = deque(maxlen=log_limit)
        self._next_seq = 1
        self._links: dict[str, dict[str, Any]] = {p: link_view(p, None) for p in self.clients}
        self._links_version = 1
        self._changed = asyncio.Event()
        self._link_poll_s = link_poll_s
        self.started = time.monotonic()

    @property
    def parties(self) -> list[str]:
        return list(self.clients)

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def links(self) -> dict[str, dict[str, Any]]:
        return dict(self._links)

    # ------------------------------------------------------------------ producing

    async def run(self) -> None:
        """Watch every floor and poll every link, until cancelled."""
        async with asyncio.TaskGroup() as group:
            for party in self.clients:
                group.create_task(self._watch(party), name=f"console-watch-{party}")
                group.create_task(self._poll_link(party), name=f"console-link-{party}")

    async def _watch(self, party: str) -> None:
        client = self.clients[party]
        cursor = 0
        troubled = False  # said once per outage, not at every retry

        def lost(error: ClientError, delay: float) -> None:
            nonlocal troubled
            if not troubled:
                troubled = True
                self.note(f"{party}: watch stream lost ({error}); resuming", party)

        while True:
            try:
                async for event in client.watch(cursor, WATCH_KINDS, on_reconnect=lost):
                    troubled = False
                    cursor = event.cursor
                    self.publish(party, event)
            except ClientError as exc:  # not retryable (refused, bad certificate): say so, retry
                if not troubled:
                    troubled = True
                    self.note(f"{party}: cannot watch the gateway: {exc}", party)
                await asyncio.sleep(5)

    async def _poll_link(self, party: str) -> None:
        client = self.clients[party]
        while True:
            try:
                status = await client.link_status()
                view = link_view(party, status)
            except ClientError as exc:
                view = link_view(party, None, str(exc))
            if view != self._links.get(party):
                self._links[party] = view
                self._links_version += 1
                self._wake()
            await asyncio.sleep(self._link_poll_s)

    def publish(self, party: str, event: operator_pb2.Event) -> dict[str, Any]:
        """Append one gateway event (and the map change its message causes)."""
        view = event_view(party, event)
        if event.HasField("message") and event.kind in (
            operator_pb2.EVENT_KIND_MESSAGE_SENT,
            operator_pb2.EVENT_KIND_MESSAGE_RECEIVED,
        ):
            change = self.situation.apply(event.message.envelope)
            if change is not None:
                view["map"] = change.as_json()
        return self._append(view)

    def note(self, text: str, party: str = "") -> dict[str, Any]:
        """Append a line of narration (the demo's commentary, the console's own troubles)."""
        return self._append(
            {"party": party or None, "kind": "NOTE", "time": _now_text(), "detail": text}
        )

    def _append(self, view: dict[str, Any]) -> dict[str, Any]:
        view["seq"] = self._next_seq
        self._next_seq += 1
        self._log.append(view)
        self._wake()
        return view

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ following

    def position(self, token: str | None) -> tuple[int, bool]:
        """Where a follower resumes: (`after` sequence, whether it must start over).

        `token` is what the page last saw, `<epoch>-<seq>` (an SSE `Last-Event-ID`), or None for
        a new page. Another epoch, or a sequence no longer kept, means starting over."""
        if not token:
            return 0, False
        epoch, _, seq_text = token.partition("-")
        try:
            seq = int(seq_text)
        except ValueError:
            return 0, True
        if epoch != self.epoch or seq < 0 or seq > self.last_seq:
            return 0, True
        oldest = self._log[0]["seq"] if self._log else self._next_seq
        if seq < oldest - 1:
            return 0, True
        return seq, False

    def entries_after(self, seq: int) -> list[dict[str, Any]]:
        if not self._log or seq >= self.last_seq:
            return []
        oldest = self._log[0]["seq"]
        start = max(seq + 1 - oldest, 0)
        return [self._log[i] for i in range(start, len(self._log))]

    async def follow(
        self, token: str | None, *, stop: asyncio.Event | None = None, idle_s: float = 15.0
    ) -> AsyncGenerator[Update, None]:
        """Updates for one follower, from `token` on, until `stop` is set. An update with no
        entries and no links is yielded after `idle_s` of quiet (to keep a connection alive)."""
        after, reset = self.position(token)
        links_seen = 0
        first = True
        while stop is None or not stop.is_set():
            changed = self._changed
            entries = self.entries_after(after)
            links = self.links() if self._links_version != links_seen else None
            links_seen = self._links_version
            if entries or links is not None or first:
                if entries:
                    after = entries[-1]["seq"]
                yield Update(entries, links, reset and first)
                first = False
                continue
            waits = [asyncio.ensure_future(changed.wait())]
            if stop is not None:
                waits.append(asyncio.ensure_future(stop.wait()))
            try:
                done, _ = await asyncio.wait(
                    waits, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for w in waits:
                    w.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await w
            if not done:
                yield Update([], None)
