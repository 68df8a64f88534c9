"""`make bench BENCH_SCALE=small` keeps working. No speed is asserted here: goals are judged
from the full run only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.scale import SCALES

ROOT = Path(__file__).resolve().parents[2]


def test_the_small_benchmark_runs_end_to_end_and_checks_its_totals(tmp_path: Path) -> None:
    out = tmp_path / "benchmarks.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--scale", "small", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = out.read_text()
    for section in ("## Edge vs a bare aiohttp app", "## Projector", "## Freshness", "## Memory"):
        assert section in report
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["projector"]["exact"] is True
    # Every reference, each worker count; nginx comes with wrk (`make tools`).
    targets = ("baseline", "prebuilt", "nginx", "edge")
    assert {(r["target"], r["workers"]) for r in data["edge"]} == {
        (t, w) for t in targets for w in (1, 2)
    }
    # Each figure is a median of interleaved rounds, each ratio paired round by round.
    assert all(len(r["per_round"]) == SCALES["small"].rounds for r in data["edge"])
    assert "interleaved rounds" in report and "edge/baseline req/s" in report
    edges = [r for r in data["edge"] if "published_total" in r]
    assert all(r["published_total"] >= r["answered_total"] > 0 for r in edges)
    # Calls in flight when wrk stops are answered and counted after its tally.
    assert data["freshness"]["visible"] >= data["freshness"]["sales"] > 0
    assert out.with_suffix(".png").stat().st_size > 10_000
    # The projector's breakdown, its peer and its scale-out are reported, with their plot.
    for section in (
        "### Where ClickHouse's time goes", "### The peer: ClickHouse's own Kafka table engine",
        "### Two projector processes in one group",
    ):  # fmt: skip
        assert section in report
    kinds = {row["kind"] for row in data["clickhouse_profile"]["queries"]}
    assert {"insert sales_writes", "insert clicks_writes", "select sales"} <= kinds
    assert data["clickhouse_profile"]["views"] and data["clickhouse_profile"]["parts"]
    peer = data["kafka_engine"].get("proxy", data["kafka_engine"])
    assert peer["duplicates_counted"] > 0  # the generated log repeats transactions
    two = data["scale_out"]
    assert two["exact"] is True
    first, second = (set(p) for p in two["partitions"])
    assert first and second and not first & second
    assert out.with_name("benchmarks-projector.png").stat().st_size > 10_000
