"""A violated pattern is described in words, with the spec's pattern kept as the reference:
`recipient_party: must be 2 to 8 uppercase letters A-Z, such as JP or TW, got 'jp' (pattern
^[A-Z]{2,8}$)`, never a bare regex for a person to decode."""

from __future__ import annotations

import re
from pathlib import Path

from hotline.validation import validate_envelope
from hotline.validation._values import PATTERN_WORDS
from tests.harness import free_text

PROTO = Path(__file__).resolve().parents[2] / "proto" / "hotline" / "v1"


def test_every_pattern_of_the_specification_is_said_in_words() -> None:
    patterns = {
        match.group(1)
        for path in PROTO.glob("*.proto")
        for match in re.finditer(r"pattern (\^[^;\n]*\$)", path.read_text(encoding="utf-8"))
    }
    assert patterns
    assert patterns <= set(PATTERN_WORDS), patterns - set(PATTERN_WORDS)
    for words in PATTERN_WORDS.values():
        assert "^" not in words
        assert "$" not in words


def test_a_violated_pattern_says_what_is_allowed_then_cites_the_pattern() -> None:
    envelope = free_text("pattern", recipient="TW")
    envelope.recipient_party = "jp"
    envelope.language = "Japanese"
    described = {v.field: v.description for v in validate_envelope(envelope)}
    assert described["recipient_party"] == (
        "must be 2 to 8 uppercase letters A-Z, such as JP or TW, got 'jp' (pattern ^[A-Z]{2,8}$)"
    )
    assert described["language"].startswith(
        "must be a BCP 47 language tag, such as en, ja or zh-Hant, got 'Japanese' (pattern ^"
    )
