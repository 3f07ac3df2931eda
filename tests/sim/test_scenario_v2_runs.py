"""Format 2 scenarios replayed against two real gateway processes (mTLS, SQLite, fault
proxies): a trigger on the link coming back after a fault, answers and re-sends kept in
timeline order at max speed, per-repetition labels and bursts, an expected refusal of a
reference to a literal id, and expectations that turn the verdict."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from sim.engine import Side
from sim.runner import RunOptions, RunResult, run_scenario
from sim.scenario import parse_scenario
from sim.target import Target

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

HEAD = """\
format = "hotline-scenario/2"
name = "{name}"
title = "Test"

[defaults]
think = {{ dist = "fixed", s = 2 }}
answer = {{ roger = 1.0 }}
"""

FREE_TEXT = """\
type = "free_text"
fields.subject = "Subject"
fields.text = "Text"
"""


def scenario_text(name: str, body: str) -> str:
    return HEAD.format(name=name) + body


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateways(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Target, dict[str, Side]]]:
    target = await Target.start_pair(tmp_path_factory.mktemp("sim-v2"), proxies=True)
    sides = await target.connect(1)
    try:
        yield target, sides
    finally:
        await target.disconnect(sides)
        await target.stop()


async def replay(
    gateways: tuple[Target, dict[str, Side]],
    text: str,
    *,
    speed: float | None = None,
    drain_s: float = 30.0,
) -> RunResult:
    target, sides = gateways
    scenario = parse_scenario(text, source="test.toml")
    return await run_scenario(
        scenario, target, sides, RunOptions(speed=speed, seed=5, drain_s=drain_s, progress_s=0)
    )


def by_label(result: RunResult) -> dict[str, dict[str, object]]:
    return {row["label"]: row for row in result.messages if row["label"]}


async def test_a_trigger_on_link_up_after_a_fault_fires_once_the_link_is_back(
    gateways: tuple[Target, dict[str, Side]],
) -> None:
    # At max speed the outage lasts 2 s of wall time; the event armed when the link was cut
    # is sent only once JP's push link to TW is reported up again.
    text = scenario_text(
        "link-back",
        f"""
[[event]]
at = 0
from = "JP"
id = "BEFORE"
{FREE_TEXT}
[[event]]
at = 1
when = "link JP->TW up"
from = "JP"
id = "BACK"
answer = "roger"
expect = {{ answer = "roger" }}
{FREE_TEXT}
[[fault]]
at = 1
kind = "drop"
target = "JP->TW"
wall_duration_s = 2
""",
    )
    result = await replay(gateways, text)
    assert result.ok, [t.describe() for t in result.thresholds] + result.warnings
    assert result.counts["untriggered"] == 0
    assert [f.outcome for f in result.faults] == ["applied", "lifted"]
    lifted = result.faults[1].wall
    windows = [w for w in result.metrics.link_windows if w.direction == "JP->TW"]
    assert windows, "the cut was reported"
    assert windows[0].up is not None
    back = by_label(result)["BACK"]
    # BACK was planned after the link came back up (and so after the fault was lifted)
    origin = result.extra["axis"]["origin_wall"]
    assert origin + float(back["at_s"]) >= windows[0].up - 0.05  # type: ignore[arg-type]
    assert origin + float(back["at_s"]) >= lifted - 0.05  # type: ignore[arg-type]
    assert result.integrity.ok


async def test_at_max_speed_an_answer_and_its_resend_come_before_a_later_event(
    gateways: tuple[Target, dict[str, Side]],
) -> None:
    # QUERY is answered SAY_AGAIN 30 s (scenario time) after it is sent; its re-send (labelled
    # QUERY-AGAIN, with its own answer table) goes 5 s later. The CANCEL at t = 100 and the
    # event triggered by the re-send's answer must come after both, in both journals' order.
    text = scenario_text(
        "ordered",
        f"""
