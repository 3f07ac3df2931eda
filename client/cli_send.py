"""`hotline send`: send a message to the other party through your own gateway."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import Message

from client import bodies, body_flags
from client.cli_common import (
    ACTIONS,
    CLASSIFICATIONS,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    PRECEDENCES,
    STATUSES,
    WAIT_STATES,
    add_connection_options,
    choice,
    clock,
    describe_command,
    enum_choices,
    fail,
    json_line,
    run_command,
)
from client.errors import ClientError
from client.operator import OperatorClient, SendResult, state_name
from hotline.display import escaped
from hotline.errors import ConfigError
from hotline.ids import new_message_id
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2

# Bodies whose subcommand is generated from the descriptor (the others have hand-written flags
# with shorter names; acknowledgements are sent only with `hotline ack`).
HAND_WRITTEN = (
    "free_text",
    "link_test",
    "maritime_encounter",
    "manoeuvre_notice",
    "air_incident",
    "call_request",
)
_BODY_MEMBERS = envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"].fields
GENERATED: dict[str, Any] = {
    f.name: f.message_type
    for f in _BODY_MEMBERS
    if f.name not in HAND_WRITTEN and f.name != "acknowledgement"
}

DESCRIPTION = """\
Send a message to the other party through your own gateway. Give the body as a subcommand
with its facts as flags, or a whole envelope with --file (protobuf text format .txtpb, or
JSON). The command returns once your gateway has journaled the message (JOURNALED); with
--wait it then follows the message until it is delivered or acknowledged.

examples:
  hotline send free-text --subject "Radio check" --text "How do you read?"
  hotline send link-test --number 7
  hotline send maritime-encounter --precedence immediate --lat 24.45 --lon 122.95 \\
      --course 90 --speed 12 --contact-lat 24.47 --contact-lon 122.99 --encounter crossing
  hotline send air-incident --precedence flash --kind intercept --lat 24.1 --lon 123.4 \\
      --altitude-ft 24000 --interceptor "F-15J 2-8923" --adiz JADIZ
  hotline send launch-warning --launch-point 39.0,125.7 --launch-time now-2m \\
      --missile-kind ballistic-short-range --confidence probable --apogee-km 550
  hotline send --file my-envelope.txtpb --wait acknowledged
  hotline send --file proto/examples/valid/sar_request.txtpb --fresh --expires-in 3600
  hotline send --file reports.jsonl            # many envelopes, one JSON per line, batched

Every body has a subcommand; `hotline send BODY --help` lists its fields with their units and
ranges. Acknowledgements are sent with `hotline ack`, not here.

--file takes a whole Envelope (the message with its header: precedence, status, handling, and
one body field such as `sar_request { ... }`); `hotline send body --type T FILE` takes only a
body. Both read protobuf text format (.txtpb: times as `{ seconds: 1750410720 }`, seconds since
1970 UTC) or protobuf JSON (.json: times as RFC 3339 strings, "2025-06-20T09:12:00Z"). A file
gets the same defaults as the flags: status EXERCISE (TEST for a link test) unless --status
says otherwise, whatever the file says; the flags given replace the file's values. --fresh makes
the file a template: a new id, your parties and originator, created now, and an expire_time
moved by the time since the file's create_time (or --expires-in from now)."""

PLATFORM_KINDS = enum_choices(common_pb2.PlatformKind, "PLATFORM_KIND_")
ENCOUNTERS = enum_choices(bodies_pb2.EncounterType, "ENCOUNTER_TYPE_")
SIGNALS = enum_choices(bodies_pb2.ManoeuvringSignal, "MANOEUVRING_SIGNAL_")
AIR_KINDS = enum_choices(bodies_pb2.AirIncidentKind, "AIR_INCIDENT_KIND_")
URGENCIES = enum_choices(bodies_pb2.CallUrgency, "CALL_URGENCY_")
BODY_MEMBERS = sorted(
    f.replace("_", "-") for f in bodies.BODY_FIELDS.values() if f != "acknowledgement"
)

