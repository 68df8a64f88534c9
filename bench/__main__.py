"""`python -m bench [--scale small|full]`: edge vs bare aiohttp, projector vs its limits,
freshness and memory, on this machine, written to docs/benchmarks.md (+ a PNG plot); a
smaller scale writes to .data/bench/ unless --out names a file. `--only edge` re-runs the edge
stage alone (`--rounds N` for more of its interleaved rounds), keeping the others' figures.

Every figure is reported with a baseline measured in the same run: these machines are shared
and noisy, so ratios are what to compare across runs. Speed goals are judged from the full
run only; the small scale only keeps this code working (the test suite runs it once).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from pathlib import Path

import orjson

from bench import edge, freshness, projector, services
from bench.report import Results, machine, plot, plot_projector, say, write_report
from bench.scale import SCALES, STAGES
from bench.services import ROOT


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "--scale", choices=sorted(SCALES), default=os.environ.get("BENCH_SCALE", "full")
    )
    parser.add_argument(
        "--out", type=Path, default=None,
        help="the report (default: docs/benchmarks.md at full scale, "
        ".data/bench/benchmarks.md otherwise: a smoke run never overwrites the committed one)",
    )  # fmt: skip
    parser.add_argument(
        "--only", choices=STAGES, action="append",
        help="run only this stage (repeatable); the other stages' figures stay in the report",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=None,
        help="the edge stage's interleaved rounds per connection level (default: the scale's)",
    )  # fmt: skip
    args = parser.parse_args()
    scale = SCALES[args.scale]
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error("--rounds must be at least 1")
        scale = dataclasses.replace(scale, rounds=args.rounds)
    if args.out is None:
        folder = ROOT / "docs" if scale.name == "full" else ROOT / ".data" / "bench"
        args.out = folder / "benchmarks.md"
    if shutil.which("wrk") is None:
        print("wrk is missing: `make bench` installs it (apt-get install wrk)", file=sys.stderr)
        return 2
    results = Results(machine=machine())
    previous = args.out.with_suffix(".json")
    if args.only and previous.exists():
        # One stage re-run: the other stages' figures stay, from their own run.
        now = results.machine["date"]
        results = Results(**orjson.loads(previous.read_bytes()))
        results.machine["partial"] = f"{', '.join(args.only)} re-run on {now}"
    say(f"bench ({scale.name}) on {results.machine['cores']} cores, {results.machine['cpu']}")
    with tempfile.TemporaryDirectory(prefix="tracker-bench-") as tmp:
        workdir = Path(tmp)
        stack, bootstrap, clickhouse = services.start(workdir)
        args.out.parent.mkdir(parents=True, exist_ok=True)

        def save() -> None:
            # After every stage: a long full run that is stopped still leaves its figures.
            write_report(results, scale, args.out, f"make bench BENCH_SCALE={scale.name}")
            args.out.with_suffix(".json").write_bytes(
                orjson.dumps(results.__dict__, default=str, option=orjson.OPT_INDENT_2)
            )

        stages = args.only or STAGES
        try:
            if "edge" in stages:
                say("1. edge vs baseline")
                results.edge = []  # a re-run replaces the stage's rows, never adds to them
                edge.run(scale, bootstrap, clickhouse, workdir, results)
                plot(results, args.out.with_suffix(".png"))
                save()
            if "freshness" in stages:
                say("2. freshness")
                results.freshness = freshness.run(scale, bootstrap, clickhouse, workdir)
                say(f"  {results.freshness}")
                save()
            if "projector" in stages:
                say("3. projector vs its limits, and its memory")
                projector.run(scale, bootstrap, clickhouse, workdir, results, save,
                              services.pid_of(stack, "clickhouse"))  # fmt: skip
                plot_projector(results, args.out.with_name(f"{args.out.stem}-projector.png"))
                save()
        finally:
            stack.stop()
    say(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
