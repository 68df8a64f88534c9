"""The tracker's charts for ClickHouse's built-in /dashboard page, and the URL that opens it.

The page (served by every ClickHouse on its HTTP port, the local one included) keeps its
whole state in the URL's hash: the server to query, the user, the charts (a title and a SQL
query each) and the values of the parameters that the queries name as ``{name:Type}``. It
shows one input per parameter and sends them as ``param_<name>`` to the server, so charts are
parameterized by universe, currency and time range, and an analyst changes them on the page.
Each chart is a time series: a Unix time, an optional string column naming the series, a
number. The password is never in the hash: the page asks for it in its own field.

Usage: ``python -m compose.dashboard`` prints the URL for the local stack.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from compose.lz_string import compress_to_encoded_uri_component
from compose.settings import StackSettings
from schemas.environ import ConfigError, Environ


@dataclass(frozen=True)
class Chart:
    """One chart: a short name (for tests and links), its title (``{name}`` is replaced by
    the parameter's value on the page) and its query, naming the database ``tracker``
    (replaced by the one charted)."""

    name: str
    title: str
    sql: str


# Every chart is "per day" over the page's time range (its own charts' convention: `from`/`to`
# when given, else the last `seconds`), in whole UTC days. A chart's points are a query of
# (day, series, value) rows; _daily sums them per day and adds a 0 for each day a series has
# none, so a quiet day shows as 0 rather than as a line drawn across it. Values are Float64:
# uPlot draws numbers, and the page would get a Decimal or a UInt64 as a JSON string
# (docs/analysts.md has exact queries).
_DAILY = """WITH toDateTimeOrDefault({{from:String}}, 'UTC', now() - {{seconds:UInt32}}) AS from,
     toDateTimeOrDefault({{to:String}}, 'UTC', now()) AS to,
     points AS (
{points}
     )
SELECT toUnixTimestamp(toDateTime(day, 'UTC'))::INT AS t, series, toFloat64(sum(value)) AS {value}
FROM (
    SELECT day, series, value FROM points
    UNION ALL
    SELECT toDate(from) + arrayJoin(range(toUInt32(
               greatest(0, dateDiff('day', toDate(from), toDate(to)) + 1)))) AS day,
           series, 0 AS value
    FROM (SELECT DISTINCT series FROM points)
)
GROUP BY t, series
ORDER BY t, series"""


def _daily(value: str, points: str) -> str:
    indented = "\n".join(f"        {line}" for line in points.splitlines())
    return _DAILY.format(points=indented, value=value)


_IN_RANGE = "BETWEEN toDate(from) AND toDate(to)"
_UNIVERSE_CURRENCY = "universe = {universe:String} AND currency = {currency:String}"


def _net(columns: str) -> str:
    """Counted sales as +amount on their day and counted refunds as -amount on theirs, with
    ``columns`` of each: the rows a chart of net turnover sums (S608: constant pieces only)."""
    return (
        f"    SELECT toDate(sold_at) AS day, {columns}, amount AS value FROM tracker.sales\n"  # noqa: S608
        f"    WHERE {_UNIVERSE_CURRENCY} AND toDate(sold_at) {_IN_RANGE}\n"
        "    UNION ALL\n"
        f"    SELECT toDate(refunded_at) AS day, {columns}, -amount AS value FROM tracker.refunds\n"
        f"    WHERE {_UNIVERSE_CURRENCY} AND toDate(refunded_at) {_IN_RANGE}"
    )


CHARTS: tuple[Chart, ...] = (
    Chart(
        "turnover",
        "Turnover per day per campaign ({currency})",
        _daily(
            "turnover",
            "SELECT day, if(campaign_id = '', '(unattributed)', campaign_id) AS series,\n"
            "       turnover AS value\n"
            "FROM tracker.campaign_turnover_daily\n"
            f"WHERE {_UNIVERSE_CURRENCY} AND day {_IN_RANGE}",
        ),
    ),
    Chart(
        "purchases",
        "Purchases per day per campaign ({currency})",
        _daily(
            "purchases",
            "SELECT day, if(campaign_id = '', '(unattributed)', campaign_id) AS series,\n"
            "       purchases AS value\n"
            "FROM tracker.campaign_turnover_daily\n"
            f"WHERE {_UNIVERSE_CURRENCY} AND day {_IN_RANGE}",
        ),
    ),
    Chart(
        "top_links",
        "Top {top} links by net turnover ({currency})",
        _daily(
            "turnover",
            "SELECT day, concat(campaign_id, '/', link_id) AS series, value\n"  # noqa: S608
            f"FROM (\n{_net('campaign_id, link_id')}\n)\n"
            "WHERE link_id != '' AND (campaign_id, link_id) IN (\n"
            f"    SELECT campaign_id, link_id FROM (\n{_net('campaign_id, link_id')}\n    )\n"
            "    WHERE link_id != ''\n"
            "    GROUP BY campaign_id, link_id\n"
            "    ORDER BY sum(value) DESC, campaign_id, link_id\n"
            "    LIMIT {top:UInt32})",
        ),
    ),
    # A customer's segment is their net total in the currency (customer_turnover, all time);
    # the chart shows what each segment bought per day, net of that day's refunds.
    Chart(
        "segments",
        "Net turnover by customer segment ({currency} total: {low}, {high})",
        _daily(
            "turnover",
            "SELECT n.day AS day,\n"
            "       multiIf(c.turnover < {low:UInt32}, concat('under ', toString({low:UInt32})),\n"
            "               c.turnover < {high:UInt32},\n"
            "               concat(toString({low:UInt32}), ' to ', toString({high:UInt32})),\n"
            "               concat(toString({high:UInt32}), ' and over')) AS series,\n"
            "       n.value AS value\n"
            f"FROM (\n{_net('customer_id')}\n) AS n\n"
            "INNER JOIN tracker.customer_turnover AS c ON c.customer_id = n.customer_id\n"
            "WHERE c.universe = {universe:String} AND c.currency = {currency:String}\n"
            "  AND n.customer_id != ''",
        ),
    ),
    Chart(
        "refunds",
        "Refunded per day per campaign ({currency})",
        _daily(
            "refunded",
            "SELECT day, if(campaign_id = '', '(unattributed)', campaign_id) AS series,\n"
            "       refunded_turnover AS value\n"
            "FROM tracker.campaign_turnover_daily\n"
            f"WHERE {_UNIVERSE_CURRENCY} AND day {_IN_RANGE} AND refunds > 0",
        ),
    ),
    Chart(
        "rejected",
        "Rejected calls by reason (every currency)",
        _daily(
            "calls",
            "SELECT toDate(received_at) AS day, reason AS series, 1 AS value\n"
            "FROM tracker.sales_calls\n"
            "WHERE universe = {universe:String} AND status = 'rejected'\n"
            f"  AND toDate(received_at) {_IN_RANGE}",
        ),
    ),
)

# The parameters' values when the page opens; the page shows each in an input.
DEFAULT_PARAMS: Mapping[str, str] = {
    "universe": "demo",
    "currency": "EUR",
    "seconds": str(7 * 86400),
    "from": "",
    "to": "",
    "top": "5",
    "low": "100",
    "high": "1000",
}


def chart_sql(chart: Chart, database: str) -> str:
    return chart.sql.replace("tracker.", f"{database}.")


def page_host(clickhouse_url: str) -> tuple[str, str]:
    """The server as the page's state names it (``scheme://host:port/``) and the user of
    ``clickhouse_url`` ("" for ClickHouse's ``default``). A password in it is dropped: the
    page asks for it in its own field, so it never travels in a link."""
    parts = urllib.parse.urlsplit(clickhouse_url)
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 address
        netloc = f"[{netloc}]"
    if parts.port is not None:
        netloc += f":{parts.port}"
    host = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/", "", ""))
    return host, urllib.parse.unquote(parts.username or "")


def dashboard_url(
    clickhouse_url: str, database: str = "tracker", params: Mapping[str, str] | None = None
) -> str:
    """The URL that opens ``clickhouse_url``'s /dashboard with :data:`CHARTS` on ``database``.

    The state is the page's own (its saveState): with queries in it, the page draws them
    instead of loading system.dashboards.
    """
    host, user = page_host(clickhouse_url)
    state = {
        "host": host,
        "user": user,
        "queries": [{"title": c.title, "query": chart_sql(c, database)} for c in CHARTS],
        "params": {**DEFAULT_PARAMS, **(params or {})},
    }
    # ensure_ascii: the hash's encoding is specified here for ASCII text only.
    encoded = compress_to_encoded_uri_component(json.dumps(state, ensure_ascii=True))
    return f"{host}dashboard#{encoded}"


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compose.dashboard", description=__doc__)
    parser.add_argument("--universe", default=DEFAULT_PARAMS["universe"])
    parser.add_argument("--currency", default=DEFAULT_PARAMS["currency"])
    args = parser.parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        settings = StackSettings.from_env(env)
        database = Environ(env).text("TRACKER_CLICKHOUSE_DATABASE", "tracker")
    except ConfigError as e:
        print(f"dashboard: {e}", file=sys.stderr)
        return 1
    params = {"universe": args.universe, "currency": args.currency}
    print(dashboard_url(settings.clickhouse_url, database, params))
    return 0


if __name__ == "__main__":
    sys.exit(main())
