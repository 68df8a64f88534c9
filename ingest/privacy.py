"""The client address, as ops may keep it: a keyed hash, never the address itself."""

from __future__ import annotations

import functools
import hashlib
import hmac

from aiohttp import web

from ingest.settings import EdgeSettings


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


def request_client_hash(request: web.BaseRequest, settings: EdgeSettings) -> str:
    """The keyed hash of the caller's address."""
    return peer_client_hash(request.remote, request.headers.get("X-Forwarded-For"), settings)


def peer_client_hash(peer: str | None, forwarded_for: str | None, settings: EdgeSettings) -> str:
    """The keyed hash of the caller's address, from the peer and X-Forwarded-For as received."""
    if forwarded_for is not None and not forwarded_for.isascii():
        # Header bytes that are not ASCII arrive surrogate-escaped: no address, and they could
        # not be hashed. Read as if the header were absent.
        forwarded_for = None
    address = client_address(peer, forwarded_for, settings.trusted_proxy_hops)
    return client_hash(settings.secret, address)
