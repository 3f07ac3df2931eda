"""Scenario files: an encounter's timeline as data (format ``hotline-scenario/1``, TOML).

A scenario says what each party sends and when, how the other side's watch officer answers,
and which faults strike the link on the way. The format is documented with examples in
`sim/scenarios/README.md`; this module parses and checks it. Every body is built into a real
`hotline.v1.Envelope` and run through the specification's validator when the file is loaded,
so a typo fails before the run with ``file:line: what is wrong`` (a `ScenarioError`), never
halfway through an exercise.

    scenario = load_scenario("yonaguni-naval-encounter")   # a built-in, or a path
    for event in scenario.events: ...
    envelope = event.envelope(n=1, now_ns=time.time_ns(), refs=["0190..."])

Two shorthands keep files readable (both are expanded before `json_format.ParseDict`):

* an enum value may be written without its prefix and in lower case: ``"shadowing"`` for
  ``ENCOUNTER_TYPE_SHADOWING``;
* a `LocalizedText` may be a string (one variant in the message's language) or a table of
  ``language = "text"``; the variant in the message's language is the ORIGINAL, the others are
  HUMAN_CONFIRMED translations.

String values of the form ``"@t"``, ``"@t+90s"``, ``"@t-2h30m"`` become timestamps relative to
the moment the message is sent; ``"@n"`` becomes the number of the repetition (1, 2, ...).
"""

from __future__ import annotations

import difflib
import math
import random
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from hotline.errors import ConfigError
from hotline.ids import new_message_id
from hotline.v1 import common_pb2, envelope_pb2
from hotline.validation import validate_envelope

FORMAT = "hotline-scenario/2"
FORMAT_V1 = "hotline-scenario/1"
FORMATS = (FORMAT_V1, FORMAT)
SCENARIO_DIR = Path(__file__).with_name("scenarios")

BODY_TYPES: tuple[str, ...] = tuple(
    f.name for f in envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"].fields
)
SENDABLE_BODIES = tuple(b for b in BODY_TYPES if b != "acknowledgement")

PRECEDENCES: dict[str, int] = {
    "flash": common_pb2.PRECEDENCE_FLASH,
    "immediate": common_pb2.PRECEDENCE_IMMEDIATE,
    "priority": common_pb2.PRECEDENCE_PRIORITY,
    "routine": common_pb2.PRECEDENCE_ROUTINE,
}
PRECEDENCE_NAMES = {value: name.upper() for name, value in PRECEDENCES.items()}
STATUSES: dict[str, int] = {
    "actual": common_pb2.MESSAGE_STATUS_ACTUAL,
    "exercise": common_pb2.MESSAGE_STATUS_EXERCISE,
    "test": common_pb2.MESSAGE_STATUS_TEST,
}
CLASSIFICATIONS: dict[str, int] = {
    "unclassified": common_pb2.CLASSIFICATION_UNCLASSIFIED,
    "restricted": common_pb2.CLASSIFICATION_RESTRICTED,
    "confidential": common_pb2.CLASSIFICATION_CONFIDENTIAL,
    "secret": common_pb2.CLASSIFICATION_SECRET,
}
ACTIONS: dict[str, int] = {
    "new": common_pb2.ACTION_NEW,
    "update": common_pb2.ACTION_UPDATE,
    "cancel": common_pb2.ACTION_CANCEL,
}
ANSWER_LEVELS = ("roger", "wilco", "unable", "say_again", "none")
FAULT_KINDS = (
    "delay",
    "jitter",
    "bandwidth",
    "stall",
    "resume",
    "drop",
    "refuse",
    "kill",
    "restart",
)
# Which parameter each fault kind needs (and its range); `duration_s` is allowed for every kind
# that can be undone: the fault is lifted that many scenario seconds later.
FAULT_PARAMS: dict[str, tuple[str, ...]] = {
    "delay": ("delay_s",),
    "jitter": ("jitter_s",),
    "bandwidth": ("bandwidth_bps",),
    "stall": (),
    "resume": (),
    "drop": (),
    "refuse": (),
    "kill": (),
    "restart": (),
}
UNDOABLE = {"delay", "jitter", "bandwidth", "stall", "drop", "refuse", "kill"}
PARTY_FAULTS = {"kill", "restart"}

