"""The grammar of the specification's `Constraints:` lines: one line, parsed into clause objects.

The grammar itself is defined in the header comment of `proto/hotline/v1/common.proto`. A field's
line (`required; 1..256 chars; pattern ^...$`) parses into a `FieldConstraints`, a message's line
(`exactly one of body; recipient_party != sender_party; ...`) into `MessageRule`s. Parsing knows
no descriptors: whether a line names fields its message has, and values their types hold, is
the compiler's question (`hotline.validation._compiler`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal, TypeAlias

__all__ = [
    "NUMBER",
    "PATH_RE",
    "AtLeastOne",
    "AtMostOne",
    "Compare",
    "Condition",
    "ConstraintSyntaxError",
    "Contains",
    "Each",
    "ExactlyOne",
    "FieldConstraints",
    "Format",
    "ItemClause",
    "Length",
    "MessageRule",
    "Multiline",
    "OneOf",
    "PathClause",
    "Pattern",
    "Range",
    "Rule",
    "Unique",
    "ValueClause",
    "parse_condition",
    "parse_field_constraints",
    "parse_message_constraints",
    "parse_value_clause",
]


class ConstraintSyntaxError(ValueError):
    """A `Constraints:` line breaks the grammar, or names something its message does not have."""


@dataclass(frozen=True)
class Condition:
    """`<path> is <VALUE>[ or ...]` or `<path> contains <VALUE>[ or ...]`."""

    path: str
    op: Literal["is", "contains"]
    values: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.path} {self.op} {' or '.join(self.values)}"


@dataclass(frozen=True)
class Length:
    """`A..B chars`, `A..B bytes`, `N bytes` or `A..B items`."""

    unit: Literal["chars", "bytes", "items"]
    low: int
    high: int


@dataclass(frozen=True)
class Range:
    """`A..B` or `A..<B`, in seconds with an `s` suffix for a Duration."""

    low: Decimal
    high: Decimal
    high_open: bool
    seconds: bool
    text: str


@dataclass(frozen=True)
class Pattern:
    """`pattern RE`: the whole string matches RE."""

    regex: str


@dataclass(frozen=True)
class Format:
    """`format ipv4`, `format ipv6` or `format url`."""

    name: Literal["ipv4", "ipv6", "url"]


@dataclass(frozen=True)
class OneOf:
    """`one of "X", "Y"`."""

    values: tuple[str, ...]


@dataclass(frozen=True)
class Multiline:
    """`multiline`: the string may hold line feeds and tabs (no other control character)."""


@dataclass(frozen=True)
class Unique:
    """`unique`, or `unique by F`."""

    by: str | None


@dataclass(frozen=True)
class Each:
    """`each <clause>`: the clause applies to every item."""

    clause: ItemClause


ItemClause: TypeAlias = Length | Range | Pattern | Format | OneOf | Multiline
ValueClause: TypeAlias = Length | Range | Pattern | Format | OneOf | Multiline | Unique | Each


@dataclass(frozen=True)
class FieldConstraints:
    """The parsed `Constraints:` line of a field."""

    presence: Literal["required", "optional", "required if"]
    conditions: tuple[Condition, ...]
    filled_by_gateway: bool
    clauses: tuple[ValueClause, ...]


@dataclass(frozen=True)
class PathClause:
    """`<path> required` or `<path> <clause>`: a field clause applied to a nested field."""

    path: str
    required: bool
    clause: ValueClause | None


@dataclass(frozen=True)
class Compare:
    """`<path> <op> <path-or-literal>`."""

    path: str
    op: Literal["=", "!=", ">", ">="]
    other: str


@dataclass(frozen=True)
class Contains:
    """`<path> contains <path>`."""

    path: str
    other: str


@dataclass(frozen=True)
class ExactlyOne:
    """`exactly one of <oneof>`."""

    oneof: str


@dataclass(frozen=True)
class AtLeastOne:
    """`at least one of <path>, <path>, ...`."""

    paths: tuple[str, ...]


@dataclass(frozen=True)
class AtMostOne:
    """`at most one <path> with <sub> is <ENUM_VALUE>`."""

    path: str
    sub: str
    value: str


Rule: TypeAlias = PathClause | Compare | Contains | ExactlyOne | AtLeastOne | AtMostOne


@dataclass(frozen=True)
class MessageRule:
    """One rule of a message's `Constraints:` line, with its `if C:` condition if any."""

    condition: Condition | None
    rule: Rule
    text: str


