"""Command-line flags for a message body, generated from its protobuf descriptor.

`add_body_flags(parser, Descriptor)` gives the parser one flag per field of the body
(`--field-name`, the protocol's own field names), and `build_body(args, Descriptor, language)`
turns the parsed flags into the body message. `field_reference(Descriptor)` is the text the
`--help` of a body subcommand ends with: every field, its unit and its constraints (from
`hotline.constraints`, generated from the `.proto` `Constraints:` lines), and the same for the
messages it contains. Values are written as:

    TIME       RFC 3339 (2026-06-18T21:03:30Z), `now`, or relative to now: now+90m, now-2h, +1d (a leading
               - needs --flag=-2h, hence now-2h)
    SECONDS    a duration: 90, 90s, 15m, 2h
    LAT,LON    decimal degrees, north and east positive (a value that starts with - is
               given as --flag=-33.9,151.2)
    AREA       a circle LAT,LON,RADIUS_M or a polygon LAT,LON;LAT,LON;LAT,LON[;...]
    START/END  a time window (TIME/TIME; END may be left out: START/)
    TEXT       a text in the envelope's --language
    KEY=VALUE,KEY=VALUE  any other message, by its field names; dotted keys reach nested
               messages (platform.kind=aircraft); enum values by their short name

Conversion mistakes raise `ConfigError` naming the flag; the gateway still validates the body.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from client import bodies
from hotline import constraints
from hotline.errors import ConfigError
from hotline.v1 import envelope_pb2

__all__ = [
    "add_body_flags",
    "build_body",
    "enum_prefix",
    "field_reference",
    "flag_name",
    "parse_duration",
    "parse_time",
]

# Flags of `hotline send` itself that a body field must not shadow: such a field's flag is
# prefixed with the body's word (SarSitrep.status -> --sitrep-status).
RESERVED = {
    "precedence",
    "status",
    "language",
    "classification",
    "caveat",
    "action",
    "reference",
    "message-id",
    "expires-in",
    "wait",
    "timeout",
    "json",
    "file",
    "fresh",
    "config",
    "address",
    "party",
    "pki",
    "operator",
    "cert",
    "key",
    "ca",
    "call-timeout",
    "help",
}

UNITS = (
    ("_deg_true", "degrees true"),
    ("_deg", "degrees"),
    ("_kn", "knots"),
    ("_km", "kilometres"),
    ("_ft", "feet"),
    ("_nm", "nautical miles"),
    ("_m", "metres"),
    ("_c", "degrees Celsius"),
)

SPECIAL = {
    "google.protobuf.Timestamp": ("TIME", "time (RFC 3339, now, now+90m, now-2h)"),
    "google.protobuf.Duration": ("SECONDS", "duration (90, 90s, 15m, 2h)"),
    "hotline.v1.LocalizedText": ("TEXT", "text in --language"),
    "hotline.v1.Position": ("LAT,LON", "position, decimal degrees"),
    "hotline.v1.Area": ("AREA", "area: LAT,LON,RADIUS_M or LAT,LON;LAT,LON;LAT,LON..."),
    "hotline.v1.TimeWindow": ("START/END", "time window, TIME/TIME"),
}

_INTS = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
}
_FLOATS = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}
_KEY_SPLIT = re.compile(r",(?=\s*[a-z_][a-z0-9_.]*=)")
_RELATIVE = re.compile(r"^(?:now)?\s*([+-])\s*(\d+(?:\.\d+)?)([smhd])$", re.IGNORECASE)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


# ----------------------------------------------------------------------------- naming


def flag_name(body: Any, field: Any) -> str:
    """The flag of a body field: its name with dashes, prefixed if `hotline send` uses it."""
    name = str(field.name).replace("_", "-")
    if name in RESERVED:
        word = re.sub(r"(?<!^)(?=[A-Z])", "-", body.name).lower().split("-")[-1]
        name = f"{word}-{name}"
    return name


def enum_prefix(enum: Any) -> str:
    """`MISSILE_KIND_` for MissileKind: the zero value's name without `UNSPECIFIED`."""
    return str(enum.values_by_number[0].name).removesuffix("UNSPECIFIED")


def enum_words(enum: Any) -> dict[str, int]:
    """Short lower-case names of an enum's values (without the zero value)."""
    prefix = enum_prefix(enum)
    return {
        v.name.removeprefix(prefix).lower().replace("_", "-"): v.number
        for v in enum.values
        if v.number != 0
    }


def _constraint(field: Any) -> str:
    return constraints.FIELDS.get(field.full_name, "optional")


def _required(field: Any) -> bool:
    """Required on the command line: the protocol requires it and no zero value passes."""
    rule = _constraint(field)
    if not rule.startswith("required") or rule.startswith("required if"):
        return False
    if field.type in _INTS or field.type in _FLOATS:
        lower = re.search(r"(-?\d+(?:\.\d+)?)\.\.", rule)  # zero is "not set" in proto3
        return lower is None or float(lower.group(1)) > 0
    return bool(field.type != FieldDescriptor.TYPE_BOOL)


