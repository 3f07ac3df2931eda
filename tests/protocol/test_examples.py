"""The golden examples of `proto/examples/` as conformance vectors for `hotline.validation`.

A valid example must produce no violation; an invalid one exactly the violations its
`# expect: <field path>: <description substring>` lines state (see proto/examples/README.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import text_format

from hotline import constraints
from hotline.errors import Violation
from hotline.v1 import envelope_pb2
from hotline.validation import decode_envelope, validate_envelope

EXAMPLES = Path(__file__).resolve().parents[2] / "proto" / "examples"
VALID = sorted((EXAMPLES / "valid").glob("*.txtpb"))
INVALID = sorted((EXAMPLES / "invalid").glob("*.txtpb"))
BODY_MEMBERS = [fd.name for fd in envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"].fields]
HEADER = "# proto-file: hotline/v1/envelope.proto\n# proto-message: hotline.v1.Envelope\n"
# The pattern of `FieldViolation.field`, taken from the specification itself.
FIELD_PATH = re.compile(
    constraints.FIELDS["hotline.v1.FieldViolation.field"].split("pattern ", 1)[1]
)


def load(path: Path) -> envelope_pb2.Envelope:
    return text_format.Parse(path.read_text(encoding="utf-8"), envelope_pb2.Envelope())


def expectations(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for line in lines:
        if line.startswith("# expect: "):
            field, _, substring = line.removeprefix("# expect: ").partition(": ")
            found.append((field, substring))
    return found


def unmatched(
    expected: list[tuple[str, str]], actual: list[Violation]
) -> tuple[list[tuple[str, str]], list[Violation]]:
    """Pair each expectation with a different violation; return what is left on both sides."""
    remaining = list(actual)
    missing = []
    for field, substring in expected:
        hit = next((v for v in remaining if v.field == field and substring in v.description), None)
        if hit is None:
            missing.append((field, substring))
        else:
            remaining.remove(hit)
    return missing, remaining


def test_there_are_valid_and_invalid_examples() -> None:
    assert len(VALID) >= len(BODY_MEMBERS)
    assert len(INVALID) >= len(BODY_MEMBERS)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_example_has_no_violations(path: Path) -> None:
    assert validate_envelope(load(path)) == []


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_example_decodes_from_its_wire_bytes(path: Path) -> None:
    envelope = load(path)
    decoded, violations = decode_envelope(envelope.SerializeToString())
    assert violations == []
    assert decoded == envelope


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
@pytest.mark.must("VAL-1", "VAL-3", "VAL-4", "VAL-5")
def test_invalid_example_reports_exactly_the_expected_violations(path: Path) -> None:
    expected = expectations(path)
    assert expected, f"{path.name} states no `# expect:` line"
    actual = validate_envelope(load(path))
    missing, extra = unmatched(expected, actual)
    assert (missing, extra) == ([], []), (
        f"{path.name}: expected but not reported: {missing}; reported but not expected: "
        f"{[str(v) for v in extra]}"
    )


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_example_is_refused_from_its_wire_bytes(path: Path) -> None:
    envelope, violations = decode_envelope(load(path).SerializeToString())
    assert envelope is not None
    assert violations == validate_envelope(envelope) != []


@pytest.mark.parametrize("member", BODY_MEMBERS)
def test_every_body_type_has_a_valid_example(member: str) -> None:
    path = EXAMPLES / "valid" / f"{member}.txtpb"
    assert path.is_file(), f"missing valid/{member}.txtpb"
    assert load(path).WhichOneof("body") == member


@pytest.mark.parametrize("member", BODY_MEMBERS)
def test_every_body_type_has_an_invalid_example(member: str) -> None:
    paths = [p for p in INVALID if p.stem.startswith(member + "_")]
    assert paths, f"no invalid/{member}_*.txtpb"
    assert all(load(p).WhichOneof("body") == member for p in paths)


@pytest.mark.parametrize("path", VALID + INVALID, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_example_names_its_message_type(path: Path) -> None:
    assert path.read_text(encoding="utf-8").startswith(HEADER)


def test_valid_examples_travel_between_the_two_parties() -> None:
    for path in VALID:
        envelope = load(path)
        assert {envelope.sender_party, envelope.recipient_party} == {"JP", "TW"}, path.name


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_reported_violations_fit_in_a_field_violation(path: Path) -> None:
    # The gateway returns these on the peer link as FieldViolation: path pattern, 1..512 chars.
    for violation in validate_envelope(load(path)):
        assert FIELD_PATH.fullmatch(violation.field), violation
        assert 1 <= len(violation.description) <= 512, violation
