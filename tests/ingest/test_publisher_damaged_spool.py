"""The real edge on a damaged spool: every intact record reaches the topic, the damage is counted.

The spools are built with the Spool class, then their bytes damaged the ways a crash or a
disk does; the edge is started on them as on any restart.
"""

from __future__ import annotations

import struct
from pathlib import Path

import aiohttp

from helpers import eventually, metrics_text, read_topic, running_edge, sales_as_read, sample
from ingest.message import Message
from ingest.settings import EdgeSettings
from ingest.spool import Spool
from ingest.spool_format import encode_frame
from schemas.events import SaleCall, encode


def spooled_sale(settings: EdgeSettings, i: int) -> bytes:
    """A pixel call as the publisher spools it."""
    call = SaleCall(
        event_id=f"e{i}", received_at_ms=1_767_225_600_000 + i, source="pixel",
        status="accepted", reason="", universe="demo", transaction_id=f"o{i}",
        amount="1.00", amount_raw="1,00", currency="EUR", customer_id="", click_id="",
    )  # fmt: skip
    return Message(settings.kafka.topics.sales, call.kafka_key(), encode(call)).pack()


def spool_dir(settings: EdgeSettings) -> Path:
    return Path(settings.spool_dir) / "worker-0"  # where create_app puts worker 0's spool


def write_spool(directory: Path, records: list[bytes]) -> Path:
    spool = Spool(directory, max_bytes=10_000_000)
    for record in records:
        spool.append([record])
    spool.close()
    return max(directory.glob("*.spool"))


async def readyz(session: aiohttp.ClientSession, base: str) -> int:
    async with session.get(base + "/readyz") as response:
        return response.status


async def published_ids(settings: EdgeSettings, count: int) -> list[str]:
    records = await read_topic(settings.kafka.bootstrap[0], settings.kafka.topics.sales, count)
    return sorted(c.transaction_id for c in sales_as_read(records, settings.secret))


async def test_a_torn_tail_and_an_old_format_segment_lose_no_intact_record(
    edge_settings: EdgeSettings,
) -> None:
    directory = spool_dir(edge_settings)
    directory.mkdir(parents=True)
    # Spooled by the previous version (length | payload, no checksum), with one record whose
    # message header claims more bytes than it holds.
    bad_record = struct.pack(">HI", 200, 0) + b"sales"
    old = [spooled_sale(edge_settings, i) for i in range(5)]
    (directory / f"{1:012d}.spool").write_bytes(
        b"".join(struct.pack(">I", len(r)) + r for r in [*old[:2], bad_record, *old[2:]])
    )
    # Then the current version spooled more, and was killed in the middle of an append.
    segment = write_spool(directory, [spooled_sale(edge_settings, i) for i in range(5, 20)])
    torn = encode_frame(spooled_sale(edge_settings, 99))[:-10]
    with segment.open("ab") as f:
        f.write(torn)

    async with running_edge(edge_settings) as base, aiohttp.ClientSession() as session:
        await eventually(lambda: readyz(session, base), lambda status: status == 200)
        text = await metrics_text(session, base)
        async with session.get(base + "/sales.php?universe=demo&amount=2&id=o20") as r:
            assert r.status == 200
    assert sample(text, 'tracker_edge_spool_damaged_total{kind="torn_tail"}') == 1
    assert sample(text, 'tracker_edge_spool_damaged_bytes_total{kind="torn_tail"}') == len(torn)
    assert sample(text, 'tracker_edge_spool_damaged_total{kind="bad_record"}') == 1
    assert sample(text, 'tracker_edge_spool_damaged_total{kind="corrupt_frame"}') == 0
    assert await published_ids(edge_settings, 21) == sorted(f"o{i}" for i in range(21))
    (kept,) = (directory / "damaged").iterdir()
    assert kept.read_bytes() == bad_record


async def test_a_corrupt_frame_mid_spool_is_moved_aside_and_the_records_after_it_published(
    edge_settings: EdgeSettings,
) -> None:
    directory = spool_dir(edge_settings)
    records = [spooled_sale(edge_settings, i) for i in range(20)]
    segment = write_spool(directory, records)
    data = bytearray(segment.read_bytes())
    at = data.index(records[7])
    data[at + 20] ^= 0xFF  # a flipped byte inside o7's payload: its checksum no longer holds
    segment.write_bytes(bytes(data))

    async with running_edge(edge_settings) as base, aiohttp.ClientSession() as session:
        await eventually(lambda: readyz(session, base), lambda status: status == 200)
        text = await metrics_text(session, base)
    frame = len(encode_frame(records[7]))
    assert sample(text, 'tracker_edge_spool_damaged_total{kind="corrupt_frame"}') == 1
    assert sample(text, 'tracker_edge_spool_damaged_bytes_total{kind="corrupt_frame"}') == frame
    assert await published_ids(edge_settings, 19) == sorted(f"o{i}" for i in range(20) if i != 7)
    (kept,) = (directory / "damaged").iterdir()
    assert kept.name == f"{segment.name.split('.')[0]}-{at - 12}.bin"
    assert len(kept.read_bytes()) == frame
