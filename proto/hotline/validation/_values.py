"""Value tests: what a single value must be, and how to say what is wrong with it.

A `ValueTest` has two halves. `explain(value)` is the test itself: None for a good value, or
the description of what is wrong (`must be 2 to 8 uppercase letters A-Z, such as JP or TW,
got 'jp' (pattern ^[A-Z]{2,8}$)`: what is allowed in words, the spec's pattern as a reference). `accept(value)` is a
quick yes, as cheap as can be (a bound `fullmatch`, a set's `__contains__`), and `quick`, when
set, writes it as a Python expression; the generated checks (`_codegen`) use that inline and
call `explain` only when the quick yes says no, so a good value costs no string formatting and
few calls. A quick yes may say no to a good value (`explain` then clears it); it never says yes
to a bad one.

Also here: the vocabulary the other modules share (`Step`, `Carrier`, ...), the tests of a
repeated field as a whole (`unique`, item counts), and how values are shown in descriptions.
"""

from __future__ import annotations

import ipaddress
import keyword
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final, Protocol, TypeAlias

from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from hotline.errors import Violation

# The envelope carrying the body being checked, with its path prefix; None outside a body.
Carrier: TypeAlias = tuple[Message, str] | None
Out: TypeAlias = list[Violation]
# A message's, a field's or a rule's check: (message, path prefix, filled, carrier, out).
Step: TypeAlias = Callable[[Message, str, bool, Carrier, Out], None]
# Whether a condition (`action is ACTION_UPDATE`) holds: (message, carrier).
Holds: TypeAlias = Callable[[Message, Carrier], bool]
# What an unset field reports: True when nothing more is to be checked; False when its zero is
# a value to check (a required number or bool without explicit presence).
Absent: TypeAlias = Callable[[Message, str, bool, Carrier, Out], bool]
# Binds an object to a name in the globals of generated code, and returns the name; the hint
# makes the name readable (`_codegen`).
Bind: TypeAlias = Callable[[object, str], str]


class Code(Protocol):
    """Where a quick expression is written (`_codegen`): `msg` is the variable holding the
    message, `envelope` the one holding the envelope that carries it (None if not known);
    `bind` names an object; `read(expression)` is a variable holding the value of a read
    (`msg.handling`, `msg.references[:]`), read once for the message's checks;
    `which(holder, oneof)` is the expression for `holder.WhichOneof(oneof)`;
    `collected(field, item_field)`, a list of the values of a field of the items of a repeated
    field of the message, in order, collected as they were checked (None if not collected: a
    `RulePlan` asks for it in `wants`)."""

    @property
    def msg(self) -> str: ...

    @property
    def envelope(self) -> str | None: ...

    def bind(self, obj: object, hint: str) -> str: ...

    def read(self, expression: str) -> str: ...

    def which(self, holder: str, oneof: str) -> str: ...

    def collected(self, field: str, item_field: str) -> str | None: ...


_F = FieldDescriptor
INTEGER_TYPES: Final = frozenset(
    {_F.CPPTYPE_INT32, _F.CPPTYPE_INT64, _F.CPPTYPE_UINT32, _F.CPPTYPE_UINT64}
)
FLOAT_TYPES: Final = frozenset({_F.CPPTYPE_FLOAT, _F.CPPTYPE_DOUBLE})
TIMESTAMP: Final = "google.protobuf.Timestamp"
DURATION: Final = "google.protobuf.Duration"
# Ranges of the well-known types, from google/protobuf/timestamp.proto and duration.proto.
_TIMESTAMP_MIN_S: Final = -62_135_596_800  # 0001-01-01T00:00:00Z
_TIMESTAMP_MAX_S: Final = 253_402_300_799  # 9999-12-31T23:59:59Z
_DURATION_MAX_S: Final = 315_576_000_000  # 10,000 years
NANOS: Final = 1_000_000_000
# Longest value echoed back in a description, so that a description stays far below the 512
# characters `FieldViolation.description` allows.
_ECHO_CHARS: Final = 60


