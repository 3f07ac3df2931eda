"""Time `validate_envelope` on the golden examples: microseconds per call, and their geometric mean.

Usage: python proto/bench_validation.py [--repeat N] [--save FILE] [--compare FILE]
       python proto/bench_validation.py --against OTHER/proto [--rounds N]

Every valid example of `proto/examples/valid/` and a few invalid ones are parsed once, validated
once (which compiles the constraint table), then timed with `timeit` in CPU time of this process
(`time.process_time`, so that other processes on a busy machine count as little as they can):
the best of `--repeat` runs of about 0.1 s each.

`--save` writes the figures as JSON; `--compare` reads figures saved earlier and adds their
column and the speed-up. `--against` times another checkout's `hotline` (the `proto/` folder of
a worktree of the base commit, say) and this one, on this checkout's examples, in fresh
processes taking turns `--rounds` times, and keeps each one's best: the fairest comparison on a
machine whose load changes. A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import timeit
from pathlib import Path

from google.protobuf import text_format

PROTO = Path(__file__).resolve().parent
EXAMPLES = PROTO / "examples"
# Invalid examples timed as well: one violation deep in a body, several in one body, and many.
INVALID = (
    "maritime_encounter_latitude_91",
    "cyber_threat_bad_indicators",
    "free_text_two_originals",
    "envelope_many_violations",
)


def examples() -> list[tuple[str, Path]]:
    valid = [(p.stem, p) for p in sorted((EXAMPLES / "valid").glob("*.txtpb"))]
    invalid = [(f"invalid/{name}", EXAMPLES / "invalid" / f"{name}.txtpb") for name in INVALID]
    return valid + invalid


def measure(repeat: int) -> dict[str, float]:
    """Microseconds per `validate_envelope` call, per example."""
    from hotline.v1 import envelope_pb2
    from hotline.validation import validate_envelope

    figures: dict[str, float] = {}
    for name, path in examples():
        envelope = text_format.Parse(path.read_text(encoding="utf-8"), envelope_pb2.Envelope())
        validate_envelope(envelope)  # compile the table; warm the caches
        timer = timeit.Timer(
            lambda envelope=envelope: validate_envelope(envelope), timer=time.process_time
        )
        number, _ = timer.autorange()
        number = max(1, number // 2)  # autorange aims at 0.2 s: about 0.1 s per run
        best = min(timer.repeat(repeat=repeat, number=number))
        figures[name] = best / number * 1e6
    return figures


def measure_in(proto: Path, repeat: int) -> dict[str, float]:
    """`measure` in a fresh process that imports `hotline` from `proto` (`-P`: not from the
    folder of this script, which Python would otherwise search first)."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(proto), os.environ.get("PYTHONPATH", "")])
    )
    command = [sys.executable, "-P", __file__, "--repeat", str(repeat), "--json"]
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    figures: dict[str, float] = json.loads(done.stdout)
    return figures


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def table(figures: dict[str, float], before: dict[str, float] | None) -> str:
    """One line per example, then the geometric means of the valid examples and of all."""
    names = [name for name in figures if before is None or name in before]
    groups = [
        ("geometric mean, valid", [n for n in names if not n.startswith("invalid/")]),
        ("geometric mean, all", names),
    ]
    width = max(len(name) for name in [*names, *(label for label, _ in groups)])
    if before is None:
        lines = [f"{'example':<{width}}  {'µs/call':>8}"]
        lines += [f"{name:<{width}}  {figures[name]:8.1f}" for name in names]
        for label, group in groups:
            lines.append(f"{label:<{width}}  {geometric_mean([figures[n] for n in group]):8.1f}")
        return "\n".join(lines)
    lines = [f"{'example':<{width}}  {'before':>8}  {'after':>8}  {'speed-up':>8}"]
    rows = [(name, before[name], figures[name]) for name in names]
    for label, group in groups:
        rows.append(
            (
                label,
                geometric_mean([before[n] for n in group]),
                geometric_mean([figures[n] for n in group]),
            )
        )
    lines += [
        f"{name:<{width}}  {was:8.1f}  {now:8.1f}  {was / now:7.1f}x" for name, was, now in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per example (best kept)")
    parser.add_argument("--save", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--compare", type=Path, help="figures saved earlier, shown as 'before'")
    parser.add_argument("--against", type=Path, help="the proto/ folder of a checkout to compare")
    parser.add_argument("--rounds", type=int, default=3, help="turns each, with --against")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    before = None
    if args.against is not None:
        before, figures = {}, {}
        for _ in range(args.rounds):
            for best, proto in ((before, args.against.resolve()), (figures, PROTO)):
                for name, us in measure_in(proto, args.repeat).items():
                    best[name] = min(us, best.get(name, us))
    else:
        figures = measure(args.repeat)
    if args.json:
        print(json.dumps(figures))
        return 0
    if args.compare is not None:
        before = json.loads(args.compare.read_text(encoding="utf-8"))
    print(table(figures, before))
    if args.save is not None:
        args.save.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
