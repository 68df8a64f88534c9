"""Monitoring against the real thing: Debian's Prometheus scrapes a real edge and projector
(processes, as `make run` starts them) with the alert rules loaded, while sales flow to the
test session's broker and ClickHouse; the dashboards' queries run against both."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from clickhouse_connect.driver.asyncclient import AsyncClient
from conftest import TEST_API_KEY
from test_alert_rules import DASHBOARDS, metric_names

from compose.processes import Service, free_port, http_check
from compose.prometheus import RULES, argv, write_config
from helpers import eventually, metrics_text, rows, settled
from schemas.signing import Link, link_url

ROOT = Path(__file__).resolve().parents[2]
# Labelled counters whose first series is born with the first such event (the topic and
# partition of a refused log cannot be known before): Prometheus must know them from the
# targets' metadata, samples or not.
BORN_WITH_THEIR_EVENT = {"tracker_projector_log_regressions_total"}


def service(name: str, argv_: list[str], env: dict[str, str], health_url: str) -> Service:
    return Service(
        name=name, argv=argv_, env=env, cwd=ROOT, health=http_check(health_url),
        startup_timeout=30, stop_timeout=15,
    )  # fmt: skip


def substitute_sql(sql: str, database: str, frm: dt.datetime, to: dt.datetime) -> str:
    """What the ClickHouse plugin sends for these macros (its documented expansions)."""

    def time_filter(m: re.Match[str]) -> str:
        col = m.group(1)
        start, end = int(frm.timestamp()), int(to.timestamp())
        return f"{col} >= toDateTime({start}) AND {col} <= toDateTime({end})"

    sql = re.sub(r"\$__timeFilter\((\w+)\)", time_filter, sql)
    sql = re.sub(
        r"\$__dateFilter\((\w+)\)",
        lambda m: f"{m[1]} >= toDate('{frm.date()}') AND {m[1]} <= toDate('{to.date()}')",
        sql,
    )
    sql = re.sub(
        r"\$__timeInterval\((\w+)\)",
        lambda m: f"toStartOfInterval(toDateTime({m[1]}), INTERVAL 60 second)",
        sql,
    )
    sql = sql.replace("${universe}", "demo").replace("tracker.", f"{database}.")
    assert "$" not in sql, f"a macro left unsubstituted: {sql}"
    return sql


def dashboard_queries() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(where, PromQL) and (where, SQL) of every panel and variable."""
    promql, sql = [], []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = orjson.loads(path.read_bytes())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                where = f"{path.stem}/{panel['title']}"
                if target["datasource"]["type"] == "prometheus":
                    promql.append((where, target["expr"]))
                else:
                    sql.append((where, target["rawSql"]))
        for variable in dashboard["templating"]["list"]:
            sql.append((f"{path.stem}/${variable['name']}", variable["query"]))
    return promql, sql


async def promql(session: aiohttp.ClientSession, base: str, expr: str) -> list[dict[str, Any]]:
    async with session.get(f"{base}/api/v1/query", params={"query": expr}) as response:
        body = await response.json()
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200, url
        return await response.json()


async def send_traffic(session: aiohttp.ClientSession, edge: str, secret: str) -> int:
    """Sales of every kind the dashboards show; returns the ledger rows they make."""
    link = link_url(edge, secret, Link("demo", "alice", "spring", "hero", "https://shop.example/"))
    async with session.get(link, allow_redirects=False) as response:
        assert response.status == 302
        token = re.search(r"trk_click=([^&]+)", response.headers["Location"])
        assert token is not None
    pixel = f"{edge}/sales.php?universe=demo"
    for query in (
        f"&amount=120.00&id=o-1&click={token[1]}",  # attributed to spring/hero
        "&amount=120.00&id=o-1",  # the confirmation page refreshed: a duplicate
        "&amount=9.99&id=o-2",  # unattributed
        "&amount=1.000,00&id=o-3",  # rejected: amount_malformed
    ):
        async with session.get(pixel + query) as response:
            assert response.status == 200
    sales = [{"amount": "40", "id": "o-4", "customer": "carol"}, {"amount": "-1", "id": "o-5"}]
    async with session.post(
        f"{edge}/v1/sales", json=sales, headers={"Authorization": f"Bearer {TEST_API_KEY}"}
    ) as response:
        assert response.status == 202, await response.text()
    return 1 + 4 + 2  # a click, four pixel calls, two API sales


