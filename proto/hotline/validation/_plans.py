"""What the compiler resolved for each message type: the plans `_codegen` writes checks from.

A `FieldPlan` holds one field's presence (`required`, `required if C`, `filled by gateway`) and
its tests; a `MessagePlan`, a message type's fields in declaration order and its rules (each a
`_rules.RulePlan`). The closures they hold say exactly what is wrong (`FieldPlan.absent`,
`ValueTest.explain`, `RulePlan.check`); the code `_codegen` writes from them only decides,
quickly, whether to call one.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from hotline.errors import Violation
from hotline.validation._rules import Cond, RulePlan
from hotline.validation._values import Absent, Carrier, ItemsTest, Out, ValueTest

_F = FieldDescriptor


@dataclass(frozen=True)
class FieldPlan:
    """One field's constraints, resolved by the compiler: what its check is written from."""

    fd: FieldDescriptor
    always: bool  # `required`
    filled_by_gateway: bool
    conditions: tuple[tuple[Cond, str], ...]  # `required if C`: C, and its text
    tests: tuple[ValueTest, ...]  # of the value; of each item, for a repeated field
    items_tests: tuple[ItemsTest, ...]  # of a repeated field as a whole, before its items'
    sub: str | None  # the message type whose check a set submessage gets
    carries: bool  # a body of an envelope: its rules may refer to the envelope

    @property
    def optional(self) -> bool:
        """Unset, the field reports nothing."""
        return not self.always and not self.conditions

    @property
    def zero_is_value(self) -> bool:
        """A number or bool without explicit presence: when required, zero is the value zero."""
        fd = self.fd
        return (
            not fd.is_repeated
            and not fd.has_presence
            and fd.cpp_type not in (_F.CPPTYPE_STRING, _F.CPPTYPE_ENUM, _F.CPPTYPE_MESSAGE)
        )

    @property
    def missing(self) -> str:
        """What a required field reports when unset."""
        fd = self.fd
        if fd.is_repeated:
            return "must have at least one item"
        if fd.enum_type is not None:
            zero = fd.enum_type.values_by_number.get(0)
            return f"must not be {zero.name}" if zero is not None else "must be set"
        if fd.cpp_type == _F.CPPTYPE_STRING and not fd.has_presence:
            return "must not be empty"
        return "must be set"

    def absent(self) -> Absent:
        """What the field reports when unset, in general: True when nothing more is to be
        checked, False when its zero is to be checked as a value."""
        name, always, filled_by_gateway = self.fd.name, self.always, self.filled_by_gateway
        zero_is_value = self.zero_is_value
        required = f"required: {self.missing}"
        when = tuple(
            (condition.holds, f"required when {text}: {self.missing}")
            for condition, text in self.conditions
        )

        def absent(msg: Message, prefix: str, filled: bool, carrier: Carrier, out: Out) -> bool:
            problem = None
            if always and (filled or not filled_by_gateway):
                problem = required
            else:
                for holds, because in when:
                    if holds(msg, carrier):
                        problem = because
                        break
            if problem is None:
                return True
            if zero_is_value:
                return False
            out.append(Violation(prefix + name, problem))
            return True

        return absent


@dataclass(frozen=True)
class MessagePlan:
    """A message type's fields, in declaration order, and its rules, in the order written."""

    desc: Descriptor
    fields: tuple[FieldPlan, ...]
    rules: tuple[RulePlan, ...]
