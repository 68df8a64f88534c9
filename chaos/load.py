"""Pixel calls at a steady rate, remembering which ones were answered with the image."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import aiohttp

from ingest.gif import PIXEL


def amount_of(i: int) -> tuple[str, Decimal]:
    """The i-th call's amount as sent (comma or dot) and as it must be counted."""
    whole, cents = (i * 7919) % 100_000 + 1, i % 100
    raw = f"{whole},{cents:02d}" if i % 2 else f"{whole}.{cents:02d}"
    return raw, Decimal(f"{whole}.{cents:02d}")


def customer_of(i: int) -> str:
    """The i-th call's customer: every call names one, so customer_turnover counts them all."""
    return f"cust{i % 97}"


@dataclass
class Answered:
    """What the edge answered with the GIF: transaction id -> amount."""

    sales: dict[str, Decimal] = field(default_factory=dict)
    failed: int = 0  # not answered (connection refused or reset: the edge was down)

    def total(self) -> Decimal:
        return sum(self.sales.values(), Decimal(0))


async def _call(
    session: aiohttp.ClientSession, url: str, tx: str, amount: Decimal, out: Answered
) -> None:
    try:
        async with session.get(url) as response:
            body = await response.read()
            if response.status == 200 and body == PIXEL:
                out.sales[tx] = amount
                return
    except (aiohttp.ClientError, TimeoutError):
        pass
    out.failed += 1


async def stream(
    base: str,
    *,
    universe: str,
    rate: float,
    duration_s: float,
    faults: Sequence[tuple[float, Callable[[], object]]] = (),
    start: int = 0,
) -> Answered:
    """``rate`` calls/s for ``duration_s``; each fault runs (in a thread) at its time."""
    out = Answered()
    timeout = aiohttp.ClientTimeout(total=10)
    began = time.monotonic()
    pending: set[asyncio.Task[object]] = set()
    scheduled = sorted(faults, key=lambda f: f[0])
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        for n in range(int(rate * duration_s)):
            i = start + n
            due = began + n / rate
            while scheduled and scheduled[0][0] <= due - began:
                _, action = scheduled.pop(0)
                pending.add(asyncio.create_task(asyncio.to_thread(action)))
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            raw, amount = amount_of(i)
            tx = f"{universe}-{i}"
            url = f"{base}/sales.php?universe={universe}&amount={raw}&id={tx}"
            url += f"&customer={customer_of(i)}"
            call: asyncio.Task[object] = asyncio.create_task(_call(session, url, tx, amount, out))
            pending.add(call)
            call.add_done_callback(pending.discard)
        for _, action in scheduled:
            pending.add(asyncio.create_task(asyncio.to_thread(action)))
        if pending:
            await asyncio.gather(*pending)
    return out


async def burst(
    base: str, *, universe: str, count: int, concurrency: int, start: int = 0
) -> Answered:
    """``count`` calls as fast as ``concurrency`` connections allow."""
    out = Answered()
    queue = list(range(start, start + count))
    timeout = aiohttp.ClientTimeout(total=10)

    async def worker(session: aiohttp.ClientSession) -> None:
        while queue:
            i = queue.pop()
            raw, amount = amount_of(i)
            tx = f"{universe}-{i}"
            await _call(
                session,
                f"{base}/sales.php?universe={universe}&amount={raw}&id={tx}"
                f"&customer={customer_of(i)}",
                tx,
                amount,
                out,
            )

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return out
