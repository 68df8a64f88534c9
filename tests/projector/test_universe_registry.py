"""The universe registry in the projector, against the real broker and ClickHouse: only
registered universes count, with their own limit, default currency and attribution window;
a rebuild applies the registry of its start to the whole log."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.asyncclient import AsyncClient

from helpers import Publishable, produce, rows, running_projector, settled
from projector.rebuild import rebuild
from projector.settings import ProjectorSettings
from scenario import T0, click
from schemas.raw import SaleRequest
from schemas.topics import ensure_topics
from schemas.universe_log import now_ms, write_record
from schemas.universes import UniverseSettings

ROOT = Path(__file__).resolve().parents[2]
HOUR_MS = 3_600_000


def pixel(event_id: str, query: str, at: int = T0) -> SaleRequest:
    return SaleRequest(event_id=event_id, received_at_ms=at, source="pixel", query=query)


async def register(
    settings: ProjectorSettings, universe: str, *, currency: str = "", window: str = "",
    max_amount: str = "",
) -> None:  # fmt: skip
    await ensure_topics(
        settings.kafka.bootstrap, settings.kafka.topics,
        partitions=settings.kafka.partitions, replication=settings.kafka.replication,
    )  # fmt: skip
    record = UniverseSettings(
        universe=universe, updated_at_ms=now_ms(), currency=currency, window=window,
        max_amount=max_amount,
    )  # fmt: skip
    await write_record(
        settings.kafka.bootstrap,
        settings.kafka.topics.universes,
        universe,
        record,
        idempotence=False,
    )


async def calls_by_universe(ch: AsyncClient, db: str) -> list[tuple[object, ...]]:
    return await rows(
        ch,
        f"SELECT universe, status, reason, currency, count() FROM {db}.sales_calls "
        "GROUP BY universe, status, reason, currency ORDER BY universe, status, reason",
    )


async def project(settings: ProjectorSettings, ch: AsyncClient, events: list[Publishable]) -> None:
    async with running_projector(settings):
        await produce(settings, events)
        await settled(ch, settings.clickhouse_database, len(events))


async def test_with_an_empty_registry_every_universe_counts_and_a_warning_says_so(
    projector_settings: ProjectorSettings, ch: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="projector.loop")
    db = projector_settings.clickhouse_database
    await project(projector_settings, ch, [
        pixel("e1", "universe=demo&amount=1&id=t1"),
        pixel("e2", "universe=anything&amount=2&id=t2"),
    ])  # fmt: skip
    assert await calls_by_universe(ch, db) == [
        ("anything", "counted", "", "", 1),
        ("demo", "counted", "", "", 1),
    ]
    topic = projector_settings.kafka.topics.universes
    assert [r.getMessage() for r in caplog.records] == [
        f"the universe registry {topic} is empty: every universe counts until one is "
        "registered (set TRACKER_UNIVERSES_REQUIRED=1 to count none)"
    ]


async def test_only_registered_universes_count_with_their_limit_and_currency(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    settings = projector_settings
    db = settings.clickhouse_database
    await register(settings, "shop", currency="EUR", max_amount="100")
    await register(settings, "demo")
    await project(settings, ch, [
        pixel("e1", "universe=shop&amount=40&id=t1"),  # takes EUR
        pixel("e2", "universe=shop&amount=60&id=t2&currency=USD"),  # keeps USD
        pixel("e3", "universe=shop&amount=100,01&id=t3"),  # above the limit
        pixel("e4", "universe=shop&amount=100&id=t4"),  # at the limit
        pixel("e5", "universe=demo&amount=5&id=t5"),  # no default currency: ''
        pixel("e6", "universe=invented&amount=7&id=t6"),
        pixel("e7", "universe=invented2&amount=1000000000&id=t7"),
    ])  # fmt: skip
    assert await calls_by_universe(ch, db) == [
        ("demo", "counted", "", "", 1),
        ("invented", "rejected", "universe_unknown", "", 1),
        ("invented2", "rejected", "universe_unknown", "", 1),
        ("shop", "counted", "", "EUR", 2),
        ("shop", "counted", "", "USD", 1),
        ("shop", "rejected", "amount_above_limit", "", 1),
    ]
    # The default currency is in the ledger row, so the rollups group by it.
    assert await rows(
        ch, f"SELECT universe, currency, purchases, turnover FROM {db}.campaign_turnover "
        "ORDER BY universe, currency",
    ) == [
        ("demo", "", 1, Decimal(5)),
        ("shop", "EUR", 2, Decimal(140)),
        ("shop", "USD", 1, Decimal(60)),
    ]  # fmt: skip


async def test_a_universes_own_attribution_window_replaces_the_global_one(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    settings = projector_settings
    db = settings.clickhouse_database
    await register(settings, "brief", window="1h")
    await register(settings, "patient")  # the global window (30 days)
    await project(settings, ch, [
        click("c1", "alice", "spring", "hero", at=T0, universe="brief"),
        click("c2", "alice", "spring", "hero", at=T0, universe="patient"),
        pixel("e1", "universe=brief&amount=1&id=t1&customer=alice", T0 + 2 * HOUR_MS),
        pixel("e2", "universe=patient&amount=1&id=t1&customer=alice", T0 + 2 * HOUR_MS),
        pixel("e3", "universe=brief&amount=1&id=t2&customer=alice", T0 + HOUR_MS // 2),
    ])  # fmt: skip
    assert await rows(
        ch, f"SELECT universe, transaction_id, campaign_id FROM {db}.sales "
        "ORDER BY universe, transaction_id",
    ) == [
        ("brief", "t1", ""),  # 2 h after the click: outside 1 h
        ("brief", "t2", "spring"),
        ("patient", "t1", "spring"),
    ]  # fmt: skip


async def test_a_rebuild_counts_calls_of_a_universe_registered_after_them(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    settings = projector_settings
    db = settings.clickhouse_database
    await register(settings, "demo")
    await project(settings, ch, [
        pixel("e1", "universe=demo&amount=1&id=t1"),
        pixel("e2", "universe=late&amount=2&id=t2"),
        pixel("e3", "universe=late&amount=3&id=t3", T0 + 1000),
    ])  # fmt: skip
    assert await calls_by_universe(ch, db) == [
        ("demo", "counted", "", "", 1),
        ("late", "rejected", "universe_unknown", "", 2),
    ]
    await register(settings, "late", currency="SEK")
    # Applies from then on: what was projected stays as it was...
    async with running_projector(settings):
        await produce(settings, [pixel("e4", "universe=late&amount=4&id=t4", T0 + 2000)])
        await settled(ch, db, 4)
    assert await calls_by_universe(ch, db) == [
        ("demo", "counted", "", "", 1),
        ("late", "counted", "", "SEK", 1),
        ("late", "rejected", "universe_unknown", "", 2),
    ]
    # ...until a rebuild applies today's registry to the whole log.
    lines: list[str] = []
    assert await rebuild(settings, write=lines.append) == 2
    assert await calls_by_universe(ch, db) == [
        ("demo", "counted", "", "", 1),
        ("late", "counted", "", "SEK", 3),
    ]
    assert await rows(
        ch, f"SELECT universe, currency, purchases, turnover FROM {db}.campaign_turnover "
        "ORDER BY universe",
    ) == [("demo", "", 1, Decimal(1)), ("late", "SEK", 3, Decimal(9))]  # fmt: skip


async def test_two_projectors_read_the_registry_before_they_project(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    settings = projector_settings
    db = settings.clickhouse_database
    await register(settings, "shop")
    events: list[Publishable] = [
        pixel(f"e{i}", f"universe={'shop' if i % 2 else 'other'}&amount=1&id=t{i}")
        for i in range(40)
    ]
    async with running_projector(settings) as first, running_projector(settings) as second:
        await produce(settings, events)
        await settled(ch, db, len(events))
        # Both read it (the gauge), both took partitions (the group split them).
        for p in (first, second):
            assert p.universes.registry.universes.keys() == {"shop"}
    assert await calls_by_universe(ch, db) == [
        ("other", "rejected", "universe_unknown", "", 20),
        ("shop", "counted", "", "", 20),
    ]


async def test_required_registry_counts_nothing_while_empty(
    projector_settings: ProjectorSettings, ch: AsyncClient
) -> None:
    settings = dataclasses.replace(projector_settings, universes_required=True)
    db = settings.clickhouse_database
    await project(settings, ch, [pixel("e1", "universe=demo&amount=1&id=t1")])
    assert await calls_by_universe(ch, db) == [("demo", "rejected", "universe_unknown", "", 1)]


@pytest.mark.parametrize("service", ["projector", "ingest"])
def test_a_bad_registry_setting_stops_the_service_at_start(
    service_env: dict[str, str], service: str
) -> None:
    env = {**service_env, "TRACKER_UNIVERSES_REQUIRED": "maybe"}
    result = subprocess.run(
        [sys.executable, "-m", service], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "configuration error: TRACKER_UNIVERSES_REQUIRED must be true or false, got 'maybe'"
    )


async def test_a_record_written_by_hand_that_is_not_valid_is_skipped_and_logged(
    projector_settings: ProjectorSettings, ch: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    settings = projector_settings
    db = settings.clickhouse_database
    await register(settings, "shop")
    topic = settings.kafka.topics.universes
    producer = AIOKafkaProducer(bootstrap_servers=list(settings.kafka.bootstrap), acks="all")
    await producer.start()
    try:
        bad = b'{"v": 1, "universe": "x", "updated_at_ms": 1, "window": "3w"}'
        await producer.send_and_wait(topic, bad, key=b"x")
    finally:
        await producer.stop()
    caplog.set_level(logging.ERROR, logger="schemas.universe_log")
    await project(settings, ch, [
        pixel("e1", "universe=shop&amount=1&id=t1"),
        pixel("e2", "universe=x&amount=1&id=t2"),
    ])  # fmt: skip
    assert await calls_by_universe(ch, db) == [
        ("shop", "counted", "", "", 1),
        ("x", "rejected", "universe_unknown", "", 1),
    ]
    assert [r.getMessage() for r in caplog.records] == [
        f"skipping {topic}[0]@1: bad window '3w': a number of days or hours, e.g. 30d or 12h "
        "(at most 3650d)"
    ]
