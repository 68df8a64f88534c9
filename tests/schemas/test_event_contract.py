"""The event contract for downstream consumers (schemas/json/, docs/events.md).

The committed JSON Schemas are what the event types generate; every message the real edge
publishes to the real broker, odd calls included, validates against them, and so does the
committed version-1 log; a message the projector refuses does not; and the librdkafka
example of docs/events.md reads what the edge published.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import TEST_API_KEY
from jsonschema import Draft202012Validator
from yarl import URL

from helpers import produce, read_topic, running_edge
from ingest.settings import EdgeSettings
from projector.settings import ProjectorSettings
from rawhttp import exchange, request_head
from schemas.contract import SCHEMA_DIR, Event, differences, event_schema, write
from schemas.events import EventDecodeError, decode_click, decode_sale
from schemas.raw import (
    QUERY_MAX,
    SaleRequest,
    decode_click_request,
    decode_refund_request,
    decode_sale_request,
)
from schemas.signing import Link, link_url

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
EXAMPLE = ROOT / "docs" / "examples" / "consume_sales.py"


def committed(topic: str) -> Draft202012Validator:
    """The committed schema file of a topic, as a consumer would load it."""
    schema = json.loads((SCHEMA_DIR / f"{topic}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def violations(validator: Draft202012Validator, value: bytes) -> list[str]:
    return [e.message for e in validator.iter_errors(json.loads(value))]


async def run(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_committed_schemas_are_what_the_event_types_generate() -> None:
    assert differences() == []
    # As the docs tell a developer to run it, in a process of its own.
    code, _, err = await run(sys.executable, "-m", "schemas.contract", "--check")
    assert (code, err) == (0, "")


def test_the_check_names_every_stale_missing_or_extra_schema_file(tmp_path: Path) -> None:
    write(tmp_path)
    assert differences(tmp_path) == []
    (tmp_path / "sales.schema.json").write_text("{}\n")
    (tmp_path / "click.v1.schema.json").unlink()
    (tmp_path / "old.schema.json").write_text("{}\n")
    assert differences(tmp_path) == [
        "click.v1.schema.json: missing",
        "old.schema.json: not generated",
        "sales.schema.json: differs",
    ]


def test_an_event_field_without_a_description_cannot_reach_the_schemas() -> None:
    class Extended(SaleRequest, frozen=True, kw_only=True, tag=2):
        campaign: str = ""

    with pytest.raises(ValueError, match=r"fields without a description \[.*'campaign'"):
        event_schema(Event("extended.v2", Extended, "sales", "for the test"))


async def post_json(session: aiohttp.ClientSession, base: str, body: bytes) -> int:
    headers = {"Authorization": f"Bearer {TEST_API_KEY}", "Content-Type": "application/json"}
    async with session.post(base + "/v1/sales", data=body, headers=headers) as response:
        await response.read()
        return response.status


PIXEL_PATHS = [
    "/sales.php?universe=demo&amount=12,50&id=t1",
    "/sales?universe=demo&amount=3.00&id=t2&customer=c1&currency=eur&utm=x",
    "/sales.php",
    "/sales.php?universe=demo&amount=%zz&id=t3",
    "/sales.php?universe=demo&amount=10&id=%ff%fe",
    "/sales.php?universe=demo&amount=10&amount=20",
    "/sales.php?%00=%00&universe=%0d%0aSet-Cookie:x=y&amount=1",
    "/sales.php?universe=d%1Femo&amount=1&id=a%1Fb",  # the key separator inside values
    "/sales.php?universe=" + "u" * 30_000 + "&amount=1",
    "/sales.php?" + "&".join(f"k{i}=v" for i in range(100)),
]
API_BODIES = [
    b'[{"amount": 7.25, "id": "o-1", "customer": "c9", "currency": "EUR"}, 5,'
    b' {"amount": true}, {"universe": "shop_b", "amount": "1"}]',
    b'{"amount": "1", "id": "o-2", "amount": "2"}',
]


async def test_every_message_the_edge_publishes_validates_against_the_committed_schemas(
    edge_settings: EdgeSettings,
) -> None:
    link = Link(universe="demo", customer_id="alice", campaign_id="spring", link_id="hero",
                target="https://shop.example/landing", product="newsletter")  # fmt: skip
    async with running_edge(edge_settings) as base, aiohttp.ClientSession() as session:
        for path in PIXEL_PATHS:
            async with session.get(URL(base + path, encoded=True)) as response:
                assert response.status == 200
        async with session.head(base + "/sales.php?universe=demo&amount=1&id=t4") as response:
            assert response.status == 200
        host, port = edge_settings.host, edge_settings.port
        # Raw bytes the HTTP client will not send: a cookie that is not UTF-8, a request line
        # the HTTP parser refuses (published with problem malformed_request).
        cookie = b"trk_demo=v1.\xff\xfe; session=secret; trk_other=x"
        odd = request_head("GET", b"/sales.php?universe=demo&amount=1&id=t5", [("Cookie", cookie)])
        assert (await exchange(host, port, [odd])).status == 200
        refused = request_head("GET", b"/sales.php?universe=demo&amount=1&id=a\x01b")
        assert (await exchange(host, port, [refused])).status == 200
        for body in API_BODIES:
            assert await post_json(session, base, body) in (202, 400)
        url = link_url(base, edge_settings.secret, link)
        async with session.get(URL(url, encoded=True), allow_redirects=False) as response:
            assert response.status == 302

    bootstrap = edge_settings.kafka.bootstrap[0]
    sales = await read_topic(bootstrap, edge_settings.kafka.topics.sales, len(PIXEL_PATHS) + 3 + 5)
    [click] = await read_topic(bootstrap, edge_settings.kafka.topics.clicks, 1)
    assert len(sales) == len(PIXEL_PATHS) + 3 + 5

    sales_schema, clicks_schema = committed("sales"), committed("clicks")
    assert {r.key: violations(sales_schema, r.value) for r in sales} == {r.key: [] for r in sales}
    assert violations(clicks_schema, click.value) == []
    assert click.key == b"demo\x1falice"

    # Every odd shape the docs describe was in what was validated, so none went unchecked.
    events: list[dict[str, Any]] = [json.loads(r.value) for r in sales]
    assert {e["v"] for e in events} == {2}
    assert {e["source"] for e in events} == {"pixel", "api"}
    assert {e.get("problem", "") for e in events} == {
        "", "malformed_request", "item_not_object", "amount_not_string", "universe_not_allowed",
        "duplicate_field",
    }  # fmt: skip
    assert [len(e["query"]) for e in events if e.get("too_long") == "query"] == [QUERY_MAX]
    [with_cookies] = [e for e in events if "cookies" in e]
    assert with_cookies["cookies"] == r"trk_demo=v1.\xff\xfe; trk_other=x"  # ours only, escaped
    # Absent means empty: the edge omits empty fields instead of writing "".
    assert all("" not in e.values() and {} not in e.values() for e in events)

    def key_of(fragment: str) -> bytes:
        keys: list[bytes] = [
            r.key for e, r in zip(events, sales, strict=True)
            if e.get("query", "").endswith(fragment) or e.get("fields", {}).get("id") == fragment
        ]  # fmt: skip
        [key] = keys
        return key

    # Universe, 0x1F, transaction id (the event id when there is none), as parsed: a rejected
    # call's key holds whatever it sent, the separator included, so read values, not keys.
    assert key_of("id=t1") == b"demo\x1ft1"
    assert key_of("o-1") == b"demo\x1fo-1"
    assert key_of("id=a%1Fb") == b"d\x1femo\x1fa\x1fb"
    [(bare, bare_key)] = [(e, r.key) for e, r in zip(events, sales, strict=True)
                          if e["source"] == "pixel" and "query" not in e]  # fmt: skip
    assert bare_key == b"\x1f" + bare["event_id"].encode()


def test_the_version_1_log_the_projector_still_reads_validates_against_the_committed_schemas() -> (
    None
):
    records = [orjson.loads(line) for line in (FIXTURES / "v1_log.jsonl").read_bytes().splitlines()]
    validators = {"sales": committed("sales"), "clicks": committed("clicks")}
    assert {r["topic"] for r in records} == set(validators)
    for record in records:
        value = record["value"].encode()
        assert violations(validators[record["topic"]], value) == [], record
        assert json.loads(value)["v"] == 1


V2_SALE = {"v": 2, "event_id": "e1", "received_at_ms": 1, "source": "pixel", "query": "a=1"}
REFUND = {"v": 3, "event_id": "r1", "received_at_ms": 1, "fields": {"id": "t1", "refund_id": "a"}}
V1_CLICK = {
    "event_id": "c1", "clicked_at_ms": 1, "universe": "demo", "customer_id": "alice",
    "campaign_id": "k", "link_id": "l", "product": "", "client_hash": "", "v": 1,
}  # fmt: skip


def sale_decodes(value: bytes) -> bool:
    if decode_sale_request(value) is not None or decode_refund_request(value) is not None:
        return True
    try:
        decode_sale(value)
    except EventDecodeError:
        return False
    return True


def click_decodes(value: bytes) -> bool:
    if decode_click_request(value) is not None:
        return True
    try:
        decode_click(value)
    except EventDecodeError:
        return False
    return True


@pytest.mark.parametrize(
    ("topic", "event", "valid"),
    [
        ("sales", V2_SALE, True),
        ("sales", {**V2_SALE, "added_later": "x"}, True),  # unknown fields are ignored
        ("sales", {**V2_SALE, "v": 4}, False),
        ("sales", REFUND, True),
        ("sales", {**REFUND, "fields": {"amount": 1}}, False),
        ("sales", {k: v for k, v in REFUND.items() if k != "received_at_ms"}, False),
        ("sales", {**V2_SALE, "received_at_ms": -1}, False),
        ("sales", {**V2_SALE, "source": "email"}, False),
        ("sales", {**V2_SALE, "fields": {"amount": 1}}, False),
        ("sales", {k: v for k, v in V2_SALE.items() if k != "event_id"}, False),
        ("clicks", V1_CLICK, True),
        ("clicks", {**V1_CLICK, "v": 7}, False),
        ("clicks", {**V1_CLICK, "clicked_at_ms": "1"}, False),
        ("clicks", {k: v for k, v in V1_CLICK.items() if k != "product"}, False),
    ],
)
def test_the_schemas_accept_what_the_projector_decodes_and_refuse_what_it_refuses(
    topic: str, event: dict[str, Any], valid: bool
) -> None:
    value = json.dumps(event).encode()
    decodes = sale_decodes if topic == "sales" else click_decodes
    assert (not violations(committed(topic), value), decodes(value)) == (valid, valid)


async def test_the_documented_librdkafka_consumer_reads_what_the_edge_published(
    edge_settings: EdgeSettings, projector_settings: ProjectorSettings, isolation: str
) -> None:
    async with running_edge(edge_settings) as base, aiohttp.ClientSession() as session:
        async with session.get(base + "/sales.php?universe=demo&amount=12,50&id=t1") as response:
            assert response.status == 200
        assert await post_json(session, base, b'{"amount": 3, "id": "o-1"}') == 202
    # Then a call of an old log, and one of a version the example does not know.
    old = next(r for r in map(orjson.loads, (FIXTURES / "v1_log.jsonl").read_bytes().splitlines())
               if r["topic"] == "sales")  # fmt: skip
    future = json.dumps({**V2_SALE, "v": 3}).encode()
    await produce(projector_settings, [(old["key"].encode(), old["value"].encode()),
                                       (b"demo\x1ffuture", future)])  # fmt: skip

    code, out, err = await run(
        sys.executable, str(EXAMPLE), "--bootstrap", edge_settings.kafka.bootstrap[0],
        "--topic", edge_settings.kafka.topics.sales, "--group", f"{isolation}-reader",
        "--max-messages", "4", "--idle-timeout", "20",
    )  # fmt: skip
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert {x["source"]: (x["key_universe"], x["key_unique"], x["parameters"])
            for x in lines if x["v"] == 2} == {
        "api": ("demo", "o-1", {"universe": "demo", "amount": "3", "id": "o-1"}),
        "pixel": ("demo", "t1", {"universe": "demo", "amount": "12,50", "id": "t1"}),
    }  # fmt: skip
    [v1] = [x for x in lines if x["v"] == 1]  # and the version-3 message was skipped
    assert (v1["key_universe"], v1["key_unique"], v1["parameters"]) == (
        "shop_b", "tx0", {"universe": "shop_b", "id": "tx0", "amount": "45315.79",
                          "customer": "cust26"},
    )  # fmt: skip
    assert len(lines) == 3 and all(x["edge_reason"] == "" for x in lines), err
