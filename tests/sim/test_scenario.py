"""Scenario files: every built-in loads and validates; each kind of mistake is refused with the
file and line where it was made."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest

from hotline.v1 import common_pb2
from sim.scenario import (
    FORMAT_V1,
    ScenarioError,
    builtin_names,
    load_scenario,
    parse_fault_option,
    parse_scenario,
)

GOOD = """\
format = "hotline-scenario/1"
name = "tiny"
title = "Tiny"

[defaults]
think = { dist = "fixed", s = 2 }
answer = { roger = 0.5, wilco = 0.5 }

[[event]]
at = 0
from = "JP"
id = "FIRST"
type = "free_text"
precedence = "flash"
language = "ja"
fields.subject = { ja = "件名", en = "Subject" }
fields.text = "本文"

[[event]]
at = 5
from = "TW"
type = "link_test"
status = "test"
refs = ["FIRST"]
repeat = { count = 3, every_s = 10 }
fields.test_number = "@n"
fields.send_time = "@t-1s"
fields.text = { en = "The quick brown fox" }
"""


def problem(text: str, tmp_path: Path) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(str(path))
    return str(caught.value).replace(str(path), "bad.toml")


def edit(old: str, new: str, text: str = GOOD) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def test_every_builtin_scenario_loads_and_its_bodies_validate() -> None:
    names = builtin_names()
    assert len(names) >= 10
    for name in names:
        scenario = load_scenario(name)
        assert scenario.name == name
        assert scenario.message_count >= 5
        for _at, event, n in scenario.timeline():
            event.envelope(
                n=n,
                now_ns=time.time_ns(),
                refs=["0" * 8 + "-0000-7000-8000-" + "0" * 12] * len(event.refs),
            )


def test_a_good_file_parses_with_defaults_repeats_and_shorthands() -> None:
    scenario = parse_scenario(GOOD, source="tiny.toml")
    assert scenario.name == "tiny"
    assert scenario.message_count == 4
    assert [(at, e.body, n) for at, e, n in scenario.timeline()] == [
        (0.0, "free_text", 1),
        (5.0, "link_test", 1),
        (15.0, "link_test", 2),
        (25.0, "link_test", 3),
    ]
    first, tests = scenario.events
    assert first.precedence == common_pb2.PRECEDENCE_FLASH
    assert first.recipient == "TW"
    assert tests.think.sample(random.Random(1)) == 2.0
    env = first.envelope(now_ns=time.time_ns())
    variants = {v.language: v.kind for v in env.free_text.subject.variants}
    assert variants == {
        "ja": common_pb2.TRANSLATION_KIND_ORIGINAL,
        "en": common_pb2.TRANSLATION_KIND_HUMAN_CONFIRMED,
    }
    assert env.free_text.text.variants[0].text == "本文"
    second = tests.envelope(n=2, now_ns=10**18, refs=["x"])
    assert second.link_test.test_number == 2
    assert second.link_test.send_time.ToNanoseconds() == 10**18 - 10**9
    assert list(second.references) == ["x"]


def test_answers_are_drawn_with_the_given_probabilities() -> None:
    scenario = parse_scenario(GOOD)
    answer = scenario.events[0].answer
    rng = random.Random(7)
    drawn = [answer.draw(rng) for _ in range(2000)]
    assert 900 < drawn.count("roger") < 1100
    assert set(drawn) == {"roger", "wilco"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (edit('title = "Tiny"', 'title = "Tiny'), "bad.toml:3: not valid TOML"),
        (edit(f'format = "{FORMAT_V1}"', 'format = "hotline-scenario/9"'), "bad.toml:1: format"),
        (edit(f'format = "{FORMAT_V1}"\n', ""), "bad.toml:1: missing `format"),
        (
            edit('name = "tiny"', 'name = "tiny"\ncolour = "red"'),
            "bad.toml:3: unknown key 'colour'",
        ),
        (edit("at = 5", "at = -5"), "bad.toml:20: `at`"),
        (edit('from = "TW"', 'from = "CN"'), "bad.toml:21: `from` must be one of JP, TW"),
        (
            edit('type = "link_test"', 'type = "link_tset"'),
            "bad.toml:22: unknown body type 'link_tset' (did you mean 'link_test'?)",
        ),
        (
            edit('type = "link_test"', 'type = "acknowledgement"'),
            "bad.toml:22: acknowledgements are not sent as events",
        ),
        (
            edit('precedence = "flash"', 'precedence = "urgent"'),
            "bad.toml:14: unknown precedence 'urgent'",
        ),
        (edit('status = "test"', 'status = "real"'), "bad.toml:23: unknown status 'real'"),
        (
            edit("repeat = {", "repaet = {"),
            "bad.toml:25: unknown event key 'repaet' (did you mean 'repeat'?)",
        ),
        (
            edit('fields.text = "本文"', 'fields.txet = "本文"'),
            "bad.toml:17: fields.txet: unknown field of FreeText 'txet' (did you mean 'text'?)",
        ),
        (
            edit('fields.send_time = "@t-1s"', 'fields.send_time = "yesterday"'),
            "bad.toml:27: fields.send_time",
        ),
        (
            edit('fields.send_time = "@t-1s"', 'fields.send_time = "@yesterday"'),
            "bad.toml:27: fields.send_time: '@yesterday'",
        ),
        (
            edit('fields.test_number = "@n"', "fields.test_number = 0"),
            "bad.toml:26: fields.test_number: must be",
        ),
        (edit('fields.text = "本文"\n', ""), "bad.toml:16: fields.text: required"),
        (
            edit('refs = ["FIRST"]', 'refs = ["FRIST"]'),
            "bad.toml:24: unknown event id in refs 'FRIST' (did you mean 'FIRST'?)",
        ),
        (
            edit("answer = { roger = 0.5, wilco = 0.5 }", "answer = { roger = 0.5, wilco = 0.4 }"),
            "bad.toml:7: answer probabilities must add up to 1",
        ),
        (
            edit("answer = { roger = 0.5, wilco = 0.5 }", "answer = { rodger = 1.0 }"),
            "bad.toml:7: unknown answer level 'rodger'",
        ),
        (
            edit('think = { dist = "fixed", s = 2 }', 'think = { dist = "gamma", k = 2 }'),
            "bad.toml:6: think must be",
        ),
        (
            edit('id = "FIRST"', 'id = "FIRST"\naction = "update"'),
            "bad.toml:13: an update or cancel needs `refs`",
        ),
    ],
    ids=lambda value: value[:40] if isinstance(value, str) else str(value),
)
def test_a_malformed_file_is_refused_with_file_line_and_reason(
    text: str, expected: str, tmp_path: Path
) -> None:
    assert problem(text, tmp_path).startswith(expected)


def test_an_update_must_keep_the_sender_and_body_type(tmp_path: Path) -> None:
    text = (
        GOOD
        + """
