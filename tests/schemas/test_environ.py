import pytest

from ingest.settings import EdgeSettings
from projector.settings import ProjectorSettings
from schemas.environ import ConfigError, mask_url
from schemas.kafka_settings import KafkaSettings
from schemas.rules import Rules
from schemas.topics import Topics

SECRET = {"TRACKER_SECRET": "s" * 32}


def test_edge_needs_nothing_but_a_secret() -> None:
    settings = EdgeSettings.from_env(SECRET)
    assert settings.port == 8080
    assert settings.kafka.bootstrap == ("127.0.0.1:9092",)
    assert settings.kafka.topics.sales == "tracker.sales"
    assert settings.kafka.idempotence is True
    assert "s" * 32 not in repr(settings)


def test_edge_and_projector_read_the_same_kafka_settings() -> None:
    env = {
        **SECRET,
        "TRACKER_KAFKA_BOOTSTRAP": "k1:9092, k2:9093",
        "TRACKER_TOPIC_PREFIX": "shop.",
        "TRACKER_KAFKA_PARTITIONS": "12",
        "TRACKER_KAFKA_REPLICATION": "3",
        "TRACKER_KAFKA_IDEMPOTENCE": "false",
    }
    expected = KafkaSettings(("k1:9092", "k2:9093"), Topics("shop."), 12, 3, idempotence=False)
    assert EdgeSettings.from_env(env).kafka == expected
    assert ProjectorSettings.from_env(env).kafka == expected


def test_edge_refuses_to_start_without_a_secret() -> None:
    with pytest.raises(ConfigError, match="TRACKER_SECRET is required"):
        EdgeSettings.from_env({})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRACKER_EDGE_PORT": "http"}, "TRACKER_EDGE_PORT must be an integer, got 'http'"),
        (
            {"TRACKER_EDGE_PORT": "70000"},
            "TRACKER_EDGE_PORT must be between 1 and 65535, got 70000",
        ),
        (
            {"TRACKER_KAFKA_BOOTSTRAP": "localhost"},
            "TRACKER_KAFKA_BOOTSTRAP entries must be host:port, got 'localhost'",
        ),
        (
            {"TRACKER_KAFKA_IDEMPOTENCE": "maybe"},
            "TRACKER_KAFKA_IDEMPOTENCE must be true or false, got 'maybe'",
        ),
        (
            {"TRACKER_KAFKA_COMPRESSION": "brotli"},
            "TRACKER_KAFKA_COMPRESSION must be one of none, gzip, lz4, zstd, snappy, got 'brotli'",
        ),
    ],
)
def test_edge_settings_errors_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        EdgeSettings.from_env({**SECRET, **env})
    assert str(error.value) == message


def test_projector_refuses_a_non_http_clickhouse_url_without_showing_its_password() -> None:
    with pytest.raises(ConfigError) as error:
        ProjectorSettings.from_env({"TRACKER_CLICKHOUSE_URL": "tcp://u:secret@host:9000"})
    assert "secret" not in str(error.value)
    assert "TRACKER_CLICKHOUSE_URL must be an http(s)://host:port URL" in str(error.value)


def test_projector_refuses_a_database_name_that_is_not_an_identifier() -> None:
    with pytest.raises(ConfigError, match="TRACKER_CLICKHOUSE_DATABASE"):
        ProjectorSettings.from_env({"TRACKER_CLICKHOUSE_DATABASE": "x; DROP TABLE y"})


def test_projector_repr_masks_the_clickhouse_password() -> None:
    settings = ProjectorSettings.from_env(
        {**SECRET, "TRACKER_CLICKHOUSE_URL": "http://u:hunter2@ch:8123"}
    )
    assert "hunter2" not in repr(settings)
    assert mask_url("http://u:hunter2@ch:8123") == "http://u:***@ch:8123"


def test_projector_needs_the_secret_and_never_shows_it() -> None:
    """It verifies the click contexts and links of raw calls, as the edge does."""
    with pytest.raises(ConfigError, match="TRACKER_SECRET is required"):
        ProjectorSettings.from_env({})
    with pytest.raises(ConfigError, match="TRACKER_SECRET is too short"):
        ProjectorSettings.from_env({"TRACKER_SECRET": "s" * 31})
    settings = ProjectorSettings.from_env(SECRET)
    assert settings.secret == "s" * 32
    assert "s" * 32 not in repr(settings)
    assert settings.rules == Rules()
