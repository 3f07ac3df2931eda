"""`hotline demo`: two national gateways and one short encounter, end to end, in one command.

From nothing (a fresh folder), the demo creates both parties' PKI, starts the JP and TW
gateways as real processes on loopback (mutual TLS, signed messages, SQLite journals), and
plays a built-in encounter through the operator API, as two watch floors would:

1. An unplanned naval encounter near Yonaguni: JP reports it (IMMEDIATE); TW answers ROGER and
   gives notice of a manoeuvre (IMMEDIATE); JP answers WILCO.
2. An air intercept in the overlapping air defence identification zones: TW reports it
   (FLASH). JP's watch is slow: the deadline passes, TW's gateway raises an ESCALATION and JP's
   a REALERT; then JP answers ROGER.

Both watch floors are shown live: side by side on a terminal (JP left, TW right, under a time
column; the two floors' events of the same moment share a row), or as lines prefixed `[JP]` /
`[TW]` when the output is not a terminal. `--pace SECONDS` pauses after each step, for
presenting. Acknowledgement deadlines are
shortened for the demo so that the escalation happens within seconds. At the end: a summary per
message, the journal paths, and an offline verification of both journals (hash chains, every
signature, and each side's checkpoints as witnessed by the other). `--keep` leaves the gateways
running, with an operator file per party, and prints how to talk to them by hand.

`--web` also serves the browser console (`client.console`) on loopback and prints its URL: both
watch floors, the map of the encounter, link status and a timeline. The encounter starts when
the page is open (or after `--web-wait` seconds), at a pace a room can follow; the re-alerted
FLASH report may be acknowledged from the page (the demo answers it itself if nobody does), and
the console stays up after the encounter until Ctrl-C.

The gateways are always stopped on the way out (normal end, failure, Ctrl-C or SIGTERM). The
exit code is 0 only if every message was delivered and acknowledged, the escalation appeared,
and both journals verified.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from google.protobuf.message import Message

from certs.errors import CertsError
from certs.pki import load_certificate
from client import bodies
from client.cli_common import (
    BOLD,
    CYAN,
    DIM,
    RED,
    Line,
    colour_wanted,
    event_line,
    event_parts,
    level_name,
    pad_to,
    precedence_name,
)
from client.config import write_operator_config
from client.console import Console
from client.errors import ClientError
from client.operator import ACKNOWLEDGED, DELIVERED, OperatorClient
from hotline.errors import HotlineError
from hotline.journal_verify import check_witnessed, verify_journal
from hotline.v1 import bodies_pb2, common_pb2, operator_pb2
from sim.pair import GatewayPair

DEMO_DEADLINES_S: dict[str, float] = {
    "FLASH": 4.0,
    "IMMEDIATE": 6.0,
    "PRIORITY": 8.0,
    "ROUTINE": 10.0,
}
SCENARIO_TIMEOUT_S = 45.0
WEB_LISTEN = "127.0.0.1:8765"
WEB_THINK_S = 3.0  # the scripted watch officers' think time when a room is watching the page
WEB_ANSWER_S = 20.0  # how long the page has to answer the re-alerted FLASH before the script does
PACE_THINK_MAX_S = 2.5  # the longest think time `--pace` gives (the IMMEDIATE deadline is 6 s)
PACE_MAX_S = 30.0
COLUMNS_MIN_WIDTH = 100  # two columns need ~48 cells each; narrower terminals get lines
WATCH_KINDS = [
    k for k in operator_pb2.EventKind.values() if k not in (0, operator_pb2.EVENT_KIND_CHECKPOINT)
]
PARTIES = ("JP", "TW")

DESCRIPTION = """\
Run two paired gateways (JP and TW) on this machine, from fresh certificates, and play a short
encounter between their watch floors: an unplanned naval encounter near Yonaguni, then an air
intercept in the overlapping ADIZs, where one side is slow to answer and the deadline escalates.
Everything is real: processes, mutual TLS, signatures, journals. Acknowledgement deadlines are
shortened for the demo (FLASH 4 s, IMMEDIATE 6 s, PRIORITY 8 s, ROUTINE 10 s).

With --web, the browser console shows the same encounter: both watch floors, a map of the
encounter, link status and a timeline; acknowledge the re-alerted FLASH report from the page.

