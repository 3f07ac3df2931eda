"""`hotline certs`: create and manage the national PKI from the command line.

`register(parser)` is called by `hotline.cli` with the `certs` subparser; every leaf command sets
`func`, which takes the parsed namespace and returns an exit code: 0 on success, 2 on any
`CertsError` (printed as `hotline certs: error: <message>` on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from certs.errors import CertsError
from certs.pki import (
    DEFAULT_OPERATORS,
    DEFAULT_PARTIES,
    DEFAULT_VALIDITY_DAYS,
    PkiLayout,
    describe,
    init_pki,
    issue_gateway,
    issue_operator,
    refresh_crl,
    revoke,
    rotate_gateway,
)
from certs.revocation import REASON_NAMES, RevocationList
from certs.verify import format_time

PROG = "hotline certs"
_RAW = argparse.RawDescriptionHelpFormatter

Command = Callable[[argparse.Namespace], int]

CERTS_EPILOG = """\
examples:
  hotline certs init --dir pki                      # JP and TW, one operator watch-1 each
  hotline certs init --dir pki --party JP --party TW --operator watch-1 --operator watch-2
  hotline certs show pki/jp                         # summarise every certificate of JP
  hotline certs issue operator --dir pki --party JP --name watch-3
  hotline certs issue gateway --dir pki --party JP --dns gw.example.jp
  hotline certs rotate --dir pki --party JP         # new gateway key; old pair kept as *.prev
  hotline certs revoke --dir pki --party JP pki/jp/operators/watch-3.crt --reason key-compromise
  hotline certs crl --dir pki --party JP            # re-sign JP's revocation list (weekly)

Each party's folder (pki/jp, pki/tw) is what that party's gateway host needs. Private keys
(*.key, mode 0600) never leave their party; only certificates and crl.pem cross the border.
"""


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


def _guard(command: Command) -> Command:
    """Run a command, turning `CertsError` (and OS errors) into an error line and exit code 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except CertsError as exc:
            return _fail(str(exc))
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            return _fail(f"{exc.strerror or exc}{where}")

    run.__doc__ = command.__doc__
    return run


def _party(value: str) -> str:
    # Party codes are uppercase; accept `jp` on the command line as a convenience.
    return value.strip().upper()


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of days") from None
    if days < 1:
        raise argparse.ArgumentTypeError("must be at least 1 day")
    return days


def _add_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", required=True, type=Path, metavar="DIR", help="the PKI directory (holds pki.json)"
    )


def _add_party(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--party", required=True, type=_party, metavar="CODE", help="party code, such as JP"
    )


def _add_days(parser: argparse.ArgumentParser, what: str = "certificate") -> None:
    parser.add_argument(
        "--days",
        type=_days,
        default=DEFAULT_VALIDITY_DAYS,
        metavar="N",
        help=f"{what} validity in days (default {DEFAULT_VALIDITY_DAYS}; never beyond the CA's)",
    )


# ------------------------------------------------------------------------------------------
# Commands


def _cmd_init(args: argparse.Namespace) -> int:
    parties = args.party or list(DEFAULT_PARTIES)
    operators = args.operator or list(DEFAULT_OPERATORS)
    layout = init_pki(
        args.dir,
        parties,
        operators,
        force=args.force,
        validity_days=args.days,
        ca_validity_days=args.ca_days,
    )
    print(f"Created a Hotline PKI for {' and '.join(layout.parties)} in {layout.directory}:")
    rows: list[tuple[Path, str]] = [(layout.manifest, "manifest: parties and operators")]
    for code in layout.parties:
        paths = layout.party(code)
        peer = layout.peer_of(code)
        rows += [
            (paths.ca_cert, f"{code} root CA certificate"),
            (paths.ca_key, f"{code} root CA private key (keep offline)"),
            (paths.gateway_cert, f"{code} gateway certificate (TLS server and client)"),
            (paths.gateway_key, f"{code} gateway private key"),
            (paths.signing_cert, f"{code} message-signing certificate (Ed25519)"),
            (paths.signing_key, f"{code} message-signing private key"),
        ]
        for name in layout.operators.get(code, ()):
            rows += [
                (paths.operator_cert(name), f"{code} operator {name} certificate (TLS client)"),
                (paths.operator_key(name), f"{code} operator {name} private key"),
            ]
        rows += [
            (paths.crl, f"{code} revocation list (empty)"),
            (paths.peer_ca_cert, f"copy of the {peer} root CA certificate"),
            (paths.peer_crl, f"copy of the {peer} revocation list"),
            (paths.bundle, f"{code} + {peer} CAs: the gateway's client-certificate roots"),
        ]
    width = max(len(str(path)) for path, _ in rows)
    for path, text in rows:
        print(f"  {path!s:<{width}}  {text}")
    first = layout.parties[0]
    print(
        "\nPrivate keys (*.key) have mode 0600 and never leave their party; give each gateway\n"
        "host only its own party's folder. Next steps:\n"
        f"  hotline certs show {layout.party(first).root}      # inspect the certificates\n"
        f"  hotline certs crl --dir {layout.directory} --party {first}   "
        "# re-sign a revocation list (do so weekly)"
    )
    return 0


