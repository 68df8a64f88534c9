"""The projector's reading of what the edge received (``schemas/raw.py``), under given rules.

Pure: no I/O, no clock. The edge publishes each call and click as it arrived; the typed
events of ``schemas/events.py`` (version 1, once the edge's own reading) stay the projector's
interpreted form, so the ledger, dedup and attribution do not care which version a message
was. A raw call yields exactly the :class:`SaleCall` the edge used to publish for the same
request, under :data:`schemas.rules.DEFAULT_RULES`; under other rules (a rebuild after a rule
changed) history is read anew.
"""

from __future__ import annotations

from typing import Any

import msgspec
import orjson

from schemas.events import (
    Click,
    ClickContext,
    EventDecodeError,
    SaleCall,
    decode_click,
    decode_sale,
)
from schemas.raw import (
    RAW_SCHEMA_VERSION,
    ClickRequest,
    SaleRequest,
    decode_click_request,
    decode_sale_request,
)
from schemas.reasons import Reason
from schemas.rules import (
    RAW_KEEP,
    Rules,
    cookie_name,
    parse_link,
    parse_query,
    resolve_context,
    sale_call_from_values,
)
from schemas.signing import SignatureError, verify_link
from schemas.universes import Registry, judge

ContextOutcomes = list[tuple[str, str]]


class ClickRefused(EventDecodeError):
    """A raw click that does not verify under the rules and secret in force: a dead letter.

    The edge verified it before redirecting, so this means a rule or the secret changed
    since (or the message was not written by our edge).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"click does not verify under today's rules: {reason}")
        self.reason = reason


def cookie_value(cookies: str, name: str) -> str:
    """The value of cookie ``name`` in a ``name=value; name=value`` header ("" if absent).

    Read as aiohttp read ``request.cookies`` for the edge: the last of repeated names wins
    and a double-quoted value is unquoted.
    """
    found = ""
    for part in cookies.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip() == name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            found = value
    return found


def interpret_sale(
    raw: SaleRequest, *, secret: str, window_ms: int, rules: Rules, registry: Registry | None = None
) -> tuple[SaleCall, ContextOutcomes]:
    """The call ``raw`` describes, and what was seen of its click context (for a metric);
    under ``registry`` when given (schemas.universes.judge)."""
    if raw.source == "pixel" and raw.problem == Reason.MALFORMED_REQUEST:
        # What the edge marks for a request line aiohttp refused. Nothing was parsed: the
        # escaped request line is kept for diagnosis, as the edge did.
        return SaleCall(
            event_id=raw.event_id, received_at_ms=raw.received_at_ms, source="pixel",
            status="rejected", reason=Reason.MALFORMED_REQUEST, universe="", transaction_id="",
            amount="", amount_raw=raw.query[:RAW_KEEP], currency="", customer_id="",
            click_id="", client_hash=raw.client_hash,
        ), []  # fmt: skip
    if raw.source == "api":
        values, problem = dict(raw.fields), ""
    else:
        values, problem = parse_query(raw.query)
    # The edge's structural refusal comes first, then a cut value: a cut query or cookie
    # header could read as a different, valid call. What was parsed of it is still kept
    # (bounded), so ops see whose call it was.
    problem = raw.problem or (Reason.TOO_LONG if raw.too_long else "") or problem
    outcomes: ContextOutcomes = []

    def context(universe: str, click_id: str) -> ClickContext | None:
        # The API has no cookie: its context is the click id alone, as at the edge.
        cookie = "" if raw.source == "api" else cookie_value(raw.cookies, cookie_name(universe))
        window = window_ms if registry is None else registry.window_ms(universe, window_ms)
        click, seen = resolve_context(
            click_id, cookie, universe=universe, now_ms=raw.received_at_ms, secret=secret,
            window_ms=window,
        )  # fmt: skip
        outcomes.extend(seen)
        return click

    call = sale_call_from_values(
        values, problem, event_id=raw.event_id, received_at_ms=raw.received_at_ms,
        source=raw.source, context=context, client_hash=raw.client_hash, rules=rules,
    )  # fmt: skip
    if registry is not None:
        call = judge(call, registry)
    return call, outcomes


def interpret_click(raw: ClickRequest, *, secret: str, rules: Rules) -> Click:
    """The click ``raw`` describes; raise :class:`ClickRefused` when its link does not verify."""
    try:
        link, signature = parse_link(raw.query, rules)
        verify_link(secret, link, signature)
    except SignatureError as e:
        raise ClickRefused(e.reason) from None
    return Click.of(link.click(raw.clicked_at_ms, raw.event_id), client_hash=raw.client_hash)


def read_sale(
    payload: bytes | None,
    *,
    secret: str,
    window_ms: int,
    rules: Rules,
    registry: Registry | None = None,
) -> tuple[SaleCall, ContextOutcomes]:
    """A sales message of either version as the projector's call; raise EventDecodeError.

    Version 2 (as received) is interpreted now; version 1 (the edge's reading, in logs
    written before) is taken as it is, so old logs project to the same tables as ever.
    """
    raw = decode_sale_request(payload)
    if raw is not None:
        return interpret_sale(
            raw, secret=secret, window_ms=window_ms, rules=rules, registry=registry
        )
    try:
        call = decode_sale(payload)
    except EventDecodeError as e:
        raise _raw_error(payload, SaleRequest) or e from None
    return (call if registry is None else judge(call, registry)), []


def read_click(payload: bytes | None, *, secret: str, rules: Rules) -> Click:
    """A clicks message of either version as the projector's click; raise EventDecodeError."""
    raw = decode_click_request(payload)
    if raw is not None:
        return interpret_click(raw, secret=secret, rules=rules)
    try:
        return decode_click(payload)
    except EventDecodeError as e:
        raise _raw_error(payload, ClickRequest) or e from None


def _raw_error(
    payload: bytes | None, kind: type[SaleRequest | ClickRequest]
) -> EventDecodeError | None:
    """Why a message that says it is version 2 is not a valid one (None if it does not say so).

    Without this its dead letter would read "unsupported schema version 2", which misleads.
    """
    try:
        data: Any = orjson.loads(payload or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("v") != RAW_SCHEMA_VERSION:
        return None
    try:
        msgspec.json.decode(payload or b"", type=kind)
    except msgspec.MsgspecError as e:
        return EventDecodeError(f"invalid {kind.__name__}: {e}")
    return EventDecodeError(f"invalid {kind.__name__}: a negative time")
