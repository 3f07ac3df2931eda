"""Writes each message type's check as one Python function, from what the compiler resolved.

The check of a message is straight-line code: for each field, in declaration order, read it
once, test it with the quick yes of its `ValueTest`s written inline (`2 <= len(v0_language)
<= 35 and accept_12(v0_language)`, `v0_status in members_9`, `-90.0 <= v1_latitude_deg <=
90.0`), write a set submessage's checks inline in turn (or, nested deeper than
`_MAX_INLINE_DEPTH` or recursive, call its type's function); then test each of the message's
rules by its quick expression (`_rules`). Only when a quick test says no is a closure called
(`explain`, a rule's `check`), and it reports exactly what the test finds: the closures are the
specification's semantics, the generated code only decides, cheaply, that there is nothing to
report. Hence a path (`prefix + 'text.variants[' + str(index_1) + '].language'`) is put
together only for a violation.

A oneof whose members are all optional costs one `WhichOneof`: only the set member's check
runs (an unset optional member reports nothing), through a table of functions, one per member.
A repeated field is read once, as a list (`field[:]`): the `upb` containers have no `__iter__`,
so iterating one goes through the sequence protocol and ends on a raised `IndexError`. What
the fields read is kept in variables that the rules' expressions reuse (`_Code.read`), and the
values of an item field that a rule or a test of the items as a whole needs
(`at most one variants with kind is ...`, `unique by language`) are collected as the items are
checked, rather than read again (what such a test finds is still reported before what the
items' checks found, as it would be had it run first).

A type's function is written and compiled on its first use (`MessageChecks`), with the
functions it calls; that costs some tens of milliseconds, once per process.

Writing code rather than chaining closures saves the Python calls per field, per test and per
submessage that dominate once names and descriptors are resolved. The source holds no value from
the constraint table or from a message: field names (identifiers, by the protobuf grammar) and
numbers only; every other object is bound to a generated name in the functions' globals. The
source is registered with `linecache`, so tracebacks and `inspect.getsource` show it.
"""

from __future__ import annotations

import linecache
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from typing import Any, Final, TypeAlias, cast

from google.protobuf.descriptor import Descriptor, OneofDescriptor

from hotline.errors import Violation
from hotline.validation._plans import FieldPlan, MessagePlan
from hotline.validation._rules import Quick, Ref
from hotline.validation._values import (
    Bind,
    Code,
    Step,
    ValueTest,
    accepting,
    attribute,
    explaining,
    explaining_items,
    quick_tests,
)

_SIGNATURE: Final = "(msg, prefix, filled, carrier, out)"
_files = count()  # a distinct file name for each compiled source, for linecache


class _Source:
    """Python source being written, and the objects its names are bound to: functions are
    written, then compiled together (`run`) into the same globals as those compiled before."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.functions: list[list[str]] = []  # the lines of each function written
        self.counter = count()  # for the names of variables
        self.namespace: dict[str, Any] = {"Violation": Violation}
        self._bound: dict[int, str] = {}  # id of a bound object -> its name
        # Tables of functions written in this source, by their names until it has run.
        self.tables: list[dict[str, Any]] = []

    def bind(self, obj: object, hint: str) -> str:
        """A name for an object, in the generated code's globals."""
        name = self._bound.get(id(obj))
        if name is None:
            name = f"{hint}_{len(self.namespace)}"
            self.namespace[name] = obj
            self._bound[id(obj)] = name
        return name

    def write(self, indent: int, *lines: str) -> None:
        self.lines.extend("    " * indent + line for line in lines)

    @contextmanager
    def function(self, name: str) -> Iterator[None]:
        """Write a function (`def name(msg, prefix, filled, carrier, out):`): what is written
        inside the block is its body, even if another function is written meanwhile."""
        outer, self.lines = self.lines, [f"def {name}{_SIGNATURE}:"]
        try:
            yield
            if len(self.lines) == 1:
                self.write(1, "pass")
            self.functions.append(self.lines)
        finally:
            self.lines = outer

    def run(self) -> dict[str, Any]:
        """Compile and run the functions written since the last run; return the globals, which
        hold them."""
        filename = f"<hotline.validation generated {next(_files)}>"
        source = "\n\n".join("\n".join(lines) for lines in self.functions) + "\n"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        exec(compile(source, filename, "exec"), self.namespace)
        for table in self.tables:
            table.update((key, self.namespace[name]) for key, name in table.items())
        self.functions, self.tables = [], []
        return self.namespace