[[event]]
at = 40
from = "JP"
type = "link_test"
action = "update"
refs = ["FIRST"]
fields.test_number = 1
fields.send_time = "@t"
fields.text = "x"
"""
    )
    assert problem(text, tmp_path).startswith(
        "bad.toml:33: an update must have the body type of the message it replaces (free_text)"
    )
    text = text.replace(
        'from = "JP"\ntype = "link_test"\naction', 'from = "TW"\ntype = "link_test"\naction'
    )
    assert "an update must replace a message of the same sender" in problem(text, tmp_path)
    cancel = text.replace('action = "update"', 'action = "cancel"')
    assert "a cancel must replace a message of the same sender" in problem(cancel, tmp_path)


def test_a_reference_must_point_back_in_time(tmp_path: Path) -> None:
    text = edit("at = 5", "at = 0").replace('at = 0\nfrom = "JP"', 'at = 9\nfrom = "JP"')
    assert "is not before this one" in problem(text, tmp_path)


def test_faults_are_checked_in_files_and_on_the_command_line(tmp_path: Path) -> None:
    text = GOOD + '\n[[fault]]\nat = 3\nkind = "drop"\ntarget = "JP->CN"\n'
    assert problem(text, tmp_path).startswith("bad.toml:33: a drop fault targets a link direction")
    text = GOOD + '\n[[fault]]\nat = 3\nkind = "explode"\n'
    assert problem(text, tmp_path).startswith("bad.toml:32: unknown fault kind 'explode'")
    text = GOOD + '\n[[fault]]\nat = 3\nkind = "delay"\ntarget = "both"\n'
    assert problem(text, tmp_path).startswith("bad.toml:30: a delay fault needs delay_s")

    fault = parse_fault_option("at=5,kind=drop,target=JP->TW,duration_s=3")
    assert (fault.at, fault.kind, fault.target, fault.duration_s) == (5.0, "drop", "JP->TW", 3.0)
    assert parse_fault_option("at=1,kind=kill,target=TW").target == "TW"
    assert parse_fault_option("at=1,kind=delay,delay_s=0.2").params == {"delay_s": 0.2}
    for bad in (
        "at=1,kind=kill",
        "at=x,kind=drop",
        "kind=drop",
        "at=1,kind=restart,duration_s=2",
        "at=1,kind=drop,colour=red",
    ):
        with pytest.raises(ValueError, match="--fault"):
            parse_fault_option(bad)


def test_an_unknown_builtin_name_suggests_the_closest() -> None:
    with pytest.raises(ScenarioError, match="did you mean yonaguni-naval-encounter"):
        load_scenario("yonaguni-naval-encountr")


# ---------------------------------------------------------------------------------------------
# Format 2

V2 = """\
format = "hotline-scenario/2"
name = "two"
title = "Two"

