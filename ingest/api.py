"""`POST /v1/sales`: sales reported by merchants' back ends (no ad-blocker loses those).

Authenticated per universe by a bearer API key. The body is one sale object or an array of
them; each becomes the same event as a pixel call (source "api"), with the same dedup key.
Answers 202 with a result per item when at least one was accepted, else 400; 401 without a
valid key; 413 when the body or the batch is too large. Rejected items are published too, so
that ops see every call.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader

from ingest.handler_errors import handler_failed
from ingest.ids import new_event_id
from ingest.metrics import EdgeMetrics
from ingest.privacy import request_client_hash
from ingest.state import METRICS, PUBLISHER, REGISTRY, SETTINGS
from schemas.raw import SaleRequest, encode_raw, kafka_key
from schemas.reasons import Reason
from schemas.rules import reason_message, sale_call_from_values
from schemas.unicode import is_unicode
from schemas.universes import judge

MAX_BODY_BYTES: Final = 1 * 2**20
MAX_ITEMS: Final = 1000
_FIELDS: Final = ("universe", "amount", "id", "customer", "click", "currency")


def _dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, dumps=_dumps)


def bearer_key(header: str) -> str:
    """The key of an ``Authorization: Bearer <key>`` header ("" when there is none)."""
    scheme, _, key = header.partition(" ")
    key = key.strip()
    # Header bytes that are not ASCII arrive surrogate-escaped: no key of ours looks like that,
    # and such a string could not even be encoded to be compared.
    if scheme.lower() != "bearer" or not key.isascii():
        return ""
    return key


def universe_of_key(api_keys: dict[str, str] | Any, header: str) -> str | None:
    key = bearer_key(header)
    if not key:
        return None
    found = None
    for known, universe in api_keys.items():
        # Compare with every key, in constant time, so timing says nothing about them.
        if hmac.compare_digest(known.encode(), key.encode()):
            found = universe
    return found


def key_universe(app: web.Application, header: str) -> str | None:
    """The universe of the request's key: the environment's keys, then the registry's
    (stored hashed; `python -m projector universes key add`)."""
    found = universe_of_key(app[SETTINGS].api_keys, header)
    return found or app[REGISTRY].universe_of_key(bearer_key(header))


async def read_body(content: StreamReader, limit: int) -> bytes | None:
    """The whole body, however it arrives (in pieces, chunked), or None once past ``limit``.

    ``content.read(n)`` alone answers with whatever part has arrived so far.
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class JsonNumber:
    """A JSON number as written: an amount is read from this exact text, never via a float."""

    text: str


class JsonObject(dict[str, Any]):
    """A JSON object that remembers its first repeated key (``repeated``, "" when none).

    JSON parsers disagree on which of two values of a key wins, so a sale that repeats a
    field is refused rather than guessed at. The first value is kept, for diagnosis.
    """

    __slots__ = ("repeated",)

    def __init__(self, pairs: Iterable[tuple[str, Any]]) -> None:
        super().__init__()
        self.repeated = ""
        for key, value in pairs:
            # A lone surrogate escape ("\\ud800") is no character; a string holding one could
            # not be encoded into the event. JSON parsers that check refuse it, as we do.
            if not is_unicode(key) or (isinstance(value, str) and not is_unicode(value)):
                raise ValueError("a string holds a lone surrogate escape (not Unicode)")
            if key in self:
                self.repeated = self.repeated or key
            else:
                self[key] = value


def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not a JSON value")


def parse_json(body: bytes) -> Any:
    """The body's JSON; raise ValueError (RecursionError when nested too deep) if it is none.

    The standard library's parser, for its hooks: numbers keep their text, objects see their
    repeated keys, and NaN/Infinity (which it would accept) are refused. The API is not the
    edge's hot path.
    """
    return json.loads(
        body.decode(), object_pairs_hook=JsonObject, parse_float=JsonNumber,
        parse_int=JsonNumber, parse_constant=_not_json,
    )  # fmt: skip


def item_values(
    item: object, universe: str, fields: tuple[str, ...] = _FIELDS
) -> tuple[dict[str, str], str, str]:
    """(values, problem, message) of one JSON item, in the pixel's terms (``fields``: the
    names it may have; a refund's are not a sale's)."""
    if not isinstance(item, dict):
        return {}, Reason.ITEM_NOT_OBJECT, reason_message(Reason.ITEM_NOT_OBJECT)
    values: dict[str, str] = {}
    for name in fields:
        value = item.get(name)
        if value is None:
            continue
        if name == "amount" and isinstance(value, JsonNumber):
            # Its exact text: the pixel's rules then apply (no exponent, at most 4 decimals).
            value = value.text
        if not isinstance(value, str):
            problem = Reason.NOT_STRING.code(name)
            return {}, problem, reason_message(problem)
        values[name] = value
    if values.setdefault("universe", universe) != universe:
        return values, Reason.UNIVERSE_NOT_ALLOWED, reason_message(Reason.UNIVERSE_NOT_ALLOWED)
    repeated = item.repeated if isinstance(item, JsonObject) else ""
    if repeated:
        message = reason_message(Reason.DUPLICATE_FIELD, name=repeated)
        return values, Reason.DUPLICATE_FIELD, message
    return values, "", ""


