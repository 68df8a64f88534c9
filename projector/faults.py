"""Test hooks (``TRACKER_PROJECTOR_FAULT``): the faults the crash and pause tests inject at a
stage of a batch's checkpoint, in the real process.

``before-write``, ``between-inserts``, ``after-write``, ``after-commit``: SIGKILL at that
stage of batch ``TRACKER_PROJECTOR_FAULT_AFTER_BATCHES`` (or the first one after it).
``stop-before-write``: after each SIGUSR1, SIGSTOP at the next batch's ``before-write``, that
is between the batch's check of positions (its look-ups) and its write. The process stays
frozen until someone sends SIGCONT, as after a GC pause or a VM stall of that length.
"""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType

from projector.settings import ProjectorSettings

logger = logging.getLogger(__name__)

STOP_BEFORE_WRITE = "stop-before-write"


class Faults:
    def __init__(self, settings: ProjectorSettings) -> None:
        self._fault = settings.fault
        self._after = settings.fault_after_batches
        self._armed = False
        if self._fault == STOP_BEFORE_WRITE:
            # A flag only: the stop itself happens at the stage, in the loop.
            signal.signal(signal.SIGUSR1, self._arm)

    def _arm(self, signum: int, frame: FrameType | None) -> None:
        self._armed = True

    def at(self, stage: str, batch: int) -> None:
        """Inject the configured fault if ``stage`` of ``batch`` is where it goes."""
        if self._fault == STOP_BEFORE_WRITE:
            if stage == "before-write" and self._armed:
                self._armed = False
                logger.error("fault injection: SIGSTOP at before-write of batch %d", batch)
                os.kill(os.getpid(), signal.SIGSTOP)
                logger.error("fault injection: resumed at before-write of batch %d", batch)
            return
        if self._fault == stage and batch >= self._after:
            logger.error("fault injection: SIGKILL at %s of batch %d", stage, batch)
            os.kill(os.getpid(), signal.SIGKILL)