def _unit(field: Any) -> str:
    for suffix, unit in UNITS:
        if field.name.endswith(suffix):
            return unit
    return ""


def _kind(field: Any) -> tuple[str, str]:
    """(metavar, what) of a field's value."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        special = SPECIAL.get(field.message_type.full_name)
        if special:
            return special
        keys = ",".join(f"{f.name}=" for f in field.message_type.fields)
        return "KEY=VALUE,...", f"{field.message_type.name} ({keys}...)"
    if field.type == FieldDescriptor.TYPE_ENUM:
        metavar = re.sub(r"(?<!^)(?=[A-Z])", "_", field.enum_type.name).upper()
        return metavar, " | ".join(enum_words(field.enum_type))
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "", "flag"
    if field.type in _FLOATS:
        return "NUMBER", _unit(field) or "number"
    if field.type in _INTS:
        return "INTEGER", _unit(field) or "integer"
    return "STRING", "text"


# ----------------------------------------------------------------------------- parser


def add_body_flags(parser: argparse.ArgumentParser, body: Any) -> None:
    """One flag per field of `body`; repeated fields take the flag once per item."""
    group = parser.add_argument_group(f"{body.name} fields (see the field reference below)")
    for field in body.fields:
        metavar, what = _kind(field)
        rule = _constraint(field)
        repeated = field.is_repeated
        help_text = f"{what}; {rule}" + ("; repeat the flag for each item" if repeated else "")
        dest = f"f_{field.name}"
        name = f"--{flag_name(body, field)}"
        if field.type == FieldDescriptor.TYPE_BOOL and not repeated:
            group.add_argument(name, dest=dest, action="store_true", help=rule)
            continue
        group.add_argument(
            name,
            dest=dest,
            metavar=metavar,
            action="append" if repeated else "store",
            required=_required(field),
            help=help_text.replace("%", "%%"),
        )


def build_body(args: argparse.Namespace, body: Any, language: str) -> Message:
    """The body message from the flags `add_body_flags` made."""
    message: Message = type(getattr(envelope_pb2.Envelope(), _member(body)))()
    for field in body.fields:
        value = getattr(args, f"f_{field.name}", None)
        if value is None or value is False:
            continue
        where = f"--{flag_name(body, field)}"
        if field.is_repeated:
            for item in value:
                _assign(message, field, item, language, where)
        elif field.type == FieldDescriptor.TYPE_BOOL:
            setattr(message, field.name, True)
        else:
            _assign(message, field, value, language, where)
    return message


def _member(body: Any) -> str:
    for field in envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"].fields:
        if field.message_type is body:
            return str(field.name)
    raise TypeError(f"{body.full_name} is not a message body")


# ----------------------------------------------------------------------------- values


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """RFC 3339 (a time without offset is UTC), `now`, or [now]+/-N s|m|h|d from now."""
    now = now or datetime.now(UTC)
    value = text.strip()
    if value.lower() == "now":
        return now
    relative = _RELATIVE.match(value)
    if relative:
        sign, amount, unit = relative.groups()
        delta = timedelta(seconds=float(amount) * _SECONDS[unit.lower()])
        return now + delta if sign == "+" else now - delta
    try:
        when = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ConfigError(
            f"{text!r} is not a time: give RFC 3339 (2026-06-18T21:03:30Z), now, or +90m / -2h"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_duration(text: str) -> float:
    """Seconds from 90, 90s, 15m, 2h or 1d."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ConfigError(f"{text!r} is not a duration: give 90, 90s, 15m, 2h or 1d")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def _numbers(text: str, count: int, what: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count:
        raise ConfigError(f"{text!r} is not {what}")
    return values


def _fill(message: Message, text: str, language: str, where: str) -> None:
    """Fill a message from the text of one flag value (see the module docstring)."""
    name = message.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        message.CopyFrom(bodies.timestamp(parse_time(text)))
    elif name == "google.protobuf.Duration":
        message.CopyFrom(bodies.duration(parse_duration(text)))
    elif name == "hotline.v1.LocalizedText":
        message.CopyFrom(bodies.localized(text, language))
    elif name == "hotline.v1.Position":
        lat, lon = _numbers(text, 2, "a position LAT,LON")
        message.CopyFrom(bodies.position(lat, lon))
    elif name == "hotline.v1.Area":
        if ";" in text:
            vertices = [_numbers(p, 2, "a vertex LAT,LON") for p in text.split(";") if p.strip()]
            for lat, lon in vertices:
                message.polygon.vertices.add(latitude_deg=lat, longitude_deg=lon)  # type: ignore[attr-defined]
        else:
            lat, lon, radius = _numbers(text, 3, "an area: LAT,LON,RADIUS_M or LAT,LON;LAT,LON;...")
            message.CopyFrom(bodies.circle(lat, lon, radius))
    elif name == "hotline.v1.TimeWindow":
        start, _, end = text.partition("/")
        message.start_time.CopyFrom(bodies.timestamp(parse_time(start)))  # type: ignore[attr-defined]
        if end.strip():
            message.end_time.CopyFrom(bodies.timestamp(parse_time(end)))  # type: ignore[attr-defined]
    else:
        for key, value in _pairs(text, message.DESCRIPTOR):
            _set_path(message, key, value, language, where)


