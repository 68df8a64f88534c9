"""How the edge is run: HTTPS, startup errors."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp

from compose.processes import free_port
from ingest.gif import PIXEL

ROOT = Path(__file__).resolve().parents[2]


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_the_edge_serves_https_with_the_given_certificate(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    env = {**os.environ, **service_env, "TRACKER_EDGE_PORT": str(port)}
    edge = subprocess.Popen(  # noqa: ASYNC220 - starting it is instant; waiting is off-loop
        [sys.executable, "-m", "ingest", "--tls-cert", str(cert), "--tls-key", str(key)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        async with aiohttp.ClientSession() as session:
            # Up to a minute: a loaded machine takes seconds to import and start the edge.
            for _ in range(600):
                try:
                    url = f"https://127.0.0.1:{port}/sales.php?universe=demo&amount=1&id=tls"
                    async with session.get(url, ssl=trust) as response:
                        assert response.status == 200
                        assert await response.read() == PIXEL
                        break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.1)
            else:
                raise AssertionError("the HTTPS edge never answered")
    finally:
        edge.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(edge.wait, 60) == 0


def run_edge(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_startup_fails_fast_with_a_readable_message(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    no_secret = {k: v for k, v in service_env.items() if k != "TRACKER_SECRET"}
    no_secret["TRACKER_SECRET"] = ""
    result = run_edge(no_secret)
    assert result.returncode == 2
    assert result.stderr.startswith("configuration error: TRACKER_SECRET is required")

    short = run_edge({**service_env, "TRACKER_SECRET": "short"})
    assert short.stderr.strip() == (
        "configuration error: TRACKER_SECRET is too short: at least 32 characters are needed"
    )
    bad_keys = run_edge({**service_env, "TRACKER_API_KEYS": "demo:short"})
    assert bad_keys.stderr.strip() == (
        "configuration error: TRACKER_API_KEYS: the key of universe 'demo' is shorter than 24 characters"
    )
    only_cert = run_edge(service_env, "--tls-cert", str(tmp_path / "missing.pem"))
    assert only_cert.stderr.strip() == "configuration error: --tls-cert and --tls-key go together"
    missing = run_edge(
        service_env, "--tls-cert", str(tmp_path / "c.pem"), "--tls-key", str(tmp_path / "k.pem")
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("configuration error: cannot load the TLS certificate")
