"""`POST /v1/refunds` against the real broker: authenticated and bounded like sales, each
refund published as received under its sale's key."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import TEST_API_KEY

from helpers import read_topic, running_edge
from ingest.settings import EdgeSettings
from schemas.raw import decode_refund_request, decode_sale_request

AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}


async def post(base: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    # A file object: aiohttp warns that a large raw body could block the loop.
    data = io.BytesIO(body if isinstance(body, bytes) else orjson.dumps(body))
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{base}/v1/refunds", data=data, headers=headers if headers is not None else AUTH
        ) as response,
    ):
        return response.status, orjson.loads(await response.read())


async def test_refunds_are_published_as_received_under_their_sales_key(
    edge_settings: EdgeSettings,
) -> None:
    async with running_edge(edge_settings) as base:
        status, body = await post(
            base,
            [
                {"id": "o-1", "refund_id": "r-1", "amount": 12.5, "currency": "eur"},
                {"id": "o-2", "refund_id": "r-2"},
                {"id": "o-1", "refund_id": ["r-3"]},
            ],
        )
    assert status == 202
    assert [(r["status"], r.get("reason")) for r in body["results"]] == [
        ("accepted", None), ("accepted", None), ("rejected", "refund_id_not_string"),
    ]  # fmt: skip
    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, 3
    )
    published = {r.key: decode_refund_request(r.value) for r in records if r.value is not None}
    assert len(records) == 3 and all(decode_sale_request(r.value) is None for r in records)
    first = published[b"demo\x1fo-1"]
    assert first is not None
    assert first.fields == {
        "universe": "demo", "id": "o-1", "refund_id": "r-1", "amount": "12.5", "currency": "eur"
    }  # fmt: skip
    assert published[b"demo\x1fo-2"] is not None


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key-0123456789abcdefgh"}],
    ids=["missing", "wrong"],
)
async def test_refunds_without_a_valid_key_are_401(
    edge_settings: EdgeSettings, headers: dict[str, str]
) -> None:
    async with running_edge(edge_settings) as base:
        status, body = await post(base, {"id": "o-1", "refund_id": "r-1"}, headers)
    assert status == 401
    assert body == {"error": "missing or invalid API key (Authorization: Bearer <key>)"}


async def test_refund_bodies_are_bounded_and_read_like_sales(edge_settings: EdgeSettings) -> None:
    async with running_edge(edge_settings) as base:
        status, body = await post(base, b'{"id": ')
        assert status == 400 and body["error"].startswith("body is not valid JSON: ")
        many = [{"id": f"o-{i}", "refund_id": "r"} for i in range(1001)]
        assert await post(base, many) == (
            413, {"error": "at most 1000 items per request, got 1001"}
        )  # fmt: skip
        assert await post(base, b"[" + b" " * (2 * 2**20) + b"]") == (
            413, {"error": "body larger than 1048576 bytes"}
        )  # fmt: skip
        status, body = await post(base, [{"refund_id": "r-1"}])
        assert status == 400 and body["results"][0]["reason"] == "id_invalid"
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{base}/v1/refunds", headers=AUTH) as response,
        ):
            assert response.status == 405