[defaults]
think = 2
answer = "roger"
expect = { answer = "roger" }

[[event]]
at = 0
from = "JP"
id = "REPORT"
type = "free_text"
answer = "say_again"
resend = { id = "REPORT-AGAIN", answer = { wilco = 1.0 }, think = 5 }
expect = { answer = "say_again", delivered_s = 2 }
fields.subject = "Subject"
fields.text = "Text"

[[event]]
at = 0
from = "TW"
id = "TEST"
type = "link_test"
repeat = { count = 3, every_s = 10 }
fields.test_number = "@n+100"
fields.send_time = "@t"
fields.text = "Test"

[[event]]
after = "REPORT-AGAIN acknowledged"
delay_s = 3
from = "TW"
id = "REPLY"
type = "free_text"
refs = ["REPORT-AGAIN", "TEST#1"]
fields.subject = "Reply"
fields.text = "Text"

[[event]]
at = 5
when = "link JP->TW up"
from = "JP"
id = "BACKLOG"
type = "free_text"
precedence = "routine"
burst = 50
answer = "none"
fields.subject = "Backlog"
fields.text = "Text"

[[event]]
at = 40
from = "JP"
type = "free_text"
action = "cancel"
refs = ["id:01900000-0000-7000-8000-000000000000"]
expect = { refused = "not_found" }
fields.subject = "Ghost"
fields.text = "Text"

