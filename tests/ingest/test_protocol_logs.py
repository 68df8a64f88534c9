"""Malformed requests cannot flood the edge's log: a throttled warning, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest

from ingest.gif import PIXEL
from ingest.throttled_log import ThrottledLog

ROOT = Path(__file__).resolve().parents[2]
MALFORMED = 200

# Each a list of chunks, sent one after the other's answer: what scanners and broken clients send.
KINDS: list[list[bytes]] = [
    [b"BAD\x01 / HTTP/1.1\r\nHost: edge\r\n\r\n"],  # bad request line (method)
    [b"GET / HTTP/9.9\r\nHost: edge\r\n\r\n"],  # invalid HTTP version
    [b"GET /sales.php HTTP/1.1\r\nHost: edge\r\nBad\x01Name: x\r\n\r\n"],  # bad header bytes
    [b"GET /sales.php HTTP/1.1\r\nHost: edge\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"],  # huge
    [b"GET /sales.php HTTP/1.1\r\nHost: edge\r\n" + b"X-h: v\r\n" * 200 + b"\r\n"],  # too many
    [b"POST /v1/sales HTTP/1.1\r\nHost: edge\r\nContent-Length: abc\r\n\r\n"],  # invalid HTTP
    [b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32))],  # TLS to plain HTTP
    # aiohttp logs a bad method quietly on a connection's first request only: here, the second.
    [b"GET /healthz HTTP/1.1\r\nHost: edge\r\n\r\n", b"\x00\xff garbage\r\n\r\n"],
]


async def send_malformed(port: int, chunks: list[bytes]) -> bytes:
    """Send each chunk after the previous answer; the last answer (the server then closes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        answer = b""
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(65536), 10)
        # The 400 closes the connection: read to its end.
        while rest := await asyncio.wait_for(reader.read(65536), 10):
            answer += rest
        return answer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def wait_until_serving(session: aiohttp.ClientSession, base: str) -> None:
    for _ in range(200):
        try:
            async with session.get(f"{base}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectorError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("the edge never answered /healthz")


async def test_malformed_requests_log_a_throttled_line_without_tracebacks(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    port = int(service_env["TRACKER_EDGE_PORT"])
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "edge.log"
    env = {**os.environ, **service_env, "TRACKER_LOG_FORMAT": "json", "TRACKER_LOG_LEVEL": "INFO"}
    with log_path.open("wb") as log:
        edge = subprocess.Popen(  # noqa: ASYNC220 - starting it is instant; waiting is off-loop
            [sys.executable, "-m", "ingest"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    try:
        async with aiohttp.ClientSession() as session:
            await wait_until_serving(session, base)
            kinds = [KINDS[i % len(KINDS)] for i in range(MALFORMED)]
            answers = [await send_malformed(port, kind) for kind in kinds]
            for kind, answer in zip(kinds, answers, strict=True):
                # A malformed call of the pixel still gets its image (silent mode); anything
                # else gets aiohttp's 400.
                pixel = kind[-1].startswith(b"GET /sales.php")
                expected = b"HTTP/1.0 200 OK" if pixel else b"HTTP/1.0 400 Bad Request"
                assert answer.startswith(expected), (kind[-1][:40], answer[:40])
                assert not pixel or answer.endswith(PIXEL)
            # Still serving normally afterwards.
            async with session.get(f"{base}/sales.php?universe=demo&amount=1&id=after") as r:
                assert r.status == 200
                assert await r.read() == PIXEL
            async with session.get(f"{base}/metrics") as r:
                exposition = await r.text()
    finally:
        edge.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(edge.wait, 60)
    assert code == 0

    text = log_path.read_text()
    assert "Traceback" not in text
    entries = [orjson.loads(line) for line in text.splitlines()]
    about = [e for e in entries if e["logger"] in ("aiohttp.server", "ingest.protocol")]
    # The first one at once, the rest counted into one line per minute (or at shutdown).
    assert 2 <= len(about) <= 3, about
    assert all(e["level"] == "warning" and len(e["message"]) < 400 for e in about), about
    assert about[0]["message"].startswith("malformed HTTP request answered 400: ")
    summaries = [e["message"] for e in about[1:]]
    assert all(" more malformed HTTP requests answered 400 in the last " in m for m in summaries)
    assert 1 + sum(int(m.split()[0]) for m in summaries) == MALFORMED
    # Counted all the same, one by one.
    assert (
        f'tracker_edge_protocol_events_total{{event="malformed_request"}} {MALFORMED}.0'
        in exposition
    )


async def test_a_throttled_log_writes_one_line_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = "tests.throttled"
    caplog.set_level(logging.WARNING, logger=name)
    log = ThrottledLog(logging.getLogger(name), logging.WARNING, "odd things", interval_s=1.0)
    for i in range(50):
        log.log("odd thing %d", i)
    assert [r.getMessage() for r in caplog.records] == ["odd thing 0"]
    await asyncio.sleep(1.4)  # the interval ended: the count is reported without a new event
    assert len(caplog.records) == 2
    assert caplog.records[1].getMessage().startswith("49 more odd things in the last ")
    for i in range(5):  # inside the interval the summary opened: counted, not logged
        log.log("odd thing %d", i)
    assert len(caplog.records) == 2
    log.flush()
    assert caplog.records[2].getMessage().startswith("5 more odd things")
    log.flush()
    assert len(caplog.records) == 3
