"""The machine a measurement ran on, and how much CPU each process used while it ran.

Figures mean little without the machine they came from, and a load test means nothing if the
load generator itself was saturated: `CpuMeter` reads the CPU time of this process and of the
gateway processes (Linux `/proc/<pid>/stat`) at the start and end of a run.
"""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "system": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
    }
    try:
        import grpc

        info["grpcio"] = grpc.__version__
    except Exception:  # grpc is a dependency; this is only for the report
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            total_kb = int(f.readline().split()[1])
        info["memory_gib"] = round(total_kb / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process `pid` so far (None if it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            text = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = text.rsplit(")", 1)[1].split()
    try:
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (IndexError, ValueError):
        return None


@dataclass
class CpuMeter:
    """CPU used by this process and by named other processes between start() and stop()."""

    pids: Mapping[str, int] = field(default_factory=dict)
    _wall: float = 0.0
    _self: float = 0.0
    _others: dict[str, float | None] = field(default_factory=dict)
    result: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # CPU seconds over the interval

    def start(self) -> CpuMeter:
        self._wall = time.monotonic()
        self._self = time.process_time()
        self._others = {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        """Percent of one core used by each process over the interval ("simulator", parties)."""
        wall = max(time.monotonic() - self._wall, 1e-9)
        self.seconds = {"simulator": time.process_time() - self._self}
        for name, pid in self.pids.items():
            before = self._others.get(name)
            after = process_cpu_seconds(pid)
            if before is not None and after is not None:
                self.seconds[name] = after - before
        self.result = {name: round(100.0 * cpu / wall, 1) for name, cpu in self.seconds.items()}
        return self.result

    def per_message_us(self, messages: int) -> dict[str, float]:
        """CPU microseconds per message of each process over the interval (after `stop()`);
        {} when no message was counted. The other processes' figures have the resolution of
        /proc's clock ticks (10 ms): meaningful over thousands of messages, not a handful."""
        if messages <= 0:
            return {}
        return {name: round(1e6 * cpu / messages, 1) for name, cpu in self.seconds.items()}
