"""The local stack's universe registry: `demo` is registered, so the README's calls count."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Final

from aiokafka.errors import KafkaError

from schemas.environ import Environ
from schemas.kafka_settings import KafkaSettings
from schemas.topics import ensure_topics
from schemas.universe_log import RegistryUnavailable, now_ms, read_registry, write_record
from schemas.universes import UniverseSettings

logger = logging.getLogger(__name__)

# No default currency: the README's calls without one stay under currency ''.
DEMO: Final = "demo"
# A broker just (re)started can accept connections a moment before it answers requests.
ATTEMPTS_S: Final = 60.0


async def ensure_registered(env: Mapping[str, str], universe: str = DEMO) -> bool:
    """Register ``universe`` (no settings) unless it is; True when this call added it."""
    kafka = KafkaSettings.from_env(Environ(env))
    await ensure_topics(
        kafka.bootstrap, kafka.topics, partitions=kafka.partitions, replication=kafka.replication
    )
    registry = await read_registry(kafka.bootstrap, kafka.topics.universes, timeout_s=60)
    if universe in registry.universes:
        return False
    record = UniverseSettings(universe=universe, updated_at_ms=now_ms())
    await write_record(
        kafka.bootstrap, kafka.topics.universes, universe, record, idempotence=kafka.idempotence
    )
    logger.info("registered universe %s in %s", universe, kafka.topics.universes)
    return True


def register_demo(env: Mapping[str, str]) -> None:
    """Register demo, retrying while the broker does not answer yet (then raise)."""
    deadline = time.monotonic() + ATTEMPTS_S
    while True:
        try:
            asyncio.run(ensure_registered(env))
            return
        except (KafkaError, RegistryUnavailable) as e:
            if time.monotonic() > deadline:
                raise
            logger.warning("could not register %s yet (%s); retrying", DEMO, e)
            time.sleep(1)
