"""Keeps the Redis read model up to date from the score-update topic, and rebuilds it when Redis lost it.

A plain aiokafka consumer in its own consumer group, inside the worker (or, with
HEALTH_READ_MODEL_SINK=separate, in `health read-model` processes: streams.sinks.readmodel_service);
several workers split the topic's partitions. When Redis is away the sink retries with backoff while scoring goes on, and
catches up from the topic when Redis returns, without a restart.

Redis runs without persistence here, so it can come back empty. For each partition it owns the sink
keeps a marker in Redis (streams.sinks.readmodel: `{prefix}:readmodel:p{partition}`) and moves it with every
apply, in the same pipeline; a marker that is gone, noticed by an apply or by the check every few
seconds (also when no updates flow), means Redis lost that partition's projection: the sink seeks
the partition to the start of the score topic and applies everything again (an update is applied
only if its per-account `seq` is newer, so replaying is harmless). A new deployment has no marker
either, and so starts from the beginning. Markers are per partition: each worker rebuilds what it
owns, and one worker's rebuild hides nothing another must rebuild. The marker records the offset
below which Redis holds every update and, during a rebuild, its target, so a partition handed to
another worker mid-rebuild is resumed there, and a restarted worker goes on from where Redis is. While
Redis is away the sink polls with its partitions paused, so that it stays in its group (and its backlog
stays reported) however long the outage lasts. For the topic to hold every account's latest update
forever, it is log-compacted by account (streams.topics.SCORE_TOPIC_CONFIG).

The backlog (`on_backlog`) is the number of score updates on the topic not yet in Redis: per owned
partition, the high watermark minus the offset applied; it is refreshed after every fetch and apply,
every check, and at every retry while Redis is away.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from streams.clock import idle
from streams.sinks.readmodel import BUILDING, BUILT, MARK_LOST, MARK_OK, ReadModel
from streams.topics import warn_unless_compacted

log = logging.getLogger(__name__)


CHECK_SECONDS = 5.0  # how often the markers of the owned partitions are looked at
PROGRESS_SECONDS = 5.0  # how often a rebuild reports its progress in the log


@dataclass
class _Build:
    """A partition being replayed from `start` until its position reaches `target`."""
    reason: str
    start: int
    target: int
    started: float  # time.monotonic()
    records: int = 0


READ_MODEL_REBUILD_REASONS = ("initial", "lost")


class ReadModelMetrics:
    """The read model sink's metrics: a worker's (HEALTH_READ_MODEL_SINK=worker) or a `health read-model`
    process's."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.read_model_updates = Counter("health_read_model_updates_total",
                                          "Score updates written to the Redis read model", registry=r)
        self.read_model_errors = Counter("health_read_model_write_failures_total",
                                         "Failed Redis read model writes (retried)", registry=r)
        self.read_model_backlog = Gauge("health_read_model_backlog",
                                        "Score updates on the score topic not yet in Redis: high watermark minus "
                                        "the read model sink's applied offset, over its partitions", registry=r)
        self.read_model_rebuilds = Counter("health_read_model_rebuilds_total",
                                           "Score topic partitions whose Redis projection the sink (re)built from "
                                           "the start of the topic; reason initial (nothing built yet) or lost "
                                           "(its marker was gone: Redis lost data)", ["reason"], registry=r)
        self.read_model_rebuilding = Gauge("health_read_model_rebuilding_partitions",
                                           "Score topic partitions whose Redis projection is being rebuilt",
                                           registry=r)
        for reason in READ_MODEL_REBUILD_REASONS:
            self.read_model_rebuilds.labels(reason)

    def on_read_model_applied(self, n: int) -> None:
        self.read_model_updates.inc(n)

    def on_read_model_error(self, exc: Exception) -> None:
        self.read_model_errors.inc()

    def on_read_model_backlog(self, updates: int) -> None:
        self.read_model_backlog.set(updates)

    def on_read_model_rebuild(self, reason: str, partitions: int = 1) -> None:
        self.read_model_rebuilds.labels(reason).inc(partitions)

    def on_read_model_rebuilding(self, partitions: int) -> None:
        self.read_model_rebuilding.set(partitions)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


