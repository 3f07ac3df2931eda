"""`hotline sim bench`: the hot line's delivery path against a plain gRPC baseline, one machine.

Baseline: a bidirectional-stream echo over the same mutual TLS (a fresh PKI's JP gateway
certificate on the server, TW's on the client, the same pinned name and keepalive settings),
served by a subprocess so that client and server run on separate cores as the two gateways do,
with the same payload size. Measured:

    (a) p50 / p99 round trip with one message in flight;
    (b) messages per second pipelined on one stream (up to 256 in flight, the link's window).

Hotline: two gateway processes without fault proxies. Measured at the sending side's operator
API, as a watch officer sees it:

    (a) p50 / p99 from Send to the sender's EVENT_KIND_MESSAGE_DELIVERED, one message in flight:
        operator → JP gateway (validate, sign, journal with fsync) → peer link → TW gateway
        (verify, validate, journal with fsync, sign a receipt) → JP (verify, journal the receipt
        with fsync) → Watch event;
    (b) the most DELIVERED events per second: several operators send back to back (pipelined:
        no one waits for delivery) with more and more concurrent senders, until the delivered
        rate stops growing (under 5 % more from a step that doubles the senders).

So a hot-line delivery costs one request/response on the operator API, one hop on the peer
link, three durable SQLite commits (group-committed under load), three signatures or
verifications and an event stream; the baseline is one hop and nothing else. The ratios say
what that buys and costs. Both runs warm up first (channels ready, first messages dropped).

The echo server is this module run as `python -m sim.bench echo-server --pki DIR --party JP
--port-file FILE`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from certs.pki import PartyPaths, init_pki
from client.errors import ClientError
from client.operator import OperatorClient
from hotline.ids import new_message_id
from hotline.transport import SERVER_OPTIONS, credentials, read, secure_channel
from hotline.v1 import common_pb2, operator_pb2
from sim.load import Payloads
from sim.machine import CpuMeter, machine_info
from sim.metrics import new_histogram, record_seconds, summarize
from sim.target import UNLIMITED, Target

ECHO_SERVICE = "hotline.bench.v1.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Stream"
WINDOW = 256
# Like-for-like peers from STACK-NOTES (durable acks, one hop, 64 in flight, this kind of host).
REFERENCE = {
    "NATS JetStream, sync_interval always": {"p50_ms": 0.48, "msgs_per_s": 4600},
    "RabbitMQ quorum queue, publisher confirms": {"p50_ms": 0.63, "msgs_per_s": 4700},
}


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
    args = parser.parse_args(argv)
    asyncio.run(serve_echo(args.pki, args.party, args.port_file))
    return 0


# ---------------------------------------------------------------------------------------------
# Measuring


@dataclass
class Budget:
    """How the measuring time is shared out (seconds), from `--duration`."""

    total: float

    @property
    def warmup(self) -> float:
        return max(0.5, self.total * 0.02)

    @property
    def baseline_latency(self) -> float:
        return max(1.0, self.total * 0.08)

    @property
    def baseline_throughput(self) -> float:
        return max(1.0, self.total * 0.08)

    @property
    def hotline_latency(self) -> float:
        return max(1.5, self.total * 0.14)

    @property
    def hotline_step(self) -> float:
        return max(1.5, self.total * 0.09)


@dataclass
class BenchResult:
    baseline: dict[str, Any] = field(default_factory=dict)
    hotline: dict[str, Any] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def ratios(self) -> dict[str, float]:
        b, h = self.baseline, self.hotline

        def ratio(x: float, y: float) -> float:
            return round(x / y, 2) if y else 0.0

        return {
            "delivered_p50_over_baseline_p50": ratio(h["delivered_p50_ms"], b["p50_ms"]),
            "delivered_p99_over_baseline_p99": ratio(h["delivered_p99_ms"], b["p99_ms"]),
            "delivered_msgs_per_s_over_baseline": ratio(h["delivered_msgs_per_s"], b["msgs_per_s"]),
        }

    def to_json(self, command: str) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "hotline": self.hotline,
            "ratios": self.ratios(),
            "throughput_steps": self.steps,
            "reference": REFERENCE,
            "notes": self.notes,
            "machine": machine_info(),
            "command": command,
        }


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


class _Deliveries:
    """Follows the sender gateway's DELIVERED events; lets callers wait for one message."""

    def __init__(self, client: OperatorClient, cursor: int) -> None:
        self.client = client
        self.cursor = cursor
        self.count = 0
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.task = asyncio.create_task(self._run(), name="deliveries")

    async def _run(self) -> None:
        kinds = (operator_pb2.EVENT_KIND_MESSAGE_DELIVERED,)
        async for event in self.client.watch(self.cursor, kinds):
            self.count += 1
            future = self.waiting.pop(event.message_id, None)
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


