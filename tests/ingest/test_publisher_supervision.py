"""The publishing task survives an unexpected error: logged at once, counted, restarted.

A dead publishing task used to leave every later call spooled and never sent while the pixel
kept answering; its error surfaced only at shutdown.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from helpers import eventually, metrics_text, read_topic, running_edge, sales_as_read, sample
from ingest.message import Message
from ingest.publisher import Publisher
from ingest.settings import EdgeSettings


def test_a_record_whose_header_claims_more_bytes_than_present_is_refused() -> None:
    packed = Message("t.sales", b"key", b"value").pack()
    assert Message.unpack(packed) == Message("t.sales", b"key", b"value")
    for damaged in (packed[:3], packed[:8], b"\x00\x02\x00\x00\x00\x00\xff\xfe"):
        with pytest.raises(ValueError):
            Message.unpack(damaged)


async def readyz(session: aiohttp.ClientSession, base: str) -> tuple[int, str]:
    async with session.get(base + "/readyz") as response:
        return response.status, await response.text()


async def pixel(session: aiohttp.ClientSession, base: str, i: int) -> None:
    async with session.get(f"{base}/sales.php?universe=demo&amount={i}&id=o{i}") as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == "image/gif"


async def test_an_unexpected_error_in_the_publisher_is_logged_counted_and_survived(
    edge_settings: EdgeSettings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    send, connect = Publisher._send, Publisher._connect
    failed: list[int] = []

    async def send_failing_once(self: Publisher, batch: list[Message]) -> list[Message]:
        if not failed:
            failed.append(len(batch))
            raise RuntimeError("injected: a bug in the publishing loop")
        return await send(self, batch)

    # The restart waits for this gate, so the test sees the publisher down however slow
    # the machine.
    restart = asyncio.Event()
    connects: list[int] = []

    async def connect_gated(self: Publisher) -> object:
        connects.append(1)
        if len(connects) > 1:
            await restart.wait()
        return await connect(self)

    monkeypatch.setattr(Publisher, "_send", send_failing_once)
    monkeypatch.setattr(Publisher, "_connect", connect_gated)
    caplog.set_level(logging.ERROR, logger="ingest.publisher")

    async with running_edge(edge_settings) as base, aiohttp.ClientSession() as session:
        await eventually(lambda: readyz(session, base), lambda r: r[0] == 200)
        for i in range(10):
            await pixel(session, base, i)
        # The first batch raised: counted and logged now, while the edge runs.
        await eventually(
            lambda: metrics_text(session, base),
            lambda text: sample(text, "tracker_edge_publisher_restarts_total") == 1,
        )
        crashes = [r for r in caplog.records if r.name == "ingest.publisher" and r.exc_info]
        assert len(crashes) == 1
        assert crashes[0].levelno == logging.ERROR
        assert crashes[0].exc_info is not None
        assert "injected" in str(crashes[0].exc_info[1])
        status, reason = await readyz(session, base)
        assert (status, reason) == (
            503,
            "publisher restarting after an error (events are spooled)\n",
        )
        for i in range(10, 20):  # answered while the publisher is down: spooled
            await pixel(session, base, i)

        restart.set()
        await eventually(lambda: readyz(session, base), lambda r: r == (200, "ready\n"))
        for i in range(20, 30):
            await pixel(session, base, i)
        text = await metrics_text(session, base)
        assert sample(text, "tracker_edge_publisher_restarts_total") == 1
    assert failed and len(connects) == 2

    records = await read_topic(
        edge_settings.kafka.bootstrap[0], edge_settings.kafka.topics.sales, 30
    )
    ids = [c.transaction_id for c in sales_as_read(records, edge_settings.secret)]
    assert sorted(ids) == sorted(f"o{i}" for i in range(30))  # each once, none lost
