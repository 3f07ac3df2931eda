"""The browser console's server against real gateways (mutual TLS, SQLite journals), spoken to
by a real HTTP client: the event stream of both floors with its map changes, resuming after a
reconnect, a message's record in both journals, acknowledging from the page, and the access
rules."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client import bodies
from client.console import Console
from client.operator import ACKNOWLEDGED, DELIVERED, OperatorClient
from hotline.errors import ConfigError
from hotline.ids import new_message_id
from hotline.v1 import bodies_pb2, common_pb2
from tests.harness import Pair, make_pki, running_pair

IMMEDIATE = common_pb2.PRECEDENCE_IMMEDIATE
ROUTINE = common_pb2.PRECEDENCE_ROUTINE
VESSEL = common_pb2.PLATFORM_KIND_SURFACE_VESSEL


@dataclass
class Sse:
    event: str
    id: str | None
    data: Any


class Stream:
    """One SSE connection to the console, read event by event."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.last_id: str | None = None

    async def next(self) -> Sse:
        event, ident = "message", None
        data: list[str] = []
        while True:
            raw = await self.response.content.readline()
            if not raw:
                raise ConnectionError("the console ended the stream")
            line = raw.decode().rstrip("\n")
            if line == "":
                if data:
                    if ident is not None:
                        self.last_id = ident
                    return Sse(event, ident, json.loads("\n".join(data)))
                event, ident = "message", None
                continue
            name, _, value = line.partition(": ")
            if name == "event":
                event = value
            elif name == "id":
                ident = value
            elif name == "data":
                data.append(value)

    async def entries_until(self, done: Any, within: float = 20.0) -> list[dict[str, Any]]:
        """Entries read until `done(entries)` holds (bounded in time)."""
        entries: list[dict[str, Any]] = []
        async with asyncio.timeout(within):
            while not done(entries):
                sse = await self.next()
                if sse.event == "entry":
                    entries.append(sse.data)
        return entries


def saw(entries: list[dict[str, Any]], party: str, kind: str, message_id: str) -> bool:
    return any(
        e["party"] == party and e["kind"] == kind and e.get("message_id") == message_id
        for e in entries
    )


@dataclass
class Setup:
    pair: Pair
    jp: OperatorClient
    tw: OperatorClient
    console: Console
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.console.url

    @contextlib.asynccontextmanager
    async def stream(self, last_id: str | None = None) -> AsyncIterator[Stream]:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        async with self.http.get(self.url + "api/events", headers=headers) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/event-stream"
            yield Stream(response)


@contextlib.asynccontextmanager
async def console_over_pair(tmp_path: Path, **kw: Any) -> AsyncIterator[Setup]:
    async with running_pair(tmp_path) as pair:
        jp = OperatorClient.from_pki(pair.pki, "JP", address=f"127.0.0.1:{pair.jp.port}")
        tw = OperatorClient.from_pki(pair.pki, "TW", address=f"127.0.0.1:{pair.tw.port}")
        console = Console({"JP": jp, "TW": tw}, port=0, **kw)
        await console.start()
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                yield Setup(pair, jp, tw, console, http)
        finally:
            await console.stop()
            await jp.close()
            await tw.close()


def encounter_report() -> Any:
    return bodies.maritime_encounter(
        reporting_platform=bodies.platform(VESSEL, name="JS AOZORA", flag_party="JP"),
        lat=24.30,
        lon=122.95,
        course=270.0,
        speed=14.0,
        contacts=[
            bodies.contact(
                bodies.platform(VESSEL, name="ROCS HAI YANG", flag_party="TW"),
                lat=24.27,
                lon=122.91,
                course=20.0,
                speed=16.0,
            )
        ],
        encounter_type=bodies_pb2.ENCOUNTER_TYPE_CROSSING,
        observation_time=datetime.now(UTC),
        cpa_m=900.0,
        tcpa_s=540.0,
    )


async def test_both_floors_stream_live_with_map_changes_and_resume_after_a_reconnect(
    tmp_path: Path,
) -> None:
    async with console_over_pair(tmp_path) as s:
        async with s.stream() as stream:
            first = await stream.next()
            assert first.event == "links"
            assert set(first.data["links"]) == {"JP", "TW"}
            sent = await s.jp.send_body(encounter_report(), precedence=IMMEDIATE)
            mid = sent.message_id
            entries = await stream.entries_until(
                lambda es: (
                    saw(es, "JP", "SENT", mid)
                    and saw(es, "TW", "RECEIVED", mid)
                    and saw(es, "JP", "DELIVERED", mid)
                )
            )
            seqs = [e["seq"] for e in entries]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # numbered without gaps
            by_kind = {(e["party"], e["kind"]): e for e in entries if e.get("message_id") == mid}
            sent_view = by_kind["JP", "SENT"]
            message = sent_view["message"]
            assert (message["precedence"], message["status"], message["type"]) == (
                "IMMEDIATE",
                "EXERCISE",
                "maritime-encounter",
            )
            assert message["state"] == "JOURNALED"
            assert message["awaiting_ack"] is True
            assert message["deadline"] is not None
            assert message["can_acknowledge"] is False
            # the first sighting puts the encounter on the map; the other floor's adds nothing
            roles = {f["role"] for f in sent_view["map"]["show"][mid]}
            assert roles == {"reporting", "contact", "cpa"}
            assert "map" not in by_kind["TW", "RECEIVED"]
            assert by_kind["TW", "RECEIVED"]["message"]["can_acknowledge"] is True
            assert by_kind["JP", "DELIVERED"]["message"]["state"] == "DELIVERED"
            last_id = stream.last_id
            assert last_id is not None
            assert last_id == f"{s.console.feed.epoch}-{seqs[-1]}"

        # While no page follows, the other party sends; the page comes back with its last id.
        other = await s.tw.send_body(
            bodies.free_text("Radio check", "How do you read?"), precedence=ROUTINE
        )
        await s.tw.wait_for(other.message_id, DELIVERED, timeout=15)
        async with s.stream(last_id) as stream:
            resumed = await stream.entries_until(
                lambda es: (
                    saw(es, "TW", "DELIVERED", other.message_id)
                    and saw(es, "JP", "RECEIVED", other.message_id)
                )
            )
        after = int(last_id.rsplit("-", 1)[1])
        assert [e["seq"] for e in resumed] == list(range(after + 1, after + 1 + len(resumed)))

        # A position from another console (or one no longer kept): start over, from the first.
        async with s.stream("0badc0de-3") as stream:
            reset = await stream.next()
            while reset.event == "links":
                reset = await stream.next()
            assert reset.event == "reset"
            again = await stream.entries_until(lambda es: len(es) >= 1)
            assert again[0]["seq"] == 1