# ---------------------------------------------------------------------------------------------
# Showing values in descriptions
# ---------------------------------------------------------------------------------------------


def attribute(holder: str, name: str) -> str:
    """The expression reading a field of the expression `holder` (a protobuf field may be named
    like a Python keyword)."""
    if name.isidentifier() and not keyword.iskeyword(name):
        return f"{holder}.{name}"
    return f"getattr({holder}, {name!r})"


def echo(value: str | bytes) -> str:
    """A value quoted for a description, cut short."""
    if len(value) > _ECHO_CHARS:
        value = value[: _ECHO_CHARS - 3]
        return repr(value)[:-1] + "...'"
    return repr(value)


def span(low: int, high: int) -> str:
    return f"exactly {low}" if low == high else f"{low}..{high}"


def timestamp_ok(ts: Any) -> bool:
    return bool(_TIMESTAMP_MIN_S <= ts.seconds <= _TIMESTAMP_MAX_S and 0 <= ts.nanos < NANOS)


def duration_ok(d: Any) -> bool:
    seconds, nanos = d.seconds, d.nanos
    return (
        -_DURATION_MAX_S <= seconds <= _DURATION_MAX_S
        and -NANOS < nanos < NANOS
        and not (seconds > 0 and nanos < 0)
        and not (seconds < 0 and nanos > 0)
    )


