"""The rules of a message's `Constraints:` line, bound to what the compiler resolved.

Each factory takes resolved paths (`Ref`), field descriptors and literals, and returns a
`RulePlan`: `exactly one of`, `at least one of`, `at most one ... with`, `contains`,
comparisons, a field clause on a nested path, and `if C:` conditions (`Cond`, also used by
`required if C`). A plan's `check` is a closure that reports exactly what the rule finds. Its
`quick`, where one can be written, is a Python expression on the message, true only when the
rule finds nothing, which the generated check of the message (`_codegen`) tests first: it reads
through unset submessages (which read as empty), so it may be false for a message the rule
accepts, never true for one it refuses. The compiler (`_compiler`) has already refused what the
grammar or the types do not allow; these only run.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from google.protobuf.descriptor import FieldDescriptor, OneofDescriptor
from google.protobuf.message import Message

from hotline.errors import Violation
from hotline.validation._values import (
    TIMESTAMP,
    Carrier,
    Code,
    Holds,
    Out,
    Step,
    attribute,
    formatter,
)

_F = FieldDescriptor
OPS: Final[Mapping[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
}
_PYTHON_OPS: Final = {"=": "==", "!=": "!=", ">": ">", ">=": ">="}
# An expression written for generated code (None: none can be written there, see `Ref.written`).
Quick: TypeAlias = Callable[[Code], str | None]


@dataclass(frozen=True)
class RulePlan:
    """A rule: `check` reports exactly what it finds; `quick`, if any, is true only when the
    rule finds nothing. `wants`: (repeated field, field of its items) whose values the quick
    expression would rather have collected (`Code.collected`)."""

    check: Step
    quick: Quick | None = None
    wants: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Cond:
    """A condition C: whether it holds; `unmet`, if any, an expression true only when it does
    not (for a generated check to skip what C guards)."""

    holds: Holds
    unmet: Quick | None


@dataclass(frozen=True)
class Ref:
    """A dotted path resolved against a message (or the envelope carrying it)."""

    text: str  # relative to its root, as shown in descriptions
    on_carrier: bool
    steps: tuple[str, ...]  # singular message fields walked before the last segment
    field: FieldDescriptor | None
    oneof: OneofDescriptor | None

    @property
    def direct(self) -> bool:
        """The last segment is a field of the message itself."""
        return not self.on_carrier and not self.steps

    def holder(self, msg: Message, carrier: Carrier) -> Message | None:
        """The message holding the last segment, or None when a step on the way is unset."""
        if self.on_carrier:
            if carrier is None:
                return None
            msg = carrier[0]
        for step in self.steps:
            if not msg.HasField(step):
                return None
            msg = getattr(msg, step)
        return msg

    def shown(self, prefix: str, carrier: Carrier) -> str:
        """The path from the message validated."""
        if self.on_carrier and carrier is not None:
            return carrier[1] + self.text
        return prefix + self.text

    def written(self, code: Code) -> bool:
        """Whether the path can be written as an expression where `code` is: a path on the
        carrying envelope only where the envelope is known."""
        return not self.on_carrier or code.envelope is not None

    def holder_expression(self, code: Code) -> str:
        """The holder as an expression on the message `code` is written for (or its
        envelope), read through unset submessages (see `written`)."""
        expression = code.msg
        if self.on_carrier:
            assert code.envelope is not None
            expression = code.envelope
        for step in self.steps:
            expression = code.read(attribute(expression, step))
        return expression

    def expression(self, code: Code, *, items: bool = False, shared: bool = True) -> str:
        """The field as an expression (`items`: a repeated field, as a list); `shared`: read
        once for all the expressions of the message (not when a guard may make it idle)."""
        assert self.field is not None
        read = attribute(self.holder_expression(code), self.field.name)
        if items:
            read = f"{read}[:]"
        return code.read(read) if shared else read


def is_set(fd: FieldDescriptor) -> Callable[[Message], bool]:
    """Whether a field holds a value, for comparisons: numbers without presence always do."""
    name = fd.name
    if fd.is_repeated:
        return lambda holder: len(getattr(holder, name)) > 0
    if fd.has_presence:
        return lambda holder: holder.HasField(name)
    if fd.cpp_type in (_F.CPPTYPE_STRING, _F.CPPTYPE_ENUM):
        return lambda holder: bool(getattr(holder, name))
    return lambda _holder: True


def is_present(fd: FieldDescriptor) -> Callable[[Message], bool]:
    """Whether an optional field is present: zero, empty and unset all read as absent."""
    name = fd.name
    if fd.is_repeated:
        return lambda holder: len(getattr(holder, name)) > 0
    if fd.has_presence:
        return lambda holder: holder.HasField(name)
    return lambda holder: bool(getattr(holder, name))


def _present(ref: Ref, code: Code) -> str:
    """`is_present` of a field as an expression (see `Ref.holder_expression`)."""
    holder, fd = ref.holder_expression(code), ref.field
    assert fd is not None
    if fd.is_repeated:
        return f"len({attribute(holder, fd.name)}) > 0"
    if fd.has_presence:
        return f"{holder}.HasField({fd.name!r})"
    return attribute(holder, fd.name)


def _unset(ref: Ref, code: Code) -> list[str]:
    """An expression true only when a field is unset by `is_set`, for a field with explicit
    presence; none for a scalar (it is compared as it is)."""
    holder, fd = ref.holder_expression(code), ref.field
    assert fd is not None
    if fd.has_presence and not fd.is_repeated:
        return [f"not {holder}.HasField({fd.name!r})"]
    return []


def _written(refs: tuple[Ref, ...], expression: Callable[[Code], str]) -> Quick:
    """A quick expression on these paths, where they can be written."""
    return lambda code: expression(code) if all(ref.written(code) for ref in refs) else None


# ---------------------------------------------------------------------------------------------
# Conditions
# ---------------------------------------------------------------------------------------------


def oneof_is(ref: Ref, members: frozenset[str]) -> Cond:
    """`<oneof> is <member>[ or ...]`."""
    assert ref.oneof is not None
    name, direct = ref.oneof.name, ref.direct

    def oneof_is_(msg: Message, carrier: Carrier) -> bool:
        holder = msg if direct else ref.holder(msg, carrier)
        return holder is not None and holder.WhichOneof(name) in members

    return Cond(
        oneof_is_,
        _written(
            (ref,),
            lambda code: (
                f"{code.which(ref.holder_expression(code), name)} not in "
                f"{code.bind(members, 'members')}"
            ),
        ),
    )


def enum_is(ref: Ref, numbers: frozenset[int]) -> Cond:
    """`<enum field> is <VALUE>[ or ...]`."""
    assert ref.field is not None
    name, direct = ref.field.name, ref.direct

    def enum_is_(msg: Message, carrier: Carrier) -> bool:
        holder = msg if direct else ref.holder(msg, carrier)
        return holder is not None and getattr(holder, name) in numbers

    return Cond(
        enum_is_,
        _written(
            (ref,), lambda code: f"{ref.expression(code)} not in {code.bind(numbers, 'members')}"
        ),
    )


def enum_contains(ref: Ref, numbers: frozenset[int]) -> Cond:
    """`<repeated enum field> contains <VALUE>[ or ...]`."""
    assert ref.field is not None
    name, direct = ref.field.name, ref.direct

    def enum_contains_(msg: Message, carrier: Carrier) -> bool:
        holder = msg if direct else ref.holder(msg, carrier)
        # A list: iterating a `upb` container itself ends on a raised IndexError.
        return holder is not None and any(item in numbers for item in getattr(holder, name)[:])

    return Cond(
        enum_contains_,
        _written(
            (ref,),
            lambda code: (
                f"{code.bind(numbers, 'members')}.isdisjoint({ref.expression(code, items=True)})"
            ),
        ),
    )


def when(condition: Cond, rule: RulePlan, text: str) -> RulePlan:
    """`if C: <rule>`: the rule runs when C holds, and its violations say so (`when type is
    ...: ...`)."""
    holds, check = condition.holds, rule.check

    def when_(msg: Message, prefix: str, filled: bool, carrier: Carrier, out: Out) -> None:
        if not holds(msg, carrier):
            return
        start = len(out)
        check(msg, prefix, filled, carrier, out)
        for index in range(start, len(out)):
            found = out[index]
            out[index] = Violation(found.field, text + found.description)

    unmet, quick = condition.unmet, rule.quick

    def either(code: Code) -> str | None:
        """C does not hold, or the rule finds nothing."""
        not_c = unmet(code) if unmet is not None else None
        nothing = quick(code) if quick is not None else None
        if not_c is None or nothing is None:
            return not_c or nothing
        return f"{not_c} or ({nothing})"

    return RulePlan(when_, either if unmet is not None or quick is not None else None)


# ---------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------


def exactly_one(oneof: OneofDescriptor) -> RulePlan:
    name = oneof.name
    members = [fd.name for fd in oneof.fields]
    listed = ", ".join(members) if len(members) <= 5 else f"its {len(members)} members"
    what = f"exactly one of {listed} must be set, none is"

    def exactly_one_(msg: Message, prefix: str, filled: bool, carrier: Carrier, out: Out) -> None:
        if msg.WhichOneof(name) is None:
            out.append(Violation(prefix + name, what))

    return RulePlan(exactly_one_, lambda code: f"{code.which(code.msg, name)} is not None")


def at_least_one(refs: list[Ref], paths: tuple[str, ...]) -> RulePlan:
    pairs = []
    for ref in refs:
        assert ref.field is not None
        pairs.append((ref, is_present(ref.field)))
    what = f"at least one of {', '.join(paths)} must be set"

    def at_least_one_(msg: Message, prefix: str, filled: bool, carrier: Carrier, out: Out) -> None:
        for ref, present in pairs:
            holder = ref.holder(msg, carrier)
            if holder is not None and present(holder):
                return
        out.append(Violation(refs[0].shown(prefix, carrier), what))

    return RulePlan(
        at_least_one_,
        _written(tuple(refs), lambda code: " or ".join(_present(r, code) for r in refs)),
    )


def at_most_one(ref: Ref, sub: str, number: int, value_name: str) -> RulePlan:
    assert ref.field is not None
    name = ref.field.name
    what = f"at most one item may have {sub} {value_name}"

    def at_most_one_(msg: Message, prefix: str, filled: bool, carrier: Carrier, out: Out) -> None:
        holder = ref.holder(msg, carrier)
        if holder is None:
            return
        count = [getattr(item, sub) for item in getattr(holder, name)[:]].count(number)
        if count > 1:
            out.append(Violation(ref.shown(prefix, carrier), f"{what}, {count} do"))

    key = attribute("item", sub)

    def quick(code: Code) -> str:
        values = code.collected(name, sub) if ref.direct else None
        if values is not None:
            return f"{values}.count({number}) <= 1"
        items = ref.expression(code, items=True)
        return f"len({items}) <= 1 or [{key} for item in {items}].count({number}) <= 1"

    wants = ((name, sub),) if ref.direct else ()
    return RulePlan(at_most_one_, _written((ref,), quick), wants)


def contains(left: Ref, right: Ref) -> RulePlan:
    assert left.field is not None
    assert right.field is not None
    show = formatter(right.field)
    items_name, wanted_name = left.field.name, right.field.name
    left_set, right_set = is_set(left.field), is_set(right.field)

    def contains_(msg: Message, prefix: str, filled: bool, carrier: Carrier, out: Out) -> None:
        holder = left.holder(msg, carrier)
        other_holder = right.holder(msg, carrier)
        if holder is None or other_holder is None:
            return
        if not left_set(holder) or not right_set(other_holder):
            return
        wanted = getattr(other_holder, wanted_name)
        if wanted not in getattr(holder, items_name)[:]:
            out.append(
                Violation(
                    left.shown(prefix, carrier),
                    f"must contain {right.shown(prefix, carrier)} ({show(wanted)})",
                )
            )

    return RulePlan(
        contains_,
        _written(
            (left, right),
            lambda code: f"{right.expression(code)} in {left.expression(code, items=True)}",
        ),
    )


def compare_with_literal(left: Ref, op: str, literal: Any) -> RulePlan:
    """`<path> <op> <literal>`: never a Timestamp or a Duration, so the value compares as it is."""
    assert left.field is not None
    test = OPS[op]
    show = formatter(left.field)
    name, direct = left.field.name, left.direct
    left_set = is_set(left.field)
    literal_shown = show(literal)
    verb = {"=": "must be", "!=": "must differ from", ">": "must be greater than"}.get(
        op, "must be at least"
    )

    def compare(msg: Message, prefix: str, filled: bool, carrier: Carrier, out: Out) -> None:
        holder = msg if direct else left.holder(msg, carrier)
        if holder is None or not left_set(holder):
            return
        value = getattr(holder, name)
        if not test(value, literal):
            out.append(
                Violation(left.shown(prefix, carrier), f"{verb} {literal_shown}, got {show(value)}")
            )

    python_op = _PYTHON_OPS[op]

    def quick(code: Code) -> str:
        value, literal_name = left.expression(code), code.bind(literal, "literal")
        return " or ".join([*_unset(left, code), f"{value} {python_op} {literal_name}"])

    return RulePlan(compare, _written((left,), quick))


def compare_fields(left: Ref, op: str, right: Ref) -> RulePlan:
    """`<path> <op> <path>`, of one type; a Timestamp or a Duration compares in time order."""
    left_fd, right_fd = left.field, right.field
    assert left_fd is not None
    assert right_fd is not None
    test = OPS[op]
    show = formatter(left_fd)
    name, other_name = left_fd.name, right_fd.name
    left_set, right_set = is_set(left_fd), is_set(right_fd)
    well_known = left_fd.message_type is not None
    in_time = left_fd.message_type is not None and left_fd.message_type.full_name == TIMESTAMP
    verb = {
        "=": "must equal",
        "!=": "must differ from",
        ">": "must be after" if in_time else "must be greater than",
        ">=": "must not be before" if in_time else "must be at least",
    }[op]
    left_direct, right_direct = left.direct, right.direct

    def compare(msg: Message, prefix: str, filled: bool, carrier: Carrier, out: Out) -> None:
        holder = msg if left_direct else left.holder(msg, carrier)
        if holder is None or not left_set(holder):
            return
        other = msg if right_direct else right.holder(msg, carrier)
        if other is None or not right_set(other):
            return
        a, b = getattr(holder, name), getattr(other, other_name)
        if well_known:
            a, b = (a.seconds, a.nanos), (b.seconds, b.nanos)
        if test(a, b):
            return
        other_shown = f"{right.shown(prefix, carrier)} ({show(getattr(other, other_name))})"
        if op == "!=":
            out.append(Violation(left.shown(prefix, carrier), f"{verb} {other_shown}"))
        else:
            got = show(getattr(holder, name))
            out.append(Violation(left.shown(prefix, carrier), f"{verb} {other_shown}, got {got}"))

    def quick(code: Code) -> str:
        # A Timestamp or a Duration is read after its presence guard only.
        a = left.expression(code, shared=not well_known)
        b = right.expression(code, shared=not well_known)
        if well_known:
            a, b = f"({a}.seconds, {a}.nanos)", f"({b}.seconds, {b}.nanos)"
        unset = [*_unset(left, code), *_unset(right, code)]
        return " or ".join([*unset, f"{a} {_PYTHON_OPS[op]} {b}"])

    return RulePlan(compare, _written((left, right), quick))


def path_clause(ref: Ref, check: Step, quick: Quick | None) -> RulePlan:
    """A field clause on a nested path (`window.end_time required`): `check` is the field's
    check, `quick` its quick yes."""
    dotted = ".".join(ref.steps) + "." if ref.steps else ""

    def path_clause_(msg: Message, prefix: str, filled: bool, carrier: Carrier, out: Out) -> None:
        holder = ref.holder(msg, carrier)
        if holder is None:
            return
        base = carrier[1] if ref.on_carrier and carrier is not None else prefix
        check(holder, base + dotted, filled, None, out)

    return RulePlan(path_clause_, quick)


def _acknowledgement_not_sent(
    msg: Message, prefix: str, filled: bool, carrier: Carrier, out: Out
) -> None:
    # The prose of OperatorService.Send: an acknowledgement body is refused with
    # INVALID_ARGUMENT; only the gateway creates one, through Acknowledge.
    if not filled and msg.WhichOneof("body") == "acknowledgement":
        out.append(
            Violation(
                prefix + "acknowledgement",
                "an acknowledgement is created by OperatorService.Acknowledge, never sent with Send",
            )
        )


# The one static rule in prose, on the Envelope: nothing to check on the wire (`filled`).
ACKNOWLEDGEMENT_NOT_SENT: Final = RulePlan(_acknowledgement_not_sent, lambda _code: "filled")