@dataclass
class _Partition:
    """What the sink knows of one partition it owns."""
    applied: int | None = None  # every update below this offset is in Redis (as far as the sink knows)
    highwater: int = 0
    committed: int | None = None  # the group's offset when the partition was assigned
    beginning: int = 0
    checked: bool = False  # its marker was read and claimed since the assignment (until then it is paused)
    build: _Build | None = None


class _Listener(ConsumerRebalanceListener):
    def __init__(self, sink: "ReadModelSink"):
        self.sink = sink

    async def on_partitions_revoked(self, revoked) -> None:
        self.sink._revoked(revoked)

    async def on_partitions_assigned(self, assigned) -> None:
        self.sink._assigned(assigned)


class ReadModelSink:
    def __init__(self, bootstrap: str, topic: str, group_id: str, read_model: ReadModel, *,
                 max_records: int = 5000, check_seconds: float = CHECK_SECONDS, consumer_options: dict | None = None,
                 on_applied=None, on_error=None, on_backlog=None, on_rebuild=None, on_rebuilding=None):
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.read_model = read_model
        self.max_records = max_records
        self.check_seconds = check_seconds
        self.consumer_options = consumer_options or {}
        # metrics hooks
        self.on_applied = on_applied or (lambda n: None)  # updates written
        self.on_error = on_error or (lambda exc: None)  # a failed Redis write (retried)
        self.on_backlog = on_backlog or (lambda n: None)  # updates on the topic not yet in Redis
        self.on_rebuild = on_rebuild or (lambda reason: None)  # a partition's rebuild started
        self.on_rebuilding = on_rebuilding or (lambda n: None)  # partitions being rebuilt
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"  # this sink, in markers
        self.parts: dict[TopicPartition, _Partition] = {}
        self.backlog = 0
        self.redis_ok = True
        self._consumer: AIOKafkaConsumer | None = None
        self._seen_marker: set[int] = set()  # partitions this sink found or wrote a marker for
        self._round: tuple[float, set[int]] | None = None  # rebuilds under way since (monotonic, partitions)
        self._next_check = 0.0
        self._next_progress = 0.0

    @classmethod
    def of(cls, settings, read_model: ReadModel, metrics, consumer_options: dict) -> "ReadModelSink":
        """The sink of a deployment's score topic (one consumer group, `<app id>-readmodel`, whether the sinks
        run in the workers or in processes of their own), reporting to `metrics` (a ReadModelMetrics)."""
        return cls(settings.bootstrap_servers, settings.topics.scores, f"{settings.app_id}-readmodel", read_model,
                   consumer_options=consumer_options, on_applied=metrics.on_read_model_applied,
                   on_error=metrics.on_read_model_error, on_backlog=metrics.on_read_model_backlog,
                   on_rebuild=metrics.on_read_model_rebuild, on_rebuilding=metrics.on_read_model_rebuilding)

    # ------------------------------------------------------------------ the loop
    async def run(self, stopping: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=self.group_id,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    max_poll_records=self.max_records, **self.consumer_options)
        consumer.subscribe([self.topic], listener=_Listener(self))
        # a restarted run starts afresh: the consumer it had is gone, and with it every assignment
        self.parts.clear()
        self._round = None
        self._consumer = consumer
        await consumer.start()
        try:
            await warn_unless_compacted(self.bootstrap, self.topic, "a read model rebuild misses accounts whose "
                                        "last update it no longer retains", self.consumer_options)
            while not stopping.is_set():
                try:
                    if not await self._step(consumer, stopping):
                        return  # stopping with updates not applied: uncommitted, the next start replays them
                except KafkaError as exc:  # the broker is away or a rebalance interfered: try again shortly
                    log.warning("read model sink: Kafka error (%s: %s); retrying", type(exc).__name__, exc)
                    await idle(stopping, 1.0)
        finally:
            self._consumer = None
            await consumer.stop()

    async def _step(self, consumer: AIOKafkaConsumer, stopping: asyncio.Event) -> bool:
        if any(p.applied is None for p in self.parts.values()):
            await self._locate(consumer)
        if self.parts and (time.monotonic() >= self._next_check
                           or any(not p.checked for p in self.parts.values())):
            await self._refresh_highwaters(consumer)
            if await self._redis(lambda: self._check(consumer), stopping) is None:
                return True  # stopping
            self._next_check = time.monotonic() + self.check_seconds
        fetched = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
        self._note_highwaters(consumer)
        if any(fetched.values()) and not await self._apply(consumer, fetched, stopping):
            return False
        self._publish()
        return True

    # ------------------------------------------------------------------ assignment
    def _assigned(self, assigned) -> None:
        """A rebalance gave the sink `assigned` (every partition it owns from now on): each stays paused
        until its marker is read, which decides where its consumption starts."""
        if self._consumer is not None and assigned:
            self._consumer.pause(*assigned)
        for tp in assigned:
            self.parts[tp] = _Partition()
        self._publish()

    def _revoked(self, revoked) -> None:
        handed = []
        for tp in revoked:
            part = self.parts.pop(tp, None)
            if part is not None and part.build is not None:  # its marker says where the next owner resumes
                handed.append(tp.partition)
        if handed:
            log.info("read model: a rebalance took partitions %s during their rebuild; their next owner resumes "
                     "it from their markers", sorted(handed))
        self._end_round_if_done()
        self._publish()

    async def _locate(self, consumer: AIOKafkaConsumer) -> None:
        """Kafka only (works while Redis is away): the group's offset and the ends of newly assigned partitions,
        so the backlog is known before the markers are read."""
        new = {tp: part for tp, part in self.parts.items() if part.applied is None}
        committed = {tp: await consumer.committed(tp) for tp in new}
        beginning = await consumer.beginning_offsets(list(new))
        end = await consumer.end_offsets(list(new))
        for tp, part in new.items():
            if self.parts.get(tp) is not part:
                continue  # revoked meanwhile
            part.committed, part.beginning = committed[tp], beginning[tp]
            part.highwater = max(part.highwater, end[tp])
            part.applied = committed[tp] if committed[tp] is not None else beginning[tp]

    # ------------------------------------------------------------------ markers
    async def _check(self, consumer: AIOKafkaConsumer) -> bool:
        """Read the markers: of newly assigned partitions (claim them; resume where Redis is, or rebuild),
        and of the others (rebuild those whose marker is gone). Redis first; the sink's own state changes
        only after Redis answered, so a retry after a Redis error starts afresh."""
        parts = dict(self.parts)
        new = [tp for tp, p in parts.items() if not p.checked and p.applied is not None]
        known = [tp for tp, p in parts.items() if p.checked]
        if not new and not known:
            await self.read_model.apply([])  # a ping: success here means Redis answers
        claimed = await self.read_model.claim_markers([tp.partition for tp in new], self.token) if new else {}
        owners = await self.read_model.marker_owners([tp.partition for tp in known]) if known else {}
        rebuild: dict[TopicPartition, str] = {}
        resume: dict[TopicPartition, dict[str, str]] = {}
        for tp in new:
            marker = claimed[tp.partition]
            part = parts[tp]
            if marker is None or not _valid(marker, part.highwater):
                rebuild[tp] = "lost" if part.committed is not None or tp.partition in self._seen_marker else "initial"
            else:
                resume[tp] = marker
        for tp in known:
            owner = owners[tp.partition]
            if owner is None:
                rebuild[tp] = "lost"
            elif owner != self.token and self.parts.get(tp) is parts[tp]:
                # another sink claimed it: this one was superseded (it was dropped from the group)
                log.warning("read model: partition %d was claimed by %s; leaving it", tp.partition, owner)
                _pause(consumer, tp)
                del self.parts[tp]
        builds = {}
        if rebuild:
            end = await consumer.end_offsets(list(rebuild))
            beginning = await consumer.beginning_offsets(list(rebuild))
            builds = {tp: (beginning[tp], end[tp]) for tp in rebuild}
            written = await self.read_model.start_builds({tp.partition: b for tp, b in builds.items()}, self.token,
                                                         int(time.time() * 1000))
            for tp in [tp for tp in builds if tp.partition not in written]:  # handed over meanwhile
                del builds[tp]
        # Redis has answered: apply the decisions
        now = time.monotonic()
        resumed = []
        for tp, marker in resume.items():
            part = self.parts.get(tp)
            if part is not parts[tp]:
                continue  # revoked (and maybe assigned again) meanwhile: checked anew
            offset = int(marker["offset"])
            if not _seek(consumer, tp, offset):
                continue
            part.applied, part.checked = offset, True
            self._seen_marker.add(tp.partition)
            if marker.get("state") == BUILDING:
                target = int(marker["target"])
                started = now - max(0.0, time.time() - int(marker.get("started_ms", 0)) / 1000)
                part.build = _Build("resumed", offset, target, started)
                self._begin_round(tp.partition)
                resumed.append((tp.partition, offset, target))
        if resumed:  # handed over by a rebalance: the marker says how far the previous owner came
            log.info("read model: resuming the rebuild of partitions %s at their markers' offsets: %d of %d records "
                     "to go", sorted(p for p, _, _ in resumed), sum(t - o for _, o, t in resumed),
                     sum(t for _, _, t in resumed))
        started = []
        for tp, (start, target) in builds.items():
            part = self.parts.get(tp)
            if part is not parts[tp]:
                continue
            if not _seek(consumer, tp, start):
                continue
            part.applied, part.checked = start, True
            part.highwater = max(part.highwater, target)
            part.build = _Build(rebuild[tp], start, target, now) if target > start else None
            self._seen_marker.add(tp.partition)
            self.on_rebuild(rebuild[tp])
            if part.build is not None:
                self._begin_round(tp.partition)
            started.append((tp.partition, rebuild[tp], target - start))
        if started:
            total = sum(n for _, _, n in started)
            log.info("read model: %s from the start of %s: partitions %s (%s), %d records to apply",
                     "building the projection" if all(r == "initial" for _, r, _ in started)
                     else "Redis lost the projection; rebuilding it", self.topic,
                     sorted(p for p, _, _ in started), ", ".join(sorted({r for _, r, _ in started})), total)
        # a build that has nothing left to replay is done now
        done = {tp: (p, p.applied, BUILT) for tp, p in self.parts.items()
                if p.checked and p.build is not None and p.applied >= p.build.target}
        if done:
            _, statuses = await self.read_model.apply([], {tp.partition: m[1:] for tp, m in done.items()}, self.token)
            self._settle(consumer, done, {}, statuses)
        paused = [tp for tp in consumer.paused() if tp in self.parts and self.parts[tp].checked]
        if paused:
            consumer.resume(*paused)
        self._publish()
        return True

    # ------------------------------------------------------------------ applying
    async def _apply(self, consumer: AIOKafkaConsumer, fetched, stopping: asyncio.Event) -> bool:
        updates = []
        marks: dict[TopicPartition, tuple[_Partition, int, str]] = {}
        counts: dict[TopicPartition, int] = {}
        for tp, records in fetched.items():
            if not records:
                continue
            for record in records:
                update = _decode(record)
                if update is not None:
                    updates.append((update, record.value))
            part = self.parts.get(tp)
            if part is not None and part.checked:
                offset = records[-1].offset + 1
                marks[tp] = (part, offset, BUILT if part.build is not None and offset >= part.build.target else "")
                counts[tp] = len(records)
        result = await self._redis(lambda: self.read_model.apply(
            updates, {tp.partition: m[1:] for tp, m in marks.items()}, self.token), stopping)
        if result is None:
            return False
        self.on_applied(len(updates))
        _, statuses = result
        self._settle(consumer, marks, counts, statuses)
        offsets = {tp: offset for tp, (part, offset, _) in marks.items()
                   if self.parts.get(tp) is part and statuses.get(tp.partition) == MARK_OK}
        if offsets:
            try:
                await consumer.commit(offsets)
            except KafkaError as exc:  # e.g. left the group during a long Redis outage: replays are harmless
                log.warning("read model sink could not commit (%s); its records will be applied again", exc)
        self._progress()
        return True

    def _settle(self, consumer, marks, counts, statuses: dict[int, int]) -> None:
        """Take in what the markers said after an apply: moved (the offset is applied), or gone (rebuild).
        A partition revoked meanwhile (even if assigned again) is left alone: it is checked anew."""
        for tp, (part, offset, state) in marks.items():
            if self.parts.get(tp) is not part:
                continue
            status = statuses.get(tp.partition)
            if status == MARK_OK:
                part.applied = offset
                build = part.build
                if build is not None:
                    build.records += counts.get(tp, 0)
                    if state == BUILT:
                        part.build = None
                        log.info("read model: partition %d rebuilt: %d records, offsets %d to %d, in %.1f s",
                                 tp.partition, build.records, build.start, offset, time.monotonic() - build.started)
                        self._end_round_if_done()
            elif status == MARK_LOST:  # Redis lost data since the last apply: paused until the check rebuilds it
                _pause(consumer, tp)
                part.checked = False
                self._next_check = 0.0
            else:  # claimed by another sink
                log.warning("read model: partition %d was claimed by another sink; leaving it", tp.partition)
                _pause(consumer, tp)
                self.parts.pop(tp, None)

    async def _redis(self, operation, stopping: asyncio.Event):
        """Run a Redis operation until it succeeds and return its result (None if stopping first: the operation
        returns something else), with backoff; logs once when Redis
        goes away and once when it is back. Meanwhile the backlog follows the topic's end."""
        delay = 0.2
        while not stopping.is_set():
            try:
                result = await operation()
            except (RedisError, OSError) as exc:
                if self.redis_ok:
                    log.warning("Redis read model unavailable (%s); retrying, scoring goes on", exc)
                self.redis_ok = False
                self.on_error(exc)
                if self._consumer is not None:
                    await self._refresh_highwaters(self._consumer)
                    await self._poll_paused(self._consumer)
                self._publish()
                await idle(stopping, delay)
                delay = min(delay * 2, 5.0)
                continue
            if not self.redis_ok:
                log.info("Redis read model reachable again; catching up (%d updates waiting)", self.backlog)
                if self._consumer is not None:  # paused by the outage; those not checked yet wait for their check
                    checked = [tp for tp in self._consumer.paused() if tp in self.parts and self.parts[tp].checked]
                    if checked:
                        self._consumer.resume(*checked)
            self.redis_ok = True
            return result
        return None

    async def _poll_paused(self, consumer: AIOKafkaConsumer) -> None:
        """While Redis is away: poll with every partition paused, so the group keeps this member (a consumer that
        does not poll for max.poll.interval.ms leaves it) and the backlog stays reported where it belongs."""
        try:
            owned = [tp for tp in self.parts if tp in consumer.assignment()]
            if owned:
                consumer.pause(*owned)
            fetched = await consumer.getmany(timeout_ms=0)
        except (KafkaError, AssertionError) as exc:
            log.debug("read model sink: poll during the Redis outage failed (%s)", exc)
            return
        for tp, records in fetched.items():  # none while paused; were there any, read them again later
            if records:
                consumer.seek(tp, records[0].offset)

    # ------------------------------------------------------------------ backlog and progress
    def _note_highwaters(self, consumer: AIOKafkaConsumer) -> None:
        for tp, part in self.parts.items():
            try:
                highwater = consumer.highwater(tp)
            except (AssertionError, KafkaError):  # just revoked
                continue
            if highwater is not None:
                part.highwater = max(part.highwater, highwater)

    async def _refresh_highwaters(self, consumer: AIOKafkaConsumer) -> None:
        tps = list(self.parts)
        if not tps:
            return
        try:
            end = await asyncio.wait_for(consumer.end_offsets(tps), 10)
        except (KafkaError, asyncio.TimeoutError, AssertionError) as exc:
            log.debug("read model sink: no end offsets (%s)", exc)
            return
        for tp, offset in end.items():
            part = self.parts.get(tp)
            if part is not None:
                part.highwater = max(part.highwater, offset)

    def _publish(self) -> None:
        self.backlog = sum(max(0, p.highwater - p.applied) for p in self.parts.values() if p.applied is not None)
        self.on_backlog(self.backlog)
        self.on_rebuilding(sum(1 for p in self.parts.values() if p.build is not None))

    def _begin_round(self, partition: int) -> None:
        if self._round is None:
            self._round = (time.monotonic(), set())
            self._next_progress = time.monotonic() + PROGRESS_SECONDS
        self._round[1].add(partition)

    def _end_round_if_done(self) -> None:
        if self._round is not None and not any(p.build is not None for p in self.parts.values()):
            started, partitions = self._round
            self._round = None
            log.info("read model: rebuild done: partitions %s in %.1f s", sorted(partitions),
                     time.monotonic() - started)

    def _progress(self) -> None:
        if self._round is None or time.monotonic() < self._next_progress:
            return
        self._next_progress = time.monotonic() + PROGRESS_SECONDS
        building = {tp.partition: p for tp, p in self.parts.items() if p.build is not None}
        reached = sum(p.applied - p.build.start for p in building.values())
        total = sum(p.build.target - p.build.start for p in building.values())
        log.info("read model: rebuilding partitions %s: %d records applied, offsets reached %d of %d, in %.1f s",
                 sorted(building), sum(p.build.records for p in building.values()), reached, total,
                 time.monotonic() - self._round[0])