def _cmd_issue_operator(args: argparse.Namespace) -> int:
    cert = issue_operator(
        args.dir, args.party, args.name, validity_days=args.days, force=args.force
    )
    key = cert.with_suffix(".key")
    print(f"Issued operator {args.name} of {args.party}:\n  {cert}\n  {key}  (mode 0600)")
    return 0


def _cmd_issue_gateway(args: argparse.Namespace) -> int:
    cert = issue_gateway(
        args.dir,
        args.party,
        dns_names=args.dns or (),
        ip_addresses=args.ip or (),
        validity_days=args.days,
    )
    print(f"Reissued the {args.party} gateway certificate for its existing key:\n  {cert}")
    print("A running gateway picks it up at its next handshake if it reloads credentials.")
    return 0


def _cmd_rotate(args: argparse.Namespace) -> int:
    cert, key = rotate_gateway(args.dir, args.party, validity_days=args.days)
    print(f"Rotated the {args.party} gateway key and certificate:\n  {key}\n  {cert}")
    print(f"The previous pair is kept as {cert.name}.prev and {key.name}.prev.")
    print(
        "Revoke the previous certificate once every link has reconnected:\n"
        f"  hotline certs revoke --dir {args.dir} --party {args.party} {cert}.prev "
        "--reason superseded"
    )
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    serial = revoke(args.dir, args.party, args.cert_file, reason=args.reason)
    crl = PkiLayout.load(args.dir).party(args.party).crl
    print(f"Revoked serial {serial:#x} ({args.cert_file}) in {crl}.")
    print("Gateways see it when they next reload the revocation list (the peer's gateway")
    print("reads it as its peer-crl.pem, which is updated here when its folder is in DIR).")
    return 0


def _cmd_crl(args: argparse.Namespace) -> int:
    path = refresh_crl(args.dir, args.party)
    layout = PkiLayout.load(args.dir)
    crl = RevocationList.load(path, layout.party(args.party).ca_cert)
    until = format_time(crl.next_update) if crl.next_update else "no next update"
    print(f"Re-signed {path}: CRL number {crl.number}, {len(crl)} revoked, current until {until}.")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    print(describe(args.path))
    return 0


# ------------------------------------------------------------------------------------------
# Parser


def _sub(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    description: str,
    epilog: str,
    command: Command,
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=description,
        epilog=epilog,
        formatter_class=_RAW,
    )
    parser.set_defaults(func=_guard(command))
    return parser


