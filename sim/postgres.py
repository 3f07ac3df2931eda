"""A throwaway PostgreSQL server: `initdb` in a temporary folder, `pg_ctl start` with a Unix
socket in that folder and no TCP at all, stopped and removed at the end. The tests' journal
suites (`tests/pg.py`) and `hotline sim bench`'s PostgreSQL part both use it.

    server = start()              # PostgresUnavailable(reason) if it cannot
    url = server.new_database()   # postgresql://postgres@/j_...?host=<folder>&port=<port>
    server.cpu_seconds()          # CPU of the postmaster and all its processes so far
    stop(server)

`initdb` refuses to run as root, so as root the server is made and run as the `postgres` user
(`runuser -u postgres`), in a folder that user owns. The server runs as in production as far as
the journal can tell: `fsync`, `full_page_writes` and `synchronous_commit` on (the journal
refuses a server without them).

No database driver here (only the journal modules speak SQL, `tests/test_layers.py`): a
database is made with PostgreSQL's own `createdb`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from sim.machine import process_cpu_seconds


class PostgresUnavailable(Exception):
    """No PostgreSQL server could be started here (not installed, or it failed)."""


def _bin_dir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise PostgresUnavailable(
            "PostgreSQL is not installed (no initdb): apt-get install postgresql"
        )
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class PostgresServer:
    directory: Path  # holds the data folder, the socket and the log
    port: int  # names the socket file (.s.PGSQL.<port>); nothing listens on TCP
    bin_dir: Path

    @classmethod
    def start(cls) -> Self:
        """Make and start a server (raises PostgresUnavailable with the reason)."""
        bin_dir = _bin_dir()
        directory = Path(tempfile.mkdtemp(prefix="hotline-pg-"))
        if os.geteuid() == 0:
            try:
                shutil.chown(directory, "postgres", "postgres")
            except (LookupError, OSError) as exc:
                shutil.rmtree(directory, ignore_errors=True)
                raise PostgresUnavailable(
                    f"no `postgres` user to run the server as: {exc}"
                ) from None
        server = cls(directory, _free_port(), bin_dir)
        data = directory / "data"
        steps = [
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
            ],
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(directory / "log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"-k {directory} -p {server.port} -c listen_addresses='' -c fsync=on"
                " -c synchronous_commit=on -c full_page_writes=on -c max_connections=200",
                "start",
            ],
        ]
        for step in steps:
            try:
                done = subprocess.run(
                    _as_postgres(step), capture_output=True, text=True, timeout=120
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                stop(server)
                raise PostgresUnavailable(f"{Path(step[0]).name} could not run: {exc}") from None
            if done.returncode != 0:
                detail = (done.stderr or done.stdout).strip()[-2000:]
                stop(server)
                raise PostgresUnavailable(
                    f"{Path(step[0]).name} failed ({done.returncode}): {detail}\n"
                    + server.log_tail()
                )
        return server

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.directory}&port={self.port}"

    def new_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"j_{uuid.uuid4().hex[:16]}"
        done = subprocess.run(
            [
                *(str(self.bin_dir / "createdb"), "-h", str(self.directory)),
                *("-p", str(self.port), "-U", "postgres", name),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"createdb {name} failed: {done.stderr.strip()}")
        return self.url(name)

    def version(self) -> str:
        """The server's version ("postgres (PostgreSQL) 15.x"), or "" if it cannot be read."""
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            done = subprocess.run(
                [str(self.bin_dir / "postgres"), "--version"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            return done.stdout.strip()
        return ""

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "log").read_text(errors="replace")[-3000:]
        return ""

    def postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.directory / "data" / "postmaster.pid").read_text().split()[0])
        return None

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds used so far by the whole server: the postmaster, its live
        processes (the backends serving each connection, the WAL writer, the checkpointer,
        ...) and the ones that have exited (the postmaster reaps them, so the kernel adds
        theirs to its children's time). The difference of two readings is the server's CPU
        over that interval; None if the postmaster cannot be read (not Linux, or stopped)."""
        postmaster = self.postmaster_pid()
        if postmaster is None:
            return None
        try:
            with open(f"/proc/{postmaster}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # utime, stime, cutime, cstime (fields 14-17 of proc(5); here from field 3)
            total = sum(int(value) for value in fields[11:15]) / _TICKS
        except (OSError, IndexError, ValueError):
            return None
        for child in _children(postmaster):
            total += process_cpu_seconds(child) or 0.0
        return total


def _children(parent: int) -> list[int]:
    """The pids whose parent is `parent` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it has gone
        if fields[1] == str(parent):
            found.append(int(entry))
    return found


def start() -> PostgresServer:
    """Make and start a server (raises PostgresUnavailable with the reason)."""
    return PostgresServer.start()


def stop(server: PostgresServer) -> None:
    """Stop the server at once (`pg_ctl -m immediate`) and remove its folder."""
    data = server.directory / "data"
    if (data / "postmaster.pid").exists():
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(
                _as_postgres(
                    [str(server.bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
                ),
                capture_output=True,
                timeout=60,
            )
    shutil.rmtree(server.directory, ignore_errors=True)


@contextlib.contextmanager
def running() -> Iterator[PostgresServer]:
    server = start()
    try:
        yield server
    finally:
        stop(server)
