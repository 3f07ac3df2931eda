"""Property tests: whatever arrives, validation answers and never raises.

A receiver calls `decode_envelope` on every payload from the peer and `validate` on everything it
is sent, so neither may raise on any input: arbitrary bytes, valid bytes with a few changed, or
structurally well-typed messages holding hostile values (NaN, infinities, extreme integers,
unknown enum numbers, unusual Unicode, out-of-range timestamps).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotline import constraints
from hotline.errors import Violation
from hotline.v1 import envelope_pb2
from hotline.validation import SPEC_FILES, decode_envelope, validate, validate_envelope

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
EXAMPLES = Path(__file__).resolve().parents[2] / "proto" / "examples"
EXAMPLE_BYTES = [
    text_format.Parse(p.read_text(encoding="utf-8"), envelope_pb2.Envelope()).SerializeToString()
    for p in sorted([*EXAMPLES.glob("valid/*.txtpb"), *EXAMPLES.glob("invalid/*.txtpb")])
]
FIELD_PATH = re.compile(
    constraints.FIELDS["hotline.v1.FieldViolation.field"].split("pattern ", 1)[1]
)
MAX_DEPTH = 7
_F = FieldDescriptor

# Strings that the constraints care about, plus hostile ones: empty, whitespace, right-to-left
# and zero-width marks, combining characters, astral characters, NUL, and very long.
SPECIAL_STRINGS = [
    "",
    " ",
    "JP",
    "TW",
    "jp",
    "ja",
    "zh-Hant",
    "019761ea-75c8-7fb2-ab76-ed9bda034b19",
    "019761EA-75C8-7FB2-AB76-ED9BDA034B19",
    "spiffe://jp.hotline/operator/watch-1",
    "192.0.2.7",
    "198.51.100.7/24",
    "2001:db8::1",
    "https://example.net/x",
    "http://[::1",
    "CVE-2024-3400",
    "a" * 64,
    "\u202etxet\u202c",
    "\u200b\u200d\ufeff",
    "e\u0301" * 50,
    "🌊" * 10,
    "\x00",
    "line\nbreak",
    "波" * 4001,
    "x" * 70_000,
]
TEXT = st.one_of(
    st.sampled_from(SPECIAL_STRINGS),
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40),
)
INT_RANGES = {
    _F.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    _F.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    _F.CPPTYPE_UINT32: (0, 2**32 - 1),
    _F.CPPTYPE_UINT64: (0, 2**64 - 1),
}


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.sampled_from([low, high, 0, 1, -1 if low < 0 else 2]), st.integers(low, high)
    )


def _scalar(fd: FieldDescriptor) -> st.SearchStrategy[Any]:
    if fd.enum_type is not None:
        declared = sorted(fd.enum_type.values_by_number)
        return st.one_of(st.sampled_from(declared), _integers(-(2**31), 2**31 - 1))
    if fd.cpp_type in INT_RANGES:
        return _integers(*INT_RANGES[fd.cpp_type])
    if fd.cpp_type == _F.CPPTYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if fd.cpp_type == _F.CPPTYPE_FLOAT:
        return st.floats(allow_nan=True, allow_infinity=True, width=32)
    if fd.cpp_type == _F.CPPTYPE_BOOL:
        return st.booleans()
    if fd.type == _F.TYPE_BYTES:
        return st.one_of(st.binary(max_size=80), st.just(bytes(64)), st.just(bytes(32)))
    return TEXT


def _is_real_oneof_member(fd: FieldDescriptor) -> bool:
    oneof = fd.containing_oneof
    # A proto3 `optional` field sits in a synthetic oneof of its own, named `_<field>`.
    return oneof is not None and oneof.name != f"_{fd.name}"


@st.composite
def messages(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> Message:
    """A message of this type with arbitrary, often hostile, field values."""
    message = GetMessageClass(descriptor)()
    chosen_members = {}
    for oneof in descriptor.oneofs:
        if oneof.name.startswith("_") and len(oneof.fields) == 1:
            continue
        chosen_members[oneof.name] = draw(st.sampled_from([None, *(f.name for f in oneof.fields)]))
    for fd in descriptor.fields:
        if _is_real_oneof_member(fd):
            assert fd.containing_oneof is not None
            if chosen_members[fd.containing_oneof.name] != fd.name:
                continue
        elif not draw(st.booleans()):
            continue
        if fd.message_type is not None:
            if depth >= MAX_DEPTH:
                continue
            sub = messages(fd.message_type, depth + 1)
            if fd.is_repeated:
                container = getattr(message, fd.name)
                for item in draw(st.lists(sub, max_size=3)):
                    container.add().CopyFrom(item)
            else:
                getattr(message, fd.name).CopyFrom(draw(sub))
        elif fd.is_repeated:
            getattr(message, fd.name).extend(draw(st.lists(_scalar(fd), max_size=4)))
        else:
            setattr(message, fd.name, draw(_scalar(fd)))
    return message


ALL_DESCRIPTORS = [d for f in SPEC_FILES for d in f.message_types_by_name.values()]


def assert_well_formed(violations: list[Violation]) -> None:
    for violation in violations:
        assert isinstance(violation, Violation)
        assert FIELD_PATH.fullmatch(violation.field), violation
        assert 1 <= len(violation.description) <= 512, violation


@SETTINGS
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_decode_to_an_envelope_or_violations(data: bytes) -> None:
    envelope, violations = decode_envelope(data)
    if envelope is None:
        assert len(violations) == 1
        assert violations[0].field == ""
        assert violations[0].description.startswith("envelope bytes do not parse")
    else:
        assert violations == validate_envelope(envelope)
        assert_well_formed(violations)


@SETTINGS
@given(st.sampled_from(EXAMPLE_BYTES), st.data())
def test_corrupted_envelope_bytes_decode_to_an_envelope_or_violations(
    original: bytes, data: st.DataObject
) -> None:
    corrupted = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(corrupted) - 1))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "flip":
            corrupted[position] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "insert":
            corrupted.insert(position, data.draw(st.integers(0, 255)))
        elif len(corrupted) > 1:
            del corrupted[position]
    envelope, violations = decode_envelope(bytes(corrupted))
    assert envelope is not None or violations
    if envelope is not None:
        assert violations == validate_envelope(envelope)


@SETTINGS
@given(messages(envelope_pb2.Envelope.DESCRIPTOR), st.booleans())
def test_arbitrary_envelopes_validate_without_raising(
    envelope: envelope_pb2.Envelope, filled: bool
) -> None:
    violations = validate_envelope(envelope, filled=filled)
    assert_well_formed(violations)
    # Deterministic, and the same after a trip over the wire.
    assert validate_envelope(envelope, filled=filled) == violations
    again = envelope_pb2.Envelope.FromString(envelope.SerializeToString())
    assert validate_envelope(again, filled=filled) == violations


@SETTINGS
@given(st.sampled_from(ALL_DESCRIPTORS).flatmap(messages))
def test_arbitrary_messages_of_every_type_validate_without_raising(message: Message) -> None:
    assert_well_formed(validate(message))
    assert_well_formed(validate(message, filled=False, prefix="request"))
