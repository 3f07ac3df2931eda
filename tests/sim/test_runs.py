"""Every built-in scenario replayed against two real gateway processes (real mTLS, real SQLite,
fault proxies), each ending with both journals proving nothing lost, duplicated, reordered or
forged (the run ending with a checkpoint exchange the check compares), and a link failure
mid-incident that still ends with zero.

One pair of gateways serves all the scenario replays (a replay only ever adds to the journals,
and the integrity check covers the whole of both journals each time)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from sim.engine import Side
from sim.runner import RunOptions, run_scenario
from sim.scenario import builtin_names, load_scenario
from sim.target import Target

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

FAULT_SCENARIO = "link-failure-mid-incident"
QUICK = [name for name in builtin_names() if name != FAULT_SCENARIO]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateways(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Target, dict[str, Side]]]:
    target = await Target.start_pair(tmp_path_factory.mktemp("sim-pair"), proxies=True)
    sides = await target.connect(1)
    try:
        yield target, sides
    finally:
        await target.disconnect(sides)
        await target.stop()


def assert_clean(result: object) -> None:
    from sim.runner import RunResult

    assert isinstance(result, RunResult)
    integrity = result.integrity
    assert integrity.ok, integrity.to_json()
    for kind in ("lost", "duplicated", "reordered", "forged"):
        assert integrity.total(kind) == 0, kind
    assert all(info["ok"] for info in integrity.journals.values()), integrity.journals
    # the run ends with a checkpoint exchange covering it, and the check compared it
    assert all(info["checkpoints_matched"] > 0 for info in integrity.journals.values())
    assert not any("checkpoint" in w for w in result.warnings), result.warnings
    assert not integrity.notes, integrity.notes
    counts = result.counts
    assert counts["send_errors"] == 0, result.metrics.errors
    assert counts["rejected"] == 0
    assert counts["journaled"] == counts["planned"] == counts["delivered"]
    assert counts["acknowledged"] == counts["acks_expected"]  # every scripted answer came
    assert result.drained


@pytest.mark.parametrize("name", QUICK)
async def test_a_builtin_scenario_replays_at_max_speed_with_nothing_lost(
    name: str, gateways: tuple[Target, dict[str, Side]]
) -> None:
    target, sides = gateways
    scenario = load_scenario(name)
    result = await run_scenario(
        scenario, target, sides, RunOptions(speed=None, seed=11, drain_s=30, progress_s=0)
    )
    assert_clean(result)
    assert result.counts["planned"] >= scenario.message_count


async def test_a_link_failure_mid_incident_still_ends_with_nothing_lost(
    gateways: tuple[Target, dict[str, Side]],
) -> None:
    target, sides = gateways
    scenario = load_scenario(FAULT_SCENARIO)
    # At 5x the faults still last in real time: a 6 s outage, a 2 s stall past the 2 s
    # heartbeat deadline, and a SIGKILL of JP's gateway with a restart a second later.
    result = await run_scenario(
        scenario, target, sides, RunOptions(speed=5.0, seed=3, drain_s=45, progress_s=0)
    )
    assert_clean(result)
    outcomes = [f.outcome for f in result.faults]
    assert outcomes.count("applied") == 3
    assert outcomes.count("lifted") == 3
    assert result.extra["link_down_s"]["any"] > 1.0
    # the messages submitted while the link was cut waited for it, then all arrived
    assert result.metrics.total("delivered").get_max_value() > 1_000_000  # > 1 s, in µs