async def test_prometheus_scrapes_the_services_evaluates_every_query_and_alerts_on_a_kill(
    service_env: dict[str, str], ch: AsyncClient, isolation: str, tmp_path: Path
) -> None:
    assert shutil.which("prometheus"), "prometheus is missing: run `make tools`"
    env = {**service_env, "PYTHONUNBUFFERED": "1"}
    edge_url = f"http://127.0.0.1:{env['TRACKER_EDGE_PORT']}"
    projector_url = f"http://127.0.0.1:{env['TRACKER_PROJECTOR_PORT']}"
    prometheus_port = free_port()
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    # Scraped and evaluated every second: the kill shows within seconds.
    config = write_config(
        tmp_path / "prometheus.yml",
        {"edge": edge_url.removeprefix("http://"), "projector": projector_url.removeprefix("http://")},
        rules=(RULES,), interval_s=1,
    )  # fmt: skip
    projector = service(
        "projector", [sys.executable, "-m", "projector"], env, f"{projector_url}/healthz"
    )
    edge = service("edge", [sys.executable, "-m", "ingest"], env, f"{edge_url}/healthz")
    prometheus = service(
        "prometheus", argv(config, tmp_path / "tsdb", "127.0.0.1", prometheus_port), {},
        f"{prometheus_url}/-/ready",
    )  # fmt: skip
    started: list[Service] = []
    try:
        async with aiohttp.ClientSession() as session:
            for s in (projector, edge, prometheus):
                s.start(tmp_path / "logs")
                started.append(s)
            for s in started:
                await asyncio.to_thread(s.wait_healthy)

            # The lag gauge is there, at its true 0, before anything was fetched.
            page = await eventually(
                lambda: metrics_text(session, projector_url),
                lambda text: "tracker_projector_lag{" in text,
                timeout=20,
            )
            lags = [line for line in page.splitlines() if line.startswith("tracker_projector_lag{")]
            assert lags and all(line.endswith(" 0.0") for line in lags), lags

            events = await send_traffic(session, edge_url, env["TRACKER_SECRET"])
            await settled(ch, isolation, events)

            # Every ClickHouse panel and variable runs, and shows what was projected.
            _, sql_queries = dashboard_queries()
            now = dt.datetime.now(dt.UTC)
            frm = now - dt.timedelta(days=1)
            for where, sql in sql_queries:
                found = await rows(
                    ch, substitute_sql(sql, isolation, frm, now + dt.timedelta(minutes=1))
                )
                assert found, f"{where}: no rows"
            top_links = [s for w, s in sql_queries if w == "sales/Top links"]
            # The traffic names no currency: its turnover is shown apart, as "(none)".
            # The plugin sends whole seconds: a window ending at `now` would leave out a sale
            # of this second, so it ends one second later.
            to = now + dt.timedelta(seconds=1)
            assert await rows(ch, substitute_sql(top_links[0], isolation, frm, to)) == [
                ("spring", "hero", "(none)", 1, 120)
            ]

            # Every dashboard expression returns a series once a few scrapes saw the traffic.
            prom_queries, _ = dashboard_queries()

            async def empty_panels() -> list[str]:
                return [
                    where
                    for where, expr in prom_queries
                    if not await promql(
                        session, prometheus_url, expr.replace("$__rate_interval", "15s")
                    )
                ]

            await eventually(empty_panels, lambda empty: not empty, timeout=20)

            # Both services export the standard process and Python collectors.
            for expr in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                         "python_info", "python_gc_objects_collected_total"):  # fmt: skip
                jobs = {r["metric"]["job"] for r in await promql(session, prometheus_url, expr)}
                assert jobs == {"edge", "projector"}, expr

            # Every alert evaluates, and every series it reads is scraped (or, for the ones
            # born with their event, announced by the target).
            groups = (await get_json(session, f"{prometheus_url}/api/v1/rules"))["data"]["groups"]
            alerts = {rule["name"]: rule for group in groups for rule in group["rules"]}
            assert len(alerts) >= 10, sorted(alerts)
            metadata = (await get_json(session, f"{prometheus_url}/api/v1/metadata"))["data"]
            for name, rule in alerts.items():
                await promql(session, prometheus_url, rule["query"])
                for metric in metric_names(rule["query"]):
                    if metric in BORN_WITH_THEIR_EVENT:
                        known = {metric, metric.removesuffix("_total")} & metadata.keys()
                        assert known, (name, metric, sorted(metadata))
                    else:
                        assert await promql(session, prometheus_url, metric), (name, metric)

            # A healthy stack raises nothing, not even pending.
            active = (await get_json(session, f"{prometheus_url}/api/v1/alerts"))["data"]["alerts"]
            assert active == []

            # Killing the projector: its alert is pending within seconds (firing after `for`).
            assert projector.process is not None
            projector.process.kill()
            started_at = time.monotonic()

            async def projector_down() -> list[str]:
                data = await get_json(session, f"{prometheus_url}/api/v1/alerts")
                return [
                    a["state"]
                    for a in data["data"]["alerts"]
                    if a["labels"]["alertname"] == "TrackerProjectorDown"
                ]

            assert await eventually(projector_down, lambda states: states != [], 15) == ["pending"]
            assert time.monotonic() - started_at < 15
    finally:
        for s in reversed(started):
            s.stop()
