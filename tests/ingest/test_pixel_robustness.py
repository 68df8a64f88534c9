"""No 500, ever, on the pixel: raw bytes aiohttp's client will not send, and a handler that
fails all the same, still get the GIF; failures are counted and logged without flooding."""

from __future__ import annotations

import dataclasses
import logging

import aiohttp
import pytest
from yarl import URL

from helpers import eventually, read_topic, running_edge, sales_as_read, sample
from ingest import handler_errors, pixel
from ingest.gif import PIXEL
from ingest.settings import EdgeSettings
from ingest.throttled_log import ThrottledLog
from rawhttp import RawResponse, exchange, request_head
from schemas.events import ClickContext
from schemas.signing import make_v1_token

SALE = b"/sales.php?universe=demo&amount=10&id="


def assert_gif(response: RawResponse) -> None:
    assert response.status == 200, response.body
    assert response.headers["content-type"] == "image/gif"
    assert response.body == PIXEL


async def metrics_text(base: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as response:
        return await response.text()


@pytest.fixture
def one_warning_per_test(monkeypatch: pytest.MonkeyPatch) -> ThrottledLog:
    """A fresh limiter that lets one line through per test, whatever the machine's speed."""
    log = ThrottledLog(
        logging.getLogger(handler_errors.__name__), logging.WARNING, "errors", interval_s=3600
    )
    monkeypatch.setattr(handler_errors, "HANDLER_ERRORS_LOG", log)
    return log


def genuine_payload(settings: EdgeSettings) -> str:
    token = make_v1_token(settings.secret, ClickContext("demo", "c", "k", "l", "", 1, "x"))
    return token.partition(".")[0]


async def test_raw_bytes_in_the_click_cookie_get_the_gif_and_the_sale_counts(
    edge_settings: EdgeSettings, caplog: pytest.LogCaptureFixture
) -> None:
    payload = genuine_payload(edge_settings).encode()
    cookies = [
        b"trk_demo=WyJoeCIsImEiXQ.\xff\xfe",
        b"trk_demo=" + payload + b".\xff\xfe",  # a well-formed payload: its signature is compared
        b"trk_demo=" + payload[:-1] + b"\xe9." + b"A" * 22,
        b"trk_demo=\xff; other=\xfe\xfe",
    ]
    async with running_edge(edge_settings) as base:
        for i, cookie in enumerate(cookies):
            response = await exchange(
                edge_settings.host, edge_settings.port,
                [request_head("GET", SALE + f"cookie-{i}".encode(), [("Cookie", cookie)])],
            )  # fmt: skip
            assert_gif(response)
        text = await metrics_text(base)

    assert 'tracker_edge_handler_errors_total{endpoint="sales"}' not in text  # the cause is fixed
    assert 'tracker_edge_requests_total{endpoint="sales",outcome="published"} 4.0' in text
    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, len(cookies)
    )
    calls = sales_as_read(records, edge_settings.secret)
    assert len(calls) == len(cookies)
    assert all(c.status == "accepted" and c.campaign_id == "" for c in calls)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_raw_bytes_in_any_header_get_the_gif(
    edge_settings: EdgeSettings, caplog: pytest.LogCaptureFixture
) -> None:
    behind_a_proxy = dataclasses.replace(edge_settings, trusted_proxy_hops=1)
    headers = [
        ("X-Forwarded-For", b"\xff\xfe"),
        ("X-Forwarded-For", b"10.0.0.1, \xe9\xe9"),
        ("User-Agent", b"\xff\xfe\x80"),
        ("Referer", b"https://shop.example/\xc3\xa9\xff"),
        ("Authorization", b"Bearer \xff"),
        ("X-Anything", b"\xff" * 4000),
    ]
    async with running_edge(behind_a_proxy):
        for i, header in enumerate(headers):
            response = await exchange(
                edge_settings.host, edge_settings.port,
                [request_head("GET", SALE + f"header-{i}".encode(), [header])],
            )  # fmt: skip
            assert_gif(response)
    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, len(headers)
    )
    calls = sales_as_read(records, edge_settings.secret)
    assert len(calls) == len(headers)
    assert all(c.status == "accepted" for c in calls)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


