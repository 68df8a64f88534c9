"""The pixel's events are made by the publishing task, a batch at a time (ingest/backlog.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from functools import partial
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from helpers import eventually, read_topic
from ingest.backlog import MAKE_STEPS, Backlog, Entry
from ingest.flight import Flight
from ingest.message import Message
from ingest.metrics import EdgeMetrics
from ingest.pixel import Carried, call_message
from ingest.publisher import Publisher
from ingest.settings import EdgeSettings


def numbered(i: int) -> Message:
    if i == 13:
        raise RuntimeError("a bug in making the event")
    return Message("t.sales", b"k", str(i).encode())


@pytest.mark.parametrize("size", [1, 7, 240, 20_000])
async def test_a_batch_of_any_size_is_made_in_order_in_a_fixed_number_of_steps(
    size: int, edge_settings: EdgeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Steps of a fixed size fell behind under load: each pause lets the event loop take as
    # many new calls as there are connections, so the queue grew without bound.
    metrics = EdgeMetrics()
    queue = Backlog(edge_settings, metrics, tmp_path)
    pauses = 0
    sleep = asyncio.sleep

    async def counted(delay: float) -> None:
        nonlocal pauses
        pauses += 1
        await sleep(delay)

    monkeypatch.setattr(asyncio, "sleep", counted)
    # Every third entry an event made at once (the API's and the click's), the rest deferred.
    entries: list[Entry] = [
        numbered(i) if i % 3 == 0 else (numbered, i, "sales") for i in range(size)
    ]
    made: list[Message] = []
    ends = []
    async for end, messages in queue._made_in_steps(entries):
        made += messages
        ends.append(end)
    monkeypatch.undo()
    assert pauses == min(size, MAKE_STEPS) - 1
    assert [m.value for m in made] == [str(i).encode() for i in range(size) if i != 13]
    # Where each step ends: what a failure after it makes again for the spool.
    assert ends[-1] == size
    assert ends == sorted(set(ends))
    # The one that failed is counted as its endpoint's handler error, not published.
    errors = metrics.registry.get_sample_value(
        "tracker_edge_handler_errors_total", {"endpoint": "sales"}
    )
    assert (errors or 0) == (1 if size > 13 else 0)


def test_a_pixel_calls_event_made_twice_is_the_same_bytes(edge_settings: EdgeSettings) -> None:
    # What lets a half-made batch be spooled from what its calls carried: nothing in the
    # making may stamp, count or draw anything (the receive time and event id come with it).
    carried: Carried = (
        "/sales.php?universe=u&amount=1&id=t", "trk_u=v1.x; other=1",
        "203.0.113.7", None, 1_700_000_000_000, "e1",
    )  # fmt: skip
    assert call_message(edge_settings, carried) == call_message(edge_settings, carried)


async def test_a_batch_taken_but_not_sent_is_spooled_in_order_as_it_would_have_been_sent(
    edge_settings: EdgeSettings, tmp_path: Path
) -> None:
    queue = Backlog(edge_settings, EdgeMetrics(), tmp_path)
    calls: list[Carried] = [
        (f"/sales.php?universe=u&amount=1&id=t{i}", "", "203.0.113.7", None,
         1_700_000_000_000 + i, f"e{i}")
        for i in range(10)
    ]  # fmt: skip
    make = partial(call_message, edge_settings)
    entries: list[Entry] = [(make, carried, "sales") for carried in calls]
    # Half the batch in flight (taken by the publishing task, made, not acknowledged), half
    # still queued: the task fails, and both go to the spool, in flight first.
    sent = [m async for _, step in queue._made_in_steps(entries[:5]) for m in step]
    queue._flight = Flight(entries[:5], made=sent)
    queue._queue.extend(entries[5:])
    queue._spool_unsent()
    try:
        payloads, _ = queue._spool.read(100)
    finally:
        queue._spool.close()
    spooled = [Message.unpack(p) for p in payloads]
    assert spooled[:5] == sent
    assert spooled == [make(carried) for carried in calls]


async def test_a_batch_larger_than_a_record_batch_reaches_each_partition_in_the_order_received(
    edge_settings: EdgeSettings, tmp_path: Path
) -> None:
    # The sender makes a batch's events and appends them to record batches in steps; with
    # record batches of 1 KiB a batch of 600 fills dozens per partition, sent in one go.
    settings = dataclasses.replace(edge_settings, producer_batch_bytes=1024)
    publisher = Publisher(settings, EdgeMetrics(), tmp_path)
    topic = settings.kafka.topics.sales
    keys = [f"u\x1ft{n}".encode() for n in range(5)]
    publisher.start()
    try:
        await eventually(lambda: asyncio.sleep(0, publisher.unready_reason()), lambda r: r is None)
        for i in range(600):
            key, value = keys[i % 5], f"{i:04}".encode() + b"x" * 100
            if i % 4:  # most made by the publishing task, some made at once, one order
                publisher.publish_later(
                    lambda kv: Message(topic, *kv), (key, value), endpoint="sales"
                )
            else:
                publisher.publish(topic, key, value)
    finally:
        await publisher.close()
    records = await read_topic(settings.kafka.bootstrap[0], topic, 600)
    for key in keys:
        values = [r.value[:4] for r in records if r.key == key]
        assert values == sorted(values) and len(values) == 120


async def test_a_batch_that_fails_while_being_made_is_spooled_whole_and_published_once_in_order(
    edge_settings: EdgeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The broker's metadata fails once in the middle of making a batch (its third step, the
    # first event of the second topic): what was made and what was not yet made go to the
    # spool in the order received, and are published from it, each once, against the broker.
    sales, clicks = edge_settings.kafka.topics.sales, edge_settings.kafka.topics.clicks
    original = AIOKafkaProducer.partitions_for
    failures: list[str] = []

    async def fails_once_for_clicks(producer: AIOKafkaProducer, topic: str) -> set[int]:
        if topic == clicks and not failures:
            failures.append(topic)
            raise KafkaTimeoutError("metadata unavailable")
        partitions: set[int] = await original(producer, topic)
        return partitions

    monkeypatch.setattr(AIOKafkaProducer, "partitions_for", fails_once_for_clicks)
    metrics = EdgeMetrics()
    publisher = Publisher(edge_settings, metrics, tmp_path)
    publisher.start()
    try:
        await eventually(lambda: asyncio.sleep(0, publisher.unready_reason()), lambda r: r is None)
        for i in range(40):  # queued in one go: one batch, made in steps of 10
            topic = sales if i < 20 else clicks
            publisher.publish_later(
                lambda c: Message(c[0], b"k", c[1]), (topic, f"{i:02}".encode()), endpoint="sales"
            )
    finally:
        await publisher.close()
    assert failures == [clicks]
    assert metrics.registry.get_sample_value("tracker_edge_events_spooled_total") == 40
    bootstrap = edge_settings.kafka.bootstrap[0]
    assert [r.value for r in await read_topic(bootstrap, sales, 20)] == [
        f"{i:02}".encode() for i in range(20)
    ]
    assert [r.value for r in await read_topic(bootstrap, clicks, 20)] == [
        f"{i:02}".encode() for i in range(20, 40)
    ]
