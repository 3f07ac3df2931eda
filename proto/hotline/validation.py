"""Validation of `hotline.v1` messages against the specification's field constraints.

Every field comment in `proto/hotline/v1/*.proto` ends with a `Constraints:` line, and a message
comment may end with one that relates several fields; the grammar is defined in the header
comment of `common.proto`. `proto/specdoc.py` copies those lines, verbatim, into the generated
table `hotline.constraints`. This module is the grammar's one interpreter:

* `parse_field_constraints` and `parse_message_constraints` read one line into clause objects;
* on first use, every `hotline.v1` message's lines are compiled, once, into small checks bound
  to the message descriptors (patterns precompiled, enum names resolved to numbers, paths
  resolved to fields), so validating a message only walks it;
* `validate` runs the checks recursively and returns every violation, each with the dotted path
  of the offending field from the message validated (`handling.releasable_to[1]`,
  `maritime_encounter.contacts[0].position.latitude_deg`; a oneof's name is not part of a path).

No field of the protocol is named in this module: change a `Constraints:` line, run `make gen`,
and the validator follows. Besides the grammar's clauses, the few rules every field obeys by the
specification's conventions are built in: an enum holds a declared value (and an item of a
repeated enum is never the `*_UNSPECIFIED` zero), a double is finite, and a Timestamp or Duration
is within the range its well-known type defines. The one rule written by hand is the only
static rule in prose: `OperatorService.Send` refuses an acknowledgement body (checked when
`filled=False`, which means "at Send time").
"""

from __future__ import annotations

import ipaddress
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any, Final, Literal, TypeAlias
from urllib.parse import urlsplit

from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor, OneofDescriptor
from google.protobuf.message import Message

from hotline.errors import ValidationError, Violation
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2, peer_link_pb2

__all__ = [
    "Condition",
    "ConstraintSyntaxError",
    "FieldConstraints",
    "MessageRule",
    "check_constraint_table",
    "check_envelope",
    "decode_envelope",
    "parse_field_constraints",
    "parse_message_constraints",
    "validate",
    "validate_envelope",
]

# The files of the specification, in reading order.
SPEC_FILES: Final[tuple[FileDescriptor, ...]] = (
    common_pb2.DESCRIPTOR,
    envelope_pb2.DESCRIPTOR,
    bodies_pb2.DESCRIPTOR,
    peer_link_pb2.DESCRIPTOR,
    operator_pb2.DESCRIPTOR,
)

_ENVELOPE: Final = envelope_pb2.Envelope.DESCRIPTOR
_BODY: Final = _ENVELOPE.oneofs_by_name["body"]
# Longest value echoed back in a description, so that a description stays far below the 512
# characters `FieldViolation.description` allows.
_ECHO_CHARS: Final = 60


# ---------------------------------------------------------------------------------------------
# The grammar: one `Constraints:` line, parsed into clause objects
# ---------------------------------------------------------------------------------------------


class ConstraintSyntaxError(ValueError):
    """A `Constraints:` line breaks the grammar, or names something its message does not have."""


@dataclass(frozen=True)
class Condition:
    """`<path> is <VALUE>[ or ...]` or `<path> contains <VALUE>[ or ...]`."""

    path: str
    op: Literal["is", "contains"]
    values: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.path} {self.op} {' or '.join(self.values)}"


@dataclass(frozen=True)
class Length:
    """`A..B chars`, `A..B bytes`, `N bytes` or `A..B items`."""

    unit: Literal["chars", "bytes", "items"]
    low: int
    high: int


@dataclass(frozen=True)
class Range:
    """`A..B` or `A..<B`, in seconds with an `s` suffix for a Duration."""

    low: Decimal
    high: Decimal
    high_open: bool
    seconds: bool
    text: str


@dataclass(frozen=True)
class Pattern:
    """`pattern RE`: the whole string matches RE."""

    regex: str


@dataclass(frozen=True)
class Format:
    """`format ipv4`, `format ipv6` or `format url`."""

    name: Literal["ipv4", "ipv6", "url"]


@dataclass(frozen=True)
class OneOf:
    """`one of "X", "Y"`."""

    values: tuple[str, ...]


@dataclass(frozen=True)
class Unique:
    """`unique`, or `unique by F`."""

    by: str | None


@dataclass(frozen=True)
class Each:
    """`each <clause>`: the clause applies to every item."""

    clause: ItemClause


ItemClause: TypeAlias = Length | Range | Pattern | Format | OneOf
ValueClause: TypeAlias = Length | Range | Pattern | Format | OneOf | Unique | Each


@dataclass(frozen=True)
class FieldConstraints:
    """The parsed `Constraints:` line of a field."""

    presence: Literal["required", "optional", "required if"]
    conditions: tuple[Condition, ...]
    filled_by_gateway: bool
    clauses: tuple[ValueClause, ...]


@dataclass(frozen=True)
class PathClause:
    """`<path> required` or `<path> <clause>`: a field clause applied to a nested field."""

    path: str
    required: bool
    clause: ValueClause | None


@dataclass(frozen=True)
class Compare:
    """`<path> <op> <path-or-literal>`."""

    path: str
    op: Literal["=", "!=", ">", ">="]
    other: str


@dataclass(frozen=True)
class Contains:
    """`<path> contains <path>`."""

    path: str
    other: str


@dataclass(frozen=True)
class ExactlyOne:
    """`exactly one of <oneof>`."""

    oneof: str


@dataclass(frozen=True)
class AtLeastOne:
    """`at least one of <path>, <path>, ...`."""

    paths: tuple[str, ...]


@dataclass(frozen=True)
class AtMostOne:
    """`at most one <path> with <sub> is <ENUM_VALUE>`."""

    path: str
    sub: str
    value: str


Rule: TypeAlias = PathClause | Compare | Contains | ExactlyOne | AtLeastOne | AtMostOne


@dataclass(frozen=True)
class MessageRule:
    """One rule of a message's `Constraints:` line, with its `if C:` condition if any."""

    condition: Condition | None
    rule: Rule
    text: str