# Nesting beyond which a submessage's check is called rather than written inline: deeper
# inlining gains little (few messages nest deeper) and the source, compiled once per process,
# grows.
_MAX_INLINE_DEPTH: Final = 4
_Part: TypeAlias = tuple[bool, str]  # (is a literal, text): a piece of a path prefix


@dataclass(frozen=True)
class _Scope:
    """Where checks of a message are being written: the variable holding it, its path prefix
    and its carrier as expressions (evaluated only for a violation or a call), and what has
    been read already."""

    msg: str
    prefix: tuple[_Part, ...]
    carrier: str
    depth: int
    inlined: frozenset[str]  # message types written around this one: never inline recursion
    which: Mapping[str, str]  # oneof name -> the variable holding `msg.WhichOneof(name)`
    # expression -> the variable holding its value, read unconditionally so far (here, or in
    # the bodies this one is written in)
    reads: dict[str, str] = field(default_factory=dict)
    envelope: str | None = None  # the variable holding the carrying envelope, if known
    # Of an item's check: field name -> the list its values are appended to
    collect: Mapping[str, str] = field(default_factory=dict)
    # Of a message's check: the item fields its rules and items tests want collected, by
    # repeated field; and (field, item field) -> the list collected
    wants: Mapping[str, frozenset[str]] = field(default_factory=dict)
    collected: dict[tuple[str, str], str] = field(default_factory=dict)

    def path(self, *parts: _Part) -> str:
        """The expression of the path prefix, extended (literal pieces merged)."""
        pieces: list[str] = []
        literal = ""
        for is_literal, text in (*self.prefix, *parts):
            if is_literal:
                literal += text
                continue
            if literal:
                pieces.append(repr(literal))
                literal = ""
            pieces.append(text)
        if literal:
            pieces.append(repr(literal))
        return " + ".join(pieces)

    def field_path(self, name: str) -> str:
        return self.path((True, name))

    def call(self) -> str:
        """The arguments of a closure's check of this message, in order."""
        return f"({self.msg}, {self.path()}, filled, {self.carrier}, out)"

    def nested(
        self,
        msg: str,
        parts: tuple[_Part, ...],
        full_name: str,
        *,
        carried: bool,
        collect: Mapping[str, str],
    ) -> _Scope:
        """The scope of a submessage written inline (`carried`: a body of this envelope)."""
        return _Scope(
            msg,
            (*self.prefix, *parts),
            f"({self.msg}, {self.path()})" if carried else "None",
            self.depth + 1,
            self.inlined | {full_name},
            {},
            dict(self.reads),
            self.msg if carried else None,
            collect,
        )

    def entered(self, which: Mapping[str, str], wants: Mapping[str, frozenset[str]]) -> _Scope:
        """This scope, where a message's checks begin (having read its oneofs)."""
        return _Scope(
            self.msg,
            self.prefix,
            self.carrier,
            self.depth,
            self.inlined,
            which,
            self.reads,
            self.envelope,
            self.collect,
            wants,
        )


class _Code:
    """The `Code` a quick expression of a rule or a condition is written for. A read it needs
    that the checks have not made yet is assigned to a variable first (`flush`), and shared
    with what is written later at the same level when `reads` is the scope's."""

    def __init__(self, src: _Source, scope: _Scope, reads: dict[str, str]) -> None:
        self.src, self.scope, self.reads = src, scope, reads
        self.pending: list[str] = []

    @property
    def msg(self) -> str:
        return self.scope.msg

    @property
    def envelope(self) -> str | None:
        return self.scope.envelope

    def bind(self, obj: object, hint: str) -> str:
        return self.src.bind(obj, hint)

    def read(self, expression: str) -> str:
        """A variable holding the value of `expression` (reads have no side effects, so
        reading one ahead of a guard that might have skipped it is harmless)."""
        variable = self.reads.get(expression)
        if variable is None:
            variable = f"r{self.scope.depth}_{next(self.src.counter)}"
            self.reads[expression] = variable
            self.pending.append(f"{variable} = {expression}")
        return variable

    def flush(self, indent: int) -> None:
        """Write the reads the expressions asked for since the last flush."""
        self.src.write(indent, *self.pending)
        self.pending.clear()

    def which(self, holder: str, oneof: str) -> str:
        if holder == self.scope.msg and oneof in self.scope.which:
            return self.scope.which[oneof]
        return f"{holder}.WhichOneof({oneof!r})"

    def collected(self, field: str, item_field: str) -> str | None:
        return self.scope.collected.get((field, item_field))


