import logging

import orjson
import pytest

from schemas.environ import ConfigError
from schemas.logs import JsonFormatter, configure


def test_json_logs_are_one_object_per_line_with_the_service() -> None:
    record = logging.LogRecord(
        "projector.loop", logging.WARNING, __file__, 1, "lag %d on %s", (3, "t[0]"), None
    )
    entry = orjson.loads(JsonFormatter("projector").format(record))
    assert entry["level"] == "warning"
    assert entry["service"] == "projector"
    assert entry["logger"] == "projector.loop"
    assert entry["message"] == "lag 3 on t[0]"
    assert entry["time"].endswith("+00:00")


def test_an_unknown_log_format_is_refused_by_name() -> None:
    with pytest.raises(
        ConfigError, match="TRACKER_LOG_FORMAT must be one of json, text, got 'xml'"
    ):
        configure("edge", {"TRACKER_LOG_FORMAT": "xml"})
