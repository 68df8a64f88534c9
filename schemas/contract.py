"""The event contract for consumers on other stacks: JSON Schemas of every message on our topics.

Generated from the event types themselves (msgspec reads their fields, types, defaults and
literals) plus the field descriptions below, and committed under ``schemas/json/`` so that a
data engineer can read and validate the topics without Python. ``docs/events.md`` explains
them. ``python -m schemas.contract`` rewrites the files; ``--check`` exits 1 when a committed
file is not what the types give (the tests run it).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from schemas.events import Click, SaleCall
from schemas.raw import COOKIES_MAX, QUERY_MAX, ClickRequest, RefundRequest, SaleRequest
from schemas.universes import UniverseSettings

SCHEMA_DIR: Final = Path(__file__).resolve().parent / "json"
DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

EventType = (
    type[SaleRequest]
    | type[ClickRequest]
    | type[RefundRequest]
    | type[SaleCall]
    | type[Click]
    | type[UniverseSettings]
)


@dataclass(frozen=True, slots=True)
class Event:
    """One event type as it travels: its file name, topic, and whether it is still written."""

    name: str
    cls: EventType
    topic: str
    status: str


EVENTS: Final = (
    Event("sale-request.v2", SaleRequest, "sales", "Published by the edge since version 2."),
    Event("click-request.v2", ClickRequest, "clicks", "Published by the edge since version 2."),
    Event(
        "refund-request.v3", RefundRequest, "sales",
        "Published by the edge since refunds (POST /v1/refunds).",
    ),
    Event(
        "sale-call.v1", SaleCall, "sales",
        "No longer published; the projector still reads it in logs written before version 2.",
    ),
    Event(
        "click.v1", Click, "clicks",
        "No longer published; the projector still reads it in logs written before version 2.",
    ),
    Event(
        "universe.v1", UniverseSettings, "universes",
        "Written by `python -m projector universes`, keyed by the universe; a removal is a "
        "tombstone (that key, a null value).",
    ),
)  # fmt: skip

_V = (
    "Schema version, {v} for this event. A consumer dispatches on it and refuses a version it "
    "does not know rather than misread it."
)
_TIME = "Milliseconds since the Unix epoch, UTC. "
_HASH = (
    "Keyed hash of the caller's IP address (HMAC-SHA256 with the edge's secret, first 16 hex "
    "characters): spots a flood without storing an address. Comparable only within one "
    "deployment's secret. {empty} when the address was unknown."
)
_CUT = f"Cut to {QUERY_MAX} characters (then `too_long` says so)."

# Every field of every event, documented here because the contract is for readers who never
# see the Python; generation refuses a field without a description, so a new field cannot
# reach the committed schemas undocumented.
DESCRIPTIONS: Final[dict[EventType, dict[str, str]]] = {
    SaleRequest: {
        "v": _V.format(v=2),
        "event_id": (
            "Unique id the edge gave this call (today 32 lowercase hex characters; treat it as "
            "opaque). A copy of the same message, sent again after a lost acknowledgement, has "
            "the same event_id: deduplicate on it."
        ),
        "received_at_ms": _TIME
        + (
            "When the edge received the call: the event time. The Kafka record timestamp is "
            "when it was sent, later if the event waited in the edge's spool."
        ),
        "source": "`pixel` (GET or HEAD /sales.php) or `api` (one sale object of POST /v1/sales).",
        "query": (
            "Pixel only: the query string exactly as sent (percent-encoding, unknown and repeated "
            "parameters included), not validated: `universe`, `amount`, `id`, `customer`, "
            "`click`, `currency`. For `problem` `malformed_request`, the refused request line, "
            f"escaped. {_CUT} Absent when empty."
        ),
        "cookies": (
            "Pixel only: the tracker's own `trk_*` cookies as `name=value; ...` "
            "(`trk_<universe>` holds the signed click token); bytes that are not UTF-8 escaped as "
            f"`\\xNN`. Cut to {COOKIES_MAX} characters. Absent when there were none."
        ),
        "fields": (
            "API only: the sale object's known fields, as strings: `universe` (the API key's "
            "universe when the object names none), `amount` (a JSON number as its exact text), "
            "`id`, `customer`, `click`, `currency`. Absent when empty."
        ),
        "problem": (
            "What the edge refused in the call's shape; the projector rejects the call with it as "
            "the reason: API `item_not_object`, `<field>_not_string`, `universe_not_allowed`, "
            "`duplicate_field`; pixel `malformed_request` (the HTTP parser refused the request "
            "line). Absent when none."
        ),
        "too_long": (
            "`query` or `cookies` when that part was longer than allowed and was cut: the "
            "projector rejects the call as `too_long`. Absent otherwise."
        ),
        "client_hash": _HASH.format(empty="Absent"),
    },
    RefundRequest: {
        "v": _V.format(v=3)
        + " Version 3 is this event kind: a reader that knows only sales refuses it.",
        "event_id": (
            "Unique id the edge gave this refund call (opaque). A copy sent again after a lost "
            "acknowledgement has the same event_id."
        ),
        "received_at_ms": _TIME
        + "When the edge received the refund: the day its turnover is lowered on.",
        "fields": (
            "The refund object's known fields, as strings: `universe` (the API key's universe "
            "when the object names none), `id` (the refunded transaction), `refund_id` (counted "
            "once per transaction, ever), `amount` (a JSON number as its exact text; absent: "
            "all that is left of the sale), `currency` (when given, must be the sale's). "
            "Absent when empty."
        ),
        "problem": (
            "What the edge refused in the refund object's shape (`item_not_object`, "
            "`<field>_not_string`, `universe_not_allowed`, `duplicate_field`); the projector "
            "rejects the refund with it as the reason. Absent when none."
        ),
        "client_hash": _HASH.format(empty="Absent"),
    },
    ClickRequest: {
        "v": _V.format(v=2),
        "event_id": (
            "The click id: also inside the signed `trk_<universe>` cookie and the `trk_click` "
            "parameter of the landing URL, so a sale that carries it names this click."
        ),
        "clicked_at_ms": _TIME + "When the edge received the click.",
        "query": (
            "The /click query string as received: `u` universe, `c` customer, `k` campaign, `l` "
            "link, `p` product (optional), `url` target, `s` signature. The edge verified the "
            "signature before publishing; the projector verifies it again. "
            f"Cut to {QUERY_MAX} characters."
        ),
        "client_hash": _HASH.format(empty="Absent"),
    },
    SaleCall: {
        "v": _V.format(v=1),
        "event_id": "Unique id the edge gave this call; a resent copy has the same one.",
        "received_at_ms": _TIME + "When the edge received the call.",
        "source": "`pixel` or `api`.",
        "status": (
            "The edge's reading of the call then: `accepted` or `rejected`. Not ClickHouse's "
            "`sales_calls.status` (`counted`, `duplicate`, `rejected`), which the projector "
            "decides after deduplication: an accepted call may be a duplicate."
        ),
        "reason": 'Why the call was rejected (`amount_malformed`, ...); "" when accepted.',
        "universe": "The account, as sent (cut to 256 characters when rejected).",
        "transaction_id": 'The merchant\'s transaction id (`id`); "" when the call had none.',
        "amount": 'Canonical exact decimal (`"12.50"`) when accepted; "" when rejected.',
        "amount_raw": "The amount as sent (cut to 256 characters when rejected).",
        "currency": 'ISO 4217 code, upper-cased; "" when the call had none.',
        "customer_id": 'The merchant\'s customer id (`customer`); "" when none.',
        "click_id": (
            "The click id the call carried: when accepted, only once the edge verified it; "
            '"" when none.'
        ),
        "campaign_id": 'Campaign of the verified click context; "" when none.',
        "link_id": 'Link of the verified click context; "" when none.',
        "product": 'Sending product of the verified click context; "" when none.',
        "click_customer_id": 'Customer of the verified click context; "" when none.',
        "clicked_at_ms": _TIME + "When that click happened; 0 when none.",
        "client_hash": _HASH.format(empty='""'),
    },
    Click: {
        "v": _V.format(v=1),
        "event_id": "The click id (the one the cookie and `trk_click` carried).",
        "clicked_at_ms": _TIME + "When the edge received the click.",
        "universe": "The link's account.",
        "customer_id": "The link's customer.",
        "campaign_id": "The link's campaign.",
        "link_id": "The link within the campaign.",
        "product": 'The sending product; "" when the link named none.',
        "client_hash": _HASH.format(empty='""'),
    },
    UniverseSettings: {
        "v": _V.format(v=1),
        "universe": "The universe (also the record's key), as the pixel's `universe=` names it.",
        "updated_at_ms": _TIME + "When this version of the settings was written.",
        "currency": (
            "ISO 4217 code that calls naming no currency take (stored in their ledger row). "
            "Absent: such calls stay without one."
        ),
        "window": (
            "Attribution window of the universe's sales: days or hours (`30d`, `12h`). Absent: "
            "the projector's TRACKER_ATTRIBUTION_WINDOW_DAYS."
        ),
        "max_amount": (
            "Largest amount of one sale, an exact decimal; a call above it is rejected "
            "`amount_above_limit`. Absent: no limit but the pixel's own."
        ),
        "keys": (
            "The universe's API keys: key id -> SHA-256 (hex) of the key. The key itself is "
            "printed once when made and never stored. Absent: no key."
        ),
    },
}


def version_of(cls: EventType) -> int:
    """The ``v`` an event of this type carries: its tag, or its ``v`` field's default."""
    tag = cls.__struct_config__.tag
    if tag is not None:
        assert isinstance(tag, int)
        return tag
    [v] = [f.default for f in msgspec.structs.fields(cls) if f.name == "v"]
    assert isinstance(v, int)
    return v


