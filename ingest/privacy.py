"""The client address, as ops may keep it: a keyed hash, never the address itself."""

from __future__ import annotations

import functools
import hashlib
import hmac


def client_address(peer: str | None, forwarded_for: str | None, trusted_hops: int) -> str:
    """The caller's IP: the peer, or with ``trusted_hops`` proxies in front of us the entry
    of X-Forwarded-For that the outermost trusted proxy appended."""
    if trusted_hops > 0 and forwarded_for:
        hops = [part.strip() for part in forwarded_for.split(",") if part.strip()]
        if len(hops) >= trusted_hops:
            return hops[-trusted_hops]
    return peer or ""


@functools.lru_cache(maxsize=65536)
def client_hash(secret: str, address: str) -> str:
    # Cached: the same clients call again and again, and an HMAC per request shows in profiles.
    if not address:
        return ""
    return hmac.new(secret.encode(), f"ip\x1f{address}".encode(), hashlib.sha256).hexdigest()[:16]
