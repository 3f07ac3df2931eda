"""A throwaway PostgreSQL server for the tests: `initdb` in a temporary folder, `pg_ctl start`
with a Unix socket in that folder and no TCP at all, stopped and removed at the end.

`initdb` refuses to run as root, so as root the server is made and run as the `postgres` user
(`runuser -u postgres`), in a folder that user owns. The server runs as in production as far as
the journal can tell: `fsync`, `full_page_writes` and `synchronous_commit` on (the journal
refuses a server without them).
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

import psycopg


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


@dataclass
class PostgresServer:
    directory: Path  # holds the data folder, the socket and the log
    port: int  # names the socket file (.s.PGSQL.<port>); nothing listens on TCP
    bin_dir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.directory}&port={self.port}"

    def new_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"j_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # a generated name
        return self.url(name)

    def execute(
        self, url: str, sql: str, params: tuple[object, ...] = ()
    ) -> list[tuple[object, ...]]:
        """Run one statement on a database as its superuser (to tamper, or to look)."""
        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "log").read_text(errors="replace")[-3000:]
        return ""


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def start() -> PostgresServer:
    """Make and start a server (raises PostgresUnavailable with the reason)."""
    bin_dir = _bin_dir()
    directory = Path(tempfile.mkdtemp(prefix="hotline-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    server = PostgresServer(directory, _free_port(), bin_dir)
    data = directory / "data"
    steps = [
        [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"],
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
        done = subprocess.run(_as_postgres(step), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()[-2000:]
            stop(server)
            raise PostgresUnavailable(
                f"{Path(step[0]).name} failed ({done.returncode}): {detail}\n{server.log_tail()}"
            )
    return server


def stop(server: PostgresServer) -> None:
    data = server.directory / "data"
    if (data / "postmaster.pid").exists():
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
