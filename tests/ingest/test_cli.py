"""`python -m ingest` as a newcomer types it: its help, and `sign-link` on a local stack."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from compose.settings import StackSettings
from compose.stack import services_environment, shell_context
from schemas.context import context_file, write_context
from schemas.signing import Link, link_url

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--universe", "demo", "--customer", "alice", "--campaign", "spring", "--link", "hero"]
ARGS += ["--url", "https://shop.example/landing"]


def ingest(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def started_stack(data_dir: Path) -> str:
    """Write the context a local stack on ``data_dir`` writes when it starts; its secret."""
    settings = StackSettings.from_env({"TRACKER_DATA_DIR": str(data_dir)})
    env = services_environment(settings)
    write_context(context_file(data_dir), shell_context(settings, env))
    return env["TRACKER_SECRET"]


def test_help_lists_every_command() -> None:
    result = ingest("--help")
    assert result.returncode == 0, result.stderr
    assert "serve" in result.stdout and "sign-link" in result.stdout


def test_sign_link_without_a_secret_uses_the_local_stacks_and_says_so(tmp_path: Path) -> None:
    secret = started_stack(tmp_path)  # what `make up` makes and its edge uses
    result = ingest("sign-link", *ARGS, TRACKER_DATA_DIR=str(tmp_path))
    assert result.returncode == 0, result.stderr
    link = Link("demo", "alice", "spring", "hero", "https://shop.example/landing")
    assert result.stdout.strip() == link_url("http://127.0.0.1:8080", secret, link)
    assert f"the local stack's secret from {tmp_path / 'context.json'}" in result.stderr


def test_sign_link_with_a_secret_of_its_own_warns_that_the_local_edge_refuses_it(
    tmp_path: Path,
) -> None:
    started_stack(tmp_path)
    mine = "m" * 40
    result = ingest("sign-link", *ARGS, TRACKER_DATA_DIR=str(tmp_path), TRACKER_SECRET=mine)
    assert result.returncode == 0, result.stderr
    link = Link("demo", "alice", "spring", "hero", "https://shop.example/landing")
    assert result.stdout.strip() == link_url("http://127.0.0.1:8080", mine, link)
    assert "TRACKER_SECRET from the environment (not the local stack's secret" in result.stderr


def test_sign_link_without_any_secret_says_how_to_get_one(tmp_path: Path) -> None:
    result = ingest("sign-link", *ARGS, TRACKER_DATA_DIR=str(tmp_path / "none"))
    assert result.returncode == 2
    assert "TRACKER_SECRET is required: set it, or start the local stack (`make up`)" in (
        result.stderr
    )
    assert not (tmp_path / "none").exists()
