"""`POST /v1/sales` against the real broker."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import TEST_API_KEY

from helpers import read_topic, running_edge
from ingest.settings import EdgeSettings
from schemas.events import decode_sale

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

    records = await read_topic(edge_settings.kafka_bootstrap[0], edge_settings.topics.sales, 6)
    calls = [decode_sale(r.value) for r in records]
    accepted = sorted(
        (c.transaction_id, c.amount, c.source) for c in calls if c.status == "accepted"
    )
    assert accepted == [("o-1", "12.50", "api"), ("o-2", "7.25", "api")]
    assert len([c for c in calls if c.status == "rejected"]) == 4
    # The same dedup key as the pixel: an API report and a pixel call of o-1 meet.
    assert {r.key for r in records if decode_sale(r.value).transaction_id == "o-1"} == {
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