def _quick(bind: Bind, tests: tuple[ValueTest, ...], value: str) -> str:
    """The tests' quick yes as an expression on the expression `value`."""
    return " and ".join(
        test.quick(value, bind)
        if test.quick is not None
        else f"{bind(test.accept, 'accept')}({value})"
        for test in quick_tests(tests)
    )


def _reports_absent(plan: FieldPlan) -> bool:
    """Whether an unset field has anything to report (or its zero anything to test)."""
    if plan.optional:
        return False
    if plan.zero_is_value:  # never reported missing: only a zero to test
        return bool(plan.tests)
    return True


def _checks_anything(plan: FieldPlan) -> bool:
    return _reports_absent(plan) or bool(plan.tests or plan.items_tests) or plan.sub is not None


class _Writer:
    """Writes the checks of message types, as they are wanted, into one source."""

    def __init__(self, plans: Mapping[str, MessagePlan]) -> None:
        self.src = _Source()
        self.plans = plans
        self.functions = {
            full_name: f"check_{index}_{plan.desc.name}"
            for index, (full_name, plan) in enumerate(plans.items())
        }
        # (message type, oneof name) -> the bound table of its members' checks
        self.member_tables: dict[tuple[str, str], str | None] = {}
        self.written: set[str] = set()  # the message types whose function is written
        self.called: list[str] = []  # message types whose function a written one calls

    # -- fields -----------------------------------------------------------------------------

    def value_tests(self, indent: int, plan: FieldPlan, value: str, scope: _Scope) -> None:
        """Test `value`: the quick yes inline, the explanation only when it says no."""
        src = self.src
        explain = src.bind(explaining(plan.tests), "explain")
        src.write(
            indent,
            f"if not ({_quick(src.bind, plan.tests, value)}):",
            f"    {explain}({value}, {scope.field_path(plan.fd.name)}, out)",
        )

    def absent(self, indent: int, plan: FieldPlan, value: str, scope: _Scope) -> None:
        """What an unset field reports (when its zero is a value: the zero's tests)."""
        src = self.src
        if plan.conditions:
            code = _Code(src, scope, dict(scope.reads))  # reads here are in a branch
            unmet = [c.unmet(code) if c.unmet else None for c, _text in plan.conditions]
            if not plan.always and None not in unmet:  # no condition holds: nothing to say
                code.flush(indent)
                src.write(indent, f"if not ({' and '.join(f'({u})' for u in unmet)}):")
                indent += 1
            absent = f"{src.bind(plan.absent(), 'absent')}{scope.call()}"
            if plan.zero_is_value and plan.tests:
                src.write(indent, f"if not {absent}:")
                self.value_tests(indent + 1, plan, value, scope)
            else:
                src.write(indent, absent)
            return
        if plan.filled_by_gateway:
            src.write(indent, "if filled:")
            indent += 1
        if plan.zero_is_value:
            self.value_tests(indent, plan, value, scope)
        else:
            missing = src.bind(f"required: {plan.missing}", "missing")
            src.write(indent, f"out.append(Violation({scope.field_path(plan.fd.name)}, {missing}))")

    @staticmethod
    def inlines(plan: FieldPlan, scope: _Scope) -> bool:
        """Whether the checks of the submessage are written inline here."""
        return plan.sub not in scope.inlined and scope.depth < _MAX_INLINE_DEPTH

    def submessage(
        self,
        indent: int,
        plan: FieldPlan,
        value: str,
        parts: tuple[_Part, ...],
        scope: _Scope,
        collect: Mapping[str, str] | None = None,
    ) -> None:
        """The checks of the set submessage `value` (an item, if `parts` say so, whose
        fields' values `collect` says where to append)."""
        assert plan.sub is not None
        if not self.inlines(plan, scope):
            self.called.append(plan.sub)
            function, prefix = self.functions[plan.sub], scope.path(*parts)
            carrier = f"({scope.msg}, {scope.path()})" if plan.carries else "None"
            self.src.write(indent, f"{function}({value}, {prefix}, filled, {carrier}, out)")
            return
        nested = scope.nested(value, parts, plan.sub, carried=plan.carries, collect=collect or {})
        self.body(indent, self.plans[plan.sub], nested)

    def collect(self, indent: int, plan: FieldPlan, scope: _Scope) -> dict[str, str]:
        """Lists for the values of the items' fields that are wanted, and that the items'
        checks read in any case (a scalar that is checked): field name -> list."""
        if plan.sub is None or not self.inlines(plan, scope):
            return {}
        item_fields = {f.fd.name: f for f in self.plans[plan.sub].fields}
        collect = {}
        for key in sorted(scope.wants.get(plan.fd.name, ())):
            item = item_fields.get(key)
            scalar = item is not None and not item.fd.is_repeated and not item.fd.has_presence
            if scalar and item is not None and _checks_anything(item):
                collect[key] = f"k{scope.depth}_{plan.fd.name}_{key}"
                scope.collected[(plan.fd.name, key)] = collect[key]
                self.src.write(indent, f"{collect[key]} = []")
        return collect

    def field(self, indent: int, plan: FieldPlan, scope: _Scope, *, present: bool = False) -> None:
        """The checks of one field (that `_checks_anything`); `present`: known to be set."""
        src, fd, name, depth = self.src, plan.fd, plan.fd.name, scope.depth
        value, read = f"value_{depth}", attribute(scope.msg, name)
        if fd.is_repeated:
            items = f"l{depth}_{name}"
            src.write(indent, f"{items} = {read}[:]")
            if not present:
                scope.reads[f"{read}[:]"] = items
            if not (plan.items_tests or plan.tests or plan.sub is not None):
                src.write(indent, f"if not {items}:")
                self.absent(indent + 1, plan, value, scope)
                return
            collect = self.collect(indent, plan, scope) if not present else {}
            src.write(indent, f"if {items}:")
            if any(test.key in collect for test in plan.items_tests):
                self.items_after(indent + 1, plan, items, collect, scope)
            else:
                for test in plan.items_tests:
                    src.write(
                        indent + 1,
                        f"if not ({test.quick(items, src.bind)}):",
                        f"    {src.bind(test.run, 'items_test')}({items}, {scope.path()}, out)",
                    )
            if plan.tests:
                accept = src.bind(accepting(plan.tests), "accept")
                explain = src.bind(explaining_items(plan.tests), "explain_items")
                src.write(
                    indent + 1,
                    f"if not all(map({accept}, {items})):",
                    f"    {explain}({items}, {scope.field_path(name)}, out)",
                )
            if plan.sub is not None and not any(t.key in collect for t in plan.items_tests):
                self.items(indent + 1, plan, items, collect, scope)
            if _reports_absent(plan):
                src.write(indent, "else:")
                self.absent(indent + 1, plan, value, scope)
            return
        if fd.has_presence:
            if not (plan.tests or plan.sub is not None):
                if not present:
                    src.write(indent, f"if not {scope.msg}.HasField({name!r}):")
                    self.absent(indent + 1, plan, value, scope)
                return
            inner = indent
            if present:
                src.write(inner, f"{value} = {read}")
            elif plan.always:
                # Required, so nearly always set: read it first, for the rules to share.
                value = f"v{depth}_{name}"
                src.write(indent, f"{value} = {read}", f"if {scope.msg}.HasField({name!r}):")
                scope.reads[read] = value
                inner += 1
            else:
                src.write(indent, f"if {scope.msg}.HasField({name!r}):", f"    {value} = {read}")
                inner += 1
            if plan.tests:
                self.value_tests(inner, plan, value, scope)
            if plan.sub is not None:
                self.submessage(inner, plan, value, ((True, f"{name}."),), scope)
            if not present and _reports_absent(plan):
                src.write(indent, "else:")
                self.absent(indent + 1, plan, value, scope)
            return
        # A scalar without explicit presence: zero, empty and unset are one and the same.
        value = f"v{depth}_{name}"
        src.write(indent, f"{value} = {read}")
        if not present:
            scope.reads[read] = value
        if name in scope.collect:
            src.write(indent, f"{scope.collect[name]}.append({value})")
        if plan.always and not plan.filled_by_gateway and plan.zero_is_value:
            self.value_tests(indent, plan, value, scope)  # required: a zero is a value
            return
        if not plan.tests:
            src.write(indent, f"if not {value}:")
            self.absent(indent + 1, plan, value, scope)
            return
        src.write(indent, f"if {value}:")
        self.value_tests(indent + 1, plan, value, scope)
        if _reports_absent(plan):
            src.write(indent, "else:")
            self.absent(indent + 1, plan, value, scope)

    def items(
        self, indent: int, plan: FieldPlan, items: str, collect: Mapping[str, str], scope: _Scope
    ) -> None:
        """The checks of each message of a repeated field."""
        index, item, name = f"index_{scope.depth}", f"item_{scope.depth}", plan.fd.name
        self.src.write(indent, f"for {index}, {item} in enumerate({items}):")
        parts = ((True, f"{name}["), (False, f"str({index})"), (True, "]."))
        self.submessage(indent + 1, plan, item, parts, scope, collect)

    def items_after(
        self, indent: int, plan: FieldPlan, items: str, collect: Mapping[str, str], scope: _Scope
    ) -> None:
        """The checks of each item, then the tests of the items as a whole, on the values of
        their fields collected meanwhile: what those tests find is put before what the items'
        checks found, where it would be had they run first."""
        src, depth = self.src, scope.depth
        start, found = f"start_{depth}", f"found_{depth}"
        src.write(indent, f"{start} = len(out)")
        self.items(indent, plan, items, collect, scope)
        for test in plan.items_tests:
            keys = collect.get(test.key) if test.key is not None else None
            if keys is not None and test.keyed is not None:
                quick = test.keyed(keys, src.bind)
            else:
                quick = test.quick(items, src.bind)
            src.write(
                indent,
                f"if not ({quick}):",
                f"    {found} = []",
                f"    {src.bind(test.run, 'items_test')}({items}, {scope.path()}, {found})",
                f"    out[{start}:{start}] = {found}",
                f"    {start} += len({found})",
            )

    # -- messages ---------------------------------------------------------------------------

    def member_table(self, plan: MessagePlan, oneof: OneofDescriptor) -> str | None:
        """The checks of a dispatched oneof's members, by member name (each its own function,
        written once per message type); None if no member has anything to check."""
        key = (plan.desc.full_name, oneof.name)
        if key in self.member_tables:
            return self.member_tables[key]
        function = self.functions[plan.desc.full_name]
        table: dict[str, Any] = {}
        for fd in oneof.fields:
            member = plan.fields[fd.index]
            if not _checks_anything(member):
                continue
            table[fd.name] = f"{function}__{fd.name}"
            with self.src.function(table[fd.name]):
                scope = _Scope("msg", ((False, "prefix"),), "carrier", 0, frozenset({key[0]}), {})
                self.field(1, member, scope, present=True)
        name = None
        if table:
            self.src.tables.append(table)
            name = self.src.bind(table, "members")
        self.member_tables[key] = name
        return name

    def body(self, indent: int, plan: MessagePlan, scope: _Scope) -> None:
        """The checks of a message in `scope.msg`: its fields in order, then its rules."""
        src, fields = self.src, plan.fields
        dispatched = _dispatched(plan.desc, fields)
        tables = {index: self.member_table(plan, oneof) for index, oneof in dispatched.items()}
        start = len(src.lines)
        which = {}
        for index, oneof in dispatched.items():
            if tables[index] is not None:
                which[oneof.name] = f"which_{scope.depth}_{oneof.name}"
                src.write(indent, f"{which[oneof.name]} = {scope.msg}.WhichOneof({oneof.name!r})")
        wants: dict[str, set[str]] = {}
        for rule in plan.rules:
            for repeated, key in rule.wants:
                wants.setdefault(repeated, set()).add(key)
        for field_plan in fields:
            for test in field_plan.items_tests:
                if test.key is not None:
                    wants.setdefault(field_plan.fd.name, set()).add(test.key)
        scope = scope.entered(which, {name: frozenset(keys) for name, keys in wants.items()})
        index = 0
        while index < len(fields):
            if index not in dispatched:
                if _checks_anything(fields[index]):
                    self.field(indent, fields[index], scope)
                index += 1
                continue
            oneof, table = dispatched[index], tables[index]
            if table is not None:
                src.write(
                    indent,
                    f"member = {table}.get({which[oneof.name]})",
                    "if member is not None:",
                    f"    member{scope.call()}",
                )
            index += len(oneof.fields)
        code = _Code(src, scope, scope.reads)
        for rule in plan.rules:
            check = f"{src.bind(rule.check, 'rule')}{scope.call()}"
            quick = rule.quick(code) if rule.quick is not None else None
            code.flush(indent)
            if quick is None:
                src.write(indent, check)
            else:
                src.write(indent, f"if not ({quick}):", f"    {check}")
        if len(src.lines) == start:  # nothing to check: an empty block is no Python
            src.write(indent, "pass")

    def message(self, full_name: str) -> None:
        scope = _Scope("msg", ((False, "prefix"),), "carrier", 0, frozenset({full_name}), {})
        with self.src.function(self.functions[full_name]):
            self.body(1, self.plans[full_name], scope)


