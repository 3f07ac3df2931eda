"""Text from the other party cannot drive an operator's terminal.

Against real gateways (mutual TLS on loopback, SQLite journals) and the real `hotline` CLI run
as a subprocess:

* control characters are refused where text enters: an operator's `Send` (INVALID_ARGUMENT
  naming the field and the character) and a peer's delivery (rejected INVALID_MESSAGE);
* what the validator lets through but a terminal would still obey or hide (U+202E RIGHT-TO-LEFT
  OVERRIDE, U+2028 LINE SEPARATOR, U+200B ZERO WIDTH SPACE), put in *every* human-text field of
  every body the examples hold, and in an acknowledgement's remarks, is shown escaped by
  `watch`, `show` and `history`, plain and `--json`;
* a malicious peer's refused delivery (an escape sequence and a forged event line in its
  message id and text) is shown escaped on the watch floor.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from client.config import write_operator_config
from hotline import constraints
from hotline.display import shows_as_is
from hotline.ids import new_message_id
from hotline.v1 import bodies_pb2, common_pb2, envelope_pb2, operator_pb2
from tests.cli.test_cli import clean_env, hotline
from tests.harness import free_text, running_pair, wait_state
from tests.security.conftest import (
    Lone,
    fake_tw_peer,
    rpc_error,
    signer_of,
    signing_der,
    tw_envelope,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "proto" / "examples" / "valid"
HIDDEN = "\u202e\u2028\u200b"  # valid text, and not printable: must be shown escaped
SHOWN = "\\u202e\\u2028\\u200b"
ESCAPE = "\x1b[2J\x1b[1;31m"  # clear the screen, then red


def human_text(fd: FieldDescriptor) -> bool:
    """A string field whose constraints leave its content free: no pattern, format or list of
    values, neither on the field nor in a rule of its message (`if type is X: value pattern`)."""
    line = constraints.FIELDS.get(fd.full_name, "")
    holder = fd.containing_type
    rules = constraints.MESSAGES.get(holder.full_name, "") if holder is not None else ""
    return not any(word in line for word in ("pattern ", "format ", "one of ")) and not any(
        f"{fd.name} {word}" in rules for word in ("pattern ", "format ", "one of ")
    )


def salt(message: Message) -> int:
    """Prefix every human-text string field set in `message` (at any depth) with HIDDEN;
    returns how many fields were changed."""
    changed = 0
    for fd, value in message.ListFields():
        if fd.message_type is not None:
            for item in value if fd.is_repeated else [value]:
                changed += salt(item)
        elif fd.type == fd.TYPE_STRING and human_text(fd):
            if fd.is_repeated:
                for index, item in enumerate(value):
                    value[index] = HIDDEN + item
                    changed += 1
            else:
                setattr(message, fd.name, HIDDEN + value)
                changed += 1
    return changed


def salted_examples() -> list[tuple[envelope_pb2.Envelope, int]]:
    """Every example of a new message an operator can send, with every human text salted."""
    found = []
    for path in sorted(EXAMPLES.glob("*.txtpb")):
        env = text_format.Parse(path.read_text(encoding="utf-8"), envelope_pb2.Envelope())
        if env.action != common_pb2.ACTION_NEW or env.WhichOneof("body") == "acknowledgement":
            continue
        member = env.WhichOneof("body")
        assert member is not None
        changed = salt(getattr(env, member))
        assert changed, f"{path.name} has no human text to salt"
        env.message_id = new_message_id()
        env.ClearField("sender_party")
        env.ClearField("originator")
        env.ClearField("create_time")
        env.ClearField("expire_time")
        found.append((env, changed))
    return found


def raw_hidden(output: str) -> list[str]:
    """The characters of `output` a terminal would obey or hide (line feeds are the layout)."""
    return sorted({f"U+{ord(c):04X}" for c in output if c != "\n" and not shows_as_is(c)})


@pytest.mark.must("VAL-6")
async def test_control_characters_are_refused_at_send(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as pair:
        envelope = free_text(f"{ESCAPE}all clear")
        error = await rpc_error(
            pair.jp.stub.Send(operator_pb2.SendRequest(envelope=envelope), timeout=10)
        )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert "envelope.free_text.text.variants[0].text" in details
    assert "must not hold control characters other than line feed and tab, got U+001B" in details


async def test_peer_text_is_shown_escaped_by_watch_show_and_history(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    async with running_pair(tmp_path) as pair:
        configs = {}
        for side in (pair.jp, pair.tw):
            configs[side.party] = (
                "--config",
                str(
                    write_operator_config(
                        tmp_path / f"{side.party.lower()}.toml",
                        address=f"127.0.0.1:{side.port}",
                        party=side.party,
                        pki_dir=pair.pki,
                    )
                ),
            )
        sent = salted_examples()
        assert len(sent) >= 12  # every body type but the acknowledgement
        sides = {"JP": pair.jp, "TW": pair.tw}
        for envelope, _ in sent:  # sent by the party it is addressed from
            sender = sides["JP" if envelope.recipient_party == "TW" else "TW"]
            await sender.stub.Send(operator_pb2.SendRequest(envelope=envelope), timeout=10)
        for envelope, _ in sent:
            sender = sides["JP" if envelope.recipient_party == "TW" else "TW"]
            await wait_state(
                sender.stub, envelope.message_id, operator_pb2.DELIVERY_STATE_DELIVERED
            )
        free = next(e for e, _ in sent if e.WhichOneof("body") == "free_text")
        remarks = common_pb2.LocalizedText()
        remarks.variants.add(
            language="en", text=f"{HIDDEN}noted", kind=common_pb2.TRANSLATION_KIND_ORIGINAL
        )
        await pair.tw.stub.Acknowledge(
            operator_pb2.AcknowledgeRequest(
                message_id=free.message_id,
                level=bodies_pb2.ACKNOWLEDGEMENT_LEVEL_ROGER,
                remarks=remarks,
            ),
            timeout=10,
        )
        await wait_state(pair.jp.stub, free.message_id, operator_pb2.DELIVERY_STATE_ACKNOWLEDGED)

        outputs: dict[str, str] = {}
        # The receiver of each: every message in full; both: the history, the watch floor.
        for envelope, changed in sent:
            for plain in (True, False):
                args = ["show", envelope.message_id] + ([] if plain else ["--json"])
                shown = await hotline(*args, *configs[envelope.recipient_party], env=env)
                assert shown.rc == 0, shown.err
                outputs[" ".join(args)] = shown.out
                if plain:  # each salted field, once in the body at least
                    assert shown.out.count(SHOWN) >= changed, (envelope, shown.out)
                else:
                    record = json.loads(shown.out)
                    assert HIDDEN in json.dumps(record, ensure_ascii=False)  # the same data
        for party in ("TW", "JP"):
            for extra in ([], ["--json"]):
                history = await hotline(
                    "history", "--limit", "100", *extra, *configs[party], env=env
                )
                assert history.rc == 0, history.err
                outputs[f"{party} history {extra}"] = history.out
                watch = await hotline(
                    "watch", "--until-idle", "2", *extra, *configs[party], env=env
                )
                assert watch.rc == 0, watch.err
                outputs[f"{party} watch {extra}"] = watch.out
        # JP sees TW's acknowledgement with its remarks, escaped
        assert (
            f"ROGER by spiffe://tw.hotline/operator/watch-1: {SHOWN}noted"
            in (outputs["JP watch []"])
        )
        acknowledged = await hotline("show", free.message_id, *configs["JP"], env=env)
        assert "remarks:" in acknowledged.out
        assert SHOWN in acknowledged.out
        outputs["JP show"] = acknowledged.out
    for name, output in outputs.items():
        assert not raw_hidden(output), f"{name} printed {raw_hidden(output)} raw:\n{output}"
        assert SHOWN in output or "\\u202e" in output, f"{name} shows no salted text"


async def test_a_malicious_peers_refused_text_is_shown_escaped(jp: Lone, tmp_path: Path) -> None:
    forged_line = "\n12:00:00.000Z #1      LINK DOWN    outbound: forged"
    bad = tw_envelope(f"{ESCAPE}SAFE{forged_line}")
    bad.message_id = f"\x1b[31m{new_message_id()}"
    signed = signer_of(jp.pki, "TW").sign(
        "application/vnd.hotline.v1.Envelope+protobuf", bad.SerializeToString()
    )
    async with fake_tw_peer(jp) as peer:
        await peer.open([signing_der(jp.pki, "TW")])
        receipt = await peer.deliver(1, signed)
    [rejection] = receipt.rejections
    assert rejection.reason.name == "INVALID_MESSAGE"
    config = write_operator_config(
        tmp_path / "jp.toml", address=f"127.0.0.1:{jp.port}", party="JP", pki_dir=jp.pki
    )
    env = clean_env(tmp_path)
    shown: dict[str, str] = {}
    for extra in ([], ["--json"]):
        watch = await hotline(
            "watch", "--kinds", "rejected", "--until-idle", "2", *extra, "--config", str(config),
            env=env,
        )  # fmt: skip
        assert watch.rc == 0, watch.err
        shown["json" if extra else "plain"] = watch.out
    for output in shown.values():
        assert not raw_hidden(output), output
        assert "\x1b" not in output
        assert not any(line.startswith("12:00:00.000Z") for line in output.splitlines())
    # the malformed message id is not carried as an id, only quoted (escaped) in the detail
    assert "\\x1b[31m" in shown["plain"]
    [event] = [json.loads(line) for line in shown["json"].splitlines()]
    assert "message_id" not in event
    assert "\x1b[31m" not in event["detail"]
    assert "'\\x1b[31m" in event["detail"]
