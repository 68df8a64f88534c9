"""Slow and idle clients cannot hold the edge's sockets: the real edge over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from helpers import running_edge
from ingest.gif import PIXEL
from ingest.settings import EdgeSettings
from schemas.environ import ConfigError

# A head that never ends: no blank line, so the parser always waits for more.
ENDLESS_HEAD = (
    b"GET /sales.php?universe=demo&amount=1 HTTP/1.1\r\nHost: edge\r\n" + b"X-a: b\r\n" * 64
)
# Generous: other test sessions share this 2-core machine.
MARGIN_S = 2.5


def settings_with(service_env: dict[str, str], **overrides: str) -> EdgeSettings:
    return EdgeSettings.from_env({**service_env, **overrides})


@contextlib.asynccontextmanager
async def connection(
    base: str,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def closed_by_server(
    reader: asyncio.StreamReader, within: float, since: float | None = None
) -> float:
    """Seconds until the server closes the connection (having sent nothing), counted from
    ``since`` (a moment before the connection opened) or from now."""
    started = time.monotonic() if since is None else since
    try:
        data = await asyncio.wait_for(reader.read(1024), within)
    except ConnectionResetError:
        data = b""
    except TimeoutError:
        raise AssertionError(f"the connection was still open after {within}s") from None
    assert data == b"", f"the server answered {data[:80]!r} instead of closing"
    return time.monotonic() - started


async def trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """One byte every ``every`` seconds (a slowloris), until the server closes the socket."""
    with contextlib.suppress(ConnectionError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every)


async def request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
) -> tuple[bytes, bytes]:
    """One keep-alive HTTP/1.1 request on a raw connection: (status line, body)."""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: edge\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status, *fields = head.split(b"\r\n")
    length = next(
        int(value) for name, _, value in (f.partition(b":") for f in fields)
        if name.lower() == b"content-length"
    )  # fmt: skip
    return status, await asyncio.wait_for(reader.readexactly(length), 5)


async def test_a_connection_that_sends_no_complete_head_is_closed_after_the_header_timeout(
    service_env: dict[str, str],
) -> None:
    settings = settings_with(service_env, TRACKER_EDGE_HEADER_TIMEOUT_S="1")
    async with running_edge(settings) as base:
        # The timeout runs from the connection's opening: on a busy machine the measuring may
        # start well after it, so the lower bound is taken from before the connections open.
        opened = time.monotonic()
        async with connection(base) as (silent, _), connection(base) as (slow, slow_writer):
            slowloris = asyncio.create_task(trickle(slow_writer, ENDLESS_HEAD, every=0.3))
            try:
                silent_after, slow_after = await asyncio.gather(
                    closed_by_server(silent, within=1 + MARGIN_S, since=opened),
                    closed_by_server(slow, within=1 + MARGIN_S, since=opened),
                )
            finally:
                slowloris.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await slowloris
    # Closed by the head timeout (1 s), not before; the trickle would have gone on for 100 s.
    assert 0.8 < silent_after < 1 + MARGIN_S
    assert 0.8 < slow_after < 1 + MARGIN_S


async def test_keep_alive_connections_serve_requests_and_close_when_idle(
    service_env: dict[str, str],
) -> None:
    settings = settings_with(
        service_env, TRACKER_EDGE_HEADER_TIMEOUT_S="1", TRACKER_EDGE_KEEPALIVE_S="3"
    )
    async with running_edge(settings) as base, connection(base) as (reader, writer):
        status, body = await request(reader, writer, "/sales.php?universe=demo&amount=1&id=ka-1")
        assert status == b"HTTP/1.1 200 OK"
        assert body == PIXEL
        # Idle for longer than the header timeout: between requests the keep-alive time rules.
        await asyncio.sleep(1.5)
        status, body = await request(reader, writer, "/sales.php?universe=demo&amount=1&id=ka-2")
        assert status == b"HTTP/1.1 200 OK"
        assert body == PIXEL
        idle = await closed_by_server(reader, within=3 + MARGIN_S)
    assert 2.5 < idle < 3 + MARGIN_S


async def test_a_kept_alive_connection_that_trickles_its_next_head_is_closed(
    service_env: dict[str, str],
) -> None:
    settings = settings_with(
        service_env, TRACKER_EDGE_HEADER_TIMEOUT_S="1", TRACKER_EDGE_KEEPALIVE_S="30"
    )
    async with running_edge(settings) as base, connection(base) as (reader, writer):
        status, _ = await request(reader, writer, "/healthz")
        assert status == b"HTTP/1.1 200 OK"
        await asyncio.sleep(0.5)
        slowloris = asyncio.create_task(trickle(writer, ENDLESS_HEAD, every=0.3))
        try:
            # The head timeout counts from the new head's first byte, far below the keep-alive.
            assert 0.8 < await closed_by_server(reader, within=1 + MARGIN_S) < 1 + MARGIN_S
        finally:
            slowloris.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slowloris


async def test_500_idle_connections_do_not_slow_a_pixel_call(
    service_env: dict[str, str],
) -> None:
    idle_count = 500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Both ends of every idle connection live in this process, plus the session's own files.
    needed = 2 * idle_count + 512
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    settings = settings_with(service_env)
    async with running_edge(settings) as base:
        host, port = base.removeprefix("http://").split(":")
        idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            # In batches: the listen backlog (128) would drop a burst of 500 SYNs.
            for _ in range(idle_count // 50):
                opened = await asyncio.gather(
                    *(asyncio.open_connection(host, int(port)) for _ in range(50))
                )
                idle.extend(opened)
            async with aiohttp.ClientSession() as session:
                started = time.monotonic()
                async with session.get(f"{base}/sales.php?universe=demo&amount=1&id=idle") as r:
                    assert r.status == 200
                    assert await r.read() == PIXEL
                elapsed = time.monotonic() - started
            assert elapsed < 1.0
            # They were all still open (idle, within the header timeout) during the call.
            assert not any(reader.at_eof() for reader, _ in idle)
        finally:
            for _, writer in idle:
                writer.close()
            await asyncio.gather(*(w.wait_closed() for _, w in idle), return_exceptions=True)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TRACKER_EDGE_HEADER_TIMEOUT_S", "0"),
        ("TRACKER_EDGE_HEADER_TIMEOUT_S", "ten"),
        ("TRACKER_EDGE_KEEPALIVE_S", "0"),
        ("TRACKER_EDGE_KEEPALIVE_S", "1.5"),
    ],
)
def test_bad_timeouts_stop_the_edge_with_the_variable_named(
    service_env: dict[str, str], name: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=name):
        EdgeSettings.from_env({**service_env, name: value})


def test_the_timeouts_have_defaults_and_show_in_the_settings_repr(
    service_env: dict[str, str],
) -> None:
    settings = EdgeSettings.from_env(service_env)
    assert (settings.header_timeout_s, settings.keepalive_s) == (10, 15)
    shown = repr(
        settings_with(service_env, TRACKER_EDGE_HEADER_TIMEOUT_S="5", TRACKER_EDGE_KEEPALIVE_S="60")
    )
    assert "header_timeout_s=5" in shown
    assert "keepalive_s=60" in shown
    assert service_env["TRACKER_SECRET"] not in shown
