"""The conformance checks: what each one tests, where the spec says so, and how it came out.

Every check names the SPEC.md section it tests (`spec`, the heading as it reads in
`proto/SPEC.md`) and the MUSTs it covers (`musts`). A check's `musts` are descriptive keys
(`"welcome-signed-over-nonce"`), stable across edits of the spec's wording; `MUST_IDS` maps each
key to the spec's own MUST ids (`[LINK-7]`) once SPEC.md numbers its MUSTs. Mapping a key is
one line in that table; nothing else changes, and `must_ids` / `covered_must_ids` (what a test
of the MUST index asks) follow.

A check is an async function of its role's session, registered with `@check(...)`. It returns
a one-line detail (PASS), raises `Failed` (FAIL) or `Skipped` (SKIP); any other exception is a
FAIL whose detail names it, so one broken check never stops the suite.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hotline.errors import HotlineError


class Role(StrEnum):
    PEER = "peer"
    OPERATOR = "operator"


class Status(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


class Failed(HotlineError):
    """The target does not do what the spec says (the check's detail is the message)."""


class Skipped(HotlineError):
    """The check could not run here (missing material, nothing to observe); not a failure."""


# Descriptive MUST key -> the spec's MUST id(s) (`proto/hotline/must_index.json`). A key not
# listed here is shown as itself, and `tests/sim/test_conformance.py` names those it expects.
MUST_IDS: dict[str, tuple[str, ...]] = {
    # identities, topology, signatures
    "receiver-cert-pinned-name": ("LINK-2",),
    "receiver-cert-gateway-spiffe-id": ("LINK-3", "ID-2"),
    "operator-service-own-operators-only": ("ID-3",),
    "reject-wrong-party": ("ID-4",),
    "reject-not-releasable": ("LINK-14",),
    "deliver-checks-in-order": ("LINK-14",),
    "lanes-independent": ("LINK-11",),
    "reject-wrong-lane": ("LINK-14",),
    "verify-signature-before-parse": ("SIG-2",),
    "record-signed-envelope-verifies": ("SIG-1", "ID-5"),
    # frames, Hello and Welcome
    "welcome-first-response-frame": ("LINK-5",),
    "hello-first-request-frame": ("LINK-5",),
    "hello-not-repeated": ("LINK-5",),
    "welcome-signed-over-hello-nonce": ("LINK-4",),
    "welcome-signing-certificates-of-receiver": ("LINK-4", "ID-5"),
    "hello-signing-certificates-of-sender": ("LINK-7",),
    "hello-signing-certificates": ("LINK-7",),
    "unsupported-version-failed-precondition": ("VER-1",),
    "sender-verifies-welcome-before-delivery": ("LINK-6", "LINK-4"),
    "sender-hello-first": ("LINK-5",),
    # deliveries
    "deliver-valid-receipted": ("LINK-14",),
    "batch-settled-by-one-receipt": ("LINK-15",),
    "reject-constraint-violation-invalid-message": ("VAL-5", "LINK-14"),
    "rejection-lists-violations": ("VAL-5",),
    "reject-bad-signature": ("SIG-2", "LINK-14"),
    "reject-duplicate-message-id": ("LINK-14",),
    "bad-batch-invalid-argument": ("LINK-10", "LINK-24"),
    "out-of-order-ends-stream-failed-precondition": ("LINK-17", "LINK-11"),
    "resend-other-bytes-ends-stream": ("LINK-17",),
    "resend-same-bytes-stored-receipt": ("LINK-16",),
    "batch-receipt-in-sequence-order": ("LINK-11",),
    "batch-receipt-signed-by-receiver": ("LINK-4",),
    "batch-receipt-settles-every-sequence-once": ("LINK-15",),
    "receipt-digest-of-payload": ("LINK-15",),
    "out-of-order-consumes-no-sequence": ("LINK-17",),
    "sender-signs-envelopes": ("SIG-1",),
    "sender-sequences-consecutive": ("LINK-10",),
    # resume
    "welcome-resends-receipts-after-hello": ("LINK-19",),
    "welcome-settles-every-sequence-after-hello": ("LINK-26",),
    "hello-beyond-last-sequence-data-loss": ("LINK-20",),
    "sender-records-welcome-receipts": ("LINK-18",),
    # stream ends, heartbeats, checkpoints
    "empty-frame-invalid-argument": ("LINK-24",),
    "hello-party-is-caller": ("LINK-24",),
    "one-stream-per-sender-older-aborted": ("LINK-24",),
    "answer-ping-with-pong": ("LINK-22",),
    "checkpoint-signed-by-sender": ("JRN-1",),
    "welcome-carries-witnessed-checkpoint": ("LINK-28",),
}

CheckFn = Callable[[Any], Awaitable[str]]


@dataclass(frozen=True)
class Check:
    id: str  # stable, dotted: "<role>.<area>.<what>"
    title: str
    role: Role
    spec: str  # the SPEC.md section heading it tests
    musts: tuple[str, ...] = ()
    run: CheckFn | None = field(default=None, compare=False, repr=False)
    optional: str = ""  # "listen": runs only with --listen


def must_ids(c: Check) -> tuple[str, ...]:
    """The spec's MUST ids a check covers (its descriptive keys where not yet mapped)."""
    out: list[str] = []
    for key in c.musts:
        out.extend(i for i in MUST_IDS.get(key, (key,)) if i not in out)
    return tuple(out)


REGISTRY: dict[str, Check] = {}


def check(
    id: str,
    title: str,
    *,
    spec: str,
    musts: tuple[str, ...] = (),
    optional: str = "",
) -> Callable[[CheckFn], CheckFn]:
    """Register a check; its role is the first part of its id. Order of registration is the
    order of running and of the report."""
    role = Role(id.split(".", 1)[0])

    def register(fn: CheckFn) -> CheckFn:
        if id in REGISTRY:
            raise ValueError(f"check {id} registered twice")
        REGISTRY[id] = Check(id, title, role, spec, musts, fn, optional)
        return fn

    return register


def checks_of(role: Role) -> list[Check]:
    return [c for c in REGISTRY.values() if c.role is role]


def covered_must_ids() -> set[str]:
    """Every MUST id (or unmapped key) some check covers: for the MUST index's coverage test."""
    return {m for c in REGISTRY.values() for m in must_ids(c)}


@dataclass
class Result:
    check: Check
    status: Status
    detail: str
    seconds: float = 0.0
    items: list[dict[str, str]] = field(default_factory=list)  # per-vector outcomes, for --json

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.check.id,
            "title": self.check.title,
            "role": str(self.check.role),
            "spec": self.check.spec,
            "musts": list(self.check.musts),
            "must_ids": list(must_ids(self.check)),
            "status": str(self.status),
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
            "items": self.items,
        }