_IDENT = r"[a-z_][a-z0-9_]*"
PATH_RE: Final = re.compile(rf"{_IDENT}(?:\.{_IDENT})*")
_NAME_RE: Final = re.compile(_IDENT)
NUMBER = r"-?[0-9]+(?:\.[0-9]+)?"
_LENGTH_RE: Final = re.compile(r"(?P<low>[0-9]+)\.\.(?P<high>[0-9]+) (?P<unit>chars|bytes|items)")
_EXACT_BYTES_RE: Final = re.compile(r"(?P<n>[0-9]+) bytes")
_RANGE_RE: Final = re.compile(
    rf"(?P<low>{NUMBER})(?P<low_s>s?)\.\.(?P<open><?)(?P<high>{NUMBER})(?P<high_s>s?)"
)
_ONE_OF_RE: Final = re.compile(r'one of ("[^"]*"(?:, "[^"]*")*)')
_CONDITION_RE: Final = re.compile(
    rf"(?P<path>{_IDENT}(?:\.{_IDENT})*) (?P<op>is|contains) "
    r"(?P<values>[A-Za-z_][A-Za-z0-9_]*(?: or [A-Za-z_][A-Za-z0-9_]*)*)"
)
_AT_MOST_ONE_RE: Final = re.compile(
    rf"at most one (?P<path>{_IDENT}(?:\.{_IDENT})*) with (?P<sub>{_IDENT}) is (?P<value>[A-Z][A-Z0-9_]*)"
)
_FORMATS: Final[Mapping[str, Literal["ipv4", "ipv6", "url"]]] = {
    "ipv4": "ipv4",
    "ipv6": "ipv6",
    "url": "url",
}
_COMPARISONS: Final[Mapping[str, Literal["=", "!=", ">", ">="]]] = {
    "=": "=",
    "!=": "!=",
    ">": ">",
    ">=": ">=",
}


def _path(text: str, what: str) -> str:
    if not PATH_RE.fullmatch(text):
        raise ConstraintSyntaxError(f"{what} {text!r} is not a dotted field path")
    return text


def parse_condition(text: str) -> Condition:
    """Parse a condition C: `<path> is <VALUE>[ or <VALUE> ...]` or `<path> contains ...`."""
    match = _CONDITION_RE.fullmatch(text)
    if not match:
        raise ConstraintSyntaxError(
            f"condition {text!r} is not `<path> is|contains <VALUE>[ or ...]`"
        )
    op: Literal["is", "contains"] = "is" if match["op"] == "is" else "contains"
    return Condition(match["path"], op, tuple(match["values"].split(" or ")))


