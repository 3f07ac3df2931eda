"""What the operator commands (`hotline send|watch|ack|history|show|status`) share.

Connection options and their resolution (`client.config`), running a command's coroutine with
errors turned into a one-line message and an exit code, the names operators type for the
protocol's enums, JSON output (protobuf's JSON mapping, field names as in the .proto, so it is
stable and parseable), and the one-line and full renderings of events and messages, coloured
on a terminal and plain when piped.

Whatever reaches the terminal goes through `hotline.display.escaped` (JSON through
`escaped_json`): every `Line` segment is escaped as it is added, the body of `show` line by
line, error messages in `fail`. So text the other party wrote (free text, names, a rejection's
detail, even a message id the gateway refused) can never move the cursor, clear the screen,
turn a line around or forge a line of its own.

Exit codes, the same for every operator command:

    0  done
    1  the gateway refused the request (invalid, not found, wrong state, ...)
    2  bad usage or configuration (nothing says where the gateway is, a file is missing, ...)
    3  the gateway cannot be reached (UNAVAILABLE, after retries)
    4  timed out (a call's deadline, or `--wait` gave up)
    5  the message was refused by the peer gateway (REJECTED)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import wcwidth
from google.protobuf import json_format, text_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from client.bodies import describe_body, short_id, text_of
from client.config import (
    ENV_ADDRESS,
    ENV_CONFIG,
    ENV_OPERATOR,
    ENV_PARTY,
    ENV_PKI,
    OperatorConfig,
    default_config_path,
    resolve,
)
from client.errors import ClientError, MessageRejected, Timeout, Unavailable
from client.operator import OperatorClient, RetryPolicy, state_name
from hotline.display import escaped, escaped_json
from hotline.errors import ConfigError, HotlineError
from hotline.v1 import (
    bodies_pb2,
    common_pb2,
    envelope_pb2,
    operator_pb2,
    peer_link_pb2,
)

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_TIMEOUT = 4
EXIT_REJECTED = 5

EXIT_CODES_HELP = """\
exit codes: 0 done; 1 the gateway refused the request; 2 bad usage or configuration;
3 the gateway cannot be reached; 4 timed out; 5 the peer refused the message (REJECTED)"""


# ----------------------------------------------------------------------------- enum names


def enum_choices(enum: Any, prefix: str) -> dict[str, int]:
    """`{"free-text": 14, ...}` for an enum, without its UNSPECIFIED zero value."""
    return {
        name.removeprefix(prefix).lower().replace("_", "-"): int(number)
        for name, number in enum.items()
        if number != 0
    }


PRECEDENCES = enum_choices(common_pb2.Precedence, "PRECEDENCE_")
STATUSES = enum_choices(common_pb2.MessageStatus, "MESSAGE_STATUS_")
CLASSIFICATIONS = enum_choices(common_pb2.Classification, "CLASSIFICATION_")
ACTIONS = enum_choices(common_pb2.Action, "ACTION_")
LEVELS = enum_choices(bodies_pb2.AcknowledgementLevel, "ACKNOWLEDGEMENT_LEVEL_")
STATES = enum_choices(operator_pb2.DeliveryState, "DELIVERY_STATE_")
DIRECTIONS = {"out": operator_pb2.DIRECTION_OUTBOUND, "in": operator_pb2.DIRECTION_INBOUND}
BODY_TYPES = enum_choices(envelope_pb2.BodyType, "BODY_TYPE_")
EVENT_KINDS = {
    name.removeprefix("message-"): number
    for name, number in enum_choices(operator_pb2.EventKind, "EVENT_KIND_").items()
}
WAIT_STATES = {k: STATES[k] for k in ("journaled", "delivered", "acknowledged")}


def choice(table: Mapping[str, int], what: str) -> Callable[[str], int]:
    """An argparse `type` that maps a name (dashes or underscores, any case) to its number."""

    def parse(text: str) -> int:
        key = text.strip().lower().replace("_", "-")
        if key in table:
            return table[key]
        raise argparse.ArgumentTypeError(
            f"unknown {what} {text!r} (choose from {', '.join(table)})"
        )

    parse.__name__ = what
    return parse


def choices_list(table: Mapping[str, int], what: str) -> Callable[[str], list[int]]:
    """Like `choice`, for a comma-separated list (the option may also be repeated)."""
    one = choice(table, what)

    def parse(text: str) -> list[int]:
        return [one(part) for part in text.split(",") if part.strip()]

    parse.__name__ = what
    return parse


def flatten(values: Sequence[Sequence[int]] | None) -> list[int]:
    """Flatten repeated comma-list options, keeping the first occurrence of each value."""
    seen: list[int] = []
    for group in values or ():
        for value in group:
            if value not in seen:
                seen.append(value)
    return seen


def enum_label(enum: Any, value: int, prefix: str) -> str:
    try:
        return str(enum.Name(value)).removeprefix(prefix)
    except ValueError:
        return str(value)


def precedence_name(value: int) -> str:
    return enum_label(common_pb2.Precedence, value, "PRECEDENCE_")


def status_name(value: int) -> str:
    return enum_label(common_pb2.MessageStatus, value, "MESSAGE_STATUS_")


def level_name(value: int) -> str:
    return enum_label(bodies_pb2.AcknowledgementLevel, value, "ACKNOWLEDGEMENT_LEVEL_")


def kind_name(value: int) -> str:
    return (
        enum_label(operator_pb2.EventKind, value, "EVENT_KIND_")
        .removeprefix("MESSAGE_")
        .replace("_", " ")
    )


# ----------------------------------------------------------------------------- connection

CONNECTION_HELP = f"""\
where the gateway is (flags override environment variables, which override the file):
  --config FILE / ${ENV_CONFIG}   TOML file (default {default_config_path()}) with
                                  address, party, and cert, key, ca -- or pki_dir and operator
  --address / ${ENV_ADDRESS}      host:port of your own party's gateway
  --party / ${ENV_PARTY}          your party, e.g. JP
  --pki / ${ENV_PKI}              PKI folder made by `hotline certs init`
  --operator / ${ENV_OPERATOR}    your operator name in that PKI (default watch-1)"""


def add_connection_options(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """The options that say where the gateway is and who we are (see `client.config`)."""
    default: Any = argparse.SUPPRESS if suppress else None
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--config",
        metavar="FILE",
        default=default,
        help=f"operator TOML file (default ${ENV_CONFIG}, else {default_config_path()})",
    )
    group.add_argument(
        "--address", metavar="HOST:PORT", default=default, help="your gateway's address"
    )
    group.add_argument("--party", default=default, help="your party (the gateway's), e.g. JP")
    group.add_argument(
        "--pki", metavar="DIR", default=default, help="PKI folder made by `hotline certs init`"
    )
    group.add_argument(
        "--operator", default=default, help="your operator name in the PKI (default watch-1)"
    )
    group.add_argument("--cert", metavar="FILE", default=default, help="operator certificate")
    group.add_argument("--key", metavar="FILE", default=default, help="operator private key")
    group.add_argument("--ca", metavar="FILE", default=default, help="your party's CA certificate")
    group.add_argument(
        "--call-timeout",
        metavar="SECONDS",
        type=float,
        default=default,
        help="deadline of each call to the gateway (default 10)",
    )


def describe_command(parser: argparse.ArgumentParser, description: str) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = description
    parser.epilog = CONNECTION_HELP + "\n\n" + EXIT_CODES_HELP


def operator_config(args: argparse.Namespace) -> OperatorConfig:
    from pathlib import Path

    config = getattr(args, "config", None)
    return resolve(
        {
            "address": getattr(args, "address", None),
            "party": getattr(args, "party", None),
            "pki_dir": getattr(args, "pki", None),
            "operator": getattr(args, "operator", None),
            "cert": getattr(args, "cert", None),
            "key": getattr(args, "key", None),
            "ca": getattr(args, "ca", None),
            "timeout_s": getattr(args, "call_timeout", None),
        },
        config_file=Path(config) if config else None,
    )


def client_from_args(args: argparse.Namespace) -> OperatorClient:
    """A client for the configured operator. Our own certificate is checked first, from the
    files (expired, not yet valid, not issued by the trusted CA: `ConfigError`, exit 2); if a
    call then fails with UNAVAILABLE, one plain TLS handshake tells a certificate problem (named,
    with the file to fix: exit 2) from a gateway that is down (retried, then exit 3)."""
    from client.diagnose import certificate_problem, local_certificate_problem

    cfg = operator_config(args)
    local = local_certificate_problem(cfg.cert, cfg.ca)
    if local is not None:
        raise ConfigError(local)

    async def before_retrying(error: ClientError) -> None:
        if isinstance(error, Unavailable):
            problem = await certificate_problem(
                cfg.address, cert=cfg.cert, key=cfg.key, ca=cfg.ca, party=cfg.party
            )
            if problem is not None:
                raise ConfigError(problem)

    return OperatorClient(
        cfg.address,
        cert=cfg.cert,
        key=cfg.key,
        ca=cfg.ca,
        party=cfg.party,
        timeout=cfg.timeout_s,
        retry=RetryPolicy(window_s=cfg.retry_window_s),
        on_retry=before_retrying,
    )


def run_command(
    name: str,
    args: argparse.Namespace,
    work: Callable[[OperatorClient], Awaitable[int]],
) -> int:
    """Connect, run `work`, close; turn failures into a message on stderr and an exit code."""

    async def main() -> int:
        client = client_from_args(args)
        async with client:
            return await work(client)

    try:
        return asyncio.run(main())
    except ConfigError as exc:
        return fail(name, str(exc), EXIT_USAGE)
    except MessageRejected as exc:
        return fail(name, exc.detail, EXIT_REJECTED)
    except Unavailable as exc:
        return fail(name, f"cannot reach the gateway: {exc.detail}", EXIT_UNAVAILABLE)
    except Timeout as exc:
        return fail(name, f"timed out: {exc.detail}", EXIT_TIMEOUT)
    except ClientError as exc:
        return fail(name, str(exc), EXIT_REFUSED)
    except HotlineError as exc:
        return fail(name, str(exc), EXIT_REFUSED)


def fail(name: str, message: str, code: int) -> int:
    print(f"hotline {name}: error: {escaped(message)}", file=sys.stderr)
    return code


# ----------------------------------------------------------------------------- JSON


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def json_line(message: Message | Mapping[str, Any]) -> str:
    """One compact JSON object (protobuf's JSON mapping, .proto field names), with anything
    not printable in its strings escaped (`hotline.display.escaped_json`)."""
    data = message if isinstance(message, Mapping) else to_dict(message)
    return escaped_json(json.dumps(data, ensure_ascii=False, separators=(",", ":")))


def json_pretty(message: Message | Mapping[str, Any]) -> str:
    data = message if isinstance(message, Mapping) else to_dict(message)
    return escaped_json(json.dumps(data, ensure_ascii=False, indent=2))


# ----------------------------------------------------------------------------- styling

RESET = "\x1b[0m"
BOLD = "1"
DIM = "2"
RED = "31"
GREEN = "32"
YELLOW = "33"
BLUE = "34"
MAGENTA = "35"
CYAN = "36"
REVERSE = "7"

PRECEDENCE_STYLE = {
    "FLASH": f"{BOLD};{RED}",
    "IMMEDIATE": f"{BOLD};{YELLOW}",
    "PRIORITY": CYAN,
    "ROUTINE": "",
}
STATUS_STYLE = {
    "EXERCISE": f"{REVERSE};{MAGENTA}",
    "TEST": f"{REVERSE};{BLUE}",
    "ACTUAL": f"{BOLD};{REVERSE};{RED}",
}
KIND_STYLE = {
    "ESCALATION": f"{BOLD};{REVERSE};{RED}",
    "REALERT": f"{BOLD};{REVERSE};{YELLOW}",
    "REJECTED": f"{BOLD};{RED}",
    "ACKNOWLEDGED": GREEN,
    "DELIVERED": GREEN,
    "LINK DOWN": f"{BOLD};{RED}",
    "LINK UP": GREEN,
    "SECURITY REFUSAL": f"{BOLD};{RED}",
    "CHECKPOINT": DIM,
    "EXPIRED": f"{BOLD};{MAGENTA}",
    "CANCELLED": f"{BOLD};{RED}",
    "UPDATED": YELLOW,
}


def colour_wanted(stream: TextIO, mode: str = "auto") -> bool:
    """Colour on a terminal (unless NO_COLOR is set), never when piped, or as forced."""
    if mode == "always":
        return True
    if mode == "never" or os.environ.get("NO_COLOR"):
        return False
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def cell_width(text: str) -> int:
    """Columns `text` takes on a terminal: East Asian wide and fullwidth characters take two,
    combining marks (U+3099 after か), zero-width joiners and variation selectors none, an emoji
    sequence two (`wcwidth`, whose tables follow the current Unicode release)."""
    return max(wcwidth.width(text), 0)


def pad_to(text: str, width: int) -> str:
    """`text` followed by spaces up to `width` columns (`f"{text:<{width}}"` counts characters,
    which misaligns a column as soon as it holds Japanese or Chinese)."""
    return text + " " * max(0, width - cell_width(text))


# Kinsoku: characters a line may not start with (closing brackets and punctuation, small kana,
# the prolonged sound mark) and characters it may not end with (opening brackets). Japanese and
# Chinese text has no spaces, so a line may otherwise break between any two wide characters.
NO_LINE_START = frozenset(
    "、。，．・：；？！）」』】〕〉》］｝〗〙〛’”ゝゞヽヾー々〻‐゠–〜～…‥"
    "ぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶ"
    ",.:;?!)]}%"
)
NO_LINE_END = frozenset("（「『【〔〈《［｛〘〖〚‘“([{")


@dataclass
class _Token:
    """A piece of a line that is kept whole when wrapping, unless longer than a line: a word,
    one wide character (with any punctuation that may not be parted from it), or a space."""

    pieces: list[tuple[str, str]]  # (text, style)
    width: int
    space: bool
    wide_end: bool  # ends with a wide character: a line may break after it
    open_end: bool  # ends with an opening bracket: a line may not break after it

    def add(self, text: str, style: str, width: int) -> None:
        if self.pieces and self.pieces[-1][1] == style:
            self.pieces[-1] = (self.pieces[-1][0] + text, style)
        else:
            self.pieces.append((text, style))
        self.width += width


def _tokens(segments: Sequence[tuple[str, str]]) -> list[_Token]:
    tokens: list[_Token] = []
    for text, style in segments:
        for grapheme in wcwidth.iter_graphemes(text):
            size = cell_width(grapheme)
            space = grapheme.isspace()
            wide = size > 1
            last = tokens[-1] if tokens else None
            glue = (
                last is not None
                and last.space == space
                and (
                    space
                    or grapheme in NO_LINE_START
                    or last.open_end
                    or (not wide and not last.wide_end)
                )
            )
            if last is None or not glue:
                last = _Token([], 0, space, False, False)
                tokens.append(last)
            last.add(grapheme, style, size)
            last.wide_end = wide
            last.open_end = grapheme in NO_LINE_END
    return tokens


def _clip(segments: Sequence[tuple[str, str]], width: int) -> list[tuple[str, str]]:
    """The segments cut to at most `width` columns, ending with "…" when anything was cut."""
    if cell_width("".join(text for text, _ in segments)) <= width:
        return list(segments)
    return _ellipsized(segments, width)


def _ellipsized(segments: Sequence[tuple[str, str]], width: int) -> list[tuple[str, str]]:
    """The segments followed by "…", cut (whole characters) so that both fit in `width`."""
    out: list[tuple[str, str]] = []
    room = width - 1
    for text, style in segments:
        kept = ""
        for grapheme in wcwidth.iter_graphemes(text):
            size = cell_width(grapheme)
            if size > room:
                room = -1
                break
            kept += grapheme
            room -= size
        if kept:
            out.append((kept, style))
        if room < 0:
            break
    if width >= 1:
        out.append(("…", out[-1][1] if out else ""))
    return _merged(out)


@dataclass
class Line:
    """A line of styled segments, rendered with or without colour, wrapped or cut to a width
    counted in terminal columns (`cell_width`), so Japanese and Chinese text lines up.

    Text is escaped as it is added (`hotline.display.escaped`), so a line never carries a
    character a terminal would obey; build lines with `add`, or from other lines' segments."""

    segments: list[tuple[str, str]]

    def add(self, text: str, style: str = "") -> Line:
        if not text:
            return self
        text = escaped(text)
        if self.segments and self.segments[-1][1] == style:
            self.segments[-1] = (self.segments[-1][0] + text, style)
        else:
            self.segments.append((text, style))
        return self

    def add_line(self, other: Line) -> Line:
        """Append another line's segments (already escaped)."""
        self.segments = _merged([*self.segments, *other.segments])
        return self

    def plain(self) -> str:
        return "".join(text for text, _ in self.segments)

    def render(self, colour: bool, width: int | None = None, *, pad: bool = False) -> str:
        """The line as text: cut to `width` columns with "…" if longer, and with `pad` filled
        with spaces to exactly `width` columns (for a column with more to its right)."""
        segments = self.segments if width is None else _clip(self.segments, width)
        out = [
            f"\x1b[{style}m{text}{RESET}" if colour and style else text for text, style in segments
        ]
        if pad and width is not None:
            out.append(" " * max(0, width - cell_width("".join(t for t, _ in segments))))
        return "".join(out)

    def width(self) -> int:
        return cell_width(self.plain())

    def wrap(self, width: int, *, indent: str = "", max_lines: int = 3) -> list[Line]:
        """Lines of at most `width` columns, keeping each piece's style. A line breaks at a
        space, or between two characters of Japanese or Chinese (never before closing
        punctuation such as 。、」 or after an opening bracket such as 「); a word longer than a
        line is split. Lines after the first start with `indent`; spaces at a break are
        dropped. Past `max_lines`, the last line ends with "…"."""
        indent_width = cell_width(indent)
        if indent_width >= width:
            indent, indent_width = "", 0
        lines = [Line([])]
        used = 0
        fresh = False  # a continuation line with nothing but its indent yet

        def new_line() -> None:
            nonlocal used, fresh
            last = lines[-1].segments
            while last and last[-1][0].isspace():  # no trailing spaces at a break
                last.pop()
            if last:
                last[-1] = (last[-1][0].rstrip(), last[-1][1])
            lines.append(Line([]).add(indent))
            used, fresh = indent_width, True

        for token in _tokens(self.segments):
            if token.space:
                if fresh:
                    continue
                if used + token.width > width:
                    new_line()
                    continue
            elif used + token.width > width and not fresh and indent_width + token.width <= width:
                new_line()  # a token longer than any line is split where it stands instead
            for text, style in token.pieces:
                if used + cell_width(text) <= width:
                    lines[-1].segments.append((text, style))
                    used += cell_width(text)
                    continue
                for grapheme in wcwidth.iter_graphemes(text):  # longer than a line: split it
                    size = cell_width(grapheme)
                    if used + size > width and used > indent_width:
                        new_line()
                    lines[-1].segments.append((grapheme, style))
                    used += size
            fresh = False
        for line in lines:
            line.segments = _merged(line.segments)
        if len(lines) > max_lines:
            lines = lines[:max_lines]
            lines[-1].segments = _ellipsized(lines[-1].segments, width)
        return lines


def terminal_width(stream: TextIO) -> int | None:
    """The terminal's width in columns if `stream` is a terminal, else None (piped output is
    never wrapped or cut: one record per line, as a script expects)."""
    if not stream.isatty():
        return None
    return shutil.get_terminal_size().columns


def wrapped(
    line: Line, colour: bool, width: int | None, *, indent: int = 2, max_lines: int = 12
) -> str:
    """`line` rendered for a terminal `width` columns wide, wrapped with later lines indented
    by `indent` columns (`Line.wrap`); as one line when `width` is None (piped)."""
    if width is None:
        return line.render(colour)
    lines = line.wrap(width, indent=" " * indent, max_lines=max_lines)
    return "\n".join(part.render(colour, width) for part in lines)


def _merged(segments: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for text, style in segments:
        if not text:
            continue
        if out and out[-1][1] == style:
            out[-1] = (out[-1][0] + text, style)
        else:
            out.append((text, style))
    return out


# ----------------------------------------------------------------------------- rendering


def _ts(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def clock(ts: Timestamp, *, date: bool = False) -> str:
    """`12:03:04.123Z` (with the date in front when `date`)."""
    when = _ts(ts)
    text = when.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")
    return f"{text}.{when.microsecond // 1000:03d}Z"


def seconds_text(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def body_label(envelope: envelope_pb2.Envelope) -> str:
    return (envelope.WhichOneof("body") or "none").replace("_", "-")


def awaiting_ack(record: operator_pb2.MessageRecord) -> bool:
    return (
        record.state
        in (operator_pb2.DELIVERY_STATE_JOURNALED, operator_pb2.DELIVERY_STATE_DELIVERED)
        and record.envelope.WhichOneof("body") != "acknowledgement"
        and record.HasField("acknowledge_deadline_time")
        and not record.expired  # an expired message has no deadline running any more
    )


def life_marks(record: operator_pb2.MessageRecord) -> list[tuple[str, str]]:
    """Where a message stands beyond its state, as (word, style): the latest acknowledgement's
    level (the one that stands), CANCELLED, UPDATED, EXPIRED."""
    marks = []
    if record.state == operator_pb2.DELIVERY_STATE_ACKNOWLEDGED and record.HasField(
        "acknowledgement"
    ):
        marks.append((level_name(record.acknowledgement.level), GREEN))
    if record.cancelled_by_message_id:
        marks.append(("CANCELLED", KIND_STYLE["CANCELLED"]))
    elif record.updated_by_message_id:
        marks.append(("UPDATED", KIND_STYLE["UPDATED"]))
    if record.expired:
        marks.append(("EXPIRED", KIND_STYLE["EXPIRED"]))
    return marks


def chain_text(envelope: envelope_pb2.Envelope) -> str:
    """What an UPDATE or CANCEL does (`UPDATE of <id>`), or ""."""
    if envelope.action == common_pb2.ACTION_UPDATE and envelope.references:
        return f"UPDATE of {envelope.references[0]}"
    if envelope.action == common_pb2.ACTION_CANCEL and envelope.references:
        return f"CANCEL of {envelope.references[0]}"
    return ""


def ladder_text(record: operator_pb2.MessageRecord) -> str:
    """The acknowledgement history, oldest first: `ROGER 10:00:01 -> WILCO 10:00:05`."""
    return " -> ".join(
        f"{level_name(a.acknowledgement.level)} {clock(a.acknowledge_time)}"
        for a in record.acknowledgements
    )


def countdown(record: operator_pb2.MessageRecord, now: datetime) -> tuple[str, str]:
    """(`ack due in 3.2 s` or `OVERDUE 1.0 s`, style), or ("", "") if no ack is awaited."""
    if not awaiting_ack(record):
        return "", ""
    left = (_ts(record.acknowledge_deadline_time) - now).total_seconds()
    if left >= 0 and not record.overdue:
        return f"ack due in {seconds_text(left)}", YELLOW if left < 60 else ""
    return f"OVERDUE {seconds_text(left)}", f"{BOLD};{RED}"


def event_parts(
    event: operator_pb2.Event,
    *,
    party: str = "",
    compact: bool = False,
    now: datetime | None = None,
    timed: bool = True,
) -> tuple[Line, Line]:
    """An event for a watch floor, as (head, detail): when, what, how urgent and whether real;
    then which message, what it says or what to do. `compact` shortens ids and identities;
    `timed=False` leaves the time out (for a view that shows it in a column of its own)."""
    now = now or datetime.now(UTC)
    kind = kind_name(event.kind)
    head = Line([])
    if timed:
        head.add(clock(event.event_time) + " ", DIM)
    if not compact:
        head.add(f"#{event.cursor:<6} ", DIM)
    head.add(f"{kind:<12}", KIND_STYLE.get(kind, BOLD))
    detail = Line([])
    if not event.HasField("message"):
        if event.link == operator_pb2.LINK_DIRECTION_OUTBOUND:
            detail.add("outbound: ")
        elif event.link == operator_pb2.LINK_DIRECTION_INBOUND:
            detail.add("inbound: ")
        detail.add(event.detail)
        return head, detail
    record = event.message
    env = record.envelope
    precedence = precedence_name(env.precedence)
    status = status_name(env.status)
    head.add(" ")
    head.add(f"{precedence:<9}", PRECEDENCE_STYLE.get(precedence, ""))
    head.add(" ")
    head.add(f"[{status}]" if status != "ACTUAL" else "ACTUAL", STATUS_STYLE.get(status, ""))
    detail.add(f"{body_label(env)} ", BOLD)
    detail.add(f"{short_id(event.message_id) if compact else event.message_id} ", DIM)
    if not compact and party:
        outbound = env.sender_party == party
        detail.add(
            f"{'to' if outbound else 'from'} {env.recipient_party if outbound else env.sender_party} "
        )
    if event.kind == operator_pb2.EVENT_KIND_ESCALATION:
        detail.add(
            f"no acknowledgement from {env.recipient_party} by the deadline: follow it up",
            f"{BOLD};{RED}",
        )
    elif event.kind == operator_pb2.EVENT_KIND_REALERT:
        detail.add("not acknowledged by us by the deadline: answer it now", f"{BOLD};{YELLOW}")
        if not compact:
            detail.add(f" (hotline ack {event.message_id} --level roger)", DIM)
    elif event.kind == operator_pb2.EVENT_KIND_MESSAGE_ACKNOWLEDGED and record.HasField(
        "acknowledgement"
    ):
        ack = record.acknowledgement
        detail.add(level_name(ack.level), f"{BOLD};{GREEN}")
        who = ack.responder.rsplit("/", 1)[-1] if compact else ack.responder
        detail.add(f" by {who}")
        if ack.HasField("reason"):
            detail.add(f": {text_of(ack.reason)}")
        elif ack.HasField("remarks"):
            detail.add(f": {text_of(ack.remarks)}")
        if len(record.acknowledgements) > 1:  # the latest stands; say what it replaced
            earlier = record.acknowledgements[-2].acknowledgement.level
            detail.add(f" (was {level_name(earlier)})", DIM)
    elif event.kind == operator_pb2.EVENT_KIND_MESSAGE_REJECTED:
        detail.add(event.detail or "refused", f"{BOLD};{RED}")
    elif event.kind == operator_pb2.EVENT_KIND_MESSAGE_EXPIRED:
        detail.add("EXPIRED", KIND_STYLE["EXPIRED"])
        detail.add(" unanswered: no more escalations or re-alerts")
    else:
        chain = chain_text(env)
        if chain:
            detail.add(chain + ": ", BOLD)
        if record.expired:
            detail.add("EXPIRED ", KIND_STYLE["EXPIRED"])
        detail.add(describe_body(env))
        due, style = countdown(record, now)
        # Only a deadline still running: for a replayed old event the record is as it stood
        # then, and ESCALATION / REALERT events already say when a deadline was missed.
        if due.startswith("ack due") and event.kind != operator_pb2.EVENT_KIND_MESSAGE_DELIVERED:
            detail.add("  ")
            detail.add(due, style)
    return head, detail


def event_line(
    event: operator_pb2.Event,
    *,
    party: str = "",
    compact: bool = False,
    now: datetime | None = None,
) -> Line:
    """One line for a watch floor (`event_parts` joined)."""
    head, detail = event_parts(event, party=party, compact=compact, now=now)
    return Line([*head.segments, (" ", ""), *detail.segments])


def _record_head(record: operator_pb2.MessageRecord, journaled: str) -> Line:
    """A history row's columns up to STATE (with `journaled`, the journal time as shown)."""
    env = record.envelope
    precedence = precedence_name(env.precedence)
    status = status_name(env.status)
    direction = "OUT" if record.direction == operator_pb2.DIRECTION_OUTBOUND else "IN "
    line = Line([])
    line.add(f"{record.journal_position:>6} ", DIM)
    line.add(journaled + " ", DIM)
    line.add(f"{direction} ")
    line.add(f"{precedence:<10}", PRECEDENCE_STYLE.get(precedence, ""))
    line.add(" ")
    line.add(f"{status:<8}", STATUS_STYLE.get(status, ""))
    line.add(" ")
    state = state_name(record.state)
    line.add(f"{state:<12}", KIND_STYLE.get(state, ""))
    line.add(" ")
    return line


def _record_summary(record: operator_pb2.MessageRecord, line: Line) -> Line:
    """OVERDUE, the life marks, the chain and the summary, added to `line`."""
    env = record.envelope
    if record.overdue:
        line.add("OVERDUE ", f"{BOLD};{RED}")
    for word, style in life_marks(record):
        line.add(word + " ", style)
    chain = chain_text(env)
    if chain:
        line.add(chain + ": ")
    line.add(describe_body(env))
    return line


def record_line(record: operator_pb2.MessageRecord, *, now: datetime | None = None) -> Line:
    """One row of `hotline history` (piped, or on a terminal as wide as HISTORY_WIDE)."""
    env = record.envelope
    line = _record_head(record, clock(record.journal_time, date=True))
    line.add(f"{body_label(env):<18} ", BOLD)
    line.add(f"{env.message_id} ")
    return _record_summary(record, line)


HISTORY_HEADER = (
    f"{'POS':>6} {'JOURNALED (UTC)':<24} DIR {'PRECEDENCE':<10} {'STATUS':<8} {'STATE':<12} "
    f"{'TYPE':<18} {'MESSAGE ID':<36} SUMMARY"
)
HISTORY_SUMMARY_AT = HISTORY_HEADER.index("SUMMARY")
# The one-row layout wraps its summary under SUMMARY from this terminal width; a narrower
# terminal (80-150 columns) gets two-part rows (`record_lines`).
HISTORY_WIDE = HISTORY_SUMMARY_AT + 30
HISTORY_INDENT = 7  # where a two-part row's second part (TYPE: SUMMARY) starts
_FULL_ID_FROM = 101  # the narrow layout shows whole message ids from this width (…8 below)


def history_header(width: int) -> str:
    """The header of `record_lines` rows on a terminal `width` columns wide."""
    id_width = 36 if width >= _FULL_ID_FROM else 9
    head = (
        f"{'POS':>6} {'JOURNALED (UTC)':<20} DIR {'PRECEDENCE':<10} {'STATUS':<8} "
        f"{'STATE':<12} {'MESSAGE ID':<{id_width}}"
    ).rstrip()
    return head[:width] + "\n" + " " * HISTORY_INDENT + "TYPE: SUMMARY"


def record_lines(record: operator_pb2.MessageRecord, colour: bool, width: int) -> str:
    """A `hotline history` row for a terminal narrower than HISTORY_WIDE: the columns on one
    line (the time to the second, the id shortened to its end below 101 columns), then the
    type and the summary wrapped under them, from HISTORY_INDENT."""
    env = record.envelope
    when = _ts(record.journal_time).strftime("%Y-%m-%d %H:%M:%SZ")
    head = _record_head(record, when)
    head.add(env.message_id if width >= _FULL_ID_FROM else short_id(env.message_id))
    detail = Line([]).add(" " * HISTORY_INDENT).add(body_label(env) + ": ", BOLD)
    _record_summary(record, detail)
    return (
        head.render(colour, width)
        + "\n"
        + wrapped(detail, colour, width, indent=HISTORY_INDENT, max_lines=4)
    )


def record_text(
    record: operator_pb2.MessageRecord, colour: bool = False, width: int | None = None
) -> str:
    """The full rendering of one message for `hotline show`; with a terminal `width`, long
    values wrap under their own column."""
    env = record.envelope
    now = datetime.now(UTC)
    rows: list[tuple[str, Line]] = []

    def row(name: str, text: str, style: str = "") -> None:
        rows.append((name, Line([]).add(text, style)))

    precedence = precedence_name(env.precedence)
    status = status_name(env.status)
    row("message", env.message_id, BOLD)
    row("type", body_label(env), BOLD)
    row("summary", describe_body(env))
    row("status", status, STATUS_STYLE.get(status, ""))
    row("precedence", precedence, PRECEDENCE_STYLE.get(precedence, ""))
    row(
        "direction",
        ("outbound" if record.direction == operator_pb2.DIRECTION_OUTBOUND else "inbound")
        + f": {env.sender_party} -> {env.recipient_party}",
    )
    row("originator", env.originator)
    row("created", clock(env.create_time, date=True))
    marks = " ".join(word for word, _ in life_marks(record))
    row(
        "state",
        state_name(record.state) + (f"  {marks}" if marks else ""),
        KIND_STYLE.get(state_name(record.state), ""),
    )
    row("journal", f"position {record.journal_position}, {clock(record.journal_time, date=True)}")
    if record.sequence:
        row("link sequence", str(record.sequence))
    if record.HasField("deliver_time"):
        row("delivered", clock(record.deliver_time, date=True))
    if record.HasField("acknowledge_deadline_time") and env.WhichOneof("body") != "acknowledgement":
        due, style = countdown(record, now)
        row(
            "ack deadline",
            clock(record.acknowledge_deadline_time, date=True) + (f"  ({due})" if due else ""),
            style,
        )
    if record.HasField("acknowledgement"):
        ack = record.acknowledgement
        text = f"{level_name(ack.level)} by {ack.responder}"
        if record.HasField("acknowledge_time"):
            text += f" at {clock(record.acknowledge_time, date=True)}"
        row("acknowledged", text, GREEN)
        if record.acknowledgement_message_id:
            row("ack message", record.acknowledgement_message_id)
        if ack.HasField("reason"):
            row("reason", text_of(ack.reason))
        if ack.HasField("remarks"):
            row("remarks", text_of(ack.remarks))
        if len(record.acknowledgements) > 1:  # the latest (above) stands
            row("ack history", ladder_text(record))
    if record.cancelled_by_message_id:
        row("cancelled by", record.cancelled_by_message_id, KIND_STYLE["CANCELLED"])
    if record.updated_by_message_id:
        row("updated by", record.updated_by_message_id + " (supersedes this content)", YELLOW)
    if record.state == operator_pb2.DELIVERY_STATE_REJECTED:
        reason = enum_label(
            peer_link_pb2.RejectionReason, record.rejection_reason, "REJECTION_REASON_"
        )
        row("rejected", f"{reason}: {record.rejection_detail}", f"{BOLD};{RED}")
    handling = env.handling
    marking = enum_label(common_pb2.Classification, handling.classification, "CLASSIFICATION_")
    if handling.caveat:
        marking += f" // {handling.caveat}"
    row("handling", f"{marking}; releasable to {', '.join(handling.releasable_to)}")
    row("language", env.language)
    action = enum_label(common_pb2.Action, env.action, "ACTION_")
    chain = chain_text(env)
    if chain:  # what it replaces or withdraws first, then any other references
        others = list(env.references[1:])
        row("action", chain + (f" (also references {', '.join(others)})" if others else ""))
    else:
        refs = f" (references {', '.join(env.references)})" if env.references else ""
        row("action", action + refs)
    if env.HasField("expire_time"):
        if record.expired:
            row(
                "expires",
                f"{clock(env.expire_time, date=True)}  EXPIRED: no more escalations or re-alerts",
                KIND_STYLE["EXPIRED"],
            )
        else:
            row("expires", clock(env.expire_time, date=True))
    row("signed by key", record.signed_envelope.key_id)
    names = max(len(name) for name, _ in rows) + 2
    lines = [
        wrapped(Line([]).add(pad_to(name + ":", names)).add_line(line), colour, width, indent=names)
        if width is not None and width - names >= 20
        else f"{pad_to(name + ':', names)}{line.render(colour)}"
        for name, line in rows
    ]
    member = env.WhichOneof("body")
    if member:
        body = text_format.MessageToString(getattr(env, member), as_utf8=True, indent=2)
        lines.append(f"{member}:")
        # text format escapes C0 controls in strings itself, not C1 or format characters
        lines.extend(escaped(line) for line in body.rstrip("\n").split("\n"))
    return "\n".join(lines)
