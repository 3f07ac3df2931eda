"""Micro-benchmark (not a test): what authenticating a call costs the gateway.

    .venv/bin/python -m tests.server.bench_auth [--calls 3000] [--rounds 3] [--inflight 1]

Three measurements:

0. **`KeyRing.verify`** of one signed envelope, CPU µs per verify (`time.thread_time`) (the Ed25519 check, ~110 µs here,
   plus the revocation check of the signing certificate).

1. **The interceptor alone, in process**: a plain grpc.aio server (mutual TLS, the gateway's
   certificates) whose one handler, called once by a JP operator, runs the interceptor's whole
   per-call work `--calls` times on its own (real) servicer context: `intercept_service` for
   `OperatorService/GetLinkStatus` (with a continuation that returns a no-op handler), then the
   returned handler (authentication, authorization, admission where there is any, the no-op).
   Reported: CPU µs per call (`time.thread_time` of the event loop's thread, so that other
   processes competing for the cores do not count).
2. **A whole gateway**: starts one JP gateway as its own process (`hotline serve`, its peer address pointing nowhere
and its reconnect backoff long, so that dialling costs next to nothing), then makes `--calls`
`GetLinkStatus` calls from one operator over one channel, `--inflight` at a time, and reads the
server's CPU time (utime + stime from /proc/<pid>/stat) before and after. Reported: the
server's CPU µs per call, the same for an idle interval of equal length (the background cost to
subtract), and the client's wall time per call. Point PYTHONPATH at another checkout (its
root and its `proto/`) to measure that tree's gateway with the same script.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from certs.pki import (
    PartyPaths,
    init_pki,
    load_certificate,
    load_party_revocations,
    load_signing_key,
)
from hotline.signing import PAYLOAD_TYPE_ENVELOPE, KeyRing, Signer
from hotline.v1 import operator_pb2, operator_pb2_grpc
from server.auth import AuthInterceptor, Authorizer, Refusal
from tests.harness import free_port, operator_channel

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


async def measure(port: int, pki: Path, pid: int, calls: int, inflight: int) -> tuple[float, float]:
    channel = operator_channel(pki, "JP", port)
    stub = operator_pb2_grpc.OperatorServiceStub(channel)
    request = operator_pb2.GetLinkStatusRequest()
    try:
        for _ in range(300):  # warm up: connection, caches, code paths
            await stub.GetLinkStatus(request)
        remaining = calls

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await stub.GetLinkStatus(request)

        cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        cpu1, wall1 = cpu_seconds(pid), time.perf_counter()
    finally:
        await channel.close()
    return (cpu1 - cpu0) / calls * 1e6, (wall1 - wall0) / calls * 1e6


class _Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata: tuple[tuple[str, str | bytes], ...] = ()


async def interceptor_alone(pki: Path, calls: int) -> float:
    """µs per call of the interceptor's per-call work, on a real servicer context."""
    paths = PartyPaths.of(pki, "JP")
    authorizer = Authorizer(
        "JP",
        "TW",
        [load_certificate(paths.ca_cert), load_certificate(paths.peer_ca_cert)],
        load_party_revocations(paths),
    )

    async def refused(refusal: Refusal) -> None:
        raise AssertionError(f"refused: {refusal}")

    interceptor = AuthInterceptor(authorizer, refused)

    async def noop(request: Any, context: Any) -> bytes:
        return b""

    target: Any = grpc.unary_unary_rpc_method_handler(noop)

    async def continuation(details: Any) -> Any:
        return target

    details = _Details("/hotline.v1.OperatorService/GetLinkStatus")

    async def bench(request: bytes, context: Any) -> bytes:
        for _ in range(200):  # warm up
            handler: Any = await interceptor.intercept_service(continuation, details)
            await handler.unary_unary(None, context)
        started = time.thread_time()
        for _ in range(calls):
            handler = await interceptor.intercept_service(continuation, details)
            await handler.unary_unary(None, context)
        return f"{(time.thread_time() - started) / calls * 1e6:.3f}".encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "bench.Bench", {"Run": grpc.unary_unary_rpc_method_handler(bench)}
            )
        ]
    )
    credentials = grpc.ssl_server_credentials(
        [(paths.gateway_key.read_bytes(), paths.gateway_cert.read_bytes())],
        root_certificates=paths.bundle.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    channel = operator_channel(pki, "JP", port)
    try:
        run: Any = channel.unary_unary("/bench.Bench/Run")
        answer: bytes = await run(b"", timeout=120)
    finally:
        await channel.close()
        await server.stop(0)
    return float(answer)


def keyring_verify(pki: Path, calls: int) -> float:
    """µs per `KeyRing.verify` of one signed payload (signature + revocation checks)."""
    paths = PartyPaths.of(pki, "JP")
    signer = Signer.from_certificate(
        load_signing_key(paths.signing_key), load_certificate(paths.signing_cert)
    )
    ring = KeyRing(
        [load_certificate(paths.ca_cert), load_certificate(paths.peer_ca_cert)],
        revocations=load_party_revocations(paths),
    )
    ring.add_certificate(load_certificate(paths.signing_cert))
    signed = signer.sign(PAYLOAD_TYPE_ENVELOPE, b"x" * 300)
    for _ in range(100):
        ring.verify(signed, payload_type=PAYLOAD_TYPE_ENVELOPE, party="JP")
    started = time.thread_time()
    for _ in range(calls):
        ring.verify(signed, payload_type=PAYLOAD_TYPE_ENVELOPE, party="JP")
    return (time.thread_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inflight", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        work = Path(tmp)
        pki = work / "pki"
        init_pki(pki, ("JP", "TW"), ("watch-1",))
        verify = [keyring_verify(pki, args.calls) for _ in range(args.rounds)]
        print(
            f"KeyRing.verify: median {statistics.median(verify):.1f} µs "
            f"(rounds: {', '.join(f'{v:.1f}' for v in verify)}); {args.calls} x {args.rounds}"
        )
        alone = [asyncio.run(interceptor_alone(pki, args.calls * 10)) for _ in range(args.rounds)]
        print(
            f"interceptor alone, per call: median {statistics.median(alone):.1f} µs "
            f"(rounds: {', '.join(f'{a:.1f}' for a in alone)}); {args.calls * 10} calls x "
            f"{args.rounds} rounds"
        )
        port_file = work / "jp.port"
        config = work / "jp.toml"
        config.write_text(
            "\n".join(
                [
                    'party = "JP"',
                    'peer_party = "TW"',
                    f'listen = "127.0.0.1:{free_port()}"',
                    f'peer_address = "127.0.0.1:{free_port()}"',
                    f'journal = "{work / "jp.db"}"',
                    f'pki_dir = "{pki}"',
                    "reconnect_min_s = 30.0",
                    "reconnect_max_s = 60.0",
                    'log_level = "WARNING"',
                ]
            )
            + "\n"
        )
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "hotline.cli", "serve", "--config", str(config)),
                *("--port-file", str(port_file), "--grace", "0.5"),
            ],
            env=env,
        )
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the gateway did not start")
                time.sleep(0.05)
            port = int(port_file.read_text().strip())
            per_call, wall, idle = [], [], []
            for _ in range(args.rounds):
                cpu, w = asyncio.run(measure(port, pki, server.pid, args.calls, args.inflight))
                per_call.append(cpu)
                wall.append(w)
                before = cpu_seconds(server.pid)
                time.sleep(w * args.calls / 1e6)
                idle.append((cpu_seconds(server.pid) - before) / args.calls * 1e6)
        finally:
            server.terminate()
            server.wait(10)
    print(
        f"server CPU per GetLinkStatus call: median {statistics.median(per_call):.0f} µs "
        f"(rounds: {', '.join(f'{c:.0f}' for c in per_call)}); idle over the same time: "
        f"{statistics.median(idle):.0f} µs per call-slot; client wall per call: "
        f"{statistics.median(wall):.0f} µs; {args.calls} calls x {args.rounds} rounds, "
        f"{args.inflight} in flight"
    )


if __name__ == "__main__":
    main()
