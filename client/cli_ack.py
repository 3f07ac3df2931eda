"""`hotline ack`: acknowledge a message received from the other party."""

from __future__ import annotations

import argparse

from client.cli_common import (
    EXIT_OK,
    EXIT_USAGE,
    LEVELS,
    WAIT_STATES,
    add_connection_options,
    choice,
    clock,
    describe_command,
    fail,
    json_line,
    level_name,
    run_command,
)
from client.operator import OperatorClient, id_part
from hotline.ids import is_message_id
from hotline.v1 import bodies_pb2, operator_pb2

DESCRIPTION = """\
Acknowledge a message the other party sent: the top rung of its acknowledgement ladder. Your
gateway signs and journals an acknowledgement message and delivers it to the sender, whose
watch then sees ACKNOWLEDGED. A message may be acknowledged again (ROGER, then WILCO); the
latest stands. Acknowledging again at the level that already stands sends nothing and says so
(--again sends it anyway). The id may be shortened to a unique part: its start, or its end as
`hotline watch` shows it (…440eeac7).

levels:
  roger       received and understood
  wilco       received, understood, will comply
  unable      received and understood, cannot comply (--reason required)
  say-again   not understood: resend (--reason may say what)

examples:
  hotline ack 0192f3c4-... --level roger
  hotline ack 0192f3c4-... --level unable --reason "No unit within 50 nm\""""


def register(parser: argparse.ArgumentParser) -> None:
    describe_command(parser, DESCRIPTION)
    parser.add_argument(
        "message_id",
        metavar="MESSAGE_ID",
        help="the received message: its id, or a short unique part (its start, or …its end)",
    )
    parser.add_argument(
        "--level",
        "-l",
        type=choice(LEVELS, "level"),
        required=True,
        help=" | ".join(LEVELS),
    )
    parser.add_argument("--reason", help="why you cannot comply (unable) or what to say again")
    parser.add_argument("--remarks", help="anything you add, e.g. an expected time")
    parser.add_argument("--language", default="en", help="language of your texts (default en)")
    parser.add_argument(
        "--wait",
        type=choice({"delivered": WAIT_STATES["delivered"]}, "state"),
        help="delivered: wait until the acknowledgement reaches the other gateway",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="for --wait (default 30)")
    parser.add_argument(
        "--again",
        action="store_true",
        help="send it even if the latest acknowledgement already has this level",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_connection_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not is_message_id(args.message_id) and id_part(args.message_id) is None:
        return fail(
            "ack",
            f"not a message id: {args.message_id!r} (give the id, or at least 4 hex digits "
            "of its start, or of its end after …)",
            EXIT_USAGE,
        )
    if args.level == bodies_pb2.ACKNOWLEDGEMENT_LEVEL_UNABLE and not args.reason:
        return fail("ack", "--level unable needs --reason (why you cannot comply)", EXIT_USAGE)

    async def work(client: OperatorClient) -> int:
        message_id = await client.resolve_id(args.message_id)
        record = await client.get(message_id)
        if record.acknowledgements and not args.again:
            latest = record.acknowledgements[-1]
            if latest.acknowledgement.level == args.level:
                print(
                    f"{message_id} was already acknowledged {level_name(args.level)} at "
                    f"{clock(latest.acknowledge_time, date=True)} (acknowledgement "
                    f"{latest.acknowledgement_message_id}); nothing sent (--again sends it "
                    "once more)"
                )
                return EXIT_OK
        result = await client.acknowledge(
            message_id,
            args.level,
            remarks=args.remarks,
            reason=args.reason,
            language=args.language,
        )
        if args.wait is not None:
            await client.wait_for(result.ack_message_id, args.wait, timeout=args.timeout)
        if args.json:
            print(
                json_line(
                    operator_pb2.AcknowledgeResponse(
                        ack_message_id=result.ack_message_id,
                        journal_position=result.journal_position,
                    )
                )
            )
        else:
            print(
                f"{message_id} acknowledged {level_name(args.level)}: acknowledgement "
                f"{result.ack_message_id} (journal position {result.journal_position})"
            )
        return EXIT_OK

    return run_command("ack", args, work)
