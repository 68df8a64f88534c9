"""A paced pixel load: ``python -m bench.load URL --rate R --seconds S --start-at T --ids P``.

Open loop: request i leaves at ``T + i / R`` whatever the answers before it did, so a slow
server shows as latency, not as a lower rate. Prints one JSON object: the CLOCK_MONOTONIC
time of every answer (system-wide on Linux, so several load processes can be merged) and
the count of failed requests. The freshness benchmark runs several of these side by side:
one Python process tops out near 1,500 requests/s on these machines.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import aiohttp
import orjson
import uvloop


async def run(
    url: str, rate: float, seconds: float, start_at: float, ids: str
) -> dict[str, object]:
    answered: list[float] = []
    failed = 0
    total = int(rate * seconds)

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal failed
        try:
            async with session.get(f"{url}&id={ids}{i}") as response:
                await response.read()
                if response.status != 200:
                    failed += 1
                    return
            answered.append(time.monotonic())
        except aiohttp.ClientError:
            failed += 1

    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        for i in range(total):
            delay = start_at + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, i)))
        await asyncio.gather(*tasks)
    return {"answered": answered, "failed": failed, "sent": total,
            "elapsed": time.monotonic() - start_at}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load")
    parser.add_argument("url", help="pixel URL without the id, e.g. http://h:p/sales.php?a=1")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--start-at", type=float, required=True, help="time.monotonic() to start")
    parser.add_argument("--ids", required=True, help="prefix of the transaction ids")
    args = parser.parse_args()
    result = uvloop.run(run(args.url, args.rate, args.seconds, args.start_at, args.ids))
    sys.stdout.buffer.write(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
