"""Validation of `hotline.v1` messages against the specification's field constraints.

Every field comment in `proto/hotline/v1/*.proto` ends with a `Constraints:` line, and a message
comment may end with one that relates several fields; the grammar is defined in the header
comment of `common.proto`. `proto/specdoc.py` copies those lines, verbatim, into the generated
table `hotline.constraints`. This package is the grammar's one interpreter:

* `_grammar`: `parse_field_constraints` and `parse_message_constraints` read one line into
  clause objects;
* `_compiler`: on first use, every `hotline.v1` message's lines are compiled, once, against the
  message descriptors (patterns precompiled, enum names resolved to numbers, paths resolved to
  fields), into a plan per message type (`_plans`): the `ValueTest`s of each field (`_values`)
  and the closures of each rule (`_rules`);
* `_codegen`: from those, one Python function per message type that checks its fields in
  order with the tests' quick yes written inline (the checks of set submessages too), visits
  only the set member of a oneof, and then tests the rules; the closures run only to report a
  violation, so a valid message costs no string formatting. A type's function is written and
  compiled on its first use (some 35 ms for the envelope's, with every body's checks).

`validate` returns every violation, each with the dotted path of the offending field from the
message validated (`handling.releasable_to[1]`,
`maritime_encounter.contacts[0].position.latitude_deg`; a oneof's name is not part of a path).

No field of the protocol is named in this package: change a `Constraints:` line, run `make gen`,
and the validator follows. Besides the grammar's clauses, the few rules every field obeys by the
specification's conventions are built in: an enum holds a declared value (and an item of a
repeated enum is never the `*_UNSPECIFIED` zero), a double is finite, a string holds no control
character (a `multiline` one may hold line feeds and tabs), and a Timestamp or Duration is
within the range its well-known type defines. The one rule written by hand is the only
static rule in prose: `OperatorService.Send` refuses an acknowledgement body (checked when
`filled=False`, which means "at Send time").

`proto/bench_validation.py` times `validate_envelope` on the golden examples.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from google.protobuf.message import Message

from hotline.errors import ValidationError, Violation
from hotline.v1 import envelope_pb2
from hotline.validation._codegen import MessageChecks
from hotline.validation._compiler import SPEC_FILES, compile_table
from hotline.validation._grammar import (
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
    Length,
    MessageRule,
    Multiline,
    OneOf,
    PathClause,
    Pattern,
    Range,
    Unique,
    parse_condition,
    parse_field_constraints,
    parse_message_constraints,
    parse_value_clause,
)
from hotline.validation._values import Carrier, Out, Step

__all__ = [
    "SPEC_FILES",
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
    "Length",
    "MessageRule",
    "Multiline",
    "OneOf",
    "PathClause",
    "Pattern",
    "Range",
    "Unique",
    "check_constraint_table",
    "check_envelope",
    "decode_envelope",
    "parse_condition",
    "parse_field_constraints",
    "parse_message_constraints",
    "parse_value_clause",
    "validate",
    "validate_envelope",
]


def check_constraint_table(fields: Mapping[str, str], messages: Mapping[str, str]) -> list[str]:
    """Compile a constraint table against the `hotline.v1` descriptors; return every problem.

    `fields` maps a field's full name (`hotline.v1.Envelope.message_id`) to its constraints,
    `messages` a message's full name to its rules, each the text after `Constraints: ` without
    the final period. Used by `proto/specdoc.py` before it writes `hotline.constraints`.
    """
    return compile_table(fields, messages)[1]


@cache
def _checks() -> MessageChecks:
    from hotline import constraints

    checks, errors = compile_table(constraints.FIELDS, constraints.MESSAGES)
    if checks is None:
        raise ConstraintSyntaxError(
            "hotline.constraints is inconsistent (run `make gen`): " + "; ".join(errors)
        )
    return checks


def _no_constraints(msg: Message, prefix: str, filled: bool, carrier: Carrier, out: Out) -> None:
    """The check of a message outside `hotline.v1`."""


# The check of each message class seen, by class: `type()` costs less than the full name.
_BY_CLASS: dict[type[Message], Step] = {}


def _check_of(message: Message) -> Step:
    check = _checks().get(message.DESCRIPTOR.full_name) or _no_constraints
    _BY_CLASS[type(message)] = check
    return check


def validate(message: Message, *, filled: bool = True, prefix: str = "") -> list[Violation]:
    """Check any `hotline.v1` message against the specification; return every violation.

    `filled=False` is for `OperatorService.Send`: fields whose constraints say "filled by
    gateway" may then be empty. `prefix` is prepended to every field path (for example
    `envelope` when the message is a request's `envelope` field). An empty list means valid.
    A message outside `hotline.v1` has no constraints.
    """
    check = _BY_CLASS.get(type(message)) or _check_of(message)
    if prefix and not prefix.endswith("."):
        prefix += "."
    out: list[Violation] = []
    check(message, prefix, filled, None, out)
    return out


def validate_envelope(envelope: envelope_pb2.Envelope, *, filled: bool = True) -> list[Violation]:
    """Check an envelope and its body; paths are dotted from the envelope (`handling.caveat`).

    `filled=True` (the default) for anything on the wire or in the journal; `filled=False` at
    `OperatorService.Send`, before the gateway fills `message_id`, `sender_party`, `originator`
    and `create_time` (it also refuses an acknowledgement body, which only `Acknowledge` makes).
    """
    check = _BY_CLASS.get(type(envelope)) or _check_of(envelope)
    out: list[Violation] = []
    check(envelope, "", filled, None, out)
    return out


def check_envelope(envelope: envelope_pb2.Envelope, *, filled: bool = True) -> None:
    """Raise `ValidationError` listing every violation, if the envelope has any."""
    violations = validate_envelope(envelope, filled=filled)
    if violations:
        raise ValidationError(violations)


def decode_envelope(data: bytes) -> tuple[envelope_pb2.Envelope | None, list[Violation]]:
    """Parse and check received envelope bytes. Never raises.

    Returns `(envelope, [])` for a valid envelope, `(envelope, violations)` for one that parses
    but breaks constraints, and `(None, [Violation("", "envelope bytes do not parse: ...")])` for
    bytes that are not an Envelope. (An empty field path is not a `FieldViolation`: report a
    parse failure in `Rejection.detail`.)
    """
    try:
        envelope = envelope_pb2.Envelope.FromString(data)
    except Exception as exc:  # any parse failure, whatever the protobuf backend raises
        reason = str(exc) or type(exc).__name__
        return None, [Violation("", f"envelope bytes do not parse: {reason[:200]}")]
    return envelope, validate_envelope(envelope)
