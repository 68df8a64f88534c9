"""Read the tracker's sales topic with confluent-kafka (librdkafka) and print one JSON line a call.

    pip install confluent-kafka
    python docs/examples/consume_sales.py --bootstrap 127.0.0.1:9092 --topic tracker.sales

It applies the contract of docs/events.md and nothing more: dispatch on ``v``, read a
version-2 call's parameters from its query string (pixel) or its fields (API), a version-1
call's from its fields, and take "" or an absent field as "none". It does not decide whether
a call counts (amount rules, deduplication, attribution): the projector does, and ClickHouse
has the result. Only the standard library and confluent-kafka, so it runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl

from confluent_kafka import Consumer, KafkaError, Message

KEY_SEPARATOR = b"\x1f"
# The pixel's parameters, and what a version-1 event named each of them.
PARAMETERS = {
    "universe": "universe",
    "id": "transaction_id",
    "amount": "amount_raw",
    "customer": "customer_id",
    "click": "click_id",
    "currency": "currency",
}


def call_of(value: bytes) -> dict[str, Any] | None:
    """The call a sales message describes, parameters as sent; None for an unknown version."""
    event = json.loads(value)
    version = event.get("v")
    if version == 2:
        if event["source"] == "pixel":
            # The first value of a repeated parameter; the projector rejects a call whose
            # values differ (repeated_<name>), which a reader may want to do too.
            params: dict[str, str] = {}
            for name, text in parse_qsl(event.get("query", ""), keep_blank_values=True):
                if name in PARAMETERS:
                    params.setdefault(name, text)
        else:
            params = {k: v for k, v in event.get("fields", {}).items() if k in PARAMETERS}
    elif version == 1:
        params = {name: event[field] for name, field in PARAMETERS.items() if event[field]}
    else:
        return None  # a newer version than this reader knows: skip it, never misread it
    return {
        "v": version,
        "event_id": event["event_id"],
        "received_at_ms": event["received_at_ms"],
        "source": event["source"],
        "parameters": params,
        # A reason the projector will reject the call for, already known at the edge. ""
        # does not mean the call counts: the projector applies the rules, then dedupes.
        "edge_reason": edge_reason(event),
    }


def edge_reason(event: dict[str, Any]) -> str:
    if event["v"] == 1:
        return str(event["reason"])
    return str(event.get("problem") or ("too_long" if event.get("too_long") else ""))


def line_of(message: Message) -> dict[str, Any] | None:
    value = message.value()
    if value is None:
        return None
    call = call_of(value)
    if call is None:
        return None
    # The key only places the message (every call of one transaction in one partition): the
    # value is the truth; a rejected call's key may hold anything its query held.
    universe, _, unique = (message.key() or b"").partition(KEY_SEPARATOR)
    where = {"partition": message.partition(), "offset": message.offset()}
    key = {"key_universe": universe.decode(errors="replace"), "key_unique": unique.decode()}
    return {**where, **key, **call}


def consume(
    bootstrap: str,
    topic: str,
    group: str,
    *,
    max_messages: int | None = None,
    idle_timeout: float | None = None,
    debug: str = "",
) -> int:
    config: dict[str, str | bool | int] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        # Offsets are stored only once a message is handled, then committed in the
        # background: a crash re-reads what was not handled, never skips it.
        "enable.auto.offset.store": False,
        # How long a silent member keeps its partitions. Brokers also hold a new group's first
        # join for a part of it, waiting for other members: librdkafka's 45 s default made
        # the first message wait over 20 s against the local broker.
        "session.timeout.ms": 10_000,
    }
    if debug:
        config["debug"] = debug
    consumer = Consumer(config)
    consumer.subscribe([topic])
    seen = 0
    last = time.monotonic()
    try:
        while max_messages is None or seen < max_messages:
            if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                break
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"consume failed: {error}")
            line = line_of(message)
            if line is not None:
                print(json.dumps(line, ensure_ascii=False), flush=True)
            consumer.store_offsets(message)
            seen += 1
            last = time.monotonic()
    finally:
        consumer.close()  # commits the stored offsets and leaves the group at once
    return seen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bootstrap", required=True, help="host:port[,host:port]")
    parser.add_argument("--topic", default="tracker.sales", help="<TRACKER_TOPIC_PREFIX>sales")
    parser.add_argument("--group", default="sales-reader", help="consumer group id")
    parser.add_argument("--max-messages", type=int, help="stop after this many messages")
    parser.add_argument("--idle-timeout", type=float, help="stop after this many idle seconds")
    parser.add_argument("--debug", default="", help="librdkafka debug contexts, e.g. cgrp,fetch")
    args = parser.parse_args(argv)
    consume(
        args.bootstrap, args.topic, args.group,
        max_messages=args.max_messages, idle_timeout=args.idle_timeout, debug=args.debug,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
