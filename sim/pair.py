"""Two real gateway processes on loopback, with fresh certificates: for the demo, the simulator
and the fault tests.

    pair = await GatewayPair.start(workdir, proxies=True)
    pair.jp.port                 # JP's listening port (operators dial it directly)
    pair.proxy_to("TW")          # the FaultProxy on JP's path to TW (JP -> TW direction)
    pair.jp.kill()               # SIGKILL
    await pair.jp.restart()      # same ports, same journal
    await pair.stop()            # SIGTERM both, wait, close proxies

    pair = await GatewayPair.start(workdir, start=("JP",))   # TW configured but not started
    ...                          # JP journals while its peer is away
    await pair.tw.start()        # first start of TW

Ports are chosen once and kept across restarts. Each gateway's peer address points at a fault
proxy when `proxies=True`, so a link can be delayed, stalled or cut without touching either
process. Gateway logs go to `<workdir>/<party>.log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from certs.pki import PartyPaths, init_pki
from sim.proxy import FaultProxy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {value!r} to TOML")


def write_config(
    path: Path, settings: Mapping[str, Any], deadlines: Mapping[str, float] | None = None
) -> None:
    lines = [f"{key} = {_toml_value(value)}" for key, value in settings.items()]
    if deadlines:
        lines.append("")
        lines.append("[deadlines]")
        lines += [f"{name} = {_toml_value(float(seconds))}" for name, seconds in deadlines.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass
class GatewayProcess:
    party: str
    peer_party: str
    port: int
    config_path: Path
    journal: Path
    log_path: Path
    pki: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    _log: Any = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def paths(self) -> PartyPaths:
        return PartyPaths.of(self.pki, self.party)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        ready = self.config_path.with_suffix(".port")
        ready.unlink(missing_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hotline.cli",
                "serve",
                "--config",
                str(self.config_path),
                "--port-file",
                str(ready),
                "--grace",
                "1",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,  # a Ctrl-C in the terminal goes to us, not to it
        )

    async def wait_ready(self, timeout: float = 30.0) -> None:
        ready = self.config_path.with_suffix(".port")
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"gateway {self.party} exited with {self.proc.returncode}; see {self.log_path}:\n"
                    + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"gateway {self.party} not ready after {timeout} s; see {self.log_path}"
                )
            await asyncio.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: no chance to drain or close anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._close_log()

    async def terminate(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait for a clean exit (SIGKILL after `timeout`)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self._close_log()
        return self.proc.returncode

    async def start(self) -> None:
        """Start a gateway that is not running (the first start of one left out by
        `GatewayPair.start(start=...)`), and wait until it serves."""
        if self.running:
            raise RuntimeError(f"gateway {self.party} is already running")
        self.spawn()
        await self.wait_ready()

    async def restart(self) -> None:
        if self.running:
            await self.terminate()
        self.restarts += 1
        self.spawn()
        await self.wait_ready()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class GatewayPair:
    workdir: Path
    pki: Path
    sides: dict[str, GatewayProcess]
    proxies: dict[str, FaultProxy]  # keyed by the party the proxy leads *to*

    @property
    def jp(self) -> GatewayProcess:
        return self.sides[self.parties[0]]

    @property
    def tw(self) -> GatewayProcess:
        return self.sides[self.parties[1]]

    @property
    def parties(self) -> tuple[str, str]:
        a, b = self.sides
        return a, b

    def side(self, party: str) -> GatewayProcess:
        return self.sides[party]

    def proxy_to(self, party: str) -> FaultProxy:
        """The fault proxy on the path into `party`'s gateway (the other party's outbound link)."""
        return self.proxies[party]

    @classmethod
    async def start(
        cls,
        workdir: Path,
        *,
        parties: Sequence[str] = ("JP", "TW"),
        operators: Sequence[str] = ("watch-1", "watch-2"),
        proxies: bool = True,
        settings: Mapping[str, Any] | None = None,
        deadlines: Mapping[str, float] | None = None,
        pki: Path | None = None,
        start: Sequence[str] | None = None,
    ) -> GatewayPair:
        """Create certificates (unless `pki` is given), write configs, start both gateways (or
        only the parties named in `start`; the others are started later with `side(p).start()`)."""
        workdir.mkdir(parents=True, exist_ok=True)
        if pki is None:
            pki = workdir / "pki"
            init_pki(pki, tuple(parties), tuple(operators))
        a, b = parties
        ports = {a: free_port(), b: free_port()}
        proxy_map: dict[str, FaultProxy] = {}
        peer_ports = dict(ports)
        if proxies:
            for party in parties:
                proxy = FaultProxy(("127.0.0.1", ports[party]))
                peer_ports[party] = await proxy.start()
                proxy_map[party] = proxy
        sides: dict[str, GatewayProcess] = {}
        for party, peer in ((a, b), (b, a)):
            config_path = workdir / f"{party.lower()}.toml"
            journal = workdir / f"{party.lower()}-journal.db"
            values: dict[str, Any] = {
                "party": party,
                "peer_party": peer,
                "listen": f"127.0.0.1:{ports[party]}",
                "peer_address": f"127.0.0.1:{peer_ports[peer]}",
                "journal": str(journal),
                "pki_dir": str(pki),
                "heartbeat_interval_s": 0.5,
                "dead_after_s": 2.0,
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 1.0,
                "checkpoint_interval_s": 2.0,
                "deadline_check_s": 0.25,
            }
            values.update(settings or {})
            write_config(config_path, values, deadlines)
            sides[party] = GatewayProcess(
                party,
                peer,
                ports[party],
                config_path,
                journal,
                workdir / f"{party.lower()}.log",
                pki,
            )
        pair = cls(workdir, pki, sides, proxy_map)
        starting = [sides[p] for p in (parties if start is None else start)]
        try:
            for side in starting:
                side.spawn()
            for side in starting:
                await side.wait_ready()
        except BaseException:
            await pair.stop()
            raise
        return pair

    async def stop(self) -> dict[str, int | None]:
        codes = {}
        for party, side in self.sides.items():
            codes[party] = await side.terminate()
        for proxy in self.proxies.values():
            with contextlib.suppress(Exception):
                await proxy.close()
        return codes