# Per-body defaults where the protocol says what is normal (a link test is ROUTINE and TEST).
BODY_DEFAULTS: dict[str, tuple[str, str]] = {
    "free-text": ("routine", "exercise"),
    "link-test": ("routine", "test"),
    "maritime-encounter": ("immediate", "exercise"),
    "manoeuvre-notice": ("immediate", "exercise"),
    "air-incident": ("flash", "exercise"),
    "call-request": ("immediate", "exercise"),
    "hazardous-activity": ("priority", "exercise"),
    "launch-warning": ("flash", "exercise"),
    "sar-request": ("immediate", "exercise"),
    "sar-sitrep": ("priority", "exercise"),
    "hadr-request": ("immediate", "exercise"),
    "hadr-offer": ("immediate", "exercise"),
    "evacuation": ("priority", "exercise"),
    "cyber-threat": ("priority", "exercise"),
    "body": ("routine", "exercise"),
}


def _add_envelope_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Envelope and output options; on the body subcommands too, so they may come after it."""
    default: Any = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("envelope and output")
    group.add_argument(
        "--precedence",
        "-p",
        type=choice(PRECEDENCES, "precedence"),
        default=default,
        help="flash | immediate | priority | routine (default depends on the body)",
    )
    group.add_argument(
        "--status",
        type=choice(STATUSES, "status"),
        default=default,
        help="actual | exercise | test (default exercise; test for link-test)",
    )
    group.add_argument(
        "--language", default=default, help="BCP 47 tag of the texts you write (default en)"
    )
    group.add_argument(
        "--classification",
        type=choice(CLASSIFICATIONS, "classification"),
        default=default,
        help="unclassified (default) | restricted | confidential | secret",
    )
    group.add_argument(
        "--caveat", default=default, help="handling caveat, e.g. 'NOT FOR PUBLIC RELEASE'"
    )
    group.add_argument(
        "--action",
        type=choice(ACTIONS, "action"),
        default=default,
        help="new (default) | update | cancel (give --reference)",
    )
    group.add_argument(
        "--reference",
        dest="references",
        action="append",
        metavar="MESSAGE_ID",
        default=default,
        help="an earlier message this one refers to (repeatable; first = the one updated)",
    )
    group.add_argument(
        "--message-id",
        default=default,
        help="the id to use (default: a new UUIDv7, so a retried send is not sent twice)",
    )
    group.add_argument(
        "--expires-in",
        type=float,
        metavar="SECONDS",
        default=default,
        help="the content goes stale this many seconds from now",
    )
    group.add_argument(
        "--wait",
        type=choice(WAIT_STATES, "state"),
        default=default,
        help="then wait until journaled | delivered | acknowledged",
    )
    group.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=default,
        help="give up waiting after this long (default 30)",
    )
    group.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print the result as one JSON object",
    )


def _platform_options(parser: argparse.ArgumentParser, prefix: str, what: str, kind: str) -> None:
    parser.add_argument(
        f"--{prefix}kind",
        type=choice(PLATFORM_KINDS, "platform kind"),
        default=PLATFORM_KINDS[kind],
        help=f"{what}: kind ({kind} by default)",
    )
    parser.add_argument(f"--{prefix}name", default="", help=f"{what}: name")
    parser.add_argument(f"--{prefix}hull", default="", help=f"{what}: hull number")
    parser.add_argument(f"--{prefix}callsign", default="", help=f"{what}: callsign")


def _platform(args: argparse.Namespace, prefix: str) -> common_pb2.PlatformIdentity:
    p = prefix.replace("-", "_")
    return bodies.platform(
        getattr(args, f"{p}kind"),
        name=getattr(args, f"{p}name"),
        hull_number=getattr(args, f"{p}hull"),
        callsign=getattr(args, f"{p}callsign"),
    )


def _body_parser(
    sub: Any, name: str, help_text: str, build: Callable[[argparse.Namespace], Message]
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(build=build, body_name=name)
    member = name.replace("-", "_")
    if member in bodies.BODY_FIELDS.values():
        descriptor = envelope_pb2.Envelope.DESCRIPTOR.fields_by_name[member].message_type
        parser.epilog = body_flags.field_reference(descriptor, flags_listed=member in GENERATED)
    return parser


def register(parser: argparse.ArgumentParser) -> None:
    describe_command(parser, DESCRIPTION)
    parser.add_argument(
        "--file",
        "-f",
        metavar="FILE",
        action="append",
        help="send the Envelope in FILE (a whole message, header and body; .txtpb with times as "
        "{seconds: N}, or .json with RFC 3339 times) instead of a body subcommand; repeat it, "
        "or give a .jsonl file (one JSON envelope per line), to send many: they go in batches "
        "(SendBatch), one result line each, in order. Status is EXERCISE unless --status",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="with --file: clear message_id, sender_party, recipient_party, originator and "
        "create_time, and move expire_time by the time since the file's create_time, so the "
        "file is a template filled for you and your gateway (e.g. one of "
        "proto/examples/valid/)",
    )
    _add_envelope_options(parser, suppress=False)
    add_connection_options(parser)
    parser.set_defaults(func=run, build=None, body_name=None)
    sub = parser.add_subparsers(dest="body", metavar="BODY", title="bodies")

    p = _body_parser(sub, "free-text", "free text (use a typed body where one fits)", _free_text)
    p.add_argument("--subject", required=True, help="subject line")
    p.add_argument("--text", required=True, help="the text")

    p = _body_parser(sub, "link-test", "a link test (the other watch answers ROGER)", _link_test)
    p.add_argument("--number", type=int, default=1, help="test number (default 1)")
    p.add_argument("--text", default=None, help="test text for the other watch to check")

    p = _body_parser(sub, "maritime-encounter", "report an encounter at sea", _maritime)
    p.add_argument("--lat", type=float, required=True, help="our platform's latitude, degrees")
    p.add_argument("--lon", type=float, required=True, help="our platform's longitude, degrees")
    p.add_argument("--course", type=float, required=True, help="our course, degrees true")
    p.add_argument("--speed", type=float, required=True, help="our speed, knots")
    _platform_options(p, "platform-", "our platform", "surface-vessel")
    p.add_argument("--contact-lat", type=float, required=True, help="the contact's latitude")
    p.add_argument("--contact-lon", type=float, required=True, help="the contact's longitude")
    p.add_argument("--contact-course", type=float, help="the contact's course, degrees true")
    p.add_argument("--contact-speed", type=float, help="the contact's speed, knots")
    _platform_options(p, "contact-", "the contact", "unknown")
    p.add_argument(
        "--encounter",
        type=choice(ENCOUNTERS, "encounter type"),
        default=ENCOUNTERS["other"],
        help=f"{' | '.join(ENCOUNTERS)} (default other)",
    )
    p.add_argument("--cpa", type=float, help="predicted closest point of approach, metres")
    p.add_argument("--tcpa", type=float, help="seconds to the closest point of approach")
    p.add_argument(
        "--bridge-to-bridge", action="store_true", help="bridge-to-bridge contact established"
    )
    p.add_argument("--intentions", help="our intentions, in words")
    p.add_argument("--remarks", help="anything else the other watch should know")

    p = _body_parser(sub, "manoeuvre-notice", "give notice of a manoeuvre (CUES)", _manoeuvre)
    p.add_argument("--lat", type=float, required=True, help="latitude, degrees")
    p.add_argument("--lon", type=float, required=True, help="longitude, degrees")
    p.add_argument("--course", type=float, required=True, help="present course, degrees true")
    p.add_argument("--speed", type=float, required=True, help="present speed, knots")
    _platform_options(p, "platform-", "the platform", "surface-vessel")
    p.add_argument(
        "--signal",
        dest="signals",
        action="append",
        type=choice(SIGNALS, "signal"),
        required=True,
        help=f"a CUES signal, repeatable: {' | '.join(SIGNALS)}",
    )
    p.add_argument("--new-course", type=float, help="course after the manoeuvre")
    p.add_argument("--new-speed", type=float, help="speed after the manoeuvre")
    p.add_argument("--in", dest="in_s", type=float, default=0.0, help="begins in N seconds")
    p.add_argument("--keep-clear", type=float, help="distance to keep clear, metres")
    p.add_argument("--intention", help="the intention, in words")

    p = _body_parser(sub, "air-incident", "report an air incident", _air)
    p.add_argument(
        "--kind",
        type=choice(AIR_KINDS, "air incident kind"),
        required=True,
        help=" | ".join(AIR_KINDS),
    )
    p.add_argument("--lat", type=float, required=True, help="the aircraft's latitude")
    p.add_argument("--lon", type=float, required=True, help="the aircraft's longitude")
    p.add_argument("--altitude-ft", type=int, help="altitude, feet")
    p.add_argument("--course", type=float, help="track, degrees true")
    p.add_argument("--speed", type=float, help="ground speed, knots")
    _platform_options(p, "aircraft-", "the aircraft", "unknown")
    p.add_argument("--icao", default="", help="ICAO 24-bit address, six hex digits")
    p.add_argument("--squawk", default="", help="SSR code, four octal digits")
    p.add_argument("--adiz", default="", help="ADIZ concerned, e.g. JADIZ")
    p.add_argument("--interceptor", help="our intercepting aircraft (for --kind intercept)")
    p.add_argument("--track", default="", help="our track number, e.g. JA4107")
    p.add_argument("--remarks", help="anything else the other watch should know")

    p = _body_parser(sub, "call-request", "ask for a voice call between principals", _call)
    p.add_argument("--from-org", required=True, help="requesting organisation")
    p.add_argument("--from-role", default="Watch Officer", help="requesting role")
    p.add_argument("--to-org", required=True, help="organisation asked to take the call")
    p.add_argument("--to-role", default="Watch Officer", help="role asked to take the call")
    p.add_argument("--topic", required=True, help="what the call is about")
    p.add_argument(
        "--urgency",
        type=choice(URGENCIES, "urgency"),
        default=URGENCIES["immediate"],
        help=" | ".join(URGENCIES),
    )
    p.add_argument("--callback", default="", help="callback number, E.164 (+81...)")
    p.add_argument("--circuit", default="", help="dedicated voice circuit id")

    for member, descriptor in GENERATED.items():
        name = member.replace("_", "-")
        p = _body_parser(sub, name, _summary(descriptor), _generated(descriptor))
        body_flags.add_body_flags(p, descriptor)

    p = _body_parser(
        sub,
        "body",
        "any body type, from a file holding only the body (not an envelope)",
        _from_file,
    )
    p.description = (
        "Send a body read from FILE: only the body message (e.g. the fields of a SarSitrep: "
        '`sitrep_number: 1 reporting_rcc: "RCC Naha" ...`), not an envelope; the envelope '
        "comes from the flags. FILE is protobuf text format (.txtpb; times as "
        "`{ seconds: 1750410720 }`, seconds since 1970 UTC) or protobuf JSON (.json; times as "
        'RFC 3339 strings, "2025-06-20T09:12:00Z"). Each type\'s fields are listed by '
        "`hotline send TYPE --help`. For a whole envelope use `hotline send --file`."
    )
    p.add_argument(
        "--type", dest="member", required=True, type=_body_type, help=" | ".join(BODY_MEMBERS)
    )
    p.add_argument("path", metavar="FILE", help="the body in protobuf text format or JSON")

    for child in sub.choices.values():
        _add_envelope_options(child, suppress=True)
        add_connection_options(child, suppress=True)


# ----------------------------------------------------------------------------- bodies


def _lang(args: argparse.Namespace) -> str:
    return getattr(args, "language", None) or "en"


def _free_text(args: argparse.Namespace) -> Message:
    return bodies.free_text(args.subject, args.text, language=_lang(args))


def _link_test(args: argparse.Namespace) -> Message:
    if args.text is None:
        return bodies.link_test(args.number)
    return bodies.link_test(args.number, args.text, language=_lang(args))


def _maritime(args: argparse.Namespace) -> Message:
    contact = bodies.contact(
        _platform(args, "contact-"),
        lat=args.contact_lat,
        lon=args.contact_lon,
        course=args.contact_course,
        speed=args.contact_speed,
    )
    return bodies.maritime_encounter(
        reporting_platform=_platform(args, "platform-"),
        lat=args.lat,
        lon=args.lon,
        course=args.course,
        speed=args.speed,
        contacts=[contact],
        encounter_type=args.encounter,
        cpa_m=args.cpa,
        tcpa_s=args.tcpa,
        bridge_to_bridge_contact=args.bridge_to_bridge,
        intentions=args.intentions,
        remarks=args.remarks,
        language=_lang(args),
    )


def _manoeuvre(args: argparse.Namespace) -> Message:
    return bodies.manoeuvre_notice(
        platform=_platform(args, "platform-"),
        lat=args.lat,
        lon=args.lon,
        course=args.course,
        speed=args.speed,
        signals=args.signals,
        new_course=args.new_course,
        new_speed=args.new_speed,
        effective_time=datetime.now(UTC) + timedelta(seconds=args.in_s),
        keep_clear_m=args.keep_clear,
        intention=args.intention,
        language=_lang(args),
    )


def _air(args: argparse.Namespace) -> Message:
    aircraft = _platform(args, "aircraft-")
    aircraft.icao_address = args.icao
    interceptor = None
    if args.interceptor:
        interceptor = bodies.platform(common_pb2.PLATFORM_KIND_AIRCRAFT, name=args.interceptor)
    return bodies.air_incident(
        kind=args.kind,
        aircraft=aircraft,
        lat=args.lat,
        lon=args.lon,
        altitude_ft=args.altitude_ft,
        course=args.course,
        speed=args.speed,
        squawk=args.squawk,
        adiz_name=args.adiz,
        intercepting_platform=interceptor,
        track_number=args.track,
        remarks=args.remarks,
        language=_lang(args),
    )


def _call(args: argparse.Namespace) -> Message:
    return bodies.call_request(
        requesting=bodies.principal(args.from_org, role=args.from_role),
        requested=bodies.principal(args.to_org, role=args.to_role),
        topic=args.topic,
        urgency=args.urgency,
        callback_number=args.callback,
        circuit_id=args.circuit,
        language=_lang(args),
        call_language=_lang(args),
    )


def _body_type(text: str) -> str:
    key = text.strip().lower().replace("_", "-")
    if key == "acknowledgement":
        raise argparse.ArgumentTypeError("acknowledgements are sent with `hotline ack`")
    if key not in BODY_MEMBERS:
        raise argparse.ArgumentTypeError(
            f"unknown body type {text!r} (choose from {', '.join(BODY_MEMBERS)})"
        )
    return key


def _summary(descriptor: Any) -> str:
    words = re.sub(r"(?<!^)(?=[A-Z])", " ", descriptor.name).lower()
    return words.replace("sar ", "SAR ").replace("hadr ", "HA/DR ")


def _generated(descriptor: Any) -> Callable[[argparse.Namespace], Message]:
    def build(args: argparse.Namespace) -> Message:
        return body_flags.build_body(args, descriptor, _lang(args))

    return build


def _from_file(args: argparse.Namespace) -> Message:
    return bodies.body_from_file(args.path, args.member.replace("-", "_"))


# ----------------------------------------------------------------------------- running


def run(args: argparse.Namespace) -> int:
    if args.file and args.build is not None:
        return fail("send", "give either --file or a body subcommand, not both", EXIT_USAGE)
    if not args.file and args.build is None:
        return fail(
            "send",
            "say what to send: a body subcommand (e.g. `hotline send free-text --subject S "
            "--text T`) or --file ENVELOPE (see `hotline send --help`)",
            EXIT_USAGE,
        )
    try:
        body = args.build(args) if args.build is not None else None
        envelopes = [e for f in args.file or () for e in bodies.envelopes_from_file(f)]
    except ConfigError as exc:
        return fail("send", str(exc), EXIT_USAGE)
    if any(e.WhichOneof("body") == "acknowledgement" for e in envelopes):
        return fail(
            "send",
            "acknowledgements are sent with `hotline ack MESSAGE_ID --level LEVEL`, not send",
            EXIT_USAGE,
        )
    if len(envelopes) > 1 and args.message_id:
        return fail("send", "--message-id names one message; not with many envelopes", EXIT_USAGE)
    envelope = envelopes[0] if len(envelopes) == 1 else None

    async def work(client: OperatorClient) -> int:
        if len(envelopes) > 1:
            return await _send_many(client, envelopes, args)
        if envelope is not None:
            result = await client.send(await _complete(client, envelope, args))
        else:
            assert body is not None
            default_precedence, default_status = BODY_DEFAULTS.get(
                args.body_name, ("routine", "exercise")
            )
            expires = getattr(args, "expires_in", None)
            result = await client.send_body(
                body,
                precedence=args.precedence or PRECEDENCES[default_precedence],
                status=args.status or STATUSES[default_status],
                language=_lang(args),
                classification=args.classification or common_pb2.CLASSIFICATION_UNCLASSIFIED,
                caveat=args.caveat or "",
                action=args.action or common_pb2.ACTION_NEW,
                references=args.references or (),
                message_id=args.message_id or new_message_id(),
                expire_time=datetime.now(UTC) + timedelta(seconds=expires) if expires else None,
            )
        state = result.state
        if args.wait is not None:
            record = await client.wait_for(
                result.message_id, args.wait, timeout=args.timeout or 30.0
            )
            state = int(record.state)
        _report(result, state, args.json)
        return EXIT_OK

    return run_command("send", args, work)


async def _send_many(
    client: OperatorClient, envelopes: list[envelope_pb2.Envelope], args: argparse.Namespace
) -> int:
    """Send every envelope (SendBatch), one line per result in order; exit 1 if any refused."""
    completed = [await _complete(client, e, args) for e in envelopes]
    for e in completed:
        if not e.message_id:
            e.message_id = new_message_id()  # known before sending: a retry is idempotent
    refused = 0
    for e, result in zip(completed, await client.send_many(completed), strict=True):
        if isinstance(result, ClientError):
            refused += 1
            print(f"{e.message_id} REFUSED {escaped(str(result))}", file=sys.stderr)
            continue
        state = result.state
        if args.wait is not None:
            state = int(
                (
                    await client.wait_for(
                        result.message_id, args.wait, timeout=args.timeout or 30.0
                    )
                ).state
            )
        _report(result, state, args.json)
    return EXIT_REFUSED if refused else EXIT_OK


async def _complete(
    client: OperatorClient, envelope: envelope_pb2.Envelope, args: argparse.Namespace
) -> envelope_pb2.Envelope:
    """Fill what a file left empty and apply the flags given explicitly."""
    now = datetime.now(UTC)
    if args.fresh:
        if envelope.HasField("expire_time"):
            created = (
                envelope.create_time.ToDatetime(UTC) if envelope.HasField("create_time") else None
            )
            lifetime = envelope.expire_time.ToDatetime(UTC) - (created or now)
            envelope.ClearField("expire_time")
            if lifetime > timedelta(0):
                envelope.expire_time.FromDatetime(now + lifetime)
        for name in ("message_id", "sender_party", "recipient_party", "originator", "create_time"):
            envelope.ClearField(name)
    expires = getattr(args, "expires_in", None)
    if expires:
        envelope.expire_time.FromDatetime(now + timedelta(seconds=expires))
    if args.precedence:
        envelope.precedence = args.precedence
    if args.status:
        envelope.status = args.status
    elif envelope.WhichOneof("body") == "link_test":
        envelope.status = common_pb2.MESSAGE_STATUS_TEST
    else:
        envelope.status = common_pb2.MESSAGE_STATUS_EXERCISE
    if args.language:
        envelope.language = args.language
    elif not envelope.language:
        envelope.language = "en"
    if args.action:
        envelope.action = args.action
    elif not envelope.action:
        envelope.action = common_pb2.ACTION_NEW
    if args.references:
        envelope.references[:] = args.references
    if args.message_id:
        envelope.message_id = args.message_id
    if not envelope.recipient_party:
        envelope.recipient_party = await client.peer_party()
    if args.classification:
        envelope.handling.classification = args.classification
    elif not envelope.handling.classification:
        envelope.handling.classification = common_pb2.CLASSIFICATION_UNCLASSIFIED
    if not envelope.handling.releasable_to:
        envelope.handling.releasable_to.extend([client.party, envelope.recipient_party])
    if args.caveat:
        envelope.handling.caveat = args.caveat
    return envelope


def _report(result: SendResult, state: int, as_json: bool) -> None:
    if as_json:
        response = operator_pb2.SendResponse(
            message_id=result.message_id,
            journal_position=result.journal_position,
            state=state,  # type: ignore[arg-type]
        )
        response.journal_time.FromDatetime(result.journal_time)
        response.acknowledge_deadline_time.FromDatetime(result.deadline)
        print(json_line(response))
        return
    deadline = operator_pb2.SendResponse()
    deadline.acknowledge_deadline_time.FromDatetime(result.deadline)
    print(
        f"{result.message_id} {state_name(state)} "
        f"(journal position {result.journal_position}; "
        f"acknowledgement due {clock(deadline.acknowledge_deadline_time, date=True)})"
    )
    sys.stdout.flush()
