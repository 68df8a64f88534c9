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

from ingest.api import _dumps, authorized_items, error, item_values
from ingest.handler_errors import handler_failed
from ingest.ids import new_event_id
from ingest.privacy import request_client_hash
from ingest.state import METRICS, PUBLISHER, SETTINGS
from schemas.raw import RefundRequest, encode_raw, kafka_key
from schemas.refunds import REFUND_FIELDS, read_refund
from schemas.rules import reason_message

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
    accepted = 0
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
        if refund.status == "accepted":
            accepted += 1
            results.append({"index": index, "status": "accepted", "event_id": raw.event_id})
        else:
            metrics.rejects.labels(refund.reason).inc()
            results.append(
                {"index": index, "status": "rejected", "reason": refund.reason,
                 "message": message or reason_message(refund.reason)}
            )  # fmt: skip
    metrics.requests.labels(ENDPOINT, "accepted" if accepted else "rejected").inc()
    return web.json_response(
        {"accepted": accepted, "rejected": len(items) - accepted, "results": results},
        status=202 if accepted else 400, dumps=_dumps,
    )  # fmt: skip
