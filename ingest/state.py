"""Typed keys of what the edge app holds, shared by its handlers."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ingest.metrics import EdgeMetrics
from ingest.publisher import Publisher
from ingest.settings import EdgeSettings
from ingest.universes import EdgeRegistry

SETTINGS = web.AppKey("settings", EdgeSettings)
METRICS = web.AppKey("metrics", EdgeMetrics)
PUBLISHER = web.AppKey("publisher", Publisher)
REGISTRY = web.AppKey("registry", EdgeRegistry)
# The sale pixel's answer (ingest/pixel.py), which the runner calls past the router.
PIXEL = web.AppKey[Callable[[web.BaseRequest], web.StreamResponse]]("pixel")