Exit code 0 if every message was delivered and acknowledged and both journals verify."""


# ----------------------------------------------------------------------------- display


class Floors:
    """Both watch floors on one screen: on a terminal, a table with a time column and one
    column per floor, events that happen together (within `ALIGN_S`) side by side on the same
    row, each on one line where it fits (two at most); prefixed lines otherwise."""

    ALIGN_S = 0.3  # how long an event waits for the other floor's events of the same moment
    TIME_WIDTH = 10  # `12:03:04.5`

    def __init__(self, out: TextIO, *, columns: bool, colour: bool, width: int) -> None:
        self.out = out
        self.columns = columns
        self.colour = colour
        self.width = max(width, 60)
        self.col = (self.width - self.TIME_WIDTH - 4) // 2
        self.start = time.monotonic()
        self.listeners: list[Callable[[str], None]] = []  # also told every narration line
        self.pending: dict[str, list[operator_pb2.Event]] = {p: [] for p in PARTIES}
        self._flush_later: asyncio.TimerHandle | None = None

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def _row(self, when: str, left: str, right: str) -> None:
        self._print(f"{pad_to(when, self.TIME_WIDTH)} {left} │ {right}".rstrip())

    def header(self) -> None:
        if not self.columns:
            return
        left = Line([]).add("JP watch floor (Tokyo)", BOLD).render(self.colour, self.col, pad=True)
        right = Line([]).add("TW watch floor (Taipei)", BOLD).render(self.colour, self.col)
        self._row("UTC", left, right)
        self._print(f"{'─' * self.TIME_WIDTH}─{'─' * self.col}─┼─{'─' * self.col}")

    def event(self, party: str, event: operator_pb2.Event) -> None:
        if not self.columns:
            line = event_line(event, party=party, compact=True)
            self._print(f"[{party}] {line.render(self.colour)}")
            return
        self.pending.setdefault(party, []).append(event)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to wait on: show it now
            self.flush()
            return
        if self._flush_later is None:
            self._flush_later = loop.call_later(self.ALIGN_S, self.flush)

    def _cell(self, party: str, event: operator_pb2.Event) -> list[str]:
        head, detail = event_parts(event, party=party, compact=True, timed=False)
        line = Line([*head.segments, (" ", ""), *detail.segments])
        return [
            part.render(self.colour, self.col, pad=True)
            for part in line.wrap(self.col, indent="  ", max_lines=2)
        ]

    def flush(self) -> None:
        """Show the events waiting, the two floors' n-th events side by side."""
        if self._flush_later is not None:
            self._flush_later.cancel()
            self._flush_later = None
        jp, tw = (self.pending.get(p, []) for p in PARTIES)
        for left, right in itertools.zip_longest(jp, tw):
            first = min(
                (e.event_time.ToNanoseconds() for e in (left, right) if e is not None),
                default=0,
            )
            when = datetime.fromtimestamp(first / 1e9, UTC)
            stamp = f"{when:%H:%M:%S}.{when.microsecond // 100_000}"
            cells = [
                self._cell(p, e) if e is not None else []
                for p, e in zip(PARTIES, (left, right), strict=True)
            ]
            for i in range(max(len(c) for c in cells)):
                self._row(
                    stamp if i == 0 else "",
                    cells[0][i] if i < len(cells[0]) else " " * self.col,
                    cells[1][i] if i < len(cells[1]) else "",
                )
        for events in self.pending.values():
            events.clear()

    def narrate(self, text: str, style: str = f"{BOLD};{CYAN}") -> None:
        self.flush()
        elapsed = time.monotonic() - self.start
        for listener in self.listeners:
            listener(text)
        line = Line([]).add(f"▶ t+{elapsed:4.1f}s  {text}", style)
        if self.columns:
            self._print(line.render(self.colour, self.width))
        else:
            self._print(f"[demo] {line.render(self.colour)}")

    def say(self, text: str = "", style: str = "") -> None:
        self.flush()
        self._print(Line([]).add(text, style).render(self.colour))


# ----------------------------------------------------------------------------- tracking


