"""The end-to-end comparison of two journals counts every message lost, duplicated, reordered or
forged, and nothing else. The journals here are written directly (signatures are not verified:
`verify=False`), so each test can plant exactly the defect it names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hotline.ids import new_message_id
from hotline.v1 import common_pb2, envelope_pb2, operator_pb2
from server.journal import Journal, Kind, Txn
from sim.integrity import RecordView, check_journals, compare_records

ROUTINE = common_pb2.PRECEDENCE_ROUTINE
FLASH = common_pb2.PRECEDENCE_FLASH


def signed(message_id: str, sender: str, precedence: int, text: str = "") -> bytes:
    env = envelope_pb2.Envelope(
        message_id=message_id,
        sender_party=sender,
        recipient_party="TW" if sender == "JP" else "JP",
        precedence=precedence,  # type: ignore[arg-type]
        language="en",
    )
    env.free_text.subject.variants.add(language="en", text=text or "s")
    return common_pb2.SignedPayload(
        payload=env.SerializeToString(),
        payload_type="application/vnd.hotline.v1.Envelope+protobuf",
        signature=b"\x00" * 64,
        key_id="0" * 64,
    ).SerializeToString()


Row = tuple[Kind, str, int, bytes]  # kind, message id, sequence, body


def write(
    path: Path, party: str, rows: Sequence[Row], settlements: Sequence[tuple[str, int, str]] = ()
) -> Path:
    journal = Journal(path, party=party)
    peer = "TW" if party == "JP" else "JP"

    def op(txn: Txn) -> None:
        for kind, message_id, sequence, body in rows:
            who = party if kind is Kind.MESSAGE_OUT else peer
            txn.append(kind, body, message_id=message_id, party=who, sequence=sequence)
        for sender, sequence, message_id in settlements:
            txn.execute(
                "INSERT INTO settlements (sender_party, lane, sequence, message_id, outcome,"
                " digest) VALUES (?,?,?,?,?,?)",
                (sender, 4, sequence, message_id, "receipt", b""),  # the ROUTINE lane
            )

    journal.run_sync(op)
    journal.close()
    return path


def pair(tmp: Path, out: Sequence[Row], inbound: Sequence[Row], **kw: object) -> dict[str, Path]:
    return {
        "JP": write(tmp / "jp.db", "JP", out),
        "TW": write(tmp / "tw.db", "TW", inbound),
    }


def ids(n: int) -> list[str]:
    return [new_message_id() for _ in range(n)]


def test_a_clean_exchange_has_nothing_to_report(tmp_path: Path) -> None:
    a, b, c = ids(3)
    out = [(Kind.MESSAGE_OUT, m, 0, signed(m, "JP", ROUTINE)) for m in (a, b, c)]
    inbound = [
        (Kind.MESSAGE_IN, m, i + 1, signed(m, "JP", ROUTINE)) for i, m in enumerate((a, b, c))
    ]
    report = check_journals(pair(tmp_path, out, inbound), verify=False)
    assert report.ok, report.to_json()
    jp_tw = report.directions[0]
    assert (jp_tw.sent, jp_tw.received) == (3, 3)


def test_a_message_journaled_as_sent_but_never_received_is_lost(tmp_path: Path) -> None:
    a, b, c = ids(3)
    out = [(Kind.MESSAGE_OUT, m, 0, signed(m, "JP", ROUTINE)) for m in (a, b, c)]
    inbound = [(Kind.MESSAGE_IN, a, 1, signed(a, "JP", ROUTINE))]
    inbound.append((Kind.REFUSED_INBOUND, b, 2, b'{"reason":"INVALID_MESSAGE"}'))
    report = check_journals(pair(tmp_path, out, inbound), verify=False)
    assert report.total("lost") == 1  # b was refused (settled), c is lost
    assert c in report.directions[0].examples["lost"][0]
    assert not report.ok
    # the run's scope limits what counts as lost: c is not this run's message
    scoped = check_journals(pair(tmp_path / "x", out, inbound), verify=False, scope={a, b})
    assert scoped.total("lost") == 0


def test_a_message_journaled_twice_by_the_receiver_is_duplicated(tmp_path: Path) -> None:
    (a,) = ids(1)
    out = [(Kind.MESSAGE_OUT, a, 0, signed(a, "JP", ROUTINE))]
    inbound = [(Kind.MESSAGE_IN, a, 1, signed(a, "JP", ROUTINE))] * 2
    report = check_journals(pair(tmp_path, out, inbound), verify=False)
    assert report.total("duplicated") == 2  # same id, and same sequence
    assert report.total("lost") == 0


def test_messages_of_one_precedence_received_out_of_order_are_reordered(tmp_path: Path) -> None:
    a, b, f = ids(3)
    out = [
        (Kind.MESSAGE_OUT, a, 0, signed(a, "JP", ROUTINE)),
        (Kind.MESSAGE_OUT, b, 0, signed(b, "JP", ROUTINE)),
        (Kind.MESSAGE_OUT, f, 0, signed(f, "JP", FLASH)),
    ]
    # FLASH overtaking ROUTINE is the protocol's rule, not a reordering; b before a is.
    inbound = [
        (Kind.MESSAGE_IN, f, 1, signed(f, "JP", FLASH)),
        (Kind.MESSAGE_IN, b, 2, signed(b, "JP", ROUTINE)),
        (Kind.MESSAGE_IN, a, 3, signed(a, "JP", ROUTINE)),
    ]
    report = check_journals(pair(tmp_path, out, inbound), verify=False)
    assert report.total("reordered") == 1
    assert a in report.directions[0].examples["reordered"][0]


def test_sequences_going_backwards_are_reordered(tmp_path: Path) -> None:
    a, b = ids(2)
    out = [(Kind.MESSAGE_OUT, m, 0, signed(m, "JP", ROUTINE)) for m in (a, b)]
    inbound = [
        (Kind.MESSAGE_IN, a, 2, signed(a, "JP", ROUTINE)),
        (Kind.MESSAGE_IN, b, 1, signed(b, "JP", ROUTINE)),
    ]
    assert check_journals(pair(tmp_path, out, inbound), verify=False).total("reordered") == 1


def test_received_bytes_the_sender_never_journaled_are_forged(tmp_path: Path) -> None:
    a, ghost = ids(2)
    out = [(Kind.MESSAGE_OUT, a, 0, signed(a, "JP", ROUTINE, "original"))]
    inbound = [
        (Kind.MESSAGE_IN, a, 1, signed(a, "JP", ROUTINE, "altered")),
        (Kind.MESSAGE_IN, ghost, 2, signed(ghost, "JP", ROUTINE)),
    ]
    report = check_journals(pair(tmp_path, out, inbound), verify=False)
    assert report.total("forged") == 2
    examples = " ".join(report.directions[0].examples["forged"])
    assert "bytes differ" in examples
    assert "never journaled" in examples


def test_settlements_that_disagree_about_a_sequence_are_forged(tmp_path: Path) -> None:
    a, b = ids(2)
    paths = {
        "JP": write(
            tmp_path / "jp.db",
            "JP",
            [(Kind.MESSAGE_OUT, a, 0, signed(a, "JP", ROUTINE))],
            [("JP", 1, a)],
        ),
        "TW": write(
            tmp_path / "tw.db",
            "TW",
            [(Kind.MESSAGE_IN, a, 1, signed(a, "JP", ROUTINE))],
            [("JP", 1, b)],
        ),
    }
    assert check_journals(paths, verify=False).total("forged") == 1


def test_a_journal_of_the_wrong_party_is_a_problem(tmp_path: Path) -> None:
    jp = write(tmp_path / "jp.db", "JP", [])
    report = check_journals({"JP": jp, "TW": jp}, verify=False)
    assert not report.ok
    assert "not TW's" in report.problems[0]


def record(
    message_id: str, sender: str, position: int, sequence: int, payload: bytes
) -> RecordView:
    rec = operator_pb2.MessageRecord(journal_position=position, sequence=sequence)
    rec.envelope.message_id = message_id
    rec.envelope.sender_party = sender
    rec.envelope.precedence = ROUTINE
    rec.signed_envelope.payload = payload
    return RecordView.of(rec)


def test_the_operator_api_comparison_counts_lost_forged_and_reordered() -> None:
    a, b, c, d = ids(4)
    sent = {
        a: record(a, "JP", 10, 0, b"a"),
        b: record(b, "JP", 11, 0, b"b"),
        c: record(c, "JP", 12, 0, b"c"),
        d: record(d, "TW", 5, 0, b"d"),
    }
    received: dict[str, RecordView | None] = {
        a: record(a, "JP", 3, 2, b"a"),
        b: record(b, "JP", 4, 1, b"b"),  # received before a: reordered
        c: None,  # lost
        d: record(d, "TW", 20, 1, b"tampered"),  # forged
    }
    report = compare_records(sent, received, ("JP", "TW"))
    assert (report.total("lost"), report.total("reordered"), report.total("forged")) == (1, 1, 1)
    assert report.method == "operator-api"
    assert report.notes
