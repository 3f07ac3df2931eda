"""The suite's outputs: a table for people, a JSON document for machines."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sim.conformance.registry import Result, Status, must_ids

_WIDTHS = (4, 36, 30)  # status, check id, spec section; MUSTs and the detail follow


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def header() -> str:
    status, ident, spec = _WIDTHS
    return f"{'':<{status}}  {'CHECK':<{ident}}  {'SPEC SECTION':<{spec}}  DETAIL"


def row(result: Result) -> str:
    """Two lines per check: the verdict, then the MUSTs it covers."""
    status, ident, spec = _WIDTHS
    c = result.check
    first = (
        f"{result.status.value:<{status}}  {_cut(c.id, ident):<{ident}}  "
        f"{_cut(c.spec, spec):<{spec}}  {result.detail}"
    )
    musts = ", ".join(must_ids(c)) or "-"
    return f"{first}\n{'':<{status}}  {'':<{ident}}  {'':<{spec}}  MUST: {musts}"


def summary(results: list[Result]) -> str:
    counts = Counter(r.status for r in results)
    verdict = "FAILED" if counts[Status.FAIL] else "PASSED"
    return (
        f"{verdict}: {counts[Status.PASS]} passed, {counts[Status.FAIL]} failed, "
        f"{counts[Status.SKIP]} skipped, of {len(results)} checks"
    )


def document(
    results: list[Result], *, target: str, role: str, parties: dict[str, str]
) -> dict[str, Any]:
    counts = Counter(r.status.value for r in results)
    return {
        "suite": "hotline conformance",
        "target": target,
        "role": role,
        "parties": parties,
        "finished": datetime.now(UTC).isoformat(),
        "passed": counts.get("PASS", 0),
        "failed": counts.get("FAIL", 0),
        "skipped": counts.get("SKIP", 0),
        "checks": [r.to_json() for r in results],
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
