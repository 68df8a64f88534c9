"""Reading and writing the registry topic: every process follows it from its beginning.

No consumer group: each edge worker and projector reads the whole topic (one partition) at
start, then follows it. "Read to its end" is judged by ``consumer.highwater(tp)`` after a
fetch, the one end offset the local broker (Tansu) reports reliably.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import BrokerResponseError, KafkaConnectionError, KafkaError

from schemas.universes import (
    Registry,
    UniverseError,
    UniverseRecord,
    UniverseSettings,
    decode_record,
    encode_record,
    fold,
)

logger = logging.getLogger(__name__)

# How often a following process asks for new records: a key removed answers 401 within
# about this long (plus a round trip).
FOLLOW_POLL_MS: Final = 500


class RegistryUnavailable(Exception):
    """The registry topic could not be read or written; the message says what the broker
    (or the network) answered."""


def broker_problem(e: KafkaError, bootstrap: tuple[str, ...], *, idempotence: bool) -> str:
    """What went wrong talking to the broker, in words an operator can act on."""
    where = ",".join(bootstrap)
    if isinstance(e, KafkaConnectionError):
        return f"cannot connect to the broker at {where}: {e}"
    if idempotence and isinstance(e, BrokerResponseError):
        # aiokafka asks for a producer id at start; brokers without idempotent producers
        # (Tansu, the local stack's) answer with an error instead.
        return (
            f"the broker at {where} refused an idempotent producer ({e}): set "
            "TRACKER_KAFKA_IDEMPOTENCE=false for a broker without idempotent producers"
        )
    return f"the broker at {where} answered {e}"


class RegistryReader:
    """Follows the registry topic; :attr:`registry` is the latest state read."""

    def __init__(self, bootstrap: tuple[str, ...], topic: str, *, required: bool = False) -> None:
        self._bootstrap = bootstrap
        self._tp = TopicPartition(topic, 0)
        self._required = required
        self._universes: dict[str, UniverseSettings] = {}
        self.registry = Registry(required=required)
        self._read_to_end = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def caught_up(self) -> bool:
        """The topic was read to its end once (what readiness waits for)."""
        return self._read_to_end.is_set()

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=list(self._bootstrap),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=10_000,
        )
        try:
            await consumer.start()
            consumer.assign([self._tp])
            await consumer.seek_to_beginning(self._tp)
        except BaseException as e:
            # Cancelled or failed half-way: nothing may be left open.
            await consumer.stop()
            if isinstance(e, KafkaError):
                problem = broker_problem(e, self._bootstrap, idempotence=False)
                raise RegistryUnavailable(problem) from e
            raise
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow(consumer), name="registry")

    async def wait_read(self, timeout_s: float) -> None:
        """Return once the topic was read to its end; raise RegistryUnavailable after
        ``timeout_s``."""
        try:
            await asyncio.wait_for(self._read_to_end.wait(), timeout_s)
        except TimeoutError:
            raise RegistryUnavailable(
                f"the universe registry ({self._tp.topic}) was not read within {timeout_s:g}s"
            ) from None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batch = await consumer.getmany(self._tp, timeout_ms=FOLLOW_POLL_MS)
            except KafkaError as e:  # aiokafka reconnects by itself; say so, then go on
                logger.warning("reading the universe registry %s failed: %s", self._tp.topic, e)
                await asyncio.sleep(1)
                continue
            records = batch.get(self._tp, [])
            if records:
                self._apply(records)
            highwater = consumer.highwater(self._tp)
            if (
                not self._read_to_end.is_set()
                and highwater is not None
                and await consumer.position(self._tp) >= highwater
            ):
                logger.info(
                    "universe registry %s read to offset %d: %d universes",
                    self._tp.topic, highwater, len(self._universes),
                )  # fmt: skip
                self._read_to_end.set()

    def _apply(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        decoded: list[tuple[str, UniverseRecord]] = []
        for record in records:
            try:
                universe = (record.key or b"").decode()
                value = decode_record(record.value)
                if value is not None and value.universe != universe:
                    raise UniverseError(f"key {universe!r} names another universe")
                decoded.append((universe, value))
            except (UniverseError, UnicodeDecodeError) as e:
                # Not ours (written by hand?): skipped, loudly, rather than a stuck registry.
                logger.error(
                    "skipping %s[0]@%d: %s",
                    self._tp.topic, record.offset, e,
                )  # fmt: skip
        self.registry = Registry.of(fold(self._universes, decoded), required=self._required)


async def read_registry(bootstrap: tuple[str, ...], topic: str, timeout_s: float) -> Registry:
    """The registry as it is now (read once to its end)."""
    reader = RegistryReader(bootstrap, topic)
    await reader.start()
    try:
        await reader.wait_read(timeout_s)
        return reader.registry
    finally:
        await reader.stop()


async def write_record(
    bootstrap: tuple[str, ...],
    topic: str,
    universe: str,
    record: UniverseRecord,
    *,
    idempotence: bool,
) -> None:
    """Append ``record`` (None: a tombstone) for ``universe``, acknowledged by every replica."""
    producer = AIOKafkaProducer(
        bootstrap_servers=list(bootstrap), acks="all", enable_idempotence=idempotence,
        request_timeout_ms=10_000,
    )  # fmt: skip
    try:
        await producer.start()
        await producer.send_and_wait(
            topic, encode_record(record), key=universe.encode(), partition=0
        )
    except KafkaError as e:
        raise RegistryUnavailable(broker_problem(e, bootstrap, idempotence=idempotence)) from e
    finally:
        await producer.stop()


def now_ms() -> int:
    return time.time_ns() // 1_000_000
