"""Is each partition's log still the one we wrote from? Checked before a partition is read.

A partition is held (paused, nothing of it written) from when it is assigned, or its fetch
moved under us, until its log is checked against what ClickHouse stores (positions.py's
``verify``: high watermark and fingerprint). The check first registers this instance's fence
for the partition (fencing.py), so that what it reads is where the partition stands for its
new owner. Then it is resumed where ClickHouse ends, or refused until an operator acts
(``rebuild`` or ``accept-log``); /readyz says why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from projector.fencing import Fencing
from projector.lookups import Lookups
from projector.metrics import ProjectorMetrics
from projector.positions import LogState, Plan, Regression, Resume, Stored, verify
from projector.probe import LogProbe
from projector.retry import Retrying

logger = logging.getLogger(__name__)

# How often refused partitions are looked at again (and the live generation re-read).
GENERATION_TTL_S = 1.0


@dataclass(frozen=True, slots=True)
class Refused:
    """A partition whose log went backwards: paused until the generation or its epoch moves."""

    generation: int
    epoch: int
    message: str


def _fingerprint(value: int | None) -> str:
    return "unknown" if value is None else f"{value:016x}"


class LogCheck:
    """Per partition: the log epoch its log was checked in, where its next fetch must start
    (where we put the consumer), where we rewound it, whether it waits for a check, whether
    it was refused.

    ``on_regression`` is told first when a log went backwards; it may raise (a rebuild
    cannot refuse a partition and go on). ``fence_grace_s``: how long a partition found
    fenced by another instance waits before this one registers again (see :meth:`fenced`).
    """

    def __init__(
        self,
        metrics: ProjectorMetrics,
        on_regression: Callable[[str], None],
        fence_grace_s: float = 0.0,
    ) -> None:
        self._metrics = metrics
        self._on_regression = on_regression
        self._fence_grace_s = fence_grace_s
        # This instance's fence of each partition it may write (fencing.py).
        self.fences: dict[TopicPartition, int] = {}
        # Partitions found fenced by another instance: not checked (registered) before then.
        self._deferred: dict[TopicPartition, float] = {}
        self.epochs: dict[TopicPartition, int] = {}
        self.origins: dict[TopicPartition, int] = {}
        self.rewound: dict[TopicPartition, int] = {}
        self.unverified: set[TopicPartition] = set()
        self.refused: dict[TopicPartition, Refused] = {}
        self._said_unverified: set[TopicPartition] = set()
        self._resumed_at_ms: dict[TopicPartition, int] = {}
        self._watched_at = -GENERATION_TTL_S

    @property
    def health(self) -> str | None:
        """Why partitions are not read, or None."""
        if self._deferred:
            return (
                f"{len(self._deferred)} partitions fenced by another instance's registration: "
                "not read until the group moves them, or registering again after a grace"
            )
        if self.unverified:  # assigned, not fetched from until their log is checked
            return f"checking the log of {len(self.unverified)} partitions before reading them"
        if self.refused:
            return "log went backwards, partitions refused until an operator acts: " + "; ".join(
                r.message for _, r in sorted(self.refused.items())
            )
        return None

    def hold(self, partitions: set[TopicPartition], consumer: AIOKafkaConsumer | None) -> None:
        """Fetch nothing from ``partitions`` until their log is checked."""
        if consumer is not None and partitions:
            consumer.pause(*partitions)
        self.unverified |= partitions

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Partitions that left this instance (their new owner checks them again)."""
        for tp in partitions:
            self.fences.pop(tp, None)
            self._deferred.pop(tp, None)
            self.rewound.pop(tp, None)
            self.epochs.pop(tp, None)
            self.origins.pop(tp, None)
            self._resumed_at_ms.pop(tp, None)
            self.unverified.discard(tp)
            self.refused.pop(tp, None)
            self._metrics.forget_lag(tp)

    def generation_moved(self, consumer: AIOKafkaConsumer) -> None:
        """A new generation's tables end elsewhere: rewinds made for the old ones are void, and
        its fences are its own: every partition is checked (registered) again."""
        self.rewound.clear()
        self.fences.clear()
        self._deferred.clear()
        self.hold(consumer.assignment(), consumer)

    def written_up_to(self, next_offsets: Mapping[TopicPartition, int]) -> None:
        """A batch was handed to the checkpoint: the next fetch of each partition starts here."""
        self.origins.update(next_offsets)

    def due(self) -> bool:
        """Partitions wait for a check, or refused ones are due to be looked at again."""
        return bool(self._ready_to_check()) or self._watch_due()

    def _ready_to_check(self) -> list[TopicPartition]:
        now = time.monotonic()
        return sorted(tp for tp in self.unverified if self._deferred.get(tp, now) <= now)

    def _watch_due(self) -> bool:
        return bool(self.refused) and time.monotonic() - self._watched_at >= GENERATION_TTL_S

    async def check(
        self,
        generation: int,
        consumer: AIOKafkaConsumer,
        lookups: Lookups,
        probe: LogProbe,
        retrying: Retrying,
        *,
        fencing: Fencing,
    ) -> None:
        """Resume the partitions waiting for a check of their log, or refuse them.

        Refused partitions are looked at again (at most every GENERATION_TTL_S) in case an
        operator acted: a new live generation (``rebuild``) or a new log epoch (``accept-log``).
        The caller makes sure no write is in flight: positions must include it. The fences
        are registered first: positions read after them include every write of an earlier
        owner that ClickHouse admitted.
        """
        if self._watch_due():
            self._watched_at = time.monotonic()
            await self._watch(generation, lookups)
        self.unverified &= consumer.assignment()
        tps = self._ready_to_check()
        if not tps:
            return
        self.fences.update(await fencing.register(generation, tps))
        for tp in tps:
            self._deferred.pop(tp, None)
        stored = await lookups.positions(generation, tps)
        logs = await retrying(
            "read the log", lambda: probe.states({tp: stored.get(tp) for tp in tps})
        )
        for tp in tps:
            self.unverified.discard(tp)
            verdict = verify(stored.get(tp), logs[tp])
            if isinstance(verdict, Regression):
                self._refuse(
                    tp, generation=generation, stored=stored.get(tp), log=logs[tp],
                    verdict=verdict, consumer=consumer,
                )  # fmt: skip
            else:
                self._resume(tp, stored.get(tp), verdict, consumer)
                self._metrics.set_lag(tp, logs[tp].high_watermark - verdict.offset)

    async def _watch(self, generation: int, lookups: Lookups) -> None:
        """Check refused partitions again once the generation or their epoch moved."""
        tps = sorted(self.refused)
        stored = await lookups.positions(generation, tps)
        for tp in tps:
            refused = self.refused[tp]
            epoch = stored[tp].epoch if tp in stored else 0
            if (refused.generation, refused.epoch) != (generation, epoch):
                logger.warning(
                    "%s[%d]: now generation %d, log epoch %d (refused in generation %d, epoch "
                    "%d): checking its log again",
                    tp.topic, tp.partition, generation, epoch, refused.generation, refused.epoch,
                )  # fmt: skip
                del self.refused[tp]
                self.unverified.add(tp)

    def watch_highwaters(self, consumer: AIOKafkaConsumer) -> None:
        """Hold partitions whose log now ends before where we fetch: it went backwards.

        Kafka answers such a fetch "offset out of range" (the client resets to the earliest
        offset, and the plan sees the fetch start elsewhere); some brokers (Tansu) answer it
        with no records and the lower high watermark, and would serve the new log's records
        from our position on once it grows past it, the ones below silently skipped.
        """
        for tp in consumer.assignment():
            origin = self.origins.get(tp)
            if origin is None or tp in self.unverified or tp in self.refused:
                continue
            highwater = consumer.highwater(tp)
            answered_at = consumer.last_poll_timestamp(tp)
            # Only an answer to a fetch made after the partition resumed is about this log.
            if highwater is None or answered_at is None:
                continue
            if answered_at > self._resumed_at_ms.get(tp, 0) and highwater < origin:
                logger.warning(
                    "%s[%d]@%d: the log ends at %d (high watermark), below where we fetch: "
                    "checking the log before writing anything of it",
                    tp.topic, tp.partition, origin, highwater,
                )  # fmt: skip
                self.hold({tp}, consumer)

    def fenced(
        self, spans: Mapping[TopicPartition, tuple[int, int]], latest: Mapping[TopicPartition, int]
    ) -> set[TopicPartition]:
        """Partitions of a batch whose latest fence in ClickHouse is not this instance's: another
        instance registered since, so ClickHouse drops what this one writes of them.

        Either this instance is the zombie (paused while the group moved them, it learns so
        at its next heartbeat and gives them up), or the other one is (it registered late,
        after a pause of its own). So the partition is not read, and registered again only
        after ``fence_grace_s`` if the group still gives it to this instance by then: a
        zombie registering at once would take the partition back from its new owner.
        """
        found = {tp for tp in spans if tp in self.fences and latest.get(tp) != self.fences[tp]}
        until = time.monotonic() + self._fence_grace_s
        for tp in sorted(found):
            self._metrics.fenced.labels(tp.topic, str(tp.partition)).inc()
            if tp not in self._deferred:
                theirs = latest.get(tp)
                logger.warning(
                    "%s[%d]@%d: fenced, its latest fence is %s, not ours (%x): ClickHouse drops "
                    "what this instance writes of it; not reading it, registering again in "
                    "%.0f s unless the group moves it",
                    tp.topic, tp.partition, spans[tp][0],
                    "none" if theirs is None else f"{theirs:x}", self.fences[tp],
                    self._fence_grace_s,
                )  # fmt: skip
                self._deferred[tp] = until
        return found

    def held(
        self, spans: Mapping[TopicPartition, object], positions: Mapping[TopicPartition, Stored]
    ) -> set[TopicPartition]:
        """Partitions of a batch not to write until their log is checked: waiting for a check,
        refused, or whose epoch moved (an operator accepted a new log, a rebuild swapped in
        other tables)."""
        return {
            tp
            for tp in spans
            if tp in self.unverified
            or tp in self.refused
            or (positions[tp].epoch if tp in positions else 0) != self.epochs.get(tp, 0)
        }

    def follow(
        self,
        p: Plan,
        spans: Mapping[TopicPartition, tuple[int, int]],
        held: set[TopicPartition],
        consumer: AIOKafkaConsumer,
    ) -> None:
        """Seek where the plan rewinds; hold what it checks again; say where it accepts a gap."""
        for tp, offset in p.rewind_to.items():
            logger.warning(
                "%s[%d]@%d: ClickHouse holds up to %d, fetch started here: rewinding",
                tp.topic, tp.partition, spans[tp][0], offset,
            )  # fmt: skip
            self.rewound[tp] = offset
            self.origins[tp] = offset
            consumer.seek(tp, offset)
        for tp in sorted(p.verify):
            if tp in self._deferred:
                pass  # fenced: said by fenced()
            elif tp in held:
                logger.info(
                    "%s[%d]@%d: its log epoch or generation moved: checking its log again",
                    tp.topic, tp.partition, spans[tp][0],
                )  # fmt: skip
            else:
                logger.warning(
                    "%s[%d]@%d: fetch started here, not at %s where the consumer was put (an "
                    "out-of-range reset: did the log change?); checking the log before "
                    "writing anything of it",
                    tp.topic, tp.partition, spans[tp][0], self.origins.get(tp),
                )  # fmt: skip
            self.hold({tp}, consumer)
        for tp, (expected, first) in p.gaps_accepted.items():
            logger.error(
                "%s[%d]: offsets %d..%d are gone from the log (retention?); moving on",
                tp.topic, tp.partition, expected, first - 1,
            )  # fmt: skip

    def _resume(
        self, tp: TopicPartition, stored: Stored | None, verdict: Resume, consumer: AIOKafkaConsumer
    ) -> None:
        epoch = stored.epoch if stored is not None else 0
        self.epochs[tp] = epoch
        self.origins[tp] = verdict.offset
        if verdict.gap is not None:
            # The plan accepts this gap once, and says so.
            self.rewound[tp] = verdict.gap[0]
        if verdict.unverified and tp not in self._said_unverified:
            self._said_unverified.add(tp)
            logger.warning(
                "%s[%d]@%d: no fingerprint to compare for the last record written (written "
                "before fingerprints existed, or gone by retention): checked the high "
                "watermark only",
                tp.topic, tp.partition, verdict.offset,
            )  # fmt: skip
        logger.info(
            "%s[%d]@%d: log checked (epoch %d): resuming here",
            tp.topic, tp.partition, verdict.offset, epoch,
        )  # fmt: skip
        consumer.seek(tp, verdict.offset)
        consumer.resume(tp)
        self._resumed_at_ms[tp] = int(time.time() * 1000)

    def _refuse(
        self,
        tp: TopicPartition,
        *,
        generation: int,
        stored: Stored | None,
        log: LogState,
        verdict: Regression,
        consumer: AIOKafkaConsumer,
    ) -> None:
        """Stop consuming ``tp`` (others go on), loudly, until an operator acts."""
        assert stored is not None  # nothing stored never regresses
        position, epoch = stored.next_offset, stored.epoch
        message = (
            f"{tp.topic}[{tp.partition}]@{position}: {verdict.reason}; expected (position "
            f"{position}, fingerprint {_fingerprint(stored.fingerprint)}), found (high "
            f"watermark {log.high_watermark}, fingerprint at {position - 1} "
            f"{_fingerprint(log.found)})"
        )
        self._on_regression(message)
        consumer.pause(tp)
        self.refused[tp] = Refused(generation, epoch, message)
        self._metrics.log_regressions.labels(tp.topic, str(tp.partition)).inc()
        logger.error(
            "%s[%d]@%d: the log went backwards, partition refused (generation %d, log epoch "
            "%d): %s; expected (position %d, fingerprint %s), found (high watermark %d, "
            "fingerprint at %d %s). Nothing of it is skipped or written until an operator "
            "runs `python -m projector accept-log --topic %s --partition %d` (project the log "
            "as it is now) or `python -m projector rebuild`",
            tp.topic, tp.partition, position, generation, epoch, verdict.reason, position,
            _fingerprint(stored.fingerprint), log.high_watermark, position - 1,
            _fingerprint(log.found), tp.topic, tp.partition,
        )  # fmt: skip
