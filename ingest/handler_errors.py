"""Exceptions a request handler did not expect: counted, and logged without flooding the logs.

A handler that fails on one malformed request fails the same way on the next thousand, and a
traceback per request would bury every other line (and fill the disk). So each failure is
counted in ``tracker_edge_handler_errors_total{endpoint}`` and logged as at most one warning
line per second and process (then one line counting those held back).
"""

from __future__ import annotations

import logging
from typing import Final

from ingest.metrics import EdgeMetrics
from ingest.throttled_log import ThrottledLog

logger = logging.getLogger(__name__)

# What a log line keeps of an exception's message: enough to diagnose, bounded.
MESSAGE_KEEP: Final = 200


# One per process: the limit is about the log's volume, whatever app or endpoint writes it.
HANDLER_ERRORS_LOG = ThrottledLog(logger, logging.WARNING, "unexpected handler errors", 1.0)


def handler_failed(metrics: EdgeMetrics, endpoint: str, error: Exception, outcome: str) -> None:
    """Count and log (rate-limited, without traceback) an exception a handler did not expect.

    The message is logged ASCII-escaped: it may quote request bytes, which a JSON log
    formatter could not encode.
    """
    metrics.handler_errors.labels(endpoint).inc()
    HANDLER_ERRORS_LOG.log(
        "%s: unexpected %s %a; %s",
        endpoint, type(error).__name__, str(error)[:MESSAGE_KEEP], outcome,
    )  # fmt: skip