@dataclass
class Exchange:
    """One message of the script and what became of it."""

    label: str
    sender: str
    receiver: str
    precedence: int
    level: int
    message_id: str = ""
    body_type: str = ""
    delivered_ms: float | None = None
    acknowledged_ms: float | None = None
    answered: int = 0
    escalated: bool = False
    realerted: bool = False
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.delivered_ms is not None and self.acknowledged_ms is not None


@dataclass
class Seen:
    """Events seen on each floor, so the script can wait for one (and the summary count them)."""

    flags: dict[tuple[str, int, str], asyncio.Event] = field(default_factory=dict)
    link_up: dict[str, asyncio.Event] = field(default_factory=dict)

    def flag(self, party: str, kind: int, message_id: str) -> asyncio.Event:
        return self.flags.setdefault((party, kind, message_id), asyncio.Event())

    def up(self, party: str) -> asyncio.Event:
        return self.link_up.setdefault(party, asyncio.Event())

    def note(self, party: str, event: operator_pb2.Event) -> None:
        if event.message_id:
            self.flag(party, event.kind, event.message_id).set()
        if (
            event.kind == operator_pb2.EVENT_KIND_LINK_UP
            and event.link == operator_pb2.LINK_DIRECTION_OUTBOUND
        ):
            self.up(party).set()

    def saw(self, party: str, kind: int, message_id: str) -> bool:
        return self.flag(party, kind, message_id).is_set()


async def _watch_floor(party: str, client: OperatorClient, floors: Floors, seen: Seen) -> None:
    async for event in client.watch(0, WATCH_KINDS):
        floors.event(party, event)
        seen.note(party, event)


# ----------------------------------------------------------------------------- the encounter

YONAGUNI = (24.30, 122.95)  # about 12 nm south of Yonaguni
OVERLAP = (24.40, 122.82)  # where the JADIZ and TWADIZ overlap, west of Yonaguni


def _encounter_report() -> Message:
    now = datetime.now(UTC)
    return bodies.maritime_encounter(
        reporting_platform=bodies.platform(
            common_pb2.PLATFORM_KIND_SURFACE_VESSEL,
            name="JS AOZORA",
            hull_number="DD-199",
            flag_party="JP",
            platform_class="destroyer",
        ),
        lat=YONAGUNI[0],
        lon=YONAGUNI[1],
        course=270.0,
        speed=14.0,
        contacts=[
            bodies.contact(
                bodies.platform(
                    common_pb2.PLATFORM_KIND_SURFACE_VESSEL,
                    name="ROCS HAI YANG",
                    hull_number="1199",
                    flag_party="TW",
                    platform_class="frigate",
                ),
                lat=YONAGUNI[0] - 0.03,
                lon=YONAGUNI[1] - 0.04,
                course=20.0,
                speed=16.0,
                range_m=5200.0,
            )
        ],
        encounter_type=bodies_pb2.ENCOUNTER_TYPE_CROSSING,
        observation_time=now,
        cpa_m=900.0,
        tcpa_s=540.0,
        bridge_to_bridge_contact=False,
        intentions="Maintaining course and speed; no VHF contact yet. Request your intentions.",
    )


def _manoeuvre_notice() -> Message:
    return bodies.manoeuvre_notice(
        platform=bodies.platform(
            common_pb2.PLATFORM_KIND_SURFACE_VESSEL,
            name="ROCS HAI YANG",
            hull_number="1199",
            flag_party="TW",
        ),
        lat=YONAGUNI[0] - 0.03,
        lon=YONAGUNI[1] - 0.04,
        course=20.0,
        speed=16.0,
        signals=[bodies_pb2.MANOEUVRING_SIGNAL_I_AM_ALTERING_COURSE_TO_STARBOARD],
        new_course=80.0,
        new_speed=12.0,
        effective_time=datetime.now(UTC) + timedelta(minutes=2),
        keep_clear_m=3700.0,
        intention="Altering to starboard to pass astern of JS AOZORA; CPA will open to 2 nm.",
    )