QUERIES = [
    b"universe=demo&amount=10&id=%00",
    b"universe=demo&amount=10&id=%ff%fe",
    b"universe=demo&amount=10&id=%ed%a0%80",  # an encoded surrogate: not UTF-8
    b"universe=demo&amount=10&id=%",
    b"universe=demo&amount=%&id=%%",
    b"universe=demo&amount=10&id=%zz%",
    b"universe=demo&amount=10&currency=%C4%B1sk",
    b"universe=%&amount=10",
    b"universe=demo&amount=10&id=" + b"x" * 64_000,
    b"universe=demo&amount=10&x=" + b"%" * 64_000,
]


async def test_odd_and_very_long_query_strings_get_the_gif(
    edge_settings: EdgeSettings, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_edge(edge_settings):
        for query in QUERIES:
            response = await exchange(
                edge_settings.host, edge_settings.port,
                [request_head("GET", b"/sales.php?" + query)],
            )  # fmt: skip
            assert_gif(response)
    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, len(QUERIES)
    )
    assert len(records) == len(QUERIES)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("raw", [b"\x00", b"\xff", b"\xc3\xa9", b"\x7f"])
async def test_raw_bytes_in_the_query_get_the_gif_and_are_recorded_as_rejected(
    edge_settings: EdgeSettings, raw: bytes
) -> None:
    # aiohttp's parser refuses these before any handler runs; the protocol answers the
    # image anyway and publishes the call as rejected, so it is seen downstream.
    async with running_edge(edge_settings) as base:
        response = await exchange(
            edge_settings.host, edge_settings.port,
            [request_head("GET", SALE + b"a" + raw + b"b")],
        )  # fmt: skip
        text = await metrics_text(base)
    assert_gif(response)
    assert 'tracker_edge_requests_total{endpoint="sales",outcome="published"} 1.0' in text
    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, 1
    )
    [call] = sales_as_read(records, edge_settings.secret)
    assert (call.status, call.reason) == ("rejected", "malformed_request")
    assert call.amount_raw.startswith("GET /sales.php?")


async def test_an_unexpected_failure_still_answers_the_gif_counted_and_logged_once(
    edge_settings: EdgeSettings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    one_warning_per_test: ThrottledLog,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in the query parser")

    # The event is made off the request path (ingest/backlog.py): a bug there is counted under
    # the handler's endpoint, logged once, and the publisher goes on with the next call.
    monkeypatch.setattr(pixel, "key_of", broken)
    async with running_edge(edge_settings) as base, aiohttp.ClientSession() as session:
        for i in range(20):
            async with session.get(f"{base}/sales.php?universe=demo&amount=1&id=b{i}") as r:
                assert r.status == 200
                assert await r.read() == PIXEL
        errors = 'tracker_edge_handler_errors_total{endpoint="sales"}'
        await eventually(lambda: metrics_text(base), lambda text: sample(text, errors) == 20)
        monkeypatch.undo()
        async with session.get(f"{base}/sales.php?universe=demo&amount=1&id=good") as r:
            assert await r.read() == PIXEL
        records = await read_topic(
            edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, 1
        )
    [call] = sales_as_read(records, edge_settings.secret)
    assert (call.transaction_id, call.status) == ("good", "accepted")
    lines = [r for r in caplog.records if r.name == handler_errors.__name__]
    assert len(lines) == 1
    assert lines[0].levelno == logging.WARNING
    assert lines[0].exc_info is None
    assert "RuntimeError" in lines[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_failure_while_answering_still_gives_the_gif_on_both_ways_to_the_pixel(
    edge_settings: EdgeSettings,
    monkeypatch: pytest.MonkeyPatch,
    one_warning_per_test: ThrottledLog,
) -> None:
    # A bug on the request path itself (not in the making of the event): the pixel answered
    # past the router (its exact path) and through it (another spelling) still gives the image,
    # the failure counted under the endpoint, instead of aiohttp's 500.
    def broken() -> str:
        raise RuntimeError("a bug while reading the call")

    monkeypatch.setattr(pixel, "new_event_id", broken)
    async with running_edge(edge_settings) as base, aiohttp.ClientSession() as session:
        for path in ("/sales.php", "/sales%2Ephp", "/sales"):
            url = URL(f"{base}{path}?universe=demo&amount=1&id=x", encoded=True)
            async with session.get(url) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "image/gif"
                assert await r.read() == PIXEL
        text = await metrics_text(base)
    assert sample(text, 'tracker_edge_handler_errors_total{endpoint="sales"}') == 3
    assert sample(text, 'tracker_edge_requests_total{endpoint="sales",outcome="published"}') == 0
