"""What a message puts on the console's map, and the map as the traffic has left it.

`features_of(envelope)` reads every position in a message body — vessels and aircraft with
their course vectors, the closest point of approach of an encounter, keep-clear circles, hazard
areas, launch points and predicted impact areas, SAR datums and search areas, reception and
assembly points — into plain, JSON-ready `Feature` dicts. `Situation` keeps the features
currently shown, keyed by the message that put them there: a NEW message adds its own, an
UPDATE replaces the messages it references, a CANCEL removes them.

The page only draws what it is given: every coordinate (a vector's end, a CPA point) is
computed here, so no geometry and no rule of the protocol lives in JavaScript.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hotline.v1 import common_pb2, envelope_pb2

Feature = dict[str, Any]

__all__ = ["Feature", "MapChange", "Situation", "features_of"]

# A course vector shows where a platform will be after this long at its course and speed.
VECTOR_MINUTES_SURFACE = 10.0
VECTOR_MINUTES_AIR = 2.0
_AIR_KINDS = (common_pb2.PLATFORM_KIND_AIRCRAFT, common_pb2.PLATFORM_KIND_UNMANNED_AERIAL)
_NM_PER_DEG_LAT = 60.0


def dead_reckon(
    lat: float, lon: float, course: float, speed_kn: float, hours: float
) -> list[float]:
    """Where a platform will be after `hours` at `course` (degrees true) and `speed_kn`, on a
    flat earth (good to a few metres over the minutes and miles drawn here)."""
    distance_nm = speed_kn * hours
    rad = math.radians(course)
    dlat = distance_nm * math.cos(rad) / _NM_PER_DEG_LAT
    cos_lat = max(math.cos(math.radians(lat)), 1e-6)
    dlon = distance_nm * math.sin(rad) / (_NM_PER_DEG_LAT * cos_lat)
    return [round(lat + dlat, 6), round(lon + dlon, 6)]


def _who(identity: common_pb2.PlatformIdentity) -> str:
    for value in (identity.name, identity.callsign, identity.hull_number, identity.icao_address):
        if value:
            return value
    kind = common_pb2.PlatformKind.Name(identity.kind).removeprefix("PLATFORM_KIND_")
    return kind.replace("_", " ").lower()


def _is_air(identity: common_pb2.PlatformIdentity, air: bool | None = None) -> bool:
    return identity.kind in _AIR_KINDS if air is None else air


def _latlon(position: common_pb2.Position) -> list[float]:
    return [round(position.latitude_deg, 6), round(position.longitude_deg, 6)]


class _Builder:
    """Collects the features of one message, numbering them."""

    def __init__(self, envelope: envelope_pb2.Envelope) -> None:
        self.envelope = envelope
        self.features: list[Feature] = []

    def add(self, kind: str, role: str, label: str, **values: Any) -> None:
        env = self.envelope
        self.features.append(
            {
                "id": f"{env.message_id}:{len(self.features)}",
                "message_id": env.message_id,
                "sender": env.sender_party,
                "kind": kind,
                "role": role,
                "label": label,
                **values,
            }
        )

    def platform(
        self,
        identity: common_pb2.PlatformIdentity,
        position: common_pb2.Position,
        kinematics: common_pb2.Kinematics | None,
        *,
        role: str,
        air: bool | None = None,
        detail: str = "",
    ) -> None:
        is_air = _is_air(identity, air)
        label = _who(identity) + (f" ({detail})" if detail else "")
        values: dict[str, Any] = {
            "at": _latlon(position),
            "flag": identity.flag_party,
            "domain": "air" if is_air else "surface",
        }
        if kinematics is not None:
            values["course"] = round(kinematics.course_deg_true, 1)
            values["speed_kn"] = round(kinematics.speed_kn, 1)
            minutes = VECTOR_MINUTES_AIR if is_air else VECTOR_MINUTES_SURFACE
            values["vector"] = [
                values["at"],
                dead_reckon(
                    position.latitude_deg,
                    position.longitude_deg,
                    kinematics.course_deg_true,
                    kinematics.speed_kn,
                    minutes / 60,
                ),
            ]
        self.add("platform", role, label, **values)

    def area(self, area: common_pb2.Area, role: str, label: str) -> None:
        shape = area.WhichOneof("shape")
        if shape == "circle":
            self.add(
                "circle",
                role,
                label,
                at=_latlon(area.circle.center),
                radius_m=round(area.circle.radius_m, 1),
            )
        elif shape == "polygon" and len(area.polygon.vertices) >= 3:
            self.add("polygon", role, label, points=[_latlon(v) for v in area.polygon.vertices])

    def point(self, position: common_pb2.Position, role: str, label: str) -> None:
        self.add("point", role, label, at=_latlon(position))


def features_of(envelope: envelope_pb2.Envelope) -> list[Feature]:
    """Every position a message gives, as map features (none for bodies without positions)."""
    b = _Builder(envelope)
    member = envelope.WhichOneof("body")
    if member == "maritime_encounter":
        _encounter(b, envelope.maritime_encounter)
    elif member == "manoeuvre_notice":
        n = envelope.manoeuvre_notice
        if n.HasField("position"):
            current = n.current_kinematics if n.HasField("current_kinematics") else None
            b.platform(n.platform, n.position, current, role="manoeuvring")
            if n.HasField("intended_kinematics"):
                b.platform(
                    n.platform,
                    n.position,
                    n.intended_kinematics,
                    role="intended",
                    air=_is_air(n.platform),
                    detail="intended",
                )
            if n.HasField("keep_clear_m"):
                b.add(
                    "circle",
                    "keep-clear",
                    f"keep clear {n.keep_clear_m:.0f} m of {_who(n.platform)}",
                    at=_latlon(n.position),
                    radius_m=round(n.keep_clear_m, 1),
                )
    elif member == "air_incident":
        a = envelope.air_incident
        if a.HasField("position"):
            alt = f"FL{a.altitude_ft // 100:03d}" if a.HasField("altitude_ft") else ""
            kin = a.kinematics if a.HasField("kinematics") else None
            b.platform(a.aircraft, a.position, kin, role="aircraft", air=True, detail=alt)
    elif member == "hazardous_activity":
        h = envelope.hazardous_activity
        if h.HasField("area"):
            kind = _enum_label(h.DESCRIPTOR.fields_by_name["kind"], h.kind)
            b.area(h.area, "hazard", f"hazard: {kind}")
    elif member == "launch_warning":
        _launch(b, envelope.launch_warning)
    elif member == "sar_request":
        s = envelope.sar_request
        if s.HasField("last_known_position"):
            b.point(s.last_known_position, "datum", f"SAR datum: {_who(s.object_in_distress)}")
        if s.HasField("search_area"):
            b.area(s.search_area, "search", "SAR search area")
    elif member == "sar_sitrep":
        r = envelope.sar_sitrep
        if r.HasField("search_area"):
            b.area(r.search_area, "search", f"SAR search area (sitrep {r.sitrep_number})")
    elif member == "hadr_request":
        need = envelope.hadr_request
        if need.HasField("affected_area"):
            b.area(need.affected_area, "affected", "affected area")
        for place in need.reception_points:
            if place.HasField("position"):
                b.point(place.position, "place", f"reception: {place.name}")
    elif member == "hadr_offer":
        o = envelope.hadr_offer
        if o.HasField("delivery_point") and o.delivery_point.HasField("position"):
            b.point(o.delivery_point.position, "place", f"delivery: {o.delivery_point.name}")
    elif member == "evacuation":
        e = envelope.evacuation
        if e.HasField("area"):
            b.area(e.area, "evacuation", f"evacuation: {e.operation_name}")
        for point in e.assembly_points:
            if point.HasField("position"):
                b.point(point.position, "assembly", f"assembly: {point.name}")
        for transport in e.transports:
            if transport.HasField("destination") and transport.destination.HasField("position"):
                b.point(
                    transport.destination.position,
                    "place",
                    f"destination: {transport.destination.name}",
                )
    return b.features


def _enum_label(field_descriptor: Any, value: int) -> str:
    enum_value = field_descriptor.enum_type.values_by_number.get(value)
    if enum_value is None:
        return str(value)
    prefix = field_descriptor.enum_type.name
    # EncounterType -> ENCOUNTER_TYPE_
    snake = "".join(f"_{c}" if c.isupper() else c.upper() for c in prefix).lstrip("_") + "_"
    return str(enum_value.name).removeprefix(snake).replace("_", " ").lower()


def _encounter(b: _Builder, r: Any) -> None:
    own_kin = r.reporting_kinematics if r.HasField("reporting_kinematics") else None
    if r.HasField("reporting_position"):
        b.platform(r.reporting_platform, r.reporting_position, own_kin, role="reporting")
    for contact in r.contacts:
        if contact.HasField("position"):
            kin = contact.kinematics if contact.HasField("kinematics") else None
            b.platform(contact.identity, contact.position, kin, role="contact")
    if not (r.HasField("cpa_m") and r.HasField("reporting_position")):
        return
    # The closest point of approach: where the reporting platform will be at TCPA, with the CPA
    # distance drawn around it (the contact passes on that circle); with no TCPA, around where
    # it is now.
    at = _latlon(r.reporting_position)
    when = ""
    if r.HasField("tcpa") and own_kin is not None:
        seconds = r.tcpa.ToTimedelta().total_seconds()
        at = dead_reckon(
            r.reporting_position.latitude_deg,
            r.reporting_position.longitude_deg,
            own_kin.course_deg_true,
            own_kin.speed_kn,
            seconds / 3600,
        )
        when = f" in {seconds / 60:.0f} min"
    b.add("circle", "cpa", f"CPA {r.cpa_m:.0f} m{when}", at=at, radius_m=round(r.cpa_m, 1))


def _launch(b: _Builder, w: Any) -> None:
    kind = _enum_label(w.DESCRIPTOR.fields_by_name["missile_kind"], w.missile_kind)
    label = f"{kind} launch (update {w.update_number})"
    if w.HasField("launch_point"):
        b.point(w.launch_point, "launch", label)
    if w.HasField("predicted_impact_area"):
        b.area(
            w.predicted_impact_area, "impact", f"predicted impact area (update {w.update_number})"
        )
        area = w.predicted_impact_area
        centre = (
            area.circle.center
            if area.WhichOneof("shape") == "circle"
            else _centroid(area.polygon.vertices)
        )
        if w.HasField("launch_point") and centre is not None:
            b.add(
                "line",
                "trajectory",
                f"{kind} track (update {w.update_number})",
                points=[_latlon(w.launch_point), _latlon(centre)],
            )


def _centroid(vertices: Iterable[common_pb2.Position]) -> common_pb2.Position | None:
    points = list(vertices)
    if not points:
        return None
    return common_pb2.Position(
        latitude_deg=sum(p.latitude_deg for p in points) / len(points),
        longitude_deg=sum(p.longitude_deg for p in points) / len(points),
    )


@dataclass(frozen=True)
class MapChange:
    """What one message does to the map: features to show (by message id), messages to remove."""

    show: dict[str, list[Feature]]
    remove: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"show": self.show, "remove": self.remove}


@dataclass
class Situation:
    """The features on the map, keyed by the message that put them there.

    Both watch floors see every message (one sends it, the other receives it): the first
    sighting counts, the second changes nothing. A message that an UPDATE or a CANCEL has
    referenced stays off the map even if it is seen (again, or late) afterwards.
    """

    shown: dict[str, list[Feature]] = field(default_factory=dict)
    _seen: set[str] = field(default_factory=set)
    _ended: set[str] = field(default_factory=set)

    def apply(self, envelope: envelope_pb2.Envelope) -> MapChange | None:
        """Take one message into the picture; the change to draw, or None if nothing changes."""
        message_id = envelope.message_id
        if not message_id or message_id in self._seen:
            return None
        self._seen.add(message_id)
        remove: list[str] = []
        if envelope.action in (common_pb2.ACTION_UPDATE, common_pb2.ACTION_CANCEL):
            for ref in envelope.references:
                self._ended.add(ref)
                if self.shown.pop(ref, None) is not None:
                    remove.append(ref)
        show: dict[str, list[Feature]] = {}
        if envelope.action != common_pb2.ACTION_CANCEL and message_id not in self._ended:
            features = features_of(envelope)
            if features:
                self.shown[message_id] = features
                show[message_id] = features
        if not show and not remove:
            return None
        return MapChange(show, remove)
