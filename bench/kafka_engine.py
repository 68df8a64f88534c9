"""The peer: ClickHouse's own ``Kafka`` table engine on the same topics and broker, feeding
materialized views into rollups of the same shape as ours, on the same log.

What it can do with our raw JSON events (schemas/raw.py v2, read as JSONEachRow): read
universe, amount, id, customer and currency out of the pixel's query string
(``extractURLParameter``, ``decodeURLComponent``) or the API's fields, and refuse what does
not look like an amount. What it cannot: dedupe (a refresh or a redelivery counts again),
verify a signed click context or attribute to a stored click (every sale is unattributed),
the pixel rules' finer points (repeated parameters, length bounds, invalid UTF-8), dead
letters. Its totals are compared with the oracle's to say how wrong that makes them.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from bench.cpu import cpu_seconds
from bench.oracle import oracle
from bench.report import say
from bench.services import SECRET
from bench.workload import Workload, as_raw, click_as_raw
from schemas.events import Click
from schemas.raw import encode_raw
from schemas.topics import Topics

# Give up when the count has not moved for this long (the engine cannot read the broker).
STALL_S = 90.0


def _param(name: str) -> str:
    """A pixel parameter from the query, or the API's field of that name."""
    return (
        f"if(source = 'api', fields['{name}'], "
        f"decodeURLComponent(extractURLParameter(concat('?', query), '{name}')))"
    )


def statements(db: str, bootstrap: str, topics: Topics, *, kafka: bool = True) -> list[str]:
    """The peer's tables and views in database ``db``; consumption starts with the views.

    ``kafka=False``: the queues are ``Null`` tables that HTTP inserts of the log's messages
    feed instead (the same parsing and views, without the engine's consumer).
    """

    def queue(name: str, topic: str, columns: str) -> str:
        if not kafka:
            return f"CREATE TABLE {db}.{name} ({columns}) ENGINE = Null"
        return (
            f"CREATE TABLE {db}.{name} ({columns}) ENGINE = Kafka SETTINGS "
            f"kafka_broker_list = '{bootstrap}', kafka_topic_list = '{topic}', "
            f"kafka_group_name = '{db}', kafka_format = 'JSONEachRow', "
            "kafka_num_consumers = 1, kafka_skip_broken_messages = 1000000, "
            "input_format_skip_unknown_fields = 1"
        )

    def rollup(name: str, keys: str, where: str = "1") -> list[str]:
        key_types = ", ".join(f"{k} String" for k in keys.split(", ") if k != "day")
        day = ", day Date" if "day" in keys else ""
        return [
            f"CREATE TABLE {db}.{name} ({key_types}{day}, purchases UInt64, "
            f"turnover Decimal(38, 4)) ENGINE = SummingMergeTree ORDER BY ({keys})",
            f"CREATE MATERIALIZED VIEW {db}.{name}_mv TO {db}.{name} AS SELECT {keys}, "
            f"toUInt64(1) AS purchases, toDecimal128(amount, 4) AS turnover FROM {db}.sales "
            f"WHERE accepted AND {where}",
        ]

    amount = _param("amount")
    return [
        f"CREATE DATABASE IF NOT EXISTS {db}",
        queue(
            "sales_queue",
            topics.sales,
            "event_id String, received_at_ms Int64, source String, query String, "
            "fields Map(String, String)",
        ),
        queue("clicks_queue", topics.clicks, "event_id String, clicked_at_ms Int64, query String"),
        # Every call, counted or not: the run ends when this and clicks hold the whole log.
        f"CREATE TABLE {db}.sales (universe String, transaction_id String, customer_id String, "
        "currency String, amount Decimal(18, 4), accepted Bool, campaign_id String, "
        "link_id String, day Date, event_id String) ENGINE = MergeTree "
        "ORDER BY (universe, transaction_id)",
        f"CREATE TABLE {db}.clicks (universe String, customer_id String, campaign_id String, "
        "link_id String, clicked_at DateTime64(3, 'UTC'), event_id String) "
        "ENGINE = MergeTree ORDER BY (universe, customer_id)",
        *rollup("campaign_turnover", "universe, campaign_id, currency"),
        *rollup("customer_turnover", "universe, customer_id, currency", "customer_id != ''"),
        *rollup("link_turnover", "universe, campaign_id, link_id, currency"),
        *rollup("campaign_turnover_daily", "universe, campaign_id, day, currency"),
        # The engine's consumers start with the views that read the queues: these two last.
        f"CREATE MATERIALIZED VIEW {db}.clicks_mv TO {db}.clicks AS SELECT "
        "extractURLParameter(concat('?', query), 'u') AS universe, "
        "decodeURLComponent(extractURLParameter(concat('?', query), 'c')) AS customer_id, "
        "decodeURLComponent(extractURLParameter(concat('?', query), 'k')) AS campaign_id, "
        "decodeURLComponent(extractURLParameter(concat('?', query), 'l')) AS link_id, "
        "fromUnixTimestamp64Milli(clicked_at_ms, 'UTC') AS clicked_at, event_id "
        f"FROM {db}.clicks_queue",
        f"CREATE MATERIALIZED VIEW {db}.sales_mv TO {db}.sales AS SELECT "
        f"{_param('universe')} AS universe, {_param('id')} AS transaction_id, "
        f"{_param('customer')} AS customer_id, upper({_param('currency')}) AS currency, "
        f"match({amount}, '^[0-9]{{1,10}}([.,][0-9]{{1,4}})?$') "
        f"AND match(universe, '^[A-Za-z0-9][A-Za-z0-9_.-]{{0,63}}$') AS accepted, "
        f"if(accepted, toDecimal64OrZero(replaceOne({amount}, ',', '.'), 4), 0) AS amount, "
        "'' AS campaign_id, '' AS link_id, "
        "toDate(fromUnixTimestamp64Milli(received_at_ms, 'UTC')) AS day, event_id "
        f"FROM {db}.sales_queue",
    ]


