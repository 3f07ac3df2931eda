"""A FLASH console in a process of its own, for `hotline sim bench`'s precedence figures.

A watch officer who sends a FLASH sits at a console of their own, not inside the load
generator that floods the gateway with ROUTINE: timing the FLASH from the load generator's own
busy event loop would add that loop's queue to the figure. So the probe is a separate process
(`multiprocessing`, spawned) with its own operator channel and its own Watch stream of
DELIVERED events. The bench asks it for one FLASH at a time over a pipe; it answers with the
timings of that FLASH:

- `ms`: Send called → the DELIVERED event arrived on the probe's Watch (what the officer sees);
- `send_ms`: the Send call alone (operator API and JP's journal, with fsync);
- `journal_to_peer_ms`: JP journaled it → TW journaled it (the message record's
  `journal_time` and `deliver_time`: gateway clocks, on one machine);
- `peer_to_settled_ms`: TW journaled it → JP journaled its receipt (the DELIVERED event's
  `event_time`);
- `settled_to_seen_ms`: JP journaled the receipt → the event arrived on the Watch;
- `message_id`: to find where it landed in the drain order.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from client.operator import OperatorClient
from hotline.ids import new_message_id
from hotline.v1 import common_pb2, operator_pb2
from sim.load import Payloads

STOP = "stop"
FLASH = "flash"


def _seconds(stamp: Any) -> float:
    return float(stamp.seconds) + float(stamp.nanos) / 1e9


async def _serve(
    conn: Connection, pki: str, party: str, name: str, address: str, size: int, peer: str
) -> None:
    client = OperatorClient.from_pki(Path(pki), party, name, address=address)
    payloads = Payloads(size, (party, peer))
    waiting: dict[str, asyncio.Future[tuple[float, float, float]]] = {}

    async def follow() -> None:
        kinds = (operator_pb2.EVENT_KIND_MESSAGE_DELIVERED,)
        async for event in client.watch(0, kinds):
            future = waiting.pop(event.message_id, None)
            if future is not None and not future.done():
                now = (time.perf_counter(), time.time(), _seconds(event.event_time))
                future.set_result(now)

    watch = asyncio.create_task(follow())
    loop = asyncio.get_running_loop()
    try:
        await client.link_status()  # the channel is up
        conn.send("ready")
        while (await loop.run_in_executor(None, conn.recv)) == FLASH:
            message_id = new_message_id()
            delivered = loop.create_future()
            waiting[message_id] = delivered
            start = time.perf_counter()
            await client.send(payloads.make(peer, common_pb2.PRECEDENCE_FLASH, message_id))
            replied = time.perf_counter()
            seen, seen_wall, settled = await asyncio.wait_for(delivered, 120)
            record = await client.get(message_id)
            peer_journaled = _seconds(record.deliver_time)
            conn.send(
                {
                    "message_id": message_id,
                    "ms": (seen - start) * 1000,
                    "send_ms": (replied - start) * 1000,
                    "journal_to_peer_ms": (peer_journaled - _seconds(record.journal_time)) * 1000,
                    "peer_to_settled_ms": (settled - peer_journaled) * 1000,
                    "settled_to_seen_ms": (seen_wall - settled) * 1000,
                }
            )
    finally:
        watch.cancel()
        await client.close()


def _main(
    conn: Connection, pki: str, party: str, name: str, address: str, size: int, peer: str
) -> None:
    try:
        asyncio.run(_serve(conn, pki, party, name, address, size, peer))
    except Exception as exc:  # reported to the bench, which raises it
        conn.send({"error": f"{type(exc).__name__}: {exc}"})


class FlashProbe:
    """The FLASH console process; `flash()` sends one FLASH and returns its timings."""

    def __init__(
        self, pki: Path, party: str, name: str, address: str, size: int, peer: str
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_main,
            args=(child, str(pki), party, name, address, size, peer),
            name="flash-probe",
            daemon=True,
        )
        self._process.start()
        child.close()

    async def _answer(self, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self._conn.poll, timeout):
            raise TimeoutError(f"the FLASH probe did not answer within {timeout:g} s")
        answer = self._conn.recv()
        if isinstance(answer, dict) and "error" in answer:
            raise RuntimeError(f"the FLASH probe failed: {answer['error']}")
        return answer

    async def ready(self, timeout: float = 60.0) -> None:
        await self._answer(timeout)

    async def flash(self, timeout: float = 150.0) -> dict[str, Any]:
        self._conn.send(FLASH)
        answer: dict[str, Any] = await self._answer(timeout)
        return answer

    def close(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(STOP)
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(5)
        self._conn.close()
