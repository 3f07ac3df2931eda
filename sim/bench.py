"""`hotline sim bench`: the hot line's delivery path against a plain gRPC baseline, one machine.

Baseline: a bidirectional-stream echo over the same mutual TLS (a fresh PKI's JP gateway
certificate on the server, TW's on the client, the same pinned name and keepalive settings),
served by a subprocess so that client and server run on separate cores as the two gateways do,
with the same payload size. Measured:

    (a) p50 / p99 round trip with one message in flight;
    (b) messages per second pipelined on one stream (up to 256 in flight, the link's window).

Peers (`sim/peers.py`): brokers whose ack means "durable", one hop, over the same kind of mTLS
(the same PKI's JP gateway certificate on the broker, which requires TW's), the same payload:
NATS JetStream with `sync_interval: always` (needs the optional `bench` extra) and, if the
Debian package `rabbitmq-server` is installed, a RabbitMQ quorum queue with publisher confirms.
Each: (a) p50 / p99 publish → ack with one in flight, (b) acks per second with 64 in flight,
(c) CPU per ack of the broker and of this load generator. A peer that cannot run is skipped
with a note, and one that fails is reported as failed; neither stops the bench.

Hotline: two gateway processes without fault proxies. Measured at the sending side's operator
API, as a watch officer sees it:

    (a) p50 / p99 from Send to the sender's EVENT_KIND_MESSAGE_DELIVERED, one message in flight:
        operator → JP gateway (validate, sign, journal with fsync) → peer link → TW gateway
        (verify, validate, journal with fsync, sign a receipt) → JP (verify, journal the receipt
        with fsync) → Watch event;
    (b) the most DELIVERED events per second: several operators send back to back (pipelined:
        no one waits for delivery) with more and more concurrent senders, until the delivered
        rate stops growing (under 5 % more from a step that doubles the senders);
    (c) precedence under backlog, on a pair of its own, timed by a FLASH console in a process
        of its own (`sim.flash_probe`: an officer's console, not the load generator's busy
        loop): FLASH Send → DELIVERED on an idle link (p50 of 20, one at a time), then behind
        a ROUTINE backlog, a few rounds each (5 from `--duration 30` up), p50 and max and the
        ratio to idle. *Draining* (the figure the precedence lanes answer for): 2,000 ROUTINE
        are journaled at JP while TW is stopped, TW is started, and once a quarter of them are
        delivered one FLASH is sent. *Sending* (a stress figure): 64 pipelined senders submit
        the 2,000 ROUTINE as fast as JP takes them while the link drains them, so JP's CPU is
        saturated by the operator calls themselves, and the FLASH goes once a quarter are
        delivered. Each FLASH is split into the Send call (operator API and JP's journal), JP
        journal → TW journal, TW journal → JP's receipt entry, and that entry → the event on
        the console's Watch; and where it landed in the drain order is read from JP's journal
        positions and the link sequences carried by the DELIVERED events (ROUTINE unsettled
        when it was journaled, settled ahead of it, overtaken by it, delivered after it:
        `drain_order`);
    (d) CPU per delivered message (µs) of JP, TW and this load generator at each step.

Link: the peer link alone, on a second pair whose TW gateway is not started at first: N ROUTINE
(5,000 from `--duration 50` up) are journaled at JP, then TW is started and the drain is timed
from TW serving until JP's outbound queue depth is 0 (polled every 10 ms; no Watch stream and
no sends during the drain): msgs/s = N / drain time, with the time to the first receipt and the
rate after it, and the CPU per delivered message of each process over the drain.

PostgreSQL (the journal backend of README "Running on PostgreSQL"), in the same run, on a
throwaway server the bench starts and removes (`sim.postgres`: `initdb` in a temporary folder,
Unix socket only, `fsync`, `synchronous_commit` and `full_page_writes` on; as root it runs as
the `postgres` user):

    (a) the hot line again with both gateways' journals in PostgreSQL, one database each, as
        (a) and (b) above: Send → DELIVERED p50 / p99 at one in flight, and the most delivered
        per second, over fewer steps (POSTGRESQL_STEPS: 16 unary senders, then SendBatch 2 x 32,
        4 x 64, 8 x 128, where SQLite's best is found; no SendStream), with the ratios
        PostgreSQL / SQLite; CPU per delivered message of JP, TW, this load generator and the
        database server as one process ("PostgreSQL": the connections of both journals and
        its background processes, from the postmaster and its children in /proc);
    (b) failover (`sim.failover`): JP runs an active and a standby gateway on one database
        (TW on its own), operators and TW name both; under a steady load (4 senders, one Send
        at a time each) the active is killed with SIGKILL, and the time is taken from the kill
        to the first Send answered and to the first DELIVERED event of a message sent after
        the kill; the killed gateway then comes back as the standby and the next round kills
        the other (2 to 5 rounds, 5 from `--duration 50` up); p50 and max, and at the end
        both journals are compared: lost, duplicated, reordered.

Metrics (the cost of the gateway's `/metrics`, which should stay under 5 %): two pairs run side
by side, one with `metrics_listen` set on both gateways and scraped every METRICS_SCRAPE_S, one
without (a gateway without it counts nothing), and the same load (METRICS_LOAD: senders x
SendBatch size, pipelined) is run on each in turn, off then on (off, on, on, off from
`--duration 30` up, so that a machine whose load drifts favours neither): delivered per second
and CPU per delivered message of each process, for both, and the ratios on / off.
`python -m sim.bench metrics --duration 5` runs this part alone.

If PostgreSQL is not installed or cannot start, the part is reported skipped with the reason;
a part that fails is reported failed; neither stops the bench. `python -m sim.bench postgresql
--duration 5` runs this part alone (no SQLite figures, so no ratio).

So a hot-line delivery costs one request/response on the operator API, one hop on the peer
link, three durable SQLite commits (group-committed under load), three signatures or
verifications and an event stream; the baseline is one hop and nothing else, and a peer is one
hop and one durable write. The ratios say what that buys and costs. Both runs warm up first (channels ready, first messages dropped).
The time-driven parts share `--duration`; the precedence rounds and the link drain are
counted in messages, so a run takes somewhat longer than `--duration` (they scale down below
`--duration 20`).

The echo server is this module run as `python -m sim.bench echo-server --pki DIR --party JP
--port-file FILE`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from certs.pki import PartyPaths, init_pki
from client.errors import ClientError, RateLimited, Timeout, Unavailable
from client.operator import DELIVERED, OperatorClient
from hotline.ids import new_message_id
from hotline.transport import SERVER_OPTIONS, credentials, read, secure_channel
from hotline.v1 import common_pb2, operator_pb2
from sim import postgres
from sim.failover import FAILOVER_SENDERS, measure_failover
from sim.flash_probe import FlashProbe
from sim.load import Payloads
from sim.machine import CpuMeter, machine_info
from sim.metrics import new_histogram, record_seconds, summarize
from sim.pair import GatewayPair, GatewayProcess, free_port, write_config
from sim.peers import IN_FLIGHT, NATS_KEY, RABBITMQ_KEY, PeerBudget, measure_peers
from sim.postgres import PostgresUnavailable
from sim.target import UNLIMITED, Target, operator_names

ECHO_SERVICE = "hotline.bench.v1.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Stream"
WINDOW = 256
BACKLOG_MAX = 2000  # ROUTINE messages draining when the FLASH is sent
BACKLOG_TRIGGER = 0.25  # the FLASH goes once this share of the backlog is delivered
BACKLOG_SENDERS = 64  # concurrent pipelined ROUTINE sends (backlog and link journaling)
LINK_MAX = 5000
LINK_POLL_S = 0.01  # how often the link drain reads JP's outbound queue depth
# The hot line with both journals in PostgreSQL: fewer steps than on SQLite (senders, batch):
# unary sends, then the SendBatch steps where SQLite's best rate is found.
POSTGRESQL_STEPS = ((16, 1), (2, 32), (4, 64), (8, 128))
DATABASE = "PostgreSQL"  # the database server, counted as one process in the CPU figures
METRICS_LOAD = (4, 64)  # the metrics cost's load: senders x SendBatch size, pipelined
METRICS_SCRAPE_S = 1.0  # how often the metrics pair is scraped (Prometheus: 15-60 s)
# The like-for-like peers, in the order they are measured and printed (sim/peers.py).
# (key in the result, short name, what is measured at one | IN_FLIGHT in flight)
PEERS = (
    (NATS_KEY, "NATS", "JetStream, fsync before each ack"),
    (RABBITMQ_KEY, "RabbitMQ", "quorum queue, publisher confirms"),
)


# ---------------------------------------------------------------------------------------------
# The echo server (runs in its own process)


async def _echo(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request


async def serve_echo(pki: Path, party: str, port_file: Path) -> None:
    paths = PartyPaths.of(pki, party)
    creds = grpc.ssl_server_credentials(
        [(read(paths.gateway_key, "key"), read(paths.gateway_cert, "certificate"))],
        root_certificates=read(paths.bundle, "CA bundle"),
        require_client_auth=True,
    )
    server = grpc.aio.server(options=list(SERVER_OPTIONS))
    handler = grpc.method_handlers_generic_handler(
        ECHO_SERVICE, {"Stream": grpc.stream_stream_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.rename(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.bench")
    sub = parser.add_subparsers(dest="what", required=True)
    echo = sub.add_parser("echo-server", help="serve the baseline echo over mutual TLS")
    echo.add_argument("--pki", type=Path, required=True)
    echo.add_argument("--party", default="JP")
    echo.add_argument("--port-file", type=Path, required=True)
    alone = sub.add_parser(
        "postgresql", help="the bench's PostgreSQL part alone: the hot line and a failover"
    )
    alone.add_argument("--duration", type=float, default=60.0)
    alone.add_argument("--payload-bytes", type=int, default=300)
    alone.add_argument("--json", type=Path, metavar="FILE", help="write the figures as JSON")
    alone.add_argument("--workdir", type=Path, help="keep the PKI and logs here")
    metrics = sub.add_parser(
        "metrics", help="the bench's metrics part alone: the same load with /metrics on and off"
    )
    metrics.add_argument("--duration", type=float, default=60.0)
    metrics.add_argument("--payload-bytes", type=int, default=300)
    metrics.add_argument("--json", type=Path, metavar="FILE", help="write the figures as JSON")
    metrics.add_argument("--workdir", type=Path, help="keep the PKI and logs here")
    args = parser.parse_args(argv)
    if args.what == "postgresql":
        return asyncio.run(_postgresql_alone(args))
    if args.what == "metrics":
        return asyncio.run(_metrics_alone(args))
    asyncio.run(serve_echo(args.pki, args.party, args.port_file))
    return 0


def _echo_stderr(text: str) -> None:
    print(f"-- {text}", file=sys.stderr, flush=True)


async def _measured_alone(
    args: argparse.Namespace,
    prefix: str,
    measure: Callable[[Path, int, Budget, Callable[[str], None]], Awaitable[dict[str, Any]]],
) -> dict[str, Any]:
    """Run one part of the bench on its own, in `--workdir` or a temporary directory."""
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix))
        )
        workdir.mkdir(parents=True, exist_ok=True)
        return await measure(workdir, args.payload_bytes, Budget(args.duration), _echo_stderr)


async def _postgresql_alone(args: argparse.Namespace) -> int:
    """`python -m sim.bench postgresql`: measure_postgresql on its own (no SQLite figures, so
    no ratio), printed as the bench's rows, and the JSON's `postgresql` object."""
    result = BenchResult()
    result.postgresql = await _measured_alone(args, "hotline-bench-pg-", measure_postgresql)
    print("\n".join(format_postgresql(result)))
    pg = result.postgresql.get("hotline", {})
    if "cpu_us_per_msg" in pg:
        print(
            f"   cpu µs per delivered message on PostgreSQL: {_per_process(pg['cpu_us_per_msg'])}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"postgresql": result.postgresql}, indent=2) + "\n")
    return 0


async def _metrics_alone(args: argparse.Namespace) -> int:
    """`python -m sim.bench metrics`: measure_metrics_cost on its own, printed as the bench's
    rows, and the JSON's `metrics_cost` object."""
    result = BenchResult()
    result.metrics_cost = await _measured_alone(
        args, "hotline-bench-metrics-", measure_metrics_cost
    )
    print("\n".join(format_metrics_cost(result)))
    if args.json is not None:
        doc = {"metrics_cost": result.metrics_cost, "ratios": result.ratios()}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Budget:
    """How the measuring time is shared out (seconds), from `--duration`, and how many messages
    the count-driven parts use (they scale down with a small `--duration`)."""

    total: float

    @property
    def warmup(self) -> float:
        return max(0.5, self.total * 0.015)

    @property
    def baseline_latency(self) -> float:
        return max(1.0, self.total * 0.05)

    @property
    def baseline_throughput(self) -> float:
        return max(1.0, self.total * 0.05)

    @property
    def peer_latency(self) -> float:
        return max(1.0, self.total * 0.04)

    @property
    def peer_throughput(self) -> float:
        return max(1.0, self.total * 0.04)

    @property
    def peer(self) -> PeerBudget:
        return PeerBudget(self.warmup, self.peer_latency, self.peer_throughput)

    @property
    def hotline_latency(self) -> float:
        return max(1.5, self.total * 0.08)

    @property
    def hotline_step(self) -> float:
        return max(1.5, self.total * 0.06)

    @property
    def idle_flash_samples(self) -> int:
        return 20

    @property
    def backlog_messages(self) -> int:
        """ROUTINE messages journaled per precedence round: 2,000 from `--duration 20` up."""
        return int(min(BACKLOG_MAX, max(50, self.total * 100)))

    @property
    def backlog_rounds(self) -> int:
        return int(min(5, max(1, self.total // 6)))

    @property
    def failover_rounds(self) -> int:
        """Kills of the active JP gateway on PostgreSQL: 5 from `--duration 50` up, at least 2."""
        return int(min(5, max(2, self.total // 10)))

    @property
    def metrics_rounds(self) -> int:
        """Rounds of the metrics cost: off then on; off, on, on, off from `--duration 30` up."""
        return 2 if self.total >= 30 else 1

    @property
    def link_messages(self) -> int:
        """ROUTINE messages journaled at JP before TW starts: 5,000 from `--duration 50` up."""
        return int(min(LINK_MAX, max(50, self.total * 100)))


@dataclass
class BenchResult:
    baseline: dict[str, Any] = field(default_factory=dict)
    hotline: dict[str, Any] = field(default_factory=dict)
    # like-for-like peers by key (NATS_KEY, RABBITMQ_KEY): figures, {"skipped": why} or
    # {"failed": error}
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    precedence: dict[str, Any] = field(default_factory=dict)
    link: dict[str, Any] = field(default_factory=dict)
    # the hot line with both journals in PostgreSQL ("hotline", "throughput_steps") and the
    # active/standby failover ("failover"), each part figures or {"failed": error}; or the
    # whole {"skipped": why} when no PostgreSQL server could start
    postgresql: dict[str, Any] = field(default_factory=dict)
    # the same load with the gateways' /metrics on and off (measure_metrics_cost)
    metrics_cost: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # 1-minute load average at the start and the end of the run: the machine is shared, and
    # absolute figures mean little without it (ratios from one run hold up better)
    load_average: list[float] = field(default_factory=list)

    def ratios(self) -> dict[str, float]:
        b, h, f, k = self.baseline, self.hotline, self.precedence, self.link
        ratios: dict[str, float] = {}
        if h and b:  # (not when a part runs alone)
            ratios |= {
                "delivered_p50_over_baseline_p50": _ratio(h["delivered_p50_ms"], b["p50_ms"]),
                "delivered_p99_over_baseline_p99": _ratio(h["delivered_p99_ms"], b["p99_ms"]),
                "delivered_msgs_per_s_over_baseline": _ratio(
                    h["delivered_msgs_per_s"], b["msgs_per_s"]
                ),
            }
        m = self.metrics_cost
        if "on" in m and "off" in m:
            ratios["metrics_on_over_off_delivered_msgs_per_s"] = _ratio(
                m["on"]["delivered_msgs_per_s"], m["off"]["delivered_msgs_per_s"]
            )
            ratios["metrics_on_over_off_gateway_cpu_us_per_msg"] = _ratio(
                _gateways_us(m["on"]["cpu_us_per_msg"]), _gateways_us(m["off"]["cpu_us_per_msg"])
            )
        for key, peer in self.measured_peers().items():
            ratios[f"delivered_p50_over_{key}_p50"] = _ratio(h["delivered_p50_ms"], peer["p50_ms"])
            ratios[f"delivered_p99_over_{key}_p99"] = _ratio(h["delivered_p99_ms"], peer["p99_ms"])
            ratios[f"delivered_msgs_per_s_over_{key}"] = _ratio(
                h["delivered_msgs_per_s"], peer["msgs_per_s"]
            )
        if f:
            ratios["flash_backlog_p50_over_idle_p50"] = f["backlog_over_idle_p50"]
            if "ingest_over_idle_p50" in f:
                ratios["flash_sending_p50_over_idle_p50"] = f["ingest_over_idle_p50"]
        if k:
            ratios["link_msgs_per_s_over_baseline"] = _ratio(k["msgs_per_s"], b["msgs_per_s"])
        pg = self.postgresql.get("hotline", {})
        if "delivered_msgs_per_s" in pg:
            ratios["postgresql_delivered_p50_over_sqlite_p50"] = _ratio(
                pg["delivered_p50_ms"], h["delivered_p50_ms"]
            )
            ratios["postgresql_delivered_p99_over_sqlite_p99"] = _ratio(
                pg["delivered_p99_ms"], h["delivered_p99_ms"]
            )
            ratios["postgresql_delivered_msgs_per_s_over_sqlite"] = _ratio(
                pg["delivered_msgs_per_s"], h["delivered_msgs_per_s"]
            )
        return ratios

    def measured_peers(self) -> dict[str, dict[str, Any]]:
        """The peers that were measured (not skipped, not failed)."""
        return {key: peer for key, peer in self.peers.items() if "msgs_per_s" in peer}

    def to_json(self, command: str) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            **self.peers,
            "hotline": self.hotline,
            "ratios": self.ratios(),
            "throughput_steps": self.steps,
            "precedence": self.precedence,
            "link": self.link,
            "postgresql": self.postgresql,
            "metrics_cost": self.metrics_cost,
            "notes": self.notes,
            "machine": machine_info(),
            "load_average_start_end": self.load_average,
            "command": command,
        }


def _ratio(x: float, y: float) -> float:
    return round(x / y, 2) if y else 0.0


def _gateways_us(us: Mapping[str, float]) -> float:
    """CPU µs per message of the two gateways together (the load generator left out)."""
    return sum(value for name, value in us.items() if name not in ("simulator", DATABASE))


async def _wait_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the echo server exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError("the echo server did not start")
        await asyncio.sleep(0.05)
    return path.read_text().strip()


def _spawn_echo(pki: Path, port_file: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sim.bench",
            "echo-server",
            "--pki",
            str(pki),
            "--party",
            "JP",
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def measure_baseline(
    pki: Path, workdir: Path, payload: bytes, budget: Budget, echo: Callable[[str], None]
) -> dict[str, Any]:
    port_file = workdir / "echo.port"
    port_file.unlink(missing_ok=True)
    proc = _spawn_echo(pki, port_file)
    try:
        port = await _wait_file(port_file, proc)
        tw = PartyPaths.of(pki, "TW")
        creds = credentials(tw.gateway_cert, tw.gateway_key, tw.peer_ca_cert)
        channel = secure_channel(f"127.0.0.1:{port}", creds, server_party="JP")
        async with channel:
            await asyncio.wait_for(channel.channel_ready(), 10)
            stream: Any = channel.stream_stream(ECHO_METHOD)
            echo("baseline: one message in flight ...")
            call = stream()
            histogram = new_histogram()
            end_warm = time.monotonic() + budget.warmup
            end = end_warm + budget.baseline_latency
            while True:
                start = time.perf_counter()
                await call.write(payload)
                await call.read()
                now = time.monotonic()
                if now > end:
                    break
                if now > end_warm:
                    record_seconds(histogram, time.perf_counter() - start)
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:  # (reads and iteration don't mix)
                pass
            latency = summarize(histogram)
            echo(f"baseline: pipelined, {WINDOW} in flight ...")
            cpu = CpuMeter({"echo-server": proc.pid})
            rate = await _pipelined(stream, payload, budget, cpu)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
        "msgs_per_s": round(rate, 1),
        "latency": latency,
        "cpu_percent": cpu.result,
        "payload_bytes": len(payload),
        "window": WINDOW,
    }


async def _pipelined(stream: Any, payload: bytes, budget: Budget, cpu: CpuMeter) -> float:
    call = stream()
    window = asyncio.Semaphore(WINDOW)
    running = True
    counted = 0
    measuring = False

    async def writer() -> None:
        while running:
            await window.acquire()
            await call.write(payload)
        await call.done_writing()

    async def reader() -> None:
        nonlocal counted
        while await call.read() is not grpc.aio.EOF:
            window.release()
            if measuring:
                counted += 1

    tasks = [asyncio.create_task(writer()), asyncio.create_task(reader())]
    await asyncio.sleep(budget.warmup)
    measuring = True
    cpu.start()
    start = time.monotonic()
    await asyncio.sleep(budget.baseline_throughput)
    measuring = False
    elapsed = time.monotonic() - start
    cpu.stop()
    running = False
    window.release()
    with contextlib.suppress(asyncio.TimeoutError, grpc.aio.AioRpcError):
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
    for task in tasks:
        task.cancel()
    return counted / elapsed


@dataclass
class _Backlog:
    """One precedence round's ROUTINE messages, counted as their DELIVERED events arrive, with
    where each stood in JP's journal: (journal position of the message, link sequence it was
    settled under, journal position of its settlement = the event's cursor). The FLASH waited
    for with `_Deliveries.expect` during the round is recorded the same way."""

    trigger_at: int
    ids: set[str] = field(default_factory=set)
    delivered: int = 0
    triggered: asyncio.Event = field(default_factory=asyncio.Event)
    records: dict[str, tuple[int, int, int]] = field(default_factory=dict)


class _Deliveries:
    """Follows the sender gateway's DELIVERED events; lets callers wait for one message.

    While a `backlog` is set, its messages are counted and recorded as they are delivered, and
    so is a message waited for with `expect`."""

    def __init__(self, client: OperatorClient, cursor: int) -> None:
        self.client = client
        self.cursor = cursor
        self.count = 0
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.backlog: _Backlog | None = None
        self.task = asyncio.create_task(self._run(), name="deliveries")

    async def _run(self) -> None:
        kinds = (operator_pb2.EVENT_KIND_MESSAGE_DELIVERED,)
        async for event in self.client.watch(self.cursor, kinds):
            self.count += 1
            backlog = self.backlog
            future = self.waiting.pop(event.message_id, None)
            if backlog is not None:  # (the FLASH too: the probe tells its id afterwards)
                record = event.message
                backlog.records[event.message_id] = (
                    record.journal_position,
                    record.sequence,
                    event.cursor,
                )
                if event.message_id in backlog.ids:
                    backlog.delivered += 1
                    if backlog.delivered >= backlog.trigger_at:
                        backlog.triggered.set()
            if future is not None and not future.done():
                future.set_result(time.perf_counter())

    def expect(self, message_id: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[message_id] = future
        return future

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ClientError):
            await self.task


async def _send(client: OperatorClient, envelope: Any, errors: dict[str, int]) -> None:
    """Send one envelope, retrying (same message id, so the gateway journals it once) while the
    gateway pushes back or is briefly unavailable; other errors are raised."""
    for attempt in range(200):
        try:
            await client.send(envelope)
            return
        except (RateLimited, Unavailable, Timeout) as exc:
            name = type(exc).__name__
            errors[name] = errors.get(name, 0) + 1
            await asyncio.sleep(min(0.2, 0.01 * (attempt + 1)))
    raise RuntimeError(f"could not send {envelope.message_id} after 200 attempts")


@dataclass
class _Journaling:
    """A batch of ROUTINE sends in progress: how many were started and journaled so far."""

    count: int
    started: int = 0
    journaled: int = 0
    errors: dict[str, int] = field(default_factory=dict)


async def _journal_many(
    clients: Sequence[OperatorClient],
    payloads: Payloads,
    job: _Journaling,
    concurrency: int,
    on_id: Callable[[str], None] | None = None,
) -> None:
    """Send `job.count` ROUTINE messages to TW from `concurrency` pipelined senders (no one
    waits for delivery) spread over `clients`, as fast as the gateway journals them."""
    precedence = common_pb2.PRECEDENCE_ROUTINE

    async def sender(index: int) -> None:
        client = clients[index % len(clients)]
        while job.started < job.count:
            job.started += 1
            message_id = new_message_id()
            if on_id is not None:
                on_id(message_id)
            await _send(client, payloads.make("TW", precedence, message_id), job.errors)
            job.journaled += 1

    await asyncio.gather(*(sender(i) for i in range(max(1, min(concurrency, job.count)))))


async def _link_up(client: OperatorClient, timeout: float = 15.0) -> None:
    status = await client.link_status()
    deadline = time.monotonic() + timeout
    while not (status.outbound.up and status.inbound.up) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        status = await client.link_status()


async def _outbox_empty(client: OperatorClient, timeout: float) -> bool:
    """Wait until the gateway holds no unsettled outbound message; False on timeout."""
    deadline = time.monotonic() + timeout
    while (await client.link_status()).outbound.queue_depth > 0:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _start_target(
    workdir: Path,
    operators: int,
    journals: Mapping[str, str] | None,
    per_party: Mapping[str, Mapping[str, Any]] | None = None,
) -> Target:
    """A pair without fault proxies and with the operator limits lifted; with `journals`, each
    party's journal is the one named there (a PostgreSQL URL) instead of a file; `per_party`
    adds settings to one party's file (`metrics_listen`: a port for each)."""
    if journals is None and per_party is None:
        return await Target.start_pair(
            workdir, proxies=False, operators=operators, settings=UNLIMITED
        )
    names = operator_names(max(2, operators))
    pair = await GatewayPair.start(
        workdir, operators=names, proxies=False, settings=UNLIMITED, start=()
    )
    try:
        for party, side in pair.sides.items():
            with side.config_path.open("rb") as f:
                values = tomllib.load(f)
            if journals is not None:
                values["journal"] = journals[party]
            values.update((per_party or {}).get(party, {}))
            write_config(side.config_path, values)
        for side in pair.sides.values():
            side.spawn()
        for side in pair.sides.values():
            await side.wait_ready()
    except BaseException:
        await pair.stop()
        raise
    return Target(
        parties=pair.parties,
        addresses={p: pair.side(p).address for p in pair.parties},
        pki=pair.pki,
        operators=names,
        pair=pair,
    )


async def measure_hotline(
    workdir: Path,
    payload_bytes: int,
    budget: Budget,
    echo: Callable[[str], None],
    *,
    journals: Mapping[str, str] | None = None,
    steps_wanted: Sequence[tuple[int, int]] | None = None,
    stream: bool = True,
    server_cpu: Callable[[], float | None] | None = None,
    label: str = "hotline",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Latency at one in flight and the throughput steps, on one pair. Returns (hotline
    figures, throughput steps).

    By default the journals are SQLite files and the steps are 4, 16, 64, 256 unary senders
    (until the rate stops growing) then SendBatch 2 x 32, 4 x 64, 8 x 128. `journals` puts
    each party's journal elsewhere (a PostgreSQL URL); `steps_wanted` runs those (senders,
    batch) steps instead; `server_cpu` reads the CPU seconds of a database server so far,
    reported as its own process ("PostgreSQL")."""
    senders_max = 8
    target = await _start_target(
        workdir / ("pair" if journals is None else f"pair-{label}"), senders_max, journals
    )
    clients: list[OperatorClient] = []
    try:
        for name in target.operators:
            clients.append(
                OperatorClient.from_pki(target.pki, "JP", name, address=target.addresses["JP"])
            )
        senders = clients
        watcher = clients[0]
        await _link_up(watcher)
        payloads = Payloads(payload_bytes, target.parties)
        deliveries = _Deliveries(watcher, 0)
        precedence = common_pb2.PRECEDENCE_ROUTINE

        async def one(client: OperatorClient) -> float:
            message_id = new_message_id()
            delivered = deliveries.expect(message_id)
            start = time.perf_counter()
            await client.send(payloads.make("TW", precedence, message_id))
            return await asyncio.wait_for(delivered, 30) - start

        echo(f"{label}: one message in flight ...")
        histogram = new_histogram()
        end_warm = time.monotonic() + budget.warmup
        end = end_warm + budget.hotline_latency
        while time.monotonic() < end:
            seconds = await one(watcher)
            if time.monotonic() > end_warm:
                record_seconds(histogram, seconds)
        latency = summarize(histogram)

        stream_latency: dict[str, float] = {}
        if stream:
            echo(f"{label}: one message in flight over a SendStream ...")
            histogram = new_histogram()
            async with watcher.stream() as send_stream:

                async def streamed() -> float:
                    message_id = new_message_id()
                    delivered = deliveries.expect(message_id)
                    start = time.perf_counter()
                    await send_stream.send(payloads.make("TW", precedence, message_id))
                    return await asyncio.wait_for(delivered, 30) - start

                end_warm = time.monotonic() + budget.warmup / 2
                end = end_warm + budget.hotline_latency / 2
                while time.monotonic() < end:
                    seconds = await streamed()
                    if time.monotonic() > end_warm:
                        record_seconds(histogram, seconds)
            stream_latency = summarize(histogram)

        steps: list[dict[str, Any]] = []
        pids = target.gateway_pids()

        async def step(concurrency: int, size: int) -> dict[str, Any]:
            if size > 1:
                echo(f"{label}: SendBatch of {size} from {concurrency} concurrent senders ...")
            else:
                echo(f"{label}: pipelined sends from {concurrency} concurrent senders ...")
            return await _throughput_step(
                senders, payloads, deliveries, concurrency, budget, pids, size, server_cpu
            )

        if steps_wanted is not None:
            for concurrency, size in steps_wanted:
                steps.append(await step(concurrency, size))
        else:
            best = 0.0
            for concurrency in (4, 16, 64, 256):
                steps.append(await step(concurrency, 1))
                rate = steps[-1]["delivered_msgs_per_s"]
                growth = rate / best if best else float("inf")
                best = max(best, rate)
                if growth < 1.05:
                    break
            # Batched submission (SendBatch): what a high-rate sender can push through.
            for concurrency, size in ((2, 32), (4, 64), (8, 128)):
                steps.append(await step(concurrency, size))
        best_step = max(steps, key=lambda s: s["delivered_msgs_per_s"])

        await deliveries.close()
        return (
            {
                "delivered_p50_ms": latency["p50"],
                "delivered_p99_ms": latency["p99"],
                **(
                    {
                        "stream_delivered_p50_ms": stream_latency["p50"],
                        "stream_delivered_p99_ms": stream_latency["p99"],
                    }
                    if stream_latency
                    else {}
                ),
                "delivered_msgs_per_s": best_step["delivered_msgs_per_s"],
                "latency": latency,
                "best_senders": best_step["senders"],
                "best_batch": best_step["batch"],
                "cpu_percent": best_step["cpu_percent"],
                "cpu_us_per_msg": best_step["cpu_us_per_msg"],
                "payload_bytes": payload_bytes,
                "operators": len(senders),
            },
            steps,
        )
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
        await target.stop()


async def _throughput_step(
    clients: list[OperatorClient],
    payloads: Payloads,
    deliveries: _Deliveries,
    concurrency: int,
    budget: Budget,
    pids: dict[str, int],
    batch: int = 1,
    server_cpu: Callable[[], float | None] | None = None,
) -> dict[str, Any]:
    """Senders submitting back to back: one `Send` at a time each, or `SendBatch`es of `batch`.
    With `server_cpu`, the database server's CPU is counted beside the processes'."""
    running = True
    sent = 0
    precedence = common_pb2.PRECEDENCE_ROUTINE

    async def sender(index: int) -> None:
        nonlocal sent
        client = clients[index % len(clients)]
        while running:
            try:
                if batch == 1:
                    await client.send(payloads.make("TW", precedence, new_message_id()))
                    sent += 1
                    continue
                envelopes = [
                    payloads.make("TW", precedence, new_message_id()) for _ in range(batch)
                ]
                results = await client.send_many(envelopes)
                sent += sum(1 for r in results if not isinstance(r, ClientError))
            except ClientError:
                await asyncio.sleep(0.01)

    before = deliveries.count
    tasks = [asyncio.create_task(sender(i)) for i in range(concurrency)]
    await asyncio.sleep(budget.warmup)
    cpu = CpuMeter(pids).start()
    server_before = server_cpu() if server_cpu is not None else None
    start_count = deliveries.count
    start = time.monotonic()
    await asyncio.sleep(budget.hotline_step)
    delivered = deliveries.count - start_count
    elapsed = time.monotonic() - start
    cpu_result = cpu.stop()
    server_after = server_cpu() if server_cpu is not None else None
    if server_before is not None and server_after is not None:
        cpu.seconds[DATABASE] = server_after - server_before
        cpu_result[DATABASE] = round(100.0 * cpu.seconds[DATABASE] / elapsed, 1)
    running = False
    await asyncio.gather(*tasks, return_exceptions=True)
    # Let the backlog drain before the next step, so each step starts from an empty outbox.
    deadline = time.monotonic() + 30
    while deliveries.count - before < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return {
        "senders": concurrency,
        "batch": batch,
        "delivered_msgs_per_s": round(delivered / elapsed, 1),
        "delivered": delivered,
        "cpu_percent": cpu_result,
        "cpu_us_per_msg": cpu.per_message_us(delivered),
    }


# ---------------------------------------------------------------------------------------------
# The cost of /metrics


def _scrape(port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _journaled_count(text: str) -> float:
    """Outbound messages journaled, as one scrape counts them (`hotline_messages_total`)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "hotline_messages_total"
        and sample.labels.get("direction") == "out"
        and sample.labels.get("outcome") == "journaled"
    )


async def measure_metrics_cost(
    workdir: Path, payload_bytes: int, budget: Budget, echo: Callable[[str], None]
) -> dict[str, Any]:
    """The same load (METRICS_LOAD) on two pairs side by side, one whose gateways serve
    /metrics (scraped every METRICS_SCRAPE_S by this process) and one without; off then on
    (off, on, on, off with `budget.metrics_rounds` 2): delivered per second and CPU per
    delivered message of each process, for both."""
    concurrency, batch = METRICS_LOAD
    ports = {"JP": free_port(), "TW": free_port()}
    targets: dict[str, Target] = {}
    clients: dict[str, list[OperatorClient]] = {}
    deliveries: dict[str, _Deliveries] = {}
    try:
        for mode in ("off", "on"):
            echo(f"metrics: start a pair with /metrics {mode} ...")
            per_party = (
                {p: {"metrics_listen": f"127.0.0.1:{port}"} for p, port in ports.items()}
                if mode == "on"
                else {}
            )
            target = targets[mode] = await _start_target(
                workdir / f"metrics-{mode}", concurrency, None, per_party
            )
            clients[mode] = [
                OperatorClient.from_pki(target.pki, "JP", name, address=target.addresses["JP"])
                for name in target.operators
            ]
            await _link_up(clients[mode][0])
            deliveries[mode] = _Deliveries(clients[mode][0], 0)
        payloads = Payloads(payload_bytes, targets["off"].parties)
        scrapes: list[str] = []

        async def scraper() -> None:
            while True:
                for port in ports.values():
                    with contextlib.suppress(OSError):
                        scrapes.append(await asyncio.to_thread(_scrape, port))
                await asyncio.sleep(METRICS_SCRAPE_S)

        order = ("off", "on", "on", "off") if budget.metrics_rounds > 1 else ("off", "on")
        rounds: list[dict[str, Any]] = []
        scraping = asyncio.create_task(scraper(), name="metrics-scraper")
        try:
            for mode in order:
                echo(f"metrics: SendBatch of {batch} from {concurrency} senders, /metrics {mode}")
                step = await _throughput_step(
                    clients[mode],
                    payloads,
                    deliveries[mode],
                    concurrency,
                    budget,
                    targets[mode].gateway_pids(),
                    batch,
                )
                rounds.append({"metrics": mode, **step})
        finally:
            scraping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scraping
        answered = [text for text in scrapes if "hotline_" in text]
        out: dict[str, Any] = {
            "senders": concurrency,
            "batch": batch,
            "scrape_interval_s": METRICS_SCRAPE_S,
            "scrapes": len(answered),
            # what the last scrape counted: proof that the "on" pair was counting
            "scraped_journaled": max((_journaled_count(t) for t in answered), default=0.0),
            "rounds": rounds,
        }
        for mode in ("off", "on"):
            mine = [r for r in rounds if r["metrics"] == mode]
            delivered = sum(r["delivered"] for r in mine)
            names = {name for r in mine for name in r["cpu_us_per_msg"]}
            out[mode] = {
                "delivered_msgs_per_s": round(
                    statistics.mean(r["delivered_msgs_per_s"] for r in mine), 1
                ),
                # weighted by the messages of each round: total CPU / total delivered
                "cpu_us_per_msg": {
                    name: round(
                        sum(r["cpu_us_per_msg"].get(name, 0.0) * r["delivered"] for r in mine)
                        / delivered,
                        1,
                    )
                    for name in sorted(names)
                }
                if delivered
                else {},
            }
        return out
    finally:
        for watcher in deliveries.values():
            await watcher.close()
        for pair_clients in clients.values():
            for client in pair_clients:
                with contextlib.suppress(Exception):
                    await client.close()
        for target in targets.values():
            await target.stop()


def format_metrics_cost(result: BenchResult, width: int = 52) -> list[str]:
    """The table's rows for the cost of /metrics (none if it was not measured)."""
    m = result.metrics_cost
    if not m:
        return []
    why = _failure(m)
    if why is not None:
        return [f"   {'metrics   /metrics on vs off':<{width}}{why}"]
    r = result.ratios()
    off, on = m["off"], m["on"]
    turns = ", ".join(round_["metrics"] for round_ in m["rounds"])
    title = f"metrics   /metrics on vs off ({m['senders']} x SendBatch {m['batch']}; {turns})"
    scraped = f"  on, scraped every {m['scrape_interval_s']:g} s ({m['scrapes']} scrapes)"
    return [
        f"   {title:<{width}}{'':>18}{'msgs/s':>10}",
        f"   {'  off':<{width}}{'':>18}{off['delivered_msgs_per_s']:>10.0f}",
        f"   {scraped:<{width}}{'':>18}{on['delivered_msgs_per_s']:>10.0f}",
        f"   {'  ratio on / off, delivered per second':<{width}}{'':>18}"
        f"{r['metrics_on_over_off_delivered_msgs_per_s']:>9.2f}x",
        f"     cpu µs per delivered message, off: {_per_process(off['cpu_us_per_msg'])}; "
        f"on: {_per_process(on['cpu_us_per_msg'])}",
        f"     both gateways' cpu per message on / off: "
        f"{r['metrics_on_over_off_gateway_cpu_us_per_msg']:.2f}x (the cost; target under "
        "1.05x; the rate ratio also carries the shared machine's drift)",
    ]


# ---------------------------------------------------------------------------------------------
# Precedence under backlog


def _stats(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """p50 / max over FLASH timings (`FlashProbe.flash` answers, with drain order if any)."""
    if not rounds:
        return {"samples": 0}
    ms = [r["ms"] for r in rounds]
    out: dict[str, Any] = {
        "samples": len(rounds),
        "p50_ms": round(statistics.median(ms), 3),
        "max_ms": round(max(ms), 3),
        "send_p50_ms": round(statistics.median(r["send_ms"] for r in rounds), 3),
        # Send returned -> DELIVERED on the console's Watch (outbox, link, receipt, event)
        "link_p50_ms": round(statistics.median(r["ms"] - r["send_ms"] for r in rounds), 3),
        "link_max_ms": round(max(r["ms"] - r["send_ms"] for r in rounds), 3),
    }
    for part in ("journal_to_peer", "peer_to_settled", "settled_to_seen"):
        out[f"{part}_p50_ms"] = round(statistics.median(r[f"{part}_ms"] for r in rounds), 3)
    if "routine_ahead_of_flash" in rounds[0]:
        out |= {
            "routine_unsettled_when_flash_journaled_p50": statistics.median(
                r["routine_unsettled_when_flash_journaled"] for r in rounds
            ),
            "routine_ahead_of_flash_p50": statistics.median(
                r["routine_ahead_of_flash"] for r in rounds
            ),
            "routine_ahead_of_flash_max": max(r["routine_ahead_of_flash"] for r in rounds),
            "routine_overtaken_by_flash_p50": statistics.median(
                r["routine_overtaken_by_flash"] for r in rounds
            ),
            "routine_journaled_after_flash_settled_before_max": max(
                r["routine_journaled_after_flash_settled_before"] for r in rounds
            ),
            "routine_delivered_after_flash_p50": statistics.median(
                r["routine_delivered_after_flash"] for r in rounds
            ),
        }
    return out


async def measure_precedence(
    workdir: Path, payload_bytes: int, budget: Budget, echo: Callable[[str], None]
) -> dict[str, Any]:
    """FLASH Send → DELIVERED on an idle link, then behind a ROUTINE backlog, on a pair of its
    own, timed by a FLASH console in a process of its own (`sim.flash_probe`).

    Idle: `idle_flash_samples` FLASH messages one at a time (two more first, dropped).
    Draining (the figure the precedence lanes answer for), per round: with TW stopped, 64
    pipelined senders journal `backlog_messages` ROUTINE at JP; TW is started, and once
    BACKLOG_TRIGGER of them are delivered the console sends one FLASH. Ingesting (a stress
    figure), per round: the same senders journal the ROUTINE as fast as JP takes them while
    the link drains them, and the FLASH goes once BACKLOG_TRIGGER are delivered: JP's CPU is
    then saturated by the operator calls themselves. Where the FLASH landed in the drain order
    is counted from JP's journal (`drain_order`)."""
    size, rounds_wanted = budget.backlog_messages, budget.backlog_rounds
    senders_max = 8
    names = operator_names(senders_max + 1)  # the last one is the FLASH console
    settings = {**UNLIMITED, "reconnect_min_s": 0.05, "reconnect_max_s": 0.1}
    pair = await GatewayPair.start(
        workdir / "precedence", operators=names, proxies=False, settings=settings
    )
    jp, tw = pair.side("JP"), pair.side("TW")
    senders = [
        OperatorClient.from_pki(pair.pki, "JP", name, address=jp.address)
        for name in names[:senders_max]
    ]
    probe = FlashProbe(pair.pki, "JP", names[-1], jp.address, payload_bytes, "TW")
    deliveries: _Deliveries | None = None
    errors: dict[str, int] = {}
    try:
        await _link_up(senders[0])
        await probe.ready()
        payloads = Payloads(payload_bytes, pair.parties)
        deliveries = _Deliveries(senders[0], 0)
        echo(f"precedence: FLASH on an idle link, {budget.idle_flash_samples} samples ...")
        idle = [await probe.flash() for _ in range(budget.idle_flash_samples + 2)][2:]
        drained: list[dict[str, Any]] = []
        ingested: list[dict[str, Any]] = []
        for number in range(1, rounds_wanted + 1):
            echo(
                f"precedence: FLASH behind {size} ROUTINE draining, "
                f"round {number}/{rounds_wanted} ..."
            )
            drained.append(
                await _backlog_round(senders, probe, payloads, deliveries, size, errors, restart=tw)
            )
        for number in range(1, rounds_wanted + 1):
            echo(
                f"precedence: FLASH while {size} ROUTINE are sent and drain, "
                f"round {number}/{rounds_wanted} ..."
            )
            ingested.append(
                await _backlog_round(senders, probe, payloads, deliveries, size, errors)
            )
    finally:
        probe.close()
        if deliveries is not None:
            await deliveries.close()
        for client in senders:
            with contextlib.suppress(Exception):
                await client.close()
        await pair.stop()
    idle_stats, drain_stats, ingest_stats = _stats(idle), _stats(drained), _stats(ingested)
    return {
        "routine_backlog": size,
        "routine_senders": BACKLOG_SENDERS,
        "flash_sent_at_delivered_fraction": BACKLOG_TRIGGER,
        "idle": idle_stats,
        "backlog": drain_stats,
        "ingest": ingest_stats,
        "backlog_over_idle_p50": _ratio(drain_stats["p50_ms"], idle_stats["p50_ms"]),
        "backlog_over_idle_link_p50": _ratio(drain_stats["link_p50_ms"], idle_stats["link_p50_ms"]),
        "ingest_over_idle_p50": _ratio(ingest_stats["p50_ms"], idle_stats["p50_ms"]),
        "rounds": drained,
        "ingest_rounds": ingested,
        "send_errors_retried": errors,
    }


async def _backlog_round(
    senders: list[OperatorClient],
    probe: FlashProbe,
    payloads: Payloads,
    deliveries: _Deliveries,
    size: int,
    errors: dict[str, int],
    restart: GatewayProcess | None = None,
) -> dict[str, Any]:
    """One round: journal `size` ROUTINE (with `restart`, the peer gateway, stopped until
    they are all journaled), send a FLASH once BACKLOG_TRIGGER of them are delivered, wait
    until all are delivered. Send errors retried are added to `errors`."""
    backlog = _Backlog(trigger_at=max(1, round(size * BACKLOG_TRIGGER)))
    deliveries.backlog = backlog
    job = _Journaling(size)
    began = time.monotonic()
    if restart is not None:
        await restart.terminate()
        await _journal_many(senders, payloads, job, BACKLOG_SENDERS, on_id=backlog.ids.add)
        await restart.start()
    journal_task = asyncio.create_task(
        _journal_many(senders, payloads, job, BACKLOG_SENDERS, on_id=backlog.ids.add)
    )
    waiting = asyncio.create_task(backlog.triggered.wait())
    try:
        done, _ = await asyncio.wait(
            {waiting, journal_task}, timeout=120, return_when=asyncio.FIRST_COMPLETED
        )
        if journal_task in done:
            journal_task.result()  # the senders' error, if any
        await asyncio.wait_for(waiting, 120)  # (every ROUTINE may be journaled before it)
        journaled_at_send, delivered_at_send = job.journaled, backlog.delivered
        flash = await probe.flash()
        await journal_task
        deadline = time.monotonic() + max(60.0, size / 20)
        while (
            backlog.delivered < size or flash["message_id"] not in backlog.records
        ) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
    finally:
        waiting.cancel()
        journal_task.cancel()
        deliveries.backlog = None
    for name, n in job.errors.items():
        errors[name] = errors.get(name, 0) + n
    flash_id = flash.pop("message_id")
    return {
        **{k: round(v, 3) for k, v in flash.items()},
        "flash_delivered": flash_id in backlog.records,
        "routine_journaled": job.journaled,
        "routine_delivered": backlog.delivered,
        "routine_journaled_at_flash_send": journaled_at_send,
        "routine_delivered_at_flash_send": delivered_at_send,
        **drain_order(
            {k: v for k, v in backlog.records.items() if k in backlog.ids or k == flash_id},
            flash_id,
        ),
        "round_s": round(time.monotonic() - began, 2),
    }


def drain_order(records: dict[str, tuple[int, int, int]], flash_id: str) -> dict[str, int]:
    """Where the FLASH went among the ROUTINE, from JP's journal (exact, whatever the lag of
    the event stream): by journal position of each message and of its settlement, and by the
    link sequence it was settled under (the receiver settles in sequence order)."""
    flash_position, flash_sequence, _ = records[flash_id]
    routine = [v for k, v in records.items() if k != flash_id]
    return {
        # ROUTINE journaled and not yet settled when the FLASH was journaled
        "routine_unsettled_when_flash_journaled": sum(
            p < flash_position < c for p, _, c in routine
        ),
        # ... of which, and of any journaled later, settled ahead of it: it waited behind these
        "routine_ahead_of_flash": sum(
            c > flash_position and s < flash_sequence for _, s, c in routine
        ),
        # ROUTINE journaled before the FLASH that it overtook (precedence in the outbox)
        "routine_overtaken_by_flash": sum(
            p < flash_position and s > flash_sequence for p, s, _ in routine
        ),
        # ROUTINE journaled after the FLASH yet settled before it (0 if nothing queues a FLASH
        # behind lower precedence)
        "routine_journaled_after_flash_settled_before": sum(
            p > flash_position and s < flash_sequence for p, s, _ in routine
        ),
        "routine_delivered_after_flash": sum(s > flash_sequence for _, s, _ in routine),
    }


# ---------------------------------------------------------------------------------------------
# The peer link alone


async def measure_link(
    workdir: Path, payload_bytes: int, budget: Budget, echo: Callable[[str], None]
) -> dict[str, Any]:
    """Link-level throughput: N ROUTINE journaled at JP while TW is not running, then TW
    started; the drain is timed from TW serving until JP's outbound queue depth is 0 (read
    every LINK_POLL_S over the operator API: no Watch stream, no sends during the drain).

    JP redials quickly here (reconnect_max_s 0.1), so the time to notice TW is small; it is
    reported apart (`first_settlement_s`), with the rate from the first settlement on."""
    count, senders_max = budget.link_messages, 8
    settings = {**UNLIMITED, "reconnect_min_s": 0.05, "reconnect_max_s": 0.1}
    names = operator_names(senders_max)
    pair = await GatewayPair.start(
        workdir / "link", operators=names, proxies=False, settings=settings, start=("JP",)
    )
    jp, tw = pair.side("JP"), pair.side("TW")
    clients = [OperatorClient.from_pki(pair.pki, "JP", name, address=jp.address) for name in names]
    try:
        payloads = Payloads(payload_bytes, pair.parties)
        echo(f"link: journal {count} ROUTINE at JP with TW stopped ...")
        job = _Journaling(count)
        began = time.monotonic()
        await _journal_many(clients, payloads, job, BACKLOG_SENDERS)
        journal_s = time.monotonic() - began
        probe = clients[0]
        depth = (await probe.link_status()).outbound.queue_depth
        if depth != count:
            raise RuntimeError(f"JP's outbound queue holds {depth} messages, expected {count}")

        echo(f"link: start TW, drain {count} ...")
        spawned = time.monotonic()
        await tw.start()
        ready = time.monotonic()
        pids = {p: side.proc.pid for p, side in pair.sides.items() if side.proc is not None}
        cpu = CpuMeter(pids).start()
        first: tuple[float, int] | None = None
        deadline = ready + max(60.0, count / 20)
        while True:
            depth = (await probe.link_status()).outbound.queue_depth
            now = time.monotonic()
            if first is None and depth < count:
                first = (now, count - depth)
            if depth == 0:
                break
            if now > deadline:
                raise RuntimeError(f"the link did not drain within {deadline - ready:.0f} s")
            await asyncio.sleep(LINK_POLL_S)
        # The queue empties when the batch receipts are verified; the drain ends when JP has
        # journaled them all (DELIVERED is durable at both ends).
        while True:
            delivered = await probe.list(
                direction=operator_pb2.DIRECTION_OUTBOUND, states=(DELIVERED,), page_size=1000
            )
            now = time.monotonic()
            if len(delivered) >= min(count, 1000) or now > deadline:
                break
            await asyncio.sleep(LINK_POLL_S)
        cpu.stop()
        drain_s = now - ready
        first_at, first_settled = first or (now, count)
        steady_s = now - first_at
        return {
            "messages": count,
            "journal_s": round(journal_s, 3),
            "journal_msgs_per_s": round(count / journal_s, 1),
            "tw_start_s": round(ready - spawned, 3),
            "first_settlement_s": round(first_at - ready, 3),
            "drain_s": round(drain_s, 3),
            "msgs_per_s": round(count / drain_s, 1),
            "steady_msgs_per_s": round((count - first_settled) / steady_s, 1) if steady_s else 0.0,
            "delivered": len(delivered),
            "cpu_percent": cpu.result,
            "cpu_us_per_msg": cpu.per_message_us(count),
            "poll_interval_s": LINK_POLL_S,
            "send_errors_retried": job.errors,
        }
    finally:
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
        await pair.stop()


# ---------------------------------------------------------------------------------------------
# On PostgreSQL


async def measure_postgresql(
    workdir: Path,
    payload_bytes: int,
    budget: Budget,
    echo: Callable[[str], None],
    *,
    steps: Sequence[tuple[int, int]] = POSTGRESQL_STEPS,
    server: postgres.PostgresServer | None = None,
) -> dict[str, Any]:
    """The hot line with both gateways' journals in PostgreSQL (latency at one in flight, the
    `steps` throughput steps, CPU per message with the database server's), then the failover
    of JP's active/standby pair (`sim.failover`), on one throwaway server (`sim.postgres`;
    or on `server`, left running). {"skipped": why} if no server can start here; a part that
    fails is reported {"failed": error} and the other still runs."""
    owned = server is None
    if server is None:
        echo("postgresql: start a throwaway server ...")
        try:
            server = await asyncio.to_thread(postgres.start)
        except PostgresUnavailable as exc:
            return {"skipped": str(exc).strip().splitlines()[0][:300]}
    out: dict[str, Any] = {"server": server.version()}
    try:
        try:
            journals = {"JP": server.new_database(), "TW": server.new_database()}
            out["hotline"], out["throughput_steps"] = await measure_hotline(
                workdir,
                payload_bytes,
                budget,
                echo,
                journals=journals,
                steps_wanted=steps,
                stream=False,
                server_cpu=server.cpu_seconds,
                label="postgresql",
            )
        except Exception as exc:  # reported, and the failover is still measured
            out["hotline"] = {"failed": f"{type(exc).__name__}: {exc}"[:500]}
        try:
            out["failover"] = await measure_failover(
                server, workdir / "failover", payload_bytes, budget.failover_rounds, echo
            )
        except Exception as exc:
            out["failover"] = {"failed": f"{type(exc).__name__}: {exc}"[:500]}
    finally:
        if owned:
            await asyncio.to_thread(postgres.stop, server)
    return out


async def run_bench(
    workdir: Path, *, duration: float, payload_bytes: int, echo: Callable[[str], None]
) -> BenchResult:
    budget = Budget(duration)
    load_start = os.getloadavg()[0]
    result = BenchResult()
    pki = workdir / "bench-pki"
    init_pki(pki, ("JP", "TW"), ("watch-1",))
    payload = os.urandom(payload_bytes)
    result.baseline = await measure_baseline(pki, workdir, payload, budget, echo)
    result.peers, peer_notes = await measure_peers(
        workdir / "peers", pki, payload, budget.peer, echo
    )
    result.hotline, result.steps = await measure_hotline(workdir, payload_bytes, budget, echo)
    result.precedence = await measure_precedence(workdir, payload_bytes, budget, echo)
    result.link = await measure_link(workdir, payload_bytes, budget, echo)
    result.postgresql = await measure_postgresql(workdir, payload_bytes, budget, echo)
    try:
        result.metrics_cost = await measure_metrics_cost(workdir, payload_bytes, budget, echo)
    except Exception as exc:  # reported; the rest of the bench stands
        result.metrics_cost = {"failed": f"{type(exc).__name__}: {exc}"[:500]}
    result.load_average = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    result.notes += [
        "baseline: one mTLS hop, no persistence; hotline: operator API + peer link, three "
        "fsynced SQLite commits, signing and verification, and a Watch event per delivery",
        "precedence: FLASH Send -> DELIVERED (sender's Watch event) on an idle link vs sent "
        "once a quarter of a pipelined ROUTINE backlog is delivered; flash_send_ms is the "
        "Send call alone (operator API and JP's journal), the rest is outbox and link",
        "link: the peer link alone: ROUTINE journaled at JP before TW runs, drain timed from "
        "TW serving to JP's outbound queue depth 0 (polled); the simulator only polls",
        "peers (nats_sync_always, rabbitmq_quorum): one hop, one durable write per message: a "
        "publisher over the same mTLS (the bench PKI's JP gateway certificate on the broker, "
        f"which requires TW's), the same payload, broker ack after fsync; {IN_FLIGHT} in flight "
        "for msgs/s; nothing consumes. A hotline delivery is two hops plus a receipt, three "
        "fsynced commits, four Ed25519 operations and a Watch event",
        "postgresql: the same hot line with both journals in a throwaway PostgreSQL server on "
        "this machine (Unix socket, fsync and synchronous_commit on), steps "
        + ", ".join(f"{n}x{b}" for n, b in POSTGRESQL_STEPS)
        + " (senders x batch) against SQLite's full set; its CPU per message counts the whole "
        "server (both journals' connections and its background processes) as one process; "
        f"failover: JP active/standby on one database under {FAILOVER_SENDERS} steady senders, "
        "SIGKILL of the active, timed to the first Send answered and to the first DELIVERED "
        "event of a message sent after the kill (standby lock attempt every 0.5 s, client "
        "retry backoff <= 0.1 s and the Watch's reconnection included)",
        f"metrics_cost: the same load ({METRICS_LOAD[0]} senders x SendBatch "
        f"{METRICS_LOAD[1]}) on a pair whose gateways serve /metrics, scraped every "
        f"{METRICS_SCRAPE_S:g} s, and on a pair without (nothing counted); the pairs run side "
        "by side and take turns (off, on; off, on, on, off from --duration 30)",
        "cpu_us_per_msg: CPU seconds of each process over the measured interval divided by "
        "the messages delivered (or, for a peer, acknowledged) in it (simulator = this load "
        "generator)",
        *peer_notes,
    ]
    return result


def _per_process(us: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.0f}" for name, value in us.items()) or "-"


def _failure(part: dict[str, Any]) -> str | None:
    """ "skipped, why" or "FAILED, error" for a part that was not measured; None if it was."""
    if "skipped" in part:
        return f"skipped, {part['skipped']}"
    if "failed" in part:
        return f"FAILED, {part['failed']}"
    return None


def format_postgresql(result: BenchResult, width: int = 52) -> list[str]:
    """The table's PostgreSQL rows: the hot line on PostgreSQL beside SQLite, and the failover."""
    pg = result.postgresql
    if not pg:
        return []
    why = _failure(pg)
    if why is not None:
        return [f"   PostgreSQL both journals, and an active/standby failover: {why}"]
    lines: list[str] = []
    h, sqlite = pg.get("hotline", {}), result.hotline
    why = _failure(h)
    if why is not None:
        lines.append(f"   {'hotline   on PostgreSQL':<{width}}{why}")
    elif h:
        lines += [
            f"   {'hotline   on PostgreSQL, both journals (1 | max)':<{width}}"
            f"{h['delivered_p50_ms']:>9.3f}{h['delivered_p99_ms']:>9.3f}"
            f"{h['delivered_msgs_per_s']:>10.0f}",
        ]
        if "delivered_msgs_per_s" in sqlite:  # (not when the PostgreSQL part runs alone)
            r = result.ratios()
            lines.append(
                f"   {'ratio     PostgreSQL / SQLite':<{width}}"
                f"{r['postgresql_delivered_p50_over_sqlite_p50']:>8.1f}x"
                f"{r['postgresql_delivered_p99_over_sqlite_p99']:>8.1f}x"
                f"{r['postgresql_delivered_msgs_per_s_over_sqlite']:>9.2f}x"
            )
        lines.append(
            "     throughput steps: "
            + ", ".join(
                f"{s['senders']} senders"
                + (f" x SendBatch {s['batch']}" if s.get("batch", 1) > 1 else "")
                + f" {s['delivered_msgs_per_s']:.0f}/s"
                for s in pg.get("throughput_steps", [])
            )
        )
    f = pg.get("failover", {})
    why = _failure(f)
    if why is not None:
        lines.append(f"   {'failover  JP active/standby on PostgreSQL':<{width}}{why}")
    elif f:
        title = f"failover  kill -9 of JP's active ({f['rounds']} rounds)"
        lines += [
            f"   {title:<{width}}{'p50 ms':>9}{'max ms':>9}",
            f"   {'  to the first Send answered':<{width}}"
            f"{f['first_send_ok_p50_ms']:>9.1f}{f['first_send_ok_max_ms']:>9.1f}",
            f"   {'  to the first DELIVERED of a Send after the kill':<{width}}"
            f"{f['first_delivered_p50_ms']:>9.1f}{f['first_delivered_max_ms']:>9.1f}",
            f"     under {f['senders']} steady senders ({f['load_msgs_per_s']:.0f}/s); "
            f"{f['acknowledged']} acknowledged: {f['lost']} lost, {f['duplicated']} "
            f"duplicated, {f['reordered']} reordered"
            + ("" if f["integrity_ok"] else ", integrity check FAILED"),
        ]
    return lines


def format_bench(result: BenchResult) -> str:
    b, h, r = result.baseline, result.hotline, result.ratios()
    width = 52
    lines = [
        "== hotline sim bench",
        f"   payload {b['payload_bytes']} bytes, loopback, mutual TLS, "
        f"{machine_info().get('cpus')} CPUs"
        + (
            f", load average {result.load_average[0]:.1f} at the start, "
            f"{result.load_average[1]:.1f} at the end"
            if result.load_average
            else ""
        ),
        f"   {'':<{width}}{'p50 ms':>9}{'p99 ms':>9}{'msgs/s':>10}",
        f"   {'baseline  gRPC bidi echo (1 in flight | pipelined)':<{width}}"
        f"{b['p50_ms']:>9.3f}{b['p99_ms']:>9.3f}{b['msgs_per_s']:>10.0f}",
    ]
    for key, name, what in PEERS:
        peer = result.peers.get(key)
        if peer is None:
            continue
        if "msgs_per_s" in peer:
            label = f"{name:<10}{what} (1 | {peer['in_flight']})"
            lines.append(
                f"   {label:<{width}}{peer['p50_ms']:>9.3f}{peer['p99_ms']:>9.3f}"
                f"{peer['msgs_per_s']:>10.0f}"
            )
        else:
            why = peer.get("skipped") or peer.get("failed")
            state = "skipped" if "skipped" in peer else "FAILED"
            lines.append(f"   {name:<10}{what}: {state}, {why}")
    lines += [
        f"   {'hotline   Send → DELIVERED (1 in flight | max)':<{width}}"
        f"{h['delivered_p50_ms']:>9.3f}{h['delivered_p99_ms']:>9.3f}"
        f"{h['delivered_msgs_per_s']:>10.0f}",
        f"   {'hotline   over a SendStream (1 in flight)':<{width}}"
        f"{h.get('stream_delivered_p50_ms', 0.0):>9.3f}{h.get('stream_delivered_p99_ms', 0.0):>9.3f}",
        f"   {'ratio     hotline / baseline':<{width}}"
        f"{r['delivered_p50_over_baseline_p50']:>8.1f}x"
        f"{r['delivered_p99_over_baseline_p99']:>8.1f}x"
        f"{r['delivered_msgs_per_s_over_baseline']:>9.2f}x",
    ]
    for key, name, _ in PEERS:
        if key in result.measured_peers():
            lines.append(
                f"   {'ratio     hotline / ' + name:<{width}}"
                f"{r[f'delivered_p50_over_{key}_p50']:>8.1f}x"
                f"{r[f'delivered_p99_over_{key}_p99']:>8.1f}x"
                f"{r[f'delivered_msgs_per_s_over_{key}']:>9.2f}x"
            )
    lines += [
        "   throughput steps: "
        + ", ".join(
            f"{s['senders']} senders"
            + (f" x SendBatch {s['batch']}" if s.get("batch", 1) > 1 else "")
            + f" {s['delivered_msgs_per_s']:.0f}/s"
            for s in result.steps
        ),
        "   cpu at the best step: "
        + ", ".join(f"{k} {v:.0f}%" for k, v in h["cpu_percent"].items()),
    ]
    f, k = result.precedence, result.link
    if f:
        idle, back = f["idle"], f["backlog"]
        idle_label = f"  idle link ({idle['samples']} one at a time)"
        back_label = f"  behind {f['routine_backlog']} ROUTINE draining ({back['samples']} rounds)"
        lines += [
            f"   {'precedence  FLASH Send → DELIVERED (own console)':<{width}}"
            f"{'p50 ms':>9}{'max ms':>9}",
            f"   {idle_label:<{width}}{idle['p50_ms']:>9.3f}{idle['max_ms']:>9.3f}",
            f"   {back_label:<{width}}{back['p50_ms']:>9.3f}{back['max_ms']:>9.3f}",
            f"   {'  ratio draining / idle':<{width}}{f['backlog_over_idle_p50']:>8.1f}x",
            f"     of which Send call (operator API, JP journal) p50 {idle['send_p50_ms']:.1f} "
            f"ms idle, {back['send_p50_ms']:.1f} ms draining; Send → DELIVERED event p50 "
            f"{idle['link_p50_ms']:.1f} ms idle, {back['link_p50_ms']:.1f} ms draining "
            f"({f['backlog_over_idle_link_p50']:.1f}x)",
            f"     FLASH sent at {f['flash_sent_at_delivered_fraction']:.0%} of the ROUTINE "
            f"delivered; when journaled it found (p50) "
            f"{back['routine_unsettled_when_flash_journaled_p50']:.0f} ROUTINE unsettled, "
            f"waited behind {back['routine_ahead_of_flash_p50']:.0f} "
            f"(max {back['routine_ahead_of_flash_max']:.0f}), overtook "
            f"{back['routine_overtaken_by_flash_p50']:.0f}; "
            f"{back['routine_delivered_after_flash_p50']:.0f} delivered after it; journaled "
            f"after it yet ahead (max) {back['routine_journaled_after_flash_settled_before_max']}",
        ]
        ingest = f.get("ingest", {})
        if ingest.get("samples"):
            label = f"  while {f['routine_backlog']} ROUTINE are sent ({ingest['samples']} rounds)"
            lines += [
                f"   {label:<{width}}{ingest['p50_ms']:>9.3f}{ingest['max_ms']:>9.3f}",
                f"   {'  ratio sending / idle':<{width}}{f['ingest_over_idle_p50']:>8.1f}x",
                f"     {f['routine_senders']} pipelined unary ROUTINE Sends saturate JP; the "
                f"FLASH Send call p50 {ingest['send_p50_ms']:.1f} ms, then "
                f"{ingest['link_p50_ms']:.1f} ms to its DELIVERED event",
            ]
    if k:
        link_label = f"link      drain of {k['messages']} ROUTINE, TW started late"
        lines += [
            f"   {link_label:<{width}}{'':>18}{k['msgs_per_s']:>10.0f}",
            f"     {k['drain_s']:.2f} s from TW serving (first receipt after "
            f"{k['first_settlement_s']:.2f} s, then {k['steady_msgs_per_s']:.0f}/s); "
            f"journaling at JP alone {k['journal_msgs_per_s']:.0f}/s",
        ]
    lines += format_postgresql(result, width)
    lines += format_metrics_cost(result, width)
    lines.append("   cpu µs per delivered message:")
    lines.append(f"     max throughput step: {_per_process(h.get('cpu_us_per_msg', {}))}")
    pg = result.postgresql.get("hotline", {})
    if "cpu_us_per_msg" in pg:
        lines.append(f"     on PostgreSQL:       {_per_process(pg['cpu_us_per_msg'])}")
    if k:
        lines.append(f"     link drain:          {_per_process(k['cpu_us_per_msg'])}")
    measured = result.measured_peers()
    for key, name, _ in PEERS:
        if key in measured:
            peer = measured[key]
            label = f"{name} per ack ({peer['in_flight']} in flight):"
            lines.append(f"     {label} {_per_process(peer['cpu_us_per_msg'])}")
    if measured:
        lines += [
            "   peers: one hop and one durable write per message (acked after fsync); hotline:",
            "   two hops and a receipt, three fsynced commits, four Ed25519 operations and a "
            "Watch event",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