def _pairs(text: str, descriptor: Any) -> Iterator[tuple[str, str]]:
    for part in _KEY_SPLIT.split(text):
        key, sep, value = part.partition("=")
        if not sep:
            keys = ", ".join(f.name for f in descriptor.fields)
            raise ConfigError(
                f"{part.strip()!r}: write KEY=VALUE (keys of {descriptor.name}: {keys})"
            )
        yield key.strip(), value.strip()


def _set_path(message: Message, key: str, value: str, language: str, where: str) -> None:
    head, _, rest = key.partition(".")
    field = message.DESCRIPTOR.fields_by_name.get(head)
    if field is None:
        keys = ", ".join(f.name for f in message.DESCRIPTOR.fields)
        raise ConfigError(
            f"{where}: {message.DESCRIPTOR.name} has no field {head!r} (keys: {keys})"
        )
    if rest:
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.is_repeated:
            raise ConfigError(f"{where}: {head!r} holds no fields to name with {key!r}")
        _set_path(getattr(message, head), rest, value, language, where)
        return
    _assign(message, field, value, language, f"{where} {head}")


def _assign(message: Message, field: Any, text: str, language: str, where: str) -> None:
    """Set (or, for a repeated field, append) one value of `field` from its text."""
    repeated = field.is_repeated
    try:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            target = (
                getattr(message, field.name).add() if repeated else getattr(message, field.name)
            )
            _fill(target, text, language, where)
            if not repeated:
                message.SetInParent()
            return
        value = _scalar(field, text)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if repeated:
        getattr(message, field.name).append(value)
    else:
        setattr(message, field.name, value)


def _scalar(field: Any, text: str) -> Any:
    value = text.strip()
    if field.type == FieldDescriptor.TYPE_ENUM:
        words = enum_words(field.enum_type)
        word = (
            value.lower()
            .replace("_", "-")
            .removeprefix(enum_prefix(field.enum_type).lower().replace("_", "-"))
        )
        if word not in words:
            raise ConfigError(f"{text!r} is not one of {' | '.join(words)}")
        return words[word]
    if field.type == FieldDescriptor.TYPE_BOOL:
        if value.lower() in ("true", "yes", "1"):
            return True
        if value.lower() in ("false", "no", "0"):
            return False
        raise ConfigError(f"{text!r} is not true or false")
    try:
        if field.type in _FLOATS:
            return float(value)
        if field.type in _INTS:
            return int(value)
    except ValueError:
        raise ConfigError(f"{text!r} is not a number") from None
    if field.type == FieldDescriptor.TYPE_STRING:
        return text
    raise ConfigError(f"{field.name}: this field cannot be given on the command line")


# ----------------------------------------------------------------------------- help


def field_reference(body: Any, *, flags_listed: bool = False) -> str:
    """Every field of `body` and of the messages it holds: value, unit and constraints (the
    body's own fields left out when `flags_listed`: their flags' help says the same)."""
    lines = [f"fields of {body.name} (Constraints from the specification):"]
    seen: set[str] = set()
    queue = [body]
    while queue:
        message = queue.pop(0)
        if message.full_name in seen:
            continue
        seen.add(message.full_name)
        if message is not body:
            lines.append(f"{message.name} (KEY=VALUE keys):")
        for field in message.fields:
            if (
                field.type == FieldDescriptor.TYPE_MESSAGE
                and field.message_type.full_name not in SPECIAL
            ):
                queue.append(field.message_type)
            if message is body and flags_listed:
                continue
            _, what = _kind(field)
            label = f"--{flag_name(body, field)}" if message is body else field.name
            repeated = " (repeated)" if field.is_repeated else ""
            lines.append(f"  {label}{repeated}: {what}; {_constraint(field)}")
        rule = constraints.MESSAGES.get(message.full_name)
        if rule:
            lines.append(f"  rules: {rule}")
    lines.append(
        "values: TIME is RFC 3339 (2026-06-18T21:03:30Z), now, now+90m or now-2h; SECONDS 90, 15m, "
        "2h; LAT,LON in decimal degrees (a value starting with - as --flag=-33.9,151.2); AREA a circle LAT,LON,RADIUS_M or a polygon "
        "LAT,LON;LAT,LON;LAT,LON; KEY=VALUE,KEY=VALUE for other messages, dotted keys for "
        "nested ones (platform.kind=aircraft); enum values by their short names."
    )
    return "\n".join(lines)
