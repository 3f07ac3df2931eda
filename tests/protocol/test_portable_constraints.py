"""The constraints mean the same in any language: patterns, IP text and URLs.

Every `pattern` of the specification is in the portable subset common.proto states (the spec
linter refuses others); where Node.js is installed, each pattern is also run by ECMAScript's
engine (with and without the `u` flag) on tricky strings, and must decide exactly as Python's
`re.fullmatch` does. The IP formats follow RFC 5952 and dotted-quad text, not a language's
printer; the URL format is itself a portable pattern.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from hotline import constraints
from hotline.validation._grammar import portable_regex_problem
from hotline.validation._values import URL_PATTERN, _is_ip, _is_url

PATTERNS = sorted(
    {
        match.group(1)
        for text in [*constraints.FIELDS.values(), *constraints.MESSAGES.values()]
        for clause in text.split("; ")
        if (match := re.search(r"pattern (\^.*\$)$", clause))
    }
    | {URL_PATTERN}
)
# Strings where engines are known to differ: line breaks around an anchor, Unicode spaces and
# digits, non-ASCII letters, astral characters, and ordinary values of each pattern.
PROBES = [
    "", "JP", "JP\n", "\nJP", " JP", "J P", "JP\u00a0", "ＪＰ", "jp", "TW-1", "a@b", "a @b",
    "a\u2003@b", "a@b\n", "x@y.z", "a\u00e9@b", "\U0001f600@b", "+81312345678", "+８１3", "0123",
    "٣٤٥٦٧٨٩", "1234567", "123456789", "ABCDEF", "abcdef", "DDG-178", "A0000/25",
    "spiffe://jp.hotline/operator/watch-1", "spiffe://jp.hotline/\u00e9", "en", "zh-Hant",
    "zh-Hant\n", "CVE-2024-12345", "c2.example.net", "https://example.net/x?y=1#z",
    "https://exa mple.net/", "https://例え.jp/", "http://[2001:db8::1]:8080/", "a.b_c",
    "0197b3d5-7bd0-77d4-9430-62b55c25f383", "maritime_encounter.contacts[1].mmsi", "a" * 64,
]  # fmt: skip


@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_pattern_is_in_the_portable_subset(pattern: str) -> None:
    assert portable_regex_problem(pattern) == ""


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        (r"^[^@\s]+@[^@\s]+$", "escape \\s in a class"),
        (r"^\d{4}$", "escape \\d"),
        (r"^a.b$", "unescaped ."),
        (r"^(?:ab)$", "(? groups"),
        (r"^a+?$", "lazy or possessive"),
        (r"^ab", "anchored"),
        (r"^[é]$", "printable ASCII"),
        (r"^a{2$", "not a quantifier"),
    ],
)
def test_patterns_outside_the_subset_are_refused(pattern: str, problem: str) -> None:
    assert problem in portable_regex_problem(pattern)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_ecmascript_decides_every_pattern_exactly_as_python() -> None:
    script = (
        "const [patterns, probes] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "const out = patterns.map(p => probes.map(s => ["
        "  new RegExp(p).test(s), new RegExp(p, 'u').test(s)]));"
        "process.stdout.write(JSON.stringify(out));"
    )
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run(
        [node, "-e", script],
        input=json.dumps([PATTERNS, PROBES]),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    results = json.loads(done.stdout)
    differ = []
    for pattern, row in zip(PATTERNS, results, strict=True):
        for probe, (plain, unicode) in zip(PROBES, row, strict=True):
            python = re.fullmatch(pattern, probe) is not None
            if not python == plain == unicode:
                differ.append((pattern, probe, python, plain, unicode))
    assert differ == []


@pytest.mark.parametrize(
    ("value", "version", "ok"),
    [
        ("::ffff:192.0.2.1", 6, True),  # RFC 5952 section 5: mixed notation for IPv4-mapped
        ("::ffff:c000:201", 6, False),  # what Python 3.11 prints: not the spec's text
        ("2001:db8::1:0:0:1", 6, True),  # the first longest zero run is compressed
        ("2001:db8:0:0:1::1", 6, False),
        ("2001:db8::1%eth0", 6, False),  # no zone
        ("::/0", 6, True),
        ("1.2.3.4/08", 4, False),  # no leading zeros in the prefix either
        ("0.0.0.0/0", 4, True),
    ],
)
def test_ip_text_is_defined_by_the_rfcs(value: str, version: int, ok: bool) -> None:
    assert _is_ip(value, version) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("http://user:pass@example.net/", True),
        ("http://example.net/%zz", False),  # a percent sign starts an escape
        ("http://example.net/a\\b", False),  # a WHATWG parser would accept the backslash
        ("http://example.net:65536/", False),
        ("HTTP://EXAMPLE.NET/", True),
    ],
)
def test_the_url_format_is_the_portable_pattern(value: str, ok: bool) -> None:
    assert _is_url(value) is ok
