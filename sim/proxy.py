"""A TCP fault proxy for the peer link: delay, jitter, bandwidth limit, stall, drop.

Placed between one gateway's peer sender and the other gateway's listener, it forwards bytes
both ways and applies the faults currently set. Changing a fault takes effect at once on
every open connection. It works on bytes, below TLS, so it never sees message content.

    proxy = FaultProxy(listen_port=0, target=("127.0.0.1", 50052))
    await proxy.start()            # proxy.port is the port to dial instead of the target
    proxy.faults.delay_s = 0.05    # one-way added latency per chunk
    proxy.faults.jitter_s = 0.02   # uniform 0..jitter added to each delay
    proxy.faults.bandwidth_bps = 1_000_000
    proxy.stall()                  # hold all bytes (connections stay open) until resume()
    proxy.resume()
    proxy.drop()                   # cut every open connection now (they may reconnect)
    proxy.refuse(True)             # refuse new connections too (a hard outage)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field


@dataclass
class Faults:
    delay_s: float = 0.0
    jitter_s: float = 0.0
    bandwidth_bps: float = 0.0  # 0 = unlimited
    refuse: bool = False
    seed: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)


@dataclass
class ProxyStats:
    connections: int = 0
    refused: int = 0
    dropped: int = 0
    bytes_forwarded: int = 0


class FaultProxy:
    def __init__(
        self, target: tuple[str, int], *, listen_host: str = "127.0.0.1", listen_port: int = 0
    ) -> None:
        self.target = target
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.faults = Faults()
        self.stats = ProxyStats()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.listen_host, self.listen_port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.drop()
        await asyncio.gather(*self._open, return_exceptions=True)

    # -- controls

    def stall(self) -> None:
        """Hold every byte in both directions; connections stay open (a silent link)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    @property
    def stalled(self) -> bool:
        return not self._flowing.is_set()

    def drop(self) -> None:
        """Cut every open connection at once."""
        for task in list(self._open):
            task.cancel()
        self.stats.dropped += len(self._open)

    def refuse(self, on: bool) -> None:
        """While on, new connections are closed as soon as they arrive."""
        self.faults.refuse = on

    # -- plumbing

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.faults.refuse:
            self.stats.refused += 1
            writer.close()
            return
        self.stats.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            self._open.discard(task)
            return
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._pipe(reader, up_writer))
                group.create_task(self._pipe(up_reader, writer))
        except BaseException:
            pass
        finally:
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()
            self._open.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Each chunk is released at (arrival + delay + jitter), never before the previous one:
        # latency without reordering, and pipelined, as on a real long path.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                at, chunk = await queue.get()
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._flowing.wait()
                if not chunk:
                    writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()
                self.stats.bytes_forwarded += len(chunk)

        sender = asyncio.create_task(release())
        try:
            last = 0.0
            while True:
                chunk = await reader.read(65536)
                await self._flowing.wait()
                f = self.faults
                delay = f.delay_s + (f.rng.uniform(0, f.jitter_s) if f.jitter_s else 0.0)
                transmit = len(chunk) * 8 / f.bandwidth_bps if f.bandwidth_bps else 0.0
                last = max(time.monotonic() + delay, last) + transmit
                queue.put_nowait((last, chunk))
                if not chunk:
                    await sender
                    return
        finally:
            sender.cancel()
