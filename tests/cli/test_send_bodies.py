"""`hotline send`: every body type from typed flags, and `--file` defaults, through a real pair."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from client import body_flags
from hotline.errors import ConfigError
from hotline.v1 import envelope_pb2
from tests.cli.test_cli import EXAMPLES, Result, clean_env, floors, hotline, link_up
from tests.harness import running_pair

# One command per body type (acknowledgements go through `hotline ack`), with the member of
# Envelope.body it must arrive as.
COMMANDS: list[tuple[str, tuple[str, ...]]] = [
    ("free_text", ("free-text", "--subject", "Radio check", "--text", "How do you read?")),
    ("link_test", ("link-test", "--number", "4")),
    (
        "maritime_encounter",
        (
            "maritime-encounter", "--lat", "24.30", "--lon", "122.95", "--course", "270",
            "--speed", "14", "--contact-lat", "24.27", "--contact-lon", "122.91",
            "--encounter", "crossing",
        ),
    ),
    (
        "manoeuvre_notice",
        (
            "manoeuvre-notice", "--lat", "24.3", "--lon", "122.9", "--course", "20",
            "--speed", "16", "--signal", "i-am-altering-course-to-starboard",
            "--new-course", "80",
        ),
    ),
    (
        "air_incident",
        (
            "air-incident", "--kind", "intercept", "--lat", "23.85", "--lon", "123.55",
            "--interceptor", "TIGER 21",
        ),
    ),
    (
        "call_request",
        (
            "call-request", "--from-org", "Japan Coast Guard", "--to-org",
            "Coast Guard Administration", "--topic", "Search coordination",
            "--callback", "+81988671234",
        ),
    ),
    (
        "hazardous_activity",
        (
            "hazardous-activity", "--kind", "live-fire", "--area", "24.5,123.0,20000",
            "--altitude-band", "lower_ft=0,upper_ft=30000", "--window", "+1h/+5h",
            "--navigational-warning", "NAVAREA XI 0412/26",
            "--conducting-platforms", "kind=surface-vessel,name=JS KONGO,hull_number=DDG-173",
            "--description", "Live firing, keep clear",
        ),
    ),
    (
        "launch_warning",
        (
            "launch-warning", "--launch-point", "39.0,125.7", "--launch-time", "now-2m",
            "--missile-kind", "ballistic", "--confidence", "high", "--bearing-deg-true", "95",
            "--predicted-impact-area", "40.5,134.0;40.9,134.6;40.2,135.1",
            "--predicted-impact-time", "+8m", "--apogee-km", "550", "--launch-count", "2",
            "--remarks", "Second object tracked",
        ),
    ),
    (
        "sar_request",
        (
            "sar-request", "--incident-kind", "vessel-disabled", "--distress-phase", "distress",
            "--object-in-distress", "kind=fishing-vessel,name=SHINKO MARU No.8,mmsi=431000001",
            "--last-known-position", "24.1,123.2", "--last-known-time", "now-30m",
            "--last-known-kinematics", "course_deg_true=45,speed_kn=2.5",
            "--persons-on-board", "7", "--assistance-requested", "surface-unit",
            "--assistance-requested", "air-unit", "--requesting-rcc", "RCC Naha",
            "--rcc-contact", "name=Duty officer,phone=+81988671234",
            "--weather", "wind_kn=25,wind_from_deg_true=40,sea_state=5",
            "--situation", "Engine failure, drifting",
        ),
    ),
    (
        "sar_sitrep",
        (
            "sar-sitrep", "--sitrep-number", "2", "--reporting-rcc", "RCC Naha",
            "--sitrep-status", "ongoing", "--situation", "Searching sector B",
            "--units-assigned",
            "platform.kind=surface-vessel,platform.name=PL HATERUMA,party=JP,on_scene_time=now-1h",
            "--persons-rescued", "3", "--search-area", "24.0,123.0,15000",
        ),
    ),
    (
        "hadr_request",
        (
            "hadr-request", "--disaster-kind", "earthquake", "--affected-area",
            "23.9,121.6,80000", "--needs", "category=shelter,quantity=500,unit=each",
            "--needs", "category=water,quantity=20,unit=tonne,description=Bottled water",
            "--point-of-contact", "name=EOC Hualien,phone=+88638227171",
            "--reception-points", "name=Hualien Port,position=23.98,121.62",
            "--needed-by-time", "+1d", "--situation", "Magnitude 7.1, roads cut",
        ),
    ),
    (
        "hadr_offer",
        (
            "hadr-offer", "--items-offered", "category=medical-team,quantity=2,unit=team",
            "--availability-time", "+6h", "--delivery-mode", "air",
            "--point-of-contact", "name=JDR desk,email=jdr@example.jp",
            "--transport-platforms", "kind=aircraft,callsign=JAF01",
        ),
    ),
    (
        "evacuation",
        (
            "evacuation", "--phase", "standby", "--operation-name", "EXERCISE BRIDGE",
            "--nationals", "nationality=JP,count=2400,needing_assistance=35",
            "--assembly-points",
            "name=Songshan Airport,position=25.07,121.55,window=+1d/+2d,capacity=800",
        ),
    ),
    (
        "cyber_threat",
        (
            "cyber-threat", "--tlp", "amber", "--severity", "high",
            "--affected-infrastructure", "cable-landing", "--affected-infrastructure", "ais",
            "--indicators", "type=ipv4,value=203.0.113.7,description=C2 server",
            "--first-seen-time", "now-3h", "--description", "Scanning of landing stations",
        ),
    ),
]  # fmt: skip


def _envelope(result: Result) -> dict[str, Any]:
    envelope = result.json()["envelope"]
    assert isinstance(envelope, dict)
    return envelope


def test_a_command_for_every_body_type_but_acknowledgement() -> None:
    members = {f.name for f in envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"].fields}
    assert {member for member, _ in COMMANDS} == members - {"acknowledgement"}


@pytest.mark.slow
async def test_every_body_type_from_flags_arrives_as_that_body(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    async with running_pair(tmp_path) as pair:
        jp, tw = floors(pair, tmp_path)
        await link_up(pair)
        for member, command in COMMANDS:
            result = await hotline(
                "send", *command, "--json", "--wait", "delivered", "--config", str(jp.config),
                env=env,
            )  # fmt: skip
            assert result.rc == 0, (member, result.err)
            sent = result.json()
            assert sent["state"] == "DELIVERY_STATE_DELIVERED", (member, sent)
            shown = await hotline(
                "show", str(sent["message_id"]), "--json", "--config", str(tw.config), env=env
            )
            assert shown.rc == 0, (member, shown.err)
            envelope = _envelope(shown)
            assert member in envelope, (member, envelope)
            expected_status = (
                "MESSAGE_STATUS_TEST" if member == "link_test" else "MESSAGE_STATUS_EXERCISE"
            )
            assert envelope["status"] == expected_status


def test_flag_values_become_the_body_fields() -> None:
    import argparse

    from hotline.v1 import bodies_pb2

    parser = argparse.ArgumentParser()
    body_flags.add_body_flags(parser, bodies_pb2.SarSitrep.DESCRIPTOR)
    args = parser.parse_args(
        [
            "--sitrep-number", "2", "--reporting-rcc", "RCC Naha", "--sitrep-status",
            "concluded", "--situation", "Found", "--units-assigned",
            "platform.kind=aircraft,platform.callsign=JA01,party=JP",
            "--search-area", "24.0,123.0;24.5,123.0;24.5,123.5",
        ]
    )  # fmt: skip
    body = body_flags.build_body(args, bodies_pb2.SarSitrep.DESCRIPTOR, "ja")
    assert isinstance(body, bodies_pb2.SarSitrep)
    assert body.status == bodies_pb2.SAR_STATUS_CONCLUDED
    assert body.situation.variants[0].language == "ja"
    assert body.units_assigned[0].platform.callsign == "JA01"
    assert len(body.search_area.polygon.vertices) == 3
    bad = parser.parse_args(
        ["--sitrep-number", "1", "--reporting-rcc", "R", "--sitrep-status", "over",
         "--situation", "x"]
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"--sitrep-status: 'over' is not one of ongoing"):
        body_flags.build_body(bad, bodies_pb2.SarSitrep.DESCRIPTOR, "en")


async def test_help_lists_fields_units_and_ranges_and_no_acknowledgement(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    launch = await hotline("send", "launch-warning", "--help", env=env)
    assert launch.rc == 0
    assert "--apogee-km" in launch.out
    assert "kilometres; optional; 0.0..5000.0" in launch.out
    assert "ballistic | cruise" in launch.out
    sar = await hotline("send", "sar-request", "--help", env=env)
    assert "PointOfContact (KEY=VALUE keys):" in sar.out
    assert "at least one of phone, email, radio" in sar.out
    main = await hotline("send", "--help", env=env)
    assert "whole Envelope" in main.out
    assert "RFC 3339" in main.out
    assert "seconds" in main.out
    assert "acknowledgement" not in main.out.split("bodies:")[1].split("\n\n")[0]
    body = await hotline("send", "body", "--help", env=env)
    assert "not an envelope" in body.out
    assert "RFC 3339" in body.out
    ack = await hotline("send", "body", "--type", "acknowledgement", "x.txtpb", env=env)
    assert ack.rc == 2
    assert "hotline ack" in ack.err


@pytest.mark.slow
async def test_file_gets_the_flags_defaults_and_fresh_renews_expiry(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    async with running_pair(tmp_path) as pair:
        jp, _ = floors(pair, tmp_path)
        cfg = ("--config", str(jp.config))
        # Every valid example but the acknowledgement is accepted as a template with --fresh,
        # including those with an expire_time, and goes as EXERCISE (TEST for a link test).
        for path in sorted((EXAMPLES).glob("*.txtpb")):
            if path.stem in (
                "acknowledgement",
                "launch_warning_update",
                "hazardous_activity_cancel",
            ):
                continue  # they refer to an earlier message of their own series
            result = await hotline("send", "--file", str(path), "--fresh", "--json", *cfg, env=env)
            assert result.rc == 0, (path.name, result.err)
            shown = await hotline("show", str(result.json()["message_id"]), "--json", *cfg, env=env)
            envelope = _envelope(shown)
            status = (
                "MESSAGE_STATUS_TEST" if path.stem == "link_test" else "MESSAGE_STATUS_EXERCISE"
            )
            assert envelope["status"] == status, path.name
            if "expire_time" in envelope:
                assert envelope["expire_time"] > envelope["create_time"], path.name
        # The file said ACTUAL: --status actual is needed to send it as such.
        actual = await hotline(
            "send", "--file", str(EXAMPLES / "sar_request.txtpb"), "--fresh", "--status",
            "actual", "--expires-in", "600", "--json", *cfg, env=env,
        )  # fmt: skip
        assert actual.rc == 0, actual.err
        shown = await hotline("show", str(actual.json()["message_id"]), "--json", *cfg, env=env)
        envelope = _envelope(shown)
        assert envelope["status"] == "MESSAGE_STATUS_ACTUAL"
        created = datetime.fromisoformat(envelope["create_time"])
        expires = datetime.fromisoformat(envelope["expire_time"])
        assert created < expires < created + timedelta(seconds=700)
        # An acknowledgement file is refused before anything is sent.
        ack = await hotline(
            "send", "--file", str(EXAMPLES / "acknowledgement.txtpb"), *cfg, env=env
        )
        assert ack.rc == 2
        assert "hotline ack" in ack.err
