"""Click tokens: the click id a landing page receives and the cookie holds. Pure.

Version 2 (what the edge issues) is opaque: AES-256-GCM under a key derived per universe from
the secret, as link signatures are. Only what a shop's page needs to manage the token is in
the clear, and authenticated as associated data: a version byte and the time the token
expires (a script keeps it that long without being able to read it)::

    base64url( 0x02 | expires_at_s (4 bytes, big-endian) | nonce (12) | AES-GCM(click) )

Version 1 (base64 JSON and an HMAC, ``schemas/signing.py``) revealed the customer, campaign
and link to every script on the landing page; such tokens are still read until they expire.
"""

from __future__ import annotations

import os
import struct
from typing import Final

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas.events import ClickContext
from schemas.signing import SignatureError, _b64, _key, _unb64, read_v1_token

VERSION: Final = 2
_HEADER: Final = struct.Struct(">BI")  # version, expires_at_s
_NONCE_BYTES: Final = 12
_TAG_BYTES: Final = 16
# The smallest v2 token: its header, nonce and tag around an empty plaintext.
_MIN_BYTES: Final = _HEADER.size + _NONCE_BYTES + _TAG_BYTES
# Click times may run ahead of the reader's clock by this much (clocks of two hosts).
CLOCK_SKEW_MS: Final = 300_000


def _cipher(secret: str, universe: str) -> AESGCM:
    # Its own purpose: the sealing key is never the key that signs links or v1 tokens.
    return AESGCM(_key(secret, "click-seal", universe))


def _associated(header: bytes, universe: str) -> bytes:
    return header + universe.encode()


def seal(secret: str, click: ClickContext, *, expires_at_s: int) -> str:
    """The opaque token of ``click``, valid (for the browser) until ``expires_at_s``.

    A random 96-bit nonce per token: with one key per universe, that stays far below the
    2**32 tokens per key where random GCM nonces start to risk a collision.
    """
    header = _HEADER.pack(VERSION, expires_at_s)
    nonce = os.urandom(_NONCE_BYTES)
    plain = orjson.dumps(
        [click.customer_id, click.campaign_id, click.link_id, click.product,
         click.clicked_at_ms, click.click_id]
    )  # fmt: skip
    sealed = _cipher(secret, click.universe).encrypt(
        nonce, plain, _associated(header, click.universe)
    )
    return _b64(header + nonce + sealed)


def expires_at_s(token: str) -> int | None:
    """When a v2 token stops being worth keeping (what the snippet reads), None if not v2.

    Not authenticated here: only the projector, with the key, decides what a token is worth.
    """
    try:
        data = _unb64(token[:8])
    except ValueError:
        return None
    if len(data) < _HEADER.size or data[0] != VERSION:
        return None
    return int(_HEADER.unpack_from(data)[1])


def _open(secret: str, token: str, universe: str) -> ClickContext:
    try:
        data = _unb64(token)
    except ValueError:
        raise SignatureError("context_malformed") from None
    if len(data) < _MIN_BYTES or data[0] != VERSION:
        raise SignatureError("context_malformed")
    header = data[: _HEADER.size]
    nonce = data[_HEADER.size : _HEADER.size + _NONCE_BYTES]
    try:
        plain = _cipher(secret, universe).decrypt(
            nonce, data[_HEADER.size + _NONCE_BYTES :], _associated(header, universe)
        )
    except InvalidTag:
        # Another secret, another universe's key, or altered bytes: all the same to us.
        raise SignatureError("context_forged") from None
    try:
        customer, campaign, link, product, clicked_at_ms, click_id = orjson.loads(plain)
    except (ValueError, TypeError):  # sealed by us, so never seen unless the format changed
        raise SignatureError("context_malformed") from None
    return ClickContext(universe, customer, campaign, link, product, clicked_at_ms, click_id)


def read_token(
    secret: str, token: str, *, universe: str, now_ms: int, window_ms: int
) -> ClickContext:
    """The click a token of either version names, if genuine, of ``universe`` and in the window.

    Raise :class:`SignatureError` with the reason (``context_malformed``, ``context_forged``,
    ``context_other_universe``, ``context_expired``). A v2 token of another universe reads
    as forged: its key is that universe's, so nothing tells the two apart.
    """
    # Base64url and "." only: cookie bytes that are not ASCII arrive surrogate-escaped.
    if not token or not token.isascii():
        raise SignatureError("context_malformed")
    if "." in token:  # v2 is base64url alone; v1 is payload "." signature
        click = read_v1_token(secret, token, universe=universe)
    else:
        click = _open(secret, token, universe)
    if not isinstance(click.clicked_at_ms, int):
        raise SignatureError("context_malformed")
    if click.clicked_at_ms > now_ms + CLOCK_SKEW_MS or now_ms - click.clicked_at_ms > window_ms:
        raise SignatureError("context_expired")
    return click
