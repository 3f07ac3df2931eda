"""The quick yes of each value test never says yes to a value its test refuses.

The generated checks of `hotline.validation` test a value with its tests' quick yes (inline
expressions, a bound `fullmatch`, the IP address shortcuts) and explain it only when that says
no, so a quick yes that accepts a bad value would hide a violation. These properties hold each
quick yes to its test.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from hotline.v1 import common_pb2
from hotline.validation import _values as values

IP_TEXT = st.text(alphabet="0123456789abcdefABCDEF:./%", max_size=45)
IPV4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
# Zero hextets are what RFC 5952 form is about: draw many.
HEXTET = st.one_of(st.just(0), st.integers(0, 0xFFFF))
IPV6 = st.builds(
    lambda hextets: ipaddress.IPv6Address(sum(h << (16 * i) for i, h in enumerate(hextets))),
    st.lists(HEXTET, min_size=8, max_size=8),
)


def _written(address: Any, prefix: int | None, strict: bool) -> str:
    if prefix is None:
        return str(address)
    if strict:
        return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
    return f"{address}/{prefix}"


@settings(max_examples=2000, deadline=None)
@given(st.one_of(IP_TEXT, IPV4.map(str), IPV6.map(str)))
def test_the_ip_shortcuts_accept_only_what_ipaddress_prints(value: str) -> None:
    if values._quick_ipv4(value):
        assert values._is_ip(value, 4)
    if values._quick_ipv6(value):
        assert values._is_ip(value, 6)


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(IPV4, IPV6),
    st.one_of(st.none(), st.integers(0, 128)),
    st.booleans(),
)
def test_the_ip_shortcuts_settle_canonical_addresses_and_networks(
    address: Any, prefix: int | None, strict: bool
) -> None:
    if prefix is not None and prefix > address.max_prefixlen:
        prefix = address.max_prefixlen
    value = _written(address, prefix, strict)
    quick = values._quick_ipv4 if address.version == 4 else values._quick_ipv6
    canonical = values._is_ip(value, address.version)
    if address.version == 6 and address.ipv4_mapped is not None:
        assert not quick(value)  # left to ipaddress, which newer Pythons print differently
    else:
        assert bool(quick(value)) == canonical


def _holds(test: values.ValueTest, value: Any) -> None:
    """The quick yes, as a callable and as an expression, implies the test finds nothing."""
    namespace: dict[str, Any] = {}

    def bind(obj: object, hint: str) -> str:
        name = f"{hint}_{len(namespace)}"
        namespace[name] = obj
        return name

    accepted = bool(test.accept(value))
    if test.quick is not None:
        namespace["value"] = value
        assert bool(eval(test.quick("value", bind), namespace)) == accepted
    if accepted:
        assert test.explain(value) is None


@given(st.text(max_size=12) | st.binary(max_size=12))
def test_a_length_accepts_only_lengths_in_range(value: str | bytes) -> None:
    _holds(values.length(2, 8, "chars"), value)


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabc\n ", max_size=10))
def test_a_pattern_accepts_only_full_matches(value: str) -> None:
    _holds(values.pattern("^[A-Z]{2,8}$"), value)


@given(st.integers(-(2**65), 2**65))
def test_an_integer_range_accepts_only_integers_in_range(value: int) -> None:
    _holds(values.int_range(1, 2**64 - 1, False, "1..18446744073709551615"), value)
    _holds(values.int_range(0, 360, True, "0..<360"), value)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_float_range_accepts_only_finite_numbers_in_range(value: float) -> None:
    for test in (
        values.float_range(-180.0, 180.0, True, "-180.0..<180.0"),
        values.float_range(0.0, 100000.0, False, "0.0..100000.0"),
    ):
        _holds(test, value)
        # Its quick yes stands for the finiteness test's too.
        if test.accept(value):
            assert math.isfinite(value)


@given(st.integers(-5, 20))
def test_an_enum_accepts_only_declared_values_and_an_item_never_the_zero(value: int) -> None:
    enum = common_pb2.Precedence.DESCRIPTOR
    _holds(values.enum_declared(enum, item=False), value)
    _holds(values.enum_declared(enum, item=True), value)


@given(st.integers(-(2**40), 2**40), st.integers(-(10**10), 10**10))
def test_a_timestamp_accepts_only_the_range_of_its_well_known_type(
    seconds: int, nanos: int
) -> None:
    timestamp = Timestamp()
    try:
        timestamp.seconds, timestamp.nanos = seconds, nanos
    except ValueError:  # out of the fields' own ranges
        return
    _holds(values.VALID_TIMESTAMP, timestamp)
