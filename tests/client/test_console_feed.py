"""The console's feed on its own: numbering, resuming from a page's position, and starting over
when that position is from another console or no longer kept (no gateway needed: the feed is
given events as the watch would give them)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from client.console.feed import Feed
from client.operator import OperatorClient
from hotline.v1 import operator_pb2
from tests.harness import make_pki


def feed(tmp_path: Path, log_limit: int = 100) -> Feed:
    client = OperatorClient.from_pki(make_pki(tmp_path / "pki"), "JP", address="127.0.0.1:1")
    return Feed({"JP": client}, log_limit=log_limit)


def link_up(cursor: int) -> operator_pb2.Event:
    when = Timestamp()
    when.GetCurrentTime()
    return operator_pb2.Event(
        cursor=cursor,
        kind=operator_pb2.EVENT_KIND_LINK_UP,
        event_time=when,
        link=operator_pb2.LINK_DIRECTION_OUTBOUND,
        detail="peer holds up to sequence 0",
    )


async def test_a_follower_resumes_after_its_position_and_waits_for_more(tmp_path: Path) -> None:
    f = feed(tmp_path)
    for cursor in (3, 5, 9):
        f.publish("JP", link_up(cursor))
    f.note("Phase 1")
    assert [e["seq"] for e in f.entries_after(0)] == [1, 2, 3, 4]
    follower = f.follow(f"{f.epoch}-2")
    update = await anext(follower)
    assert not update.reset
    assert [e["seq"] for e in update.entries] == [3, 4]
    assert update.entries[0] | {"time": None} == {
        "party": "JP",
        "cursor": 9,
        "kind": "LINK UP",
        "time": None,
        "message_id": None,
        "link": "outbound",
        "detail": "peer holds up to sequence 0",
        "message": None,
        "note": None,
        "seq": 3,
    }
    waiting = asyncio.ensure_future(anext(follower))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # nothing new: the follower waits
    f.publish("JP", link_up(12))
    update = await asyncio.wait_for(waiting, 5)
    assert [e["seq"] for e in update.entries] == [5]
    await follower.aclose()


async def test_a_position_from_another_console_or_no_longer_kept_starts_over(
    tmp_path: Path,
) -> None:
    f = feed(tmp_path, log_limit=3)
    for cursor in range(1, 7):
        f.publish("JP", link_up(cursor))
    assert [e["seq"] for e in f.entries_after(0)] == [4, 5, 6]  # the oldest were let go
    assert f.position(f"{f.epoch}-3") == (3, False)  # the next one is still kept
    assert f.position(f"{f.epoch}-2") == (0, True)  # seq 3 is gone: start over
    assert f.position(f"{f.epoch}-7") == (0, True)  # from the future: another console
    assert f.position("0badc0de-4") == (0, True)
    assert f.position(f"{f.epoch}-x") == (0, True)
    assert f.position(None) == (0, False)
    update = await anext(f.follow("0badc0de-4"))
    assert update.reset
    assert [e["seq"] for e in update.entries] == [4, 5, 6]
