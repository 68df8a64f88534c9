"""Does a text reveal an id in any usual encoding? For tokens, cookies and URLs the edge emits.

Checks the id as it is, percent-encoded (each way a browser or a library writes it), as hex,
as JSON, and inside base64, base64url and base32 at every alignment: base64 of a longer
payload spells an id differently depending on where the id starts, so the text is decoded
at each offset rather than the id encoded once.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote

import orjson

_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{4,}")
_B32_RUN = re.compile(r"[A-Z2-7]{8,}")
_HEX_RUN = re.compile(r"(?:[0-9a-fA-F]{2}){2,}")


def _spellings(value: str) -> set[str]:
    raw = value.encode()
    return {
        value,
        quote(value, safe=""),
        quote_plus(value),
        "".join(f"%{b:02X}" for b in raw),
        "".join(f"%{b:02x}" for b in raw),
        raw.hex(),
        raw.hex().upper(),
        orjson.dumps(value).decode(),
    }


def _decodings(text: str) -> Iterable[bytes]:
    """Every byte string the text's base64/base64url/base32/hex-looking runs decode to."""
    for match in _B64_RUN.finditer(text):
        run = match.group().replace("-", "+").replace("_", "/")
        for start in range(4):  # an id may begin at any character of a quantum
            part = run[start:]
            part = part[: len(part) - len(part) % 4]
            if part:
                with contextlib.suppress(binascii.Error, ValueError):
                    yield base64.b64decode(part, validate=True)
    for match in _B32_RUN.finditer(text):
        for start in range(8):
            part = match.group()[start:]
            part = part[: len(part) - len(part) % 8]
            if part:
                with contextlib.suppress(binascii.Error, ValueError):
                    yield base64.b32decode(part)
    for match in _HEX_RUN.finditer(text):
        yield bytes.fromhex(match.group())


def revealed(ids: Iterable[str], text: str) -> list[str]:
    """The ids ``text`` shows, in any of the encodings above (after undoing its own
    percent-encoding once too)."""
    found = []
    texts = {text, unquote(text)}
    blobs = [blob for t in texts for blob in _decodings(t)]
    for value in ids:
        shown = any(s in t for s in _spellings(value) for t in texts)
        # Each 3-byte offset of base64 spells different text, so look for the raw bytes.
        if shown or any(value.encode() in blob for blob in blobs):
            found.append(value)
    return found