_IDENT = r"[a-z_][a-z0-9_]*"
_PATH_RE: Final = re.compile(rf"{_IDENT}(?:\.{_IDENT})*")
_NAME_RE: Final = re.compile(_IDENT)
_NUMBER = r"-?[0-9]+(?:\.[0-9]+)?"
_LENGTH_RE: Final = re.compile(r"(?P<low>[0-9]+)\.\.(?P<high>[0-9]+) (?P<unit>chars|bytes|items)")
_EXACT_BYTES_RE: Final = re.compile(r"(?P<n>[0-9]+) bytes")
_RANGE_RE: Final = re.compile(
    rf"(?P<low>{_NUMBER})(?P<low_s>s?)\.\.(?P<open><?)(?P<high>{_NUMBER})(?P<high_s>s?)"
)
_ONE_OF_RE: Final = re.compile(r'one of ("[^"]*"(?:, "[^"]*")*)')
_CONDITION_RE: Final = re.compile(
    rf"(?P<path>{_IDENT}(?:\.{_IDENT})*) (?P<op>is|contains) "
    r"(?P<values>[A-Za-z_][A-Za-z0-9_]*(?: or [A-Za-z_][A-Za-z0-9_]*)*)"
)
_AT_MOST_ONE_RE: Final = re.compile(
    rf"at most one (?P<path>{_IDENT}(?:\.{_IDENT})*) with (?P<sub>{_IDENT}) is (?P<value>[A-Z][A-Z0-9_]*)"
)
_FORMATS: Final[Mapping[str, Literal["ipv4", "ipv6", "url"]]] = {
    "ipv4": "ipv4",
    "ipv6": "ipv6",
    "url": "url",
}
_COMPARISONS: Final[Mapping[str, Literal["=", "!=", ">", ">="]]] = {
    "=": "=",
    "!=": "!=",
    ">": ">",
    ">=": ">=",
}


def _path(text: str, what: str) -> str:
    if not _PATH_RE.fullmatch(text):
        raise ConstraintSyntaxError(f"{what} {text!r} is not a dotted field path")
    return text


def parse_condition(text: str) -> Condition:
    """Parse a condition C: `<path> is <VALUE>[ or <VALUE> ...]` or `<path> contains ...`."""
    match = _CONDITION_RE.fullmatch(text)
    if not match:
        raise ConstraintSyntaxError(
            f"condition {text!r} is not `<path> is|contains <VALUE>[ or ...]`"
        )
    op: Literal["is", "contains"] = "is" if match["op"] == "is" else "contains"
    return Condition(match["path"], op, tuple(match["values"].split(" or ")))


def parse_value_clause(text: str) -> ValueClause:
    """Parse one clause that restricts a value (every clause but the presence clauses)."""
    if match := _LENGTH_RE.fullmatch(text):
        low, high = int(match["low"]), int(match["high"])
        if low > high:
            raise ConstraintSyntaxError(f"empty length range {text!r}")
        unit: Literal["chars", "bytes", "items"] = match["unit"]  # type: ignore[assignment]
        return Length(unit, low, high)
    if match := _EXACT_BYTES_RE.fullmatch(text):
        return Length("bytes", int(match["n"]), int(match["n"]))
    if match := _RANGE_RE.fullmatch(text):
        if match["low_s"] != match["high_s"]:
            raise ConstraintSyntaxError(f"range {text!r} gives seconds on one bound only")
        low_d, high_d, high_open = (
            Decimal(match["low"]),
            Decimal(match["high"]),
            bool(match["open"]),
        )
        if low_d > high_d or (high_open and low_d == high_d):
            raise ConstraintSyntaxError(f"empty range {text!r}")
        return Range(low_d, high_d, high_open, bool(match["low_s"]), text)
    if text.startswith("pattern "):
        regex = text.removeprefix("pattern ")
        try:
            re.compile(regex)
        except re.error as exc:
            raise ConstraintSyntaxError(f"pattern {regex!r} does not compile: {exc}") from None
        return Pattern(regex)
    if text.startswith("format "):
        name = text.removeprefix("format ")
        if name in _FORMATS:
            return Format(_FORMATS[name])
        raise ConstraintSyntaxError(f"unknown format {name!r} (known: {', '.join(_FORMATS)})")
    if match := _ONE_OF_RE.fullmatch(text):
        return OneOf(tuple(re.findall(r'"([^"]*)"', match[1])))
    if text == "unique":
        return Unique(None)
    if text.startswith("unique by "):
        by = text.removeprefix("unique by ")
        if not _NAME_RE.fullmatch(by):
            raise ConstraintSyntaxError(f"`unique by` needs a field name, got {by!r}")
        return Unique(by)
    if text.startswith("each "):
        inner = parse_value_clause(text.removeprefix("each "))
        if isinstance(inner, Unique | Each) or (
            isinstance(inner, Length) and inner.unit == "items"
        ):
            raise ConstraintSyntaxError(
                f"`each` cannot apply {text.removeprefix('each ')!r} to an item"
            )
        return Each(inner)
    raise ConstraintSyntaxError(f"unknown clause {text!r}")


def parse_field_constraints(line: str) -> FieldConstraints:
    """Parse a field's constraints: the text after `Constraints: `, without the final period."""
    clauses = line.split("; ")
    first = clauses[0]
    conditions: list[Condition] = []
    presence: Literal["required", "optional", "required if"]
    if first == "required":
        presence, rest = "required", clauses[1:]
    elif first == "optional":
        presence, rest = "optional", clauses[1:]
    elif first.startswith("required if "):
        presence, rest = "required if", clauses
        while rest and rest[0].startswith("required if "):
            conditions.append(parse_condition(rest[0].removeprefix("required if ")))
            rest = rest[1:]
    else:
        raise ConstraintSyntaxError(
            f"the first clause must be `required`, `optional` or `required if C`, got {first!r}"
        )
    filled_by_gateway = False
    if rest and rest[0] == "filled by gateway":
        if presence != "required":
            raise ConstraintSyntaxError("`filled by gateway` may only follow `required`")
        filled_by_gateway, rest = True, rest[1:]
    for clause in rest:
        if clause in ("required", "optional", "filled by gateway") or clause.startswith(
            "required if "
        ):
            raise ConstraintSyntaxError(f"presence clause {clause!r} out of place")
    values = tuple(parse_value_clause(clause) for clause in rest)
    return FieldConstraints(presence, tuple(conditions), filled_by_gateway, values)


def _parse_rule(text: str) -> Rule:
    if text.startswith("exactly one of "):
        name = text.removeprefix("exactly one of ")
        if not _NAME_RE.fullmatch(name):
            raise ConstraintSyntaxError(f"`exactly one of` needs a oneof name, got {name!r}")
        return ExactlyOne(name)
    if text.startswith("at least one of "):
        paths = text.removeprefix("at least one of ").split(", ")
        return AtLeastOne(tuple(_path(p, "`at least one of` member") for p in paths))
    if text.startswith("at most one "):
        match = _AT_MOST_ONE_RE.fullmatch(text)
        if not match:
            raise ConstraintSyntaxError(
                f"{text!r} is not `at most one <path> with <sub> is <VALUE>`"
            )
        return AtMostOne(match["path"], match["sub"], match["value"])
    path, _, rest = text.partition(" ")
    _path(path, "rule subject")
    if not rest:
        raise ConstraintSyntaxError(f"rule {text!r} has a path and nothing to check")
    if rest.startswith("contains "):
        return Contains(path, _path(rest.removeprefix("contains "), "`contains` operand"))
    op, _, other = rest.partition(" ")
    if op in _COMPARISONS:
        if not other:
            raise ConstraintSyntaxError(f"comparison {text!r} has no right-hand side")
        return Compare(path, _COMPARISONS[op], other)
    if rest == "required":
        return PathClause(path, True, None)
    return PathClause(path, False, parse_value_clause(rest))


