"""The 1x1 transparent GIF that the pixel answers, the headers that stop every cache, and
the answer itself, written as prebuilt bytes.

aiohttp's ``web.Response`` builds a header multidict, formats every header and the status
line, and goes through the payload writer for each request: about a fifth of a bare aiohttp
app's time per call. The pixel's answer never varies but for the date (per second), the
HTTP version, keep-alive and HEAD, so :class:`GifResponse` writes one of a few cached byte
strings straight to the transport.
"""

from __future__ import annotations

import base64
import time
from email.utils import formatdate
from typing import Final

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

PIXEL: Final = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

# A cached pixel is a lost sale: a refreshed confirmation page must reach us again.
NO_CACHE_HEADERS: Final = {
    "Content-Type": "image/gif",
    "Cache-Control": "no-store, no-cache, must-revalidate, private",
    "Pragma": "no-cache",
    "Expires": "Thu, 01 Jan 1970 00:00:00 GMT",
}

_FIXED_HEAD: Final = "".join(f"{k}: {v}\r\n" for k, v in NO_CACHE_HEADERS.items()).encode() + (
    f"Content-Length: {len(PIXEL)}\r\n".encode()
)
# Above this much unsent output the answer waits for the client to read (as aiohttp's writer
# does): a client that pipelines requests and never reads cannot grow our buffers.
_WRITE_BUFFER_HIGH: Final = 65536


class _Answers:
    """The answers of the current second, by (HTTP minor version, keep-alive, HEAD)."""

    def __init__(self) -> None:
        self._second = -1
        self._cache: dict[tuple[int, bool, bool], bytes] = {}

    def get(self, minor: int, keep_alive: bool, head: bool) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._cache = now, {}
        key = (minor, keep_alive, head)
        answer = self._cache.get(key)
        if answer is None:
            answer = self._cache[key] = _build(now, minor, keep_alive, head)
        return answer


def _build(now: int, minor: int, keep_alive: bool, head: bool) -> bytes:
    # HTTP/1.1 keeps the connection unless told; HTTP/1.0 closes it unless told.
    connection = (
        b"Connection: close\r\n" if minor >= 1 and not keep_alive
        else b"Connection: keep-alive\r\n" if minor == 0 and keep_alive
        else b""
    )  # fmt: skip
    return b"".join((
        f"HTTP/1.{minor} 200 OK\r\n".encode(),
        _FIXED_HEAD,
        f"Date: {formatdate(now, usegmt=True)}\r\n".encode(),
        connection,
        b"\r\n",
        b"" if head else PIXEL,
    ))  # fmt: skip


_ANSWERS: Final = _Answers()


class GifResponse(web.StreamResponse):
    """The pixel's answer: status, headers and image in one write of cached bytes.

    It skips what the pixel does not use: ``on_response_prepare`` signals, cookies,
    compression and the ``Server`` header (which only told the world our versions).
    """

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        transport = request.transport
        if transport is None or transport.is_closing():
            # aiohttp reads a ConnectionError here as the client gone before its answer.
            raise ConnectionResetError("the client closed the connection before the answer")
        if self._keep_alive is None:  # not closed by force_close()
            self._keep_alive = request.keep_alive
        answer = _ANSWERS.get(request.version.minor, self._keep_alive, request.method == "HEAD")
        transport.write(answer)
        self._eof_sent = True  # aiohttp's write_eof is then a no-op
        if transport.get_write_buffer_size() > _WRITE_BUFFER_HIGH:
            await request.writer.drain()
        return None

    @property
    def body(self) -> bytes:
        return PIXEL