def _dispatched(desc: Descriptor, plans: Sequence[FieldPlan]) -> dict[int, OneofDescriptor]:
    """The oneofs checked as one `WhichOneof`, by the index of their first member: those whose
    members are all optional and declared together (as protobuf's grammar has them)."""
    found = {}
    for oneof in desc.oneofs:
        indexes = [fd.index for fd in oneof.fields]
        contiguous = indexes == list(range(indexes[0], indexes[0] + len(indexes)))
        if len(indexes) > 1 and contiguous and all(plans[i].optional for i in indexes):
            found[indexes[0]] = oneof
    return found


class MessageChecks:
    """The check of each message type, `check(msg, prefix, filled, carrier, out)`, by full
    name: written and compiled on first use, with the functions it calls.

    Writing and compiling every type's check at once would take some 0.1 s; a process that
    validates only envelopes needs a third of that code.
    """

    def __init__(self, plans: Mapping[str, MessagePlan]) -> None:
        self._writer = _Writer(plans)
        self._ready: dict[str, Step] = {}
        self._lock = threading.Lock()

    def get(self, full_name: str) -> Step | None:
        """The check of a message type; None for a type outside the specification."""
        check = self._ready.get(full_name)
        if check is not None or full_name not in self._writer.plans:
            return check
        with self._lock:
            writer = self._writer
            wanted = [full_name]
            while wanted:
                name = wanted.pop()
                if name not in writer.written:
                    writer.written.add(name)
                    writer.message(name)
                    wanted.extend(writer.called)
                    writer.called.clear()
            namespace = writer.src.run()
            for name in writer.written - self._ready.keys():
                self._ready[name] = cast(Step, namespace[writer.functions[name]])
            return self._ready[full_name]