async def report_sales(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        return await _report_sales(request)
    except web.HTTPException:
        raise  # aiohttp's own answers
    except Exception as e:
        # Counted and logged (rate-limited), never a traceback per request.
        handler_failed(request.app[METRICS], "api", e, "answered 500")
        return error(500, "internal error; retry (sales with an id are counted once)")
    finally:
        request.app[METRICS].api_seconds.observe(time.perf_counter() - started)


async def _report_sales(request: web.Request) -> web.Response:
    app = request.app
    settings = app[SETTINGS]
    metrics = app[METRICS]
    authorized = await authorized_items(request, "api", noun="sales")
    if isinstance(authorized, web.Response):
        return authorized
    universe, items = authorized

    received_at_ms = time.time_ns() // 1_000_000
    hashed = request_client_hash(request, settings)
    results: list[dict[str, object]] = []
    for index, item in enumerate(items):
        values, problem, message = item_values(item, universe)
        # The answer needs today's rules at once (the same module the projector reads the
        # published event with); the event itself carries the fields as received.
        event_id = new_event_id()
        call = sale_call_from_values(
            values, problem, event_id=event_id, received_at_ms=received_at_ms, source="api"
        )
        call = judge(call, app[REGISTRY].reader.registry)  # the projector will judge it alike
        raw = SaleRequest(
            event_id=event_id, received_at_ms=received_at_ms, source="api", fields=values,
            problem=problem, client_hash=hashed,
        )  # fmt: skip
        key = kafka_key(values.get("universe", universe), values.get("id") or event_id)
        app[PUBLISHER].publish(settings.kafka.topics.sales, key, encode_raw(raw))
        results.append(
            item_result(
                metrics, index, event_id, status=call.status, reason=call.reason, message=message
            )
        )
    return items_answer(metrics, "api", results)


def item_result(
    metrics: EdgeMetrics, index: int, event_id: str, *, status: str, reason: str, message: str
) -> dict[str, object]:
    """One item's entry in the API's answer (a rejected one is counted by reason)."""
    if status == "accepted":
        return {"index": index, "status": "accepted", "event_id": event_id}
    metrics.rejects.labels(reason).inc()
    return {
        "index": index, "status": "rejected", "reason": reason,
        "message": message or reason_message(reason),
    }  # fmt: skip


def items_answer(
    metrics: EdgeMetrics, endpoint: str, results: list[dict[str, object]]
) -> web.Response:
    """202 with every item's result when one was accepted, else 400."""
    accepted = sum(1 for r in results if r["status"] == "accepted")
    metrics.requests.labels(endpoint, "accepted" if accepted else "rejected").inc()
    return web.json_response(
        {"accepted": accepted, "rejected": len(results) - accepted, "results": results},
        status=202 if accepted else 400, dumps=_dumps,
    )  # fmt: skip


async def authorized_items(  # noqa: PLR0911 - one per error
    request: web.Request, endpoint: str, *, noun: str = "items"
) -> tuple[str, list[Any]] | web.Response:
    """(the key's universe, the body's items), or the error answer: the key check (the
    environment's keys and the registry's), body limits and JSON reading of every endpoint
    of the API (``POST /v1/sales``, ``POST /v1/refunds``). ``noun`` names the items in the
    answers ("no sale in the body")."""
    metrics = request.app[METRICS]
    universe = key_universe(request.app, request.headers.get("Authorization", ""))
    if universe is None:
        metrics.requests.labels(endpoint, "unauthorized").inc()
        return error(401, "missing or invalid API key (Authorization: Bearer <key>)")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        metrics.requests.labels(endpoint, "too_large").inc()
        return error(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        body = await read_body(request.content, MAX_BODY_BYTES)
    except HttpProcessingError as e:
        metrics.requests.labels(endpoint, "bad_body").inc()
        return error(400, f"body could not be read: {e.message}")
    except ConnectionError:
        metrics.requests.labels(endpoint, "body_incomplete").inc()
        return error(400, "the connection was lost before the body arrived")
    if body is None:
        metrics.requests.labels(endpoint, "too_large").inc()
        return error(413, f"body larger than {MAX_BODY_BYTES} bytes")
    try:
        data = parse_json(body)
    except ValueError as e:
        metrics.requests.labels(endpoint, "bad_json").inc()
        return error(400, f"body is not valid JSON: {e}")
    except RecursionError:
        metrics.requests.labels(endpoint, "bad_json").inc()
        return error(400, "body is not valid JSON: nested too deeply")
    items = data if isinstance(data, list) else [data]
    if not items:
        return error(400, f"no {noun.removesuffix('s')} in the body")
    if len(items) > MAX_ITEMS:
        metrics.requests.labels(endpoint, "too_large").inc()
        return error(413, f"at most {MAX_ITEMS} {noun} per request, got {len(items)}")
    return universe, items
