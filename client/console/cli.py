"""`hotline console`: serve the browser console for one or both watch floors."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import ssl
import webbrowser
from pathlib import Path

from client.cli_common import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    add_connection_options,
    fail,
    operator_config,
)
from client.config import OperatorConfig, resolve
from client.console.app import Console, is_loopback
from client.operator import OperatorClient
from hotline.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:8765"

DESCRIPTION = f"""\
Serve a browser console over the operator API: the watch floors of one or both gateways side by
side, live, lined up by time (precedence colours, EXERCISE/TEST marked, each message's rung on
the ladder, its acknowledgement deadline counting down, ESCALATION and REALERT standing out); a
map of the encounter from the positions in the traffic (vessels and aircraft with course
vectors, CPA circles, hazard and impact areas, SAR datums; an UPDATE replaces what it refers
to, a CANCEL removes it), with the coastline and illustrative ADIZ lines; link status both ways;
a timeline of the run; a message's full record in each journal on click; and a form to
acknowledge (ROGER, WILCO, UNABLE with a reason, SAY AGAIN) what the page's party received.

The page is self-contained (Leaflet and the coastline are vendored; nothing is fetched from the
network). Each floor is one operator's connection to its own gateway: give one --floor FILE per
party (operator files as `hotline demo --keep` writes them), or the usual connection options
for a single floor. Certificates and keys stay in this process; the browser sees JSON views.

Access: the console listens on {DEFAULT_LISTEN} (loopback) by default and answers only to
loopback host names. To listen on another address it requires TLS (--tls-cert, --tls-key) and
an access token (--token-file, or one is generated and printed): open the printed URL once;
the token is kept in a cookie. Anyone who can open the page can acknowledge as its parties'
operators: serve it only to the watch floor.

Example, with the gateways of `hotline demo --keep --dir demo`:
  hotline console --floor demo/jp-operator.toml --floor demo/tw-operator.toml
`hotline demo --web` runs the demo encounter with the console open."""


def register(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = DESCRIPTION
    parser.add_argument(
        "--floor",
        metavar="FILE",
        action="append",
        default=[],
        help="an operator TOML file for one watch floor (repeat for the other party)",
    )
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=DEFAULT_LISTEN,
        help=f"where the page is served (default {DEFAULT_LISTEN}; port 0: any free port)",
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="TLS certificate chain (PEM)")
    parser.add_argument("--tls-key", metavar="FILE", help="TLS private key (PEM)")
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the access token (required off loopback; generated if not given)",
    )
    parser.add_argument("--open", action="store_true", help="open the page in a web browser")
    add_connection_options(parser)
    parser.set_defaults(func=run)


def split_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen must be HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def floors_of(args: argparse.Namespace) -> list[OperatorConfig]:
    if not args.floor:
        return [operator_config(args)]
    floors = [resolve({}, config_file=Path(f)) for f in args.floor]
    parties = [f.party for f in floors]
    if len(set(parties)) != len(parties):
        raise ConfigError(f"one --floor per party, got {', '.join(parties)}")
    return floors


def tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls_cert and not args.tls_key:
        return None
    if not (args.tls_cert and args.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the console's TLS certificate: {exc}") from None
    return context


def token_of(args: argparse.Namespace, host: str) -> str | None:
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file: {exc}") from None
        if len(token) < 16:
            raise ConfigError("the access token must be at least 16 characters")
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(24)


async def serve(args: argparse.Namespace) -> int:
    host, port = split_listen(args.listen)
    floors = floors_of(args)
    token = token_of(args, host)
    clients = {
        f.party: OperatorClient(
            f.address, cert=f.cert, key=f.key, ca=f.ca, party=f.party, timeout=f.timeout_s
        )
        for f in floors
    }
    console = Console(clients, host=host, port=port, token=token, ssl_context=tls_context(args))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        url = await console.start()
        shown = f"{url}?token={token}" if token else url
        for f in floors:
            print(f"floor {f.party}: gateway {f.address}", flush=True)
        print(f"hotline console: {shown}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        if args.open:
            webbrowser.open(shown)
        await stop.wait()
        return EXIT_OK
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await console.stop()
        for client in clients.values():
            await client.close()


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(serve(args))
    except ConfigError as exc:
        return fail("console", str(exc), EXIT_USAGE)
    except OSError as exc:
        return fail("console", str(exc), EXIT_UNAVAILABLE)
