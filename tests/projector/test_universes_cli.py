"""`python -m projector universes`, through the real CLI against the real broker: every
change, and an exact message and exit code for each kind of bad input."""

from __future__ import annotations

import pytest

from compose.processes import free_port
from helpers import read_topic, universes
from helpers import universes_ok as ok
from schemas.universes import decode_record, key_hash


async def test_add_set_keys_list_and_remove(service_env: dict[str, str]) -> None:
    env = service_env
    assert ok(env, "list") == [
        "no universe registered: every universe counts (unless TRACKER_UNIVERSES_REQUIRED)"
    ]
    assert ok(env, "add", "shop", "--currency", "EUR", "--window", "12h") == ["added universe shop"]
    assert ok(env, "add", "demo") == ["added universe demo"]
    announce, key = ok(env, "key", "add", "shop")
    key_id = announce.split()[3]
    assert announce == (
        f"new API key {key_id} of universe shop (shown once, only its hash is kept):"
    )
    assert ok(env, "set", "shop", "--max-amount", "99,90", "--window", "none") == [
        "changed universe shop"
    ]
    listed = ok(env, "list")
    assert listed == [
        "universe                 currency window   max amount     keys",
        "demo                     -        default  -              -",
        f"shop                     EUR      default  99.90          {key_id}",
    ]
    # Neither the key nor its hash is ever printed; the topic holds the hash, not the key.
    records = await read_topic(
        env["TRACKER_KAFKA_BOOTSTRAP"], f"{env['TRACKER_TOPIC_PREFIX']}universes", 4
    )
    assert len(records) == 4
    stored = b"".join(r.value or b"" for r in records)
    assert key.encode() not in stored and key_hash(key).encode() in stored
    assert key_hash(key) not in "\n".join(listed)
    last = decode_record(records[-1].value)
    assert last is not None and last.universe == "shop" and last.keys == {key_id: key_hash(key)}

    assert ok(env, "key", "remove", "shop", key_id) == [f"removed key {key_id} of universe shop"]
    assert ok(env, "remove", "demo") == ["removed universe demo"]
    assert ok(env, "list")[1:] == [
        "shop                     EUR      default  99.90          -",
    ]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("add", "a b"), 2, "universes: bad universe name 'a b': 1-64 letters, digits, '_', '.' "
         "or '-', starting with a letter or digit"),
        (("add", "shop", "--currency", "eur"), 2, "universes: bad currency 'eur': 3 upper-case "
         "letters, e.g. EUR"),
        (("add", "shop", "--window", "3w"), 2, "universes: bad window '3w': a number of days or "
         "hours, e.g. 30d or 12h (at most 3650d)"),
        (("add", "shop", "--max-amount", "1e3"), 2, "universes: bad maximum amount '1e3': a "
         "positive decimal with at most 4 decimals, at most 1000000000 (e.g. 100000 or 99.90)"),
        (("set", "nobody", "--currency", "EUR"), 1, "universes: unknown universe 'nobody'"),
        (("set", "known"), 2, "universes: nothing to change: give --currency, --window or "
         "--max-amount"),
        (("remove", "nobody"), 1, "universes: unknown universe 'nobody'"),
        (("key", "add", "nobody"), 1, "universes: unknown universe 'nobody'"),
        (("key", "remove", "known", "0000abcd"), 1, "universes: universe 'known' has no key "
         "'0000abcd'"),
        (("add", "known"), 1, "universes: universe 'known' already exists (change it with "
         "`universes set`)"),
    ],
)  # fmt: skip
def test_bad_input_gets_an_exact_error_and_exit_code(
    service_env: dict[str, str], args: tuple[str, ...], code: int, message: str
) -> None:
    ok(service_env, "add", "known")
    result = universes(service_env, *args)
    assert (result.returncode, result.stdout, result.stderr) == (code, "", message + "\n")
    # Nothing was written: the registry is as it was.
    assert ok(service_env, "list")[1:] == [
        "known                    -        default  -              -"
    ]


def test_an_unreachable_broker_exits_3_and_says_where(service_env: dict[str, str]) -> None:
    where = f"127.0.0.1:{free_port()}"
    result = universes({**service_env, "TRACKER_KAFKA_BOOTSTRAP": where}, "list")
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.startswith(f"universes: cannot connect to the broker at {where}: ")
    assert result.stderr.endswith(" (TRACKER_KAFKA_BOOTSTRAP from the environment)\n")
    assert len(result.stderr.splitlines()) == 1


def test_a_broker_refusing_idempotent_producers_is_named_with_its_answer(
    service_env: dict[str, str],
) -> None:
    if service_env.get("TRACKER_KAFKA_IDEMPOTENCE") != "false":
        # A broker with idempotent producers (Apache Kafka) accepts the command.
        assert (
            universes({**service_env, "TRACKER_KAFKA_IDEMPOTENCE": "true"}, "add", "x").returncode
            == 0
        )
        return
    result = universes({**service_env, "TRACKER_KAFKA_IDEMPOTENCE": "true"}, "add", "shop")
    where = service_env["TRACKER_KAFKA_BOOTSTRAP"]
    assert (result.returncode, result.stdout) == (3, "")
    assert result.stderr == (
        f"universes: the broker at {where} refused an idempotent producer ([Error -1] "
        "UnknownError): set TRACKER_KAFKA_IDEMPOTENCE=false for a broker without idempotent "
        "producers (TRACKER_KAFKA_BOOTSTRAP from the environment)\n"
    )
    assert ok(service_env, "list")[0].startswith("no universe registered")


def test_a_bad_kafka_setting_is_a_configuration_error(service_env: dict[str, str]) -> None:
    result = universes({**service_env, "TRACKER_KAFKA_BOOTSTRAP": "nowhere"}, "list")
    assert (result.returncode, result.stderr) == (
        2, "configuration error: TRACKER_KAFKA_BOOTSTRAP entries must be host:port, got 'nowhere'\n"
    )  # fmt: skip
