"""The MUST index of the specification: every MUST / MUST NOT, with its stable id.

Every MUST or MUST NOT in the specification (the comments of `proto/hotline/v1/*.proto` and the
hand-written chapters in `proto/spec/*.md`) is followed, in the same paragraph, by an id in
brackets: `... the receiver MUST accept only sequence last_sequence + 1 ... [LINK-11].` An id
is a prefix naming the part of the specification (`ID`, `LINK`, `CHK`, `JRN`, `SIG`, `VAL`,
`VER`) and a number; ids are never renumbered or reused, so tests and conformance reports can
name them. `proto/specdoc.py` extracts them with `extract` (and refuses a MUST without an id, an
id without a MUST, or an id used twice), lists them in SPEC.md, and writes them to
`must_index.json` beside this module, which `load` reads. Tests name the ids they check with
the `must` marker (`@pytest.mark.must("LINK-11")`), and `tests/protocol/test_must_index.py`
fails when an id has no test.

A reference to an id elsewhere is written without brackets (`see LINK-6`), and a MUST inside a
code span (between backticks) is not a requirement (it is talking about the word).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

INDEX_FILE = Path(__file__).with_name("must_index.json")
ID_PATTERN = r"[A-Z]+-[1-9][0-9]*"
_TAG = re.compile(rf"\[({ID_PATTERN})\]")
_MUST = re.compile(r"\bMUST\b(?: NOT\b)?")
_CODE_SPAN = re.compile(r"`[^`]*`")
_ITEM_START = re.compile(r"\s*(?:[*-]|[0-9]+\.)\s")
_UNDERLINE = re.compile(r"\s*(?:=+|-+)\s*")
_SENTENCE_END = re.compile(r"[.!?]\**\s")


@dataclass(frozen=True)
class Must:
    """One requirement: its id, its sentence, and where the specification states it."""

    id: str
    statement: str  # the sentence, from the start of its first MUST's sentence to the id
    section: str  # the heading it stands under, for a reader
    anchor: str  # the SPEC.md anchor of that section


@dataclass(frozen=True)
class Source:
    """A text of the specification: its lines, and where it is rendered in SPEC.md."""

    lines: tuple[str, ...]
    section: str
    anchor: str
    where: str  # for error messages: file and element


def _blocks(lines: Iterable[str], section: str) -> list[tuple[str, str]]:
    """(section, text) of each paragraph or list item; underlined or `#` titles become the
    section of the blocks after them."""
    blocks: list[tuple[str, str]] = []
    current: list[str] = []
    items = list(lines)

    def flush() -> None:
        if current:
            blocks.append((section, " ".join(s.strip() for s in current)))
            current.clear()

    for i, line in enumerate(items):
        following = items[i + 1] if i + 1 < len(items) else ""
        if not line.strip() or line.startswith("```"):
            flush()
        elif len(following.strip()) >= 3 and _UNDERLINE.fullmatch(following):
            flush()
            section = line.strip()
        elif _UNDERLINE.fullmatch(line) and len(line.strip()) >= 3:
            continue
        elif line.startswith("#"):
            flush()
            section = line.lstrip("#").strip()
        elif _ITEM_START.match(line) or line.startswith("|"):
            flush()
            current.append(line)
        else:
            current.append(line)
    flush()
    return blocks


def extract(sources: Iterable[Source]) -> tuple[list[Must], list[str]]:
    """Every MUST with its id, in document order, and what is wrong (empty when nothing)."""
    musts: list[Must] = []
    errors: list[str] = []
    seen: dict[str, str] = {}
    for source in sources:
        for section, text in _blocks(source.lines, source.section):
            if "RFC 2119" in text:
                continue  # the sentence that defines the key words
            plain = _CODE_SPAN.sub(lambda m: " " * len(m.group()), text)
            start = 0
            for tag in _TAG.finditer(plain):
                segment = plain[start : tag.start()]
                first = _MUST.search(segment)
                ident = tag.group(1)
                if first is None:
                    errors.append(
                        f"{source.where}: [{ident}] follows no MUST (write a reference as "
                        f"'see {ident}', without brackets)"
                    )
                else:
                    ends = list(_SENTENCE_END.finditer(segment, 0, first.start()))
                    sentence = ends[-1].end() if ends else 0
                    statement = text[start + sentence : tag.end()].strip().lstrip(";,:. ")
                    item = _ITEM_START.match(statement)
                    if item is not None:
                        statement = statement[item.end() :].strip()
                    if ident in seen:
                        errors.append(
                            f"{source.where}: [{ident}] is used twice (also in {seen[ident]})"
                        )
                    seen[ident] = source.where
                    musts.append(Must(ident, statement, section, source.anchor))
                start = tag.end()
            if _MUST.search(plain, start):
                errors.append(
                    f"{source.where}: a MUST without an id after it, in: "
                    f"{text[start:][:120]!r}... (add an id such as [LINK-{_next(seen, 'LINK')}])"
                )
    return musts, errors


def _next(seen: dict[str, str], prefix: str) -> int:
    numbers = [int(i.split("-")[1]) for i in seen if i.split("-")[0] == prefix]
    return max(numbers, default=0) + 1


def render_json(musts: Iterable[Must]) -> str:
    """The machine-readable index, as written to `must_index.json`."""
    return json.dumps([asdict(m) for m in musts], ensure_ascii=False, indent=1) + "\n"


def load(path: Path = INDEX_FILE) -> list[Must]:
    """The index as committed (generated by `proto/specdoc.py`)."""
    return [Must(**item) for item in json.loads(path.read_text(encoding="utf-8"))]