def _air_incident() -> Message:
    return bodies.air_incident(
        kind=bodies_pb2.AIR_INCIDENT_KIND_INTERCEPT,
        aircraft=bodies.platform(common_pb2.PLATFORM_KIND_UNKNOWN, callsign="UNKNOWN 1"),
        lat=OVERLAP[0],
        lon=OVERLAP[1],
        altitude_ft=26000,
        course=45.0,
        speed=420.0,
        adiz_name="TWADIZ/JADIZ overlap",
        intercepting_platform=bodies.platform(
            common_pb2.PLATFORM_KIND_AIRCRAFT, callsign="TIGER 21", platform_class="F-16V"
        ),
        track_number="TW3302",
        remarks="Track heading north-east towards Yonaguni; no response on 121.5 MHz.",
    )


@dataclass
class Stage:
    floors: Floors
    seen: Seen
    clients: dict[str, OperatorClient]
    exchanges: list[Exchange] = field(default_factory=list)
    think_s: float = 1.0  # the scripted watch officers' think time
    page_answer_s: float = 0.0  # how long the console's page may answer a re-alert (0: no page)
    pace_s: float = 0.0  # a pause after each narrated step (`--pace`), for presenting

    async def step(self, text: str) -> None:
        """Narrate the next step of the script, then pause for the audience (`--pace`)."""
        self.floors.narrate(text)
        if self.pace_s > 0:
            await asyncio.sleep(self.pace_s)
            self.floors.flush()