[[fault]]
at = 4
kind = "drop"
target = "JP->TW"
wall_duration_s = 2
"""


def test_a_format_2_file_parses_triggers_bursts_resends_expectations_and_literal_refs() -> None:
    scenario = parse_scenario(V2, source="two.toml")
    report, tests, reply, backlog, ghost = scenario.events
    assert report.resend is not None
    assert report.resend.label == "REPORT-AGAIN"
    assert report.resend.answer.weights == (("wilco", 1.0),)
    assert report.resend.think.sample(random.Random(1)) == 5.0
    assert report.expect is not None
    assert (report.expect.answer, report.expect.budgets) == ("say_again", (("delivered", 2.0),))
    assert tests.expect is not None
    assert tests.expect.answer == "roger"
    assert [tests.label_of(n) for n in (1, 2, 3)] == ["TEST#1", "TEST#2", "TEST#3"]
    assert tests.envelope(n=2, now_ns=10**18).link_test.test_number == 102
    assert reply.trigger is not None
    assert (reply.trigger.label, reply.trigger.state, reply.delay_s) == (
        "REPORT-AGAIN",
        "acknowledged",
        3.0,
    )
    assert backlog.trigger is not None
    assert backlog.trigger.on_link
    assert (backlog.trigger.direction, backlog.trigger.state) == ("JP->TW", "up")
    assert backlog.count == 50
    assert backlog.times()[-1] == (5.0, 50)
    assert ghost.expect is not None
    assert ghost.expect.refused == "NOT_FOUND"
    env = ghost.envelope(now_ns=10**18, refs=list(ghost.refs))
    assert list(env.references) == ["01900000-0000-7000-8000-000000000000"]
    assert scenario.faults[0].wall_duration_s == 2.0
    assert scenario.faults[0].duration_s is None
    # the timeline has the timed sends; the triggered events wait apart
    assert {e.label for _, e, _ in scenario.timeline()} == {"REPORT", "TEST", ""}
    assert [e.label for e in scenario.triggered()] == ["REPLY", "BACKLOG"]
    assert scenario.message_count == 1 + 3 + 1 + 50 + 1


def test_an_include_adds_another_files_events_later_with_prefixed_labels(tmp_path: Path) -> None:
    (tmp_path / "day.toml").write_text(V2, encoding="utf-8")
    week = (
        'format = "hotline-scenario/2"\nname = "week"\ntitle = "Week"\n\n'
        '[[include]]\nfile = "day.toml"\nprefix = "MON-"\n\n'
        '[[include]]\nfile = "day.toml"\noffset_s = 86400\nprefix = "TUE-"\n\n'
        '[[event]]\nat = 90000\nfrom = "TW"\ntype = "free_text"\nrefs = ["TUE-TEST#1"]\n'
        'fields.subject = "S"\nfields.text = "T"\n'
    )
    path = tmp_path / "week.toml"
    path.write_text(week, encoding="utf-8")
    scenario = load_scenario(str(path))
    labels = {e.label: e for e in scenario.events}
    assert labels["MON-REPORT"].at == 0.0
    assert labels["TUE-REPORT"].at == 86400.0
    assert labels["TUE-TEST"].times()[1] == (86410.0, 2)
    reply = labels["TUE-REPLY"]
    assert reply.trigger is not None
    assert reply.trigger.label == "TUE-REPORT-AGAIN"
    assert reply.refs == ("TUE-REPORT-AGAIN", "TUE-TEST#1")
    assert labels["TUE-REPORT"].resend.label == "TUE-REPORT-AGAIN"  # type: ignore[union-attr]
    assert [f.at for f in scenario.faults] == [4.0, 86404.0]
    assert scenario.message_count == 2 * 56 + 1
    assert len({e.index for e in scenario.events}) == len(scenario.events)
    # the same file twice without a prefix: its labels collide
    path.write_text(
        re.sub(r'prefix = "\w+-"\n', "", week).replace("TUE-TEST#1", "TEST#1"), encoding="utf-8"
    )
    assert "id 'REPORT' is already used" in problem(path.read_text(encoding="utf-8"), tmp_path)
    (tmp_path / "loop.toml").write_text(
        week.replace("day.toml", "loop.toml").replace("week", "loop"), encoding="utf-8"
    )
    with pytest.raises(ScenarioError, match="cannot include itself"):
        load_scenario(str(tmp_path / "loop.toml"))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'after = "REPORT-AGAIN acknowledged"',
            'after = "REPORT-AGAIN answered"',
            "bad.toml:32: after must be",
        ),
        (
            'after = "REPORT-AGAIN acknowledged"',
            'after = "REPROT acknowledged"',
            "bad.toml:32: unknown event id in after 'REPROT' (did you mean 'REPORT'?)",
        ),
        (
            'when = "link JP->TW up"',
            'when = "link JP->CN up"',
            "bad.toml:43: when: JP->CN is not a link direction",
        ),
        ('when = "link JP->TW up"', 'when = "sunrise"', "bad.toml:43: when must be"),
        (
            'refs = ["REPORT-AGAIN", "TEST#1"]',
            'refs = ["REPORT-AGAIN", "TEST#4"]',
            "bad.toml:37: refs 'TEST#4': TEST sends 3 message(s)",
        ),
        (
            'refs = ["REPORT-AGAIN", "TEST#1"]',
            'refs = ["REPORT-AGAIN", "TEST#2"]',
            "bad.toml:37: refs 'TEST#2': that event (t=10) is not before",
        ),
        (
            'refs = ["id:01900000-0000-7000-8000-000000000000"]',
            'refs = ["BACKLOG"]',
            "bad.toml:58: refs 'BACKLOG': that message is sent only on a trigger",
        ),
        (
            'refs = ["id:01900000-0000-7000-8000-000000000000"]',
            'refs = ["id:not-an-id"]',
            "bad.toml:58: refs 'id:not-an-id': a literal reference is id:<message id>",
        ),
        ("burst = 50", "burst = 0", "bad.toml:48: burst must be a whole number"),
        (
            "burst = 50",
            "burst = 5\nrepeat = { count = 2, every_s = 1 }",
            "bad.toml:48: an event is either a burst or repeated",
        ),
        ("delay_s = 3", "delay_s = -3", "bad.toml:33: delay_s"),
        (
            'expect = { refused = "not_found" }',
            'expect = { refused = "nope" }',
            "bad.toml:59: unknown status code in refused 'NOPE'",
        ),
        (
            'expect = { answer = "say_again", delivered_s = 2 }',
            'expect = { answer = "say_again", delivered = 2 }',
            "bad.toml:17: unknown expect key 'delivered' (did you mean 'delivered_s'?)",
        ),
        (
            'expect = { answer = "roger" }',
            'expect = { answer = "yes" }',
            "bad.toml:8: unknown expected answer 'yes'",
        ),
        (
            "resend = { id",
            "resend = { colour = 1, id",
            "bad.toml:16: unknown resend key 'colour'",
        ),
        (
            "wall_duration_s = 2",
            "wall_duration_s = 2\nduration_s = 2",
            "bad.toml:67: a fault lasts duration_s (scenario seconds) or wall_duration_s",
        ),
        (
            'when = "link JP->TW up"',
            'when = "link JP->TW up"\nafter = "REPORT journaled"',
            "bad.toml:43: an event has one trigger",
        ),
    ],
    ids=lambda value: value[:30],
)
def test_a_malformed_format_2_construct_is_refused_with_its_line(
    old: str, new: str, expected: str, tmp_path: Path
) -> None:
    assert problem(edit(old, new, V2), tmp_path).startswith(expected)


def test_triggers_that_wait_for_each_other_are_refused(tmp_path: Path) -> None:
    text = edit(
        'at = 0\nfrom = "JP"\nid = "REPORT"',
        'after = "REPLY journaled"\nfrom = "JP"\nid = "REPORT"',
        V2,
    )
    assert "the triggers wait for each other in a circle" in problem(text, tmp_path)


def test_a_format_1_file_may_not_use_what_format_2_added(tmp_path: Path) -> None:
    text = edit("at = 5", "at = 5\nburst = 3")
    assert problem(text, tmp_path).startswith(
        "bad.toml:21: 'burst' needs format = 'hotline-scenario/2'"
    )
    text = GOOD + '\n[[include]]\nfile = "other.toml"\n'
    assert "'include' needs format" in problem(text, tmp_path)
