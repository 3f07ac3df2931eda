"""`hotline conformance`: check a gateway implementation against the specification.

    hotline conformance --target HOST:PORT --pki DIR --role peer [--listen PORT]
    hotline conformance --target HOST:PORT --pki DIR --role operator [--operator NAME]

The suite plays the party the target is not. As `peer` it dials the target's PeerLink as the
other party's gateway (with `--listen PORT` it also serves a PeerLink there, for the target to
dial: configure the target's `peer_address` to it). As `operator` it calls the target's
Operator service as one of the target party's operators. `--pki DIR` is a `hotline certs init`
directory holding both parties' material.

Prints one row per check (verdict, check id, the SPEC.md section it tests, a one-line detail,
and the MUSTs it covers). Exit status: 0 when no check failed, 1 when any failed, 2 when the
suite could not run (bad arguments, an unusable PKI, an unreachable target).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from hotline.errors import ConfigError
from sim.conformance import checks as _checks  # noqa: F401  (registers the checks)
from sim.conformance.registry import Result, Role, Status, checks_of
from sim.conformance.report import document, header, row, summary, write_json
from sim.conformance.suite import run_suite


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--target", required=True, metavar="HOST:PORT", help="the gateway to check")
    parser.add_argument(
        "--pki",
        required=True,
        type=Path,
        metavar="DIR",
        help="a `hotline certs init` directory with both parties' certificates and keys",
    )
    parser.add_argument(
        "--role",
        required=True,
        choices=[r.value for r in Role],
        help="peer: the target's PeerLink, as the other gateway; operator: its Operator service",
    )
    parser.add_argument(
        "--target-party",
        metavar="CODE",
        help="the target's party (default: read from the certificate it presents)",
    )
    parser.add_argument(
        "--listen",
        type=int,
        metavar="PORT",
        help="(peer) also serve a PeerLink on 127.0.0.1:PORT (0: any free port, printed) and "
        "check the target's deliveries to it; the target must be configured to dial it",
    )
    parser.add_argument(
        "--listen-host",
        default="127.0.0.1",
        metavar="HOST",
        help="(peer) the address to serve the PeerLink on (default 127.0.0.1)",
    )
    parser.add_argument(
        "--operator",
        metavar="NAME",
        help="the target party's operator certificate to use (default: the first in the PKI); "
        "with --role peer --listen, used to make the target send messages to us",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="ID",
        help="run only the checks whose id starts with ID (repeatable)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for each answer (default 10)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--examples",
        type=Path,
        metavar="DIR",
        help="golden examples folder (default: the installed proto/examples)",
    )
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.set_defaults(func=cmd_conformance)


def _print(text: str) -> None:
    print(text, flush=True)


def cmd_conformance(args: argparse.Namespace) -> int:
    role = Role(args.role)
    if args.list:
        for c in checks_of(role):
            _print(f"{c.id:<44} {c.spec:<28} {c.title}")
        return 0
    shown: list[Result] = []

    def show(result: Result) -> None:
        if not shown:
            _print(header())
        shown.append(result)
        _print(row(result))

    try:
        outcome = asyncio.run(
            run_suite(
                role,
                target=args.target,
                pki=args.pki,
                target_party=args.target_party,
                listen=args.listen,
                listen_host=args.listen_host,
                operator=args.operator,
                only=args.only,
                timeout=args.timeout,
                examples=args.examples,
                on_result=show,
                announce=lambda text: print(text, file=sys.stderr, flush=True),
            )
        )
    except ConfigError as exc:
        print(f"hotline conformance: {exc}", file=sys.stderr)
        return 2
    results, parties = outcome
    _print(summary(results))
    if args.json:
        write_json(
            args.json, document(results, target=args.target, role=role.value, parties=parties)
        )
    return 1 if any(r.status is Status.FAIL for r in results) else 0
