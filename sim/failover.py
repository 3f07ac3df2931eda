"""How long the hot line is silent when a gateway's host is lost: an active/standby pair on
PostgreSQL, for `hotline sim bench`.

JP runs two gateways (A and B) on one PostgreSQL journal with `standby = true`; TW runs one,
its journal in a database of its own on the same server. Operators and TW name JP's pair
"A,B" (README "Running on PostgreSQL"). A steady load runs throughout: FAILOVER_SENDERS
operators each Send a ROUTINE message, wait for the reply, pause FAILOVER_PAUSE_S and go again.
Each round lets the load run FAILOVER_STEADY_S, kills the active JP gateway with SIGKILL and
times, from the kill:

- `first_send_ok`: the first Send answered after the kill (by the standby that took over; a
  Send that was in flight at the kill and retried by the client counts);
- `first_delivered`: the first DELIVERED event, on a Watch that follows the pair, of a message
  whose Send began after the kill.

The killed gateway is then started again as the new standby (the README's failover
procedure), and the next round kills the other one. At the end, every acknowledged message is
waited for until DELIVERED, and both parties' journals are compared (`sim.integrity`): lost,
duplicated, reordered.

What the times include: the standby's attempt at the journal's lock (every 0.5 s), opening the
journal and serving; the operator client's retry backoff (RETRY: from 20 ms, doubling, at most
100 ms) and its move to the other address; JP's new active dialling TW and TW redialling JP
(reconnect from 50 ms, at most 0.5 s); and, for the DELIVERED event, the Watch's reconnection.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from certs.pki import init_pki
from client.errors import ClientError
from client.operator import OperatorClient, RetryPolicy
from hotline.ids import new_message_id
from hotline.v1 import common_pb2, operator_pb2
from sim.integrity import check_journals, load_cas
from sim.load import Payloads
from sim.pair import GatewayProcess, free_port, write_config
from sim.postgres import PostgresServer
from sim.target import UNLIMITED, operator_names

FAILOVER_SENDERS = 4  # operators sending throughout, one Send at a time each
FAILOVER_PAUSE_S = 0.02  # each sender's pause after a reply
FAILOVER_STEADY_S = 1.0  # load before each kill
FAILOVER_TIMEOUT_S = 30.0  # a round fails if nothing is delivered within this of the kill
RETRY = RetryPolicy(attempts=300, initial_s=0.02, max_s=0.1)
SETTINGS: dict[str, Any] = {
    **UNLIMITED,
    "heartbeat_interval_s": 0.5,
    "dead_after_s": 2.0,
    "reconnect_min_s": 0.05,
    "reconnect_max_s": 0.5,
    "checkpoint_interval_s": 2.0,
    "deadline_check_s": 0.25,
}


@dataclass
class _Round:
    killed_at: float  # time.perf_counter() just before the SIGKILL
    first_send_ok: float | None = None
    first_delivered: float | None = None

    @property
    def done(self) -> bool:
        return self.first_send_ok is not None and self.first_delivered is not None


def gateway_process(
    work: Path,
    name: str,
    party: str,
    port: int,
    peer: str,
    journal: str,
    pki: Path,
    settings: dict[str, Any] | None = None,
) -> GatewayProcess:
    """A gateway of `party` (not started) listening on `port`, dialling `peer` (one address,
    or an active/standby list), on `journal`: a SQLite file, or a PostgreSQL URL, in which case
    it stands by while another gateway holds that database (`standby = true`)."""
    config = work / f"{name}.toml"
    in_database = journal.startswith("postgresql://")
    values = {
        "party": party,
        "peer_party": "TW" if party == "JP" else "JP",
        "listen": f"127.0.0.1:{port}",
        "peer_address": peer,
        "journal": journal,
        "pki_dir": str(pki),
        **(SETTINGS if settings is None else settings),
        "standby": in_database,
    }
    write_config(config, values)
    return GatewayProcess(
        party,
        str(values["peer_party"]),
        port,
        config,
        work / f"{name}.unused" if in_database else Path(journal),
        work / f"{name}.log",
        pki,
    )


def _ms(seconds: list[float]) -> tuple[float, float]:
    return round(1000 * statistics.median(seconds), 1), round(1000 * max(seconds), 1)


async def measure_failover(
    server: PostgresServer,
    workdir: Path,
    payload_bytes: int,
    rounds: int,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """`rounds` failovers of JP's active/standby pair under a steady load (see the module)."""
    workdir.mkdir(parents=True, exist_ok=True)
    pki = workdir / "pki"
    names = operator_names(FAILOVER_SENDERS + 1)  # the last one watches
    init_pki(pki, ("JP", "TW"), tuple(names))
    jp_url, tw_url = server.new_database(), server.new_database()
    ports = {"a": free_port(), "b": free_port(), "tw": free_port()}
    jp_pair = f"127.0.0.1:{ports['a']},127.0.0.1:{ports['b']}"
    tw_address = f"127.0.0.1:{ports['tw']}"
    a = gateway_process(workdir, "jp-a", "JP", ports["a"], tw_address, jp_url, pki)
    b = gateway_process(workdir, "jp-b", "JP", ports["b"], tw_address, jp_url, pki)
    tw = gateway_process(workdir, "tw", "TW", ports["tw"], jp_pair, tw_url, pki)
    clients = [
        OperatorClient.from_pki(pki, "JP", name, address=jp_pair, retry=RETRY) for name in names
    ]
    senders, watcher = clients[:-1], clients[-1]
    payloads = Payloads(payload_bytes, ("JP", "TW"))
    started: dict[str, float] = {}  # message id -> when its Send began
    acknowledged: list[str] = []
    delivered: set[str] = set()
    in_doubt: dict[str, int] = {}  # Sends that failed after every retry, by error
    current: _Round | None = None
    results: list[_Round] = []
    stop = asyncio.Event()

    async def sender(client: OperatorClient) -> None:
        precedence = common_pb2.PRECEDENCE_ROUTINE
        while not stop.is_set():
            message_id = new_message_id()
            started[message_id] = time.perf_counter()
            try:
                await client.send(payloads.make("TW", precedence, message_id))
            except ClientError as exc:
                in_doubt[type(exc).__name__] = in_doubt.get(type(exc).__name__, 0) + 1
                continue
            acknowledged.append(message_id)
            now, this = time.perf_counter(), current
            if this is not None and this.first_send_ok is None and now > this.killed_at:
                this.first_send_ok = now
            await asyncio.sleep(FAILOVER_PAUSE_S)

    async def watch() -> None:
        kinds = (operator_pb2.EVENT_KIND_MESSAGE_DELIVERED,)
        async for event in watcher.watch(0, kinds):
            delivered.add(event.message_id)
            this = current
            if (
                this is not None
                and this.first_delivered is None
                and started.get(event.message_id, 0.0) > this.killed_at
            ):
                this.first_delivered = time.perf_counter()

    tasks: list[asyncio.Task[None]] = []
    began = time.monotonic()
    try:
        echo("failover: start JP's active and standby (PostgreSQL) and TW ...")
        for side in (a, b, tw):  # the first JP takes the journal's lock and serves
            await side.start()
        tasks.append(asyncio.create_task(watch(), name="failover-watch"))
        tasks += [asyncio.create_task(sender(client)) for client in senders]
        active, standby = a, b
        for number in range(1, rounds + 1):
            await asyncio.sleep(FAILOVER_STEADY_S)
            echo(f"failover: round {number}/{rounds}, kill -9 the active JP gateway ...")
            current = _Round(time.perf_counter())
            active.kill()
            deadline = time.monotonic() + FAILOVER_TIMEOUT_S
            while not current.done and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            if not current.done:
                raise RuntimeError(
                    f"round {number}: no Send answered or no DELIVERED within "
                    f"{FAILOVER_TIMEOUT_S:g} s of the kill; see {standby.log_path}"
                )
            results.append(current)
            current = None
            await active.restart()  # the lost gateway comes back as the new standby
            active, standby = standby, active
        load_s = time.monotonic() - began
        stop.set()
        await asyncio.gather(*tasks[1:])
        deadline = time.monotonic() + 60
        while not delivered.issuperset(acknowledged) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        undelivered = len(set(acknowledged) - delivered)
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
        for side in (a, b, tw):
            await side.terminate()
    report = check_journals(
        cast(Mapping[str, Path], {"JP": jp_url, "TW": tw_url}),  # (URLs read like files)
        load_cas(pki, ("JP", "TW")),
        scope=set(acknowledged),
    )
    send_ok = [r.first_send_ok - r.killed_at for r in results if r.first_send_ok is not None]
    first_delivered = [
        r.first_delivered - r.killed_at for r in results if r.first_delivered is not None
    ]
    send_p50, send_max = _ms(send_ok)
    delivered_p50, delivered_max = _ms(first_delivered)
    return {
        "rounds": len(results),
        "first_send_ok_p50_ms": send_p50,
        "first_send_ok_max_ms": send_max,
        "first_delivered_p50_ms": delivered_p50,
        "first_delivered_max_ms": delivered_max,
        "first_send_ok_ms": [round(1000 * s, 1) for s in send_ok],
        "first_delivered_ms": [round(1000 * s, 1) for s in first_delivered],
        "senders": FAILOVER_SENDERS,
        "pause_s": FAILOVER_PAUSE_S,
        "load_msgs_per_s": round(len(acknowledged) / load_s, 1) if load_s else 0.0,
        "acknowledged": len(acknowledged),
        "undelivered_after_60_s": undelivered,
        "sends_failed_after_retries": in_doubt,
        "lost": report.total("lost"),
        "duplicated": report.total("duplicated"),
        "reordered": report.total("reordered"),
        "integrity_ok": report.ok,
    }
