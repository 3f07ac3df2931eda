"""`hotline show`: one message, in full, and where it stands."""

from __future__ import annotations

import argparse
import sys

from client.cli_common import (
    EXIT_OK,
    EXIT_USAGE,
    add_connection_options,
    colour_wanted,
    describe_command,
    fail,
    json_pretty,
    record_text,
    run_command,
    terminal_width,
)
from client.operator import OperatorClient, id_part
from hotline.ids import is_message_id

DESCRIPTION = """\
Show one message, inbound or outbound, as your gateway's journal holds it now: the envelope's
header, where it stands on the acknowledgement ladder (journaled, delivered, acknowledged, with
the times), its acknowledgement (the latest stands; "ack history" lists every one, oldest
first), where it stands in its chain (an UPDATE or CANCEL of which message; "updated by",
"cancelled by"), whether it has EXPIRED, and the body. --json prints the whole
hotline.v1.MessageRecord, including the signed envelope bytes (base64), for independent
verification."""


def register(parser: argparse.ArgumentParser) -> None:
    describe_command(parser, DESCRIPTION)
    parser.add_argument(
        "message_id",
        metavar="MESSAGE_ID",
        help="the id, or a short unique part of it: its start, or its end as shown (…440eeac7)",
    )
    parser.add_argument("--json", action="store_true", help="the MessageRecord as JSON")
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


def run(args: argparse.Namespace) -> int:
    if not is_message_id(args.message_id) and id_part(args.message_id) is None:
        return fail(
            "show",
            f"not a message id: {args.message_id!r} (give the id, or at least 4 hex digits "
            "of its start, or of its end after …)",
            EXIT_USAGE,
        )

    async def work(client: OperatorClient) -> int:
        record = await client.get(await client.resolve_id(args.message_id))
        if args.json:
            print(json_pretty(record))
        else:
            colour = colour_wanted(sys.stdout, args.colour)
            print(record_text(record, colour, terminal_width(sys.stdout)))
        return EXIT_OK

    return run_command("show", args, work)
