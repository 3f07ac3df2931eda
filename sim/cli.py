"""`hotline sim`: replay scenarios, generate load, benchmark the delivery path.

    hotline sim list                                  the built-in scenarios
    hotline sim check FILE...                         validate scenario files (file:line errors)
    hotline sim run SCENARIO... [--speed N|max]       replay scenarios against a fresh pair
    hotline sim load --rate 200 --duration 30         open-loop synthetic load (or --sweep)
    hotline sim bench [--duration 60]                 hot line vs gRPC echo and brokers; link

By default `run` and `load` start their own pair of gateways (fresh certificates, free ports,
fault proxies on both links) in a temporary folder. With `--target-jp`, `--target-tw` and
`--pki` they drive gateways that already run; faults that need the proxies or the processes
are then skipped with a warning, and the integrity check reads the journals only if they are
named (`--journal-jp`, `--journal-tw`), otherwise it compares records over the operator API.

Thresholds (`--slo delivered.p99<50ms --slo flash.delivered.p99<20ms --slo errors==0`, and a
scenario file's `slo` list; grammar in `sim.slo`) join the integrity check in the verdict.
Raw exports: `--hgrm DIR` (HdrHistogram percentile distributions), `--csv FILE` (one row per
message); the JSON report carries every histogram encoded.

Exit status: 0 when every run passed (integrity and thresholds), 1 when any found a message
lost, duplicated, reordered or forged (or a journal failed verification) or missed a
threshold, 2 for bad arguments or scenario files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shlex
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hotline.errors import ConfigError
from sim.clock import parse_speed
from sim.scenario import (
    FaultSpec,
    Scenario,
    ScenarioError,
    builtin_names,
    load_scenario,
    parse_fault_option,
    speed_hint,
)
from sim.slo import parse_thresholds


def _echo(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def register(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n")[0] if __doc__ else None
    sub = parser.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: _usage(parser))

    listing = sub.add_parser("list", help="list the built-in scenarios")
    listing.set_defaults(func=cmd_list)

    check = sub.add_parser("check", help="validate scenario files or built-in names")
    check.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    check.set_defaults(func=cmd_check)

    run = sub.add_parser(
        "run",
        help="replay scenarios (built-in names or .toml paths) and check integrity",
        description="Replay scenarios against two gateways, measure latency and "
        "acknowledgement, and prove from both journals that nothing was lost.",
    )
    run.add_argument("scenarios", nargs="+", metavar="SCENARIO")
    run.add_argument(
        "--speed",
        default="1",
        help="scenario seconds per wall second: a number, or 'max' for as fast as possible "
        "(default 1, real time)",
    )
    _common(run)
    run.set_defaults(func=cmd_run)

    load = sub.add_parser(
        "load",
        help="open-loop synthetic load at a planned arrival rate (or a sweep of rates)",
        description="Synthetic traffic at an open-loop arrival rate: send times are planned in "
        "advance and latency counts from the planned time (no coordinated omission).",
    )
    load.add_argument("--rate", type=float, default=100.0, help="messages per second (100)")
    load.add_argument("--duration", type=float, default=10.0, help="seconds of load (10)")
    load.add_argument("--ramp", type=float, default=0.0, help="seconds to ramp up from 0 (0)")
    load.add_argument(
        "--arrival", choices=("poisson", "constant"), default="poisson", help="(poisson)"
    )
    load.add_argument(
        "--precedence-mix",
        default="flash=0.05,immediate=0.15,priority=0.3,routine=0.5",
        help="weights per precedence (default %(default)s)",
    )
    load.add_argument("--payload-bytes", type=int, default=300, help="envelope size (300)")
    load.add_argument("--ack", type=float, default=0.0, help="fraction acknowledged (0)")
    load.add_argument("--think", type=float, default=0.0, help="seconds before answering (0)")
    load.add_argument("--direction", default="both", help="JP->TW, TW->JP or both (both)")
    load.add_argument(
        "--sweep",
        help="comma-separated rates to run in turn (e.g. 100,200,400,800): reports the "
        "latency-versus-load curve and the saturation point",
    )
    load.add_argument("--operators", type=int, default=4, help="operator connections per side (4)")
    where = load.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        metavar="ADDRESS",
        help="split the load over the workers of this Dask scheduler (tcp://host:8786), each "
        "on its own operator identity load-1, load-2, ... (needs the `load` extra)",
    )
    where.add_argument(
        "--local-workers",
        type=int,
        metavar="N",
        help="split the load over N worker processes of a Dask LocalCluster on 127.0.0.1",
    )
    _common(load)
    load.set_defaults(func=cmd_load)

    bench = sub.add_parser(
        "bench",
        help="the delivery path against a plain gRPC echo and durable brokers over the same mTLS",
        description="Baseline gRPC bidi-stream echo and like-for-like brokers (NATS JetStream "
        "with fsync per ack, with the `bench` extra; a RabbitMQ quorum queue with publisher "
        "confirms, if rabbitmq-server is installed) vs the hot line's Send → DELIVERED path, "
        "latency at one in flight and maximum throughput; FLASH latency on an idle link and "
        "behind a draining ROUTINE backlog; the peer link's drain rate alone; CPU per "
        "delivered message per process; on this machine.",
    )
    bench.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds of timed measuring (60); the precedence rounds and the link drain are "
        "counted in messages and add to it (scaled down below 20)",
    )
    bench.add_argument("--payload-bytes", type=int, default=300, help="payload size (300)")
    bench.add_argument("--json", type=Path, metavar="FILE", help="write the figures as JSON")
    bench.add_argument("--workdir", type=Path, help="keep the PKI and journals here")
    bench.set_defaults(func=cmd_bench)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=1, help="random seed (1)")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help='a fault, e.g. "at=5,kind=drop,target=JP->TW,duration_s=3" (repeatable); kinds: '
        "delay, jitter, bandwidth, stall, resume, drop, refuse, kill, restart",
    )
    p.add_argument("--drain", type=float, default=30.0, help="seconds to wait for delivery (30)")
    p.add_argument("--progress", type=float, default=5.0, help="seconds between progress lines")
    p.add_argument(
        "--slo",
        action="append",
        default=[],
        metavar="THRESHOLD",
        help="a threshold the verdict also needs, e.g. delivered.p99<50ms, "
        "flash.delivered.p99<20ms, errors==0, ack_ratio>=99%% (repeatable)",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON")
    p.add_argument(
        "--hgrm", type=Path, metavar="DIR", help="write HdrHistogram .hgrm files into DIR"
    )
    p.add_argument("--csv", type=Path, metavar="FILE", help="write every message's latencies")
    p.add_argument("--html", type=Path, metavar="FILE", help="write a self-contained HTML report")
    p.add_argument("--workdir", type=Path, help="start the pair here (kept afterwards)")
    p.add_argument("--target-jp", metavar="ADDR", help="drive this JP gateway (host:port)")
    p.add_argument("--target-tw", metavar="ADDR", help="drive this TW gateway (host:port)")
    p.add_argument("--pki", type=Path, help="PKI folder with the operator certificates")
    p.add_argument("--operator", default="watch-1", help="operator name for --target-* runs")
    p.add_argument("--journal-jp", type=Path, help="JP's journal file, for the integrity check")
    p.add_argument("--journal-tw", type=Path, help="TW's journal file, for the integrity check")
    p.add_argument("--no-verify", action="store_true", help="skip signature verification")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


# ---------------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    for name in builtin_names():
        try:
            scenario = load_scenario(name)
        except ScenarioError as exc:
            print(f"{name:<30} BROKEN: {exc}")
            continue
        faults = f", {len(scenario.faults)} faults" if scenario.faults else ""
        print(
            f"{name:<30} {scenario.message_count:>4} messages over "
            f"{_span(scenario.duration_s):>8}{faults}  {scenario.title}"
        )
    return 0


def _span(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:g} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:g} s"


def cmd_check(args: argparse.Namespace) -> int:
    failed = 0
    for name in args.scenarios:
        try:
            scenario = load_scenario(name)
        except ScenarioError as exc:
            print(exc, file=sys.stderr)
            failed += 1
            continue
        print(f"{scenario.source}: ok ({scenario.message_count} messages, {scenario.name})")
    return 2 if failed else 0


def _parse_faults(specs: list[str]) -> list[FaultSpec]:
    return [parse_fault_option(text) for text in specs]


def _command() -> str:
    return "hotline " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@contextlib.contextmanager
def _workdir(args: argparse.Namespace) -> Iterator[Path]:
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        yield args.workdir
        return
    with tempfile.TemporaryDirectory(prefix="hotline-sim-") as tmp:
        yield Path(tmp)


def _external(args: argparse.Namespace) -> bool:
    given = [args.target_jp, args.target_tw]
    if any(given) and not all(given):
        raise ConfigError("--target-jp and --target-tw go together")
    if all(given) and args.pki is None:
        raise ConfigError("--target-jp/--target-tw need --pki (the operator certificates)")
    return all(given)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        speed = parse_speed(args.speed)
        scenarios = [load_scenario(name) for name in args.scenarios]
        faults = _parse_faults(args.fault)
        external = _external(args)
        args.thresholds = parse_thresholds(args.slo)
    except (ValueError, ConfigError) as exc:
        print(f"hotline sim run: {exc}", file=sys.stderr)
        return 2
    _logging(args)
    for scenario in scenarios:
        hint = speed_hint(scenario, speed)
        if hint:
            _echo(hint)
    return asyncio.run(_run(args, scenarios, speed, faults, external))


async def _run(
    args: argparse.Namespace,
    scenarios: list[Scenario],
    speed: float | None,
    faults: list[FaultSpec],
    external: bool,
) -> int:
    from sim.report import document, html_report, terminal_summary, write_html, write_json
    from sim.runner import RunOptions, RunResult, run_scenario

    options = RunOptions(
        speed=speed,
        seed=args.seed,
        drain_s=args.drain,
        progress_s=0 if args.quiet else args.progress,
        extra_faults=tuple(faults),
        verify=not args.no_verify,
        echo=_echo,
        thresholds=tuple(args.thresholds),
    )
    results: list[RunResult] = []
    with _workdir(args) as workdir:
        target = await _target(args, workdir, external, operators=1, speed=speed)
        try:
            sides = await target.connect(1)
            try:
                for scenario in scenarios:
                    _echo(
                        f"running {scenario.name}: {scenario.message_count} messages over "
                        f"{_span(scenario.duration_s)} of scenario time at speed "
                        f"{'max' if speed is None else f'{speed:g}'}"
                    )
                    result = await run_scenario(scenario, target, sides, options)
                    results.append(result)
                    print(terminal_summary(result), flush=True)
            finally:
                await target.disconnect(sides)
        finally:
            await target.stop()
    return _write_reports(args, results, document, html_report, write_json, write_html)


def _write_reports(
    args: argparse.Namespace,
    results: list[Any],
    document: Any,
    html_report: Any,
    write_json: Any,
    write_html: Any,
    *,
    extra: dict[str, Any] | None = None,
    title: str = "",
) -> int:
    from sim.report import write_csv, write_hgrm

    command = _command()
    sweep = bool(extra and extra.get("sweep"))
    if args.json is not None:
        doc = document(results, command=command, merge=not sweep)
        if extra:
            doc.update(extra)
        write_json(args.json, doc)
        _echo(f"wrote {args.json}")
    if args.html is not None:
        write_html(args.html, html_report(results, title=title, command=command, sweep=extra))
        _echo(f"wrote {args.html}")
    if args.hgrm is not None:
        written = write_hgrm(args.hgrm, results)
        _echo(f"wrote {len(written)} .hgrm files into {args.hgrm}")
    if args.csv is not None:
        rows = write_csv(args.csv, results)
        _echo(f"wrote {args.csv} ({rows} messages)")
    failed = [r for r in results if not r.ok]
    if failed:
        _echo(
            "FAILED: "
            + ", ".join(
                f"{r.name} ("
                + " and ".join(
                    why
                    for why, bad in (
                        ("integrity", not r.integrity.ok),
                        ("thresholds", not all(t.passed for t in r.thresholds)),
                    )
                    if bad
                )
                + ")"
                for r in failed
            )
        )
        return 1
    return 0


async def _target(
    args: argparse.Namespace,
    workdir: Path,
    external: bool,
    *,
    operators: int,
    speed: float | None = None,
    settings: dict[str, Any] | None = None,
    extra_operators: Sequence[str] = (),
) -> Any:
    from hotline.deadlines import DEFAULT_DEADLINES_S, NAMES
    from sim.target import Target

    if external:
        journals = {}
        if args.journal_jp:
            journals["JP"] = args.journal_jp
        if args.journal_tw:
            journals["TW"] = args.journal_tw
        if len(journals) == 1:
            _echo("warning: only one journal named; comparing over the operator API")
            journals = {}
        return Target.external(
            {"JP": args.target_jp, "TW": args.target_tw},
            pki=args.pki,
            operators=[args.operator],
            journals=journals or None,
        )
    # Acknowledgement deadlines scale with the replay speed, so that "overdue" means overdue
    # in scenario time (at max speed they keep their real values).
    deadlines = None
    if speed is not None and speed != 1.0:
        deadlines = {name: DEFAULT_DEADLINES_S[int(p)] / speed for p, name in NAMES.items()}
    _echo(f"starting a gateway pair in {workdir} ...")
    return await Target.start_pair(
        workdir,
        proxies=True,
        operators=operators,
        settings=settings,
        deadlines=deadlines,
        extra_operators=extra_operators,
    )


def cmd_load(args: argparse.Namespace) -> int:
    from sim.load import LoadSpec, parse_mix

    try:
        mix = parse_mix(args.precedence_mix)
        faults = _parse_faults(args.fault)
        external = _external(args)
        rates = (
            [float(r) for r in args.sweep.split(",") if r.strip()] if args.sweep else [args.rate]
        )
        if not rates or any(r <= 0 for r in rates):
            raise ValueError("rates must be positive")
        if not 0 <= args.ack <= 1:
            raise ValueError("--ack is a fraction between 0 and 1")
        if args.duration <= 0 or args.ramp < 0 or args.ramp > args.duration:
            raise ValueError("--duration must be positive and --ramp within it")
        if args.payload_bytes < 64:
            raise ValueError("--payload-bytes must be at least 64")
        if args.local_workers is not None and not 1 <= args.local_workers <= 64:
            raise ValueError("--local-workers must be 1..64")
        args.thresholds = parse_thresholds(args.slo)
    except (ValueError, ConfigError) as exc:
        print(f"hotline sim load: {exc}", file=sys.stderr)
        return 2
    _logging(args)
    specs = [
        LoadSpec(
            rate=rate,
            duration_s=args.duration,
            ramp_s=args.ramp,
            arrival=args.arrival,
            mix=mix,
            payload_bytes=args.payload_bytes,
            ack_fraction=args.ack,
            think_s=args.think,
            direction=args.direction,
        )
        for rate in rates
    ]
    return asyncio.run(_load(args, specs, faults, external, sweep=bool(args.sweep)))


async def _load(
    args: argparse.Namespace,
    specs: list[Any],
    faults: list[FaultSpec],
    external: bool,
    *,
    sweep: bool,
) -> int:
    from sim.load import find_knee, find_saturation, run_load, step_summary
    from sim.report import document, html_report, terminal_summary, write_html, write_json
    from sim.runner import RunOptions, RunResult
    from sim.target import UNLIMITED

    live = None
    if not args.quiet and sys.stderr.isatty() and not (args.workers or args.local_workers):
        from client.cli_common import colour_wanted
        from sim.live import StatusLine

        live = StatusLine(sys.stderr, colour=colour_wanted(sys.stderr))
    options = RunOptions(
        seed=args.seed,
        drain_s=args.drain,
        progress_s=0 if args.quiet else args.progress,
        extra_faults=tuple(faults),
        verify=not args.no_verify,
        echo=live.echo if live is not None else _echo,
        thresholds=tuple(args.thresholds),
        live=live,
    )
    results: list[RunResult] = []
    cluster = None
    worker_names: list[str] = []
    if args.workers or args.local_workers:
        from sim.distributed import DaskCluster, count_workers, worker_operators

        cluster = DaskCluster(address=args.workers or "", local_workers=args.local_workers or 0)
        try:
            count = args.local_workers or await asyncio.to_thread(count_workers, args.workers)
        except ImportError:
            print("hotline sim load: --workers needs Dask: pip install 'hotline[load]'")
            return 2
        worker_names = worker_operators(count)
    with _workdir(args) as workdir:
        target = await _target(
            args,
            workdir,
            external,
            operators=max(1, args.operators),
            settings=UNLIMITED,
            extra_operators=worker_names,
        )
        try:
            sides = await target.connect(args.operators if not external else 1)
            try:
                for spec in specs:
                    _echo(
                        f"load: {spec.rate:g} msg/s ({spec.arrival}) for {spec.duration_s:g} s"
                        + (f", ramp {spec.ramp_s:g} s" if spec.ramp_s else "")
                    )
                    if cluster is not None:
                        from sim.distributed import run_distributed_load

                        result = await run_distributed_load(spec, target, sides, options, cluster)
                    else:
                        result = await run_load(spec, target, sides, options)
                    results.append(result)
                    print(terminal_summary(result), flush=True)
                    load = result.extra["load"]
                    print(
                        f"   load       offered {load['offered_per_s']:g}/s  achieved "
                        f"{load['achieved_per_s']:g}/s  generator lag p99 "
                        f"{load['generator_lag_ms']['p99']:g} ms  generator cpu "
                        f"{load['generator_cpu_percent']:.0f}%",
                        flush=True,
                    )
            finally:
                await target.disconnect(sides)
        finally:
            await target.stop()
    extra = None
    if sweep:
        steps = [step_summary(r) for r in results]
        saturation, reason = find_saturation(steps)
        knee, knee_reason = find_knee(steps)
        extra = {
            "sweep": {
                "steps": steps,
                "saturation_per_s": saturation,
                "reason": reason,
                "latency_knee_per_s": knee,
                "knee_reason": knee_reason,
            }
        }
        print("== latency versus load (submit → delivered, ms)")
        print(f"   {'rate':>8}{'offered':>10}{'achieved':>10}{'p50':>9}{'p99':>9}{'max':>9}")
        for step in steps:
            d = step["latency_ms"]["delivered"]
            print(
                f"   {step['rate_per_s']:>8g}{step['offered_per_s']:>10g}"
                f"{step['achieved_per_s']:>10g}{d['p50']:>9g}{d['p99']:>9g}{d['max']:>9g}"
            )
        if saturation is None:
            print(f"   saturation: {reason}")
        else:
            print(f"   saturation at {saturation:g} msg/s: {reason}")
        if knee is not None:
            print(f"   latency knee at {knee:g} msg/s: {knee_reason}")
    rates = ", ".join(f"{spec.rate:g}" for spec in specs)
    return _write_reports(
        args,
        results,
        document,
        html_report,
        write_json,
        write_html,
        extra=extra,
        title=f"open-loop load ({rates} msg/s)",
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from sim.bench import format_bench, run_bench
    from sim.report import write_json

    if args.duration <= 0 or args.payload_bytes < 16:
        print("hotline sim bench: --duration must be positive, --payload-bytes >= 16")
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    async def go(workdir: Path) -> int:
        result = await run_bench(
            workdir, duration=args.duration, payload_bytes=args.payload_bytes, echo=_echo
        )
        print(format_bench(result), flush=True)
        if args.json is not None:
            write_json(args.json, result.to_json(_command()))
            _echo(f"wrote {args.json}")
        return 0

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(go(args.workdir))
    with tempfile.TemporaryDirectory(prefix="hotline-bench-") as tmp:
        return asyncio.run(go(Path(tmp)))


def _logging(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=logging.ERROR if args.quiet else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
