"""The `hotline` command: one entry point, subcommands loaded on demand.

Each subcommand lives in the package that owns it (`certs`, `server`, `client`, `sim`) and
exposes `register(parser)` which adds its arguments and sets `func` (a callable taking the parsed
namespace and returning an exit code). Modules are imported only when their subcommand runs, so
`hotline --help` stays fast and this protocol package takes no static dependency on higher layers.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, cast

# (name, module, one-line help). Order is the order shown in --help.
SUBCOMMANDS: tuple[tuple[str, str, str], ...] = (
    (
        "certs",
        "certs.cli",
        "create and manage the national PKI (CAs, gateway/operator/signing certificates)",
    ),
    ("serve", "server.cli", "run one party's gateway"),
    ("journal", "server.journal_cli", "verify or export a gateway journal"),
    ("send", "client.cli_send", "send a message through your gateway"),
    ("watch", "client.cli_watch", "watch your gateway's events live"),
    ("ack", "client.cli_ack", "acknowledge a received message"),
    ("history", "client.cli_history", "list messages in your gateway's journal"),
    ("show", "client.cli_show", "show one message and where it stands"),
    ("status", "client.cli_status", "show the peer link's state"),
    (
        "console",
        "client.console.cli",
        "serve a browser console: both watch floors live, a map, acknowledgements",
    ),
    ("demo", "sim.demo", "run two paired gateways and a short encounter, end to end"),
    ("sim", "sim.cli", "replay scenarios, generate load, benchmark"),
    (
        "conformance",
        "sim.conformance.cli",
        "check a gateway implementation against the specification (peer or operator role)",
    ),
)

Handler = Callable[[argparse.Namespace], int]

# Commands that talk to a gateway as an operator client: grpc's C core writes its own log lines
# (handshake failures, connectivity) to stderr, which mean nothing to an operator next to our
# one-line error, so they are silenced for these (`serve` keeps them for the gateway's log).
QUIET_GRPC = {"send", "watch", "ack", "history", "show", "status", "console", "demo", "sim"}


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line and a hint, not the whole usage text (`--help` has it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(load: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; only the module of subcommand `load` (if any) is imported."""
    parser = OneLineParser(
        prog="hotline",
        description=(
            "Hotline: the Japan-Taiwan Maritime and Air Communication Mechanism.\n"
            "Two national gateways exchange typed, signed, acknowledged messages over mutually\n"
            "authenticated gRPC. Run `hotline COMMAND --help` for each command."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version="hotline 0.1.0 (protocol hotline.v1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, help_text in SUBCOMMANDS:
        child = sub.add_parser(name, help=help_text, description=help_text)
        if name == load:
            register = importlib.import_module(module).register
            register(child)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if not a.startswith("-")), None)
    if command in QUIET_GRPC:
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")  # read when grpc's core starts
    parser = build_parser(load=command)
    args = parser.parse_args(args_list)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return cast(Handler, func)(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`hotline history | head`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
