"""The local stack's registry: `make up` registers demo, and the registry lives in the
broker's durable storage, so a SIGKILLed broker and a whole `down`/`up` keep every universe
and key (the edge's answers prove it, not only the listing)."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

from chaos.stack import LocalStack


def post_sale(stack: LocalStack, key: str) -> int:
    request = urllib.request.Request(
        stack.edge_url + "/v1/sales", data=b'{"amount":"1"}', method="POST",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return e.code


def edge_ready(stack: LocalStack, timeout: float = 60.0) -> None:
    """Until /readyz says 200: the edge read the registry to its end."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(stack.edge_url + "/readyz", timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def listing(stack: LocalStack) -> list[str]:
    result = stack.universes("list")
    assert (result.returncode, result.stderr) == (0, ""), result
    return result.stdout.splitlines()[1:]


def test_the_registry_survives_a_broker_kill_and_a_restart(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path)
    stack.up()
    try:
        assert listing(stack) == ["demo                     -        default  -              -"]
        stack.register("shop")
        key_line, key = stack.universes("key", "add", "shop").stdout.splitlines()
        key_id = key_line.split()[3]
        expected = [
            "demo                     -        default  -              -",
            f"shop                     -        default  -              {key_id}",
        ]
        assert listing(stack) == expected
        edge_ready(stack)
        assert post_sale(stack, key) == 202

        stack.wait_restarted("kafka", stack.kill("kafka", signal.SIGKILL), timeout=60)
        assert listing(stack) == expected

        stack.down()
        stack.up()
        # demo is not registered twice, shop and its key are back: new processes read them.
        assert listing(stack) == expected
        edge_ready(stack)
        assert post_sale(stack, key) == 202
        assert post_sale(stack, key[:-1] + ("x" if key[-1] != "x" else "y")) == 401
    finally:
        stack.down()
