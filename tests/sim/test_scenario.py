"""Scenario files: every built-in loads and validates; each kind of mistake is refused with the
file and line where it was made."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from hotline.v1 import common_pb2
from sim.scenario import (
    FORMAT,
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
        (edit(f'format = "{FORMAT}"', 'format = "hotline-scenario/9"'), "bad.toml:1: format"),
        (edit(f'format = "{FORMAT}"\n', ""), "bad.toml:1: missing `format"),
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
