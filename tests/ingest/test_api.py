"""`POST /v1/sales` against the real broker."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import TEST_API_KEY

from helpers import eventually, read_topic, running_edge, sales_as_read
from ingest import api, handler_errors
from ingest.settings import EdgeSettings
from ingest.throttled_log import ThrottledLog
from rawhttp import chunked, exchange, request_head

AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}


async def post(base: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = io.BytesIO(body if isinstance(body, bytes) else orjson.dumps(body))
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base}/v1/sales", data=data, headers=headers if headers is not None else AUTH
        ) as response,
    ):
        return response.status, orjson.loads(await response.read())


async def test_a_batch_is_accepted_with_a_result_per_item(edge_settings: EdgeSettings) -> None:
    async with running_edge(edge_settings) as base:
        status, body = await post(
            base,
            [
                {"amount": "12,50", "id": "o-1", "customer": "c1", "currency": "eur"},
                {"universe": "demo", "amount": 7.25, "id": "o-2"},
                {"amount": "1.000,00", "id": "o-3"},
                {"amount": "5", "id": "o-4", "universe": "shop_b"},
                "not an object",
                {"amount": ["5"], "id": "o-5"},
            ],
        )
    assert status == 202
    assert (body["accepted"], body["rejected"]) == (2, 4)
    results = body["results"]
    assert [r["status"] for r in results] == [
        "accepted",
        "accepted",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
    ]
    assert results[2] == {
        "index": 2, "status": "rejected", "reason": "amount_malformed",
        "message": "amount must be digits with at most one . or , and up to 4 decimals",
    }  # fmt: skip
    assert results[3]["reason"] == "universe_not_allowed"
    assert results[4]["reason"] == "item_not_object"
    assert results[5] == {
        "index": 5,
        "status": "rejected",
        "reason": "amount_not_string",
        "message": "field amount must be a string",
    }

    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, 6
    )
    calls = sales_as_read(records, edge_settings.secret)
    accepted = sorted(
        (c.transaction_id, c.amount, c.source) for c in calls if c.status == "accepted"
    )
    assert accepted == [("o-1", "12.50", "api"), ("o-2", "7.25", "api")]
    assert len([c for c in calls if c.status == "rejected"]) == 4
    # The same dedup key as the pixel: an API report and a pixel call of o-1 meet.
    assert {r.key for r, c in zip(records, calls, strict=True) if c.transaction_id == "o-1"} == {
        b"demo\x1fo-1"
    }


async def test_a_single_object_is_a_batch_of_one(edge_settings: EdgeSettings) -> None:
    async with running_edge(edge_settings) as base:
        status, body = await post(base, {"amount": "3", "id": "solo"})
    assert status == 202
    assert body["accepted"] == 1


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key-0123456789abcdefgh"}, {"Authorization": TEST_API_KEY}],
    ids=["missing", "wrong", "not-bearer"],
)
async def test_without_a_valid_key_the_answer_is_401(
    edge_settings: EdgeSettings, headers: dict[str, str]
) -> None:
    async with running_edge(edge_settings) as base:
        status, body = await post(base, {"amount": "3", "id": "x"}, headers)
    assert status == 401
    assert body == {"error": "missing or invalid API key (Authorization: Bearer <key>)"}


async def test_malformed_json_is_400_with_the_parser_message(edge_settings: EdgeSettings) -> None:
    async with running_edge(edge_settings) as base:
        status, body = await post(base, b'{"amount": ')
    assert status == 400
    assert body["error"].startswith("body is not valid JSON: ")


async def test_a_batch_with_nothing_acceptable_is_400_with_the_reasons(
    edge_settings: EdgeSettings,
) -> None:
    async with running_edge(edge_settings) as base:
        status, body = await post(base, [{"id": "x"}, {"amount": "-1"}])
    assert status == 400
    assert [r["reason"] for r in body["results"]] == ["amount_missing", "amount_malformed"]


async def test_too_large_bodies_and_batches_are_413(edge_settings: EdgeSettings) -> None:
    async with running_edge(edge_settings) as base:
        status, body = await post(base, [{"amount": "1", "id": f"i{i}"} for i in range(1001)])
        assert (status, body) == (413, {"error": "at most 1000 sales per request, got 1001"})
        status, body = await post(base, b"[" + b" " * (2 * 2**20) + b"]")
        assert (status, body) == (413, {"error": "body larger than 1048576 bytes"})


def sales_request(body_writes: list[bytes], headers: list[tuple[str, bytes]]) -> list[bytes]:
    head = request_head(
        "POST", b"/v1/sales", [("Authorization", AUTH["Authorization"].encode()), *headers]
    )
    return [head, *body_writes]


async def test_a_body_sent_in_two_writes_is_read_whole(edge_settings: EdgeSettings) -> None:
    body = b'[{"amount": "12,50", "id": "o-1"}, {"amount": "3", "id": "o-2"}]'
    async with running_edge(edge_settings):
        response = await exchange(
            edge_settings.host, edge_settings.port,
            sales_request([body[:30], body[30:]], [("Content-Length", str(len(body)).encode())]),
            pause_s=0.3,
        )  # fmt: skip
    assert response.status == 202, response.body
    assert orjson.loads(response.body)["accepted"] == 2


async def test_a_chunked_body_is_read_whole(edge_settings: EdgeSettings) -> None:
    body = orjson.dumps([{"amount": "1", "id": f"c-{i}"} for i in range(50)])
    async with running_edge(edge_settings):
        response = await exchange(
            edge_settings.host, edge_settings.port,
            sales_request(chunked(body, size=100), [("Transfer-Encoding", b"chunked")]),
            pause_s=0.01,
        )  # fmt: skip
    assert response.status == 202, response.body
    assert orjson.loads(response.body)["accepted"] == 50


async def test_a_chunked_body_over_1_mib_is_413(edge_settings: EdgeSettings) -> None:
    body = b"[" + b" " * (2**20) + b'{"amount": "1"}]'
    async with running_edge(edge_settings):
        response = await exchange(
            edge_settings.host, edge_settings.port,
            sales_request(chunked(body), [("Transfer-Encoding", b"chunked")]),
        )  # fmt: skip
    assert response.status == 413
    assert orjson.loads(response.body) == {"error": "body larger than 1048576 bytes"}


async def test_a_1000_sale_body_sent_slowly_is_read_whole_and_published(
    edge_settings: EdgeSettings,
) -> None:
    sales = [
        {"amount": f"{i}.50", "id": f"order-{i:06d}-abcdefghijklmnopqrstuvwxyz-0123456789",
         "customer": f"customer-{i:06d}-abcdefghij", "currency": "EUR", "universe": "demo"}
        for i in range(1000)
    ]  # fmt: skip
    body = orjson.dumps(sales)
    assert 140_000 < len(body) < 170_000
    pieces = [body[i : i + 16_000] for i in range(0, len(body), 16_000)]
    async with running_edge(edge_settings):
        response = await exchange(
            edge_settings.host, edge_settings.port,
            sales_request(pieces, [("Content-Length", str(len(body)).encode())]),
            pause_s=0.05,
        )  # fmt: skip
    assert response.status == 202, response.body[:200]
    assert orjson.loads(response.body)["accepted"] == 1000
    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, 1000
    )
    assert sorted(c.transaction_id for c in sales_as_read(records, edge_settings.secret)) == sorted(
        s["id"] for s in sales
    )


async def test_a_sale_repeating_a_field_is_rejected_as_duplicate_field(
    edge_settings: EdgeSettings,
) -> None:
    async with running_edge(edge_settings) as base:
        status, body = await post(
            base, b'[{"amount": "1", "id": "d-1", "amount": "1000"}, {"amount": "2", "id": "d-2"}]'
        )
    assert status == 202
    assert body["results"][0] == {
        "index": 0, "status": "rejected", "reason": "duplicate_field",
        "message": "field amount appears more than once",
    }  # fmt: skip
    assert body["results"][1]["status"] == "accepted"


async def test_json_numbers_are_read_from_their_exact_text(edge_settings: EdgeSettings) -> None:
    async with running_edge(edge_settings) as base:
        status, body = await post(
            base,
            b'[{"amount": 1.00000000000000001, "id": "n-1"}, {"amount": 7.25, "id": "n-2"},'
            b' {"amount": 1e3, "id": "n-3"}, {"amount": 10, "id": "n-4"}]',
        )
    assert status == 202
    assert [r["status"] for r in body["results"]] == [
        "rejected", "accepted", "rejected", "accepted"
    ]  # fmt: skip
    assert [r.get("reason") for r in body["results"]] == [
        "amount_malformed", None, "amount_malformed", None
    ]  # fmt: skip
    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, 4
    )
    amounts = {c.transaction_id: c.amount for c in sales_as_read(records, edge_settings.secret)}
    assert (amounts["n-2"], amounts["n-4"]) == ("7.25", "10")
    assert amounts["n-1"] == ""


@pytest.mark.parametrize(
    "body",
    [b'{"amount": NaN}', b'[{"amount": Infinity}]', b'{"amount": -Infinity}'],
    ids=["nan", "infinity", "minus-infinity"],
)
async def test_nan_and_infinity_are_not_json(edge_settings: EdgeSettings, body: bytes) -> None:
    async with running_edge(edge_settings) as base:
        status, answer = await post(base, body)
    assert status == 400
    assert answer["error"].startswith("body is not valid JSON: ")


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"amount": "1", "id": "\\ud800"}', b'{"amount": "1"}\xff'],
    ids=["deep", "lone-surrogate", "not-utf8"],
)
async def test_unparsable_bodies_are_400_never_500(
    edge_settings: EdgeSettings, body: bytes
) -> None:
    async with running_edge(edge_settings) as base:
        status, answer = await post(base, body)
    assert status == 400
    assert answer["error"].startswith("body is not valid JSON: ")


@pytest.mark.parametrize(
    "value", [b"Bearer \xff\xfe", b"Bearer " + TEST_API_KEY.encode() + b"\xe9", b"\xff"]
)
async def test_a_key_of_raw_non_ascii_bytes_is_401_not_500(
    edge_settings: EdgeSettings, value: bytes
) -> None:
    async with running_edge(edge_settings):
        response = await exchange(
            edge_settings.host, edge_settings.port,
            [request_head("POST", b"/v1/sales", [("Authorization", value),
                                                 ("Content-Length", b"2")]) + b"{}"],
        )  # fmt: skip
    assert response.status == 401
    assert orjson.loads(response.body) == {
        "error": "missing or invalid API key (Authorization: Bearer <key>)"
    }


async def test_a_client_leaving_mid_body_is_counted_without_a_traceback(
    edge_settings: EdgeSettings, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_edge(edge_settings) as base:
        _, writer = await asyncio.open_connection(edge_settings.host, edge_settings.port)
        writer.write(sales_request([], [("Content-Length", b"1000")])[0])
        writer.write(b'[{"amount": ')
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        await writer.wait_closed()

        async def incomplete() -> str:
            async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as m:
                return await m.text()

        await eventually(
            incomplete,
            lambda text: 'endpoint="api",outcome="body_incomplete"} 1.0' in text,
            timeout=10,
        )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_unexpected_failure_is_a_json_500_counted_and_logged_once(
    edge_settings: EdgeSettings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    log = ThrottledLog(
        logging.getLogger(handler_errors.__name__), logging.WARNING, "errors", interval_s=3600
    )
    monkeypatch.setattr(handler_errors, "HANDLER_ERRORS_LOG", log)
    monkeypatch.setattr(api, "sale_call_from_values", broken)
    async with running_edge(edge_settings) as base:
        for _ in range(5):
            status, body = await post(base, {"amount": "3", "id": "x"})
            assert status == 500
            assert body == {"error": "internal error; retry (sales with an id are counted once)"}
        async with aiohttp.ClientSession() as session, session.get(base + "/metrics") as m:
            text = await m.text()
    assert 'tracker_edge_handler_errors_total{endpoint="api"} 5.0' in text
    lines = [r for r in caplog.records if r.name == handler_errors.__name__]
    assert len(lines) == 1
    assert lines[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
