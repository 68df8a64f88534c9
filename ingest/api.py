"""`POST /v1/sales`: sales reported by merchants' back ends (no ad-blocker loses those).

Authenticated per universe by a bearer API key. The body is one sale object or an array of
them; each becomes the same event as a pixel call (source "api"), with the same dedup key.
Answers 202 with a result per item when at least one was accepted, else 400; 401 without a
valid key; 413 when the body or the batch is too large. Rejected items are published too, so
that ops see every call.
"""

from __future__ import annotations

import hmac
import time
from decimal import Decimal
from typing import Any, Final

import orjson
from aiohttp import web

from ingest.ids import new_event_id
from ingest.pixel import resolve_context
from ingest.privacy import client_address, client_hash
from ingest.salecall import sale_call_from_values
from ingest.state import METRICS, PUBLISHER, SETTINGS
from schemas.events import encode

MAX_BODY_BYTES: Final = 1 * 2**20
MAX_ITEMS: Final = 1000
_FIELDS: Final = ("universe", "amount", "id", "customer", "click", "currency")


def _dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, dumps=_dumps)


def universe_of_key(api_keys: dict[str, str] | Any, header: str) -> str | None:
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        return None
    found = None
    for known, universe in api_keys.items():
        # Compare with every key, in constant time, so timing says nothing about them.
        if hmac.compare_digest(known.encode(), key.strip().encode()):
            found = universe
    return found


def item_values(item: object, universe: str) -> tuple[dict[str, str], str, str]:
    """(values, problem, message) of one JSON item, in the pixel's terms."""
    if not isinstance(item, dict):
        return {}, "item_not_object", "each sale must be a JSON object"
    values: dict[str, str] = {}
    for name in _FIELDS:
        value = item.get(name)
        if value is None:
            continue
        if name == "amount" and isinstance(value, int | float) and not isinstance(value, bool):
            # JSON numbers arrive as floats; repr gives back the shortest exact text.
            value = format(Decimal(repr(value)), "f") if isinstance(value, float) else str(value)
        if not isinstance(value, str):
            return {}, f"{name}_not_string", f"field {name} must be a string"
        values[name] = value
    if values.setdefault("universe", universe) != universe:
        return values, "universe_not_allowed", "this API key may not report sales of that universe"
    return values, "", ""


async def report_sales(request: web.Request) -> web.Response:  # noqa: PLR0911 - one per error
    app = request.app
    settings = app[SETTINGS]
    metrics = app[METRICS]
    universe = universe_of_key(settings.api_keys, request.headers.get("Authorization", ""))
    if universe is None:
        metrics.requests.labels("api", "unauthorized").inc()
        return error(401, "missing or invalid API key (Authorization: Bearer <key>)")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        metrics.requests.labels("api", "too_large").inc()
        return error(413, f"body larger than {MAX_BODY_BYTES} bytes")
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        metrics.requests.labels("api", "too_large").inc()
        return error(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        metrics.requests.labels("api", "bad_json").inc()
        return error(400, f"body is not valid JSON: {e}")
    items = data if isinstance(data, list) else [data]
    if not items:
        return error(400, "no sale in the body")
    if len(items) > MAX_ITEMS:
        metrics.requests.labels("api", "too_large").inc()
        return error(413, f"at most {MAX_ITEMS} sales per request, got {len(items)}")

    received_at_ms = time.time_ns() // 1_000_000
    address = client_address(
        request.remote, request.headers.get("X-Forwarded-For"), settings.trusted_proxy_hops
    )
    hashed = client_hash(settings.secret, address)
    results: list[dict[str, object]] = []
    accepted = 0
    for index, item in enumerate(items):
        values, problem, message = item_values(item, universe)
        call = sale_call_from_values(
            values, problem, event_id=new_event_id(), received_at_ms=received_at_ms,
            source="api", client_hash=hashed,
            context=lambda universe, click_id: resolve_context(
                click_id, "", universe=universe, now_ms=received_at_ms, settings=settings,
                metrics=metrics,
            ),
        )  # fmt: skip
        app[PUBLISHER].publish(settings.topics.sales, call.kafka_key(), encode(call))
        if call.status == "accepted":
            accepted += 1
            results.append({"index": index, "status": "accepted", "event_id": call.event_id})
        else:
            metrics.rejects.labels(call.reason).inc()
            results.append(
                {"index": index, "status": "rejected", "reason": call.reason,
                 "message": message or REASONS.get(call.reason, call.reason)}
            )  # fmt: skip
    status = 202 if accepted else 400
    metrics.requests.labels("api", "accepted" if accepted else "rejected").inc()
    return web.json_response(
        {"accepted": accepted, "rejected": len(items) - accepted, "results": results},
        status=status, dumps=_dumps,
    )  # fmt: skip


REASONS: Final = {
    "universe_missing": "universe is required",
    "universe_invalid": "universe must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}",
    "amount_missing": "amount is required",
    "amount_malformed": "amount must be digits with at most one . or , and up to 4 decimals",
    "amount_too_large": "amount must be at most 1000000000",
    "id_invalid": "id must be 1-128 printable ASCII characters without spaces",
    "customer_invalid": "customer must be 1-128 printable ASCII characters without spaces",
    "click_invalid": "click must be at most 512 printable ASCII characters",
    "currency_invalid": "currency must be a 3-letter ISO 4217 code",
}
