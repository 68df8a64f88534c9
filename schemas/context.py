"""What a shell command talks to: the environment's settings over the local stack's.

The operator commands (`sign-link`, `universes`, `rebuild`, `accept-log`) run in a shell, where
nobody exported the local stack's broker address, secret or client settings. The local stack
(`make up`/`make run`) writes them to its context file, ``<TRACKER_DATA_DIR>/context.json``,
each time it starts; :func:`shell_environ` is the one place that reads it. The environment
wins, a group of settings at a time: a shell that names its own broker
(``TRACKER_KAFKA_BOOTSTRAP``) takes none of the stack's broker settings, so a real cluster is
never talked to with the local broker's client options. The services never read this file:
whoever starts them gives them their whole environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson

from schemas.environ import ConfigError, Environ

CONTEXT_FILE: Final = "context.json"
DATA_DIR_DEFAULT: Final = ".data"

# Settings that only make sense together: the environment takes over a group as a whole.
GROUPS: Final[tuple[tuple[str, ...], ...]] = (
    ("TRACKER_KAFKA_BOOTSTRAP", "TRACKER_KAFKA_IDEMPOTENCE"),
    ("TRACKER_CLICKHOUSE_URL",),
    ("TRACKER_SECRET",),
    ("TRACKER_API_KEYS",),
    ("TRACKER_EDGE_PUBLIC_URL",),
)
KNOWN: Final = frozenset(name for group in GROUPS for name in group)


def context_file(data_dir: Path) -> Path:
    """Where the local stack whose data lives in ``data_dir`` keeps its context."""
    return data_dir / CONTEXT_FILE


def context_path(environ: Mapping[str, str]) -> Path:
    """The context file of this shell's local stack (its ``TRACKER_DATA_DIR``)."""
    return context_file(Path(Environ(environ).text("TRACKER_DATA_DIR", DATA_DIR_DEFAULT)))


@dataclass(frozen=True, slots=True)
class ShellContext:
    """The environment a shell command runs with, and where each stack setting came from."""

    environ: Mapping[str, str]
    path: Path
    from_stack: frozenset[str]
    # The context file as the stack wrote it, including what the environment overrode.
    stack: Mapping[str, str]

    def origin(self, name: str) -> str:
        """Where ``name``'s value comes from, for messages."""
        if name in self.from_stack:
            return f"the local stack's, from {self.path}"
        if self.environ.get(name):
            return "the environment"
        return "the default"


def shell_environ(environ: Mapping[str, str] | None = None) -> ShellContext:
    """The environment over the local stack's context (when there is one), group by group."""
    env = dict(os.environ if environ is None else environ)
    path = context_path(env)
    stack = read_context(path)
    taken: set[str] = set()
    for group in GROUPS:
        if any(env.get(name) for name in group):
            continue
        for name in group:
            if stack.get(name):
                env[name] = stack[name]
                taken.add(name)
    return ShellContext(env, path, frozenset(taken), stack)


def read_context(path: Path) -> dict[str, str]:
    """The context file's settings; {} when there is none."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read the local stack's context {path}: {e}") from e
    try:
        loaded = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ConfigError(f"the local stack's context {path} is not JSON ({e}): restart it") from e
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in loaded.items()
    ):
        raise ConfigError(f"the local stack's context {path} is not an object of strings")
    return {k: v for k, v in loaded.items() if k in KNOWN}


def write_context(path: Path, values: Mapping[str, str]) -> None:
    """Replace the context file (readable by its owner only: it holds the secret)."""
    unknown = set(values) - KNOWN
    if unknown:
        raise ValueError(f"not context settings: {sorted(unknown)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(dict(values), option=orjson.OPT_INDENT_2))
    tmp.chmod(0o600)
    os.replace(tmp, path)
