"""`hotline watch`: the watch floor's live view of its gateway's events."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from datetime import UTC, datetime

from client.cli_common import (
    EVENT_KINDS,
    EXIT_OK,
    add_connection_options,
    choices_list,
    colour_wanted,
    describe_command,
    event_line,
    flatten,
    json_line,
    run_command,
    terminal_width,
    wrapped,
)
from client.errors import ClientError
from client.operator import OperatorClient
from hotline.display import escaped

DESCRIPTION = """\
Watch your gateway's events as they happen: messages sent and received, delivered,
acknowledged (the latest answer stands; a line says which one it replaced), refused;
escalations (the peer has not acknowledged one of ours in time) and re-alerts (we have not
acknowledged one of theirs); messages that expired unanswered (no more escalations or
re-alerts for them); the link going up and down. An UPDATE or CANCEL says which message it
replaces or withdraws, and a message received past its expiry is marked EXPIRED.

Each line shows the precedence (FLASH in red), the status (EXERCISE and TEST are marked on
every line, so that a drill is never read as real), and how long is left before an
acknowledgement is due. Events are replayed from --from (0: the whole journal; now: none), then
followed live; if the gateway goes away the watch reconnects and resumes where it stopped,
missing nothing. A gateway that cannot be reached at the start is retried for the client's
retry window (15 s), then the watch exits with status 3. Lines are coloured on a terminal and plain when piped; --json prints one
JSON object (a hotline.v1.Event) per line.

examples:
  hotline watch
  hotline watch --from now
  hotline watch --kinds received,escalation,realert
  hotline watch --json --from-cursor 120 --until-idle 5"""

NOW = -1


def _cursor(text: str) -> int:
    if text.strip().lower() == "now":
        return NOW
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a cursor (0, 1, ...) nor now"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"cursor {value} is negative")
    return value


DEFAULT_KINDS = [k for name, k in EVENT_KINDS.items() if name != "checkpoint"]
WATCH_INDENT = 14  # continuation lines start under the event number, after the clock


def register(parser: argparse.ArgumentParser) -> None:
    describe_command(parser, DESCRIPTION)
    parser.add_argument(
        "--from-cursor",
        "--from",
        dest="from_cursor",
        type=_cursor,
        default=0,
        metavar="N|now",
        help="replay events after journal position N, then follow (default 0: everything); "
        "now: only events from now on",
    )
    parser.add_argument(
        "--kinds",
        action="append",
        type=choices_list({**EVENT_KINDS, "all": 0}, "event kind"),
        metavar="KIND[,KIND...]",
        help=(f"only these kinds: {', '.join(EVENT_KINDS)}, or all (default: all but checkpoint)"),
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--count", type=int, metavar="N", help="exit after N events")
    parser.add_argument(
        "--until-idle",
        type=float,
        metavar="SECONDS",
        help="exit once no event has come for this long",
    )
    parser.add_argument(
        "--no-reconnect",
        action="store_true",
        help="exit with an error if the stream is lost, instead of resuming",
    )
    parser.add_argument(
        "--color",
        "--colour",
        dest="colour",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the output (default auto: on a terminal, unless NO_COLOR is set)",
    )
    add_connection_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    kinds = flatten(args.kinds) if args.kinds else DEFAULT_KINDS
    if 0 in kinds:
        kinds = []  # "all"
    colour = colour_wanted(sys.stdout, args.colour)
    width = terminal_width(sys.stdout)

    def reconnecting(error: ClientError, delay: float) -> None:
        print(
            f"hotline watch: stream lost ({escaped(str(error))}); reconnecting in {delay:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    async def work(client: OperatorClient) -> int:
        shown = 0
        if args.count is not None and args.count <= 0:
            return EXIT_OK
        # Reach the gateway once before watching: a gateway that never answers is given up on
        # after the retry window (exit 3), while a watch that was connected reconnects forever.
        await client.link_status()
        after, since = args.from_cursor, None
        if after == NOW:
            # The journal's newest message is where "now" starts; entries after it but from
            # before this moment (link events, checkpoints) are skipped by their time.
            newest = await client.list(limit=1)
            after = newest[0].journal_position if newest else 0
            since = datetime.now(UTC)
        events = client.watch(
            after,
            kinds,
            reconnect=not args.no_reconnect,
            on_reconnect=reconnecting,
        )
        async with contextlib.aclosing(events):
            while True:
                try:
                    if args.until_idle is not None:
                        event = await asyncio.wait_for(anext(events), args.until_idle)
                    else:
                        event = await anext(events)
                except (TimeoutError, StopAsyncIteration):
                    return EXIT_OK
                if since is not None and event.event_time.ToDatetime(tzinfo=UTC) < since:
                    continue
                if args.json:
                    print(json_line(event), flush=True)
                else:
                    line = event_line(event, party=client.party)
                    print(wrapped(line, colour, width, indent=WATCH_INDENT), flush=True)
                shown += 1
                if args.count is not None and shown >= args.count:
                    return EXIT_OK

    try:
        return run_command("watch", args, work)
    except KeyboardInterrupt:
        return EXIT_OK
