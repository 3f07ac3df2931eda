"""`hotline status`: is the line up? Both directions of the peer link, and overdue traffic."""

from __future__ import annotations

import argparse
import sys

from google.protobuf.duration_pb2 import Duration

from client.cli_common import (
    BOLD,
    EXIT_OK,
    GREEN,
    RED,
    Line,
    add_connection_options,
    clock,
    colour_wanted,
    describe_command,
    json_line,
    run_command,
    terminal_width,
    wrapped,
)
from client.operator import OperatorClient
from hotline.v1 import operator_pb2

DESCRIPTION = """\
Show the state of the peer link as your gateway sees it: each direction up or down and since
when, the latest heartbeat round-trip time and the peer's clock offset, the queue of messages
awaiting the peer's receipt, and how many messages are overdue (awaiting an acknowledgement
past their deadline). --json prints the hotline.v1.GetLinkStatusResponse."""


def register(parser: argparse.ArgumentParser) -> None:
    describe_command(parser, DESCRIPTION)
    parser.add_argument("--json", action="store_true", help="GetLinkStatusResponse as JSON")
    parser.add_argument(
        "--color",
        "--colour",
        dest="colour",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the output (default auto)",
    )
    add_connection_options(parser)
    parser.set_defaults(func=run)


def _ms(duration: Duration) -> str:
    return f"{duration.ToNanoseconds() / 1e6:+.1f} ms"


def _direction(name: str, arrow: str, link: operator_pb2.LinkStatus) -> Line:
    line = Line([]).add(f"  {name:<9} {arrow:<9} ")
    line.add("UP  " if link.up else "DOWN", f"{BOLD};{GREEN}" if link.up else f"{BOLD};{RED}")
    if link.HasField("since_time"):
        line.add(f"  since {clock(link.since_time, date=True)}")
    if link.HasField("rtt") and link.up:
        line.add(f"  rtt {link.rtt.ToNanoseconds() / 1e6:.1f} ms")
    if link.HasField("clock_offset") and link.up:
        line.add(f"  clock offset {_ms(link.clock_offset)}")
    line.add(f"  queue {link.queue_depth}  last sequence {link.last_sequence}")
    if link.detail:
        line.add(f"  ({link.detail})")
    return line


def run(args: argparse.Namespace) -> int:
    async def work(client: OperatorClient) -> int:
        status = await client.link_status()
        if args.json:
            print(json_line(status))
            return EXIT_OK
        colour = colour_wanted(sys.stdout, args.colour)
        us, peer = status.party, status.peer_party
        print(f"gateway {us} at {client.address}; peer {peer}")
        width = terminal_width(sys.stdout)
        for name, arrow, link in (
            ("outbound", f"{us} -> {peer}", status.outbound),
            ("inbound", f"{peer} -> {us}", status.inbound),
        ):
            print(wrapped(_direction(name, arrow, link), colour, width, indent=22))
        overdue = Line([]).add("  overdue messages: ")
        overdue.add(str(status.overdue_count), f"{BOLD};{RED}" if status.overdue_count else "")
        print(overdue.render(colour))
        return EXIT_OK

    return run_command("status", args, work)
