"""The golden examples of `proto/examples/`, made fit to send today between two given parties.

The examples are written between `JP` and `TW`, at fixed times, with fixed ids. To send one as
party X to party T, the suite:

* maps the example's sender to X and its recipient to T (party codes, lower-case codes and
  trust domains alike: `"TW"`, `"tw"`, `tw.hotline`), so a TW->JP example sent by a JP suite
  becomes JP->TW; an invalid example keeps its defect (a lower-case or too-long code stays so);
* gives it a fresh message id of the same form (a UUIDv7; upper case where the example's was,
  to keep that defect), and rewrites references to other valid examples to their fresh ids, so
  updates, cancels and acknowledgements still refer to the messages they were written for;
* moves every Timestamp by one offset, so `create_time` is now and every relation between the
  times (expiry after creation, impact after launch) is kept; Durations are untouched.

Malformed ids (`"LT-1042"`, none at all) are kept as written: they are the defect.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

import hotline
from hotline.ids import MESSAGE_ID_PATTERN, new_message_id
from hotline.v1 import common_pb2, envelope_pb2

PRECEDENCES = frozenset({1, 2, 3, 4})  # the precedences that are lanes (FLASH..ROUTINE)

DEFAULT_DIR = Path(hotline.__file__).resolve().parent.parent / "examples"
EXAMPLE_PARTIES = ("JP", "TW")
_UPPER_ID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
_SENDER = re.compile(r'^sender_party: "([^"]*)"', re.MULTILINE)
_RECIPIENT = re.compile(r'^recipient_party: "([^"]*)"', re.MULTILINE)
_LINK = re.compile(r"^# link: ([A-Z]{2,8}) -> ([A-Z]{2,8})$", re.MULTILINE)
_REJECTION = re.compile(r"^# expect-rejection: REJECTION_REASON_([A-Z_]+)$", re.MULTILINE)


@dataclass(frozen=True)
class Example:
    name: str  # "valid/link_test"
    text: str
    expects: tuple[tuple[str, str], ...]  # (field path, description substring), invalid only

    @property
    def valid(self) -> bool:
        return self.name.startswith("valid/")

    @property
    def rejection(self) -> str:
        """A refused example's expected rejection reason (`WRONG_PARTY`), else ""."""
        found = _REJECTION.search(self.text)
        return found.group(1) if found else ""

    @property
    def paths(self) -> list[str]:
        """The expected violations' field paths, sorted (normative; descriptions are not)."""
        return sorted(field for field, _ in self.expects)

    def original(self) -> envelope_pb2.Envelope:
        return text_format.Parse(self.text, envelope_pb2.Envelope())


def load_examples(directory: Path = DEFAULT_DIR) -> tuple[list[Example], list[Example]]:
    """(valid, invalid) examples, each sorted by name; raises FileNotFoundError if absent."""
    out: dict[str, list[Example]] = {}
    for kind in ("valid", "invalid"):
        folder = directory / kind
        files = sorted(folder.glob("*.txtpb"))
        if not files:
            raise FileNotFoundError(f"no golden examples in {folder}")
        out[kind] = [_load(kind, path) for path in files]
    return out["valid"], out["invalid"]


def load_refused(directory: Path = DEFAULT_DIR) -> list[Example]:
    """The examples that break no constraint but an acceptance check (`refused/`), if any."""
    return [_load("refused", path) for path in sorted((directory / "refused").glob("*.txtpb"))]


def _load(kind: str, path: Path) -> Example:
    text = path.read_text(encoding="utf-8")
    expects = []
    for line in text.splitlines():
        if line.startswith("# expect: "):
            field, _, substring = line.removeprefix("# expect: ").partition(": ")
            expects.append((field, substring))
    return Example(f"{kind}/{path.stem}", text, tuple(expects))


