"""`hotline serve`: run one party's gateway until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path

from hotline.errors import ConfigError, HotlineError

EPILOG = """\
The configuration file is TOML. Every setting, its default, what it allows and what it means
is in the README's "Gateway settings" table; `hotline serve --print-config-schema` writes the
JSON Schema. A bad value (wrong type, out of range, unknown key) stops the gateway with exit
status 2 and a line naming the key, the value and what is allowed. A minimal file:

    party = "JP"
    peer_party = "TW"
    listen = "127.0.0.1:50051"
    peer_address = "127.0.0.1:50052"
    journal = "jp-journal.db"
    pki_dir = "pki"            # made by `hotline certs init --dir pki`

Stopping: SIGTERM or Ctrl-C drains calls in progress (up to --grace seconds) and closes the
journal cleanly. Even after SIGKILL nothing acknowledged is lost: every reply, receipt and
event is sent only after its journal commit is on disk.

One gateway owns one journal: a second `hotline serve` on the same journal file exits with
status 2 and "journal FILE is in use by pid N". If the journal file is deleted or replaced
while the gateway runs, the gateway stops taking work within about a second, raises an alarm
on its operators' Watch streams, and exits with status 3.

A journal in PostgreSQL (journal = "postgresql://...") is held by a database lock instead;
with standby = true a second gateway waits as the standby and takes over when the lock frees
(README, "Running on PostgreSQL"). A gateway that loses its database connection stops taking
work and exits with status 3.

Exit status: 0 stopped by a signal; 2 could not start (configuration, PKI, journal in use,
database unreachable); 3 the journal file was deleted or replaced, or the journal database
connection was lost, while running.
"""

EXIT_JOURNAL_LOST = 3


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def setup_logging(level: str, fmt: str, party: str = "") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        prefix = f"[{party}] " if party else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def register(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--config", "-c", type=Path, help="the gateway's TOML file (required)")
    parser.add_argument(
        "--print-config-schema",
        action="store_true",
        help="write the configuration file's JSON Schema to stdout and exit",
    )
    parser.add_argument(
        "--grace", type=float, default=5.0, help="seconds to drain on SIGTERM (default 5)"
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log line format (default text)",
    )
    parser.add_argument("--log-level", default=None, help="override the configured log level")
    parser.add_argument(
        "--port-file",
        type=Path,
        default=None,
        help="write the bound port here once serving (useful with listen port 0)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from server.config import GatewayConfig, json_schema

    if args.print_config_schema:
        print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
        return 0
    if args.config is None:
        print(
            "hotline serve: error: --config FILE is required (see `hotline serve --help`)",
            file=sys.stderr,
        )
        return 2
    try:
        config = GatewayConfig.load(args.config)
    except ConfigError as exc:
        print(f"hotline serve: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(args.log_level or config.log_level, args.log_format, config.party)
    try:
        return asyncio.run(_serve(config, args.grace, args.port_file))
    except HotlineError as exc:
        print(f"hotline serve: error: {exc}", file=sys.stderr)
        return 2


async def _serve(config: object, grace: float, port_file: Path | None) -> int:
    from server.config import GatewayConfig
    from server.gateway import Gateway

    assert isinstance(config, GatewayConfig)
    gateway = Gateway(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    port = await gateway.start()
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(f"{port}\n")
        tmp.replace(port_file)
    log = logging.getLogger("hotline.gateway")
    try:
        stopped = asyncio.ensure_future(stop.wait())
        fatal = asyncio.ensure_future(gateway.fatal_event.wait())
        await asyncio.wait({stopped, fatal}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        fatal.cancel()
        if gateway.fatal:
            await asyncio.sleep(0.2)  # let the alarm reach the Watch streams before they close
            log.critical("stopping: %s", gateway.fatal)
        else:
            log.info("signal received; draining for up to %g s", grace)
    finally:
        await gateway.stop(grace)
    if gateway.fatal:
        print(f"hotline serve: error: {gateway.fatal}", file=sys.stderr)
        return EXIT_JOURNAL_LOST
    return 0
