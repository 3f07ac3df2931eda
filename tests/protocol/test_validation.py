"""Unit tests of `hotline.validation`: the grammar, the table check, and each kind of constraint."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from google.protobuf import text_format
from google.protobuf.timestamp_pb2 import Timestamp

from hotline import constraints
from hotline.errors import ValidationError, Violation
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2, peer_link_pb2
from hotline.validation import (
    AtLeastOne,
    AtMostOne,
    Compare,
    Condition,
    ConstraintSyntaxError,
    Contains,
    Each,
    ExactlyOne,
    FieldConstraints,
    Format,
    Length,
    Multiline,
    OneOf,
    PathClause,
    Pattern,
    Range,
    Unique,
    check_constraint_table,
    check_envelope,
    decode_envelope,
    parse_field_constraints,
    parse_message_constraints,
    validate,
    validate_envelope,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "proto" / "examples" / "valid"
ENVELOPE_TYPE = "application/vnd.hotline.v1.Envelope+protobuf"


def example(name: str) -> envelope_pb2.Envelope:
    text = (EXAMPLES / f"{name}.txtpb").read_text(encoding="utf-8")
    return text_format.Parse(text, envelope_pb2.Envelope())


@pytest.fixture
def encounter() -> envelope_pb2.Envelope:
    return example("maritime_encounter")


def paths(violations: list[Violation]) -> list[str]:
    return [v.field for v in violations]


def only(violations: list[Violation], field: str) -> str:
    """The description of the one violation, which must be at `field`."""
    assert paths(violations) == [field], violations
    return violations[0].description


# ---------------------------------------------------------------------------------------------
# The grammar
# ---------------------------------------------------------------------------------------------


def test_field_constraints_parse_into_presence_and_clauses() -> None:
    parsed = parse_field_constraints("required; filled by gateway; 1..256 chars; pattern ^a b$")
    assert parsed.presence == "required"
    assert parsed.filled_by_gateway
    assert parsed.clauses[0] == Length("chars", 1, 256)
    assert parsed.clauses[1] == Pattern("^a b$")
    # "; " ends a clause, so a pattern never contains it.
    with pytest.raises(ConstraintSyntaxError):
        parse_field_constraints("required; pattern ^a; b$")


def test_required_if_clauses_are_alternatives() -> None:
    parsed = parse_field_constraints(
        "required if action is ACTION_UPDATE or ACTION_CANCEL; required if body is acknowledgement; "
        "1..16 items; unique; each pattern ^[0-9a-f]+$"
    )
    assert parsed == FieldConstraints(
        "required if",
        (
            Condition("action", "is", ("ACTION_UPDATE", "ACTION_CANCEL")),
            Condition("body", "is", ("acknowledgement",)),
        ),
        False,
        (Length("items", 1, 16), Unique(None), Each(Pattern("^[0-9a-f]+$"))),
    )


def test_ranges_parse_exclusive_bounds_and_seconds() -> None:
    assert parse_field_constraints("required; 0.0..<360.0").clauses == (
        Range(Decimal("0.0"), Decimal("360.0"), True, False, "0.0..<360.0"),
    )
    assert parse_field_constraints("optional; -86400s..86400s").clauses == (
        Range(Decimal(-86400), Decimal(86400), False, True, "-86400s..86400s"),
    )


def test_exact_bytes_one_of_format_and_unique_by_parse() -> None:
    assert parse_field_constraints("required; 64 bytes").clauses == (Length("bytes", 64, 64),)
    assert parse_field_constraints('required; one of "a b", "c"').clauses == (OneOf(("a b", "c")),)
    assert parse_field_constraints("required; format ipv6").clauses == (Format("ipv6"),)
    assert parse_field_constraints("optional; unique by language").clauses == (Unique("language"),)


def test_message_rules_parse_into_rule_objects() -> None:
    rules = parse_message_constraints(
        "exactly one of body; recipient_party != sender_party; handling.releasable_to contains "
        "sender_party; at least one of phone, email; at most one variants with kind is "
        "TRANSLATION_KIND_ORIGINAL; window.end_time required; if type is INDICATOR_TYPE_IPV4: "
        "value format ipv4"
    )
    assert [r.rule for r in rules] == [
        ExactlyOne("body"),
        Compare("recipient_party", "!=", "sender_party"),
        Contains("handling.releasable_to", "sender_party"),
        AtLeastOne(("phone", "email")),
        AtMostOne("variants", "kind", "TRANSLATION_KIND_ORIGINAL"),
        PathClause("window.end_time", True, None),
        PathClause("value", False, Format("ipv4")),
    ]
    assert rules[-1].condition == Condition("type", "is", ("INDICATOR_TYPE_IPV4",))
    assert parse_message_constraints("") == ()


@pytest.mark.parametrize(
    "line",
    [
        "",
        "mandatory",
        "optional; filled by gateway",
        "required; 5..1 chars",
        "required; 1..5 words",
        "required; pattern [unclosed",
        "required; format email",
        "required; each unique",
        "required; each 1..3 items",
        "required; 1s..5",
        "required; 3..<3",
        "required; required",
        "required; unique by Language",
        "required if action = ACTION_NEW",
    ],
)
def test_field_constraints_that_break_the_grammar_are_refused(line: str) -> None:
    with pytest.raises(ConstraintSyntaxError):
        parse_field_constraints(line)


@pytest.mark.parametrize(
    "line",
    [
        "if type is A value format ipv4",
        "at most one variants with kind",
        "recipient_party",
        "Recipient_party != sender_party",
        "a contains",
        "a =",
        "at least one of a, B",
        "exactly one of a.b",
    ],
)
def test_message_rules_that_break_the_grammar_are_refused(line: str) -> None:
    with pytest.raises(ConstraintSyntaxError):
        parse_message_constraints(line)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def test_the_committed_table_compiles_against_the_descriptors() -> None:
    assert check_constraint_table(constraints.FIELDS, constraints.MESSAGES) == []


@pytest.mark.parametrize(
    ("key", "line", "problem"),
    [
        (
            "hotline.v1.Envelope.references",
            "required if action is ACTION_REPLACE",
            "ACTION_REPLACE",
        ),
        ("hotline.v1.Envelope.references", "required if bodies is acknowledgement", "no field"),
        ("hotline.v1.Envelope.references", "required if body is ack", "no member"),
        ("hotline.v1.AltitudeBand.lower_ft", "required; 0..10 chars", "not a string"),
        ("hotline.v1.AltitudeBand.lower_ft", "required; 0.5..10", "integer field"),
        ("hotline.v1.Position.latitude_deg", "required; 0s..1s", "not a Duration"),
        ("hotline.v1.LocalizedText.variants", "required; unique", "unique by"),
        ("hotline.v1.HandlingMarking.releasable_to", "required; 1..3 chars", "use `each`"),
        ("hotline.v1.HandlingMarking.caveat", "optional; 1..3 items", "singular"),
        ("hotline.v1.LocalizedText.variants", "required; unique by lang", "no field"),
        ("hotline.v1.Position.latitude_deg", "required; multiline", "not a string"),
    ],
)
def test_a_field_line_that_names_the_wrong_thing_is_reported(
    key: str, line: str, problem: str
) -> None:
    fields = dict(constraints.FIELDS)
    fields[key] = line
    errors = check_constraint_table(fields, constraints.MESSAGES)
    assert len(errors) == 1
    assert key in errors[0]
    assert problem in errors[0]


@pytest.mark.parametrize(
    ("key", "line", "problem"),
    [
        ("hotline.v1.Envelope", "exactly one of bodies", "no oneof"),
        ("hotline.v1.Envelope", "handling > sender_party", "message field"),
        ("hotline.v1.Envelope", "language > sender_party", "no order"),
        ("hotline.v1.Envelope", "action = ACTION_OLD", "ACTION_OLD"),
        ("hotline.v1.Envelope", "status = precedence", "cannot compare"),
        ("hotline.v1.Envelope", "references contains status", "item type"),
        ("hotline.v1.Envelope", "envelope.action = ACTION_NEW", "'envelope' is not"),
        ("hotline.v1.Envelope", "expire_time > 5", "no literals"),
        ("hotline.v1.TimeWindow", "end_time.second required", "no field 'second'"),
        ("hotline.v1.Polygon", "vertices.latitude_deg required", "singular message field"),
        ("hotline.v1.NoSuchMessage", "exactly one of x", "names no message"),
    ],
)
def test_a_message_line_that_names_the_wrong_thing_is_reported(
    key: str, line: str, problem: str
) -> None:
    messages = dict(constraints.MESSAGES)
    messages[key] = line
    errors = check_constraint_table(constraints.FIELDS, messages)
    assert len(errors) == 1
    assert problem in errors[0]


def test_a_field_without_constraints_or_a_stale_entry_is_reported() -> None:
    fields = dict(constraints.FIELDS)
    del fields["hotline.v1.Envelope.language"]
    fields["hotline.v1.Envelope.colour"] = "optional"
    errors = check_constraint_table(fields, constraints.MESSAGES)
    assert any("hotline.v1.Envelope.language: no Constraints line" in e for e in errors)
    assert any("hotline.v1.Envelope.colour: names no field" in e for e in errors)


# ---------------------------------------------------------------------------------------------
# Presence
# ---------------------------------------------------------------------------------------------


def test_required_fields_of_each_kind_are_reported_missing(
    encounter: envelope_pb2.Envelope,
) -> None:
    encounter.recipient_party = ""
    encounter.ClearField("handling")
    encounter.status = common_pb2.MESSAGE_STATUS_UNSPECIFIED
    del encounter.maritime_encounter.contacts[:]
    violations = validate_envelope(encounter)
    assert [str(v) for v in violations] == [
        "recipient_party: required: must not be empty",
        "status: required: must not be MESSAGE_STATUS_UNSPECIFIED",
        "handling: required: must be set",
        "maritime_encounter.contacts: required: must have at least one item",
    ]


def test_a_required_number_is_checked_at_zero() -> None:
    link_test = example("link_test")
    link_test.link_test.test_number = 0
    assert only(validate_envelope(link_test), "link_test.test_number") == (
        "must be in 1..18446744073709551615, got 0"
    )
    # Zero is a meaningful value where the range allows it.
    hello = peer_link_pb2.Hello(
        protocol_version=3,
        party="JP",
        last_receipted_sequence=0,
        nonce=b"n" * 16,
        lane=common_pb2.PRECEDENCE_ROUTINE,
    )
    hello.signing_certificates.append(b"\x30\x82")
    assert validate(hello) == []


def test_an_optional_number_at_zero_is_absent_and_otherwise_ranged() -> None:
    assert validate(operator_pb2.ListMessagesRequest(page_size=0)) == []
    assert only(validate(operator_pb2.ListMessagesRequest(page_size=-1)), "page_size") == (
        "must be in 1..1000, got -1"
    )
    assert only(validate(operator_pb2.ListMessagesRequest(page_size=1001)), "page_size") == (
        "must be in 1..1000, got 1001"
    )


def test_an_optional_empty_string_skips_its_clauses(encounter: envelope_pb2.Envelope) -> None:
    encounter.handling.caveat = ""
    assert validate_envelope(encounter) == []


def test_an_explicit_presence_scalar_is_checked_when_set_even_at_zero() -> None:
    report = example("air_incident")
    report.air_incident.kind = bodies_pb2.AIR_INCIDENT_KIND_UNSAFE_PROXIMITY
    report.air_incident.closest_approach_m = 0.0
    assert validate_envelope(report) == []
    report.air_incident.closest_approach_m = -1.0
    assert only(validate_envelope(report), "air_incident.closest_approach_m") == (
        "must be in 0.0..100000.0, got -1.0"
    )


def test_fields_filled_by_the_gateway_may_be_empty_at_send_time(
    encounter: envelope_pb2.Envelope,
) -> None:
    for name in ("message_id", "sender_party", "originator", "create_time"):
        encounter.ClearField(name)
    assert validate_envelope(encounter, filled=False) == []
    assert paths(validate_envelope(encounter)) == [
        "message_id",
        "sender_party",
        "originator",
        "create_time",
    ]


def test_a_field_filled_by_the_gateway_is_still_checked_when_set(
    encounter: envelope_pb2.Envelope,
) -> None:
    encounter.message_id = "not-a-uuid"
    assert paths(validate_envelope(encounter, filled=False)) == ["message_id"]


def test_an_acknowledgement_is_refused_at_send_time_only() -> None:
    ack = example("acknowledgement")
    assert validate_envelope(ack) == []
    assert "Acknowledge" in only(validate_envelope(ack, filled=False), "acknowledgement")


def test_required_if_on_an_enum_value() -> None:
    call = example("call_request")
    call.call_request.urgency = bodies_pb2.CALL_URGENCY_SCHEDULED
    assert only(validate_envelope(call), "call_request.proposed_time") == (
        "required when urgency is CALL_URGENCY_SCHEDULED: must be set"
    )
    call.call_request.proposed_time.seconds = 1751022000
    assert validate_envelope(call) == []


def test_required_if_on_a_oneof_member() -> None:
    ack = example("acknowledgement")
    del ack.references[:]
    assert only(validate_envelope(ack), "references") == (
        "required when body is acknowledgement: must have at least one item"
    )


def test_required_if_on_a_repeated_enum() -> None:
    notice = example("manoeuvre_notice")
    notice.manoeuvre_notice.ClearField("intended_kinematics")
    assert paths(validate_envelope(notice)) == ["manoeuvre_notice.intended_kinematics"]
    del notice.manoeuvre_notice.signals[0]  # no more course alteration
    assert validate_envelope(notice) == []


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("latitude", "longitude", "bad"),
    [
        (90.0, -180.0, None),
        (-90.0, 179.999999, None),
        (90.000001, 0.0, "latitude_deg"),
        (0.0, 180.0, "longitude_deg"),
        (0.0, -180.000001, "longitude_deg"),
    ],
)
def test_numeric_ranges_are_inclusive_unless_written_open(
    encounter: envelope_pb2.Envelope, latitude: float, longitude: float, bad: str | None
) -> None:
    position = encounter.maritime_encounter.reporting_position
    position.latitude_deg, position.longitude_deg = latitude, longitude
    expected = [] if bad is None else [f"maritime_encounter.reporting_position.{bad}"]
    assert paths(validate_envelope(encounter)) == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_doubles_are_violations(encounter: envelope_pb2.Envelope, value: float) -> None:
    encounter.maritime_encounter.reporting_kinematics.speed_kn = value
    description = only(
        validate_envelope(encounter), "maritime_encounter.reporting_kinematics.speed_kn"
    )
    assert description.startswith("must be a finite number, got")


def test_the_largest_unsigned_integers_are_in_range() -> None:
    link_test = example("link_test")
    link_test.link_test.test_number = 2**64 - 1
    assert validate_envelope(link_test) == []


def test_duration_ranges_compare_to_the_nanosecond(encounter: envelope_pb2.Envelope) -> None:
    encounter.maritime_encounter.tcpa.seconds = -86400
    assert validate_envelope(encounter) == []
    encounter.maritime_encounter.tcpa.seconds, encounter.maritime_encounter.tcpa.nanos = 86400, 1
    assert only(validate_envelope(encounter), "maritime_encounter.tcpa") == (
        "must be in -86400s..86400s, got 86400.000000001s"
    )


def test_malformed_well_known_types_are_violations(encounter: envelope_pb2.Envelope) -> None:
    encounter.maritime_encounter.tcpa.seconds, encounter.maritime_encounter.tcpa.nanos = 5, -1
    encounter.create_time.nanos = -5
    assert paths(validate_envelope(encounter)) == ["create_time", "maritime_encounter.tcpa"]


def test_string_lengths_count_code_points() -> None:
    text = common_pb2.LocalizedText()
    variant = text.variants.add(language="ja", kind=common_pb2.TRANSLATION_KIND_ORIGINAL)
    variant.text = "波" * 4000  # 12,000 bytes of UTF-8
    assert validate(text) == []
    variant.text = "🌊" * 4000  # outside the BMP: still one code point each
    assert validate(text) == []
    variant.text = "波" * 4001
    assert only(validate(text), "variants[0].text") == "must be 1..4000 chars long, got 4001"


def test_multiline_parses_as_a_clause() -> None:
    spec = parse_field_constraints("required; 1..4000 chars; multiline")
    assert spec.clauses == (Length("chars", 1, 4000), Multiline())


@pytest.mark.must("VAL-6")
@pytest.mark.parametrize(
    "control", ["\x00", "\x07", "\x1b", "\r", "\x0b", "\x0c", "\x7f", "\x85", "\x9b"]
)
def test_no_string_holds_a_control_character(
    encounter: envelope_pb2.Envelope, control: str
) -> None:
    name = encounter.maritime_encounter.contacts[0].identity
    name.name = f"SHENG{control}FENG"
    assert only(validate_envelope(encounter), "maritime_encounter.contacts[0].identity.name") == (
        f"must not hold control characters, got U+{ord(control):04X} at character 5 of "
        f"{f'SHENG{control}FENG'!r}"
    )
    text = common_pb2.LocalizedText()
    variant = text.variants.add(language="en", kind=common_pb2.TRANSLATION_KIND_ORIGINAL)
    variant.text = f"line one{control}[2J"
    assert only(validate(text), "variants[0].text").startswith(
        "must not hold control characters other than line feed and tab, got U+"
    )


def test_line_feeds_and_tabs_only_where_the_field_is_multiline(
    encounter: envelope_pb2.Envelope,
) -> None:
    text = common_pb2.LocalizedText()
    variant = text.variants.add(language="ja", kind=common_pb2.TRANSLATION_KIND_ORIGINAL)
    variant.text = "第一行\n\t第二行\u3000（全角空白）\u202eشرق"  # printable or allowed
    assert validate(text) == []
    identity = encounter.maritime_encounter.contacts[0].identity
    identity.platform_class = "tuna\u3000longliner"  # a non-ASCII space is not a control
    assert validate_envelope(encounter) == []
    for control in ("\n", "\t"):
        identity.platform_class = f"tuna{control}longliner"
        assert paths(validate_envelope(encounter)) == [
            "maritime_encounter.contacts[0].identity.platform_class"
        ]


def test_bytes_lengths_are_exact_or_ranged() -> None:
    signed = common_pb2.SignedPayload(
        payload=b"x",
        payload_type=ENVELOPE_TYPE,
        signature=bytes(63),
        key_id="0" * 64,
        algorithm=common_pb2.SIGNATURE_ALGORITHM_ED25519,
    )
    assert only(validate(signed), "signature") == "must be exactly 64 bytes long, got 63"
    signed.signature = bytes(64)
    signed.payload = bytes(1048577)
    assert only(validate(signed), "payload") == "must be 1..1048576 bytes long, got 1048577"


def test_item_counts_and_each_apply_to_repeated_fields(encounter: envelope_pb2.Envelope) -> None:
    encounter.handling.releasable_to.extend([f"P{chr(65 + i)}" for i in range(15)])
    assert only(validate_envelope(encounter), "handling.releasable_to") == (
        "must have 2..16 items, got 17"
    )
    del encounter.handling.releasable_to[2:]
    encounter.handling.releasable_to.append("us")
    assert paths(validate_envelope(encounter)) == ["handling.releasable_to[2]"]


def test_patterns_match_the_whole_string(encounter: envelope_pb2.Envelope) -> None:
    encounter.recipient_party = "TW\n"
    assert "recipient_party" in paths(validate_envelope(encounter))
    encounter.recipient_party = "xTW"
    assert "recipient_party" in paths(validate_envelope(encounter))


def test_long_values_are_cut_short_in_descriptions(encounter: envelope_pb2.Envelope) -> None:
    encounter.handling.caveat = "x" * 100_000
    descriptions = [v.description for v in validate_envelope(encounter)]
    assert descriptions
    assert all(len(d) < 300 for d in descriptions)


def test_one_of_allows_only_the_listed_strings() -> None:
    delivery = peer_link_pb2.Delivery(sequence=1)
    delivery.envelope.CopyFrom(
        common_pb2.SignedPayload(
            payload=b"x",
            payload_type="application/vnd.hotline.v1.Receipt+protobuf",
            signature=bytes(64),
            key_id="0" * 64,
            algorithm=common_pb2.SIGNATURE_ALGORITHM_ED25519,
        )
    )
    # The field itself allows the three payload types; Delivery's own rule allows one. The rule's
    # `envelope` is Delivery's own field, not a carrying envelope.
    assert only(validate(delivery), "envelope.payload_type") == (
        'must be one of "application/vnd.hotline.v1.Envelope+protobuf", '
        "got 'application/vnd.hotline.v1.Receipt+protobuf'"
    )
    delivery.envelope.payload_type = "application/json"
    assert paths(validate(delivery)) == ["envelope.payload_type", "envelope.payload_type"]


def _indicator(kind: int, value: str) -> bodies_pb2.CyberIndicator:
    return bodies_pb2.CyberIndicator(type=kind, value=value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "value", "ok"),
    [
        (bodies_pb2.INDICATOR_TYPE_IPV4, "192.0.2.7", True),
        (bodies_pb2.INDICATOR_TYPE_IPV4, "198.51.100.0/24", True),
        (bodies_pb2.INDICATOR_TYPE_IPV4, "0.0.0.0/0", True),
        (bodies_pb2.INDICATOR_TYPE_IPV4, "198.51.100.7/24", False),  # host bits set
        (bodies_pb2.INDICATOR_TYPE_IPV4, "192.0.2.07", False),
        (bodies_pb2.INDICATOR_TYPE_IPV4, "192.0.2.7/33", False),
        (bodies_pb2.INDICATOR_TYPE_IPV4, " 192.0.2.7", False),
        (bodies_pb2.INDICATOR_TYPE_IPV4, "2001:db8::1", False),
        (bodies_pb2.INDICATOR_TYPE_IPV6, "2001:db8::1", True),
        (bodies_pb2.INDICATOR_TYPE_IPV6, "2001:db8::/32", True),
        (bodies_pb2.INDICATOR_TYPE_IPV6, "2001:0db8::1", False),  # not RFC 5952
        (bodies_pb2.INDICATOR_TYPE_IPV6, "2001:DB8::1", False),
        (bodies_pb2.INDICATOR_TYPE_IPV6, "2001:db8::1/32", False),
        (bodies_pb2.INDICATOR_TYPE_IPV6, "192.0.2.7", False),
        (bodies_pb2.INDICATOR_TYPE_URL, "https://example.net/payload.bin", True),
        (bodies_pb2.INDICATOR_TYPE_URL, "http://192.0.2.7:8080/x?y=1#z", True),
        (bodies_pb2.INDICATOR_TYPE_URL, "http://[2001:db8::1]/", True),
        (bodies_pb2.INDICATOR_TYPE_URL, "example.net/payload.bin", False),
        (bodies_pb2.INDICATOR_TYPE_URL, "https://", False),
        (bodies_pb2.INDICATOR_TYPE_URL, "https://exa mple.net/", False),
        (bodies_pb2.INDICATOR_TYPE_URL, "https://example.net:99999/", False),
        (bodies_pb2.INDICATOR_TYPE_URL, "mailto:soc@example.net", False),
        (bodies_pb2.INDICATOR_TYPE_URL, "https://例え.jp/", False),  # an IRI, not a URL
        (bodies_pb2.INDICATOR_TYPE_DOMAIN, "c2.example.net", True),
        (bodies_pb2.INDICATOR_TYPE_DOMAIN, "c2.example.net.", False),
        (bodies_pb2.INDICATOR_TYPE_SHA256, "a" * 64, True),
        (bodies_pb2.INDICATOR_TYPE_SHA256, "A" * 64, False),
        (bodies_pb2.INDICATOR_TYPE_CVE, "CVE-2024-12345", True),
        (bodies_pb2.INDICATOR_TYPE_CVE, "CVE-2024-123", False),
        (bodies_pb2.INDICATOR_TYPE_OTHER, "anything at all", True),
    ],
)
def test_indicator_values_have_the_form_their_type_requires(
    kind: int, value: str, ok: bool
) -> None:
    violations = validate(_indicator(kind, value))
    assert paths(violations) == ([] if ok else ["value"])
    if not ok:
        assert violations[0].description.startswith("when type is ")


def test_unique_compares_items_or_a_field_of_them() -> None:
    sitrep = example("sar_sitrep")
    sitrep.references.append(sitrep.references[0])
    assert (
        only(validate_envelope(sitrep), "references[1]") == "must be unique, same as references[0]"
    )
    text = example("free_text")
    text.free_text.text.variants[2].language = "ja"
    assert only(validate_envelope(text), "free_text.text.variants[2].language") == (
        "must be unique in variants, same as variants[0].language"
    )


def test_enums_hold_declared_values(encounter: envelope_pb2.Envelope) -> None:
    encounter.precedence = 77  # type: ignore[assignment]
    assert only(validate_envelope(encounter), "precedence") == (
        "unknown value 77: not a declared hotline.v1.Precedence value"
    )


def test_an_optional_enum_with_an_unknown_value_is_a_violation() -> None:
    sitrep = example("sar_sitrep")
    sitrep.sar_sitrep.distress_phase = 42  # type: ignore[assignment]
    assert paths(validate_envelope(sitrep)) == ["sar_sitrep.distress_phase"]


def test_items_of_a_repeated_enum_are_declared_and_never_unspecified() -> None:
    notice = example("manoeuvre_notice")
    notice.manoeuvre_notice.signals.append(99)  # type: ignore[arg-type]
    assert paths(validate_envelope(notice)) == ["manoeuvre_notice.signals[2]"]
    notice.manoeuvre_notice.signals[2] = bodies_pb2.MANOEUVRING_SIGNAL_UNSPECIFIED
    assert only(validate_envelope(notice), "manoeuvre_notice.signals[2]") == (
        "must not be MANOEUVRING_SIGNAL_UNSPECIFIED"
    )


# ---------------------------------------------------------------------------------------------
# Rules that relate several fields
# ---------------------------------------------------------------------------------------------


def test_exactly_one_member_of_a_oneof(encounter: envelope_pb2.Envelope) -> None:
    encounter.ClearField("maritime_encounter")
    assert paths(validate_envelope(encounter)) == ["body"]
    assert paths(validate(peer_link_pb2.PushRequest())) == ["frame"]
    assert only(validate(common_pb2.Area()), "shape") == (
        "exactly one of circle, polygon must be set, none is"
    )


def test_comparisons_between_fields(encounter: envelope_pb2.Envelope) -> None:
    encounter.recipient_party = "JP"
    encounter.handling.releasable_to[1] = "US"
    assert only(validate_envelope(encounter), "recipient_party") == (
        "must differ from sender_party ('JP')"
    )


def test_timestamps_compare_in_time_order_and_strictly(encounter: envelope_pb2.Envelope) -> None:
    encounter.expire_time.CopyFrom(encounter.create_time)
    assert only(validate_envelope(encounter), "expire_time") == (
        "must be after create_time (2025-06-12T02:14:05Z), got 2025-06-12T02:14:05Z"
    )
    encounter.expire_time.nanos = 1
    assert validate_envelope(encounter) == []


def test_a_comparison_with_an_unset_side_holds(encounter: envelope_pb2.Envelope) -> None:
    encounter.ClearField("expire_time")
    assert validate_envelope(encounter) == []
    window = common_pb2.TimeWindow()
    window.start_time.seconds = 100
    assert validate(window) == []


def test_comparisons_with_literals_under_a_condition() -> None:
    link_test = example("link_test")
    link_test.action = common_pb2.ACTION_CANCEL
    link_test.references.append("0197b3d5-7bd0-77d4-9430-62b55c25f380")
    assert only(validate_envelope(link_test), "action") == (
        "when body is link_test: must be ACTION_NEW, got ACTION_CANCEL"
    )


def test_integer_comparisons(encounter: envelope_pb2.Envelope) -> None:
    band = common_pb2.AltitudeBand(lower_ft=10000, upper_ft=9999)
    assert only(validate(band), "upper_ft") == "must be at least lower_ft (10000), got 9999"
    assert validate(common_pb2.AltitudeBand(lower_ft=0, upper_ft=0)) == []


def test_rules_on_the_carrying_envelope_apply_to_a_body_inside_it() -> None:
    warning = example("launch_warning")
    warning.launch_warning.update_number = 3
    assert only(validate_envelope(warning), "launch_warning.update_number") == (
        "when envelope.action is ACTION_NEW: must be 0, got 3"
    )
    # Alone, a body has no envelope: the rules about it hold trivially.
    assert validate(warning.launch_warning) == []


def test_contains_checks_a_repeated_field_holds_a_value(encounter: envelope_pb2.Envelope) -> None:
    encounter.handling.releasable_to[0] = "US"
    assert only(validate_envelope(encounter), "handling.releasable_to") == (
        "must contain sender_party ('JP')"
    )
    ack = example("acknowledgement")
    ack.acknowledgement.acknowledged_message_id = "019761ea-75c8-7fb2-ab76-ed9bda034b10"
    assert only(validate_envelope(ack), "references") == (
        "must contain acknowledgement.acknowledged_message_id ('019761ea-75c8-7fb2-ab76-ed9bda034b10')"
    )


def test_at_least_one_of_several_fields() -> None:
    principal = bodies_pb2.Principal(organisation="Japan Coast Guard")
    assert only(validate(principal), "name") == "at least one of name, role must be set"
    principal.role = "Commandant"
    assert validate(principal) == []


def test_at_most_one_item_with_a_value() -> None:
    text = common_pb2.LocalizedText()
    text.variants.add(language="ja", text="a", kind=common_pb2.TRANSLATION_KIND_ORIGINAL)
    text.variants.add(language="en", text="a", kind=common_pb2.TRANSLATION_KIND_ORIGINAL)
    assert only(validate(text), "variants") == (
        "at most one item may have kind TRANSLATION_KIND_ORIGINAL, 2 do"
    )


def test_a_clause_on_a_nested_path() -> None:
    notice = example("hazardous_activity")
    notice.hazardous_activity.window.ClearField("end_time")
    assert only(validate_envelope(notice), "hazardous_activity.window.end_time") == (
        "required: must be set"
    )


# ---------------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------------


def test_validate_checks_any_hotline_message() -> None:
    request = operator_pb2.AcknowledgeRequest(
        message_id="019761ea-75c8-7fb2-ab76-ed9bda034b19",
        level=bodies_pb2.ACKNOWLEDGEMENT_LEVEL_UNABLE,
    )
    assert only(validate(request), "reason") == (
        "required when level is ACKNOWLEDGEMENT_LEVEL_UNABLE: must be set"
    )
    listing = operator_pb2.ListMessagesRequest()
    listing.start_time.seconds, listing.end_time.seconds = 200, 100
    assert paths(validate(listing)) == ["end_time"]
    assert validate(Timestamp(seconds=1)) == []  # not a hotline.v1 message: no constraints


def test_a_prefix_names_where_the_message_sits(encounter: envelope_pb2.Envelope) -> None:
    encounter.ClearField("status")
    assert paths(validate(encounter, prefix="envelope")) == ["envelope.status"]
    assert paths(validate(encounter, prefix="envelope.")) == ["envelope.status"]
    request = operator_pb2.SendRequest(envelope=encounter)
    request.envelope.ClearField("message_id")
    assert paths(validate(request, filled=False)) == ["envelope.status"]


def test_check_envelope_raises_with_every_violation(encounter: envelope_pb2.Envelope) -> None:
    check_envelope(encounter)
    encounter.ClearField("status")
    encounter.ClearField("precedence")
    with pytest.raises(ValidationError) as caught:
        check_envelope(encounter)
    assert paths(caught.value.violations) == ["status", "precedence"]
    assert str(caught.value).startswith("status: required")


def test_decode_envelope_refuses_bytes_that_do_not_parse() -> None:
    envelope, violations = decode_envelope(b"\xff\xff\xff")
    assert envelope is None
    assert len(violations) == 1
    assert violations[0].field == ""
    assert violations[0].description.startswith("envelope bytes do not parse: ")


def test_decode_envelope_returns_a_parsed_but_invalid_envelope_with_its_violations() -> None:
    envelope, violations = decode_envelope(b"")
    assert envelope == envelope_pb2.Envelope()
    assert "body" in paths(violations)


def test_validation_leaves_the_message_unchanged(encounter: envelope_pb2.Envelope) -> None:
    before = encounter.SerializeToString(deterministic=True)
    validate_envelope(encounter)
    validate_envelope(encounter, filled=False)
    assert encounter.SerializeToString(deterministic=True) == before
