"""Builders for message bodies, so that operators and scripts write facts, not protobuf plumbing.

Each builder takes the body's facts as keyword arguments (plain numbers, strings, `datetime`s
in UTC) and returns the body message, ready for `OperatorClient.send_body`:

    body = maritime_encounter(
        reporting_platform=platform(PLATFORM_KIND_SURFACE_VESSEL, name="JS AOZORA"),
        lat=24.45, lon=122.95, course=90, speed=12,
        contacts=[contact(platform(PLATFORM_KIND_SURFACE_VESSEL), lat=24.46, lon=122.97)],
        encounter_type=ENCOUNTER_TYPE_CROSSING,
    )
    await client.send_body(body, precedence=PRECEDENCE_IMMEDIATE)

Every human-written text is a `LocalizedText`: pass a `str` (one ORIGINAL variant in the
builder's `language`) or a ready `LocalizedText` (see `localized`). Bodies without a builder
here are written as protobuf text format or JSON files (`body_from_file`, `envelope_from_file`).
The builders do not validate: the gateway does, and its violations come back as
`client.errors.InvalidMessage`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from google.protobuf import json_format, text_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from hotline.errors import ConfigError
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2

__all__ = [
    "BODY_FIELDS",
    "air_incident",
    "body_field",
    "body_from_file",
    "call_request",
    "circle",
    "contact",
    "describe_body",
    "duration",
    "envelope_from_file",
    "free_text",
    "hazardous_activity",
    "kinematics",
    "launch_warning",
    "link_test",
    "localized",
    "manoeuvre_notice",
    "maritime_encounter",
    "platform",
    "position",
    "principal",
    "sar_request",
    "short_id",
    "text_of",
    "timestamp",
]

Text = str | common_pb2.LocalizedText
M = TypeVar("M", bound=Message)

_BODY_ONEOF = envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"]

BODY_FIELDS: Mapping[str, str] = {
    field.message_type.full_name: field.name
    for field in _BODY_ONEOF.fields
    if field.message_type is not None
}
"""Body message type (full protobuf name) -> the `Envelope.body` member that carries it."""


def body_field(body: Message) -> str:
    """The `Envelope.body` member for a body message, by its type; TypeError if it is none."""
    name = body.DESCRIPTOR.full_name
    try:
        return BODY_FIELDS[name]
    except KeyError:
        raise TypeError(f"{name} is not a message body (an Envelope.body member)") from None


# ------------------------------------------------------------------------- common values


def localized(
    text: str,
    language: str = "en",
    *,
    translations: Mapping[str, str] | None = None,
    translation_kind: int = common_pb2.TRANSLATION_KIND_HUMAN_CONFIRMED,
) -> common_pb2.LocalizedText:
    """A text written in `language` (the ORIGINAL), with optional translations by language."""
    result = common_pb2.LocalizedText()
    result.variants.add(language=language, text=text, kind=common_pb2.TRANSLATION_KIND_ORIGINAL)
    for lang, translated in (translations or {}).items():
        result.variants.add(language=lang, text=translated, kind=translation_kind)
    return result


def _text(value: Text, language: str) -> common_pb2.LocalizedText:
    return localized(value, language) if isinstance(value, str) else value


def text_of(value: common_pb2.LocalizedText, language: str = "en") -> str:
    """The variant in `language` if present, else the original, else the first ("" if none)."""
    variants = list(value.variants)
    for variant in variants:
        if variant.language == language:
            return variant.text
    for variant in variants:
        if variant.kind == common_pb2.TRANSLATION_KIND_ORIGINAL:
            return variant.text
    return variants[0].text if variants else ""


def timestamp(when: datetime | None = None) -> Timestamp:
    """A Timestamp for `when` (timezone-aware; naive means UTC), or for now."""
    ts = Timestamp()
    if when is None:
        when = datetime.now(UTC)
    elif when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    ts.FromDatetime(when.astimezone(UTC))
    return ts


def duration(seconds: float | timedelta) -> Duration:
    result = Duration()
    if isinstance(seconds, timedelta):
        result.FromTimedelta(seconds)
    else:
        result.FromNanoseconds(round(seconds * 1e9))
    return result


def position(lat: float, lon: float) -> common_pb2.Position:
    """A WGS 84 position in decimal degrees (north and east positive)."""
    return common_pb2.Position(latitude_deg=lat, longitude_deg=lon)


def kinematics(course: float, speed: float, heading: float | None = None) -> common_pb2.Kinematics:
    """Course (degrees true) and speed (knots) over ground, and heading if known."""
    result = common_pb2.Kinematics(course_deg_true=course, speed_kn=speed)
    if heading is not None:
        result.heading_deg_true = heading
    return result


def circle(lat: float, lon: float, radius_m: float) -> common_pb2.Area:
    """A circular area around a point."""
    return common_pb2.Area(circle=common_pb2.Circle(center=position(lat, lon), radius_m=radius_m))


def platform(
    kind: int,
    *,
    name: str = "",
    mmsi: str = "",
    imo_number: str = "",
    hull_number: str = "",
    icao_address: str = "",
    callsign: str = "",
    flag_party: str = "",
    platform_class: str = "",
) -> common_pb2.PlatformIdentity:
    """Who a vessel or aircraft is, as far as known (only `kind` is required)."""
    return common_pb2.PlatformIdentity(
        kind=kind,  # type: ignore[arg-type]
        name=name,
        mmsi=mmsi,
        imo_number=imo_number,
        hull_number=hull_number,
        icao_address=icao_address,
        callsign=callsign,
        flag_party=flag_party,
        platform_class=platform_class,
    )


def principal(organisation: str, *, name: str = "", role: str = "") -> bodies_pb2.Principal:
    """A person or office taking part in a voice call (give a name or a role, or both)."""
    return bodies_pb2.Principal(organisation=organisation, name=name, role=role)


# ------------------------------------------------------------------------- bodies


def free_text(subject: Text, text: Text, *, language: str = "en") -> bodies_pb2.FreeText:
    """Free text, for what no typed body covers."""
    return bodies_pb2.FreeText(subject=_text(subject, language), text=_text(text, language))


def contact(
    identity: common_pb2.PlatformIdentity,
    *,
    lat: float,
    lon: float,
    course: float | None = None,
    speed: float | None = None,
    range_m: float | None = None,
) -> bodies_pb2.EncounterContact:
    """Another platform in a maritime encounter, as observed."""
    result = bodies_pb2.EncounterContact(identity=identity, position=position(lat, lon))
    if course is not None and speed is not None:
        result.kinematics.CopyFrom(kinematics(course, speed))
    if range_m is not None:
        result.range_m = range_m
    return result


def maritime_encounter(
    *,
    reporting_platform: common_pb2.PlatformIdentity,
    lat: float,
    lon: float,
    course: float,
    speed: float,
    contacts: Sequence[bodies_pb2.EncounterContact],
    encounter_type: int,
    observation_time: datetime | None = None,
    cpa_m: float | None = None,
    tcpa_s: float | None = None,
    bridge_to_bridge_contact: bool = False,
    intentions: Text | None = None,
    remarks: Text | None = None,
    language: str = "en",
) -> bodies_pb2.MaritimeEncounterReport:
    """A report of an encounter at sea (CUES spirit); the first contact is the principal one."""
    result = bodies_pb2.MaritimeEncounterReport(
        reporting_platform=reporting_platform,
        reporting_position=position(lat, lon),
        reporting_kinematics=kinematics(course, speed),
        contacts=list(contacts),
        observation_time=timestamp(observation_time),
        encounter_type=encounter_type,  # type: ignore[arg-type]
        bridge_to_bridge_contact=bridge_to_bridge_contact,
    )
    if cpa_m is not None:
        result.cpa_m = cpa_m
    if tcpa_s is not None:
        result.tcpa.CopyFrom(duration(tcpa_s))
    if intentions is not None:
        result.intentions.CopyFrom(_text(intentions, language))
    if remarks is not None:
        result.remarks.CopyFrom(_text(remarks, language))
    return result


def manoeuvre_notice(
    *,
    platform: common_pb2.PlatformIdentity,
    lat: float,
    lon: float,
    course: float,
    speed: float,
    signals: Iterable[int],
    new_course: float | None = None,
    new_speed: float | None = None,
    effective_time: datetime | None = None,
    expected_duration_s: float | None = None,
    keep_clear_m: float | None = None,
    intention: Text | None = None,
    language: str = "en",
) -> bodies_pb2.ManoeuvreNotice:
    """Advance notice of a manoeuvre (CUES signals). Give `new_course`/`new_speed` for course
    or speed changes (either defaults to the current value)."""
    result = bodies_pb2.ManoeuvreNotice(
        platform=platform,
        position=position(lat, lon),
        current_kinematics=kinematics(course, speed),
        effective_time=timestamp(effective_time),
        signals=list(signals),  # type: ignore[arg-type]
    )
    if new_course is not None or new_speed is not None:
        result.intended_kinematics.CopyFrom(
            kinematics(
                course if new_course is None else new_course,
                speed if new_speed is None else new_speed,
            )
        )
    if expected_duration_s is not None:
        result.expected_duration.CopyFrom(duration(expected_duration_s))
    if keep_clear_m is not None:
        result.keep_clear_m = keep_clear_m
    if intention is not None:
        result.intention.CopyFrom(_text(intention, language))
    return result


def air_incident(
    *,
    kind: int,
    aircraft: common_pb2.PlatformIdentity,
    lat: float,
    lon: float,
    observation_time: datetime | None = None,
    altitude_ft: int | None = None,
    course: float | None = None,
    speed: float | None = None,
    squawk: str = "",
    adiz_name: str = "",
    intercepting_platform: common_pb2.PlatformIdentity | None = None,
    closest_approach_m: float | None = None,
    track_number: str = "",
    remarks: Text | None = None,
    language: str = "en",
) -> bodies_pb2.AirIncidentReport:
    """A report of an air incident (ADIZ entry, intercept, unidentified track, ...)."""
    result = bodies_pb2.AirIncidentReport(
        kind=kind,  # type: ignore[arg-type]
        aircraft=aircraft,
        position=position(lat, lon),
        observation_time=timestamp(observation_time),
        squawk=squawk,
        adiz_name=adiz_name,
        track_number=track_number,
    )
    if altitude_ft is not None:
        result.altitude_ft = altitude_ft
    if course is not None and speed is not None:
        result.kinematics.CopyFrom(kinematics(course, speed))
    if intercepting_platform is not None:
        result.intercepting_platform.CopyFrom(intercepting_platform)
    if closest_approach_m is not None:
        result.closest_approach_m = closest_approach_m
    if remarks is not None:
        result.remarks.CopyFrom(_text(remarks, language))
    return result


def hazardous_activity(
    *,
    kind: int,
    area: common_pb2.Area,
    start_time: datetime,
    end_time: datetime,
    description: Text,
    lower_ft: int | None = None,
    upper_ft: int | None = None,
    navigational_warning: str = "",
    notam_number: str = "",
    notam_fir: str = "",
    conducting_platforms: Sequence[common_pb2.PlatformIdentity] = (),
    language: str = "en",
) -> bodies_pb2.HazardousActivityNotice:
    """Advance notice of a hazardous activity in an area, between two times."""
    result = bodies_pb2.HazardousActivityNotice(
        kind=kind,  # type: ignore[arg-type]
        area=area,
        window=common_pb2.TimeWindow(
            start_time=timestamp(start_time), end_time=timestamp(end_time)
        ),
        navigational_warning=navigational_warning,
        notam_number=notam_number,
        notam_fir=notam_fir,
        conducting_platforms=list(conducting_platforms),
        description=_text(description, language),
    )
    if lower_ft is not None or upper_ft is not None:
        result.altitude_band.lower_ft = lower_ft or 0
        result.altitude_band.upper_ft = 999999 if upper_ft is None else upper_ft
    return result


def launch_warning(
    *,
    launch_lat: float,
    launch_lon: float,
    launch_time: datetime,
    missile_kind: int,
    confidence: int,
    update_number: int = 0,
    bearing_deg: float | None = None,
    impact_area: common_pb2.Area | None = None,
    impact_time: datetime | None = None,
    apogee_km: float | None = None,
    launch_count: int | None = None,
    remarks: Text | None = None,
    language: str = "en",
) -> bodies_pb2.LaunchWarning:
    """Warning of a missile or rocket launch (update_number 0 for the first of a series)."""
    result = bodies_pb2.LaunchWarning(
        update_number=update_number,
        launch_point=position(launch_lat, launch_lon),
        launch_time=timestamp(launch_time),
        missile_kind=missile_kind,  # type: ignore[arg-type]
        confidence=confidence,  # type: ignore[arg-type]
    )
    if bearing_deg is not None:
        result.bearing_deg_true = bearing_deg
    if impact_area is not None:
        result.predicted_impact_area.CopyFrom(impact_area)
    if impact_time is not None:
        result.predicted_impact_time.CopyFrom(timestamp(impact_time))
    if apogee_km is not None:
        result.apogee_km = apogee_km
    if launch_count is not None:
        result.launch_count = launch_count
    if remarks is not None:
        result.remarks.CopyFrom(_text(remarks, language))
    return result


def sar_request(
    *,
    incident_kind: int,
    distress_phase: int,
    object_in_distress: common_pb2.PlatformIdentity,
    lat: float,
    lon: float,
    assistance: Iterable[int],
    requesting_rcc: str,
    last_known_time: datetime | None = None,
    persons_on_board: int | None = None,
    search_area: common_pb2.Area | None = None,
    situation: Text | None = None,
    language: str = "en",
) -> bodies_pb2.SarRequest:
    """A request for search and rescue assistance (IAMSAR initial alert)."""
    result = bodies_pb2.SarRequest(
        incident_kind=incident_kind,  # type: ignore[arg-type]
        distress_phase=distress_phase,  # type: ignore[arg-type]
        object_in_distress=object_in_distress,
        last_known_position=position(lat, lon),
        last_known_time=timestamp(last_known_time),
        assistance_requested=list(assistance),  # type: ignore[arg-type]
        requesting_rcc=requesting_rcc,
    )
    if persons_on_board is not None:
        result.persons_on_board = persons_on_board
    if search_area is not None:
        result.search_area.CopyFrom(search_area)
    if situation is not None:
        result.situation.CopyFrom(_text(situation, language))
    return result


def link_test(
    test_number: int,
    text: Text = "The quick brown fox jumps over the lazy dog.",
    *,
    send_time: datetime | None = None,
    scheduled: bool = False,
    language: str = "en",
) -> bodies_pb2.LinkTest:
    """An operator's link test (send it ROUTINE with status TEST; the other watch ROGERs it)."""
    return bodies_pb2.LinkTest(
        test_number=test_number,
        send_time=timestamp(send_time),
        scheduled=scheduled,
        text=_text(text, language),
    )