[[event]]
at = 0
from = "JP"
id = "QUERY"
think = 30
answer = "say_again"
resend = {{ id = "QUERY-AGAIN", answer = {{ wilco = 1.0 }}, think = 1 }}
expect = {{ answer = "say_again" }}
{FREE_TEXT}
[[event]]
at = 0
from = "TW"
id = "TICK"
repeat = {{ count = 3, every_s = 40 }}
answer = "none"
{FREE_TEXT}
[[event]]
after = "QUERY-AGAIN acknowledged"
from = "TW"
id = "FOLLOW-UP"
refs = ["QUERY-AGAIN", "TICK#1"]
answer = "none"
{FREE_TEXT}
[[event]]
at = 100
from = "JP"
id = "WITHDRAW"
action = "cancel"
refs = ["QUERY"]
answer = "none"
{FREE_TEXT}""",
    )
    result = await replay(gateways, text)
    assert result.ok, [t.describe() for t in result.thresholds] + result.warnings
    rows = by_label(result)
    assert {"QUERY", "QUERY-AGAIN", "FOLLOW-UP", "WITHDRAW", "TICK#1", "TICK#3"} <= set(rows)
    assert rows["QUERY"]["answer"] == "SAY_AGAIN"
    assert rows["QUERY-AGAIN"]["answer"] == "WILCO"  # the re-send's own answer table
    assert rows["QUERY-AGAIN"]["resend_of"] == rows["QUERY"]["id"]
    # Timeline order, which max speed used to break: QUERY and TICK#1 (t=0), QUERY's SAY_AGAIN
    # (t=30), TICK#2 (t=40), the re-send (t=60: the sender's think time, 30 s, after the
    # answer), its WILCO (t=61) and the follow-up it triggers, TICK#3 (t=80), WITHDRAW
    # (t=100). Planned times follow it because each starts only once what the timeline put
    # before it is journaled (and answered, where the answer comes first).
    order = sorted(rows, key=lambda label: float(rows[label]["at_s"]))  # type: ignore[arg-type]
    assert set(order[:2]) == {"QUERY", "TICK#1"}
    assert order[2:] == ["TICK#2", "QUERY-AGAIN", "FOLLOW-UP", "TICK#3", "WITHDRAW"]
    # the answer and the re-send were journaled before the CANCEL was even started
    again, withdraw = rows["QUERY-AGAIN"], rows["WITHDRAW"]
    assert float(again["at_s"]) + float(again["journaled_ms"]) / 1000 <= float(withdraw["at_s"])  # type: ignore[arg-type]


async def test_a_reference_to_a_literal_id_is_refused_as_the_scenario_expects(
    gateways: tuple[Target, dict[str, Side]],
) -> None:
    text = scenario_text(
        "refusal",
        f"""
[[event]]
at = 0
from = "JP"
id = "GHOST-CANCEL"
action = "cancel"
refs = ["id:01900000-0000-7000-8000-000000000000"]
expect = {{ refused = "not_found" }}
{FREE_TEXT}
[[event]]
at = 1
from = "TW"
id = "NORMAL"
{FREE_TEXT}""",
    )
    result = await replay(gateways, text)
    assert result.ok, [t.describe() for t in result.thresholds] + result.warnings
    assert result.counts["refused_as_expected"] == 1
    assert result.counts["send_errors"] == 0
    assert sum(result.metrics.errors.values()) == 0
    assert by_label(result)["GHOST-CANCEL"]["flags"] == ["refused"]


async def test_unmet_expectations_and_a_trigger_that_never_fires_fail_the_run(
    gateways: tuple[Target, dict[str, Side]],
) -> None:
    text = scenario_text(
        "unmet",
        f"""
[[event]]
at = 0
from = "JP"
id = "BURST"
burst = 5
answer = "roger"
expect = {{ answer = "wilco", delivered_s = 30 }}
{FREE_TEXT}
[[event]]
at = 0
when = "link TW->JP down"
from = "TW"
{FREE_TEXT}""",
    )
    result = await replay(gateways, text, drain_s=3.0)  # (the trigger is waited for this long)
    assert not result.ok
    failed = {t.threshold.text: t for t in result.thresholds if not t.passed}
    answer = failed["expect BURST: answer WILCO (messages otherwise ==0)"]
    assert answer.measured == 5  # all five of the burst were answered ROGER
    assert "untriggered==0" in failed
    assert any("was never sent" in w for w in result.warnings)
    passed = [t.threshold.text for t in result.thresholds if t.passed]
    assert "expect BURST: delivered within 30 s" in passed
    assert {f"BURST#{n}" for n in range(1, 6)} <= set(by_label(result))
    assert result.integrity.ok