def parse_value_clause(text: str) -> ValueClause:
    """Parse one clause that restricts a value (every clause but the presence clauses)."""
    if match := _LENGTH_RE.fullmatch(text):
        low, high = int(match["low"]), int(match["high"])
        if low > high:
            raise ConstraintSyntaxError(f"empty length range {text!r}")
        unit: Literal["chars", "bytes", "items"] = match["unit"]  # type: ignore[assignment]
        return Length(unit, low, high)
    if match := _EXACT_BYTES_RE.fullmatch(text):
        return Length("bytes", int(match["n"]), int(match["n"]))
    if match := _RANGE_RE.fullmatch(text):
        if match["low_s"] != match["high_s"]:
            raise ConstraintSyntaxError(f"range {text!r} gives seconds on one bound only")
        low_d, high_d, high_open = (
            Decimal(match["low"]),
            Decimal(match["high"]),
            bool(match["open"]),
        )
        if low_d > high_d or (high_open and low_d == high_d):
            raise ConstraintSyntaxError(f"empty range {text!r}")
        return Range(low_d, high_d, high_open, bool(match["low_s"]), text)
    if text.startswith("pattern "):
        regex = text.removeprefix("pattern ")
        try:
            re.compile(regex)
        except re.error as exc:
            raise ConstraintSyntaxError(f"pattern {regex!r} does not compile: {exc}") from None
        problem = portable_regex_problem(regex)
        if problem:
            raise ConstraintSyntaxError(
                f"pattern {regex!r} is outside the portable subset of common.proto: {problem}"
            )
        return Pattern(regex)
    if text.startswith("format "):
        name = text.removeprefix("format ")
        if name in _FORMATS:
            return Format(_FORMATS[name])
        raise ConstraintSyntaxError(f"unknown format {name!r} (known: {', '.join(_FORMATS)})")
    if match := _ONE_OF_RE.fullmatch(text):
        return OneOf(tuple(re.findall(r'"([^"]*)"', match[1])))
    if text == "multiline":
        return Multiline()
    if text == "unique":
        return Unique(None)
    if text.startswith("unique by "):
        by = text.removeprefix("unique by ")
        if not _NAME_RE.fullmatch(by):
            raise ConstraintSyntaxError(f"`unique by` needs a field name, got {by!r}")
        return Unique(by)
    if text.startswith("each "):
        inner = parse_value_clause(text.removeprefix("each "))
        if isinstance(inner, Unique | Each) or (
            isinstance(inner, Length) and inner.unit == "items"
        ):
            raise ConstraintSyntaxError(
                f"`each` cannot apply {text.removeprefix('each ')!r} to an item"
            )
        return Each(inner)
    raise ConstraintSyntaxError(f"unknown clause {text!r}")


def parse_field_constraints(line: str) -> FieldConstraints:
    """Parse a field's constraints: the text after `Constraints: `, without the final period."""
    clauses = line.split("; ")
    first = clauses[0]
    conditions: list[Condition] = []
    presence: Literal["required", "optional", "required if"]
    if first == "required":
        presence, rest = "required", clauses[1:]
    elif first == "optional":
        presence, rest = "optional", clauses[1:]
    elif first.startswith("required if "):
        presence, rest = "required if", clauses
        while rest and rest[0].startswith("required if "):
            conditions.append(parse_condition(rest[0].removeprefix("required if ")))
            rest = rest[1:]
    else:
        raise ConstraintSyntaxError(
            f"the first clause must be `required`, `optional` or `required if C`, got {first!r}"
        )
    filled_by_gateway = False
    if rest and rest[0] == "filled by gateway":
        if presence != "required":
            raise ConstraintSyntaxError("`filled by gateway` may only follow `required`")
        filled_by_gateway, rest = True, rest[1:]
    for clause in rest:
        if clause in ("required", "optional", "filled by gateway") or clause.startswith(
            "required if "
        ):
            raise ConstraintSyntaxError(f"presence clause {clause!r} out of place")
    values = tuple(parse_value_clause(clause) for clause in rest)
    return FieldConstraints(presence, tuple(conditions), filled_by_gateway, values)


def _parse_rule(text: str) -> Rule:
    if text.startswith("exactly one of "):
        name = text.removeprefix("exactly one of ")
        if not _NAME_RE.fullmatch(name):
            raise ConstraintSyntaxError(f"`exactly one of` needs a oneof name, got {name!r}")
        return ExactlyOne(name)
    if text.startswith("at least one of "):
        paths = text.removeprefix("at least one of ").split(", ")
        return AtLeastOne(tuple(_path(p, "`at least one of` member") for p in paths))
    if text.startswith("at most one "):
        match = _AT_MOST_ONE_RE.fullmatch(text)
        if not match:
            raise ConstraintSyntaxError(
                f"{text!r} is not `at most one <path> with <sub> is <VALUE>`"
            )
        return AtMostOne(match["path"], match["sub"], match["value"])
    path, _, rest = text.partition(" ")
    _path(path, "rule subject")
    if not rest:
        raise ConstraintSyntaxError(f"rule {text!r} has a path and nothing to check")
    if rest.startswith("contains "):
        return Contains(path, _path(rest.removeprefix("contains "), "`contains` operand"))
    op, _, other = rest.partition(" ")
    if op in _COMPARISONS:
        if not other:
            raise ConstraintSyntaxError(f"comparison {text!r} has no right-hand side")
        return Compare(path, _COMPARISONS[op], other)
    if rest == "required":
        return PathClause(path, True, None)
    return PathClause(path, False, parse_value_clause(rest))


