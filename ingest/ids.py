"""Event ids: unique without a syscall per request.

A random 80-bit prefix drawn once per process, then a counter: as unique as a random UUID
across processes and restarts, and a fraction of the cost on the hot path. Workers are
started as new processes (not forked), so each draws its own prefix.
"""

from __future__ import annotations

import itertools
import secrets

_prefix = secrets.token_hex(10)
_counter = itertools.count()


def new_event_id() -> str:
    return f"{_prefix}{next(_counter):012x}"