def call_request(
    *,
    requesting: bodies_pb2.Principal,
    requested: bodies_pb2.Principal,
    topic: Text,
    urgency: int = bodies_pb2.CALL_URGENCY_IMMEDIATE,
    proposed_time: datetime | None = None,
    callback_number: str = "",
    circuit_id: str = "",
    call_language: str = "en",
    interpreter_requested: bool = False,
    language: str = "en",
) -> bodies_pb2.CallRequest:
    """A request for a voice call between principals (give a callback number or circuit id)."""
    result = bodies_pb2.CallRequest(
        requesting_principal=requesting,
        requested_principal=requested,
        urgency=urgency,  # type: ignore[arg-type]
        topic=_text(topic, language),
        callback_number=callback_number,
        circuit_id=circuit_id,
        language=call_language,
        interpreter_requested=interpreter_requested,
    )
    if proposed_time is not None:
        result.proposed_time.CopyFrom(timestamp(proposed_time))
    return result


# ------------------------------------------------------------------------- files


def _parse_file(path: Path, message: M) -> M:
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            json_format.Parse(content, message)
        elif suffix in (".txtpb", ".textproto", ".pbtxt", ".txt"):
            text_format.Parse(content, message)
        else:
            raise ConfigError(
                f"{path}: unknown format {suffix!r} (use .txtpb for protobuf text format or .json)"
            )
    except (text_format.ParseError, json_format.ParseError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid {message.DESCRIPTOR.name}: {exc}") from None
    return message


def envelope_from_file(path: Path | str) -> envelope_pb2.Envelope:
    """Read an Envelope from protobuf text format (.txtpb) or protobuf JSON (.json)."""
    return _parse_file(Path(path), envelope_pb2.Envelope())


def envelopes_from_file(path: Path | str) -> list[envelope_pb2.Envelope]:
    """Envelopes from a file: one (.txtpb, .json), or one protobuf-JSON envelope per line
    (.jsonl; blank lines skipped) for sending many in batches."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        return [envelope_from_file(path)]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    envelopes = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        envelope = envelope_pb2.Envelope()
        try:
            json_format.Parse(line, envelope)
        except (json_format.ParseError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}:{number}: not a valid Envelope: {exc}") from None
        envelopes.append(envelope)
    if not envelopes:
        raise ConfigError(f"{path} holds no envelope")
    return envelopes


def body_from_file(path: Path | str, member: str) -> Message:
    """Read a body of the `Envelope.body` member `member` (e.g. "sar_sitrep") from a file."""
    field = envelope_pb2.Envelope.DESCRIPTOR.fields_by_name.get(member)
    if field is None or field.containing_oneof is None or field.containing_oneof.name != "body":
        known = ", ".join(f.name for f in _BODY_ONEOF.fields)
        raise ConfigError(f"unknown body type {member!r} (one of {known})")
    envelope = envelope_pb2.Envelope()
    body: Message = getattr(envelope, field.name)
    return _parse_file(Path(path), body)


# ------------------------------------------------------------------------- display


def _deg(value: float, positive: str, negative: str) -> str:
    return f"{abs(value):.2f}{positive if value >= 0 else negative}"


def _where(pos: common_pb2.Position) -> str:
    return f"{_deg(pos.latitude_deg, 'N', 'S')} {_deg(pos.longitude_deg, 'E', 'W')}"


def _who(identity: common_pb2.PlatformIdentity) -> str:
    for value in (
        identity.name,
        identity.hull_number,
        identity.callsign,
        identity.icao_address,
        identity.mmsi,
    ):
        if value:
            return value
    return _PLATFORMS.get(identity.kind, "an unidentified platform")


_PLATFORMS = {  # a platform reported without a name or number
    common_pb2.PLATFORM_KIND_SURFACE_VESSEL: "an unnamed surface vessel",
    common_pb2.PLATFORM_KIND_SUBMARINE: "an unnamed submarine",
    common_pb2.PLATFORM_KIND_AIRCRAFT: "an unidentified aircraft",
    common_pb2.PLATFORM_KIND_UNMANNED_AERIAL: "an unidentified drone",
    common_pb2.PLATFORM_KIND_UNMANNED_SURFACE: "an unmanned surface vessel",
    common_pb2.PLATFORM_KIND_COAST_GUARD_VESSEL: "an unnamed coast guard vessel",
    common_pb2.PLATFORM_KIND_FISHING_VESSEL: "an unnamed fishing vessel",
    common_pb2.PLATFORM_KIND_MERCHANT_VESSEL: "an unnamed merchant vessel",
    common_pb2.PLATFORM_KIND_UNMANNED_UNDERWATER: "an unmanned underwater vehicle",
}


# Kept in capitals when an enum value's name is turned into words.
_ACRONYMS = frozenset({"ADIZ", "AIS", "GNSS", "SAR", "HADR", "CPA", "TLP", "UTC"})


def _words(enum: object, value: int, prefix: str) -> str:
    """An enum value as words: `MISSILE_KIND_SPACE_LAUNCH` -> "space launch" (acronyms kept)."""
    name: str = enum.Name(value)  # type: ignore[attr-defined]
    return " ".join(
        w if w in _ACRONYMS else w.lower() for w in name.removeprefix(prefix).split("_")
    )


def _enum(enum: object, value: int, prefix: str) -> str:
    name: str = enum.Name(value)  # type: ignore[attr-defined]
    return name.removeprefix(prefix).replace("_", " ")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _area(area: common_pb2.Area) -> str:
    if area.HasField("circle"):
        return f"within {area.circle.radius_m / 1000:g} km of {_where(area.circle.center)}"
    if area.polygon.vertices:
        return f"near {_where(area.polygon.vertices[0])}"
    return ""


def _listed(items: Iterable[str], most: int = 3) -> str:
    """ "a, b and c", or "a, b, c and 2 more" past `most`."""
    unique = list(dict.fromkeys(items))
    if len(unique) > most:
        return ", ".join(unique[:most]) + f" and {len(unique) - most} more"
    return (
        " and ".join([", ".join(unique[:-1]), unique[-1]]) if len(unique) > 1 else "".join(unique)
    )


_LAUNCHES = {  # (one launch, several)
    bodies_pb2.MISSILE_KIND_BALLISTIC: ("ballistic missile launch", "ballistic missile launches"),
    bodies_pb2.MISSILE_KIND_CRUISE: ("cruise missile launch", "cruise missile launches"),
    bodies_pb2.MISSILE_KIND_SPACE_LAUNCH: ("space launch", "space launches"),
    bodies_pb2.MISSILE_KIND_HYPERSONIC_GLIDE: (
        "hypersonic glide vehicle launch",
        "hypersonic glide vehicle launches",
    ),
}


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def _signal(value: int) -> str:
    """A CUES-style manoeuvring signal as what the ship is doing: "altering course to port"."""
    words = _words(bodies_pb2.ManoeuvringSignal, value, "MANOEUVRING_SIGNAL_")
    return words.removeprefix("i am ")


def describe_body(envelope: envelope_pb2.Envelope, language: str = "en") -> str:
    """One line saying what a message is about, for watch floors and logs: a sentence in
    words (enum names spelled out, acronyms kept), the most telling fields first."""
    member = envelope.WhichOneof("body")
    if member == "free_text":
        return text_of(envelope.free_text.subject, language)
    if member == "maritime_encounter":
        r = envelope.maritime_encounter
        kind = _words(bodies_pb2.EncounterType, r.encounter_type, "ENCOUNTER_TYPE_")
        kind = "encounter" if kind in ("unspecified", "other") else kind
        others = _listed(_who(c.identity) for c in r.contacts) or "an unreported contact"
        cpa = f", CPA {r.cpa_m:.0f} m" if r.HasField("cpa_m") else ""
        return (
            f"{_sentence(kind)}: {_who(r.reporting_platform)} and {others} at "
            f"{_where(r.reporting_position)}{cpa}"
        )
    if member == "manoeuvre_notice":
        n = envelope.manoeuvre_notice
        doing = _listed((_signal(s) for s in n.signals), most=2) or "manoeuvring"
        course = (
            f", new course {n.intended_kinematics.course_deg_true:03.0f}T at "
            f"{n.intended_kinematics.speed_kn:g} kn"
            if n.HasField("intended_kinematics")
            else ""
        )
        return f"{_who(n.platform)} {doing}{course}"
    if member == "air_incident":
        a = envelope.air_incident
        kind = _words(bodies_pb2.AirIncidentKind, a.kind, "AIR_INCIDENT_KIND_")
        kind = "air incident" if kind in ("unspecified", "other") else kind
        alt = f", FL{a.altitude_ft // 100:03d}" if a.HasField("altitude_ft") else ""
        adiz = f" in {a.adiz_name}" if a.adiz_name else ""
        return f"{_sentence(kind)}: {_who(a.aircraft)} at {_where(a.position)}{alt}{adiz}"
    if member == "hazardous_activity":
        h = envelope.hazardous_activity
        kind = _words(bodies_pb2.HazardousActivityKind, h.kind, "HAZARDOUS_ACTIVITY_KIND_")
        kind = "hazardous activity" if kind in ("unspecified", "other") else kind
        area = _area(h.area)
        notice = h.notam_number or h.navigational_warning
        return f"{_sentence(kind)}{' ' + area if area else ''}{f' ({notice})' if notice else ''}"
    if member == "launch_warning":
        w = envelope.launch_warning
        one, several = _LAUNCHES.get(w.missile_kind, ("missile launch", "missile launches"))
        count = f"{w.launch_count} {several}" if w.launch_count > 1 else one
        update = f", update {w.update_number}" if w.update_number else ""
        return f"{_sentence(count)} from {_where(w.launch_point)}{update}"
    if member == "sar_request":
        s = envelope.sar_request
        kind = _words(bodies_pb2.SarIncidentKind, s.incident_kind, "SAR_INCIDENT_KIND_")
        kind = "" if kind in ("unspecified", "other") else f", {kind}"
        aboard = f", {s.persons_on_board} on board" if s.persons_on_board else ""
        return (
            f"SAR request{kind}: {_who(s.object_in_distress)} at "
            f"{_where(s.last_known_position)}{aboard}"
        )
    if member == "sar_sitrep":
        sitrep = envelope.sar_sitrep
        status = _words(bodies_pb2.SarStatus, sitrep.status, "SAR_STATUS_")
        counts = [
            f"{n} {what}"
            for n, what in (
                (sitrep.persons_rescued, "rescued"),
                (sitrep.persons_missing, "missing"),
                (sitrep.persons_deceased, "deceased"),
            )
            if n
        ]
        state = f" ({status})" if sitrep.status else ""
        return f"SAR sitrep {sitrep.sitrep_number}{state}" + (
            f": {', '.join(counts)}" if counts else ""
        )
    if member == "hadr_request":
        req = envelope.hadr_request
        disaster = _words(bodies_pb2.DisasterKind, req.disaster_kind, "DISASTER_KIND_")
        disaster = "" if disaster in ("unspecified", "other") else f" after {_a(disaster)}"
        needs = _listed(
            _words(bodies_pb2.ReliefCategory, i.category, "RELIEF_CATEGORY_") for i in req.needs
        )
        affected = (
            f"; {req.affected_population:,} people affected" if req.affected_population else ""
        )
        return f"HADR request{disaster}" + (f": {needs} needed" if needs else "") + affected
    if member == "hadr_offer":
        o = envelope.hadr_offer
        items = _listed(
            _words(bodies_pb2.ReliefCategory, i.category, "RELIEF_CATEGORY_")
            for i in o.items_offered
        )
        mode = _words(bodies_pb2.DeliveryMode, o.delivery_mode, "DELIVERY_MODE_")
        by = {"unspecified": "", "collection": ", for collection"}.get(mode, f" by {mode}")
        return "HADR offer" + (f": {items}" if items else "") + by
    if member == "evacuation":
        e = envelope.evacuation
        phase = _words(bodies_pb2.EvacuationPhase, e.phase, "EVACUATION_PHASE_")
        name = f" {e.operation_name}" if e.operation_name else ""
        people = sum(n.count for n in e.nationals)
        nationals = f": {people:,} nationals" if people else ""
        return f"Evacuation{name}" + (f" ({phase})" if e.phase else "") + nationals
    if member == "cyber_threat":
        c = envelope.cyber_threat
        severity = _words(bodies_pb2.CyberSeverity, c.severity, "CYBER_SEVERITY_")
        tlp = bodies_pb2.Tlp.Name(c.tlp).removeprefix("TLP_").replace("_", "+")
        marks = ", ".join(
            m for m in (severity if c.severity else "", f"TLP:{tlp}" if c.tlp else "") if m
        )
        targets = _listed(
            _words(bodies_pb2.InfrastructureKind, k, "INFRASTRUCTURE_KIND_")
            for k in c.affected_infrastructure
        )
        return (
            "Cyber threat"
            + (f" ({marks})" if marks else "")
            + (f" to {targets}" if targets else "")
            + (f", {c.advisory_id}" if c.advisory_id else "")
        )
    if member == "link_test":
        return f"Link test #{envelope.link_test.test_number}"
    if member == "call_request":
        call = envelope.call_request
        urgency = _words(bodies_pb2.CallUrgency, call.urgency, "CALL_URGENCY_")
        when = {"immediate": " now", "within hour": " within the hour"}.get(urgency, "")
        return f"Call requested{when}: {text_of(call.topic, language)}"
    if member == "acknowledgement":
        ack = envelope.acknowledgement
        level = _enum(bodies_pb2.AcknowledgementLevel, ack.level, "ACKNOWLEDGEMENT_LEVEL_")
        return f"{level} to {short_id(ack.acknowledged_message_id)}"
    return "No body" if member is None else _sentence(member.replace("_", " "))


def short_id(message_id: str) -> str:
    """The last 8 hex digits of a message id: UUIDv7s made within a minute share their first
    digits (the clock), so the tail is what tells them apart on a crowded screen."""
    return "…" + message_id[-8:] if len(message_id) > 8 else message_id