async def _exchange(
    stage: Stage,
    label: str,
    sender: str,
    receiver: str,
    body: Message,
    *,
    precedence: int,
    level: int,
    remarks: str,
    slow: bool = False,
) -> Exchange:
    x = Exchange(label, sender, receiver, precedence, level)
    x.body_type = bodies.body_field(body).replace("_", "-")
    stage.exchanges.append(x)
    out, into = stage.clients[sender], stage.clients[receiver]
    try:
        sent = await out.send_body(body, precedence=precedence)
        x.message_id = sent.message_id
        await out.wait_for(sent.message_id, DELIVERED, timeout=10)
        if slow:
            deadline = DEMO_DEADLINES_S[precedence_name(precedence)]
            stage.floors.narrate(
                f"{receiver}'s watch is busy and does not answer: the {deadline:g} s deadline runs"
            )
            escalation = stage.seen.flag(sender, operator_pb2.EVENT_KIND_ESCALATION, x.message_id)
            realert = stage.seen.flag(receiver, operator_pb2.EVENT_KIND_REALERT, x.message_id)
            async with asyncio.timeout(deadline + 8):
                await escalation.wait()
                await realert.wait()
            answered = False
            if stage.page_answer_s > 0:
                stage.floors.narrate(
                    f"{receiver}'s watch is re-alerted: acknowledge the FLASH report from the "
                    f"console page (the script answers in {stage.page_answer_s:g} s otherwise)"
                )
                from_page = stage.seen.flag(
                    receiver, operator_pb2.EVENT_KIND_MESSAGE_ACKNOWLEDGED, x.message_id
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(stage.page_answer_s):
                        await from_page.wait()
                        answered = True
            if answered:
                stage.floors.narrate(f"{receiver}'s watch officer answered from the console")
            else:
                stage.floors.narrate(f"{receiver}'s watch officer answers the re-alert")
                await into.acknowledge(x.message_id, level, remarks=remarks)
        else:
            await asyncio.sleep(stage.think_s)
            await into.acknowledge(x.message_id, level, remarks=remarks)
        record = await out.wait_for(x.message_id, ACKNOWLEDGED, timeout=10)
        journaled = record.journal_time.ToNanoseconds()
        if record.HasField("deliver_time"):
            x.delivered_ms = (record.deliver_time.ToNanoseconds() - journaled) / 1e6
        if record.HasField("acknowledge_time"):
            x.acknowledged_ms = (record.acknowledge_time.ToNanoseconds() - journaled) / 1e6
        x.answered = int(record.acknowledgement.level)
    except (ClientError, TimeoutError) as exc:
        x.error = str(exc) or type(exc).__name__
        stage.floors.narrate(f"{label}: FAILED: {x.error}", f"{BOLD};{RED}")
    return x


async def play(stage: Stage) -> None:
    """The built-in encounter (all traffic EXERCISE)."""
    immediate, flash = common_pb2.PRECEDENCE_IMMEDIATE, common_pb2.PRECEDENCE_FLASH
    roger = bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER
    wilco = bodies_pb2.ACKNOWLEDGEMENT_LEVEL_WILCO
    n = stage.step
    await n("Phase 1: unplanned naval encounter 12 nm south of Yonaguni")
    await n(
        "JS AOZORA (JP) and ROCS HAI YANG (TW) are crossing, CPA 900 m; JP reports it IMMEDIATE"
    )
    await _exchange(
        stage,
        "encounter report",
        "JP",
        "TW",
        _encounter_report(),
        precedence=immediate,
        level=roger,
        remarks="Relayed to ROCS HAI YANG; stand by for her intentions.",
    )
    await n("TW gives notice: ROCS HAI YANG alters to starboard to pass astern (IMMEDIATE)")
    await _exchange(
        stage,
        "manoeuvre notice",
        "TW",
        "JP",
        _manoeuvre_notice(),
        precedence=immediate,
        level=wilco,
        remarks="JS AOZORA will hold course and speed and keep 2 nm clear.",
    )
    await n("Phase 2: air intercept where the ADIZs overlap, west of Yonaguni")
    await n(
        "TW fighters intercept an unidentified aircraft heading for Yonaguni; TW reports it FLASH"
    )
    await _exchange(
        stage,
        "air incident report",
        "TW",
        "JP",
        _air_incident(),
        precedence=flash,
        level=roger,
        remarks="Track correlated with JADIZ track JA4107; JASDF aircraft scrambled.",
        slow=True,
    )
    for x in stage.exchanges:
        x.escalated = stage.seen.saw(x.sender, operator_pb2.EVENT_KIND_ESCALATION, x.message_id)
        x.realerted = stage.seen.saw(x.receiver, operator_pb2.EVENT_KIND_REALERT, x.message_id)
    await n("Encounter over: every report answered")


# ----------------------------------------------------------------------------- verification


@dataclass
class Verdict:
    party: str
    path: Path
    ok: bool
    entries: int = 0
    signatures: int = 0
    checkpoints: int = 0
    problem: str = ""


def verify_journals(pair: GatewayPair) -> list[Verdict]:
    """Offline: each journal's chain and signatures, and its checkpoints as the peer holds them."""
    cas = [load_certificate(pair.side(p).paths.ca_cert) for p in pair.parties]
    verdicts = []
    for party in pair.parties:
        side = pair.side(party)
        peer = pair.side(side.peer_party)
        try:
            report = check_witnessed(verify_journal(side.journal, cas), peer.journal)
        except Exception as exc:  # a verifier crash is a failed verification, said plainly
            verdicts.append(Verdict(party, side.journal, False, problem=f"verifier failed: {exc}"))
            continue
        verdicts.append(
            Verdict(
                party,
                side.journal,
                report.ok,
                report.entries,
                report.signatures_checked,
                report.checkpoints_matched,
                report.problem,
            )
        )
    return verdicts


# ----------------------------------------------------------------------------- summary


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def print_summary(floors: Floors, exchanges: list[Exchange], verdicts: list[Verdict]) -> None:
    say = floors.say
    say()
    say(
        "Summary (times from the sender's journal; acknowledgement includes the watch's think-time)",
        BOLD,
    )
    header = (
        f"  {'#':>2}  {'message':<20} {'precedence':<10} {'from':<4} {'to DELIVERED':>13} "
        f"{'to ACKNOWLEDGED':>16}  {'answer':<7} escalated?"
    )
    say(header)
    for i, x in enumerate(exchanges, 1):
        answer = level_name(x.answered) if x.answered else "-"
        if x.escalated:
            escalated = f"yes: ESCALATION at {x.sender}" + (
                f", REALERT at {x.receiver}" if x.realerted else ""
            )
        else:
            escalated = "no"
        row = (
            f"  {i:>2}  {x.body_type:<20} {precedence_name(x.precedence):<10} {x.sender:<4} "
            f"{_ms(x.delivered_ms):>13} {_ms(x.acknowledged_ms):>16}  {answer:<7} {escalated}"
        )
        say(row, "" if x.ok else f"{BOLD};{RED}")
        if x.error:
            say(f"      failed: {x.error}", f"{BOLD};{RED}")
    say()
    say("Journals", BOLD)
    for v in verdicts:
        say(f"  {v.party}  {v.path}")
    say()
    say(
        "Journal verification (hash chain, every signature, checkpoints witnessed by the peer)",
        BOLD,
    )
    for v in verdicts:
        if v.ok:
            say(
                f"  {v.party}  OK: {v.entries} entries, {v.signatures} signatures verified, "
                f"{v.checkpoints} checkpoints match the peer's witness copies"
            )
        else:
            say(f"  {v.party}  FAILED: {v.problem}", f"{BOLD};{RED}")


def summary_data(
    workdir: Path, exchanges: list[Exchange], verdicts: list[Verdict], ok: bool
) -> dict[str, Any]:
    return {
        "ok": ok,
        "workdir": str(workdir),
        "deadlines_s": DEMO_DEADLINES_S,
        "messages": [
            {
                "label": x.label,
                "type": x.body_type,
                "message_id": x.message_id,
                "precedence": precedence_name(x.precedence),
                "sender": x.sender,
                "recipient": x.receiver,
                "delivered_ms": x.delivered_ms,
                "acknowledged_ms": x.acknowledged_ms,
                "answer": level_name(x.answered) if x.answered else None,
                "escalated": x.escalated,
                "realerted": x.realerted,
                "error": x.error or None,
            }
            for x in exchanges
        ],
        "journals": {
            v.party: {
                "path": str(v.path),
                "verified": v.ok,
                "entries": v.entries,
                "signatures": v.signatures,
                "checkpoints_matched": v.checkpoints,
                "problem": v.problem or None,
            }
            for v in verdicts
        },
    }


def hotline_command() -> str:
    """How to run `hotline` from another terminal, as this process was run: the script beside
    this Python if there is one (a venv's `bin/hotline`), else `python -m hotline.cli`; both
    work without activating the venv."""
    script = Path(sys.executable).parent / "hotline"
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m hotline.cli"


def print_keep_instructions(floors: Floors, pair: GatewayPair, configs: dict[str, Path]) -> None:
    say = floors.say
    jp, tw = pair.parties
    hotline = hotline_command()
    say()
    say("The gateways keep running. Talk to them from another terminal:", BOLD)
    say(f"  # a {jp} watch officer (operator file: {configs[jp]})")
    say(f"  export HOTLINE_CONFIG={shlex.quote(str(configs[jp]))}")
    say(f"  {hotline} status")
    say(f"  {hotline} watch --from now")
    say(
        f'  {hotline} send free-text --subject "Radio check" --text "How do you read?" '
        "--wait delivered"
    )
    tw_config = shlex.quote(str(configs[tw]))
    say(f"  # a {tw} watch officer, with --config on each command")
    say(f"  {hotline} watch --config {tw_config}")
    say(f"  {hotline} history --config {tw_config} --direction in")
    say(f"  {hotline} ack MESSAGE_ID --level roger --config {tw_config}")
    say("  # or with environment variables only")
    side = pair.side(jp)
    say(
        f"  HOTLINE_CONFIG= HOTLINE_ADDRESS={side.address} HOTLINE_PARTY={jp} "
        f"HOTLINE_PKI={shlex.quote(str(pair.pki))} HOTLINE_OPERATOR=watch-1 {hotline} status"
    )
    for party in pair.parties:
        say(f"  # {party} gateway log: {pair.side(party).log_path}")
    say("Press Ctrl-C to stop the gateways.", BOLD)


# ----------------------------------------------------------------------------- running


@dataclass
class _Leftovers:
    """The pair, reachable from outside the event loop, to kill it if the loop dies early."""

    pair: GatewayPair | None = None

    def kill(self) -> None:
        if self.pair is None:
            return
        for side in self.pair.sides.values():
            proc = side.proc
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except Exception:
                proc.kill()
                proc.wait()


async def _run(args: argparse.Namespace, leftovers: _Leftovers, out: TextIO) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await _demo(args, leftovers, out)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def _demo(args: argparse.Namespace, leftovers: _Leftovers, out: TextIO) -> int:
    """The demo in a working folder; a temporary one (no --dir, no --keep) is removed at the
    end whatever happens, since it holds both parties' CA private keys."""
    try:
        return await _demo_in(args, leftovers, out)
    finally:
        if not args.dir and not args.keep and getattr(args, "_workdir", None) is not None:
            await asyncio.to_thread(shutil.rmtree, args._workdir, True)


async def _demo_in(args: argparse.Namespace, leftovers: _Leftovers, out: TextIO) -> int:
    width = shutil.get_terminal_size((120, 40)).columns
    tty = out.isatty() and not args.plain and width >= COLUMNS_MIN_WIDTH
    colour = colour_wanted(out, args.colour)
    floors = Floors(out, columns=tty, colour=colour, width=width)
    workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="hotline-demo-"))
    workdir = workdir.resolve()
    args._workdir = workdir
    if args.dir and workdir.exists() and any(workdir.iterdir()):
        floors.say(f"hotline demo: error: {workdir} is not empty; give an empty or new --dir")
        return 2

    say = floors.say
    say(
        "Hotline demo: the Japan-Taiwan maritime and air hot line, end to end on this machine", BOLD
    )
    temporary = not args.dir and not args.keep  # it holds both CAs' private keys
    say(
        f"  working folder: {workdir}"
        + (" (removed at the end; --keep or --dir keeps it)" if temporary else "")
    )
    shortened = ", ".join(f"{k} {v:g} s" for k, v in DEMO_DEADLINES_S.items())
    say(
        f"  acknowledgement deadlines SHORTENED FOR THE DEMO: {shortened} "
        "(the protocol's defaults: 10 min, 30 min, 3 h, 6 h)",
        f"{BOLD}",
    )
    say("  all traffic is marked EXERCISE", DIM)
    say("  creating both parties' PKI and starting the JP and TW gateways ...", DIM)
    started = time.monotonic()
    try:
        pair = await GatewayPair.start(workdir, proxies=False, deadlines=DEMO_DEADLINES_S)
    except (OSError, RuntimeError, TimeoutError, HotlineError, CertsError) as exc:
        say(f"hotline demo: error: cannot start the gateways: {exc}", f"{BOLD};{RED}")
        return 1
    leftovers.pair = pair
    clients: dict[str, OperatorClient] = {}
    watchers: list[asyncio.Task[None]] = []
    exchanges: list[Exchange] = []
    configs: dict[str, Path] = {}
    console: Console | None = None
    stay = args.keep or args.web
    try:
        for party in pair.parties:
            side = pair.side(party)
            clients[party] = OperatorClient.from_pki(pair.pki, party, address=side.address)
            configs[party] = write_operator_config(
                workdir / f"{party.lower()}-operator.toml",
                address=side.address,
                party=party,
                pki_dir=pair.pki,
            )
            say(
                f"  {party} gateway: {side.address} (pid {side.proc.pid if side.proc else '?'})",
                DIM,
            )
        say(f"  gateways up in {time.monotonic() - started:.1f} s")
        if args.web:
            console = await _open_console(args, clients, floors)
            if console is None:
                return 2
            floors.listeners.append(console.note)
        say()
        floors.start = time.monotonic()
        floors.header()
        seen = Seen()
        for party in pair.parties:
            watchers.append(
                asyncio.create_task(
                    _watch_floor(party, clients[party], floors, seen), name=f"floor-{party}"
                )
            )
        stage = Stage(floors, seen, clients, exchanges)
        timeout = SCENARIO_TIMEOUT_S
        if console is not None:
            stage.think_s, stage.page_answer_s = WEB_THINK_S, WEB_ANSWER_S
            timeout += WEB_ANSWER_S + 4 * WEB_THINK_S
        if args.pace > 0:
            stage.pace_s = args.pace
            # slower watch officers too, but well within the IMMEDIATE deadline they must meet
            stage.think_s = max(stage.think_s, min(args.pace, PACE_THINK_MAX_S))
            timeout += 10 * args.pace
        try:
            async with asyncio.timeout(timeout):
                for party in pair.parties:
                    await seen.up(party).wait()
                await play(stage)
                await asyncio.sleep(0.3)  # let the last events reach the floors
        except TimeoutError:
            floors.narrate(f"the demo did not finish within {timeout:g} s", f"{BOLD};{RED}")
            for x in exchanges:
                x.error = x.error or "did not complete in time"
            if not exchanges:
                exchanges.append(Exchange("link", "JP", "TW", 0, 0, error="the link never came up"))
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        watchers = []
        if not stay:
            for client in clients.values():
                await client.close()
            await pair.stop()
        verdicts = await asyncio.to_thread(verify_journals, pair)
        all_escalated = any(x.escalated for x in exchanges)
        ok = (
            len(exchanges) == 3
            and all(x.ok for x in exchanges)
            and all(v.ok for v in verdicts)
            and all_escalated
        )
        print_summary(floors, exchanges, verdicts)
        if not all_escalated:
            say("  the expected ESCALATION did not appear", f"{BOLD};{RED}")
        say()
        if ok:
            say(
                "Verdict: PASS: every message delivered and acknowledged; both journals verify",
                f"{BOLD}",
            )
        else:
            say("Verdict: FAIL (see above)", f"{BOLD};{RED}")
        if args.summary_json:
            Path(args.summary_json).write_text(
                json.dumps(summary_data(workdir, exchanges, verdicts, ok), indent=2) + "\n",
                encoding="utf-8",
            )
        if stay:
            if args.keep:
                print_keep_instructions(floors, pair, configs)
            if console is not None:
                say(f"The console stays open at {console.url}", BOLD)
                if not args.keep:
                    say("Press Ctrl-C to stop the console and the gateways.", BOLD)
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                say("\nstopping the gateways ...")
        return 0 if ok else 1
    finally:
        if console is not None:
            await console.stop()
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        for client in clients.values():
            with contextlib.suppress(Exception):
                await client.close()
        await pair.stop()
        leftovers.pair = None