def _count(client: Client, db: str) -> int:
    rows = client.query(
        f"SELECT (SELECT count() FROM {db}.sales) + (SELECT count() FROM {db}.clicks)"
    ).result_rows
    return int(rows[0][0])


def _consumer_errors(client: Client, db: str) -> str:
    """What the engine's consumers last failed with (system.kafka_consumers), if anything."""
    try:
        rows = client.query(
            "SELECT table, exceptions.text FROM system.kafka_consumers WHERE database = "
            "{db:String}",
            parameters={"db": db},
        ).result_rows
    except clickhouse_connect.driver.exceptions.DatabaseError as e:
        return f"system.kafka_consumers unreadable: {e}"
    return "; ".join(f"{t}: {texts[-1]}" for t, texts in rows if texts)


def compare(client: Client, db: str, workload: Workload) -> dict[str, Any]:
    """The peer's totals against the oracle's: how wrong, and why."""
    want = oracle(workload.clicks, workload.calls)
    purchases, turnover = client.query(
        f"SELECT sum(purchases), sum(turnover) FROM {db}.campaign_turnover"
    ).result_rows[0]
    customers = client.query(f"SELECT count() FROM {db}.customer_turnover").result_rows[0][0]
    attributed = sum(n for (_, campaign, _), (n, _) in want.campaign.items() if campaign)
    return {
        "purchases": int(purchases), "purchases_exact": want.sales,
        "duplicates_counted": int(purchases) - want.sales,
        "turnover": str(Decimal(turnover)), "turnover_exact": str(want.turnover),
        "turnover_error_pct": round(
            float((Decimal(turnover) - want.turnover) / want.turnover * 100), 2
        ) if want.turnover else 0.0,
        "customers": int(customers), "customers_exact": len(want.customer),
        # Sales the oracle attributes to a campaign, all left under campaign '' here.
        "unattributed": attributed,
    }  # fmt: skip


def run(
    bootstrap: str, clickhouse: str, topics: Topics, workload: Workload, clickhouse_pid: int
) -> dict[str, Any]:
    """Consume the whole log with the engine; its events/s, CPU and how wrong its totals are.

    If ClickHouse refuses the engine's tables, the exact error is reported, and the same views
    are measured fed by HTTP inserts of the log's messages instead (``proxy``).
    """
    db = f"kafka_engine_{uuid.uuid4().hex[:8]}"
    client = clickhouse_connect.get_client(dsn=clickhouse)
    try:
        try:
            for sql in statements(db, bootstrap, topics)[:3]:
                client.command(sql)
        except clickhouse_connect.driver.exceptions.DatabaseError as e:
            error = _server_error(e)
            say(f"  the Kafka engine's table was refused: {error}")
            proxy = f"{db}_proxy"
            return {"error": error, "proxy": _proxy(client, proxy, workload, clickhouse_pid)}
        return _consume(client, db, bootstrap, topics, workload, clickhouse_pid)
    finally:
        _stop(client, db)
        client.close()


