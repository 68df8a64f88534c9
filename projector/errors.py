"""The projector's one exception type; the loop branches on ``retriable`` in one place."""

from __future__ import annotations


class ProjectorError(Exception):
    def __init__(self, message: str, *, retriable: bool) -> None:
        super().__init__(message)
        self.retriable = retriable
