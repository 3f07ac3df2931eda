"""The wire stays compatible with the committed baseline `proto/baseline/hotline-v1.binpb`.

`buf breaking` (in `make lint` and CI) checks this with all of buf's FILE rules; this test checks
the core of it without buf, so that it runs everywhere the tests run: every message, field, enum
value, service and RPC of the baseline still exists with the same number, name, type and label,
or its number and name are reserved. Changing the baseline is deliberate: `make baseline`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2, peer_link_pb2

BASELINE = Path(__file__).resolve().parents[2] / "proto" / "baseline" / "hotline-v1.binpb"
MODULES = (common_pb2, envelope_pb2, bodies_pb2, peer_link_pb2, operator_pb2)

Proto = descriptor_pb2.FileDescriptorProto


def current() -> dict[str, Proto]:
    files = {}
    for module in MODULES:
        proto = Proto()
        module.DESCRIPTOR.CopyToProto(proto)
        files[proto.name] = proto
    return files


def baseline() -> dict[str, Proto]:
    image = descriptor_pb2.FileDescriptorSet.FromString(BASELINE.read_bytes())
    return {f.name: f for f in image.file if f.name.startswith("hotline/")}


def _messages(
    scope: str, messages: list[descriptor_pb2.DescriptorProto]
) -> dict[str, descriptor_pb2.DescriptorProto]:
    found = {}
    for message in messages:
        name = f"{scope}.{message.name}"
        found[name] = message
        found |= _messages(name, list(message.nested_type))
    return found


def _enums(files: dict[str, Proto]) -> dict[str, descriptor_pb2.EnumDescriptorProto]:
    found = {}
    for proto in files.values():
        for enum in proto.enum_type:
            found[f"{proto.package}.{enum.name}"] = enum
        for name, message in _messages(proto.package, list(proto.message_type)).items():
            for enum in message.enum_type:
                found[f"{name}.{enum.name}"] = enum
    return found


def incompatible(old: dict[str, Proto], new: dict[str, Proto]) -> list[str]:
    """What `new` changed in `old` in a way the wire notices."""
    problems: list[str] = []
    old_msgs = {
        k: v for p in old.values() for k, v in _messages(p.package, list(p.message_type)).items()
    }
    new_msgs = {
        k: v for p in new.values() for k, v in _messages(p.package, list(p.message_type)).items()
    }
    for name, before in old_msgs.items():
        after = new_msgs.get(name)
        if after is None:
            problems.append(f"message {name} was removed")
            continue
        fields = {f.number: f for f in after.field}
        reserved = {n for r in after.reserved_range for n in range(r.start, r.end)}
        for field in before.field:
            now = fields.get(field.number)
            if now is None:
                if field.number not in reserved or field.name not in after.reserved_name:
                    problems.append(f"{name}.{field.name} ({field.number}) removed, not reserved")
                continue
            same = (now.name, now.type, now.type_name, now.label, now.HasField("oneof_index"))
            was = (
                field.name,
                field.type,
                field.type_name,
                field.label,
                field.HasField("oneof_index"),
            )
            if same != was:
                problems.append(f"{name}.{field.name} ({field.number}) changed: {was} -> {same}")
    new_enums = _enums(new)
    for name, before_enum in _enums(old).items():
        after_enum = new_enums.get(name)
        if after_enum is None:
            problems.append(f"enum {name} was removed")
            continue
        values = {v.number: v.name for v in after_enum.value}
        for value in before_enum.value:
            if values.get(value.number) != value.name:
                problems.append(f"{name}.{value.name} ({value.number}) removed or renamed")
    for proto in old.values():
        now_services = {s.name: s for p in new.values() for s in p.service}
        for service in proto.service:
            methods = {m.name: m for m in now_services.get(service.name, service).method}
            if service.name not in now_services:
                problems.append(f"service {service.name} was removed")
            for method in service.method:
                now_method = methods.get(method.name)
                if now_method is None or (now_method.input_type, now_method.output_type) != (
                    method.input_type,
                    method.output_type,
                ):
                    problems.append(f"rpc {service.name}.{method.name} removed or retyped")
    return problems


@pytest.mark.must("VER-2")
def test_the_wire_is_compatible_with_the_committed_baseline() -> None:
    assert incompatible(baseline(), current()) == []


@pytest.mark.must("VER-2")
def test_a_renumbered_or_removed_field_is_noticed() -> None:
    old = baseline()
    new = {name: Proto.FromString(p.SerializeToString()) for name, p in old.items()}
    envelope = next(
        m for m in new["hotline/v1/envelope.proto"].message_type if m.name == "Envelope"
    )
    envelope.field[0].number = 99
    del envelope.field[1]
    problems = incompatible(old, new)
    assert any("Envelope.message_id (1) removed, not reserved" in p for p in problems)
    assert any("Envelope.sender_party (2) removed, not reserved" in p for p in problems)