def parse_message_constraints(line: str) -> tuple[MessageRule, ...]:
    """Parse a message's rules: the text after `Constraints: `, without the final period."""
    if not line:
        return ()
    rules = []
    for text in line.split("; "):
        condition = None
        body = text
        if text.startswith("if "):
            condition_text, separator, body = text.removeprefix("if ").partition(": ")
            if not separator:
                raise ConstraintSyntaxError(
                    f"conditional rule {text!r} lacks `: ` after its condition"
                )
            condition = parse_condition(condition_text)
        rules.append(MessageRule(condition, _parse_rule(body), text))
    return tuple(rules)


# ---------------------------------------------------------------------------------------------
# Compiled checks
# ---------------------------------------------------------------------------------------------

# The envelope carrying the body being checked, with its path prefix; None outside a body.
_Carrier: TypeAlias = tuple[Message, str] | None
_Out: TypeAlias = list[Violation]
_ValueCheck: TypeAlias = Callable[[Any, str, _Out], None]
_RuleCheck: TypeAlias = Callable[[Message, str, bool, _Carrier, _Out], None]
_CondCheck: TypeAlias = Callable[[Message, _Carrier], bool]

_F = FieldDescriptor
_INTEGER_TYPES: Final = frozenset(
    {_F.CPPTYPE_INT32, _F.CPPTYPE_INT64, _F.CPPTYPE_UINT32, _F.CPPTYPE_UINT64}
)
_FLOAT_TYPES: Final = frozenset({_F.CPPTYPE_FLOAT, _F.CPPTYPE_DOUBLE})
_TIMESTAMP: Final = "google.protobuf.Timestamp"
_DURATION: Final = "google.protobuf.Duration"
# Ranges of the well-known types, from google/protobuf/timestamp.proto and duration.proto.
_TIMESTAMP_MIN_S: Final = -62_135_596_800  # 0001-01-01T00:00:00Z
_TIMESTAMP_MAX_S: Final = 253_402_300_799  # 9999-12-31T23:59:59Z
_DURATION_MAX_S: Final = 315_576_000_000  # 10,000 years
_NANOS: Final = 1_000_000_000
_OPS: Final[Mapping[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
}


def _echo(value: str | bytes) -> str:
    """A value quoted for a description, cut short."""
    if len(value) > _ECHO_CHARS:
        value = value[: _ECHO_CHARS - 3]
        return repr(value)[:-1] + "...'"
    return repr(value)


def _span(low: int, high: int) -> str:
    return f"exactly {low}" if low == high else f"{low}..{high}"


def _timestamp_ok(ts: Any) -> bool:
    return bool(_TIMESTAMP_MIN_S <= ts.seconds <= _TIMESTAMP_MAX_S and 0 <= ts.nanos < _NANOS)


def _duration_ok(d: Any) -> bool:
    seconds, nanos = d.seconds, d.nanos
    return (
        -_DURATION_MAX_S <= seconds <= _DURATION_MAX_S
        and -_NANOS < nanos < _NANOS
        and not (seconds > 0 and nanos < 0)
        and not (seconds < 0 and nanos > 0)
    )


def _format_timestamp(ts: Any) -> str:
    if not _timestamp_ok(ts):
        return f"(seconds={ts.seconds}, nanos={ts.nanos})"
    moment = datetime.fromtimestamp(ts.seconds, UTC).replace(microsecond=ts.nanos // 1000)
    return moment.isoformat().replace("+00:00", "Z")


def _format_duration(d: Any) -> str:
    total = Decimal(d.seconds * _NANOS + d.nanos) / _NANOS
    return f"{total.normalize():f}s"


def _formatter(fd: FieldDescriptor) -> Callable[[Any], str]:
    """How to show a value of this field in a description."""
    message_type, enum_type = fd.message_type, fd.enum_type
    if message_type is not None:
        if message_type.full_name == _TIMESTAMP:
            return _format_timestamp
        if message_type.full_name == _DURATION:
            return _format_duration
        return lambda _value: f"a {message_type.name}"
    if enum_type is not None:
        by_number = enum_type.values_by_number
        return lambda v: by_number[v].name if v in by_number else str(v)
    if fd.cpp_type == _F.CPPTYPE_STRING:
        return _echo
    return repr


def _is_ip(value: str, version: int) -> bool:
    """An address or a network (with a prefix length), written exactly as `ipaddress` prints it."""
    try:
        parsed: (
            ipaddress.IPv4Address
            | ipaddress.IPv6Address
            | ipaddress.IPv4Network
            | ipaddress.IPv6Network
        )
        parsed = ipaddress.ip_network(value) if "/" in value else ipaddress.ip_address(value)
    except ValueError:
        return False
    return parsed.version == version and str(parsed) == value


_URL_CHARS: Final = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
_URL_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")


def _is_url(value: str) -> bool:
    """An absolute RFC 3986 URL with a scheme and a host."""
    if not _URL_CHARS.fullmatch(value):
        return False
    try:
        parts = urlsplit(value)
        host = parts.hostname
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    return (
        bool(_URL_SCHEME.fullmatch(parts.scheme))
        and bool(host)
        and value.startswith(parts.scheme + "://")
    )


_FORMAT_TESTS: Final[Mapping[str, tuple[Callable[[str], bool], str]]] = {
    "ipv4": (
        lambda v: _is_ip(v, 4),
        "must be an IPv4 address or network in canonical form (192.0.2.7, 198.51.100.0/24)",
    ),
    "ipv6": (
        lambda v: _is_ip(v, 6),
        "must be an IPv6 address or network in canonical RFC 5952 form (2001:db8::1, 2001:db8::/32)",
    ),
    "url": (_is_url, "must be an absolute URL with a scheme and a host"),
}


@dataclass(frozen=True)
class _Ref:
    """A dotted path resolved against a message (or the envelope carrying it)."""

    text: str  # relative to its root, as shown in descriptions
    on_carrier: bool
    steps: tuple[str, ...]  # singular message fields walked before the last segment
    field: FieldDescriptor | None
    oneof: OneofDescriptor | None

    def holder(self, msg: Message, carrier: _Carrier) -> Message | None:
        """The message holding the last segment, or None when a step on the way is unset."""
        if self.on_carrier:
            if carrier is None:
                return None
            msg = carrier[0]
        for step in self.steps:
            if not msg.HasField(step):
                return None
            msg = getattr(msg, step)
        return msg

    def shown(self, prefix: str, carrier: _Carrier) -> str:
        """The path from the message validated."""
        if self.on_carrier and carrier is not None:
            return carrier[1] + self.text
        return prefix + self.text


def _is_set(holder: Message, fd: FieldDescriptor) -> bool:
    """Whether a field holds a value, for comparisons: numbers without presence always do."""
    if fd.is_repeated:
        return len(getattr(holder, fd.name)) > 0
    if fd.has_presence:
        return holder.HasField(fd.name)
    if fd.cpp_type in (_F.CPPTYPE_STRING, _F.CPPTYPE_ENUM):
        return bool(getattr(holder, fd.name))
    return True


def _is_present(holder: Message, fd: FieldDescriptor) -> bool:
    """Whether an optional field is present: zero, empty and unset all read as absent."""
    if fd.is_repeated:
        return len(getattr(holder, fd.name)) > 0
    if fd.has_presence:
        return holder.HasField(fd.name)
    return bool(getattr(holder, fd.name))


def _missing(fd: FieldDescriptor) -> str:
    if fd.is_repeated:
        return "must have at least one item"
    if fd.enum_type is not None:
        zero = fd.enum_type.values_by_number.get(0)
        return f"must not be {zero.name}" if zero is not None else "must be set"
    if fd.cpp_type == _F.CPPTYPE_STRING and not fd.has_presence:
        return "must not be empty"
    return "must be set"


class _MessageCheck:
    """The compiled constraints of one message type."""

    __slots__ = ("fields", "full_name", "rules")

    def __init__(self, full_name: str) -> None:
        self.full_name = full_name
        self.fields: list[_FieldCheck] = []
        self.rules: list[_RuleCheck] = []

    def run(self, msg: Message, prefix: str, filled: bool, carrier: _Carrier, out: _Out) -> None:
        for field in self.fields:
            field.run(msg, prefix, filled, carrier, out)
        for rule in self.rules:
            rule(msg, prefix, filled, carrier, out)


class _FieldCheck:
    """The compiled constraints of one field: presence, then the value's clauses, then recursion."""

    __slots__ = (
        "always",
        "by_has",
        "carries",
        "checks",
        "conditions",
        "filled_by_gateway",
        "item_checks",
        "items_are_messages",
        "missing",
        "name",
        "repeated",
        "sub",
        "zero_is_value",
    )

    def __init__(
        self,
        fd: FieldDescriptor,
        always: bool,
        conditions: tuple[tuple[_CondCheck, str], ...],
        filled_by_gateway: bool,
        checks: tuple[_ValueCheck, ...],
        item_checks: tuple[_ValueCheck, ...],
        sub: _MessageCheck | None,
    ) -> None:
        self.name = fd.name
        self.repeated = fd.is_repeated
        self.by_has = not fd.is_repeated and fd.has_presence
        # A number or bool without explicit presence: zero is the value zero when required.
        self.zero_is_value = (
            not fd.is_repeated
            and not fd.has_presence
            and fd.cpp_type not in (_F.CPPTYPE_STRING, _F.CPPTYPE_ENUM, _F.CPPTYPE_MESSAGE)
        )
        self.always = always
        self.conditions = conditions
        self.filled_by_gateway = filled_by_gateway
        self.missing = _missing(fd)
        self.checks = checks
        self.item_checks = item_checks
        self.sub = sub
        self.items_are_messages = fd.is_repeated and sub is not None
        self.carries = (
            fd.containing_oneof is not None and fd.containing_oneof.full_name == _BODY.full_name
        )

    def required_because(self, msg: Message, filled: bool, carrier: _Carrier) -> str | None:
        """Why the field is required here ("required" or "required when C"), or None."""
        if self.always and (filled or not self.filled_by_gateway):
            return "required"
        for condition, text in self.conditions:
            if condition(msg, carrier):
                return f"required when {text}"
        return None

    def run(self, msg: Message, prefix: str, filled: bool, carrier: _Carrier, out: _Out) -> None:
        name = self.name
        value: Any
        if self.by_has:
            present = msg.HasField(name)
            value = getattr(msg, name) if present else None
        else:
            value = getattr(msg, name)
            present = bool(value)
        if not present:
            because = self.required_because(msg, filled, carrier)
            if because is None:
                return
            if not self.zero_is_value:
                out.append(Violation(prefix + name, f"{because}: {self.missing}"))
                return
        path = prefix + name
        for check in self.checks:
            check(value, path, out)
        if self.repeated:
            if self.item_checks:
                for index, item in enumerate(value):
                    item_path = f"{path}[{index}]"
                    for check in self.item_checks:
                        check(item, item_path, out)
            if self.items_are_messages:
                assert self.sub is not None
                for index, item in enumerate(value):
                    self.sub.run(item, f"{path}[{index}].", filled, None, out)
        elif self.sub is not None:
            self.sub.run(value, path + ".", filled, (msg, prefix) if self.carries else None, out)


class _Compiler:
    """Compiles the constraint table against the message descriptors."""

    def __init__(self, fields: Mapping[str, str], messages: Mapping[str, str]) -> None:
        self.fields = fields
        self.messages = messages
        self.checks: dict[str, _MessageCheck] = {}
        self.body_types = frozenset(
            fd.message_type.full_name for fd in _BODY.fields if fd.message_type
        )

    # -- paths ------------------------------------------------------------------------------

    def ref(self, desc: Descriptor, text: str, *, oneof: bool = False) -> _Ref:
        segments = text.split(".")
        on_carrier = False
        head = segments[0]
        if (
            head == "envelope"
            and head not in desc.fields_by_name
            and desc.full_name in self.body_types
            and len(segments) > 1
        ):
            on_carrier, segments, desc = True, segments[1:], _ENVELOPE
        current = desc
        for step in segments[:-1]:
            fd = current.fields_by_name.get(step)
            if fd is None or fd.is_repeated or fd.message_type is None:
                raise ConstraintSyntaxError(
                    f"path {text!r}: {step!r} is not a singular message field of {current.full_name}"
                )
            current = fd.message_type
        last = segments[-1]
        if last in current.fields_by_name:
            return _Ref(
                ".".join(segments),
                on_carrier,
                tuple(segments[:-1]),
                current.fields_by_name[last],
                None,
            )
        if oneof and last in current.oneofs_by_name:
            return _Ref(
                ".".join(segments),
                on_carrier,
                tuple(segments[:-1]),
                None,
                current.oneofs_by_name[last],
            )
        raise ConstraintSyntaxError(f"path {text!r}: {current.full_name} has no field {last!r}")

    @staticmethod
    def field_of(ref: _Ref) -> FieldDescriptor:
        if ref.field is None:
            raise ConstraintSyntaxError(f"{ref.text!r} is a oneof, not a field")
        return ref.field

    @staticmethod
    def enum_number(fd: FieldDescriptor, name: str) -> int:
        if fd.enum_type is None:
            raise ConstraintSyntaxError(
                f"{fd.name} is not an enum field, so {name!r} is no value of it"
            )
        value = fd.enum_type.values_by_name.get(name)
        if value is None:
            raise ConstraintSyntaxError(f"{name} is not a value of {fd.enum_type.full_name}")
        return value.number

    def condition(self, desc: Descriptor, condition: Condition) -> _CondCheck:
        ref = self.ref(desc, condition.path, oneof=condition.op == "is")
        if ref.oneof is not None:
            members = frozenset(condition.values)
            unknown = members - {fd.name for fd in ref.oneof.fields}
            if unknown:
                raise ConstraintSyntaxError(
                    f"oneof {ref.oneof.name} has no member {sorted(unknown)}"
                )
            oneof_name = ref.oneof.name

            def oneof_is(msg: Message, carrier: _Carrier) -> bool:
                holder = ref.holder(msg, carrier)
                return holder is not None and holder.WhichOneof(oneof_name) in members

            return oneof_is
        fd = self.field_of(ref)
        numbers = frozenset(self.enum_number(fd, name) for name in condition.values)
        name = fd.name
        if condition.op == "is":
            if fd.is_repeated:
                raise ConstraintSyntaxError(f"`is` on repeated field {name}: use `contains`")

            def enum_is(msg: Message, carrier: _Carrier) -> bool:
                holder = ref.holder(msg, carrier)
                return holder is not None and getattr(holder, name) in numbers

            return enum_is
        if not fd.is_repeated:
            raise ConstraintSyntaxError(f"`contains` on singular field {name}: use `is`")

        def enum_contains(msg: Message, carrier: _Carrier) -> bool:
            holder = ref.holder(msg, carrier)
            return holder is not None and any(item in numbers for item in getattr(holder, name))

        return enum_contains

    # -- value clauses ----------------------------------------------------------------------

    def builtin_checks(self, fd: FieldDescriptor, *, item: bool) -> list[_ValueCheck]:
        """Checks every value of this field's type gets, whatever its constraints say."""
        checks: list[_ValueCheck] = []
        if fd.enum_type is not None:
            enum = fd.enum_type
            declared = frozenset(enum.values_by_number)
            zero = enum.values_by_number.get(0)
            zero_name = zero.name if zero is not None else "0"

            def enum_declared(value: int, path: str, out: _Out) -> None:
                if value not in declared:
                    out.append(
                        Violation(
                            path, f"unknown value {value}: not a declared {enum.full_name} value"
                        )
                    )
                elif item and value == 0:
                    out.append(Violation(path, f"must not be {zero_name}"))

            checks.append(enum_declared)
        elif fd.cpp_type in _FLOAT_TYPES:

            def finite(value: float, path: str, out: _Out) -> None:
                if not math.isfinite(value):
                    out.append(Violation(path, f"must be a finite number, got {value!r}"))

            checks.append(finite)
        elif fd.message_type is not None and fd.message_type.full_name == _TIMESTAMP:

            def valid_timestamp(value: Any, path: str, out: _Out) -> None:
                if not _timestamp_ok(value):
                    out.append(
                        Violation(
                            path,
                            "must be a valid timestamp (0001-01-01..9999-12-31, nanos 0..999999999), "
                            f"got seconds={value.seconds}, nanos={value.nanos}",
                        )
                    )

            checks.append(valid_timestamp)
        elif fd.message_type is not None and fd.message_type.full_name == _DURATION:

            def valid_duration(value: Any, path: str, out: _Out) -> None:
                if not _duration_ok(value):
                    out.append(
                        Violation(
                            path,
                            "must be a valid duration (at most 10000 years, nanos of the seconds' sign), "
                            f"got seconds={value.seconds}, nanos={value.nanos}",
                        )
                    )

            checks.append(valid_duration)
        return checks

    def item_clause(self, fd: FieldDescriptor, clause: ItemClause) -> _ValueCheck:
        """A clause on one value (of a singular field, or an item of a repeated one)."""
        is_text = fd.cpp_type == _F.CPPTYPE_STRING
        is_bytes = fd.type == _F.TYPE_BYTES
        if isinstance(clause, Length):
            low, high = clause.low, clause.high
            if clause.unit == "items":
                raise ConstraintSyntaxError(f"`items` on singular field {fd.name}")
            if clause.unit == "chars" and not (is_text and not is_bytes):
                raise ConstraintSyntaxError(f"`chars` on {fd.name}, which is not a string")
            if clause.unit == "bytes" and not is_bytes:
                raise ConstraintSyntaxError(f"`bytes` on {fd.name}, which is not bytes")
            what = f"must be {_span(low, high)} {clause.unit} long"

            def length(value: str | bytes, path: str, out: _Out) -> None:
                n = len(value)
                if n < low or n > high:
                    out.append(Violation(path, f"{what}, got {n}"))

            return length
        if isinstance(clause, Range):
            return self.range_clause(fd, clause)
        if not (is_text and not is_bytes):
            raise ConstraintSyntaxError(
                f"{type(clause).__name__.lower()} on {fd.name}, which is not a string"
            )
        if isinstance(clause, Pattern):
            matcher = re.compile(clause.regex).fullmatch
            regex = clause.regex

            def pattern(value: str, path: str, out: _Out) -> None:
                if matcher(value) is None:
                    out.append(Violation(path, f"must match {regex}, got {_echo(value)}"))

            return pattern
        if isinstance(clause, Format):
            test, what = _FORMAT_TESTS[clause.name]

            def format_(value: str, path: str, out: _Out) -> None:
                if not test(value):
                    out.append(Violation(path, f"{what}, got {_echo(value)}"))

            return format_
        allowed = frozenset(clause.values)
        shown = ", ".join(f'"{v}"' for v in clause.values)

        def one_of(value: str, path: str, out: _Out) -> None:
            if value not in allowed:
                out.append(Violation(path, f"must be one of {shown}, got {_echo(value)}"))

        return one_of

    def range_clause(self, fd: FieldDescriptor, clause: Range) -> _ValueCheck:
        what = f"must be in {clause.text}"
        open_ = clause.high_open
        if fd.message_type is not None and fd.message_type.full_name == _DURATION:
            if not clause.seconds:
                raise ConstraintSyntaxError(f"range on Duration {fd.name} must be in seconds (`s`)")
            low_ns, high_ns = int(clause.low * _NANOS), int(clause.high * _NANOS)

            def duration_range(value: Any, path: str, out: _Out) -> None:
                if not _duration_ok(value):
                    return  # reported by the built-in check
                ns = value.seconds * _NANOS + value.nanos
                if ns < low_ns or ns > high_ns or (open_ and ns == high_ns):
                    out.append(Violation(path, f"{what}, got {_format_duration(value)}"))

            return duration_range
        if clause.seconds:
            raise ConstraintSyntaxError(f"range in seconds on {fd.name}, which is not a Duration")
        if fd.cpp_type in _INTEGER_TYPES:
            if (
                clause.low != clause.low.to_integral_value()
                or clause.high != clause.high.to_integral_value()
            ):
                raise ConstraintSyntaxError(f"range {clause.text} on integer field {fd.name}")
            low_i, high_i = int(clause.low), int(clause.high)

            def int_range(value: int, path: str, out: _Out) -> None:
                if value < low_i or value > high_i or (open_ and value == high_i):
                    out.append(Violation(path, f"{what}, got {value}"))

            return int_range
        if fd.cpp_type in _FLOAT_TYPES:
            low_f, high_f = float(clause.low), float(clause.high)

            def float_range(value: float, path: str, out: _Out) -> None:
                if low_f <= value <= high_f and not (open_ and value == high_f):
                    return
                if math.isfinite(value):  # NaN and infinities are reported by the built-in check
                    out.append(Violation(path, f"{what}, got {value!r}"))

            return float_range
        raise ConstraintSyntaxError(f"range on {fd.name}, which is not a number or a Duration")

    def container_clause(self, fd: FieldDescriptor, clause: Length | Unique) -> _ValueCheck:
        """A clause on a repeated field as a whole."""
        if isinstance(clause, Length):
            if clause.unit != "items":
                raise ConstraintSyntaxError(
                    f"`{clause.unit}` on repeated field {fd.name}: use `each`"
                )
            low, high = clause.low, clause.high
            what = f"must have {_span(low, high)} items"

            def items(value: Any, path: str, out: _Out) -> None:
                n = len(value)
                if n < low or n > high:
                    out.append(Violation(path, f"{what}, got {n}"))

            return items
        name = fd.name
        by = clause.by
        if by is None:
            if fd.message_type is not None:
                raise ConstraintSyntaxError(f"`unique` on message field {name}: use `unique by F`")

            def unique(value: Any, path: str, out: _Out) -> None:
                first: dict[Any, int] = {}
                for index, item in enumerate(value):
                    earlier = first.setdefault(item, index)
                    if earlier != index:
                        out.append(
                            Violation(
                                f"{path}[{index}]", f"must be unique, same as {name}[{earlier}]"
                            )
                        )

            return unique
        if fd.message_type is None or by not in fd.message_type.fields_by_name:
            raise ConstraintSyntaxError(
                f"`unique by {by}`: the items of {name} have no field {by!r}"
            )
        key_fd = fd.message_type.fields_by_name[by]
        if key_fd.is_repeated or key_fd.message_type is not None:
            raise ConstraintSyntaxError(f"`unique by {by}`: {by} is not a singular scalar")

        def unique_by(value: Any, path: str, out: _Out) -> None:
            first: dict[Any, int] = {}
            for index, item in enumerate(value):
                earlier = first.setdefault(getattr(item, by), index)
                if earlier != index:
                    out.append(
                        Violation(
                            f"{path}[{index}].{by}",
                            f"must be unique in {name}, same as {name}[{earlier}].{by}",
                        )
                    )

        return unique_by

    def field_check(
        self,
        fd: FieldDescriptor,
        spec: FieldConstraints,
        desc: Descriptor,
        *,
        builtins: bool = True,
    ) -> _FieldCheck:
        """Compile a field's constraints (`builtins=False`: the clauses only, no recursion)."""
        checks: list[_ValueCheck] = []
        item_checks: list[_ValueCheck] = []
        if fd.is_repeated:
            if builtins:
                item_checks.extend(self.builtin_checks(fd, item=True))
            for clause in spec.clauses:
                if isinstance(clause, Each):
                    item_checks.append(self.item_clause(fd, clause.clause))
                elif isinstance(clause, Length | Unique):
                    checks.append(self.container_clause(fd, clause))
                else:
                    raise ConstraintSyntaxError(f"{clause} on repeated field {fd.name}: use `each`")
        else:
            if builtins:
                checks.extend(self.builtin_checks(fd, item=False))
            for clause in spec.clauses:
                if isinstance(clause, Unique | Each):
                    raise ConstraintSyntaxError(
                        f"`{type(clause).__name__.lower()}` on singular field {fd.name}"
                    )
                checks.append(self.item_clause(fd, clause))
        sub = None
        if builtins and fd.message_type is not None:
            sub = self.checks.get(fd.message_type.full_name)
        conditions = tuple((self.condition(desc, c), str(c)) for c in spec.conditions)
        return _FieldCheck(
            fd,
            always=spec.presence == "required",
            conditions=conditions,
            filled_by_gateway=spec.filled_by_gateway,
            checks=tuple(checks),
            item_checks=tuple(item_checks),
            sub=sub,
        )

    # -- message rules ----------------------------------------------------------------------

    def rule(self, desc: Descriptor, rule: MessageRule) -> _RuleCheck:
        check = self.unconditional_rule(desc, rule.rule)
        if rule.condition is None:
            return check
        holds = self.condition(desc, rule.condition)
        when = f"when {rule.condition}: "

        def conditional(
            msg: Message, prefix: str, filled: bool, carrier: _Carrier, out: _Out
        ) -> None:
            if holds(msg, carrier):
                found: _Out = []
                check(msg, prefix, filled, carrier, found)
                out.extend(Violation(v.field, when + v.description) for v in found)

        return conditional

    def unconditional_rule(self, desc: Descriptor, rule: Rule) -> _RuleCheck:
        if isinstance(rule, ExactlyOne):
            return self.exactly_one(desc, rule)
        if isinstance(rule, AtLeastOne):
            return self.at_least_one(desc, rule)
        if isinstance(rule, AtMostOne):
            return self.at_most_one(desc, rule)
        if isinstance(rule, Contains):
            return self.contains(desc, rule)
        if isinstance(rule, Compare):
            return self.compare(desc, rule)
        return self.path_clause(desc, rule)

    def exactly_one(self, desc: Descriptor, rule: ExactlyOne) -> _RuleCheck:
        oneof = desc.oneofs_by_name.get(rule.oneof)
        if oneof is None:
            raise ConstraintSyntaxError(f"{desc.full_name} has no oneof {rule.oneof!r}")
        name = oneof.name
        members = [fd.name for fd in oneof.fields]
        listed = ", ".join(members) if len(members) <= 5 else f"its {len(members)} members"
        what = f"exactly one of {listed} must be set, none is"

        def exactly_one(
            msg: Message, prefix: str, filled: bool, carrier: _Carrier, out: _Out
        ) -> None:
            if msg.WhichOneof(name) is None:
                out.append(Violation(prefix + name, what))

        return exactly_one

    def at_least_one(self, desc: Descriptor, rule: AtLeastOne) -> _RuleCheck:
        refs = [self.ref(desc, p) for p in rule.paths]
        pairs = [(ref, self.field_of(ref)) for ref in refs]
        what = f"at least one of {', '.join(rule.paths)} must be set"

        def at_least_one(
            msg: Message, prefix: str, filled: bool, carrier: _Carrier, out: _Out
        ) -> None:
            for ref, fd in pairs:
                holder = ref.holder(msg, carrier)
                if holder is not None and _is_present(holder, fd):
                    return
            out.append(Violation(refs[0].shown(prefix, carrier), what))

        return at_least_one

    def at_most_one(self, desc: Descriptor, rule: AtMostOne) -> _RuleCheck:
        ref = self.ref(desc, rule.path)
        fd = self.field_of(ref)
        if not fd.is_repeated or fd.message_type is None:
            raise ConstraintSyntaxError(f"`at most one {rule.path}`: not a repeated message field")
        sub_fd = fd.message_type.fields_by_name.get(rule.sub)
        if sub_fd is None:
            raise ConstraintSyntaxError(f"the items of {rule.path} have no field {rule.sub!r}")
        number = self.enum_number(sub_fd, rule.value)
        name, sub = fd.name, rule.sub
        what = f"at most one item may have {sub} {rule.value}"

        def at_most_one(
            msg: Message, prefix: str, filled: bool, carrier: _Carrier, out: _Out
        ) -> None:
            holder = ref.holder(msg, carrier)
            if holder is None:
                return
            count = sum(1 for item in getattr(holder, name) if getattr(item, sub) == number)
            if count > 1:
                out.append(Violation(ref.shown(prefix, carrier), f"{what}, {count} do"))

        return at_most_one

    def contains(self, desc: Descriptor, rule: Contains) -> _RuleCheck:
        left, right = self.ref(desc, rule.path), self.ref(desc, rule.other)
        left_fd, right_fd = self.field_of(left), self.field_of(right)
        if not left_fd.is_repeated or left_fd.message_type is not None:
            raise ConstraintSyntaxError(f"`{rule.path} contains`: not a repeated scalar field")
        if right_fd.is_repeated or right_fd.cpp_type != left_fd.cpp_type:
            raise ConstraintSyntaxError(
                f"`contains {rule.other}`: not a singular field of the item type"
            )
        show = _formatter(right_fd)

        def contains(msg: Message, prefix: str, filled: bool, carrier: _Carrier, out: _Out) -> None:
            holder = left.holder(msg, carrier)
            other_holder = right.holder(msg, carrier)
            if holder is None or other_holder is None:
                return
            if not _is_set(holder, left_fd) or not _is_set(other_holder, right_fd):
                return
            wanted = getattr(other_holder, right_fd.name)
            if wanted not in getattr(holder, left_fd.name):
                out.append(
                    Violation(
                        left.shown(prefix, carrier),
                        f"must contain {right.shown(prefix, carrier)} ({show(wanted)})",
                    )
                )

        return contains

    def literal(self, fd: FieldDescriptor, text: str) -> Any:
        """A literal on the right of a comparison, in the type of the field on the left."""
        if fd.enum_type is not None:
            return self.enum_number(fd, text)
        if fd.cpp_type in _INTEGER_TYPES and re.fullmatch(r"-?[0-9]+", text):
            return int(text)
        if fd.cpp_type in _FLOAT_TYPES and re.fullmatch(_NUMBER, text):
            return float(text)
        if fd.cpp_type == _F.CPPTYPE_BOOL and text in ("true", "false"):
            return text == "true"
        if fd.cpp_type == _F.CPPTYPE_STRING and len(text) >= 2 and text[0] == text[-1] == '"':
            return text[1:-1] if fd.type == _F.TYPE_STRING else text[1:-1].encode()
        raise ConstraintSyntaxError(f"{text!r} is neither a path nor a literal of {fd.name}'s type")

    def compare(self, desc: Descriptor, rule: Compare) -> _RuleCheck:
        left = self.ref(desc, rule.path)
        left_fd = self.field_of(left)
        if left_fd.is_repeated:
            raise ConstraintSyntaxError(f"comparison on repeated field {rule.path}")
        well_known = left_fd.message_type.full_name if left_fd.message_type is not None else None
        if left_fd.message_type is not None and well_known not in (_TIMESTAMP, _DURATION):
            raise ConstraintSyntaxError(f"comparison on message field {rule.path}")
        ordered = well_known is not None or left_fd.cpp_type in _INTEGER_TYPES | _FLOAT_TYPES
        if rule.op in (">", ">=") and not ordered:
            raise ConstraintSyntaxError(f"`{rule.op}` on {rule.path}, which has no order")
        right: _Ref | None = None
        right_fd = left_fd
        literal: Any = None
        if _PATH_RE.fullmatch(rule.other):
            right = self.ref(desc, rule.other)
            right_fd = self.field_of(right)
            same_type = (
                right_fd.cpp_type == left_fd.cpp_type
                and right_fd.message_type is left_fd.message_type
                and right_fd.enum_type is left_fd.enum_type
            )
            if right_fd.is_repeated or not same_type:
                raise ConstraintSyntaxError(f"cannot compare {rule.path} with {rule.other}")
        elif well_known is not None:
            raise ConstraintSyntaxError(
                f"no literals for {well_known}: compare {rule.path} with a field"
            )
        else:
            literal = self.literal(left_fd, rule.other)
        test = _OPS[rule.op]
        show = _formatter(left_fd)
        name = left_fd.name

        other_name = right_fd.name

        def key(holder: Message, field_name: str) -> Any:
            value = getattr(holder, field_name)
            return (value.seconds, value.nanos) if well_known is not None else value

        in_time = well_known == _TIMESTAMP
        verbs = {
            "=": "must equal",
            "!=": "must differ from",
            ">": "must be after" if in_time else "must be greater than",
            ">=": "must not be before" if in_time else "must be at least",
        }
        verb = verbs[rule.op]
        literal_shown = show(literal) if right is None else ""

        def compare(msg: Message, prefix: str, filled: bool, carrier: _Carrier, out: _Out) -> None:
            holder = left.holder(msg, carrier)
            if holder is None or not _is_set(holder, left_fd):
                return
            a = key(holder, name)
            if right is None:
                if not test(a, literal):
                    got = show(getattr(holder, name))
                    if rule.op == "=":
                        out.append(
                            Violation(
                                left.shown(prefix, carrier), f"must be {literal_shown}, got {got}"
                            )
                        )
                    else:
                        out.append(
                            Violation(
                                left.shown(prefix, carrier), f"{verb} {literal_shown}, got {got}"
                            )
                        )
                return
            other = right.holder(msg, carrier)
            if other is None or not _is_set(other, right_fd):
                return
            if not test(a, key(other, other_name)):
                got = show(getattr(holder, name))
                other_shown = f"{right.shown(prefix, carrier)} ({show(getattr(other, other_name))})"
                if rule.op == "!=":
                    out.append(Violation(left.shown(prefix, carrier), f"{verb} {other_shown}"))
                else:
                    out.append(
                        Violation(left.shown(prefix, carrier), f"{verb} {other_shown}, got {got}")
                    )

        return compare

    def path_clause(self, desc: Descriptor, rule: PathClause) -> _RuleCheck:
        ref = self.ref(desc, rule.path)
        fd = self.field_of(ref)
        clauses = () if rule.clause is None else (rule.clause,)
        spec = FieldConstraints("required" if rule.required else "optional", (), False, clauses)
        # The field's own constraints already checked its value: only this clause runs here.
        holder_type = fd.containing_type
        assert holder_type is not None  # a field of a message, never an extension
        check = self.field_check(fd, spec, holder_type, builtins=False)
        steps = ".".join(ref.steps)

        def path_clause(
            msg: Message, prefix: str, filled: bool, carrier: _Carrier, out: _Out
        ) -> None:
            holder = ref.holder(msg, carrier)
            if holder is None:
                return
            base = carrier[1] if ref.on_carrier and carrier is not None else prefix
            check.run(holder, f"{base}{steps}." if steps else base, filled, None, out)

        return path_clause

    # -- messages ---------------------------------------------------------------------------

    def compile(self, desc: Descriptor) -> None:
        """Fill in the checks of one message (its `_MessageCheck` already registered)."""
        target = self.checks[desc.full_name]
        for fd in desc.fields:
            line = self.fields.get(fd.full_name)
            if line is None:
                raise ConstraintSyntaxError(f"{fd.full_name}: no Constraints line")
            try:
                target.fields.append(self.field_check(fd, parse_field_constraints(line), desc))
            except ConstraintSyntaxError as exc:
                raise ConstraintSyntaxError(
                    f"{fd.full_name}: {exc} (Constraints: {line}.)"
                ) from None
        line = self.messages.get(desc.full_name, "")
        try:
            target.rules.extend(self.rule(desc, rule) for rule in parse_message_constraints(line))
        except ConstraintSyntaxError as exc:
            raise ConstraintSyntaxError(f"{desc.full_name}: {exc} (Constraints: {line}.)") from None
        if desc is _ENVELOPE:
            target.rules.append(_acknowledgement_not_sent)


def _acknowledgement_not_sent(
    msg: Message, prefix: str, filled: bool, carrier: _Carrier, out: _Out
) -> None:
    # Prose of OperatorService.Send: an acknowledgement body is refused with INVALID_ARGUMENT;
    # only the gateway creates one, through Acknowledge.
    if not filled and msg.WhichOneof("body") == "acknowledgement":
        out.append(
            Violation(
                prefix + "acknowledgement",
                "an acknowledgement is created by OperatorService.Acknowledge, never sent with Send",
            )
        )


def _all_messages(files: Iterable[FileDescriptor]) -> list[Descriptor]:
    found: list[Descriptor] = []

    def visit(desc: Descriptor) -> None:
        found.append(desc)
        for nested in desc.nested_types:
            visit(nested)

    for file in files:
        for desc in file.message_types_by_name.values():
            visit(desc)
    return found


def _compile_table(
    fields: Mapping[str, str], messages: Mapping[str, str]
) -> tuple[dict[str, _MessageCheck], list[str]]:
    compiler = _Compiler(fields, messages)
    descriptors = _all_messages(SPEC_FILES)
    for desc in descriptors:
        compiler.checks[desc.full_name] = _MessageCheck(desc.full_name)
    errors: list[str] = []
    for desc in descriptors:
        try:
            compiler.compile(desc)
        except ConstraintSyntaxError as exc:
            errors.append(str(exc))
    known_fields = {fd.full_name for desc in descriptors for fd in desc.fields}
    errors.extend(
        f"{name}: names no field of the specification"
        for name in fields
        if name not in known_fields
    )
    errors.extend(
        f"{name}: names no message of the specification"
        for name in messages
        if name not in compiler.checks
    )
    return compiler.checks, errors


def check_constraint_table(fields: Mapping[str, str], messages: Mapping[str, str]) -> list[str]:
    """Compile a constraint table against the `hotline.v1` descriptors; return every problem.

    `fields` maps a field's full name (`hotline.v1.Envelope.message_id`) to its constraints,
    `messages` a message's full name to its rules, each the text after `Constraints: ` without
    the final period. Used by `proto/specdoc.py` before it writes `hotline.constraints`.
    """
    return _compile_table(fields, messages)[1]


@cache
def _checks() -> dict[str, _MessageCheck]:
    from hotline import constraints

    checks, errors = _compile_table(constraints.FIELDS, constraints.MESSAGES)
    if errors:
        raise ConstraintSyntaxError(
            "hotline.constraints is inconsistent (run `make gen`): " + "; ".join(errors)
        )
    return checks


# ---------------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------------


def validate(message: Message, *, filled: bool = True, prefix: str = "") -> list[Violation]:
    """Check any `hotline.v1` message against the specification; return every violation.

    `filled=False` is for `OperatorService.Send`: fields whose constraints say "filled by
    gateway" may then be empty. `prefix` is prepended to every field path (for example
    `envelope` when the message is a request's `envelope` field). An empty list means valid.
    A message outside `hotline.v1` has no constraints.
    """
    check = _checks().get(message.DESCRIPTOR.full_name)
    if check is None:
        return []
    if prefix and not prefix.endswith("."):
        prefix += "."
    out: list[Violation] = []
    check.run(message, prefix, filled, None, out)
    return out


def validate_envelope(envelope: envelope_pb2.Envelope, *, filled: bool = True) -> list[Violation]:
    """Check an envelope and its body; paths are dotted from the envelope (`handling.caveat`).

    `filled=True` (the default) for anything on the wire or in the journal; `filled=False` at
    `OperatorService.Send`, before the gateway fills `message_id`, `sender_party`, `originator`
    and `create_time` (it also refuses an acknowledgement body, which only `Acknowledge` makes).
    """
    return validate(envelope, filled=filled)


def check_envelope(envelope: envelope_pb2.Envelope, *, filled: bool = True) -> None:
    """Raise `ValidationError` listing every violation, if the envelope has any."""
    violations = validate_envelope(envelope, filled=filled)
    if violations:
        raise ValidationError(violations)


def decode_envelope(data: bytes) -> tuple[envelope_pb2.Envelope | None, list[Violation]]:
    """Parse and check received envelope bytes. Never raises.

    Returns `(envelope, [])` for a valid envelope, `(envelope, violations)` for one that parses
    but breaks constraints, and `(None, [Violation("", "envelope bytes do not parse: ...")])` for
    bytes that are not an Envelope. (An empty field path is not a `FieldViolation`: report a
    parse failure in `Rejection.detail`.)
    """
    try:
        envelope = envelope_pb2.Envelope.FromString(data)
    except Exception as exc:  # any parse failure, whatever the protobuf backend raises
        reason = str(exc) or type(exc).__name__
        return None, [Violation("", f"envelope bytes do not parse: {reason[:200]}")]
    return envelope, validate_envelope(envelope)
