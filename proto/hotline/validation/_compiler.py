"""The compiler: every `hotline.v1` message's `Constraints:` lines, bound to its descriptors.

Once per process, each message's lines are parsed (`_grammar`) and checked against the message
descriptors: paths resolved to fields, enum names to numbers, literals to the field's type,
clauses to the kinds of field they may restrict. What does not pass is a
`ConstraintSyntaxError` naming the line. What passes becomes, per message type, a plan: each
field's presence and `ValueTest`s (`_values`), each rule's `RulePlan` (`_rules`); `_codegen`
writes the message's check from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor

from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2, peer_link_pb2
from hotline.validation import _rules as rules
from hotline.validation import _values as values
from hotline.validation._codegen import MessageChecks, field_function, field_quick
from hotline.validation._grammar import (
    NUMBER,
    PATH_RE,
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
    ItemClause,
    Length,
    MessageRule,
    Multiline,
    PathClause,
    Pattern,
    Range,
    Rule,
    Unique,
    parse_field_constraints,
    parse_message_constraints,
)
from hotline.validation._plans import FieldPlan, MessagePlan
from hotline.validation._rules import Ref, RulePlan
from hotline.validation._values import (
    DURATION,
    FLOAT_TYPES,
    INTEGER_TYPES,
    NANOS,
    TIMESTAMP,
    ItemsTest,
    ValueTest,
)

# The files of the specification, in reading order.
SPEC_FILES: Final[tuple[FileDescriptor, ...]] = (
    common_pb2.DESCRIPTOR,
    envelope_pb2.DESCRIPTOR,
    bodies_pb2.DESCRIPTOR,
    peer_link_pb2.DESCRIPTOR,
    operator_pb2.DESCRIPTOR,
)

_ENVELOPE: Final = envelope_pb2.Envelope.DESCRIPTOR
_BODY: Final = _ENVELOPE.oneofs_by_name["body"]
_F = FieldDescriptor


class _Compiler:
    """Compiles the constraint table against the message descriptors."""

    def __init__(self, fields: Mapping[str, str], messages: Mapping[str, str]) -> None:
        self.fields = fields
        self.messages = messages
        # Every message type's plan, by full name (None until compiled).
        self.plans: dict[str, MessagePlan | None] = {}
        self.body_types = frozenset(
            fd.message_type.full_name for fd in _BODY.fields if fd.message_type
        )

    # -- paths ------------------------------------------------------------------------------

    def ref(self, desc: Descriptor, text: str, *, oneof: bool = False) -> Ref:
        segments = text.split(".")
        on_carrier = False
        head = segments[0]
        if (
            head == "envelope"
            and head not in desc.fields_by_name
            and desc.full_name in self.body_types
            and len(segments) > 1
        ):
            on_carrier, segments, desc = True, segments[1:], _ENVELOPE
        current = desc
        for step in segments[:-1]:
            fd = current.fields_by_name.get(step)
            if fd is None or fd.is_repeated or fd.message_type is None:
                raise ConstraintSyntaxError(
                    f"path {text!r}: {step!r} is not a singular message field of {current.full_name}"
                )
            current = fd.message_type
        last = segments[-1]
        if last in current.fields_by_name:
            return Ref(
                ".".join(segments),
                on_carrier,
                tuple(segments[:-1]),
                current.fields_by_name[last],
                None,
            )
        if oneof and last in current.oneofs_by_name:
            return Ref(
                ".".join(segments),
                on_carrier,
                tuple(segments[:-1]),
                None,
                current.oneofs_by_name[last],
            )
        raise ConstraintSyntaxError(f"path {text!r}: {current.full_name} has no field {last!r}")

    @staticmethod
    def field_of(ref: Ref) -> FieldDescriptor:
        if ref.field is None:
            raise ConstraintSyntaxError(f"{ref.text!r} is a oneof, not a field")
        return ref.field

    @staticmethod
    def enum_number(fd: FieldDescriptor, name: str) -> int:
        if fd.enum_type is None:
            raise ConstraintSyntaxError(
                f"{fd.name} is not an enum field, so {name!r} is no value of it"
            )
        value = fd.enum_type.values_by_name.get(name)
        if value is None:
            raise ConstraintSyntaxError(f"{name} is not a value of {fd.enum_type.full_name}")
        return value.number

    def condition(self, desc: Descriptor, condition: Condition) -> rules.Cond:
        ref = self.ref(desc, condition.path, oneof=condition.op == "is")
        if ref.oneof is not None:
            members = frozenset(condition.values)
            unknown = members - {fd.name for fd in ref.oneof.fields}
            if unknown:
                raise ConstraintSyntaxError(
                    f"oneof {ref.oneof.name} has no member {sorted(unknown)}"
                )
            return rules.oneof_is(ref, members)
        fd = self.field_of(ref)
        numbers = frozenset(self.enum_number(fd, name) for name in condition.values)
        if condition.op == "is":
            if fd.is_repeated:
                raise ConstraintSyntaxError(f"`is` on repeated field {fd.name}: use `contains`")
            return rules.enum_is(ref, numbers)
        if not fd.is_repeated:
            raise ConstraintSyntaxError(f"`contains` on singular field {fd.name}: use `is`")
        return rules.enum_contains(ref, numbers)

    # -- value clauses ----------------------------------------------------------------------

    @staticmethod
    def builtin_tests(
        fd: FieldDescriptor, *, item: bool, multiline: bool = False
    ) -> list[ValueTest]:
        """Tests every value of this field's type gets, whatever its constraints say (a string:
        no control characters, but for line feeds and tabs if it is `multiline`)."""
        if fd.type == _F.TYPE_STRING:
            return [values.MULTILINE_TEXT if multiline else values.PLAIN_TEXT]
        if fd.enum_type is not None:
            return [values.enum_declared(fd.enum_type, item=item)]
        if fd.cpp_type in FLOAT_TYPES:
            return [values.FINITE]
        if fd.message_type is not None and fd.message_type.full_name == TIMESTAMP:
            return [values.VALID_TIMESTAMP]
        if fd.message_type is not None and fd.message_type.full_name == DURATION:
            return [values.VALID_DURATION]
        return []

    def item_clause(self, fd: FieldDescriptor, clause: ItemClause) -> ValueTest:
        """A clause on one value (of a singular field, or an item of a repeated one)."""
        is_text = fd.cpp_type == _F.CPPTYPE_STRING
        is_bytes = fd.type == _F.TYPE_BYTES
        if isinstance(clause, Length):
            if clause.unit == "items":
                raise ConstraintSyntaxError(f"`items` on singular field {fd.name}")
            if clause.unit == "chars" and not (is_text and not is_bytes):
                raise ConstraintSyntaxError(f"`chars` on {fd.name}, which is not a string")
            if clause.unit == "bytes" and not is_bytes:
                raise ConstraintSyntaxError(f"`bytes` on {fd.name}, which is not bytes")
            return values.length(clause.low, clause.high, clause.unit)
        if isinstance(clause, Range):
            return self.range_clause(fd, clause)
        if not (is_text and not is_bytes):
            raise ConstraintSyntaxError(
                f"{type(clause).__name__.lower()} on {fd.name}, which is not a string"
            )
        if isinstance(clause, Pattern):
            return values.pattern(clause.regex)
        if isinstance(clause, Format):
            return values.format_(clause.name)
        if isinstance(clause, Multiline):
            return values.MULTILINE_TEXT
        return values.one_of(clause.values)

    @staticmethod
    def range_clause(fd: FieldDescriptor, clause: Range) -> ValueTest:
        open_ = clause.high_open
        if fd.message_type is not None and fd.message_type.full_name == DURATION:
            if not clause.seconds:
                raise ConstraintSyntaxError(f"range on Duration {fd.name} must be in seconds (`s`)")
            low_ns, high_ns = int(clause.low * NANOS), int(clause.high * NANOS)
            return values.duration_range(low_ns, high_ns, open_, clause.text)
        if clause.seconds:
            raise ConstraintSyntaxError(f"range in seconds on {fd.name}, which is not a Duration")
        if fd.cpp_type in INTEGER_TYPES:
            if (
                clause.low != clause.low.to_integral_value()
                or clause.high != clause.high.to_integral_value()
            ):
                raise ConstraintSyntaxError(f"range {clause.text} on integer field {fd.name}")
            return values.int_range(int(clause.low), int(clause.high), open_, clause.text)
        if fd.cpp_type in FLOAT_TYPES:
            return values.float_range(float(clause.low), float(clause.high), open_, clause.text)
        raise ConstraintSyntaxError(f"range on {fd.name}, which is not a number or a Duration")

    @staticmethod
    def items_clause(fd: FieldDescriptor, clause: Length | Unique) -> ItemsTest:
        """A clause on a repeated field as a whole."""
        name = fd.name
        if isinstance(clause, Length):
            if clause.unit != "items":
                raise ConstraintSyntaxError(
                    f"`{clause.unit}` on repeated field {fd.name}: use `each`"
                )
            return values.item_count(name, clause.low, clause.high)
        by = clause.by
        if by is None:
            if fd.message_type is not None:
                raise ConstraintSyntaxError(f"`unique` on message field {name}: use `unique by F`")
            return values.unique(name)
        if fd.message_type is None or by not in fd.message_type.fields_by_name:
            raise ConstraintSyntaxError(
                f"`unique by {by}`: the items of {name} have no field {by!r}"
            )
        key_fd = fd.message_type.fields_by_name[by]
        if key_fd.is_repeated or key_fd.message_type is not None:
            raise ConstraintSyntaxError(f"`unique by {by}`: {by} is not a singular scalar")
        return values.unique_by(name, by)

    def field_plan(
        self,
        fd: FieldDescriptor,
        spec: FieldConstraints,
        desc: Descriptor,
        *,
        builtins: bool = True,
    ) -> FieldPlan:
        """Compile a field's constraints (`builtins=False`: the clauses only, no recursion)."""
        tests: list[ValueTest] = []
        items_tests: list[ItemsTest] = []
        multiline = any(
            isinstance(c, Multiline) or (isinstance(c, Each) and isinstance(c.clause, Multiline))
            for c in spec.clauses
        )
        if multiline and fd.type != _F.TYPE_STRING:
            raise ConstraintSyntaxError(f"`multiline` on {fd.name}, which is not a string")
        clauses = [
            c
            for c in spec.clauses
            if not isinstance(c, Multiline)
            and not (isinstance(c, Each) and isinstance(c.clause, Multiline))
        ]
        if fd.is_repeated:
            if builtins:
                tests.extend(self.builtin_tests(fd, item=True, multiline=multiline))
            for clause in clauses:
                if isinstance(clause, Each):
                    tests.append(self.item_clause(fd, clause.clause))
                elif isinstance(clause, Length | Unique):
                    items_tests.append(self.items_clause(fd, clause))
                else:
                    raise ConstraintSyntaxError(f"{clause} on repeated field {fd.name}: use `each`")
        else:
            if builtins:
                tests.extend(self.builtin_tests(fd, item=False, multiline=multiline))
            for clause in clauses:
                if isinstance(clause, Unique | Each):
                    raise ConstraintSyntaxError(
                        f"`{type(clause).__name__.lower()}` on singular field {fd.name}"
                    )
                tests.append(self.item_clause(fd, clause))
        sub = None
        if builtins and fd.message_type is not None and fd.message_type.full_name in self.plans:
            sub = fd.message_type.full_name
        conditions = tuple((self.condition(desc, c), str(c)) for c in spec.conditions)
        oneof = fd.containing_oneof
        return FieldPlan(
            fd,
            always=spec.presence == "required",
            filled_by_gateway=spec.filled_by_gateway,
            conditions=conditions,
            tests=tuple(tests),
            items_tests=tuple(items_tests),
            sub=sub,
            carries=oneof is not None and oneof.full_name == _BODY.full_name,
        )

    # -- message rules ----------------------------------------------------------------------

    def rule(self, desc: Descriptor, rule: MessageRule) -> RulePlan:
        check = self.unconditional_rule(desc, rule.rule)
        if rule.condition is None:
            return check
        condition = self.condition(desc, rule.condition)
        return rules.when(condition, check, f"when {rule.condition}: ")

    def unconditional_rule(self, desc: Descriptor, rule: Rule) -> RulePlan:
        if isinstance(rule, ExactlyOne):
            return self.exactly_one(desc, rule)
        if isinstance(rule, AtLeastOne):
            return self.at_least_one(desc, rule)
        if isinstance(rule, AtMostOne):
            return self.at_most_one(desc, rule)
        if isinstance(rule, Contains):
            return self.contains(desc, rule)
        if isinstance(rule, Compare):
            return self.compare(desc, rule)
        return self.path_clause(desc, rule)

    @staticmethod
    def exactly_one(desc: Descriptor, rule: ExactlyOne) -> RulePlan:
        oneof = desc.oneofs_by_name.get(rule.oneof)
        if oneof is None:
            raise ConstraintSyntaxError(f"{desc.full_name} has no oneof {rule.oneof!r}")
        return rules.exactly_one(oneof)

    def at_least_one(self, desc: Descriptor, rule: AtLeastOne) -> RulePlan:
        refs = [self.ref(desc, p) for p in rule.paths]
        for ref in refs:
            self.field_of(ref)
        return rules.at_least_one(refs, rule.paths)

    def at_most_one(self, desc: Descriptor, rule: AtMostOne) -> RulePlan:
        ref = self.ref(desc, rule.path)
        fd = self.field_of(ref)
        if not fd.is_repeated or fd.message_type is None:
            raise ConstraintSyntaxError(f"`at most one {rule.path}`: not a repeated message field")
        sub_fd = fd.message_type.fields_by_name.get(rule.sub)
        if sub_fd is None:
            raise ConstraintSyntaxError(f"the items of {rule.path} have no field {rule.sub!r}")
        number = self.enum_number(sub_fd, rule.value)
        return rules.at_most_one(ref, rule.sub, number, rule.value)

    def contains(self, desc: Descriptor, rule: Contains) -> RulePlan:
        left, right = self.ref(desc, rule.path), self.ref(desc, rule.other)
        left_fd, right_fd = self.field_of(left), self.field_of(right)
        if not left_fd.is_repeated or left_fd.message_type is not None:
            raise ConstraintSyntaxError(f"`{rule.path} contains`: not a repeated scalar field")
        if right_fd.is_repeated or right_fd.cpp_type != left_fd.cpp_type:
            raise ConstraintSyntaxError(
                f"`contains {rule.other}`: not a singular field of the item type"
            )
        return rules.contains(left, right)

    def literal(self, fd: FieldDescriptor, text: str) -> Any:
        """A literal on the right of a comparison, in the type of the field on the left."""
        if fd.enum_type is not None:
            return self.enum_number(fd, text)
        if fd.cpp_type in INTEGER_TYPES and re.fullmatch(r"-?[0-9]+", text):
            return int(text)
        if fd.cpp_type in FLOAT_TYPES and re.fullmatch(NUMBER, text):
            return float(text)
        if fd.cpp_type == _F.CPPTYPE_BOOL and text in ("true", "false"):
            return text == "true"
        if fd.cpp_type == _F.CPPTYPE_STRING and len(text) >= 2 and text[0] == text[-1] == '"':
            return text[1:-1] if fd.type == _F.TYPE_STRING else text[1:-1].encode()
        raise ConstraintSyntaxError(f"{text!r} is neither a path nor a literal of {fd.name}'s type")

    def compare(self, desc: Descriptor, rule: Compare) -> RulePlan:
        left = self.ref(desc, rule.path)
        left_fd = self.field_of(left)
        if left_fd.is_repeated:
            raise ConstraintSyntaxError(f"comparison on repeated field {rule.path}")
        well_known = left_fd.message_type.full_name if left_fd.message_type is not None else None
        if left_fd.message_type is not None and well_known not in (TIMESTAMP, DURATION):
            raise ConstraintSyntaxError(f"comparison on message field {rule.path}")
        ordered = well_known is not None or left_fd.cpp_type in INTEGER_TYPES | FLOAT_TYPES
        if rule.op in (">", ">=") and not ordered:
            raise ConstraintSyntaxError(f"`{rule.op}` on {rule.path}, which has no order")
        right: Ref | None = None
        right_fd = left_fd
        literal: Any = None
        if PATH_RE.fullmatch(rule.other):
            right = self.ref(desc, rule.other)
            right_fd = self.field_of(right)
            same_type = (
                right_fd.cpp_type == left_fd.cpp_type
                and right_fd.message_type is left_fd.message_type
                and right_fd.enum_type is left_fd.enum_type
            )
            if right_fd.is_repeated or not same_type:
                raise ConstraintSyntaxError(f"cannot compare {rule.path} with {rule.other}")
        elif well_known is not None:
            raise ConstraintSyntaxError(
                f"no literals for {well_known}: compare {rule.path} with a field"
            )
        else:
            literal = self.literal(left_fd, rule.other)
        if right is None:
            return rules.compare_with_literal(left, rule.op, literal)
        return rules.compare_fields(left, rule.op, right)

    def path_clause(self, desc: Descriptor, rule: PathClause) -> RulePlan:
        ref = self.ref(desc, rule.path)
        fd = self.field_of(ref)
        clauses = () if rule.clause is None else (rule.clause,)
        spec = FieldConstraints("required" if rule.required else "optional", (), False, clauses)
        # The field's own constraints already checked its value: only this clause runs here.
        holder_type = fd.containing_type
        assert holder_type is not None  # a field of a message, never an extension
        plan = self.field_plan(fd, spec, holder_type, builtins=False)
        return rules.path_clause(ref, field_function(plan), field_quick(plan, ref))

    # -- messages ---------------------------------------------------------------------------

    def compile(self, desc: Descriptor) -> None:
        """Make the plan of one message (every message's name already in `plans`)."""
        fields: list[FieldPlan] = []
        for fd in desc.fields:
            line = self.fields.get(fd.full_name)
            if line is None:
                raise ConstraintSyntaxError(f"{fd.full_name}: no Constraints line")
            try:
                fields.append(self.field_plan(fd, parse_field_constraints(line), desc))
            except ConstraintSyntaxError as exc:
                raise ConstraintSyntaxError(
                    f"{fd.full_name}: {exc} (Constraints: {line}.)"
                ) from None
        line = self.messages.get(desc.full_name, "")
        try:
            plans = [self.rule(desc, rule) for rule in parse_message_constraints(line)]
        except ConstraintSyntaxError as exc:
            raise ConstraintSyntaxError(f"{desc.full_name}: {exc} (Constraints: {line}.)") from None
        if desc is _ENVELOPE:
            plans.append(rules.ACKNOWLEDGEMENT_NOT_SENT)
        self.plans[desc.full_name] = MessagePlan(desc, tuple(fields), tuple(plans))