class Items:
    """Per-vector outcomes a check collects (shown in --json), and its failures."""

    def __init__(self) -> None:
        self.rows: list[dict[str, str]] = []
        self.failures: list[str] = []

    def ok(self, name: str, detail: str = "") -> None:
        self.rows.append({"name": name, "status": "PASS", "detail": detail})

    def fail(self, name: str, detail: str) -> None:
        self.rows.append({"name": name, "status": "FAIL", "detail": detail})
        self.failures.append(f"{name}: {detail}")

    def verdict(self, what: str) -> str:
        """Raise `Failed` naming the first failures, or return "N/N <what>"."""
        n = len(self.rows)
        if self.failures:
            shown = "; ".join(self.failures[:3])
            more = f" (+{len(self.failures) - 3} more)" if len(self.failures) > 3 else ""
            raise Failed(f"{n - len(self.failures)}/{n} {what}; {shown}{more}")
        return f"{n}/{n} {what}"


def expect(condition: object, detail: str) -> None:
    """Fail the check with `detail` unless `condition` holds."""
    if not condition:
        raise Failed(detail)


async def run_checks(
    checks: list[Check],
    session: Any,
    *,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run `checks` in order against `session`; never raises for a check's failure."""
    results: list[Result] = []
    for c in checks:
        assert c.run is not None
        started = time.monotonic()
        session.items = Items()
        try:
            detail = await c.run(session)
            status = Status.PASS
        except Failed as exc:
            status, detail = Status.FAIL, str(exc)
        except Skipped as exc:
            status, detail = Status.SKIP, str(exc)
        except Exception as exc:  # a broken check or an unexpected answer: a failure, not a crash
            status, detail = Status.FAIL, f"{type(exc).__name__}: {exc}"
        result = Result(c, status, _one_line(detail), time.monotonic() - started)
        result.items = session.items.rows
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
