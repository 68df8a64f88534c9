"""The analysts' charts and recipes, run against the real ClickHouse on the known scenario
(compose/analyst_scenario.py, sent through the real edge and projector): every chart's SQL
as the /dashboard page sends it, every SQL block of docs/analysts.md, and the page itself in
a real headless browser."""

from __future__ import annotations

import asyncio
import os
import shutil
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import clickhouse_connect
import pytest
from conftest import TEST_API_KEY, Services
from PIL import Image

from compose import analyst_scenario
from compose.browser import dump_dom, page_error, rendered_charts, screenshot
from compose.dashboard import CHARTS, DEFAULT_PARAMS, chart_sql, dashboard_url, page_host
from compose.dashboard import main as dashboard_main
from compose.demo import Target
from compose.environment import service_environment
from compose.lz_string import compress_to_encoded_uri_component
from compose.processes import free_port
from helpers import cells, running_edge, running_projector
from ingest.settings import EdgeSettings
from projector.settings import ProjectorSettings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-" + "x" * 32


@dataclass(frozen=True)
class Loaded:
    """The scenario, written into its own database of the session's ClickHouse."""

    clickhouse_url: str
    database: str
    day: date  # the UTC day its calls were received (live traffic: today)

    def query(self, sql: str, params: Mapping[str, str] | None = None) -> list[list[str]]:
        """``sql`` on the scenario's database, with ``param_*`` values as the page sends."""
        sql = sql.replace("tracker.", f"{self.database}.")
        args = {"default_format": "TabSeparated"}
        args.update({f"param_{k}": v for k, v in (params or {}).items()})
        request = urllib.request.Request(
            f"{self.clickhouse_url}/?{urllib.parse.urlencode(args)}", data=sql.encode()
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text: str = response.read().decode()
        return [line.split("\t") for line in text.splitlines()]


@pytest.fixture(scope="module")
async def scenario(
    services: Services, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Loaded]:
    database = "t" + uuid.uuid4().hex[:12]
    env = {
        **service_environment(
            bootstrap=services.kafka_bootstrap,
            clickhouse_url=services.clickhouse_url,
            local_broker=services.local_kafka,
            secret=SECRET,
            api_keys=f"demo:{TEST_API_KEY}",
            spool_dir=tmp_path_factory.mktemp("spool"),
            edge_port=free_port(),
            projector_port=free_port(),
            isolation=database,
        ),
        "TRACKER_PROJECTOR_FLUSH_INTERVAL_MS": "200",
        "TRACKER_KAFKA_LINGER_MS": "2",
    }
    edge_settings = EdgeSettings.from_env(env)
    async with (
        running_projector(ProjectorSettings.from_env(env)),
        running_edge(edge_settings) as edge,
    ):
        target = Target(
            edge=edge, clickhouse=services.clickhouse_url, database=database, secret=SECRET,
            api_key=TEST_API_KEY, secrets_file=Path(),
        )  # fmt: skip
        # The scenario's helpers are blocking (urllib), and the edge runs on this loop.
        await asyncio.to_thread(analyst_scenario.load, target, timeout=90.0)
    loaded = Loaded(services.clickhouse_url, database, date.min)
    days = loaded.query("SELECT DISTINCT toDate(received_at) FROM tracker.sales_calls")
    assert len(days) == 1, days  # sent within seconds; only a run across midnight UTC fails
    try:
        yield Loaded(services.clickhouse_url, database, date.fromisoformat(days[0][0]))
    finally:
        client = await clickhouse_connect.get_async_client(dsn=services.clickhouse_url)
        await client.command(f"DROP DATABASE IF EXISTS {database}")
        await client.close()


# ---------------------------------------------------------------------------------------
# The charts: what each shows on the scenario's day, worked out by hand from
# compose/analyst_scenario.py.


@dataclass(frozen=True)
class ChartCase:
    chart: str  # the chart's name in compose/dashboard.py
    rows: list[tuple[str, str]]  # (series, value) on the scenario's day, in the chart's order
    params: dict[str, str] = field(default_factory=dict)  # beyond DEFAULT_PARAMS
    name: str = "defaults"


TURNOVER, PURCHASES, TOP_LINKS, SEGMENTS, REJECTED, REFUNDS = (
    "turnover", "purchases", "top_links", "segments", "rejected", "refunds"
)  # fmt: skip
TOMORROW = "tomorrow"  # a `from` after every call: replaced by the scenario's next day

CHART_CASES = [
    # Net. EUR: spring = alice 120 + 80.50, bob 1500, erin 300; summer = carol 40 (attributed
    # from her stored click); unattributed = the anonymous 15 (refunded in full) and frank's
    # 60 (no click).
    ChartCase(TURNOVER, [("(unattributed)", "60"), ("spring", "2000.5"), ("summer", "40")]),
    # USD: dave's two 25 (summer/banner) less the 10 refunded, the anonymous 9.99; never added
    # to the euros.
    ChartCase(TURNOVER, [("(unattributed)", "9.99"), ("summer", "40")], {"currency": "USD"}, "usd"),
    ChartCase(TURNOVER, [], {"from": TOMORROW}, "outside_the_time_range"),
    # o-1 twice (a refreshed page) is one purchase; o-9, refunded in full, is none.
    ChartCase(PURCHASES, [("(unattributed)", "1"), ("spring", "4"), ("summer", "1")]),
    ChartCase(
        TOP_LINKS, [("spring/footer", "1500"), ("spring/hero", "500.5"), ("summer/hero", "40")]
    ),
    ChartCase(
        TOP_LINKS, [("spring/footer", "1500"), ("spring/hero", "500.5")], {"top": "2"}, "top_2"
    ),
    # Totals in EUR: carol 40, frank 60 (under 100); alice 200.50, erin 300 (100 to 1000);
    # bob 1500 (1000 and over). Anonymous sales have no segment. With 50: frank moves up.
    ChartCase(
        SEGMENTS, [("100 to 1000", "500.5"), ("1000 and over", "1500"), ("under 100", "100")]
    ),
    ChartCase(
        SEGMENTS,
        [("1000 and over", "1500"), ("50 to 1000", "560.5"), ("under 50", "40")],
        {"low": "50"},
        "low_50",
    ),
    # rf-1 (all of o-9) counts once though sent twice; rf-3 (no such order) and rf-4 (more
    # than is left of o-6) are rejected.
    ChartCase(REFUNDS, [("(unattributed)", "15")]),
    ChartCase(REFUNDS, [("summer", "10")], {"currency": "USD"}, "usd"),
    ChartCase(
        REJECTED,
        [
            ("amount_malformed", "2"),
            ("amount_missing", "1"),
            ("amount_too_large", "1"),
            ("currency_invalid", "1"),
        ],
    ),
]


def test_every_chart_has_a_hand_worked_case() -> None:
    assert {c.name for c in CHARTS} == {case.chart for case in CHART_CASES}


@pytest.mark.parametrize(
    "case",
    CHART_CASES,
    ids=[f"{case.chart}-{case.name}" for case in CHART_CASES],
)
def test_chart_shows_the_hand_worked_rows_of_the_scenario(
    case: ChartCase, scenario: Loaded
) -> None:
    chart = next(c for c in CHARTS if c.name == case.chart)
    params = {**DEFAULT_PARAMS, **case.params}
    if params["from"] == TOMORROW:
        params["from"] = f"{scenario.day + timedelta(days=1)} 00:00:00"
    got = [cells(row) for row in scenario.query(chart_sql(chart, "tracker"), params)]
    day = int(datetime.combine(scenario.day, datetime.min.time(), tzinfo=UTC).timestamp())
    assert [row for row in got if row[2] != 0] == [
        [Decimal(day), series, Decimal(value)] for series, value in case.rows
    ]
    # Every other day of the range (the last `seconds`, in whole days) is there with 0 for
    # each series, so the page draws a quiet day as 0.
    first = day - int(params["seconds"]) // 86400 * 86400 if case.rows else day
    days = [Decimal(t) for t in range(first, day + 1, 86400)]
    series = sorted(s for s, _ in case.rows)
    assert [row[:2] for row in got] == [[t, s] for t in days for s in series]
    assert all(row[2] == 0 for row in got if row[0] != day)


# ---------------------------------------------------------------------------------------
# docs/analysts.md: every SQL block, and the rows the document shows under it.


def recipes() -> list[tuple[str, str, list[list[str]]]]:
    """(heading, SQL, shown rows) of each recipe: a ``sql`` block under a ``###`` heading,
    its result as ``-- `` lines after the statement (``<today>``: the scenario's day)."""
    text = (ROOT / "docs" / "analysts.md").read_text()
    section = text[text.index("## Recipes") :]
    found: list[tuple[str, str, list[list[str]]]] = []
    heading = ""
    lines = iter(section.splitlines())
    for line in lines:
        if line.startswith("### "):
            heading = line.removeprefix("### ")
        if line.strip() != "```sql":
            continue
        sql: list[str] = []
        shown: list[list[str]] = []
        for inner in lines:
            if inner.strip() == "```":
                break
            if inner.startswith("--"):
                shown.append(inner.removeprefix("--").split())
            else:
                sql.append(inner)
        found.append((heading, "\n".join(sql).strip().rstrip(";"), shown))
    return found


RECIPES = recipes()


def test_every_recipe_heading_has_one_sql_block_with_its_result() -> None:
    text = (ROOT / "docs" / "analysts.md").read_text()
    headings = [
        line for line in text[text.index("## Recipes") :].splitlines() if line.startswith("### ")
    ]
    assert len(headings) == len(RECIPES) >= 9
    assert [f"### {heading}" for heading, _, _ in RECIPES] == headings
    assert all(shown for _, _, shown in RECIPES)


@pytest.mark.parametrize("recipe", RECIPES, ids=[heading for heading, _, _ in RECIPES])
def test_recipe_answers_what_docs_analysts_shows(
    recipe: tuple[str, str, list[list[str]]], scenario: Loaded
) -> None:
    _, sql, shown = recipe
    assert ";" not in sql, "one statement per recipe"
    expected = [cells([str(scenario.day) if c == "<today>" else c for c in row]) for row in shown]
    assert [cells(row) for row in scenario.query(sql)] == expected


# ---------------------------------------------------------------------------------------
# The page, in a real browser.


def require_chromium() -> None:
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    message = "chromium is not installed: `make tools` installs it (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)  # CI runs `make tools`: a missing browser there is a failure
    pytest.skip(message)


def titles(params: Mapping[str, str]) -> list[str]:
    """The titles as the page shows them: ``{name}`` replaced by the parameter's value."""
    out = []
    for chart in CHARTS:
        title = chart.title
        for name, value in params.items():
            title = title.replace(f"{{{name}}}", value)
        out.append(title)
    return out


async def test_dashboard_page_draws_every_chart_in_a_real_browser(
    scenario: Loaded, tmp_path: Path
) -> None:
    require_chromium()
    url = dashboard_url(scenario.clickhouse_url, scenario.database)
    dom = await asyncio.to_thread(dump_dom, url)
    charts = rendered_charts(dom)
    assert page_error(dom) == ""
    assert [(c.title, c.error, c.drawn) for c in charts] == [
        (title, "", True) for title in titles(DEFAULT_PARAMS)
    ]
    # The screenshot the docs show (`make dashboard-png` keeps it): the same page and data.
    png = tmp_path / "dashboard.png"
    await asyncio.to_thread(screenshot, url, png)
    with Image.open(png) as image:
        assert image.size == (1200, 1750)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50  # not blank
    keep = os.environ.get("TRACKER_DASHBOARD_PNG")
    if keep:
        shutil.copyfile(png, keep)


async def test_dashboard_page_shows_a_failing_chart_query_as_its_error(scenario: Loaded) -> None:
    """The browser check sees errors: on a database that does not exist, every chart shows
    ClickHouse's message and none is drawn."""
    require_chromium()
    url = dashboard_url(scenario.clickhouse_url, scenario.database + "_missing")
    charts = rendered_charts(await asyncio.to_thread(dump_dom, url))
    assert len(charts) == len(CHARTS)
    for chart in charts:
        assert "UNKNOWN_DATABASE" in chart.error and not chart.drawn, chart


# ---------------------------------------------------------------------------------------
# The URL.


def test_lz_string_encodes_as_the_javascript_original() -> None:
    # The vector is lz-string's own output for this text (its PyPI port agreed on 2,000
    # random texts); the browser tests above prove that the page decodes our state.
    assert compress_to_encoded_uri_component('{"a":1}') == "N4IghiBcCMC+Q"
    with pytest.raises(ValueError, match="only ASCII"):
        compress_to_encoded_uri_component('{"a":"é"}')


def test_page_host_keeps_the_user_and_drops_the_password_of_a_clickhouse_url() -> None:
    assert page_host("http://127.0.0.1:8123") == ("http://127.0.0.1:8123/", "")
    assert page_host("https://analyst:s%40cret@ch.example:8443/") == (
        "https://ch.example:8443/",
        "analyst",
    )
    assert page_host("http://[::1]:8123") == ("http://[::1]:8123/", "")


def test_make_dashboard_prints_the_url_for_the_configured_stack(
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"TRACKER_CLICKHOUSE_PORT": "18123", "TRACKER_CLICKHOUSE_DATABASE": "sales"}
    assert dashboard_main(["--universe", "shop", "--currency", "USD"], env) == 0
    url = capsys.readouterr().out.strip()
    assert url == dashboard_url(
        "http://127.0.0.1:18123", "sales", {"universe": "shop", "currency": "USD"}
    )
    assert url.startswith("http://127.0.0.1:18123/dashboard#")