def event_schema(event: Event) -> dict[str, Any]:
    """The JSON Schema of one event: msgspec's, documented and with the decoders' own checks.

    The types cannot say what the decoders check besides them: ``v`` must be the version
    (written by every writer; the projector dispatches on it) and times are never negative.
    Unknown fields stay allowed, as the decoders ignore them: that is what lets a field be
    added without breaking any reader.
    """
    (ref,), components = msgspec.json.schema_components([event.cls])
    name = ref["$ref"].removeprefix("#/$defs/")
    schema: dict[str, Any] = components.pop(name)
    if components:  # a nested type would need its definitions; none has any today
        raise ValueError(f"{name}: nested definitions {sorted(components)} are not supported")
    docs = DESCRIPTIONS.get(event.cls, {})
    properties: dict[str, dict[str, Any]] = schema["properties"]
    undocumented = sorted(set(properties) - set(docs))
    stale = sorted(set(docs) - set(properties))
    if undocumented or stale:
        raise ValueError(f"{name}: fields without a description {undocumented}, "
                         f"descriptions without a field {stale} (schemas/contract.py)")  # fmt: skip
    for field, prop in properties.items():
        if field == "v":
            prop.clear()
            prop["const"] = version_of(event.cls)
        elif prop.get("type") == "integer":
            prop["minimum"] = 0
        prop["description"] = docs[field]
    required: list[str] = schema.get("required", [])
    schema["required"] = required if "v" in required else ["v", *required]
    doc = inspect.cleandoc(event.cls.__doc__ or "")
    return {
        "$schema": DIALECT,
        "title": f"{name} (v {version_of(event.cls)}) on <prefix>{event.topic}",
        "description": f"{doc}\n\n{event.status}",
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def topic_schema(topic: str) -> dict[str, Any]:
    """Any message of one topic: one of its events, told apart by ``v``."""
    events = [e for e in EVENTS if e.topic == topic]
    defs = {e.name: {k: v for k, v in event_schema(e).items() if k != "$schema"} for e in events}
    return {
        "$schema": DIALECT,
        "title": f"a message of <prefix>{topic}",
        "description": (
            f"Every message value of the <prefix>{topic} topic is one of these events, told "
            "apart by its `v`. See docs/events.md."
        ),
        "oneOf": [{"$ref": f"#/$defs/{name}"} for name in defs],
        "$defs": defs,
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def generate() -> dict[str, str]:
    """Every schema file's name and text."""
    files = {f"{e.name}.schema.json": render(event_schema(e)) for e in EVENTS}
    for topic in dict.fromkeys(e.topic for e in EVENTS):
        files[f"{topic}.schema.json"] = render(topic_schema(topic))
    return files


def differences(directory: Path = SCHEMA_DIR) -> list[str]:
    """How the committed files differ from what the types give; empty when they agree."""
    expected = generate()
    committed = {p.name: p.read_text() for p in directory.glob("*.schema.json")}
    problems = [f"{name}: missing" for name in sorted(set(expected) - set(committed))]
    problems += [f"{name}: not generated" for name in sorted(set(committed) - set(expected))]
    problems += [
        f"{name}: differs"
        for name, text in sorted(expected.items())
        if name in committed and committed[name] != text
    ]
    return problems


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    """Write every schema file, remove those no longer generated; the names written."""
    directory.mkdir(parents=True, exist_ok=True)
    files = generate()
    for stale in directory.glob("*.schema.json"):
        if stale.name not in files:
            stale.unlink()
    for name, text in files.items():
        (directory / name).write_text(text)
    return sorted(files)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schemas.contract", description="JSON Schemas of the events on our topics"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when the committed files are not up to date"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = differences()
        for problem in problems:
            print(f"schemas/json/{problem}", file=sys.stderr)
        if problems:
            print("run: python -m schemas.contract", file=sys.stderr)
        return 1 if problems else 0
    for name in write():
        print(f"schemas/json/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
