"""The edge against the real broker: every call answered with the GIF and published."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import string
import threading

import aiohttp
from aiokafka.partitioner import murmur2
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from compose.processes import free_port
from helpers import Edge, eventually, metrics_text, read_topic, running_edge, sales_as_read, sample
from ingest.gif import PIXEL
from ingest.settings import EdgeSettings
from schemas.raw import QUERY_MAX, decode_sale_request


async def get(
    session: aiohttp.ClientSession, url: str, method: str = "GET"
) -> aiohttp.ClientResponse:
    async with session.request(method, URL(url, encoded=True)) as response:
        await response.read()
        return response


def assert_pixel(response: aiohttp.ClientResponse, body: bytes | None = PIXEL) -> None:
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/gif"
    assert response.headers["Cache-Control"] == "no-store, no-cache, must-revalidate, private"
    assert response.headers["Pragma"] == "no-cache"
    assert "1970" in response.headers["Expires"]


async def test_pixel_answers_the_gif_and_publishes_each_call(
    edge_settings: EdgeSettings, edge: Edge
) -> None:
    for path in (
        "/sales.php?universe=demo&amount=12,50&id=t1",
        "/sales?universe=demo&amount=3.00&id=t2&customer=c1&currency=eur",
    ):
        async with edge.session.get(URL(edge.base + path, encoded=True)) as response:
            assert_pixel(response)
            assert await response.read() == PIXEL
    head = await get(edge.session, edge.base + "/sales.php?universe=demo&amount=1&id=t3", "HEAD")
    assert_pixel(head)
    rejected = await get(edge.session, edge.base + "/sales.php?universe=demo&amount=12.345.6&id=t4")
    assert_pixel(rejected)

    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, 4
    )
    # The edge publishes the calls as received; the projector reads them with today's rules.
    raws = [raw for r in records if (raw := decode_sale_request(r.value)) is not None]
    assert sorted((c.source, c.query, c.cookies) for c in raws) == [
        ("pixel", "universe=demo&amount=1&id=t3", ""),
        ("pixel", "universe=demo&amount=12,50&id=t1", ""),
        ("pixel", "universe=demo&amount=12.345.6&id=t4", ""),
        ("pixel", "universe=demo&amount=3.00&id=t2&customer=c1&currency=eur", ""),
    ]
    calls = sorted(sales_as_read(records, edge_settings.secret), key=lambda c: c.transaction_id)
    assert [(c.transaction_id, c.status, c.amount, c.reason) for c in calls] == [
        ("t1", "accepted", "12.50", ""),
        ("t2", "accepted", "3.00", ""),
        ("t3", "accepted", "1", ""),
        ("t4", "rejected", "", "amount_malformed"),
    ]
    assert calls[1].customer_id == "c1"
    assert calls[1].currency == "EUR"
    # Every call of one transaction is keyed alike, so duplicates meet in one partition.
    assert {
        r.key for r, c in zip(records, sales_as_read(records, edge_settings.secret), strict=True)
        if c.transaction_id == "t1"
    } == {b"demo\x1ft1"}  # fmt: skip


async def test_each_key_goes_to_the_partition_kafkas_default_partitioner_picks(
    edge_settings: EdgeSettings,
    edge: Edge,
) -> None:
    """The edge builds record batches itself: it must place keys as every Kafka client does."""
    paths = [f"/sales.php?universe=demo&amount=1&id=t{i % 40}" for i in range(200)]
    await asyncio.gather(*(get(edge.session, edge.base + path) for path in paths))
    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, 200
    )
    assert len(records) == 200
    partitions = list(range(edge_settings.kafka.partitions))
    assert len({r.partition for r in records}) == len(partitions)
    for r in records:
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % len(partitions)


MALFORMED = [
    "/sales.php",
    "/sales.php?",
    "/sales.php?universe=demo",
    "/sales.php?amount=10",
    "/sales.php?universe=demo&amount=%zz",
    "/sales.php?universe=demo&amount=10&id=%ff%fe",
    "/sales.php?universe=demo&amount=10&amount=20",
    "/sales.php?universe=" + "u" * 30_000 + "&amount=1",
    "/sales.php?universe=demo&amount=-1",
    "/sales.php?universe=demo&amount=1e9",
    "/sales.php?%00=%00&universe=%0d%0aSet-Cookie:x=y&amount=1",
    "/sales.php?" + "&".join(f"k{i}=v" for i in range(500)),
]


async def test_malformed_calls_still_get_the_gif_and_are_published_as_rejected(
    edge_settings: EdgeSettings,
    edge: Edge,
) -> None:
    for path in MALFORMED:
        response = await get(edge.session, edge.base + path)
        assert_pixel(response)
        assert "Set-Cookie" not in response.headers

    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, len(MALFORMED)
    )
    calls = sales_as_read(records, edge_settings.secret)
    assert len(calls) == len(MALFORMED)
    assert all(c.status == "rejected" and c.reason for c in calls)
    assert {c.reason for c in calls} >= {
        "universe_missing",
        "amount_missing",
        "amount_malformed",
        "invalid_utf8",
        "repeated_amount",
        "universe_invalid",
        "too_many_parameters",
        "too_long",
    }
    # The 30 KB query was published cut to the bound, and marked.
    long = [raw for r in records if (raw := decode_sale_request(r.value)) and raw.too_long]
    assert [(raw.too_long, len(raw.query)) for raw in long] == [("query", QUERY_MAX)]


async def test_pixel_answers_at_once_while_the_broker_is_unreachable(
    edge_settings: EdgeSettings,
) -> None:
    kafka = dataclasses.replace(edge_settings.kafka, bootstrap=(f"127.0.0.1:{free_port()}",))
    nowhere = dataclasses.replace(edge_settings, kafka=kafka, drain_timeout_s=1)
    timeout = aiohttp.ClientTimeout(total=5)
    async with running_edge(nowhere) as base, aiohttp.ClientSession(timeout=timeout) as session:
        responses = await asyncio.gather(
            *(get(session, f"{base}/sales.php?universe=demo&amount=1&id=x{i}") for i in range(20))
        )
        for response in responses:
            assert_pixel(response)
        async with session.get(base + "/readyz") as ready:
            assert ready.status == 503
        # Nothing waits in memory for an absent broker: every event goes to the disk spool at
        # the spool task's next tick (TRACKER_EDGE_SPOOL_SYNC_MS).
        text = await eventually(
            lambda: metrics_text(session, base),
            lambda t: sample(t, "tracker_edge_events_spooled_total") == 20,
        )
        assert 'tracker_edge_requests_total{endpoint="sales",outcome="published"} 20.0' in text
        assert "tracker_edge_queue_depth 0.0" in text


_PIECES = st.one_of(
    st.sampled_from(["=", "&", "%", "+", ";", ",", ".", "-", "#", "?", "[", "]", "%zz", "%0"]),
    st.sampled_from(["universe=demo", "amount=12,50", "amount=1e5", "id=x", "customer=", "click="]),
    st.text(alphabet=string.ascii_letters + string.digits, max_size=6),
    st.binary(min_size=1, max_size=4).map(lambda b: "".join(f"%{x:02X}" for x in b)),
)


def test_any_query_string_over_http_gets_the_gif(edge_settings: EdgeSettings) -> None:
    """Property: whatever the query string, the answer is 200 and the GIF."""
    ready = threading.Event()
    stop: list[asyncio.Event] = []

    async def serve() -> None:
        stop.append(asyncio.Event())
        async with running_edge(edge_settings):
            ready.set()
            await stop[0].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    connection = http.client.HTTPConnection(edge_settings.host, edge_settings.port, timeout=10)

    @settings(max_examples=300, deadline=None)
    @given(st.lists(_PIECES, max_size=40).map("".join))
    def answers_the_gif(query: str) -> None:
        connection.request("GET", "/sales.php?" + query)
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "image/gif"
        assert response.read() == PIXEL

    try:
        answers_the_gif()
    finally:
        connection.close()
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(timeout=60)
        loop.close()


async def test_every_spelling_of_one_transaction_gets_one_key_and_only_our_cookies_go(
    edge_settings: EdgeSettings,
    edge: Edge,
) -> None:
    spellings = [
        "/sales.php?universe=demo&amount=1&id=t-9",
        "/sales.php?id=t-9&amount=1&universe=demo",
        "/sales.php?universe=%64emo&amount=1&id=t%2D9",
        "/sales.php?universe=demo&id=t-9&id=t-9&amount=2",
    ]
    cookie = "session=secret-of-the-shop; trk_demo=tok.sig; other=x; trk_shop_b=t2.s"
    for path in spellings:
        async with edge.session.get(
            URL(edge.base + path, encoded=True), headers={"Cookie": cookie}
        ):
            pass
    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, len(spellings)
    )
    assert {r.key for r in records} == {b"demo\x1ft-9"}
    assert len({r.partition for r in records}) == 1
    raws = [decode_sale_request(r.value) for r in records]
    assert {raw and raw.cookies for raw in raws} == {"trk_demo=tok.sig; trk_shop_b=t2.s"}


async def test_the_pixel_answers_alike_past_the_router_and_through_it(
    edge_settings: EdgeSettings, edge: Edge
) -> None:
    # The runner answers GET and HEAD of the pixel's exact paths itself (ingest/protocol.py);
    # another spelling of the path goes through aiohttp's router to the same handler, and
    # what the pixel does not answer stays the router's (405, 404), published nowhere.
    query = "?universe=demo&amount=1&id="
    direct = await get(edge.session, edge.base + "/sales.php" + query + "d1")
    routed = await get(edge.session, edge.base + "/sales%2Ephp" + query + "r1")
    routed_head = await get(edge.session, edge.base + "/%73ales" + query + "r2", "HEAD")
    for response in (direct, routed, routed_head):
        assert_pixel(response)
    assert {k: v for k, v in direct.headers.items() if k != "Date"} == {
        k: v for k, v in routed.headers.items() if k != "Date"
    }
    assert (await get(edge.session, edge.base + "/sales.php" + query + "p1", "POST")).status == 405
    assert (await get(edge.session, edge.base + "/sales.php/" + query + "s1")).status == 404
    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, 3
    )
    calls = sorted(sales_as_read(records, edge_settings.secret), key=lambda c: c.transaction_id)
    assert [(c.transaction_id, c.status, c.amount) for c in calls] == [
        ("d1", "accepted", "1"), ("r1", "accepted", "1"), ("r2", "accepted", "1"),
    ]  # fmt: skip
