"""Whether request text is real Unicode: bytes that were not UTF-8 arrive surrogate-escaped.

aiohttp (and the command line) hand undecodable bytes over as lone surrogates; such a string
raises as soon as anything encodes it (an HMAC, an event, a log line), so every surface
checks first and refuses it with a reason instead.
"""

from __future__ import annotations


def is_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