def _server_error(e: Exception) -> str:
    """ClickHouse's own message (``Code: N. DB::Exception: ...``) out of the client's."""
    text = str(e)
    start = text.find("Code: ")
    return text[start:].split(" (for url", 1)[0].strip() if start >= 0 else text[:300]


def _consume(
    client: Client, db: str, bootstrap: str, topics: Topics, workload: Workload,
    clickhouse_pid: int,
) -> dict[str, Any]:  # fmt: skip
    total = len(workload.clicks) + len(workload.calls)
    for sql in statements(db, bootstrap, topics)[3:-2]:
        client.command(sql)
    cpu_before = cpu_seconds(clickhouse_pid)
    started = time.perf_counter()
    for sql in statements(db, bootstrap, topics)[-2:]:
        client.command(sql)
    series: list[tuple[float, int]] = []
    done, moved = 0, started
    while done < total:
        time.sleep(0.5)
        now = time.perf_counter()
        count = _count(client, db)
        series.append((round(now - started, 2), count))
        if count > done:
            done, moved = count, now
        elif now - moved > STALL_S:
            error = _consumer_errors(client, db) or "no error reported by system.kafka_consumers"
            say(f"  Kafka engine stalled at {done:,}/{total:,}: {error}")
            return {"error": error, "events": total, "consumed": done, "series": series}
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(clickhouse_pid) - cpu_before
    _stop(client, db)  # nothing moves under the comparison
    found = {
        "events": total, "seconds": round(seconds, 2), "events_per_s": round(total / seconds),
        "clickhouse_cpu_us_per_event": round(cpu / total * 1e6, 1), "series": series,
        **compare(client, db, workload),
    }  # fmt: skip
    say(f"  Kafka engine: {total:,} events in {seconds:.1f}s = {total / seconds:,.0f}/s, "
        f"ClickHouse CPU {cpu / total * 1e6:.1f} us/event; {found['duplicates_counted']:,} "
        f"duplicates counted, {found['unattributed']:,} sales unattributed")  # fmt: skip
    return found


# Rows per proxy insert: the engine's blocks are at most max_insert_block_size (1,048,449)
# rows or what arrived within stream_flush_interval_ms (7.5 s); 65,536 is what one fetch
# loop of a busy consumer gathers here, and a part per insert either way.
PROXY_BLOCK = 65_536


def _proxy(client: Client, db: str, workload: Workload, clickhouse_pid: int) -> dict[str, Any]:
    """The peer's views fed by HTTP inserts of the log's very messages (JSONEachRow)."""
    for sql in statements(db, "", Topics("unused."), kafka=False):
        client.command(sql)
    messages: dict[str, list[bytes]] = {"clicks_queue": [], "sales_queue": []}
    for event in workload.events():
        if isinstance(event, Click):
            messages["clicks_queue"].append(encode_raw(click_as_raw(event, SECRET)))
        else:
            messages["sales_queue"].append(encode_raw(as_raw(event, SECRET)))
    blocks = [
        (queue, b"\n".join(listed[i : i + PROXY_BLOCK]))
        for queue, listed in messages.items()
        for i in range(0, len(listed), PROXY_BLOCK)
    ]
    total = len(workload.clicks) + len(workload.calls)
    cpu_before = cpu_seconds(clickhouse_pid)
    started = time.perf_counter()
    for queue, block in blocks:
        client.raw_insert(
            f"{db}.{queue}", insert_block=block, fmt="JSONEachRow",
            settings={"input_format_skip_unknown_fields": 1},
        )  # fmt: skip
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(clickhouse_pid) - cpu_before
    found = {
        "events": total, "seconds": round(seconds, 2), "events_per_s": round(total / seconds),
        "clickhouse_cpu_us_per_event": round(cpu / total * 1e6, 1), "block": PROXY_BLOCK,
        "stored": _count(client, db), **compare(client, db, workload),
    }  # fmt: skip
    say(f"  its views fed by HTTP inserts instead: {total / seconds:,.0f} events/s, ClickHouse "
        f"CPU {cpu / total * 1e6:.1f} us/event; {found['duplicates_counted']:,} duplicates "
        f"counted, {found['unattributed']:,} sales unattributed")  # fmt: skip
    return found


def _stop(client: Client, db: str) -> None:
    """The engine consumes while a view reads its queue: drop both views to stop it."""
    for view in ("sales_mv", "clicks_mv"):
        client.command(f"DROP TABLE IF EXISTS {db}.{view}")