async def measure_hotline(
    workdir: Path, payload_bytes: int, budget: Budget, echo: Callable[[str], None]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    senders_max = 8
    target = await Target.start_pair(
        workdir / "pair", proxies=False, operators=senders_max, settings=UNLIMITED
    )
    clients: list[OperatorClient] = []
    try:
        for name in target.operators:
            clients.append(
                OperatorClient.from_pki(target.pki, "JP", name, address=target.addresses["JP"])
            )
        watcher = clients[0]
        status = await watcher.link_status()
        deadline = time.monotonic() + 15
        while not (status.outbound.up and status.inbound.up) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            status = await watcher.link_status()
        payloads = Payloads(payload_bytes, target.parties)
        deliveries = _Deliveries(watcher, 0)
        precedence = common_pb2.PRECEDENCE_ROUTINE

        async def one(client: OperatorClient) -> float:
            message_id = new_message_id()
            delivered = deliveries.expect(message_id)
            start = time.perf_counter()
            await client.send(payloads.make("TW", precedence, message_id))
            return await asyncio.wait_for(delivered, 30) - start

        echo("hotline: one message in flight ...")
        histogram = new_histogram()
        end_warm = time.monotonic() + budget.warmup
        end = end_warm + budget.hotline_latency
        while time.monotonic() < end:
            seconds = await one(watcher)
            if time.monotonic() > end_warm:
                record_seconds(histogram, seconds)
        latency = summarize(histogram)

        steps: list[dict[str, Any]] = []
        best = 0.0
        pids = target.gateway_pids()
        for concurrency in (4, 16, 64, 256):
            echo(f"hotline: pipelined sends from {concurrency} concurrent senders ...")
            rate, cpu = await _throughput_step(
                clients, payloads, deliveries, concurrency, budget, pids
            )
            steps.append(
                {"senders": concurrency, "delivered_msgs_per_s": round(rate, 1), "cpu_percent": cpu}
            )
            growth = rate / best if best else float("inf")
            best = max(best, rate)
            if growth < 1.05:
                break
        await deliveries.close()
        best_step = max(steps, key=lambda s: s["delivered_msgs_per_s"])
        return (
            {
                "delivered_p50_ms": latency["p50"],
                "delivered_p99_ms": latency["p99"],
                "delivered_msgs_per_s": best_step["delivered_msgs_per_s"],
                "latency": latency,
                "best_senders": best_step["senders"],
                "cpu_percent": best_step["cpu_percent"],
                "payload_bytes": payload_bytes,
                "operators": len(clients),
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
) -> tuple[float, dict[str, float]]:
    running = True
    sent = 0
    precedence = common_pb2.PRECEDENCE_ROUTINE

    async def sender(index: int) -> None:
        nonlocal sent
        client = clients[index % len(clients)]
        while running:
            try:
                await client.send(payloads.make("TW", precedence, new_message_id()))
                sent += 1
            except ClientError:
                await asyncio.sleep(0.01)

    before = deliveries.count
    tasks = [asyncio.create_task(sender(i)) for i in range(concurrency)]
    await asyncio.sleep(budget.warmup)
    cpu = CpuMeter(pids).start()
    start_count = deliveries.count
    start = time.monotonic()
    await asyncio.sleep(budget.hotline_step)
    delivered = deliveries.count - start_count
    elapsed = time.monotonic() - start
    cpu_result = cpu.stop()
    running = False
    await asyncio.gather(*tasks, return_exceptions=True)
    # Let the backlog drain before the next step, so each step starts from an empty outbox.
    deadline = time.monotonic() + 30
    while deliveries.count - before < sent and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return delivered / elapsed, cpu_result


async def run_bench(
    workdir: Path, *, duration: float, payload_bytes: int, echo: Callable[[str], None]
) -> BenchResult:
    budget = Budget(duration)
    result = BenchResult()
    pki = workdir / "bench-pki"
    init_pki(pki, ("JP", "TW"), ("watch-1",))
    payload = os.urandom(payload_bytes)
    result.baseline = await measure_baseline(pki, workdir, payload, budget, echo)
    result.hotline, result.steps = await measure_hotline(workdir, payload_bytes, budget, echo)
    result.notes.append(
        "baseline: one mTLS hop, no persistence; hotline: operator API + peer link, three "
        "fsynced SQLite commits, signing and verification, and a Watch event per delivery"
    )
    return result


def format_bench(result: BenchResult) -> str:
    b, h, r = result.baseline, result.hotline, result.ratios()
    width = 52
    lines = [
        "== hotline sim bench",
        f"   payload {b['payload_bytes']} bytes, loopback, mutual TLS, "
        f"{machine_info().get('cpus')} CPUs",
        f"   {'':<{width}}{'p50 ms':>9}{'p99 ms':>9}{'msgs/s':>10}",
        f"   {'baseline  gRPC bidi echo (1 in flight | pipelined)':<{width}}"
        f"{b['p50_ms']:>9.3f}{b['p99_ms']:>9.3f}{b['msgs_per_s']:>10.0f}",
        f"   {'hotline   Send → DELIVERED (1 in flight | max)':<{width}}"
        f"{h['delivered_p50_ms']:>9.3f}{h['delivered_p99_ms']:>9.3f}"
        f"{h['delivered_msgs_per_s']:>10.0f}",
        f"   {'ratio     hotline / baseline':<{width}}"
        f"{r['delivered_p50_over_baseline_p50']:>8.1f}x"
        f"{r['delivered_p99_over_baseline_p99']:>8.1f}x"
        f"{r['delivered_msgs_per_s_over_baseline']:>9.2f}x",
        "   throughput steps: "
        + ", ".join(
            f"{s['senders']} senders {s['delivered_msgs_per_s']:.0f}/s" for s in result.steps
        ),
        "   cpu at the best step: "
        + ", ".join(f"{k} {v:.0f}%" for k, v in h["cpu_percent"].items()),
        "   like-for-like peers (STACK-NOTES; one hop, one durable write, 64 in flight):",
    ]
    lines += [
        f"     {name}: p50 {v['p50_ms']} ms, {v['msgs_per_s']}/s" for name, v in REFERENCE.items()
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
