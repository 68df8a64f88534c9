"""The shell's context: the local stack's settings unless the environment names its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.context import context_file, shell_environ, write_context
from schemas.environ import ConfigError

STACK = {
    "TRACKER_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
    "TRACKER_KAFKA_IDEMPOTENCE": "false",
    "TRACKER_CLICKHOUSE_URL": "http://127.0.0.1:8123",
    "TRACKER_SECRET": "s" * 40,
    "TRACKER_API_KEYS": "demo:" + "k" * 30,
    "TRACKER_EDGE_PUBLIC_URL": "http://127.0.0.1:8080",
}


def written(tmp_path: Path) -> dict[str, str]:
    write_context(context_file(tmp_path), STACK)
    return {"TRACKER_DATA_DIR": str(tmp_path)}


def test_a_shell_without_settings_talks_to_the_local_stack(tmp_path: Path) -> None:
    context = shell_environ(written(tmp_path))
    assert {k: context.environ[k] for k in STACK} == STACK
    assert context.from_stack == frozenset(STACK)
    assert context.origin("TRACKER_SECRET") == f"the local stack's, from {tmp_path}/context.json"


def test_a_broker_named_by_the_environment_takes_none_of_the_stacks_broker_settings(
    tmp_path: Path,
) -> None:
    env = {**written(tmp_path), "TRACKER_KAFKA_BOOTSTRAP": "kafka-1:9092"}
    context = shell_environ(env)
    assert context.environ["TRACKER_KAFKA_BOOTSTRAP"] == "kafka-1:9092"
    # The local broker's client option must not reach a real cluster.
    assert "TRACKER_KAFKA_IDEMPOTENCE" not in context.environ
    assert context.origin("TRACKER_KAFKA_BOOTSTRAP") == "the environment"
    # The other groups still come from the stack.
    assert context.environ["TRACKER_SECRET"] == STACK["TRACKER_SECRET"]


def test_an_empty_variable_does_not_override_the_stack(tmp_path: Path) -> None:
    context = shell_environ({**written(tmp_path), "TRACKER_SECRET": ""})
    assert context.environ["TRACKER_SECRET"] == STACK["TRACKER_SECRET"]


def test_no_context_file_leaves_the_environment_as_it_is(tmp_path: Path) -> None:
    env = {"TRACKER_DATA_DIR": str(tmp_path / "none"), "TRACKER_SECRET": "x" * 40}
    context = shell_environ(env)
    assert context.environ == env
    assert context.from_stack == frozenset()
    assert context.origin("TRACKER_KAFKA_BOOTSTRAP") == "the default"


def test_a_damaged_context_file_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    context_file(tmp_path).write_text('{"TRACKER_SECRET": ')
    with pytest.raises(ConfigError, match=r"context .*context\.json is not JSON"):
        shell_environ({"TRACKER_DATA_DIR": str(tmp_path)})
    context_file(tmp_path).write_text('["TRACKER_SECRET"]')
    with pytest.raises(ConfigError, match="is not an object of strings"):
        shell_environ({"TRACKER_DATA_DIR": str(tmp_path)})


def test_the_context_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    written(tmp_path)
    assert context_file(tmp_path).stat().st_mode & 0o777 == 0o600


def test_only_context_settings_are_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="TRACKER_EDGE_PORT"):
        write_context(context_file(tmp_path), {"TRACKER_EDGE_PORT": "8080"})
