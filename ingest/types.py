"""Shared aliases of the publishing modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ingest.message import Message

# A call queued by publish_later: the pure function that makes its message, what the call
# carried, and the endpoint a failure of the function is counted under. A plain tuple, the
# cheapest thing to build per call.
Deferred = tuple[Callable[[Any], Message], Any, str]
# What memory holds: a message made at once (the API's, the click's), or a deferred call.
Entry = Message | Deferred