def _all_messages(files: Iterable[FileDescriptor]) -> list[Descriptor]:
    found: list[Descriptor] = []

    def visit(desc: Descriptor) -> None:
        found.append(desc)
        for nested in desc.nested_types:
            visit(nested)

    for file in files:
        for desc in file.message_types_by_name.values():
            visit(desc)
    return found


def compile_table(
    fields: Mapping[str, str], messages: Mapping[str, str]
) -> tuple[MessageChecks | None, list[str]]:
    """Compile a constraint table: the checks of the message types (None if there are
    problems), and every problem found."""
    compiler = _Compiler(fields, messages)
    descriptors = _all_messages(SPEC_FILES)
    for desc in descriptors:
        compiler.plans[desc.full_name] = None
    errors: list[str] = []
    for desc in descriptors:
        try:
            compiler.compile(desc)
        except ConstraintSyntaxError as exc:
            errors.append(str(exc))
    known_fields = {fd.full_name for desc in descriptors for fd in desc.fields}
    errors.extend(
        f"{name}: names no field of the specification"
        for name in fields
        if name not in known_fields
    )
    errors.extend(
        f"{name}: names no message of the specification"
        for name in messages
        if name not in compiler.plans
    )
    if errors:
        return None, errors
    plans = {name: plan for name, plan in compiler.plans.items() if plan is not None}
    return MessageChecks(plans), []
