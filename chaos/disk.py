"""A real, small filesystem to fill up: a tmpfs mounted for a scenario or a test (needs root,
as these machines and CI run)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


class MountError(RuntimeError):
    """The small filesystem could not be mounted; the message says why."""


def segments_bytes(spool: Path) -> int:
    """What the spool's segment files under ``spool`` hold on disk, in bytes."""
    return sum(p.stat().st_size for p in spool.rglob("*.spool"))


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "1m") -> Iterator[Path]:
    """``mount -t tmpfs -o size=SIZE tmpfs PATH`` for the block; unmounted at its end."""
    if os.geteuid() != 0:
        raise MountError(f"mounting a tmpfs at {path} needs root (these machines and CI are)")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],  # noqa: S607
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        raise MountError(f"mount tmpfs at {path} failed: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        # Lazily if a process still holds a file there: the mount never outlives the block.
        if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:  # noqa: S607
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)  # noqa: S607