class Adapter:
    """Makes examples fit to send from `sender` to `recipient` now (see the module docstring).

    One adapter per run: the fresh ids of valid examples are remembered, so a later example
    that refers to one (an update, a cancel, an acknowledgement) refers to its fresh id.
    """

    def __init__(
        self, sender: str, recipient: str, *, now: float | None = None, lane: int | None = None
    ) -> None:
        """`lane`: the precedence of the link lane the examples will travel on; an example
        with a precedence travels at that one (a receiver refuses a delivery on another
        precedence's lane), one without keeps its fault."""
        self.sender = sender
        self.recipient = recipient
        self.lane = lane
        self.now = time.time() if now is None else now
        self._fresh: dict[str, str] = {}  # a valid example's written id -> its fresh id

    def adapt(self, example: Example) -> envelope_pb2.Envelope:
        envelope = text_format.Parse(self._swap(example.text), envelope_pb2.Envelope())
        written = envelope.message_id
        if MESSAGE_ID_PATTERN.match(written):
            fresh = self._fresh.get(written) if example.valid else None
            envelope.message_id = fresh or new_message_id()
            if example.valid:
                self._fresh[written] = envelope.message_id
        elif _UPPER_ID.match(written):
            envelope.message_id = new_message_id().upper()
        refs = [self._fresh.get(r, r) for r in envelope.references]
        del envelope.references[:]
        envelope.references.extend(refs)
        if envelope.WhichOneof("body") == "acknowledgement":
            ack = envelope.acknowledgement
            ack.acknowledged_message_id = self._fresh.get(
                ack.acknowledged_message_id, ack.acknowledged_message_id
            )
        if self.lane is not None and envelope.precedence in PRECEDENCES:
            envelope.precedence = common_pb2.Precedence.ValueType(self.lane)
        if envelope.HasField("create_time"):
            shift = int(self.now) - envelope.create_time.seconds
            _shift_timestamps(envelope, shift)
        return envelope

    def reserve(self, examples: list[Example]) -> None:
        """Give every valid example its fresh id up front, so references resolve whatever the
        order examples are adapted in."""
        for example in examples:
            if example.valid:
                written = example.original().message_id
                if MESSAGE_ID_PATTERN.match(written) and written not in self._fresh:
                    self._fresh[written] = new_message_id()

    def _swap(self, text: str) -> str:
        """Rename the example's parties: the sender of its link (`# link: A -> B`, else its
        envelope's sender) becomes ours, the receiver the target, any other a third party."""
        a, b = EXAMPLE_PARTIES
        link = _LINK.search(text)
        if link is not None:
            third = next(c for c in ("ZZ", "ZY", "ZX") if c not in (self.sender, self.recipient))
            mapping = {link.group(1): self.sender, link.group(2): self.recipient}
            for code in EXAMPLE_PARTIES:
                mapping.setdefault(code, third)
        elif _first(_SENDER, text).upper() == a or _first(_RECIPIENT, text).upper() == b:
            mapping = {a: self.sender, b: self.recipient}
        else:
            mapping = {b: self.sender, a: self.recipient}
        placeholders = {code: f"\x00{i}\x00" for i, code in enumerate(mapping)}
        for code, mark in placeholders.items():
            text = re.sub(rf'"{code}"', f'"{mark}U"', text)
            text = re.sub(rf'"{code.lower()}"', f'"{mark}L"', text)
            text = text.replace(f"{code.lower()}.hotline", f"{mark}D")
        for code, mark in placeholders.items():
            target = mapping[code]
            text = text.replace(f"{mark}U", target).replace(f"{mark}L", target.lower())
            text = text.replace(f"{mark}D", f"{target.lower()}.hotline")
        return text


def _first(pattern: re.Pattern[str], text: str) -> str:
    found = pattern.search(text)
    return found.group(1) if found else ""


def _shift_timestamps(message: Message, seconds: int) -> None:
    """Add `seconds` to every Timestamp in `message`, however deep."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        values = value if field.is_repeated else [value]
        for item in values:
            if isinstance(item, Timestamp):
                item.seconds += seconds
            elif isinstance(item, Message):
                _shift_timestamps(item, seconds)


def as_operator_would_send(envelope: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
    """The envelope an operator submits: the fields the gateway fills left to it (originator,
    create time), the rest as written."""
    out = envelope_pb2.Envelope()
    out.CopyFrom(envelope)
    out.ClearField("originator")
    return out


def free_text(
    sender: str, recipient: str, text: str = "conformance check"
) -> envelope_pb2.Envelope:
    """A small valid message from `sender`'s operator to `recipient`, created now."""
    env = envelope_pb2.Envelope(
        message_id=new_message_id(),
        sender_party=sender,
        recipient_party=recipient,
        originator=f"spiffe://{sender.lower()}.hotline/operator/conformance",
        status=common_pb2.MESSAGE_STATUS_EXERCISE,
        precedence=common_pb2.PRECEDENCE_ROUTINE,
        language="en",
        action=common_pb2.ACTION_NEW,
    )
    env.create_time.FromNanoseconds(time.time_ns())
    env.handling.classification = common_pb2.CLASSIFICATION_UNCLASSIFIED
    env.handling.releasable_to.extend([sender, recipient])
    env.free_text.subject.variants.add(
        language="en", text="Conformance", kind=common_pb2.TRANSLATION_KIND_ORIGINAL
    )
    env.free_text.text.variants.add(
        language="en", text=text, kind=common_pb2.TRANSLATION_KIND_ORIGINAL
    )
    return env
