"""Load split over Dask workers: the plan is shared out exactly, each worker's histograms merge
exactly into the run's, and a two-worker LocalCluster run against two real gateway processes
(mTLS, SQLite) ends with both journals proving nothing lost, duplicated, reordered or forged."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sim.load import LoadSpec, plan_load
from sim.metrics import Metrics, new_histogram, percentiles
from sim.runner import RunOptions

PARTIES = ("JP", "TW")


def test_the_shares_of_a_plan_are_exactly_the_plan() -> None:
    from sim.distributed import split_plan

    plan = plan_load(LoadSpec(rate=50, duration_s=4, ack_fraction=0.3), PARTIES, seed=3)
    shares = split_plan(plan, 3)
    assert sorted(a for share in shares for a in share) == sorted(plan)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    # and the plan itself is the same whoever sends it: same seed, same plan
    assert plan == plan_load(LoadSpec(rate=50, duration_s=4, ack_fraction=0.3), PARTIES, seed=3)


def test_encoded_histograms_from_other_processes_merge_exactly() -> None:
    rng = random.Random(9)
    parts = [Metrics(seed=i) for i in range(3)]
    for metrics in parts:
        for _ in range(500):
            metrics.record("delivered", "free_text", 1, rng.lognormvariate(-4, 1))
    merged = Metrics()
    for metrics in parts:
        merged.add_encoded(metrics.encoded())
    direct = new_histogram()
    for metrics in parts:
        direct.add(metrics.total("delivered"))
    for histogram in (merged.total("delivered"), merged.histograms[("delivered", "free_text", 1)]):
        assert histogram.get_total_count() == 1500
        wanted = (50.0, 90.0, 99.0, 99.9, 100.0)
        assert percentiles(histogram, wanted) == percentiles(direct, wanted)


@pytest.mark.slow
async def test_two_local_workers_share_a_run_and_their_results_merge_exactly(
    tmp_path: Path,
) -> None:
    pytest.importorskip("distributed")
    from sim.distributed import DaskCluster, run_distributed_load, worker_operators
    from sim.target import UNLIMITED, Target

    spec = LoadSpec(rate=20, duration_s=3, ack_fraction=0.5)
    target = await Target.start_pair(
        tmp_path, proxies=False, settings=UNLIMITED, extra_operators=worker_operators(2)
    )
    try:
        sides = await target.connect(1)
        try:
            result = await run_distributed_load(
                spec,
                target,
                sides,
                RunOptions(seed=4, drain_s=30, progress_s=0, echo=lambda _: None),
                DaskCluster(local_workers=2),
            )
        finally:
            await target.disconnect(sides)
    finally:
        await target.stop()

    plan = plan_load(spec, target.parties, seed=4)
    workers = result.extra["load"]["workers"]
    assert len(workers) == 2
    assert {w["operator"] for w in workers} == {"load-1", "load-2"}
    # the merged count is the sum of the shares, and the shares are the plan
    assert sum(w["planned"] for w in workers) == len(plan) == result.counts["planned"]
    assert result.counts["delivered"] == sum(w["delivered"] for w in workers) == len(plan)
    # each worker saw every delivery of its own messages through its filtered Watch
    assert all(w["delivered"] == w["planned"] for w in workers)
    assert result.counts["acknowledged"] == result.counts["acks_expected"]
    # histograms merge exactly: the run's is the sum of the workers' own, and agrees with the
    # raw per-message latencies they reported
    merged = result.metrics.total("delivered")
    summed = new_histogram()
    for worker in workers:
        summed.decode_and_add(worker["delivered_histogram"])
    wanted = (0.0, 50.0, 90.0, 99.0, 100.0)
    assert merged.get_total_count() == summed.get_total_count() == len(plan)
    assert percentiles(merged, wanted) == percentiles(summed, wanted)
    latencies = [row["delivered_ms"] for row in result.messages if row["delivered_ms"] is not None]
    assert len(latencies) == len(plan)
    assert merged.get_max_value() == pytest.approx(max(latencies) * 1000, rel=0.002)
    assert {row["worker"] for row in result.messages} == {1, 2}
    assert len({row["id"] for row in result.messages}) == len(plan)
    # the journal integrity check covers every message both workers sent
    assert result.integrity.ok, result.integrity.to_json()
    assert all(info["checkpoints_matched"] > 0 for info in result.integrity.journals.values())
    assert result.integrity.total("lost") == 0
