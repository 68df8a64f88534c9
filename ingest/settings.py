"""The edge's settings: one frozen object built from the environment in one place."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from schemas.environ import ConfigError, Environ
from schemas.kafka_settings import KafkaSettings
from schemas.rules import DEFAULT_RULES

API_KEY_MIN_LENGTH = 24


def parse_api_keys(name: str, raw: str) -> dict[str, str]:
    """``universe:key,universe:key`` -> {key: universe}; several keys per universe allowed."""
    keys: dict[str, str] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        universe, sep, key = item.partition(":")
        if not sep or not DEFAULT_RULES.universe.fullmatch(universe):
            raise ConfigError(f"{name} entries must be universe:key, got an entry for {universe!r}")
        if len(key) < API_KEY_MIN_LENGTH:
            raise ConfigError(
                f"{name}: the key of universe {universe!r} is shorter than "
                f"{API_KEY_MIN_LENGTH} characters"
            )
        if key in keys:
            raise ConfigError(f"{name}: one key is listed twice")
        keys[key] = universe
    return keys


# Lower-case DNS names of two labels or more, no port: what a proxy asks a certificate for.
_HOSTNAME: Final = re.compile(
    r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}"
)


def parse_first_party_hosts(name: str, raw: str) -> dict[str, str]:
    """``universe:host,universe:host`` -> {host: universe}; a universe may have several hosts,
    a host serves one universe."""
    hosts: dict[str, str] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        universe, sep, host = item.partition(":")
        host = host.strip().lower()
        if not sep or not DEFAULT_RULES.universe.fullmatch(universe):
            raise ConfigError(f"{name} entries must be universe:host, got {item!r}")
        if not _HOSTNAME.fullmatch(host):
            raise ConfigError(f"{name}: {host!r} is not a hostname (no scheme, no port)")
        if hosts.get(host, universe) != universe:
            raise ConfigError(f"{name}: {host!r} is given to two universes")
        hosts[host] = universe
    return hosts


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    host: str
    port: int
    public_url: str
    kafka: KafkaSettings
    # The edge's producer tuning (TRACKER_KAFKA_*): the projector's producer sends only
    # dead letters, so these stay here rather than in the shared KafkaSettings.
    producer_compression: str | None
    producer_linger_ms: int
    producer_batch_bytes: int
    queue_max: int
    drain_timeout_s: int
    spool_dir: Path
    spool_max_bytes: int
    spool_sync_ms: int
    # A batch not acknowledged within this is late: the broker counts as not answering, and
    # the batch is copied to the spool while it stays in flight (ingest/sender.py).
    ack_deadline_ms: int
    attribution_window_ms: int
    trusted_proxy_hops: int
    header_timeout_s: int
    keepalive_s: int
    # As the projector's: the API answers as the projector will judge (schemas/universes.py).
    universes_required: bool
    # A shop's own tracking hostname -> its universe (ingest/hosts.py): the first-party set-up.
    first_party_hosts: Mapping[str, str]
    secret: str = field(repr=False)
    api_keys: Mapping[str, str] = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EdgeSettings:
        env = Environ(os.environ if environ is None else environ)
        compression = env.choice(
            "TRACKER_KAFKA_COMPRESSION", "lz4", ("none", "gzip", "lz4", "zstd", "snappy")
        )
        port = env.port("TRACKER_EDGE_PORT", 8080)
        public_url = env.http_url("TRACKER_EDGE_PUBLIC_URL", f"http://127.0.0.1:{port}")
        if urlsplit(public_url).path not in ("", "/"):
            raise ConfigError("TRACKER_EDGE_PUBLIC_URL must be scheme://host[:port] only")
        return cls(
            host=env.text("TRACKER_EDGE_HOST", "127.0.0.1"),
            port=port,
            public_url=public_url.rstrip("/"),
            kafka=KafkaSettings.from_env(env),
            producer_compression=None if compression == "none" else compression,
            producer_linger_ms=env.integer("TRACKER_KAFKA_LINGER_MS", 10, maximum=10_000),
            producer_batch_bytes=env.integer("TRACKER_KAFKA_BATCH_BYTES", 512 * 1024, minimum=1024),
            queue_max=env.integer("TRACKER_EDGE_QUEUE_MAX", 100_000, minimum=1),
            drain_timeout_s=env.integer("TRACKER_EDGE_DRAIN_TIMEOUT_S", 30, minimum=1),
            spool_dir=Path(env.text("TRACKER_EDGE_SPOOL_DIR", ".data/spool")),
            spool_max_bytes=env.integer("TRACKER_EDGE_SPOOL_MAX_MB", 1024, minimum=1) * 2**20,
            spool_sync_ms=env.integer("TRACKER_EDGE_SPOOL_SYNC_MS", 100, minimum=1, maximum=5000),
            ack_deadline_ms=env.integer(
                "TRACKER_EDGE_ACK_DEADLINE_MS", 1000, minimum=50, maximum=60_000
            ),
            attribution_window_ms=env.integer(
                "TRACKER_ATTRIBUTION_WINDOW_DAYS", 30, minimum=1, maximum=3650
            )
            * 86_400_000,
            trusted_proxy_hops=env.integer("TRACKER_TRUSTED_PROXY_HOPS", 0, maximum=10),
            # A client gets this long to send a whole request head (slow clients hold sockets).
            header_timeout_s=env.integer(
                "TRACKER_EDGE_HEADER_TIMEOUT_S", 10, minimum=1, maximum=600
            ),
            keepalive_s=env.integer("TRACKER_EDGE_KEEPALIVE_S", 15, minimum=1, maximum=3600),
            universes_required=env.flag("TRACKER_UNIVERSES_REQUIRED", False),
            first_party_hosts=parse_first_party_hosts(
                "TRACKER_EDGE_FIRST_PARTY_HOSTS", env.text("TRACKER_EDGE_FIRST_PARTY_HOSTS", ",")
            ),
            secret=env.secret("TRACKER_SECRET", min_length=32),
            api_keys=parse_api_keys("TRACKER_API_KEYS", env.text("TRACKER_API_KEYS", ",")),
        )