def register(parser: argparse.ArgumentParser) -> None:
    """Add the `certs` subcommands to `parser` (the `hotline certs` subparser)."""
    parser.formatter_class = _RAW
    parser.description = (
        "Create and manage the Hotline PKI: one root CA per party, a gateway certificate\n"
        "(TLS server and client), operator certificates (TLS clients), an Ed25519\n"
        "message-signing certificate, and a revocation list, all in one directory."
    )
    parser.epilog = CERTS_EPILOG

    def usage(_: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(func=usage)
    sub = parser.add_subparsers(dest="certs_command", metavar="SUBCOMMAND")

    init = _sub(
        sub,
        "init",
        "create both parties' CAs, gateway, signing and operator certificates",
        "Create a complete two-party PKI in DIR: per party a root CA, a gateway certificate,\n"
        "a message-signing certificate, operator certificates and an empty revocation list,\n"
        "plus each party's copy of the peer CA and its trust bundle. Refuses to overwrite\n"
        "existing files unless --force is given.",
        "examples:\n"
        "  hotline certs init --dir pki\n"
        "  hotline certs init --dir pki --party JP --party TW --operator watch-1 --operator watch-2\n"
        "  hotline certs init --dir pki --days 30 --force      # replace everything, short-lived\n",
        _cmd_init,
    )
    _add_dir(init)
    init.add_argument(
        "--party",
        action="append",
        type=_party,
        metavar="CODE",
        help="a party code (2-8 letters); give exactly two (default: --party JP --party TW)",
    )
    init.add_argument(
        "--operator",
        action="append",
        metavar="NAME",
        help="an operator to issue for each party; repeatable (default: watch-1)",
    )
    _add_days(init, "leaf certificate")
    init.add_argument(
        "--ca-days",
        type=_days,
        default=None,
        metavar="N",
        help="root CA validity in days (default 3650)",
    )
    init.add_argument("--force", action="store_true", help="overwrite existing files")

    issue = sub.add_parser(
        "issue",
        help="issue an operator certificate or reissue the gateway certificate",
        description="Issue certificates from an existing PKI's CA.",
        epilog=(
            "examples:\n"
            "  hotline certs issue operator --dir pki --party JP --name watch-2\n"
            "  hotline certs issue gateway --dir pki --party TW --dns gateway.example.tw\n"
        ),
        formatter_class=_RAW,
    )

    def issue_usage(_: argparse.Namespace) -> int:
        issue.print_help(sys.stderr)
        return 2

    issue.set_defaults(func=issue_usage)
    issue_sub = issue.add_subparsers(dest="issue_kind", metavar="KIND")
    operator = _sub(
        issue_sub,
        "operator",
        "issue a new operator (watch officer) key and certificate",
        "Issue a key and TLS client certificate for a watch officer of PARTY, with the identity\n"
        "spiffe://<party>.hotline/operator/NAME. Written to DIR/<party>/operators/NAME.crt/.key.",
        "examples:\n"
        "  hotline certs issue operator --dir pki --party JP --name watch-2\n"
        "  hotline certs issue operator --dir pki --party JP --name watch-2 --force  # replace\n",
        _cmd_issue_operator,
    )
    _add_dir(operator)
    _add_party(operator)
    operator.add_argument(
        "--name", required=True, metavar="NAME", help="operator name: a-z, 0-9, '-' (watch-2)"
    )
    _add_days(operator)
    operator.add_argument("--force", action="store_true", help="replace an existing operator")

    gateway = _sub(
        issue_sub,
        "gateway",
        "reissue the gateway certificate (same key) with extra names",
        "Reissue PARTY's gateway certificate for its existing key. It always names\n"
        "gateway.<party>.hotline, localhost and 127.0.0.1, plus every --dns and --ip given\n"
        "(names from the previous certificate are not carried over). For a new key use rotate.",
        "examples:\n"
        "  hotline certs issue gateway --dir pki --party JP --dns gw.example.jp --ip 192.0.2.10\n",
        _cmd_issue_gateway,
    )
    _add_dir(gateway)
    _add_party(gateway)
    gateway.add_argument(
        "--dns", action="append", metavar="NAME", help="extra DNS name (repeatable, no wildcards)"
    )
    gateway.add_argument("--ip", action="append", metavar="ADDR", help="extra IP address")
    _add_days(gateway)

    rotate = _sub(
        sub,
        "rotate",
        "give a gateway a new key and certificate, keeping the old pair as *.prev",
        "Generate a new gateway key and certificate for PARTY, with the same names as the\n"
        "current certificate. The current pair is kept as gateway.crt.prev / gateway.key.prev.\n"
        "Files are replaced atomically, key first and certificate last, so a running gateway\n"
        "that reloads its credentials between handshakes switches without dropping links.",
        "examples:\n  hotline certs rotate --dir pki --party JP\n",
        _cmd_rotate,
    )
    _add_dir(rotate)
    _add_party(rotate)
    _add_days(rotate)

    revoke_parser = _sub(
        sub,
        "revoke",
        "add a certificate to its party's revocation list",
        "Add CERT_FILE's serial number to PARTY's revocation list (crl.pem), re-signed by\n"
        "PARTY's CA with the next CRL number and a next update seven days on. CERT_FILE must\n"
        "have been issued by PARTY's CA.\n\n"
        f"reasons: {', '.join(REASON_NAMES)}",
        "examples:\n"
        "  hotline certs revoke --dir pki --party JP pki/jp/operators/watch-2.crt\n"
        "  hotline certs revoke --dir pki --party JP pki/jp/gateway.crt.prev --reason superseded\n",
        _cmd_revoke,
    )
    _add_dir(revoke_parser)
    _add_party(revoke_parser)
    revoke_parser.add_argument("cert_file", type=Path, metavar="CERT_FILE")
    revoke_parser.add_argument(
        "--reason", default="unspecified", metavar="REASON", help="why (default: unspecified)"
    )

    crl = _sub(
        sub,
        "crl",
        "re-sign a party's revocation list so it stays current",
        "Re-sign PARTY's revocation list unchanged, with the next CRL number and a next update\n"
        "seven days on. Run it at least weekly. A gateway takes a list only if its CRL number\n"
        "is greater than the one it holds (an older list put back is refused and raises an\n"
        "alarm); once a list is past its next update (plus the gateway's crl_grace_s, default\n"
        "0), the gateway refuses every call of PARTY's certificates, and raises an alarm, until\n"
        "a current list is loaded. In a split deployment, deliver the new crl.pem to the peer\n"
        "as its peer-crl.pem before the old one runs out.",
        "examples:\n  hotline certs crl --dir pki --party TW\n",
        _cmd_crl,
    )
    _add_dir(crl)
    _add_party(crl)

    show = _sub(
        sub,
        "show",
        "summarise a certificate, bundle, CRL or key, or every one in a directory",
        "Print subject, issuer, identity, role, validity, serial, SHA-256 fingerprint and key\n"
        "type of a certificate (each one in a bundle), the entries of a revocation list, or\n"
        "all of these under a directory.",
        "examples:\n"
        "  hotline certs show pki/jp/gateway.crt\n"
        "  hotline certs show pki                # everything\n",
        _cmd_show,
    )
    show.add_argument("path", type=Path, metavar="PATH", help="a file or directory")