async def _open_console(
    args: argparse.Namespace, clients: dict[str, OperatorClient], floors: Floors
) -> Console | None:
    """Serve the browser console over both floors and wait (bounded) for a page to open it."""
    say = floors.say
    host, _, port = args.web_listen.rpartition(":")
    try:
        console = Console(
            clients, host=host.strip("[]"), port=int(port), title="Hotline demo: JP ⇄ TW"
        )
        url = await console.start()
    except (ValueError, HotlineError) as exc:
        say(f"hotline demo: error: cannot serve the console: {exc}", f"{BOLD};{RED}")
        return None
    say(f"  console: {url}", BOLD)
    if args.web_wait > 0:
        say(
            f"  open it in a browser: the encounter starts when the page is open (at most {args.web_wait:g} s)"
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.web_wait):
                await console.followed.wait()
        await asyncio.sleep(1.0)  # let the page draw the floors and the map first
    return console


def _pace(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= PACE_MAX_S:
        raise argparse.ArgumentTypeError(f"--pace must be between 0 and {PACE_MAX_S:g} s")
    return value


def register(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = DESCRIPTION
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="working folder (new or empty; default: a new temporary folder, kept afterwards)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the gateways running and print how to use them; Ctrl-C stops them",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help="prefixed lines ([JP] ..., [TW] ...) even on a terminal",
    )
    parser.add_argument(
        "--color",
        "--colour",
        dest="colour",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the output (default auto: on a terminal)",
    )
    parser.add_argument(
        "--pace",
        metavar="SECONDS",
        type=_pace,
        default=0.0,
        help="for presenting: pause this long after each step of the script, and let the "
        f"watch officers think up to {PACE_THINK_MAX_S:g} s (default 0: as fast as it goes; "
        f"at most {PACE_MAX_S:g})",
    )
    parser.add_argument(
        "--summary-json", metavar="FILE", help="also write the summary as JSON to FILE"
    )
    web = parser.add_argument_group("browser console")
    web.add_argument(
        "--web",
        action="store_true",
        help="also serve the browser console and print its URL; it stays up until Ctrl-C",
    )
    web.add_argument(
        "--web-listen",
        metavar="HOST:PORT",
        default=WEB_LISTEN,
        help=f"where the console listens (default {WEB_LISTEN}; loopback only; port 0: any)",
    )
    web.add_argument(
        "--web-wait",
        metavar="SECONDS",
        type=float,
        default=60.0,
        help="wait this long for the page to be opened before the encounter starts (default 60)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    leftovers = _Leftovers()
    out = sys.stdout
    try:
        return asyncio.run(_run(args, leftovers, out))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("hotline demo: interrupted; gateways stopped", file=sys.stderr)
        return 130
    finally:
        leftovers.kill()
