"""`hotline history`: search the messages in your gateway's journal."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from client.cli_common import (
    BODY_TYPES,
    DIRECTIONS,
    EXIT_OK,
    HISTORY_HEADER,
    HISTORY_SUMMARY_AT,
    HISTORY_WIDE,
    PRECEDENCES,
    STATES,
    STATUSES,
    add_connection_options,
    choice,
    choices_list,
    colour_wanted,
    describe_command,
    flatten,
    history_header,
    json_line,
    record_line,
    record_lines,
    run_command,
    terminal_width,
    to_dict,
    wrapped,
)
from client.operator import OperatorClient

DESCRIPTION = """\
List messages in your gateway's journal, newest first, inbound and outbound. Filters combine
with AND; the values of one filter (comma-separated or repeated) with OR. --json prints
{"messages": [MessageRecord, ...]} (protobuf JSON, .proto field names).

examples:
  hotline history --direction in --state delivered          # received, not yet acknowledged
  hotline history --overdue
  hotline history --type maritime-encounter,air-incident --precedence flash --limit 20"""


def _time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def register(parser: argparse.ArgumentParser) -> None:
    describe_command(parser, DESCRIPTION)
    parser.add_argument(
        "--direction", type=choice(DIRECTIONS, "direction"), default=0, help="in | out"
    )
    parser.add_argument(
        "--type",
        dest="types",
        action="append",
        type=choices_list(BODY_TYPES, "body type"),
        metavar="TYPE[,TYPE...]",
        help=" | ".join(BODY_TYPES),
    )
    parser.add_argument(
        "--precedence",
        action="append",
        type=choices_list(PRECEDENCES, "precedence"),
        metavar="P[,P...]",
        help=" | ".join(PRECEDENCES),
    )
    parser.add_argument(
        "--state",
        action="append",
        type=choices_list(STATES, "state"),
        metavar="S[,S...]",
        help=" | ".join(STATES),
    )
    parser.add_argument(
        "--status", type=choice(STATUSES, "status"), default=0, help=" | ".join(STATUSES)
    )
    parser.add_argument("--since", type=_time, help="journaled at or after (ISO 8601, UTC)")
    parser.add_argument("--until", type=_time, help="journaled before (ISO 8601, UTC)")
    parser.add_argument("--overdue", action="store_true", help="only overdue messages")
    parser.add_argument(
        "--limit", type=int, default=50, help="at most this many messages (default 50)"
    )
    parser.add_argument("--json", action="store_true", help='{"messages": [...]} as JSON')
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
    async def work(client: OperatorClient) -> int:
        records = await client.list(
            direction=args.direction,
            body_types=flatten(args.types),
            precedences=flatten(args.precedence),
            states=flatten(args.state),
            status=args.status,
            start_time=args.since,
            end_time=args.until,
            overdue_only=args.overdue,
            page_size=min(max(args.limit, 1), 1000),
            limit=args.limit,
        )
        if args.json:
            print(json_line({"messages": [to_dict(r) for r in records]}))
            return EXIT_OK
        colour = colour_wanted(sys.stdout, args.colour)
        width = terminal_width(sys.stdout)
        if width is not None and width < HISTORY_WIDE:  # an ordinary terminal: two-part rows
            print(history_header(width))
            for record in records:
                print(record_lines(record, colour, width))
        else:  # piped (one record per line, never cut), or a terminal wide enough for one row
            print(HISTORY_HEADER[:width] if width else HISTORY_HEADER)
            now = datetime.now(UTC)
            for record in records:
                line = record_line(record, now=now)
                print(wrapped(line, colour, width, indent=HISTORY_SUMMARY_AT, max_lines=3))
        print(f"({len(records)} message{'s' if len(records) != 1 else ''})")
        return EXIT_OK

    return run_command("history", args, work)
