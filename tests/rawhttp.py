"""HTTP/1.1 over a raw socket, for what aiohttp's client will not send: raw bytes in headers
and query strings, bodies in timed pieces, hand-made chunked encoding."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


def request_head(method: str, target: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> bytes:
    """A request line and headers (ending with the blank line); values are sent as given."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [name.encode() + b": " + value for name, value in headers]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def chunked(body: bytes, size: int = 65536) -> list[bytes]:
    """``body`` in the chunked transfer coding, one write per chunk, then the last chunk."""
    pieces = [
        f"{len(body[i : i + size]):x}\r\n".encode() + body[i : i + size] + b"\r\n"
        for i in range(0, len(body), size)
    ]
    return [*pieces, b"0\r\n\r\n"]


async def exchange(
    host: str, port: int, writes: Sequence[bytes], pause_s: float = 0.0, timeout: float = 60.0
) -> RawResponse:
    """Send ``writes`` one by one, ``pause_s`` apart, while reading the answer to the end.

    Writing and reading run side by side: a server may answer (413) before the body is sent.
    """
    reader, writer = await asyncio.open_connection(host, port)
    try:

        async def send() -> None:
            for i, data in enumerate(writes):
                if i and pause_s:
                    await asyncio.sleep(pause_s)
                writer.write(data)
                await writer.drain()

        sending = asyncio.create_task(send())
        try:
            raw = await asyncio.wait_for(reader.read(), timeout)
        finally:
            with contextlib.suppress(ConnectionError):
                await sending
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return parse_response(raw)


def parse_response(raw: bytes) -> RawResponse:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return RawResponse(int(status_line.split(" ")[1]), headers, body)