async def test_acknowledging_from_the_console_reaches_the_other_partys_journal(
    tmp_path: Path,
) -> None:
    async with console_over_pair(tmp_path) as s:
        sent = await s.jp.send_body(encounter_report(), precedence=IMMEDIATE)
        await s.jp.wait_for(sent.message_id, DELIVERED, timeout=15)
        async with s.http.get(s.url + f"api/messages/{sent.message_id}") as response:
            assert response.status == 200
            journals = (await response.json())["journals"]
        assert journals["JP"]["record"]["direction"] == "out"
        assert journals["TW"]["record"]["direction"] == "in"
        assert journals["TW"]["record"]["can_acknowledge"] is True
        assert journals["TW"]["record"]["body"]["reporting_platform"]["name"] == "JS AOZORA"
        assert journals["JP"]["record"]["signed_by_key"]

        ack = {
            "party": "TW",
            "message_id": sent.message_id,
            "level": "UNABLE",
            "text": "Frigate is restricted in her ability to manoeuvre",
        }
        async with s.http.post(s.url + "api/acknowledge", json=ack) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
        assert answer["party"] == "TW"
        assert answer["journal_position"] > 0
        record = await s.jp.wait_for(sent.message_id, ACKNOWLEDGED, timeout=15)
        assert record.acknowledgement.level == bodies_pb2.ACKNOWLEDGEMENT_LEVEL_UNABLE
        assert bodies.text_of(record.acknowledgement.reason) == ack["text"]
        assert record.acknowledgement_message_id == answer["ack_message_id"]


async def test_the_console_refuses_bad_requests_with_the_reason(tmp_path: Path) -> None:
    async with console_over_pair(tmp_path) as s:
        sent = await s.jp.send_body(
            bodies.free_text("Radio check", "How do you read?"), precedence=ROUTINE
        )
        url = s.url + "api/acknowledge"

        async def post(body: Any, **kw: Any) -> tuple[int, str]:
            async with s.http.post(url, json=body, **kw) as response:
                return response.status, (await response.json())["error"]

        good = {"party": "TW", "message_id": sent.message_id, "level": "ROGER"}
        # the gateway decides: JP cannot acknowledge its own message
        status, error = await post({**good, "party": "JP"})
        assert status == 409
        assert error
        status, error = await post({**good, "message_id": new_message_id()})
        assert status == 404
        status, error = await post({**good, "level": "MAYBE"})
        assert status == 400
        assert "ROGER" in error
        status, error = await post({**good, "party": "CN"})
        assert status == 400
        assert "JP, TW" in error
        status, error = await post({**good, "text": "x" * 5000})
        assert status == 400
        # another site's page cannot post here, nor reach the console under another name
        status, error = await post(good, headers={"Origin": "http://evil.example"})
        assert status == 403
        status, error = await post(good, headers={"Host": "evil.example"})
        assert status == 421
        async with s.http.post(url, data="level=ROGER") as response:
            assert response.status == 415
        async with s.http.get(s.url + f"api/messages/{new_message_id()}") as response:
            journals = (await response.json())["journals"]
        assert journals["JP"]["record"] is None
        assert journals["TW"]["record"] is None
        # none of this acknowledged anything
        assert (await s.jp.get(sent.message_id)).state != ACKNOWLEDGED


async def test_a_token_guards_the_api_and_the_link_sets_it_in_a_cookie(tmp_path: Path) -> None:
    token = "correct-horse-battery-staple"
    async with console_over_pair(tmp_path, token=token) as s:
        async with s.http.get(s.url + "api/config") as response:
            assert response.status == 401
        headers = {"Authorization": f"Bearer {token}"}
        async with s.http.get(s.url + "api/config", headers=headers) as response:
            assert response.status == 200
            assert (await response.json())["parties"] == ["JP", "TW"]
        async with s.http.get(s.url + "?token=wrong", allow_redirects=False) as response:
            assert response.status == 401
        async with s.http.get(s.url + f"?token={token}", allow_redirects=False) as response:
            assert response.status == 303
            cookie = response.cookies["hotline_console"]
            assert cookie["httponly"]
            assert cookie["samesite"] == "Strict"
        async with s.http.get(s.url + "api/config") as response:
            assert response.status == 200


def test_off_loopback_the_console_requires_tls_and_a_token(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    client = OperatorClient.from_pki(pki, "JP", address="127.0.0.1:1")
    with pytest.raises(ConfigError, match="not loopback"):
        Console({"JP": client}, host="0.0.0.0")
    with pytest.raises(ConfigError, match="not loopback"):
        Console({"JP": client}, host="192.0.2.1", token="a-long-enough-token")