def format_timestamp(ts: Any) -> str:
    if not timestamp_ok(ts):
        return f"(seconds={ts.seconds}, nanos={ts.nanos})"
    moment = datetime.fromtimestamp(ts.seconds, UTC).replace(microsecond=ts.nanos // 1000)
    return moment.isoformat().replace("+00:00", "Z")


def format_duration(d: Any) -> str:
    total = Decimal(d.seconds * NANOS + d.nanos) / NANOS
    return f"{total.normalize():f}s"


def formatter(fd: FieldDescriptor) -> Callable[[Any], str]:
    """How to show a value of this field in a description."""
    message_type, enum_type = fd.message_type, fd.enum_type
    if message_type is not None:
        if message_type.full_name == TIMESTAMP:
            return format_timestamp
        if message_type.full_name == DURATION:
            return format_duration
        return lambda _value: f"a {message_type.name}"
    if enum_type is not None:
        by_number = enum_type.values_by_number
        return lambda v: by_number[v].name if v in by_number else str(v)
    if fd.cpp_type == _F.CPPTYPE_STRING:
        return echo
    return repr


# ---------------------------------------------------------------------------------------------
# Value tests
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueTest:
    """A test of one value: a quick yes (`accept`), and the test itself (`explain`).

    `quick(value, bind)`, when set, is `accept` as an expression on the expression `value`
    (`2 <= len(value) <= 35`, `value in members_12`), for a generated check to write inline.
    `bounded`: a range of finite bounds, whose quick yes makes `FINITE`'s redundant.
    """

    accept: Callable[[Any], object]
    explain: Callable[[Any], str | None]
    quick: Callable[[str, Bind], str] | None = None
    bounded: bool = False


def enum_declared(enum: EnumDescriptor, *, item: bool) -> ValueTest:
    """An enum holds a declared value; an item of a repeated enum is never the zero."""
    declared = frozenset(enum.values_by_number)
    zero = enum.values_by_number.get(0)
    unspecified = f"must not be {zero.name if zero is not None else '0'}"
    full_name = enum.full_name

    def explain(value: int) -> str | None:
        if value not in declared:
            return f"unknown value {value}: not a declared {full_name} value"
        if item and value == 0:
            return unspecified
        return None

    accepted = declared - {0} if item else declared
    return ValueTest(accepted.__contains__, explain, _member_of(accepted))


def _finite(value: float) -> str | None:
    if math.isfinite(value):
        return None
    return f"must be a finite number, got {value!r}"


FINITE: Final = ValueTest(math.isfinite, _finite)


# Control characters, Unicode general category Cc: C0, DEL and C1. No string may hold one, but a
# `multiline` string may hold line feeds and tabs (common.proto, "Conventions").
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LF_TAB: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain_text(*, multiline: bool) -> ValueTest:
    """A string holds no control character; `multiline`: but for line feeds and tabs.

    The quick yes is `str.isprintable()` (a C loop, true for most text: it is false for any
    control character, and also for a line feed, a tab or a non-ASCII space, which the regular
    expression then clears)."""
    control = _CONTROL_BUT_LF_TAB if multiline else _CONTROL
    search = control.search
    allowed = " other than line feed and tab" if multiline else ""

    def explain(value: str) -> str | None:
        found = search(value)
        if found is None:
            return None
        return (
            f"must not hold control characters{allowed}, got U+{ord(found[0]):04X} at "
            f"character {found.start()} of {echo(value)}"
        )

    def accept(value: str) -> bool:
        return value.isprintable() or search(value) is None

    def quick(v: str, bind: Bind) -> str:
        return f"({v}.isprintable() or {bind(search, 'control')}({v}) is None)"

    return ValueTest(accept, explain, quick)


PLAIN_TEXT: Final = plain_text(multiline=False)
MULTILINE_TEXT: Final = plain_text(multiline=True)


def _valid_timestamp(value: Any) -> str | None:
    if timestamp_ok(value):
        return None
    return (
        "must be a valid timestamp (0001-01-01..9999-12-31, nanos 0..999999999), "
        f"got seconds={value.seconds}, nanos={value.nanos}"
    )


VALID_TIMESTAMP: Final = ValueTest(
    timestamp_ok,
    _valid_timestamp,
    lambda v, _bind: (
        f"{_TIMESTAMP_MIN_S} <= {v}.seconds <= {_TIMESTAMP_MAX_S} and 0 <= {v}.nanos < {NANOS}"
    ),
)


def _valid_duration(value: Any) -> str | None:
    if duration_ok(value):
        return None
    return (
        "must be a valid duration (at most 10000 years, nanos of the seconds' sign), "
        f"got seconds={value.seconds}, nanos={value.nanos}"
    )


VALID_DURATION: Final = ValueTest(duration_ok, _valid_duration)


def length(low: int, high: int, unit: str) -> ValueTest:
    what = f"must be {span(low, high)} {unit} long"

    def explain(value: str | bytes) -> str | None:
        n = len(value)
        if low <= n <= high:
            return None
        return f"{what}, got {n}"

    return ValueTest(
        lambda value: low <= len(value) <= high,
        explain,
        lambda v, _bind: f"{low} <= len({v}) <= {high}",
    )


# What each pattern of the specification allows, in words, for descriptions a person reads; the
# pattern follows as the reference. A pattern missing here is described by itself.
PATTERN_WORDS: Final[Mapping[str, str]] = {
    r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$": "a UUID in lowercase "
    "hex, 8-4-4-4-12 digits, such as 01900000-0000-7000-8000-000000000000",
    r"^[A-Z]{2,8}$": "2 to 8 uppercase letters A-Z, such as JP or TW",
    r"^spiffe://[a-z0-9]([a-z0-9.-]*[a-z0-9])?(/[A-Za-z0-9._~-]+)+$": "a SPIFFE ID, "
    "spiffe://<trust domain>/<path>, such as spiffe://jp.hotline/operator/watch-1",
    r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$": "a BCP 47 language tag, such as en, ja or zh-Hant",
    r"^\+[1-9][0-9]{6,14}$": "an international phone number: + and 7 to 15 digits, no spaces "
    "(E.164), such as +81988661234",
    r"^[A-Z0-9][A-Z0-9 -]*$": "uppercase letters A-Z, digits, spaces and '-', starting with a "
    "letter or digit",
    r"^[A-Z0-9][A-Z0-9-]*$": "uppercase letters A-Z, digits and '-', starting with a letter or "
    "digit",
    r"^[A-Z0-9][A-Z0-9 /,.()-]*$": "uppercase letters A-Z, digits, spaces and / , . ( ) -, "
    "starting with a letter or digit",
    r"^[a-z_][a-z0-9_]*(\[[0-9]+\])?(\.[a-z_][a-z0-9_]*(\[[0-9]+\])?)*$": "a field path: "
    "lowercase names joined by '.', each with an optional [index], such as references[0]",
    r"^[A-Za-z0-9._-]+$": "letters, digits, '.', '_' and '-'",
    r"^[A-Z]{4}$": "4 uppercase letters A-Z, such as RJTT",
    r"^[A-Z][0-9]{4}/[0-9]{2}$": "a letter, 4 digits, '/' and 2 digits, such as A1207/25",
    r"^[0-9a-f]{64}$": "64 lowercase hex digits (a SHA-256)",
    r"^[0-9]{9}$": "9 digits",
    r"^[0-9]{7}$": "7 digits",
    r"^[0-9A-F]{6}$": "6 uppercase hex digits, such as 8963A2",
    r"^[0-7]{4}$": "4 octal digits 0-7, such as 7700",
    r"^[!-?A-~]+@[!-?A-~]+$": "an address of the form name@domain, with no spaces",
    r"^CVE-[0-9]{4}-[0-9]{4,}$": "a CVE id, such as CVE-2024-12345",
    r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{1,62}$": "a domain name in "
    "lowercase, such as example.com",
    r"^([A-Z]{2}[A-Z2-9]{3}|[A-Z]{4})$": "a UN/LOCODE (5 characters, such as JPNAH) or an ICAO "
    "location indicator (4 letters, such as RCYU)",
}


def pattern(regex: str) -> ValueTest:
    matcher = re.compile(regex).fullmatch
    words = PATTERN_WORDS.get(regex)

    def explain(value: str) -> str | None:
        if matcher(value) is not None:
            return None
        if words is None:
            return f"must match {regex}, got {echo(value)}"
        return f"must be {words}, got {echo(value)} (pattern {regex})"

    return ValueTest(matcher, explain)


def _is_ip(value: str, version: int) -> bool:
    """An address, or a network with its prefix length, in the text the spec defines.

    IPv4: dotted quad, four decimal octets 0..255 without leading zeros (RFC 791 text as
    RFC 6943 section 3.1.1 recommends). IPv6: RFC 5952 (section 4; and section 5's mixed
    notation `::ffff:a.b.c.d` for IPv4-mapped addresses), no zone. A network: the address with
    host bits zero, `/`, and the prefix length in decimal without leading zeros.
    """
    address, slash, prefix = value.partition("/")
    bits = 32 if version == 4 else 128
    if slash and not (prefix.isascii() and prefix.isdigit() and str(int(prefix)) == prefix):
        return False
    if slash and int(prefix) > bits:
        return False
    number: int
    if version == 4:
        if _IPV4.fullmatch(address) is None:
            return False
        number = int.from_bytes(bytes(int(octet) for octet in address.split(".")), "big")
    else:
        if "%" in address or not address.isascii():
            return False
        try:
            parsed = ipaddress.IPv6Address(address)
        except ValueError:
            return False
        if rfc5952_text(parsed) != address:
            return False
        number = int(parsed)
    return not slash or number & ((1 << (bits - int(prefix))) - 1) == 0


def rfc5952_text(address: ipaddress.IPv6Address) -> str:
    """The one text of an IPv6 address per RFC 5952: lower-case hextets without leading zeros,
    `::` for the first longest run of two or more zero hextets and for no other, and the mixed
    notation `::ffff:a.b.c.d` for an IPv4-mapped address (section 5)."""
    number = int(address)
    if number >> 32 == 0xFFFF:
        return "::ffff:" + str(ipaddress.IPv4Address(number & 0xFFFFFFFF))
    hextets = [(number >> (112 - 16 * i)) & 0xFFFF for i in range(8)]
    best_start, best_length, start, run = -1, 1, 0, 0
    for index, hextet in enumerate(hextets):
        if hextet:
            run = 0
            continue
        if run == 0:
            start = index
        run += 1
        if run > best_length:
            best_start, best_length = start, run
    text = [format(h, "x") for h in hextets]
    if best_start < 0:
        return ":".join(text)
    left = ":".join(text[:best_start])
    right = ":".join(text[best_start + best_length :])
    return f"{left}::{right}"


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4: Final = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_PREFIX4: Final = re.compile(r"3[0-2]|[12]?[0-9]")
_HEXTET: Final = re.compile(r"0|[1-9a-f][0-9a-f]{0,3}")
_PREFIX6: Final = re.compile(r"12[0-8]|1[01][0-9]|[1-9]?[0-9]")


def _quick_ipv4(value: str) -> bool:
    """A quick yes for an IPv4 address or network in the form the spec defines.

    `ipaddress` takes some 3 µs for an address: the common forms are settled here, anything
    else (a no included) is left to `_is_ip`.
    """
    address, slash, prefix = value.partition("/")
    if _IPV4.fullmatch(address) is None:
        return False
    if not slash:
        return True
    if _PREFIX4.fullmatch(prefix) is None:
        return False
    number = int.from_bytes(bytes(int(octet) for octet in address.split(".")), "big")
    return number & ((1 << (32 - int(prefix))) - 1) == 0  # no host bits: a network


def _quick_ipv6(value: str) -> bool:
    """A quick yes for an IPv6 address or network in RFC 5952 form.

    Lower-case hextets without leading zeros; `::` for the longest run of two or more zero
    hextets (the first, if two are as long), and for no other. Embedded IPv4 (`::ffff:1.2.3.4`),
    IPv4-mapped addresses and zones are left to `_is_ip`.
    """
    address, slash, prefix = value.partition("/")
    if slash and _PREFIX6.fullmatch(prefix) is None:
        return False
    head, gap_mark, tail = address.partition("::")
    left = head.split(":") if head else []
    right = tail.split(":") if tail else []
    gap = 8 - len(left) - len(right)
    if (gap_mark and gap < 2) or (not gap_mark and gap != 0):
        return False
    hextets = [*left, *("0" * gap), *right]
    if not all(_HEXTET.fullmatch(hextet) for hextet in hextets):
        return False
    # The first longest run of zero hextets, if two or more long, must be the `::` exactly.
    best_start, best_length, start, run = -1, 1, 0, 0
    for index, hextet in enumerate(hextets):
        if hextet != "0":
            run = 0
            continue
        if run == 0:
            start = index
        run += 1
        if run > best_length:
            best_start, best_length = start, run
    if gap_mark and (best_start, best_length) != (len(left), gap):
        return False
    if not gap_mark and best_start != -1:
        return False
    number = int("".join(hextet.rjust(4, "0") for hextet in hextets), 16)
    if number >> 32 == 0xFFFF:  # IPv4-mapped
        return False
    return not slash or number & ((1 << (128 - int(prefix))) - 1) == 0


# The `url` format, in the portable regex subset of common.proto (with the port's range the only
# check beyond it): RFC 3986 `scheme "://" authority path-abempty ["?" query] ["#" fragment]`,
# ASCII only (an IRI is written percent-encoded), with a non-empty host.
_UNRESERVED_OR_SUB = "A-Za-z0-9._~!$&'()*+,;="
_PCT = "%[0-9A-Fa-f]{2}"
URL_PATTERN: Final = (
    "^[A-Za-z][A-Za-z0-9+.-]*://"
    f"(([{_UNRESERVED_OR_SUB}:-]|{_PCT})*@)?"
    f"(([{_UNRESERVED_OR_SUB}-]|{_PCT})+|\\[[0-9A-Fa-f:.]+\\])"
    "(:[0-9]{1,5})?"
    f"(/([{_UNRESERVED_OR_SUB}:@-]|{_PCT})*)*"
    f"(\\?([{_UNRESERVED_OR_SUB}:@/?-]|{_PCT})*)?"
    f"(#([{_UNRESERVED_OR_SUB}:@/?-]|{_PCT})*)?$"
)
_URL: Final = re.compile(URL_PATTERN)


def _is_url(value: str) -> bool:
    """An absolute URL with a host, by URL_PATTERN; a port, if any, is 0..65535, and an IPv6
    literal host is an IPv6 address."""
    if _URL.fullmatch(value) is None:
        return False
    authority = value.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    host_port = authority.rsplit("@", 1)[-1]
    if host_port.startswith("["):
        literal, _, port = host_port[1:].partition("]")
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return False
        port = port.removeprefix(":")
    else:
        _, _, port = host_port.partition(":")
    return not port or int(port) <= 65535


# A format's quick yes, its test, and the description of a value that fails it.
FORMATS: Final[Mapping[str, tuple[Callable[[str], bool], Callable[[str], bool], str]]] = {
    "ipv4": (
        _quick_ipv4,
        lambda v: _is_ip(v, 4),
        "must be an IPv4 address or network in canonical form (192.0.2.7, 198.51.100.0/24)",
    ),
    "ipv6": (
        _quick_ipv6,
        lambda v: _is_ip(v, 6),
        "must be an IPv6 address or network in canonical RFC 5952 form (2001:db8::1, 2001:db8::/32)",
    ),
    "url": (_is_url, _is_url, "must be an absolute URL with a scheme and a host"),
}


def format_(name: str) -> ValueTest:
    quick, test, what = FORMATS[name]

    def explain(value: str) -> str | None:
        if test(value):
            return None
        return f"{what}, got {echo(value)}"

    return ValueTest(quick, explain)


def one_of(values: tuple[str, ...]) -> ValueTest:
    allowed = frozenset(values)
    shown = ", ".join(f'"{v}"' for v in values)

    def explain(value: str) -> str | None:
        if value in allowed:
            return None
        return f"must be one of {shown}, got {echo(value)}"

    return ValueTest(allowed.__contains__, explain, _member_of(allowed))


def duration_range(low_ns: int, high_ns: int, high_open: bool, text: str) -> ValueTest:
    what = f"must be in {text}"

    def explain(value: Any) -> str | None:
        if not duration_ok(value):
            return None  # reported by the built-in check
        ns = value.seconds * NANOS + value.nanos
        if ns < low_ns or ns > high_ns or (high_open and ns == high_ns):
            return f"{what}, got {format_duration(value)}"
        return None

    return ValueTest(lambda value: explain(value) is None, explain)


def int_range(low: int, high: int, high_open: bool, text: str) -> ValueTest:
    what = f"must be in {text}"

    def explain(value: int) -> str | None:
        if value < low or value > high or (high_open and value == high):
            return f"{what}, got {value}"
        return None

    accept = range(low, high if high_open else high + 1).__contains__
    return ValueTest(accept, explain, _between(low, high, high_open), bounded=True)


def float_range(low: float, high: float, high_open: bool, text: str) -> ValueTest:
    what = f"must be in {text}"

    def explain(value: float) -> str | None:
        if low <= value <= high and not (high_open and value == high):
            return None
        if math.isfinite(value):  # NaN and infinities are reported by the built-in check
            return f"{what}, got {value!r}"
        return None

    quick = _between(low, high, high_open)
    if high_open:
        return ValueTest(lambda value: low <= value < high, explain, quick, bounded=True)
    return ValueTest(lambda value: low <= value <= high, explain, quick, bounded=True)


def _member_of(members: frozenset[Any]) -> Callable[[str, Bind], str]:
    return lambda v, bind: f"{v} in {bind(members, 'members')}"


def _between(low: float, high: float, high_open: bool) -> Callable[[str, Bind], str]:
    # repr() of an int or a finite float is a Python literal of the same value.
    return lambda v, _bind: f"{low!r} <= {v} {'<' if high_open else '<='} {high!r}"


def quick_tests(tests: tuple[ValueTest, ...]) -> tuple[ValueTest, ...]:
    """The tests whose quick yes is needed: a range (of finite bounds) makes `FINITE`'s idle."""
    if any(t.bounded for t in tests):
        return tuple(t for t in tests if t is not FINITE)
    return tests


def accepting(tests: tuple[ValueTest, ...]) -> Callable[[Any], object]:
    """One quick yes for all of a field's tests, for the items of a repeated field."""
    accepts = [t.accept for t in quick_tests(tests)]
    if len(accepts) == 1:
        return accepts[0]
    return lambda value: all(accept(value) for accept in accepts)


def explaining(tests: tuple[ValueTest, ...]) -> Callable[[Any, str, Out], None]:
    """Run every test on a value the quick yes refused: each violation, in the tests' order."""
    explains = tuple(t.explain for t in tests)

    def explain(value: Any, path: str, out: Out) -> None:
        for test in explains:
            problem = test(value)
            if problem is not None:
                out.append(Violation(path, problem))

    return explain


def explaining_items(tests: tuple[ValueTest, ...]) -> Callable[[list[Any], str, Out], None]:
    """`explaining` for the items of a repeated field (`path` names the field)."""
    accept, explain = accepting(tests), explaining(tests)

    def explain_items(items: list[Any], path: str, out: Out) -> None:
        for index, item in enumerate(items):
            if not accept(item):
                explain(item, f"{path}[{index}]", out)

    return explain_items


# ---------------------------------------------------------------------------------------------
# Tests of a repeated field as a whole
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemsTest:
    """A test of a repeated field as a whole: `run(items, prefix, out)` reports what it finds
    (`items` a list); `quick(items, bind)`, an expression that is true only if it finds
    nothing. A test of one field of the items (`key`) may rather have the list of its values,
    collected as the items are checked: `keyed(keys, bind)`."""

    run: Callable[[list[Any], str, Out], None]
    quick: Callable[[str, Bind], str]
    key: str | None = None
    keyed: Callable[[str, Bind], str] | None = None


def item_count(name: str, low: int, high: int) -> ItemsTest:
    what = f"must have {span(low, high)} items"

    def item_count_(items: list[Any], prefix: str, out: Out) -> None:
        n = len(items)
        if n < low or n > high:
            out.append(Violation(prefix + name, f"{what}, got {n}"))

    return ItemsTest(item_count_, lambda v, _bind: f"{low} <= len({v}) <= {high}")


def unique(name: str) -> ItemsTest:
    def unique_(items: list[Any], prefix: str, out: Out) -> None:
        first: dict[Any, int] = {}
        for index, item in enumerate(items):
            earlier = first.setdefault(item, index)
            if earlier != index:
                out.append(
                    Violation(
                        f"{prefix}{name}[{index}]", f"must be unique, same as {name}[{earlier}]"
                    )
                )

    return ItemsTest(unique_, lambda v, _bind: f"len({v}) == 1 or len(set({v})) == len({v})")


def unique_by(name: str, by: str) -> ItemsTest:
    def unique_by_(items: list[Any], prefix: str, out: Out) -> None:
        first: dict[Any, int] = {}
        for index, key in enumerate(getattr(item, by) for item in items):
            earlier = first.setdefault(key, index)
            if earlier != index:
                out.append(
                    Violation(
                        f"{prefix}{name}[{index}].{by}",
                        f"must be unique in {name}, same as {name}[{earlier}].{by}",
                    )
                )

    key = attribute("item", by)
    return ItemsTest(
        unique_by_,
        lambda v, _bind: f"len({v}) == 1 or len({{{key} for item in {v}}}) == len({v})",
        by,
        lambda keys, _bind: f"len(set({keys})) == len({keys})",
    )
