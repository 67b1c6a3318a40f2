"""Keeps the Redis read model up to date from the score-update topic.

A plain aiokafka consumer in its own consumer group, inside the worker: when Redis is away the
sink retries with backoff and commits nothing, while scoring goes on; when Redis returns it
catches up from the topic, without a restart. Several workers split the topic's partitions.
"""
from __future__ import annotations

import asyncio
import logging

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError

from streams.readmodel import ReadModel

log = logging.getLogger(__name__)


class ReadModelSink:
    def __init__(self, bootstrap: str, topic: str, group_id: str, read_model: ReadModel, *,
                 max_records: int = 5000, on_applied=None, on_error=None):
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.read_model = read_model
        self.max_records = max_records
        self.on_applied = on_applied or (lambda n, lag: None)  # metrics hooks
        self.on_error = on_error or (lambda exc: None)
        self.backlog = 0  # records fetched and not yet in Redis
        self.redis_ok = True

    async def run(self, stopping: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, group_id=self.group_id,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    max_poll_records=self.max_records)
        await consumer.start()
        try:
            while not stopping.is_set():
                fetched = await consumer.getmany(timeout_ms=200, max_records=self.max_records)
                records = [r for part in fetched.values() for r in part]
                if not records:
                    continue
                updates = [(orjson.loads(r.value), r.value) for r in records if r.value]
                self.backlog = len(updates)
                await self._apply_until_done(updates, stopping)
                if stopping.is_set() and self.backlog:
                    return  # not applied: leave the offsets uncommitted, the next start replays them
                try:
                    await consumer.commit()
                except KafkaError as exc:  # e.g. left the group during a long Redis outage: replays are harmless
                    log.warning("read model sink could not commit (%s); its records will be applied again", exc)
        finally:
            await consumer.stop()

    async def _apply_until_done(self, updates, stopping: asyncio.Event) -> None:
        delay = 0.2
        while not stopping.is_set():
            try:
                await self.read_model.apply(updates)
            except (RedisError, OSError) as exc:
                if self.redis_ok:
                    log.warning("Redis read model unavailable (%s); retrying, scoring goes on", exc)
                self.redis_ok = False
                self.on_error(exc)
                try:
                    await asyncio.wait_for(stopping.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                delay = min(delay * 2, 5.0)
                continue
            if not self.redis_ok:
                log.info("Redis read model reachable again; catching up")
            self.redis_ok = True
            self.on_applied(len(updates), 0)
            self.backlog = 0
            return