def _valid(marker: dict[str, str], highwater: int) -> bool:
    """A marker this sink can resume from: complete, and not past the partition's end (a recreated topic)."""
    try:
        offset = int(marker["offset"])
        if marker["state"] == BUILDING:
            int(marker["target"])
        elif marker["state"] != BUILT:
            return False
    except (KeyError, ValueError):
        return False
    return 0 <= offset <= highwater


def _decode(record) -> dict | None:
    if not record.value:
        return None
    try:
        update = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        update = None
    if _is_update(update):
        return update
    # anything else on the topic (a stray producer) must not stall the sink: Redis would refuse it
    log.warning("read model: skipped a record that is not a score update (partition %d, offset %d)",
                record.partition, record.offset)
    return None


def _is_update(u) -> bool:
    """The fields the read model's script uses, with the types it needs."""
    def integer(v):
        return type(v) is int

    def number(v):
        return (type(v) is int or (type(v) is float and v - v == 0.0))

    return (type(u) is dict and type(u.get("account_id")) is str and 0 < len(u["account_id"]) <= 1024
            and integer(u.get("seq")) and number(u.get("computed_at_ms"))
            and (u.get("score") is None or number(u["score"]))
            and (u.get("band") is None or type(u["band"]) is str))


def _seek(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> bool:
    """Seek a partition the consumer still has; False (nothing done) if it lost it meanwhile."""
    if tp not in consumer.assignment():
        return False
    consumer.seek(tp, offset)
    return True


def _pause(consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
    """Pause a partition if the consumer still has it (pausing one it lost meanwhile raises)."""
    if tp in consumer.assignment():
        consumer.pause(tp)
