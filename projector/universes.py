"""`python -m projector universes ...`: the universe registry's command (add, set, remove, list,
key add, key remove). Each change appends the universe's full settings (a tombstone for a
removal) to the registry topic; two operators changing one universe at once: the last wins.

Exit codes: 0 done, 1 refused (unknown universe or key, universe exists), 2 bad input,
3 the broker could not be reached or refused the request (the message says which).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import msgspec
from aiokafka.errors import KafkaError

from schemas.context import ShellContext, shell_environ
from schemas.environ import ConfigError, Environ
from schemas.kafka_settings import KafkaSettings
from schemas.topics import ensure_topics
from schemas.universe_log import (
    RegistryUnavailable,
    broker_problem,
    now_ms,
    read_registry,
    write_record,
)
from schemas.universes import (
    Registry,
    UniverseError,
    UniverseRecord,
    UniverseSettings,
    check_currency,
    check_max_amount,
    check_name,
    check_window,
    key_hash,
    new_key,
)

REFUSED: Final = 1
BAD_INPUT: Final = 2
BROKER_ERROR: Final = 3
READ_TIMEOUT_S: Final = 30.0
# What `set` takes to clear a setting back to none.
CLEAR: Final = "none"


class Refused(Exception):
    """The registry does not allow the change (unknown universe or key, name taken)."""


@dataclass(frozen=True, slots=True)
class Changes:
    """The settings a command gives (None: not given; "" : back to none)."""

    currency: str | None = None
    window: str | None = None
    max_amount: str | None = None

    @classmethod
    def of(cls, args: argparse.Namespace) -> Changes:
        def given(value: str | None, check: Callable[[str], str]) -> str | None:
            if value is None:
                return None
            return "" if value == CLEAR else check(value)

        return cls(
            currency=given(args.currency, check_currency),
            window=given(args.window, check_window),
            max_amount=given(args.max_amount, check_max_amount),
        )

    def apply(self, settings: UniverseSettings) -> UniverseSettings:
        given = {
            name: value
            for name in ("currency", "window", "max_amount")
            if (value := getattr(self, name)) is not None
        }
        return msgspec.structs.replace(settings, updated_at_ms=now_ms(), **given)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m projector universes", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    commands = p.add_subparsers(dest="command", required=True)
    for name, text in (("add", "register a universe"), ("set", "change a universe's settings")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("name", help="the universe, as the pixel's universe= names it")
        clear = f" ({CLEAR!r} clears it)" if name == "set" else ""
        sub.add_argument(
            "--currency", help=f"default currency of calls naming none, e.g. EUR{clear}"
        )
        sub.add_argument(
            "--window", help=f"attribution window, e.g. 30d or 12h (default: the projector's)"
            f"{clear}",
        )  # fmt: skip
        sub.add_argument("--max-amount", help=f"largest amount of one sale, e.g. 100000{clear}")
    remove = commands.add_parser("remove", help="unregister a universe (its keys stop working)")
    remove.add_argument("name")
    commands.add_parser("list", help="the registered universes (key ids, never keys or hashes)")
    key = commands.add_parser("key", help="API keys of a universe").add_subparsers(
        dest="key_command", required=True
    )
    key_add = key.add_parser("add", help="make a new key and print it once (only its hash is kept)")
    key_add.add_argument("name")
    key_remove = key.add_parser("remove", help="revoke a key by its id (see `list`)")
    key_remove.add_argument("name")
    key_remove.add_argument("key_id")
    return p


async def run(args: argparse.Namespace, kafka: KafkaSettings, out: Callable[[str], None]) -> None:
    """One command against the registry; raise Refused, UniverseError, RegistryUnavailable."""
    await ensure_topics(
        kafka.bootstrap, kafka.topics, partitions=kafka.partitions, replication=kafka.replication
    )
    topic = kafka.topics.universes
    name = "" if args.command == "list" else check_name(args.name)
    changes = Changes.of(args) if args.command in ("add", "set") else Changes()
    if args.command == "set" and changes == Changes():
        raise UniverseError("nothing to change: give --currency, --window or --max-amount")
    registry = await read_registry(kafka.bootstrap, topic, READ_TIMEOUT_S)
    if args.command == "list":
        for line in listing(registry):
            out(line)
        return
    current = registry.universes.get(name)
    if args.command == "add":
        if current is not None:
            raise Refused(f"universe {name!r} already exists (change it with `universes set`)")
        record = changes.apply(UniverseSettings(universe=name, updated_at_ms=0))
        message = f"added universe {name}"
    elif current is None:
        raise Refused(f"unknown universe {name!r}")
    elif args.command == "set":
        record = changes.apply(current)
        message = f"changed universe {name}"
    elif args.command == "remove":
        await write(kafka, name, None)
        out(f"removed universe {name}")
        return
    elif args.key_command == "add":
        key, key_id = new_key(current.keys)
        keys = {**current.keys, key_id: key_hash(key)}
        record = msgspec.structs.replace(current, keys=keys, updated_at_ms=now_ms())
        await write(kafka, name, record)
        out(f"new API key {key_id} of universe {name} (shown once, only its hash is kept):")
        out(key)
        return
    else:
        if args.key_id not in current.keys:
            raise Refused(f"universe {name!r} has no key {args.key_id!r}")
        kept = {k: v for k, v in current.keys.items() if k != args.key_id}
        record = msgspec.structs.replace(current, keys=kept, updated_at_ms=now_ms())
        message = f"removed key {args.key_id} of universe {name}"
    await write(kafka, name, record)
    out(message)


async def write(kafka: KafkaSettings, name: str, record: UniverseRecord) -> None:
    await write_record(
        kafka.bootstrap, kafka.topics.universes, name, record, idempotence=kafka.idempotence
    )


def listing(registry: Registry) -> list[str]:
    """One line per universe: its settings and its key ids."""
    if not registry.universes:
        return ["no universe registered: every universe counts (unless TRACKER_UNIVERSES_REQUIRED)"]
    lines = [f"{'universe':<24} {'currency':<8} {'window':<8} {'max amount':<14} keys"]
    for name in sorted(registry.universes):
        s = registry.universes[name]
        keys = ",".join(sorted(s.keys)) or "-"
        lines.append(
            f"{name:<24} {s.currency or '-':<8} {s.window or 'default':<8} "
            f"{s.max_amount or '-':<14} {keys}"
        )
    return lines


def main(argv: list[str], environ: Mapping[str, str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The error below says it once; aiokafka would also log each failed connection attempt.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    try:
        context = shell_environ(environ)
        kafka = KafkaSettings.from_env(Environ(context.environ))
    except ConfigError as e:
        print(f"configuration error: {e}", file=sys.stderr)
        return BAD_INPUT
    try:
        asyncio.run(run(args, kafka, print))
    except UniverseError as e:
        print(f"universes: {e}", file=sys.stderr)
        return BAD_INPUT
    except Refused as e:
        print(f"universes: {e}", file=sys.stderr)
        return REFUSED
    except (RegistryUnavailable, KafkaError) as e:
        problem = (
            e if isinstance(e, RegistryUnavailable)
            else broker_problem(e, kafka.bootstrap, idempotence=kafka.idempotence)
        )  # fmt: skip
        print(f"universes: {problem} ({broker_origin(context)})", file=sys.stderr)
        return BROKER_ERROR
    return 0


def broker_origin(context: ShellContext) -> str:
    """Which broker this was and why, for the error line."""
    if "TRACKER_KAFKA_BOOTSTRAP" in context.from_stack:
        return f"the local stack's broker, from {context.path}: is the stack running? `make up`"
    if context.environ.get("TRACKER_KAFKA_BOOTSTRAP"):
        return "TRACKER_KAFKA_BOOTSTRAP from the environment"
    return f"TRACKER_KAFKA_BOOTSTRAP's default: no local stack context in {context.path}"
