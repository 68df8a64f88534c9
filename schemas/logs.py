"""Log set-up for the services' entry points (libraries never configure logging).

``TRACKER_LOG_FORMAT=json`` (the default) writes one JSON object per line (time, level,
service, logger, message, and the exception when there is one), which log shippers index
without parsing rules; ``text`` writes readable lines for a terminal.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

import orjson

from schemas.environ import Environ


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure(service: str, environ: Mapping[str, str] | None = None) -> None:
    env = Environ(os.environ if environ is None else environ)
    handler = logging.StreamHandler(sys.stderr)
    if env.choice("TRACKER_LOG_FORMAT", "json", ("json", "text")) == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(env.choice("TRACKER_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")))
