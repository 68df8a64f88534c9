"""The edge accepts the registry's API keys (stored hashed) beside TRACKER_API_KEYS: ready
means read, two keys of a universe both work, and a removed key answers 401 within ~1 s."""

from __future__ import annotations

import time

import aiohttp
from conftest import TEST_API_KEY

from helpers import eventually, running_edge
from helpers import universes_ok as ok
from ingest.settings import EdgeSettings

# What docs/reference.md promises for a removed key (the registry is polled every 0.5 s).
REVOCATION_S = 3.0
OTHER_ENV_KEY = "other-key-0123456789abcdef01"  # shop_b's, in conftest's TRACKER_API_KEYS


async def post(session: aiohttp.ClientSession, base: str, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    async with session.post(base + "/v1/sales", json={"amount": "1"}, headers=headers) as r:
        return r.status


async def results(
    session: aiohttp.ClientSession, base: str, key: str, sale: dict[str, str]
) -> list[str]:
    """The reasons of a one-sale request's rejection (or "accepted")."""
    headers = {"Authorization": f"Bearer {key}"}
    async with session.post(base + "/v1/sales", json=sale, headers=headers) as r:
        body = await r.json()
    return [item.get("reason", item["status"]) for item in body["results"]]


async def test_registry_keys_work_at_ready_rotate_and_stop_when_removed(
    service_env: dict[str, str], edge_settings: EdgeSettings
) -> None:
    env = service_env
    ok(env, "add", "shop", "--max-amount", "100")
    ok(env, "add", "demo")
    old_id, old = ok(env, "key", "add", "shop")
    new_id, new = ok(env, "key", "add", "shop")
    old_id, new_id = old_id.split()[3], new_id.split()[3]
    async with running_edge(edge_settings) as base, aiohttp.ClientSession() as session:

        async def ready() -> int:
            async with session.get(base + "/readyz") as response:
                return response.status

        await eventually(ready, lambda status: status == 200)
        # Ready means the registry was read to its end: both keys work at once, no retry.
        assert await post(session, base, old) == 202
        assert await post(session, base, new) == 202
        assert await post(session, base, TEST_API_KEY) == 202  # the environment's keys too
        # The answer already says what the projector will decide: shop_b (an environment key)
        # is not registered; shop's limit is 100.
        assert await results(session, base, OTHER_ENV_KEY, {"amount": "1"}) == ["universe_unknown"]
        assert await results(session, base, new, {"amount": "100.01"}) == ["amount_above_limit"]
        assert await post(session, base, old[:-2] + "xx") == 401
        assert await post(session, base, "tk_00000000_" + "a" * 43) == 401

        ok(env, "key", "remove", "shop", old_id)
        removed = time.monotonic()
        await eventually(lambda: post(session, base, old), lambda s: s == 401, timeout=10)
        assert time.monotonic() - removed < REVOCATION_S
        assert await post(session, base, new) == 202

        # A universe removed: its keys stop too.
        ok(env, "remove", "shop")
        await eventually(lambda: post(session, base, new), lambda s: s == 401, timeout=10)
