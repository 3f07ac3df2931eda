"""Open-loop load from many processes or machines, on Dask distributed.

    result = await run_distributed_load(spec, target, options, DaskCluster(local_workers=2))

One arrival plan (`sim.load.plan_load`, the same as a one-process run's for the same seed) is
split round-robin across the workers, with one common start time (wall clock: across machines,
their clocks must agree, e.g. by NTP). Each worker runs the ordinary open-loop generator
(`sim.load.open_loop`) inside `asyncio.run`, on its own operator identity (`load-1`, `load-2`,
..., at both parties), and watches both gateways with a Watch filtered by originator
(`WatchRequest.originators`: its own identity at both parties), so N workers do not each
receive every event. Each worker returns its counts, its histograms per stage x type x
precedence in HdrHistogram's encoding (merged here exactly, with `decode_and_add`), its
start-lag histogram, its CPU and the ids it journaled. The driver merges them, warns when a
worker's lag says it was saturated, runs the journal integrity check over every id, and hands
back one `RunResult` for the usual reports.

Workers need this package installed (same version) and the gateways reachable; the driver sends
them their operator certificates and keys (so a remote worker needs no PKI folder). Dask's own
traffic between scheduler, workers and driver is plain TCP unless the cluster is configured for
TLS (`tls://` addresses and Dask's `distributed.comm.tls` settings): its messages carry the
operator keys, so use TLS between machines.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certs.identity import trust_domain
from certs.pki import PartyPaths
from client.operator import OperatorClient
from sim.clock import VirtualClock
from sim.engine import Engine, Side, close_side
from sim.load import (
    CPU_WARN_PCT,
    LAG_WARN_MS,
    Arrival,
    LoadSpec,
    Payloads,
    open_loop,
    plan_load,
)
from sim.machine import CpuMeter
from sim.metrics import Metrics, new_histogram, summarize
from sim.runner import (
    RunOptions,
    RunResult,
    check_journals_in_scope,
    compare_through_api,
    exchange_checkpoints,
    message_rows,
    run_scope,
    tally,
)
from sim.target import Target

START_LEAD_S = 3.0  # the common start is this long after the shares are handed out


def worker_operators(count: int) -> list[str]:
    """The operator identities of `count` workers: load-1, load-2, ..."""
    return [f"load-{i}" for i in range(1, count + 1)]


def originator(party: str, operator: str) -> str:
    return f"spiffe://{trust_domain(party)}/operator/{operator}"


def split_plan(plan: Sequence[Arrival], workers: int) -> list[list[Arrival]]:
    """Round-robin shares: every worker sends at the plan's rate divided by `workers`, over the
    whole run, and the shares together are exactly the plan."""
    return [list(plan[i::workers]) for i in range(workers)]


@dataclass(frozen=True)
class Share:
    """What one worker is asked to do (picklable: Dask sends it to the worker)."""

    index: int
    operator: str
    parties: tuple[str, str]
    addresses: dict[str, str]
    # party -> (operator certificate, operator key, CA certificate), PEM bytes
    credentials: dict[str, tuple[bytes, bytes, bytes]]
    plan: list[Arrival]
    start_wall: float
    spec: LoadSpec
    seed: int
    drain_s: float


def run_share(share: Share) -> dict[str, Any]:
    """A Dask task: send one share of the plan and return what it measured (plain data)."""
    return asyncio.run(_run_share(share))


async def _run_share(share: Share) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hotline-load-") as folder:
        sides: dict[str, Side] = {}
        try:
            for party in share.parties:
                cert, key, ca = share.credentials[party]
                base = Path(folder) / party
                base.mkdir()
                (base / "operator.crt").write_bytes(cert)
                (base / "operator.key").write_bytes(key)
                (base / "ca.crt").write_bytes(ca)
                client = OperatorClient(
                    share.addresses[party],
                    cert=base / "operator.crt",
                    key=base / "operator.key",
                    ca=base / "ca.crt",
                    party=party,
                )
                await client.__aenter__()
                sides[party] = Side(party, share.addresses[party], [client])
            return await _send_share(share, sides)
        finally:
            for side in sides.values():
                await close_side(side)


async def _send_share(share: Share, sides: dict[str, Side]) -> dict[str, Any]:
    spec = share.spec
    engine = Engine(
        sides,
        VirtualClock(1.0),
        Metrics(seed=share.seed + share.index),
        originators=tuple(originator(p, share.operator) for p in share.parties),
    )
    payloads = Payloads(spec.payload_bytes, share.parties)
    for _offset, _sender, recipient, precedence, _answer in share.plan:
        payloads.template(recipient, precedence)
    lag = new_histogram()
    await engine.warm_up()
    await engine.start()
    links_up = await engine.wait_links_up(15.0)
    cpu = CpuMeter({}).start()
    t0 = time.monotonic() + (share.start_wall - time.time())
    late_start_s = max(0.0, time.monotonic() - t0)
    try:
        async with engine.clock:
            await open_loop(engine, share.plan, t0, payloads, lag, spec.think_s)
            while engine.running("send"):
                await asyncio.sleep(0.02)
            drained = await engine.drain(share.drain_s)
    finally:
        await engine.stop()
    simulator_cpu = cpu.stop().get("simulator", 0.0)
    steady_from = t0 + min(spec.ramp_s, spec.duration_s)
    end = t0 + spec.duration_s
    tracked = list(engine.tracked.values())
    rows = message_rows(engine)
    shift = engine.start_mono - t0  # rows' times from the common start, not this engine's
    for row in rows:
        row["at_s"] = round(row["at_s"] + shift, 4)
        row["worker"] = share.index
    metrics = engine.metrics
    return {
        "index": share.index,
        "operator": share.operator,
        "planned": len(share.plan),
        "counts": tally(engine),
        "metric_counts": dict(metrics.counts),
        "errors": dict(metrics.errors),
        "ack_levels": dict(metrics.ack_levels),
        "overdue": sorted(metrics.overdue),
        "realerts": sorted(metrics.realerts),
        "expired": sorted(metrics.expired),
        "histograms": metrics.encoded(),
        "lag": lag.encode().decode("ascii"),
        "lag_ms": summarize(lag),
        "late_start_ms": round(late_start_s * 1000.0, 3),
        "cpu_percent": simulator_cpu,
        "in_window": sum(1 for t in tracked if t.planned >= steady_from),
        "delivered_in_window": sum(
            1 for t in tracked if t.delivered is not None and steady_from <= t.delivered < end
        ),
        "journaled": [
            (t.message_id, t.sender, t.recipient) for t in tracked if t.journaled is not None
        ],
        "scope": sorted(run_scope(engine)),
        "rows": rows,
        "drained": drained,
        "links_up": links_up,
    }


@dataclass
class DaskCluster:
    """Where the workers are: an existing scheduler (`address`, e.g. tcp://host:8786) or a
    `LocalCluster` of `local_workers` processes on 127.0.0.1."""

    address: str = ""
    local_workers: int = 0

    def describe(self) -> str:
        return self.address or f"LocalCluster({self.local_workers} workers, 127.0.0.1)"


def _run_on_dask(cluster: DaskCluster, make_shares: Any) -> list[dict[str, Any]]:
    """Start or join the cluster, give one share to each worker, gather the results."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise RuntimeError(
            "distributed load needs Dask: pip install 'hotline[load]' (or `make load`)"
        ) from None
    local = None
    if cluster.address:
        client = Client(cluster.address, timeout=30)
    else:
        local = LocalCluster(
            n_workers=cluster.local_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        client = Client(local)
    try:
        workers = sorted(client.scheduler_info()["workers"])
        if not workers:
            raise RuntimeError(f"the Dask scheduler at {cluster.address} has no workers")
        shares: list[Share] = make_shares(len(workers))
        futures = [
            client.submit(run_share, share, workers=[worker], pure=False, allow_other_workers=False)
            for share, worker in zip(shares, workers, strict=True)
        ]
        results: list[dict[str, Any]] = client.gather(futures)
        for result, worker in zip(results, workers, strict=True):
            result["worker"] = worker
        return results
    finally:
        client.close()
        if local is not None:
            local.close()


def count_workers(address: str) -> int:
    """How many workers the Dask scheduler at `address` has (to issue them identities)."""
    from distributed import Client

    client = Client(address, timeout=30)
    try:
        return len(client.scheduler_info()["workers"])
    finally:
        client.close()


def _credentials(pki: Path, parties: tuple[str, str], name: str) -> dict[str, Any]:
    found = {}
    for party in parties:
        paths = PartyPaths.of(pki, party)
        found[party] = (
            paths.operator_cert(name).read_bytes(),
            paths.operator_key(name).read_bytes(),
            paths.ca_cert.read_bytes(),
        )
    return found


async def run_distributed_load(
    spec: LoadSpec,
    target: Target,
    sides: dict[str, Side],
    options: RunOptions,
    cluster: DaskCluster,
    *,
    name: str = "",
) -> RunResult:
    """One load run split over Dask workers; `sides` is the driver's own connection (used for
    the checkpoint exchange and link events, and for the integrity check through the API when
    the journals cannot be read)."""
    plan = plan_load(spec, target.parties, options.seed)
    # The driver watches only link and checkpoint events: its filter names its own identity,
    # which sends nothing.
    driver = Engine(
        sides,
        VirtualClock(1.0),
        Metrics(seed=options.seed),
        originators=tuple(originator(p, "driver-sends-nothing") for p in target.parties),
    )
    await driver.start()
    warnings: list[str] = []
    cpu = CpuMeter(target.gateway_pids()).start()
    started_wall = time.time()
    start_wall = 0.0

    def make_shares(count: int) -> list[Share]:
        nonlocal start_wall
        start_wall = time.time() + START_LEAD_S
        names = worker_operators(count)
        return [
            Share(
                index=i + 1,
                operator=names[i],
                parties=target.parties,
                addresses=dict(target.addresses),
                credentials=_credentials(target.pki, target.parties, names[i]),
                plan=part,
                start_wall=start_wall,
                spec=spec,
                seed=options.seed,
                drain_s=options.drain_s,
            )
            for i, part in enumerate(split_plan(plan, count))
        ]

    try:
        options.echo(f"load: {len(plan)} messages planned, split over {cluster.describe()}")
        shares = await asyncio.to_thread(_run_on_dask, cluster, make_shares)
        end_wall = time.time()
        await exchange_checkpoints(driver, options, warnings)
    finally:
        await driver.stop()
    cpu_result = cpu.stop()

    metrics = driver.metrics  # its link windows; the workers' measurements are merged in
    counts: Counter[str] = Counter()
    lag = new_histogram()
    scope: set[str] = set()
    journaled: list[tuple[str, str, str]] = []
    rows: list[dict[str, Any]] = []
    workers = []
    for share in sorted(shares, key=lambda s: s["index"]):
        metrics.add_encoded(share["histograms"])
        metrics.counts.update(share["metric_counts"])
        metrics.errors.update(share["errors"])
        metrics.ack_levels.update(share["ack_levels"])
        metrics.overdue.update(share["overdue"])
        metrics.realerts.update(share["realerts"])
        metrics.expired.update(share["expired"])
        counts.update(share["counts"])
        lag.decode_and_add(share["lag"])
        scope.update(share["scope"])
        journaled.extend(tuple(j) for j in share["journaled"])
        rows.extend(share["rows"])
        who = f"worker {share['index']} ({share['worker']}, {share['operator']})"
        if share["lag_ms"]["p99"] > LAG_WARN_MS:
            warnings.append(
                f"{who} started sends up to {share['lag_ms']['p99']:g} ms late (p99): it (or its "
                "machine) was saturated, and offered less than its share of the plan on time"
            )
        if share["cpu_percent"] > CPU_WARN_PCT:
            warnings.append(
                f"{who} used {share['cpu_percent']:.0f}% of a core: it may be saturated"
            )
        if share["late_start_ms"] > 0:
            warnings.append(f"{who} was ready {share['late_start_ms']:g} ms after the common start")
        if not share["links_up"]:
            warnings.append(f"{who}: the peer link was not up in both directions at its start")
        if not share["drained"]:
            warnings.append(f"{who}: messages were still unsettled after the drain")
        workers.append(
            {
                "index": share["index"],
                "worker": share["worker"],
                "operator": share["operator"],
                "planned": share["planned"],
                "journaled": share["counts"].get("journaled", 0),
                "delivered": share["counts"].get("delivered", 0),
                "generator_lag_ms": share["lag_ms"],
                "cpu_percent": share["cpu_percent"],
                # its own delivery histogram, as it sent it: the merged one is their sum
                "delivered_histogram": share["histograms"].get("delivered", ""),
            }
        )
    rows.sort(key=lambda row: row["at_s"])
    if target.journals:
        integrity = await check_journals_in_scope(target, scope, verify=options.verify)
    else:
        integrity = await compare_through_api(target, sides, journaled)

    steady_s = max(spec.duration_s - min(spec.ramp_s, spec.duration_s), 1e-9)
    lag_stats = summarize(lag)
    load_info: dict[str, Any] = {
        **spec.describe(),
        "planned": len(plan),
        "offered_per_s": round(sum(s["in_window"] for s in shares) / steady_s, 2),
        "achieved_per_s": round(sum(s["delivered_in_window"] for s in shares) / steady_s, 2),
        "generator_lag_ms": lag_stats,
        "generator_cpu_percent": max((w["cpu_percent"] for w in workers), default=0.0),
        "operators_per_side": len(workers),
        "workers": workers,
        "cluster": cluster.describe(),
    }
    last = max(
        (r["at_s"] + r["delivered_ms"] / 1000.0 for r in rows if r["delivered_ms"] is not None),
        default=0.0,
    )
    result = RunResult(
        kind="load",
        name=name or f"load-{spec.rate:g}-x{len(workers)}",
        title=(
            f"Open-loop load, {spec.rate:g} messages/s for {spec.duration_s:g} s "
            f"from {len(workers)} workers"
        ),
        metrics=metrics,
        integrity=integrity,
        config={
            **spec.describe(),
            "seed": options.seed,
            "drain_s": options.drain_s,
            "target": "own pair" if target.owned else target.addresses,
            "workers": cluster.describe(),
        },
        started_wall=started_wall,
        wall_s=end_wall - started_wall,
        active_s=max(float(last), 1e-6),
        counts=dict(counts),
        warnings=warnings,
        cpu={**cpu_result, **{f"worker-{w['index']}": w["cpu_percent"] for w in workers}},
        extra={
            "load": load_info,
            "link_down_s": metrics.link_down_seconds(end_wall),
            "axis": {"origin_wall": start_wall},
        },
        messages=rows,
        drained=all(s["drained"] for s in shares),
    )
    result.check(options.thresholds)
    return result
