"""What messages put on the console's map, and how UPDATE and CANCEL change it (pure)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from client import bodies
from client.console.geo import Situation, dead_reckon, features_of
from hotline.ids import new_message_id
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2

VESSEL = common_pb2.PLATFORM_KIND_SURFACE_VESSEL


def envelope(
    member: str,
    body: object,
    *,
    action: int = common_pb2.ACTION_NEW,
    references: tuple[str, ...] = (),
) -> envelope_pb2.Envelope:
    env = envelope_pb2.Envelope(
        message_id=new_message_id(),
        sender_party="JP",
        recipient_party="TW",
        action=action,  # type: ignore[arg-type]
        references=list(references),
    )
    getattr(env, member).CopyFrom(body)
    return env


def encounter() -> envelope_pb2.Envelope:
    report = bodies.maritime_encounter(
        reporting_platform=bodies.platform(VESSEL, name="JS AOZORA", flag_party="JP"),
        lat=24.30,
        lon=122.95,
        course=270.0,
        speed=12.0,
        contacts=[
            bodies.contact(
                bodies.platform(VESSEL, name="ROCS HAI YANG", flag_party="TW"),
                lat=24.27,
                lon=122.91,
                course=20.0,
                speed=16.0,
            )
        ],
        encounter_type=bodies_pb2.ENCOUNTER_TYPE_CROSSING,
        observation_time=datetime.now(UTC),
        cpa_m=900.0,
        tcpa_s=600.0,
    )
    return envelope("maritime_encounter", report)


def hazard(lat: float) -> envelope_pb2.Envelope:
    notice = bodies_pb2.HazardousActivityNotice(kind=bodies_pb2.HAZARDOUS_ACTIVITY_KIND_LIVE_FIRE)
    notice.area.CopyFrom(bodies.circle(lat, 123.0, 5000.0))
    return envelope("hazardous_activity", notice)


def test_dead_reckoning_moves_along_the_course_by_speed_times_time() -> None:
    north = dead_reckon(24.0, 123.0, 0.0, 60.0, 1.0)  # 60 nm due north = 1 degree of latitude
    assert math.isclose(north[0], 25.0, abs_tol=1e-6)
    assert math.isclose(north[1], 123.0)
    east = dead_reckon(0.0, 123.0, 90.0, 60.0, 1.0)  # on the equator, 60 nm east = 1 degree
    assert math.isclose(east[0], 0.0, abs_tol=1e-6)
    assert math.isclose(east[1], 124.0, abs_tol=1e-6)


def test_an_encounter_report_shows_both_vessels_with_vectors_and_the_cpa_circle() -> None:
    env = encounter()
    features = features_of(env)
    by_role = {f["role"]: f for f in features}
    assert set(by_role) == {"reporting", "contact", "cpa"}
    own = by_role["reporting"]
    assert own["at"] == [24.3, 122.95]
    assert own["flag"] == "JP"
    assert own["domain"] == "surface"
    # 10 minutes at 12 kn due west: 2 nm
    assert own["vector"][1] == dead_reckon(24.30, 122.95, 270.0, 12.0, 10 / 60)
    assert by_role["contact"]["label"] == "ROCS HAI YANG"
    assert by_role["contact"]["flag"] == "TW"
    cpa = by_role["cpa"]
    # the reporting vessel's position at TCPA (600 s at 12 kn due west), CPA distance around it
    assert cpa["at"] == dead_reckon(24.30, 122.95, 270.0, 12.0, 600 / 3600)
    assert cpa["radius_m"] == 900.0
    assert cpa["label"] == "CPA 900 m in 10 min"
    assert all(f["message_id"] == env.message_id for f in features)
    assert len({f["id"] for f in features}) == len(features)


def test_a_launch_warning_shows_the_launch_point_the_impact_area_and_the_track() -> None:
    warning = bodies.launch_warning(
        missile_kind=bodies_pb2.MISSILE_KIND_BALLISTIC,
        confidence=bodies_pb2.CONFIDENCE_MEDIUM,
        launch_lat=25.9,
        launch_lon=119.8,
        launch_time=datetime.now(UTC),
        impact_area=bodies.circle(24.5, 123.5, 20000.0),
        update_number=1,
    )
    roles = {f["role"]: f for f in features_of(envelope("launch_warning", warning))}
    assert set(roles) == {"launch", "impact", "trajectory"}
    assert roles["impact"]["kind"] == "circle"
    assert roles["impact"]["radius_m"] == 20000.0
    assert roles["trajectory"]["points"] == [[25.9, 119.8], [24.5, 123.5]]


def test_a_message_without_positions_puts_nothing_on_the_map() -> None:
    text = envelope("free_text", bodies.free_text("Radio check", "How do you read?"))
    assert features_of(text) == []
    assert Situation().apply(text) is None


def test_the_second_floor_seeing_the_same_message_changes_nothing() -> None:
    situation = Situation()
    env = encounter()
    first = situation.apply(env)
    assert first is not None
    assert list(first.show) == [env.message_id]
    assert first.remove == []
    assert situation.apply(env) is None
    assert list(situation.shown) == [env.message_id]


def test_an_update_replaces_what_it_references_and_a_cancel_removes_it() -> None:
    situation = Situation()
    original = hazard(24.0)
    situation.apply(original)
    update = hazard(24.5)
    update.action = common_pb2.ACTION_UPDATE
    update.references.append(original.message_id)
    change = situation.apply(update)
    assert change is not None
    assert change.remove == [original.message_id]
    assert list(change.show) == [update.message_id]
    assert change.show[update.message_id][0]["at"] == [24.5, 123.0]
    cancel = envelope(
        "free_text",
        bodies.free_text("Cancelled", "Live firing cancelled"),
        action=common_pb2.ACTION_CANCEL,
        references=(update.message_id,),
    )
    change = situation.apply(cancel)
    assert change is not None
    assert change.remove == [update.message_id]
    assert change.show == {}
    assert situation.shown == {}


def test_a_message_seen_after_its_cancel_stays_off_the_map() -> None:
    situation = Situation()
    original = hazard(24.0)
    cancel = envelope(
        "free_text",
        bodies.free_text("Cancelled", "Cancelled"),
        action=common_pb2.ACTION_CANCEL,
        references=(original.message_id,),
    )
    assert situation.apply(cancel) is None  # nothing shown yet, so nothing to remove
    assert situation.apply(original) is None
    assert situation.shown == {}
