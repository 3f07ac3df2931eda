"""The one-line summary of each body type (`describe_body`: watch floors, history, show, the
browser console) reads as a sentence: enum names spelled out in words, acronyms kept, no
"SPACE LAUNCH launch from"."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from client.bodies import describe_body
from hotline.v1 import bodies_pb2, envelope_pb2

EXAMPLES = Path(__file__).resolve().parents[2] / "proto" / "examples" / "valid"
EXPECTED = {
    "acknowledgement": "ROGER to …da034b19",
    "air_incident": "Unidentified track: an unidentified drone at 24.12N 122.65E, FL180 in TWADIZ",
    "call_request": "Call requested within the hour: Preventing further close-quarters "
    "situations with fishing vessels around Yonaguni",
    "cyber_threat": "Cyber threat (high, TLP:AMBER) to cable landing and telecom, "
    "TWCERT-AD-2025-0627",
    "evacuation": "Evacuation EXERCISE KUROSHIO BRIDGE (departure advised): 2,400 nationals",
    "free_text": "Patrol vessels sheltering from Typhoon No. 3",
    "hadr_offer": "HADR offer: search and rescue team and shelter by air",
    "hadr_request": "HADR request after an earthquake: search and rescue team, medical team and "
    "shelter needed; 120,000 people affected",
    "hazardous_activity": "Live fire near 24.00N 121.80E (A1207/25)",
    "launch_warning": "Space launch from 39.66N 124.71E",
    "launch_warning_update": "Space launch from 39.66N 124.71E, update 1",
    "link_test": "Link test #1042",
    "manoeuvre_notice": "ROCS CHENG KUNG altering course to starboard and conducting flight "
    "operations, new course 090T at 15 kn",
    "maritime_encounter": "Crossing: YONAKUNI and SHENG FENG 66 at 24.23N 122.80E, CPA 180 m",
    "sar_request": "SAR request, vessel sinking: JIN HSIN FA 168 at 24.75N 123.20E, 7 on board",
    "sar_sitrep": "SAR sitrep 2 (ongoing): 5 rescued, 2 missing",
}


def example(name: str) -> envelope_pb2.Envelope:
    envelope = envelope_pb2.Envelope()
    text_format.Parse((EXAMPLES / f"{name}.txtpb").read_text(encoding="utf-8"), envelope)
    return envelope


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_golden_example_is_summarised_as_a_sentence(name: str) -> None:
    assert describe_body(example(name)) == EXPECTED[name]


def test_every_body_type_has_a_summary_of_its_own() -> None:
    members = {f.name for f in envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"].fields}
    summarised = {example(name).WhichOneof("body") for name in EXPECTED}
    assert members <= summarised  # each body type has a golden example above
    for name in EXPECTED:
        summary = describe_body(example(name))
        assert "_" not in summary, summary
        assert summary != example(name).WhichOneof("body"), "the fallback, not a summary"


def test_a_salvo_of_ballistic_missiles_and_an_unknown_kind_read_naturally() -> None:
    envelope = example("launch_warning")
    warning = envelope.launch_warning
    warning.missile_kind = bodies_pb2.MISSILE_KIND_BALLISTIC
    warning.launch_count = 3
    assert describe_body(envelope) == "3 ballistic missile launches from 39.66N 124.71E"
    warning.missile_kind = bodies_pb2.MISSILE_KIND_UNKNOWN
    warning.launch_count = 1
    assert describe_body(envelope) == "Missile launch from 39.66N 124.71E"
