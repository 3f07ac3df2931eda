"""Japanese and Chinese text in the CLI's human views: widths in terminal columns (wide and
fullwidth characters take two, combining marks none), wrapping between characters instead of a
cut with "…", columns that line up whatever the script, and piped output left as it was."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime

import pytest

from client import bodies
from client.cli_common import (
    HISTORY_HEADER,
    HISTORY_INDENT,
    HISTORY_SUMMARY_AT,
    HISTORY_WIDE,
    NO_LINE_START,
    Line,
    cell_width,
    history_header,
    pad_to,
    record_line,
    record_lines,
    record_text,
    wrapped,
)
from hotline.v1 import common_pb2, envelope_pb2, operator_pb2
from sim.demo import Floors

# 46 characters, no spaces: the sentence the issue found cut to one line with "…".
JA = "与那国島南方十二海里で護衛艦あおぞらと台湾巡防艦が交差中。針路速力を維持、貴艦の意図を求む。"
ZH = "與那國島南方十二海里，我方巡防艦與貴方驅逐艦交叉航行。請告知貴艦之意圖（航向與速度），謝謝。"
MESSAGE_ID = "0f9a8c1e-5b7d-4e2a-9c3b-7d6e5f4a3b2c"


def test_the_sentences_are_what_the_tests_claim() -> None:
    assert len(JA) == 46
    assert cell_width(JA) == 92
    assert cell_width(ZH) == 2 * len(ZH)


@pytest.mark.parametrize("text", [JA, ZH], ids=["ja", "zh-Hant"])
def test_a_sentence_without_spaces_wraps_at_40_columns_instead_of_being_cut(text: str) -> None:
    lines = Line([]).add(text).wrap(40, indent="  ", max_lines=10)
    shown = [line.plain() for line in lines]
    assert len(shown) == 3, shown  # 92 or more columns: three lines, not one cut line
    assert all(line.width() <= 40 for line in lines)
    assert lines[0].width() >= 38  # filled, not broken early (38: kinsoku may pull a character)
    assert all(s.startswith("  ") for s in shown[1:])
    assert "…" not in "".join(shown)
    assert "".join(s.removeprefix("  ") for s in shown) == text  # nothing lost or added
    for s in shown[1:]:  # kinsoku: no line starts with closing punctuation
        assert s.removeprefix("  ")[0] not in NO_LINE_START


def test_the_line_limit_ends_with_an_ellipsis_within_the_width() -> None:
    lines = Line([]).add(JA * 3).wrap(40, indent="  ", max_lines=2)
    assert len(lines) == 2
    assert lines[-1].plain().endswith("…")
    assert all(line.width() <= 40 for line in lines)


def test_combining_marks_take_no_column_and_stay_with_their_character() -> None:
    ga = "か\u3099"  # か + COMBINING KATAKANA-HIRAGANA VOICED SOUND MARK
    assert cell_width(ga) == 2
    assert cell_width("e\u0301") == 1
    assert cell_width(ga * 20) == 40
    assert [line.plain() for line in Line([]).add(ga * 20).wrap(40)] == [ga * 20]
    cut = Line([]).add(ga * 30).render(False, 11)
    assert cut == ga * 5 + "…"  # whole graphemes: never a mark without its base
    assert cell_width(cut) == 11


def test_mixed_ascii_and_cjk_words_wrap_at_spaces_and_between_characters() -> None:
    line = Line([]).add("JS AOZORA reports: 「前方の船舶は針路を変更せよ」 we keep course", "1")
    lines = line.wrap(20, indent="  ", max_lines=10)
    shown = [s.plain() for s in lines]
    assert all(s.width() <= 20 for s in lines), shown
    assert "".join(s.removeprefix("  ") for s in shown).replace(" ", "") == line.plain().replace(
        " ", ""
    )
    assert not any(
        s.rstrip().endswith("「") for s in shown
    )  # an opening bracket stays with its text
    assert all(s == s.rstrip() for s in shown)  # no trailing spaces at a break
    assert all(seg[1] == "1" for s in lines for seg in s.segments if seg[0].strip())  # style kept


def test_padding_counts_columns_not_characters() -> None:
    for text in ("ROGER", "了解しました", "收到", "か\u3099ASCII混在"):
        assert cell_width(pad_to(text, 20)) == 20
        assert cell_width(Line([]).add(text, "1").render(False, 20, pad=True)) == 20
    # cut before a wide character that does not fit: padded back to the exact width
    assert cell_width(Line([]).add("a" + JA).render(False, 10, pad=True)) == 10


def test_peer_text_stays_escaped_through_wrapping() -> None:
    line = Line([]).add("了解\x1b[2J\u202e" + JA)
    text = wrapped(line, True, 40)
    assert "\x1b[2J" not in text
    assert "\u202e" not in text
    assert "\\x1b[2J" in "".join(s.plain() for s in line.wrap(40, max_lines=10))


def _record(subject: str, text: str, language: str) -> operator_pb2.MessageRecord:
    env = envelope_pb2.Envelope(
        message_id=MESSAGE_ID,
        sender_party="TW",
        recipient_party="JP",
        precedence=common_pb2.PRECEDENCE_IMMEDIATE,
        status=common_pb2.MESSAGE_STATUS_EXERCISE,
        language=language,
        free_text=bodies.free_text(subject, text, language=language),
    )
    env.create_time.FromDatetime(datetime(2026, 5, 1, 3, 0, tzinfo=UTC))
    record = operator_pb2.MessageRecord(
        envelope=env,
        direction=operator_pb2.DIRECTION_INBOUND,
        state=operator_pb2.DELIVERY_STATE_DELIVERED,
        journal_position=7,
    )
    record.journal_time.FromDatetime(datetime(2026, 5, 1, 3, 0, 1, tzinfo=UTC))
    return record


@pytest.mark.parametrize(("text", "language"), [(JA, "ja"), (ZH, "zh-Hant")], ids=["ja", "zh"])
def test_a_history_row_wraps_its_summary_under_its_column(text: str, language: str) -> None:
    line = record_line(_record(text, text, language))
    summary_at = 130
    rows = wrapped(line, False, 170, indent=summary_at, max_lines=3).split("\n")
    assert len(rows) >= 2
    assert all(cell_width(row) <= 170 for row in rows)
    for row in rows[1:]:  # continuation lines start exactly at the SUMMARY column
        assert row[:summary_at].strip() == ""
        assert row[summary_at] != " "


def test_the_history_header_stands_over_its_columns() -> None:
    row = record_line(_record("hello", "x", "en")).plain()
    assert row.index("hello") == HISTORY_SUMMARY_AT
    for title, value in (("STATUS", "EXERCISE"), ("STATE", "DELIVERED"), ("TYPE", "free-text")):
        assert row.index(value) == HISTORY_HEADER.index(title), title


@pytest.mark.parametrize("width", [80, 100, 120])
@pytest.mark.parametrize(("text", "language"), [(JA, "ja"), (ZH, "zh-Hant")], ids=["ja", "zh"])
def test_a_history_row_wraps_its_summary_at_ordinary_widths(
    text: str, language: str, width: int
) -> None:
    assert width < HISTORY_WIDE  # where the one-row layout has no room left for a summary
    header = history_header(width).split("\n")
    rows = record_lines(_record(text, text, language), False, width).split("\n")
    assert all(cell_width(row) <= width for row in header + rows)
    head, *summary = rows
    assert head.startswith("     7 2026-05-01 03:00:01Z IN  IMMEDIATE  EXERCISE DELIVERED ")
    assert head.split()[-1] == (MESSAGE_ID if width > 100 else "…" + MESSAGE_ID[-8:])
    # the type and summary under their own header, wrapped there: nothing cut, no "…"
    assert header[1] == " " * HISTORY_INDENT + "TYPE: SUMMARY"
    assert len(summary) >= (2 if width < 120 else 1)
    for row in summary:
        assert row[:HISTORY_INDENT].strip() == ""
        assert row[HISTORY_INDENT] != " "
    assert "".join(row[HISTORY_INDENT:] for row in summary) == "free-text: " + text


def test_show_wraps_values_under_their_column_on_a_terminal_only() -> None:
    record = _record(ZH, JA, "ja")
    piped = record_text(record)
    assert [row for row in piped.split("\n") if row.startswith("summary:")] == [
        "summary:".ljust(15) + ZH  # unchanged when piped: one line per field, not wrapped
    ]
    shown = record_text(record, width=40).split("\n")
    at = shown[0].index(MESSAGE_ID[:4])  # where values start
    summary = next(i for i, row in enumerate(shown) if row.startswith("summary:"))
    assert all(cell_width(row) <= 40 for row in shown[: summary + 3])
    assert shown[summary + 1][:at].strip() == ""
    assert shown[summary + 1][at] != " "
    assert "".join(row[at:] for row in shown[summary : summary + 4]).startswith(ZH)


async def test_the_demo_floors_keep_their_divider_in_one_column_with_japanese_text() -> None:
    record = _record(JA, JA, "ja")
    event = operator_pb2.Event(
        cursor=3,
        kind=operator_pb2.EVENT_KIND_MESSAGE_RECEIVED,
        message_id=MESSAGE_ID,
        message=record,
    )
    event.event_time.FromDatetime(datetime(2026, 5, 1, 3, 0, 1, tzinfo=UTC))
    out = io.StringIO()
    floors = Floors(out, columns=True, colour=False, width=84)
    floors.header()
    floors.event("JP", event)
    floors.event("TW", event)
    assert "RECEIVED" not in out.getvalue()  # held a moment for the other floor's events
    floors.flush()
    rows = [row for row in out.getvalue().split("\n") if row]
    divider = [cell_width(re.split("[│┼]", row)[0]) for row in rows]
    assert len(rows) == 4  # header, rule, and one row of two lines for both floors
    assert set(divider) == {Floors.TIME_WIDTH + 1 + floors.col + 1}, rows
    # the two floors' events of the same moment share a row; each fits in two lines
    assert sum(1 for row in rows if re.match(r"\d\d:\d\d:\d\d\.\d ", row)) == 1
    assert all(cell_width(row) <= 84 for row in rows)
