"""`POST /v1/refunds`: refunds reported by merchants' back ends, authenticated like sales.

Only here: the pixel has no refund path, so nothing a browser can call lowers a turnover.
Each refund object is published as received (``schemas/raw.py`` ``RefundRequest``) under its
sale's Kafka key, so it shares the sale's partition and the log orders the two. The answer
checks the object's shape at once (the same reading the projector applies); whether the sale
is counted and has enough left is decided by the projector, in log order, and recorded in
``refunds_calls``.
"""

from __future__ import annotations

import time

from aiohttp import web

from ingest.api import authorized_items, error, item_result, item_values, items_answer
from ingest.handler_errors import handler_failed
from ingest.ids import new_event_id
from ingest.privacy import request_client_hash
from ingest.state import METRICS, PUBLISHER, SETTINGS
from schemas.raw import RefundRequest, encode_raw, kafka_key
from schemas.refunds import REFUND_FIELDS, read_refund

ENDPOINT = "refunds"


async def report_refunds(request: web.Request) -> web.Response:
    try:
        return await _report_refunds(request)
    except web.HTTPException:
        raise  # aiohttp's own answers
    except Exception as e:
        handler_failed(request.app[METRICS], ENDPOINT, e, "answered 500")
        return error(500, "internal error; retry (a refund id is counted once)")


async def _report_refunds(request: web.Request) -> web.Response:
    found = await authorized_items(request, ENDPOINT)
    if isinstance(found, web.Response):
        return found
    universe, items = found
    app = request.app
    settings = app[SETTINGS]
    metrics = app[METRICS]
    received_at_ms = time.time_ns() // 1_000_000
    hashed = request_client_hash(request, settings)
    results: list[dict[str, object]] = []
    for index, item in enumerate(items):
        values, problem, message = item_values(item, universe, REFUND_FIELDS)
        raw = RefundRequest(
            event_id=new_event_id(), received_at_ms=received_at_ms, fields=values,
            problem=problem, client_hash=hashed,
        )  # fmt: skip
        refund = read_refund(raw)
        # The sale's key: a refund without a transaction id is its own (rejected) record.
        key = kafka_key(values.get("universe", universe), values.get("id") or raw.event_id)
        app[PUBLISHER].publish(settings.kafka.topics.sales, key, encode_raw(raw))
        results.append(
            item_result(
                metrics,
                index,
                raw.event_id,
                status=refund.status,
                reason=refund.reason,
                message=message,
            )
        )
    return items_answer(metrics, ENDPOINT, results)