def field_function(plan: FieldPlan) -> Step:
    """The check of one field alone, without recursion (for a rule like `window.end_time
    required`): `check(holder, prefix, filled, carrier, out)`."""
    assert plan.sub is None
    writer = _Writer({})
    with writer.src.function("check_field"):
        if _checks_anything(plan):
            scope = _Scope("msg", ((False, "prefix"),), "carrier", 0, frozenset(), {})
            writer.field(1, plan, scope)
    return cast(Step, writer.src.run()["check_field"])


def field_quick(plan: FieldPlan, ref: Ref) -> Quick | None:
    """An expression true only when `field_function(plan)` would find nothing in the field at
    `ref` (a singular field only)."""
    fd = plan.fd
    if fd.is_repeated or plan.conditions or plan.filled_by_gateway:
        return None

    def quick(code: Code) -> str | None:
        if not ref.written(code):
            return None
        holder = ref.holder_expression(code)
        value = code.read(attribute(holder, fd.name))
        present = f"{holder}.HasField({fd.name!r})" if fd.has_presence else value
        tests = f"({_quick(code.bind, plan.tests, value)})" if plan.tests else ""
        if plan.optional:
            return f"not {present} or {tests}" if tests else "True"
        if plan.zero_is_value:
            return tests or "True"
        return f"{present} and {tests}" if tests else present

    return quick
