"""Signed tracked links and version-1 click tokens (HMAC-SHA256), and the keys. Pure.

Keys are derived per purpose and per universe from one secret, so a key that leaks from one
universe (or a token of one kind) can sign nothing for another. The click token the edge
issues is sealed in ``schemas/click_token.py``; version 1, signed here, is still read.
"""

from __future__ import annotations

import base64
import functools
import hmac
import re
from typing import Final
from urllib.parse import urlencode, urlsplit

import msgspec
import orjson

from schemas.events import ClickContext
from schemas.unicode import is_unicode

SIGNATURE_CHARS: Final = 22  # 128 bits of the HMAC, base64url
MAX_TARGET_LENGTH: Final = 2048
# Controls, space and DEL: one regex search instead of a Python loop over every character
# (that loop was the largest cost of reading a click in the projector).
_CONTROL_OR_SPACE: Final = re.compile("[\x00-\x20\x7f]")


class SignatureError(ValueError):
    """Why a link or token was refused; ``reason`` is a stable code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@functools.lru_cache(maxsize=4096)
def _key(secret: str, purpose: str, universe: str) -> bytes:
    # Cached: the projector checks a token of the same few universes per sale.
    return hmac.digest(secret.encode(), f"{purpose}\x1f{universe}".encode(), "sha256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, message: str) -> str:
    # hmac.digest: the one-shot C path, several times faster than hmac.new(...).digest().
    return _b64(hmac.digest(key, message.encode(), "sha256"))[:SIGNATURE_CHARS]


def _same_signature(expected: str, given: str) -> bool:
    """Constant-time comparison of an ASCII signature with one a request carried.

    Request bytes that are not ASCII arrive surrogate-escaped and cannot be encoded: such a
    signature is simply not ours (comparing it must not raise).
    """
    return given.isascii() and hmac.compare_digest(expected.encode(), given.encode())


class Link(msgspec.Struct, frozen=True):
    # A Struct, like the events: built once per event, ten times cheaper than a frozen dataclass.
    universe: str
    customer_id: str
    campaign_id: str
    link_id: str
    target: str
    product: str = ""

    def canonical(self) -> str:
        return "\x1f".join(
            ("v1", self.universe, self.customer_id, self.campaign_id, self.link_id,
             self.product, self.target)
        )  # fmt: skip

    def click(self, clicked_at_ms: int, click_id: str) -> ClickContext:
        """This link followed at ``clicked_at_ms``, as click ``click_id``."""
        return ClickContext(
            self.universe, self.customer_id, self.campaign_id, self.link_id, self.product,
            clicked_at_ms, click_id,
        )  # fmt: skip


def safe_target(url: str) -> bool:
    """Only absolute http(s) URLs without control characters or user info may be redirected to."""
    if not url or len(url) > MAX_TARGET_LENGTH:
        return False
    if _CONTROL_OR_SPACE.search(url):
        return False  # CR/LF would split the Location header; spaces are never valid
    # Browsers read a backslash as "/" in http(s) URLs: the host they reach could differ from ours.
    if "\\" in url or not is_unicode(url):
        return False
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed "[" of an IPv6 host
        return False
    # User info ("https://good.example@evil.example/") only serves to make a host look like
    # another one; no landing page needs it.
    return parts.scheme in ("http", "https") and bool(parts.hostname) and "@" not in parts.netloc


def sign_link(secret: str, link: Link) -> str:
    return _mac(_key(secret, "link", link.universe), link.canonical())


def verify_link(secret: str, link: Link, signature: str) -> None:
    if not signature:
        raise SignatureError("link_unsigned")
    if not _same_signature(sign_link(secret, link), signature):
        raise SignatureError("link_bad_signature")


def link_url(base_url: str, secret: str, link: Link) -> str:
    """The tracked link to put in an e-mail."""
    query = {"u": link.universe, "c": link.customer_id, "k": link.campaign_id, "l": link.link_id}
    if link.product:
        query["p"] = link.product
    query["url"] = link.target
    query["s"] = sign_link(secret, link)
    return f"{base_url}/click?{urlencode(query)}"


def make_v1_token(secret: str, click: ClickContext) -> str:
    """A version-1 token: base64 JSON of the click and an HMAC. The edge issues version 2
    (``schemas/click_token.py``) since these showed the customer to every script of the
    landing page; kept to make the tokens still out there in tests."""
    payload = _b64(
        orjson.dumps(
            [click.universe, click.customer_id, click.campaign_id, click.link_id,
             click.product, click.clicked_at_ms, click.click_id]
        )
    )  # fmt: skip
    return f"{payload}.{_mac(_key(secret, 'click', click.universe), payload)}"


def read_v1_token(secret: str, token: str, *, universe: str) -> ClickContext:
    """The click a genuine version-1 token of ``universe`` names (its age is not checked here:
    ``schemas.click_token.read_token`` checks it for both versions)."""
    payload, sep, signature = token.partition(".")
    if not sep or not payload or not token.isascii():
        raise SignatureError("context_malformed")
    try:
        fields = orjson.loads(_unb64(payload))
        click = ClickContext(*fields)
    except (ValueError, TypeError):
        raise SignatureError("context_malformed") from None
    if not isinstance(click.universe, str) or not isinstance(click.clicked_at_ms, int):
        raise SignatureError("context_malformed")
    expected = _mac(_key(secret, "click", click.universe), payload)
    if not _same_signature(expected, signature):
        raise SignatureError("context_forged")
    if click.universe != universe:
        raise SignatureError("context_other_universe")
    return click