def parse_message_constraints(line: str) -> tuple[MessageRule, ...]:
    """Parse a message's rules: the text after `Constraints: `, without the final period."""
    if not line:
        return ()
    rules = []
    for text in line.split("; "):
        condition = None
        body = text
        if text.startswith("if "):
            condition_text, separator, body = text.removeprefix("if ").partition(": ")
            if not separator:
                raise ConstraintSyntaxError(
                    f"conditional rule {text!r} lacks `: ` after its condition"
                )
            condition = parse_condition(condition_text)
        rules.append(MessageRule(condition, _parse_rule(body), text))
    return tuple(rules)


# The characters a portable pattern may escape with a backslash: the syntax characters common
# to RE2, ECMAScript (also in its `u` mode), Python `re`, Java and Go; `-` only in a class.
_SYNTAX_CHARACTERS: Final = frozenset("^$\\.*+?()[]{}|/")
_REPEAT_RE: Final = re.compile(r"\{[0-9]+(?:,[0-9]*)?\}")


def portable_regex_problem(regex: str) -> str:
    """Why `regex` is outside the portable subset stated in common.proto, or "".

    The subset means the same in RE2, ECMAScript (with or without the `u` flag), Python `re`,
    Java and Go: printable ASCII only; anchored `^...$` and otherwise no anchors; literal
    characters, `\\` before a syntax character, bracket classes of literal characters and
    ranges (optionally negated), groups `(...)` without `?`, alternation `|`, and the greedy
    quantifiers `?`, `*`, `+`, `{n}`, `{n,}`, `{n,m}`. Not allowed: shorthand classes (`\\s`,
    `\\d`, `\\w`, `\\b`, `\\p{...}`), `.` (which may or may not match a line break), escapes
    of letters or digits, back-references, lookaround, flags, lazy or possessive quantifiers.
    """
    if not all(" " <= c <= "~" for c in regex):
        return "only printable ASCII characters may appear (write a range for others)"
    if not (regex.startswith("^") and regex.endswith("$")) or regex.endswith("\\$"):
        return "it must be anchored: start with ^ and end with $"
    body = regex[1:-1]
    depth, i, repeatable = 0, 0, False
    while i < len(body):
        c = body[i]
        if c == "\\":
            escaped = body[i + 1 : i + 2]
            if escaped not in _SYNTAX_CHARACTERS:
                return f"escape \\{escaped} (only syntax characters may be escaped)"
            i, repeatable = i + 2, True
        elif c == "[":
            j = i + 1 + (body[i + 1 : i + 2] == "^")
            if body[j : j + 1] == "]":
                return "a class may not start with ] (write \\])"
            while j < len(body) and body[j] != "]":
                if body[j] == "\\":
                    if body[j + 1 : j + 2] not in _SYNTAX_CHARACTERS | {"-"}:
                        return f"escape \\{body[j + 1 : j + 2]} in a class"
                    j += 2
                    continue
                if body[j] == "[":
                    return "[ inside a class (write \\[)"
                j += 1
            if j >= len(body):
                return "a class is not closed"
            i, repeatable = j + 1, True
        elif c == "(":
            if body[i + 1 : i + 2] == "?":
                return "(? groups (lookaround, non-capturing groups, flags)"
            depth, i, repeatable = depth + 1, i + 1, False
        elif c == ")":
            depth -= 1
            if depth < 0:
                return "unbalanced )"
            i, repeatable = i + 1, True
        elif c in "*+?{":
            repeat = _REPEAT_RE.match(body, i) if c == "{" else None
            if c == "{" and repeat is None:
                return "{ that is not a quantifier {n}, {n,} or {n,m} (write \\{)"
            if not repeatable:
                return f"quantifier {c} with nothing to repeat"
            i = repeat.end() if repeat is not None else i + 1
            if body[i : i + 1] in ("?", "+"):
                return "lazy or possessive quantifier"
            repeatable = False
        elif c == "|":
            i, repeatable = i + 1, False
        elif c in ".^$}]":
            return f"unescaped {c} (`.` is not portable; ^ and $ only at the ends)"
        else:
            i, repeatable = i + 1, True
    return "unbalanced (" if depth else ""