_TOP_KEYS = {
    "format",
    "name",
    "title",
    "description",
    "parties",
    "duration_s",
    "defaults",
    "event",
    "fault",
    "slo",
    "include",
}
_DEFAULT_KEYS = {
    "status",
    "language",
    "classification",
    "releasable_to",
    "caveat",
    "think",
    "answer",
    "precedence",
    "expect",
}
_EVENT_KEYS = {
    "at",
    "from",
    "to",
    "type",
    "id",
    "precedence",
    "status",
    "language",
    "classification",
    "releasable_to",
    "caveat",
    "action",
    "refs",
    "expire_s",
    "fields",
    "think",
    "answer",
    "repeat",
    "note",
    "after",
    "when",
    "delay_s",
    "burst",
    "expect",
    "resend",
}
_FAULT_KEYS = {
    "at",
    "kind",
    "target",
    "duration_s",
    "wall_duration_s",
    "note",
    "delay_s",
    "jitter_s",
    "bandwidth_bps",
}
# Keys a `hotline-scenario/1` file may not use (format 2 added them).
V2_KEYS = {
    "include",
    "expect",
    "after",
    "when",
    "delay_s",
    "burst",
    "resend",
    "wall_duration_s",
}
_INCLUDE_KEYS = {"file", "offset_s", "prefix"}
_EXPECT_KEYS = {
    "answer",
    "refused",
    "journaled_s",
    "delivered_s",
    "acknowledged_s",
    "ack_system_s",
}
_RESEND_KEYS = {"answer", "think", "id"}
TRIGGER_STATES = ("journaled", "delivered", "acknowledged")
BURST_MAX = 10_000
LITERAL_REF = "id:"
_MESSAGE_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_AFTER = re.compile(
    r"^\s*(?P<label>[A-Za-z][A-Za-z0-9_.-]{0,63}(?:#[1-9][0-9]*)?)\s+"
    r"(?P<state>journaled|delivered|acknowledged)\s*$"
)
_WHEN = re.compile(
    r"^\s*link(?:\s+(?P<direction>[A-Z]{2,8}->[A-Z]{2,8}))?\s+(?P<state>up|down)\s*$"
)
_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_PARTY = re.compile(r"^[A-Z]{2,8}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_REL_TIME = re.compile(r"^@t(?:(?P<sign>[+-])(?P<span>(?:\d+(?:\.\d+)?[dhms])+))?$")
_REL_N = re.compile(r"^@n(?P<sign>[+-])(?P<k>\d{1,9})$")
_SPAN_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNIT_S = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


class ScenarioError(ConfigError):
    """A scenario file that cannot be used: `str(error)` is ``file:line: what is wrong``."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        where = f"{source}:{line}" if line else source
        super().__init__(f"{where}: {problem}")


# ---------------------------------------------------------------------------------------------
# Responder behaviour


@dataclass(frozen=True)
class ThinkTime:
    """How long the scripted watch officer takes to answer, in scenario seconds."""

    dist: str = "fixed"
    params: tuple[float, ...] = (0.0,)

    def sample(self, rng: random.Random) -> float:
        p = self.params
        if self.dist == "fixed":
            return p[0]
        if self.dist == "uniform":
            return rng.uniform(p[0], p[1])
        if self.dist == "exponential":
            return rng.expovariate(1.0 / p[0]) if p[0] > 0 else 0.0
        if self.dist == "lognormal":
            return p[0] * math.exp(rng.gauss(0.0, p[1]))
        raise AssertionError(self.dist)

    def describe(self) -> str:
        names = _THINK_PARAMS[self.dist]
        return (
            f"{self.dist}("
            + ", ".join(f"{n}={v:g}" for n, v in zip(names, self.params, strict=True))
            + ")"
        )


_THINK_PARAMS: dict[str, tuple[str, ...]] = {
    "fixed": ("s",),
    "uniform": ("min_s", "max_s"),
    "exponential": ("mean_s",),
    "lognormal": ("median_s", "sigma"),
}


@dataclass(frozen=True)
class Answer:
    """Probabilities of the acknowledgement levels the responder answers with ("none": silence)."""

    weights: tuple[tuple[str, float], ...] = (("roger", 1.0),)

    def draw(self, rng: random.Random) -> str:
        x = rng.random()
        total = 0.0
        for level, weight in self.weights:
            total += weight
            if x < total:
                return level
        return self.weights[-1][0]

    def describe(self) -> str:
        return ", ".join(f"{level}={w:g}" for level, w in self.weights)


@dataclass(frozen=True)
class Repeat:
    count: int
    every_s: float


@dataclass(frozen=True)
class Trigger:
    """What starts a triggered event (format 2): a state another message reached
    (`after = "LABEL acknowledged"`) or a change of the link (`when = "link JP->TW up"`)."""

    text: str  # as written
    label: str = ""  # after: the event's label, "LABEL#n" for one repetition
    state: str = ""  # after: journaled | delivered | acknowledged; when: up | down
    direction: str = ""  # when: "JP->TW", "TW->JP", or "" for either direction

    @property
    def on_link(self) -> bool:
        return not self.label

    def describe(self) -> str:
        return f"when {self.text}" if self.on_link else f"after {self.text}"


@dataclass(frozen=True)
class Expectation:
    """What an event's messages must do (format 2): feeds the run's thresholds."""

    answer: str = ""  # the answer level each must get ("none": no answer at all), "" unchecked
    refused: str = ""  # the gRPC status Send must refuse each with ("ANY": any), "" unchecked
    # (stage, budget in real seconds): each message's latency at that stage must be within it
    budgets: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Resend:
    """How a message answered SAY_AGAIN is sent again (format 2's `resend` table)."""

    answer: Answer
    think: ThinkTime
    label: str = ""


# ---------------------------------------------------------------------------------------------
# The scenario


@dataclass(frozen=True)
class EventSpec:
    """One `[[event]]`: a message one party sends at a scenario time (or a series of them)."""

    index: int
    line: int
    at: float
    sender: str
    recipient: str
    body: str
    precedence: int
    status: int
    language: str
    classification: int
    releasable_to: tuple[str, ...]
    caveat: str
    action: int
    refs: tuple[str, ...]
    label: str
    fields: Mapping[str, Any]
    think: ThinkTime
    answer: Answer
    repeat: Repeat | None
    expire_s: float | None
    # format 2
    trigger: Trigger | None = None  # the event waits for this (armed at `at`)
    delay_s: float = 0.0  # scenario seconds from the trigger to the send
    burst: int = 0  # send this many copies at once (numbered 1..burst like repetitions)
    expect: Expectation | None = None
    resend: Resend | None = None
    source: str = ""  # the file the event was written in, when included from another

    def times(self) -> list[tuple[float, int]]:
        """(scenario time, repetition number from 1) of every message this event sends
        (for a triggered event, `at` is when the trigger is armed)."""
        if self.burst:
            return [(self.at, i + 1) for i in range(self.burst)]
        if self.repeat is None:
            return [(self.at, 1)]
        return [(self.at + i * self.repeat.every_s, i + 1) for i in range(self.repeat.count)]

    @property
    def count(self) -> int:
        if self.burst:
            return self.burst
        return 1 if self.repeat is None else self.repeat.count

    @property
    def numbered(self) -> bool:
        """Its messages are labelled per repetition (`LABEL#n`)."""
        return self.count > 1

    def label_of(self, n: int) -> str:
        return f"{self.label}#{n}" if self.label and self.numbered else self.label

    def name(self) -> str:
        """How reports name the event: its label, else its type and line."""
        return (
            self.label
            or f"{self.body}@{Path(self.source).name + ':' if self.source else ''}{self.line}"
        )

    @property
    def last_at(self) -> float:
        return self.times()[-1][0]

    def envelope(
        self,
        *,
        n: int = 1,
        now_ns: int,
        refs: Sequence[str] = (),
        message_id: str | None = None,
    ) -> envelope_pb2.Envelope:
        """The envelope an operator submits for repetition `n`, sent at wall time `now_ns`.

        `refs` are the message ids the event's `refs` labels stand for, in the same order.
        """
        env = envelope_pb2.Envelope(
            message_id=message_id or new_message_id(),
            recipient_party=self.recipient,
            status=self.status,  # type: ignore[arg-type]
            precedence=self.precedence,  # type: ignore[arg-type]
            language=self.language,
            action=self.action,  # type: ignore[arg-type]
        )
        env.handling.classification = self.classification  # type: ignore[assignment]
        env.handling.releasable_to.extend(self.releasable_to)
        if self.caveat:
            env.handling.caveat = self.caveat
        env.references.extend(r.removeprefix(LITERAL_REF) for r in refs)
        env.create_time.FromNanoseconds(now_ns)
        if self.expire_s is not None:
            env.expire_time.FromNanoseconds(now_ns + int(self.expire_s * 1e9))
        body = getattr(env, self.body)
        values = _substitute(self.fields, now_ns=now_ns, n=n)
        json_format.ParseDict(values, body)
        return env


@dataclass(frozen=True)
class FaultSpec:
    """One `[[fault]]` (or `--fault`): something done to the link or a gateway at a time."""

    at: float
    kind: str
    target: str
    params: Mapping[str, float]
    duration_s: float | None = None
    line: int = 0
    # lifted this many *wall* seconds after it was applied, whatever the speed (format 2)
    wall_duration_s: float | None = None

    def describe(self) -> str:
        extra = "".join(f", {k}={v:g}" for k, v in self.params.items())
        lasting = f" for {self.duration_s:g} s" if self.duration_s else ""
        if self.wall_duration_s:
            lasting = f" for {self.wall_duration_s:g} s of wall time"
        return f"t={self.at:g} s: {self.kind} {self.target}{extra}{lasting}"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    parties: tuple[str, str]
    events: tuple[EventSpec, ...]
    faults: tuple[FaultSpec, ...]
    source: str
    duration_s: float
    # thresholds the run must meet (`sim.slo.Threshold`), from the file's `slo` list
    slo: tuple[Any, ...] = ()

    @property
    def message_count(self) -> int:
        return sum(e.count for e in self.events)

    def timeline(self) -> list[tuple[float, EventSpec, int]]:
        """Every message sent at a time, in scenario-time order (ties keep file order); the
        triggered events (`triggered`) are not in it."""
        plan = [
            (at, event, n)
            for event in self.events
            if event.trigger is None
            for at, n in event.times()
        ]
        plan.sort(key=lambda item: (item[0], item[1].index, item[2]))
        return plan

    def triggered(self) -> list[EventSpec]:
        """The events that wait for a trigger, in the order they are armed."""
        return sorted(
            (e for e in self.events if e.trigger is not None), key=lambda e: (e.at, e.index)
        )


# ---------------------------------------------------------------------------------------------
# Finding scenarios


def builtin_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def resolve(name_or_path: str) -> Path:
    """A built-in scenario's file by name, or the path given."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists() or "/" in name_or_path:
        if not path.exists():
            raise ScenarioError(name_or_path, None, "no such scenario file")
        return path
    candidate = SCENARIO_DIR / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    close = difflib.get_close_matches(name_or_path, builtin_names(), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ScenarioError(
        name_or_path,
        None,
        f"no built-in scenario of that name{hint}; `hotline sim list` shows them",
    )


def speed_hint(scenario: Scenario, speed: float | None) -> str:
    """A note when a replay at `speed` would take long in wall time ("" otherwise)."""
    if speed is None:
        return ""
    wall = scenario.duration_s / speed
    if wall <= 600:
        return ""
    suggested = scenario.duration_s / 120
    return (
        f"note: {scenario.name} lasts {scenario.duration_s:g} s of scenario time: at speed "
        f"{speed:g} that is {wall / 60:.0f} min of wall time (try --speed {suggested:.0f}, "
        "or --speed max)"
    )


def load_scenario(name_or_path: str) -> Scenario:
    path = resolve(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), None, f"cannot read: {exc}") from None
    return parse_scenario(text, source=str(path))


# ---------------------------------------------------------------------------------------------
# Parsing


class _Lines:
    """Finds the line a key was written on, for error messages (tomllib keeps no positions)."""

    _HEADER = re.compile(r"^\s*\[\[\s*(event|fault|include)\s*\]\]\s*(#.*)?$")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.sections: dict[str, list[int]] = {"event": [], "fault": [], "include": []}
        for number, line in enumerate(self.lines, 1):
            match = self._HEADER.match(line)
            if match:
                self.sections[match.group(1)].append(number)
        self._starts = sorted(n for ns in self.sections.values() for n in ns)

    def span(self, section: str | None, index: int | None) -> tuple[int, int]:
        """First and last line of the `index`-th [[section]] (or of the top of the file)."""
        if section is None or index is None:
            first = 1
            end = self._starts[0] - 1 if self._starts else len(self.lines)
            return first, end
        starts = self.sections[section]
        if index >= len(starts):
            return 1, len(self.lines)
        first = starts[index]
        later = [n for n in self._starts if n > first]
        return first, (later[0] - 1 if later else len(self.lines))

    def find(
        self, path: Sequence[str], section: str | None = None, index: int | None = None
    ) -> int:
        """The line of the key at `path` (dotted keys, tables, inline tables), best effort."""
        first, last = self.span(section, index)
        line = first
        for key in path:
            if not key or key[0] == "[":
                continue
            pattern = re.compile(r"(^|[\s{,.\[])\"?" + re.escape(key) + r"\"?\s*(=|\]|\.)")
            for number in range(line, last + 1):
                text = self.lines[number - 1].split("#", 1)[0] if number <= len(self.lines) else ""
                if pattern.search(text):
                    line = number
                    break
        return line


def _syntax_line(exc: tomllib.TOMLDecodeError) -> tuple[int | None, str]:
    message = str(exc)
    match = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if match is None:
        match_eof = re.search(r"\(at end of document\)", message)
        text = message.replace(" (at end of document)", "") if match_eof else message
        return None, f"not valid TOML: {text} (at end of file)" if match_eof else text
    problem = message[: match.start()].strip()
    return int(match.group(1)), f"not valid TOML: {problem} (column {match.group(2)})"


def parse_scenario(
    text: str, *, source: str = "<scenario>", _including: tuple[str, ...] = ()
) -> Scenario:
    """Parse and check a scenario; raise ScenarioError naming the file and line of a problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line, problem = _syntax_line(exc)
        raise ScenarioError(source, line, problem) from None
    return _Parser(raw, _Lines(text), source, _including).scenario()


class _Parser:
    def __init__(
        self, raw: dict[str, Any], lines: _Lines, source: str, including: tuple[str, ...] = ()
    ) -> None:
        self.raw = raw
        self.lines = lines
        self.source = source
        self.including = including  # the files that include this one (cycle check)
        self.version = 2

    def fail(
        self,
        problem: str,
        path: Sequence[str] = (),
        section: str | None = None,
        index: int | None = None,
    ) -> ScenarioError:
        line = self.lines.find(path, section, index) if path or section else None
        if line is None and section is None and not path:
            line = None
        return ScenarioError(self.source, line, problem)

    # -- top level

    def scenario(self) -> Scenario:
        raw = self.raw
        unknown = sorted(set(raw) - _TOP_KEYS)
        if unknown:
            raise self.fail(_unknown("key", unknown[0], _TOP_KEYS), [unknown[0]])
        fmt = raw.get("format")
        if fmt is None:
            raise ScenarioError(self.source, 1, f'missing `format = "{FORMAT}"` on the first line')
        if fmt not in FORMATS:
            raise self.fail(
                f"format {fmt!r} is not supported (use {FORMAT!r}; {FORMAT_V1!r} still loads)",
                ["format"],
            )
        if fmt == FORMAT_V1:
            self.version = 1
            self.refuse_v2_keys()
        name = self._string(raw, "name", required=True)
        if not _NAME.match(name):
            raise self.fail(
                "name must be lower-case letters, digits and '-' (1..64 chars)", ["name"]
            )
        title = self._string(raw, "title", required=True)
        description = self._string(raw, "description", default="")
        parties_raw = raw.get("parties", ["JP", "TW"])
        if (
            not isinstance(parties_raw, list)
            or len(parties_raw) != 2
            or not all(isinstance(p, str) and _PARTY.match(p) for p in parties_raw)
            or parties_raw[0] == parties_raw[1]
        ):
            raise self.fail(
                'parties must be two different party codes, e.g. ["JP", "TW"]', ["parties"]
            )
        parties = (str(parties_raw[0]), str(parties_raw[1]))
        defaults = raw.get("defaults", {})
        if not isinstance(defaults, dict):
            raise self.fail("[defaults] must be a table", ["defaults"])
        unknown = sorted(set(defaults) - _DEFAULT_KEYS)
        if unknown:
            raise self.fail(
                _unknown("default", unknown[0], _DEFAULT_KEYS), ["defaults", unknown[0]]
            )
        events_raw = raw.get("event", [])
        if not isinstance(events_raw, list) or not events_raw:
            raise ScenarioError(self.source, None, "a scenario needs at least one [[event]]")
        events = [self.event(i, e, parties, defaults) for i, e in enumerate(events_raw)]
        faults_raw = raw.get("fault", [])
        if not isinstance(faults_raw, list):
            raise self.fail("fault must be an array of tables ([[fault]])", ["fault"])
        faults = [self.fault(i, f, parties) for i, f in enumerate(faults_raw)]
        own = len(events)
        for included in self.includes(raw.get("include", []), parties):
            events.extend(
                _shifted_event(e, included, len(events)) for e in included.scenario.events
            )
            faults.extend(_shifted_fault(f, included.offset_s) for f in included.scenario.faults)
        self.check_references(events, own)
        last = max(
            [e.last_at for e in events] + [f.at + (f.duration_s or 0.0) for f in faults] + [0.0]
        )
        duration = raw.get("duration_s", last)
        if not isinstance(duration, int | float) or isinstance(duration, bool) or duration < last:
            raise self.fail(
                f"duration_s must be a number at least the last event's time ({last:g})",
                ["duration_s"],
            )
        slo = self.slo(raw.get("slo", []))
        scenario = Scenario(
            name=name,
            title=title,
            description=description.strip(),
            parties=parties,
            events=tuple(events),
            faults=tuple(faults),
            source=self.source,
            duration_s=float(duration),
            slo=slo,
        )
        self.check_bodies(scenario)
        return scenario

    def refuse_v2_keys(self) -> None:
        """A format-1 file may not use what format 2 added (it would be silently different)."""
        raw = self.raw
        tables: list[tuple[Mapping[str, Any], str | None, int | None, list[str]]] = [
            (raw, None, None, []),
        ]
        if isinstance(raw.get("defaults"), dict):
            tables.append((raw["defaults"], None, None, ["defaults"]))
        section: str | None
        for section in ("event", "fault"):
            items = raw.get(section, [])
            if isinstance(items, list):
                tables += [(t, section, i, []) for i, t in enumerate(items) if isinstance(t, dict)]
        for table, section, index, prefix in tables:
            for key in sorted(set(table) & V2_KEYS):
                raise self.fail(
                    f"{key!r} needs format = {FORMAT!r} (this file is {FORMAT_V1!r})",
                    [*prefix, key],
                    section,
                    index,
                )

    def includes(self, raw: Any, parties: tuple[str, str]) -> list[_Included]:
        """Each `[[include]]`: another scenario file's events and faults, shifted in time."""
        if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
            raise self.fail(
                'include must be an array of tables: [[include]] file = "day.toml"', ["include"]
            )
        found = []
        for index, table in enumerate(raw):

            def fail(problem: str, key: str, index: int = index) -> ScenarioError:
                return self.fail(problem, [key], "include", index)

            unknown = sorted(set(table) - _INCLUDE_KEYS)
            if unknown:
                raise fail(_unknown("include key", unknown[0], _INCLUDE_KEYS), unknown[0])
            name = table.get("file")
            if not isinstance(name, str) or not name:
                raise fail("an include needs file = a scenario file or built-in name", "file")
            offset = table.get("offset_s", 0)
            if not _number(offset) or offset < 0:
                raise fail("offset_s (scenario seconds) must be a number >= 0", "offset_s")
            prefix = table.get("prefix", "")
            if not isinstance(prefix, str) or (prefix and not _LABEL.match(prefix + "x")):
                raise fail(
                    "prefix must start with a letter: letters, digits, '_', '-', '.'", "prefix"
                )
            base = Path(self.source).parent
            path = base / name if (base / name).exists() else None
            try:
                found_path = path or resolve(name)
            except ScenarioError as exc:
                raise fail(f"include {name!r}: {exc.problem}", "file") from None
            key = str(found_path.resolve())
            if key in self.including or key == str(Path(self.source).resolve()):
                raise fail(f"include {name!r}: a file cannot include itself", "file")
            try:
                text = found_path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise fail(f"include {name!r}: cannot read: {exc}", "file") from None
            included = parse_scenario(
                text,
                source=str(found_path),
                _including=(*self.including, str(Path(self.source).resolve())),
            )
            if included.parties != parties:
                raise fail(
                    f"include {name!r}: its parties {list(included.parties)} are not this "
                    f"file's {list(parties)}",
                    "file",
                )
            found.append(_Included(included, float(offset), prefix))
        return found

    def slo(self, raw: Any) -> tuple[Any, ...]:
        from sim.slo import ThresholdError, parse_threshold  # sim.slo imports this module

        if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
            raise self.fail(
                'slo must be a list of thresholds, e.g. ["delivered.p99<50ms"]', ["slo"]
            )
        try:
            return tuple(parse_threshold(text) for text in raw)
        except ThresholdError as exc:
            raise self.fail(str(exc), ["slo"]) from None

    def _string(
        self, table: Mapping[str, Any], key: str, *, required: bool = False, default: str = ""
    ) -> str:
        value = table.get(key)
        if value is None:
            if required:
                raise ScenarioError(self.source, None, f"missing required key {key!r}")
            return default
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{key} must be a non-empty string", [key])
        return value

    # -- events

    def event(
        self,
        index: int,
        raw: Any,
        parties: tuple[str, str],
        defaults: Mapping[str, Any],
    ) -> EventSpec:
        where = {"section": "event", "index": index}

        def fail(problem: str, *path: str) -> ScenarioError:
            return self.fail(problem, list(path), **where)  # type: ignore[arg-type]

        if not isinstance(raw, dict):
            raise fail("[[event]] must be a table")
        unknown = sorted(set(raw) - _EVENT_KEYS)
        if unknown:
            raise fail(_unknown("event key", unknown[0], _EVENT_KEYS), unknown[0])
        line = self.lines.span("event", index)[0]
        trigger = self.trigger(raw, parties, fail)
        at = raw.get("at", 0 if trigger is not None else None)
        if not _number(at) or at < 0:
            raise fail("`at` (scenario seconds) must be a number >= 0", "at" if "at" in raw else "")
        sender = raw.get("from")
        if sender not in parties:
            raise fail(
                f"`from` must be one of {', '.join(parties)}", "from" if "from" in raw else ""
            )
        recipient = raw.get("to", parties[1] if sender == parties[0] else parties[0])
        if recipient not in parties or recipient == sender:
            raise fail("`to` must be the other party", "to")
        body = raw.get("type")
        if body == "acknowledgement":
            raise fail(
                "acknowledgements are not sent as events: script them with `answer` "
                "(the responder acknowledges each message)",
                "type",
            )
        if body not in SENDABLE_BODIES:
            raise fail(
                _unknown("body type", str(body), SENDABLE_BODIES)
                if body
                else f"`type` is required (one of {', '.join(SENDABLE_BODIES)})",
                "type" if "type" in raw else "",
            )
        precedence = self._enum(raw, defaults, "precedence", PRECEDENCES, "routine", where)
        status = self._enum(raw, defaults, "status", STATUSES, "exercise", where)
        classification = self._enum(
            raw, defaults, "classification", CLASSIFICATIONS, "unclassified", where
        )
        action = self._enum(raw, {}, "action", ACTIONS, "new", where)
        language = raw.get("language", defaults.get("language", "en"))
        if not isinstance(language, str) or not _LANGUAGE.match(language):
            raise fail("language must be a BCP 47 tag such as en, ja, zh-Hant", "language")
        releasable = raw.get("releasable_to", defaults.get("releasable_to", list(parties)))
        if not isinstance(releasable, list) or not all(
            isinstance(p, str) and _PARTY.match(p) for p in releasable
        ):
            raise fail("releasable_to must be a list of party codes", "releasable_to")
        caveat = raw.get("caveat", defaults.get("caveat", ""))
        if not isinstance(caveat, str):
            raise fail("caveat must be a string", "caveat")
        label = raw.get("id", "")
        if label and (not isinstance(label, str) or not _LABEL.match(label)):
            raise fail("id must be a label: a letter, then letters, digits, '_', '-', '.'", "id")
        refs = raw.get("refs", [])
        if isinstance(refs, str):
            refs = [refs]
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise fail("refs must be a list of event ids", "refs")
        if action != common_pb2.ACTION_NEW and not refs:
            raise fail("an update or cancel needs `refs` naming the message it replaces", "action")
        expire = raw.get("expire_s")
        if expire is not None and (not _number(expire) or expire <= 0):
            raise fail("expire_s must be a positive number of seconds", "expire_s")
        fields = raw.get("fields", {})
        if not isinstance(fields, dict):
            raise fail("fields must be a table of the body's fields", "fields")
        try:
            fields = _normalize(_body_descriptor(str(body)), fields, language=language)
        except _FieldProblem as problem:
            raise self.fail(
                f"fields.{'.'.join(problem.path)}: {problem.message}",
                ["fields", *problem.path],
                "event",
                index,
            ) from None
        think = self.think(raw.get("think", defaults.get("think")), index, "think" in raw)
        answer = self.answer(raw.get("answer", defaults.get("answer")), index, "answer" in raw)
        repeat = None
        if "repeat" in raw:
            rep = raw["repeat"]
            if (
                not isinstance(rep, dict)
                or set(rep) != {"count", "every_s"}
                or not isinstance(rep["count"], int)
                or isinstance(rep["count"], bool)
                or rep["count"] < 1
                or not _number(rep["every_s"])
                or rep["every_s"] <= 0
            ):
                raise fail("repeat must be {count = N >= 1, every_s = S > 0}", "repeat")
            repeat = Repeat(rep["count"], float(rep["every_s"]))
        delay = raw.get("delay_s", 0.0)
        if "delay_s" in raw:
            if trigger is None:
                raise fail(
                    "delay_s applies to a triggered event (after = ... or when = ...)", "delay_s"
                )
            if not _number(delay) or delay < 0:
                raise fail("delay_s (scenario seconds after the trigger) must be >= 0", "delay_s")
        burst = raw.get("burst", 0)
        if "burst" in raw:
            if not isinstance(burst, int) or isinstance(burst, bool) or not 1 <= burst <= BURST_MAX:
                raise fail(f"burst must be a whole number of messages, 1..{BURST_MAX}", "burst")
            if repeat is not None:
                raise fail("an event is either a burst or repeated, not both", "burst")
        if trigger is not None and repeat is not None:
            raise fail("a triggered event cannot repeat (trigger each one, or use burst)", "repeat")
        expect = self.expect(raw.get("expect", defaults.get("expect")), "expect" in raw, fail)
        resend = self.resend(raw.get("resend"), index, fail, answer, think)
        return EventSpec(
            index=index,
            line=line,
            at=float(at),
            sender=str(sender),
            recipient=str(recipient),
            body=str(body),
            precedence=precedence,
            status=status,
            language=language,
            classification=classification,
            releasable_to=tuple(releasable),
            caveat=caveat,
            action=action,
            refs=tuple(refs),
            label=label,
            fields=fields,
            think=think,
            answer=answer,
            repeat=repeat,
            expire_s=float(expire) if expire is not None else None,
            trigger=trigger,
            delay_s=float(delay),
            burst=int(burst),
            expect=expect,
            resend=resend,
        )

    def trigger(
        self, raw: Mapping[str, Any], parties: tuple[str, str], fail: Callable[..., ScenarioError]
    ) -> Trigger | None:
        after, when = raw.get("after"), raw.get("when")
        if after is not None and when is not None:
            raise fail("an event has one trigger: after = ... or when = ..., not both", "when")
        if after is not None:
            match = _AFTER.match(after) if isinstance(after, str) else None
            if match is None:
                raise fail(
                    'after must be "LABEL STATE" (STATE: journaled, delivered, acknowledged), '
                    'e.g. after = "REPORT acknowledged" or "TEST#2 delivered"',
                    "after",
                )
            return Trigger(after.strip(), label=match["label"], state=match["state"])
        if when is not None:
            match = _WHEN.match(when) if isinstance(when, str) else None
            if match is None:
                raise fail(
                    f'when must be "link up", "link down" or "link {"->".join(parties)} up"',
                    "when",
                )
            direction = match["direction"] or ""
            if direction and direction not in directions(parties):
                raise fail(
                    f"when: {direction} is not a link direction ({', '.join(directions(parties))})",
                    "when",
                )
            return Trigger(when.strip(), state=match["state"], direction=direction)
        return None

    def expect(self, raw: Any, own: bool, fail: Callable[..., ScenarioError]) -> Expectation | None:
        if raw is None:
            return None
        key = "expect" if own else ""

        def bad(problem: str) -> ScenarioError:
            if own:
                return fail(problem, key)
            return self.fail(problem, ["defaults", "expect"])

        if not isinstance(raw, dict) or not raw:
            raise bad(
                "expect must be a table: answer, refused, journaled_s, delivered_s, "
                "acknowledged_s, ack_system_s"
            )
        unknown = sorted(set(raw) - _EXPECT_KEYS)
        if unknown:
            raise bad(_unknown("expect key", unknown[0], _EXPECT_KEYS))
        answer = raw.get("answer", "")
        if answer and answer not in ANSWER_LEVELS:
            raise bad(_unknown("expected answer", str(answer), ANSWER_LEVELS))
        refused = raw.get("refused", "")
        if refused is True:
            refused = "ANY"
        if refused:
            refused = str(refused).upper()
            if refused != "ANY" and refused not in grpc_codes():
                raise bad(_unknown("status code in refused", refused, grpc_codes()))
        budgets = []
        for name in ("journaled_s", "delivered_s", "acknowledged_s", "ack_system_s"):
            if name in raw:
                if not _number(raw[name]) or raw[name] <= 0:
                    raise bad(f"expect.{name} (real seconds) must be a positive number")
                budgets.append((name.removesuffix("_s"), float(raw[name])))
        if refused and (answer or budgets):
            raise bad("a message expected to be refused has no answer or latency to expect")
        return Expectation(answer=str(answer), refused=str(refused), budgets=tuple(budgets))

    def resend(
        self,
        raw: Any,
        index: int,
        fail: Callable[..., ScenarioError],
        answer: Answer,
        think: ThinkTime,
    ) -> Resend | None:
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise fail("resend must be a table: answer, think, id", "resend")
        unknown = sorted(set(raw) - _RESEND_KEYS)
        if unknown:
            raise fail(_unknown("resend key", unknown[0], _RESEND_KEYS), "resend")
        label = raw.get("id", "")
        if label and (not isinstance(label, str) or not _LABEL.match(label)):
            raise fail(
                "resend.id must be a label: a letter, then letters, digits, '_', '-', '.'", "resend"
            )
        return Resend(
            answer=self.answer(raw["answer"], index, True) if "answer" in raw else answer,
            think=self.think(raw["think"], index, True) if "think" in raw else think,
            label=str(label),
        )

    def _enum(
        self,
        raw: Mapping[str, Any],
        defaults: Mapping[str, Any],
        key: str,
        values: Mapping[str, int],
        default: str,
        where: Mapping[str, Any],
    ) -> int:
        text = raw.get(key, defaults.get(key, default))
        in_defaults = key not in raw and key in defaults
        if not isinstance(text, str) or text.lower() not in values:
            if in_defaults:
                raise self.fail(_unknown(key, str(text), values), ["defaults", key])
            raise self.fail(_unknown(key, str(text), values), [key], **where)
        return values[text.lower()]

    def think(self, raw: Any, index: int, own: bool) -> ThinkTime:
        if raw is None:
            return ThinkTime("lognormal", (20.0, 0.5))
        path = ["think"] if own else ["defaults", "think"]
        section, idx = ("event", index) if own else (None, None)
        if isinstance(raw, int | float) and not isinstance(raw, bool) and raw >= 0:
            return ThinkTime("fixed", (float(raw),))
        if not isinstance(raw, dict) or raw.get("dist") not in _THINK_PARAMS:
            raise self.fail(
                'think must be {dist = "fixed"|"uniform"|"exponential"|"lognormal", ...}',
                path,
                section,
                idx,
            )
        dist = raw["dist"]
        names = _THINK_PARAMS[dist]
        extra = sorted(set(raw) - {"dist", *names})
        if extra or not all(_number(raw.get(n)) and raw[n] >= 0 for n in names):
            raise self.fail(
                f"think dist {dist!r} takes {', '.join(names)} (numbers >= 0)"
                + (f"; unknown {extra[0]!r}" if extra else ""),
                path,
                section,
                idx,
            )
        params = tuple(float(raw[n]) for n in names)
        if dist == "uniform" and params[1] < params[0]:
            raise self.fail("think uniform: max_s is below min_s", path, section, idx)
        return ThinkTime(dist, params)

    def answer(self, raw: Any, index: int, own: bool) -> Answer:
        if raw is None:
            return Answer()
        path = ["answer"] if own else ["defaults", "answer"]
        section, idx = ("event", index) if own else (None, None)
        if isinstance(raw, str):
            raw = {raw: 1.0}
        if not isinstance(raw, dict) or not raw:
            raise self.fail(
                f"answer must be a table of level = probability ({', '.join(ANSWER_LEVELS)})",
                path,
                section,
                idx,
            )
        for level, weight in raw.items():
            if level not in ANSWER_LEVELS:
                raise self.fail(_unknown("answer level", level, ANSWER_LEVELS), path, section, idx)
            if not _number(weight) or weight < 0:
                raise self.fail(f"answer {level}: probability must be >= 0", path, section, idx)
        total = sum(float(w) for w in raw.values())
        if abs(total - 1.0) > 1e-6:
            raise self.fail(
                f"answer probabilities must add up to 1 (they add up to {total:g})",
                path,
                section,
                idx,
            )
        return Answer(tuple((level, float(w)) for level, w in raw.items() if w > 0))

    def check_references(self, events: list[EventSpec], own: int) -> None:
        """Labels are unique; `refs` and `after` name labels that exist (or literal ids,
        `id:<message id>`), and a reference names a message certain to be sent before."""
        by_label: dict[str, EventSpec] = {}  # event and re-send labels -> their event

        def where(event: EventSpec) -> str:
            return f"{event.source}:{event.line}" if event.source else f"line {event.line}"

        for event in events:
            for label in (event.label, event.resend.label if event.resend else ""):
                if not label:
                    continue
                if label in by_label:
                    raise self.fail(
                        f"id {label!r} is already used by the event on {where(by_label[label])}",
                        ["id"] if label == event.label else ["resend"],
                        "event",
                        min(event.index, own - 1),
                    )
                by_label[label] = event

        def lookup(ref: str, event: EventSpec, key: str) -> EventSpec:
            base, _, number = ref.partition("#")
            target = by_label.get(base)
            if target is None:
                raise self.fail(
                    _unknown(f"event id in {key}", ref, sorted(by_label)),
                    [key],
                    "event",
                    event.index,
                )
            if number and (target.label != base or int(number) > target.count):
                raise self.fail(
                    f"{key} {ref!r}: {base} sends {target.count} message(s), numbered 1.."
                    f"{target.count}"
                    if target.label == base
                    else f"{key} {ref!r}: a re-send has no numbered messages",
                    [key],
                    "event",
                    event.index,
                )
            return target

        def ancestry(event: EventSpec) -> list[EventSpec]:
            """The events whose state this one's `after` chain waits for (cycles refused)."""
            chain: list[EventSpec] = []
            current = event
            while current.trigger is not None and not current.trigger.on_link:
                target = lookup(current.trigger.label, current, "after")
                if target is event or target in chain:
                    raise self.fail(
                        f"after {current.trigger.label!r}: the triggers wait for each other in a "
                        "circle",
                        ["after"],
                        "event",
                        event.index,
                    )
                chain.append(target)
                current = target
            return chain

        for event in events[:own]:
            chain = ancestry(event)
            for ref in event.refs:
                if ref.startswith(LITERAL_REF):
                    if not _MESSAGE_ID.match(ref.removeprefix(LITERAL_REF)):
                        raise self.fail(
                            f"refs {ref!r}: a literal reference is id:<message id>, a lower-case "
                            "UUID such as id:01900000-0000-7000-8000-000000000000",
                            ["refs"],
                            "event",
                            event.index,
                        )
                    continue
                target = lookup(ref, event, "refs")
                resent = target.resend is not None and ref == target.resend.label
                sure = target in chain and (not resent or _after_label(event, chain, ref))
                if not sure and (resent or target.trigger is not None):
                    raise self.fail(
                        f"refs {ref!r}: that message is sent only on a trigger or a SAY_AGAIN; "
                        f'refer to it from an event triggered after it (after = "{ref} '
                        'journaled")',
                        ["refs"],
                        "event",
                        event.index,
                    )
                number = int(ref.partition("#")[2] or 1)
                target_at = target.times()[number - 1][0]
                # (a triggered event is armed after the timed sends of its `at`)
                late = target_at > event.at if event.trigger else target_at >= event.at
                if not sure and (late or target is event):
                    raise self.fail(
                        f"refs {ref!r}: that event (t={target_at:g}) is not before this one "
                        f"(t={event.at:g})",
                        ["refs"],
                        "event",
                        event.index,
                    )
            if event.action != common_pb2.ACTION_NEW and not event.refs[0].startswith(LITERAL_REF):
                first = lookup(event.refs[0], event, "refs")
                if first.sender != event.sender:
                    raise self.fail(
                        f"{_article(_name_of(ACTIONS, event.action))} must replace a message of the "
                        f"same sender ({ref_owner(first)} sent {event.refs[0]!r})",
                        ["refs"],
                        "event",
                        event.index,
                    )
                if event.action == common_pb2.ACTION_UPDATE and first.body != event.body:
                    raise self.fail(
                        f"an update must have the body type of the message it replaces "
                        f"({first.body})",
                        ["type"],
                        "event",
                        event.index,
                    )

    def check_bodies(self, scenario: Scenario) -> None:
        """Build every event's envelope (first and last repetition) and validate it."""
        now_ns = int(datetime(2030, 1, 1, tzinfo=UTC).timestamp() * 1e9)
        for event in scenario.events:
            refs = [r if r.startswith(LITERAL_REF) else new_message_id() for r in event.refs]
            for _at, n in (event.times()[0], event.times()[-1]):
                try:
                    env = event.envelope(n=n, now_ns=now_ns, refs=refs)
                except json_format.ParseError as exc:
                    path, message = _parse_error_path(str(exc))
                    raise self.fail(
                        f"fields.{'.'.join(path)}: {message}" if path else f"fields: {message}",
                        ["fields", *path],
                        "event",
                        event.index,
                    ) from None
                except _TimeError as exc:
                    raise self.fail(
                        f"fields.{'.'.join(exc.path)}: {exc.message}",
                        ["fields", *[re.sub(r"\[\d+\]$", "", p) for p in exc.path]],
                        "event",
                        event.index,
                    ) from None
                violations = _validate(env)
                if violations:
                    field_path, description = violations[0]
                    path = _violation_key_path(field_path, event.body)
                    raise self.fail(
                        f"{_pretty_violation(field_path, event.body)}: {description}"
                        + (f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""),
                        path,
                        "event",
                        event.index,
                    )

    # -- faults

    def fault(self, index: int, raw: Any, parties: tuple[str, str]) -> FaultSpec:
        def fail(problem: str, key: str = "") -> ScenarioError:
            return self.fail(problem, [key] if key else [], "fault", index)

        if not isinstance(raw, dict):
            raise fail("[[fault]] must be a table")
        unknown = sorted(set(raw) - _FAULT_KEYS)
        if unknown:
            raise fail(_unknown("fault key", unknown[0], _FAULT_KEYS), unknown[0])
        try:
            return make_fault(raw, parties, line=self.lines.span("fault", index)[0])
        except _FaultProblem as problem:
            raise fail(problem.message, problem.key) from None


def ref_owner(event: EventSpec) -> str:
    return event.sender


def _after_label(event: EventSpec, chain: Sequence[EventSpec], label: str) -> bool:
    """Whether `event` or an event of its `after` chain waits on the message labelled `label`."""
    return any(
        e.trigger is not None and e.trigger.label.partition("#")[0] == label
        for e in (event, *chain)
    )


@dataclass(frozen=True)
class _Included:
    scenario: Scenario
    offset_s: float
    prefix: str


def _shifted_event(event: EventSpec, included: _Included, index: int) -> EventSpec:
    """An included event, `offset_s` later, its labels (and the labels it names) prefixed."""
    prefix = included.prefix

    def named(label: str) -> str:
        return label if not label or label.startswith(LITERAL_REF) else prefix + label

    trigger = event.trigger
    if trigger is not None and trigger.label:
        trigger = replace(
            trigger, label=named(trigger.label), text=f"{named(trigger.label)} {trigger.state}"
        )
    resend = event.resend
    if resend is not None and resend.label:
        resend = replace(resend, label=named(resend.label))
    return replace(
        event,
        index=index,
        at=event.at + included.offset_s,
        label=named(event.label),
        refs=tuple(named(r) for r in event.refs),
        trigger=trigger,
        resend=resend,
        source=event.source or included.scenario.source,
    )


def _shifted_fault(fault: FaultSpec, offset_s: float) -> FaultSpec:
    return replace(fault, at=fault.at + offset_s)


def grpc_codes() -> list[str]:
    """The gRPC status code names an expected refusal may name."""
    import grpc  # the client's dependency; the scenario grammar only needs the names

    return [code.name for code in grpc.StatusCode if code.name != "OK"]


class _FaultProblem(Exception):
    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.key = key


def make_fault(raw: Mapping[str, Any], parties: tuple[str, str], *, line: int = 0) -> FaultSpec:
    """Check and build a fault from its keys (shared by `[[fault]]` and `--fault`)."""
    at = raw.get("at")
    if not _number(at) or at < 0:
        raise _FaultProblem("`at` (scenario seconds) must be a number >= 0", "at")
    kind = raw.get("kind")
    if kind not in FAULT_KINDS:
        raise _FaultProblem(_unknown("fault kind", str(kind), FAULT_KINDS), "kind")
    target = raw.get("target", "both" if kind not in PARTY_FAULTS else None)
    if kind in PARTY_FAULTS:
        if target not in parties:
            raise _FaultProblem(f"a {kind} fault targets a party: {' or '.join(parties)}", "target")
    else:
        valid = [*directions(parties), "both"]
        if target not in valid:
            raise _FaultProblem(
                f"a {kind} fault targets a link direction: {', '.join(valid)}", "target"
            )
    params: dict[str, float] = {}
    for name in FAULT_PARAMS[str(kind)]:
        value = raw.get(name)
        if not _number(value) or value < 0:
            raise _FaultProblem(f"a {kind} fault needs {name} (a number >= 0)", name)
        params[name] = float(value)
    stray = [k for k in ("delay_s", "jitter_s", "bandwidth_bps") if k in raw and k not in params]
    if stray:
        raise _FaultProblem(f"{stray[0]} does not apply to a {kind} fault", stray[0])
    duration = raw.get("duration_s")
    wall = raw.get("wall_duration_s")
    for key, value in (("duration_s", duration), ("wall_duration_s", wall)):
        if value is not None:
            if kind not in UNDOABLE:
                raise _FaultProblem(f"a {kind} fault cannot have a duration", key)
            if not _number(value) or value <= 0:
                raise _FaultProblem(f"{key} must be a positive number", key)
    if duration is not None and wall is not None:
        raise _FaultProblem(
            "a fault lasts duration_s (scenario seconds) or wall_duration_s (wall seconds), "
            "not both",
            "wall_duration_s",
        )
    return FaultSpec(
        at=float(at),
        kind=str(kind),
        target=str(target),
        params=params,
        duration_s=float(duration) if duration is not None else None,
        line=line,
        wall_duration_s=float(wall) if wall is not None else None,
    )


def directions(parties: tuple[str, str]) -> list[str]:
    a, b = parties
    return [f"{a}->{b}", f"{b}->{a}"]


def parse_fault_option(text: str, parties: tuple[str, str] = ("JP", "TW")) -> FaultSpec:
    """`--fault "at=5,kind=drop,target=JP->TW,duration_s=3"` → FaultSpec (ValueError if bad)."""
    raw: dict[str, Any] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"--fault {text!r}: {part!r} is not key=value")
        key, value = key.strip(), value.strip()
        if key not in _FAULT_KEYS - {"note"}:
            raise ValueError(f"--fault {text!r}: " + _unknown("key", key, _FAULT_KEYS - {"note"}))
        try:
            raw[key] = float(value) if key not in ("kind", "target") else value
        except ValueError:
            raise ValueError(f"--fault {text!r}: {key} must be a number") from None
    try:
        return make_fault(raw, parties)
    except _FaultProblem as problem:
        raise ValueError(f"--fault {text!r}: {problem.message}") from None


# ---------------------------------------------------------------------------------------------
# Field expansion: enum shorthand, LocalizedText shorthand, relative times


class _FieldProblem(Exception):
    def __init__(self, path: list[str], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class _TimeError(ValueError):
    def __init__(self, path: list[str], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def _body_descriptor(body: str) -> Descriptor:
    descriptor = envelope_pb2.Envelope.DESCRIPTOR.fields_by_name[body].message_type
    assert descriptor is not None
    return descriptor


_WELL_KNOWN = {"google.protobuf.Timestamp", "google.protobuf.Duration"}


def _normalize(
    descriptor: Descriptor, value: Any, *, language: str, path: tuple[str, ...] = ()
) -> Any:
    """Expand the shorthands in a body's `fields`, checking field names on the way."""
    if descriptor.full_name == "hotline.v1.LocalizedText":
        return _localized(value, language, list(path))
    if not isinstance(value, dict):
        raise _FieldProblem(list(path), f"must be a table ({descriptor.name})")
    out: dict[str, Any] = {}
    for key, item in value.items():
        fd = descriptor.fields_by_name.get(key)
        if fd is None:
            fd = next((f for f in descriptor.fields if f.json_name == key), None)
        if fd is None:
            raise _FieldProblem(
                [*path, key],
                _unknown(f"field of {descriptor.name}", key, [f.name for f in descriptor.fields]),
            )
        here = (*path, fd.name)
        if _is_repeated(fd):
            if not isinstance(item, list):
                raise _FieldProblem(list(here), "must be a list")
            out[fd.name] = [
                _normalize_one(fd, x, language=language, path=(*here[:-1], f"{fd.name}[{i}]"))
                for i, x in enumerate(item)
            ]
        else:
            out[fd.name] = _normalize_one(fd, item, language=language, path=here)
    return out


def _is_repeated(fd: FieldDescriptor) -> bool:
    return bool(fd.is_repeated)


def _normalize_one(fd: FieldDescriptor, value: Any, *, language: str, path: tuple[str, ...]) -> Any:
    enum = fd.enum_type
    message = fd.message_type
    if enum is not None and isinstance(value, str):
        if value in enum.values_by_name:
            return value
        prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper() + "_"
        full = prefix + value.upper().replace("-", "_").replace(" ", "_")
        if full in enum.values_by_name:
            return full
        names = [v.name.removeprefix(prefix).lower() for v in enum.values if v.number != 0]
        raise _FieldProblem(list(path), _unknown(f"{enum.name} value", value, names))
    if message is not None and message.full_name not in _WELL_KNOWN:
        return _normalize(message, value, language=language, path=path)
    return value


def _localized(value: Any, language: str, path: list[str]) -> Any:
    if isinstance(value, str):
        value = {language: value}
    if not isinstance(value, dict):
        raise _FieldProblem(path, 'a text must be a string or a table of language = "text"')
    if "variants" in value:
        return value
    variants = []
    original = language if language in value else next(iter(value), language)
    for lang, text in value.items():
        if not isinstance(text, str):
            raise _FieldProblem([*path, lang], "text must be a string")
        kind = (
            "TRANSLATION_KIND_ORIGINAL" if lang == original else "TRANSLATION_KIND_HUMAN_CONFIRMED"
        )
        variants.append({"language": lang, "text": text, "kind": kind})
    return {"variants": variants}


def _substitute(value: Any, *, now_ns: int, n: int, path: tuple[str, ...] = ()) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, now_ns=now_ns, n=n, path=(*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [
            _substitute(v, now_ns=now_ns, n=n, path=(*path[:-1], f"{path[-1]}[{i}]"))
            for i, v in enumerate(value)
        ]
    if isinstance(value, str) and value.startswith("@"):
        if value == "@n":
            return n
        offset_n = _REL_N.match(value)
        if offset_n is not None:
            step = int(offset_n["k"])
            return n + step if offset_n["sign"] == "+" else n - step
        match = _REL_TIME.match(value)
        if match is None:
            raise _TimeError(
                list(path),
                f'{value!r}: write "@t", "@t+90s", "@t-1h30m" (a time) or "@n", "@n+100" '
                "(the repetition number, offset)",
            )
        offset = 0.0
        if match.group("span"):
            offset = sum(float(x) * _UNIT_S[u] for x, u in _SPAN_PART.findall(match.group("span")))
            if match.group("sign") == "-":
                offset = -offset
        when = datetime.fromtimestamp(now_ns / 1e9 + offset, tz=UTC)
        return when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
    return value


def _parse_error_path(message: str) -> tuple[list[str], str]:
    """Field path and reason from a json_format.ParseError message."""
    match = re.search(
        r" at \"?[A-Za-z0-9]+\.([A-Za-z0-9_.\[\]]+?)\"?\.?\.?$", message.splitlines()[0]
    )
    reason = message.splitlines()[0]
    reason = re.sub(r"^(Failed to parse \w+ field: )+", "", reason)
    reason = re.sub(r" at \"?[A-Za-z0-9_.\[\]]+\"?\.?\.?$", "", reason)
    if match is None:
        named = re.search(r'has no field named "(\w+)"', message)
        return ([named.group(1)] if named else []), reason
    parts = [p for p in re.split(r"\.", match.group(1)) if p]
    named = re.search(r'has no field named "(\w+)"', message)
    if named:
        parts.append(named.group(1))
    return parts, reason


def _validate(env: envelope_pb2.Envelope) -> list[tuple[str, str]]:
    """The specification's validator over an envelope as an operator submits it."""
    return [(v.field, v.description) for v in validate_envelope(env, filled=False)]


def _violation_key_path(field_path: str, body: str) -> list[str]:
    parts = [re.sub(r"\[\d+\]$", "", p) for p in field_path.split(".") if p]
    if parts[:2] == ["body", body]:
        return ["fields", *parts[2:]]
    if parts and parts[0] == body:
        return ["fields", *parts[1:]]
    if parts and parts[0] in ("handling",):
        return [parts[-1] if parts[-1] != "handling" else "classification"]
    if parts and parts[0] in ("references",):
        return ["refs"]
    return [parts[0]] if parts else []


def _pretty_violation(field_path: str, body: str) -> str:
    for prefix in (f"body.{body}.", f"{body}."):
        if field_path.startswith(prefix):
            return "fields." + field_path[len(prefix) :]
    return field_path or "message"


# ---------------------------------------------------------------------------------------------
# Small helpers


def _number(value: Any) -> TypeGuard[int | float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _unknown(what: str, value: str, known: Any) -> str:
    names = [str(k) for k in known]
    close = difflib.get_close_matches(value, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {value!r}{hint}"


def _article(word: str) -> str:
    """ "an update", "a cancel": the indefinite article the word takes."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _name_of(table: Mapping[str, int], value: int) -> str:
    return next((k for k, v in table.items() if v == value), str(value))


__all__ = [
    "FORMAT",
    "FORMATS",
    "FORMAT_V1",
    "Answer",
    "EventSpec",
    "Expectation",
    "FaultSpec",
    "Repeat",
    "Resend",
    "Scenario",
    "ScenarioError",
    "ThinkTime",
    "Trigger",
    "builtin_names",
    "load_scenario",
    "parse_fault_option",
    "parse_scenario",
]
