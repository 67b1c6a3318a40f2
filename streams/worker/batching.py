"""Hands whole fetched record batches to one coroutine, past Faust's per-event path.

Faust delivers every record through a channel queue and a stream iteration: about three
event-loop iterations per event, which caps a worker at a few thousand events per second
whatever the work per event. Here the consumer's fetch loop gives each `getmany` result for
the registered topics to one batch handler, which processes it as a unit and then acks the
offsets. Everything else stays Faust's: the consumer group and rebalancing, flow control,
offset commits (only acked offsets commit, after the producer buffer is flushed), table
changelogs and their recovery. Other topics (tables' changelogs, agents) take the usual path.

The module leans on faust-streaming 0.15.3 internals (`Consumer._drain_messages`, `_acked`,
`_acked_index`, `_read_offset`, and for the web views `App._new_web` and `Web.blueprints._enabled`);
the version is pinned in pyproject.toml.
"""
from __future__ import annotations

import asyncio
import logging
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator

import faust
from aiokafka.errors import IllegalStateError
from faust.streams import _current_event
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.worker import quiet_logs


@dataclass(slots=True)
class RecordBatch:
    """The records of one topic partition from one fetch, in offset order (aiokafka ConsumerRecords)."""

    tp: TP
    records: list[Any]


# handler(batches, generation) -> True when processed (then acked); False to refuse them: they are read again
BatchHandler = Callable[[list[RecordBatch], int], Awaitable[bool]]


class _PartitionEvent:
    """What Faust's tables and stores read of the current event: its topic and partition."""

    __slots__ = ("message", "__weakref__")

    class _Message:
        __slots__ = ("topic", "partition")

        def __init__(self, topic: str, partition: int):
            self.topic, self.partition = topic, partition

    def __init__(self, topic: str, partition: int):
        self.message = self._Message(topic, partition)


@contextmanager
def in_partition(topic: str, partition: int) -> Iterator[None]:
    """Make table writes inside the block go to `partition` (Faust takes it from the current event)."""
    event = _PartitionEvent(topic, partition)
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class BatchingConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer whose fetch loop hands registered topics' records over in batches."""

    def ack_batch(self, batch: RecordBatch) -> None:
        """Mark every offset of the batch processed, as Consumer.ack does one message at a time."""
        tp = batch.tp
        committed = self._committed_offset[tp]
        acked_index = self._acked_index[tp]
        acked = self._acked[tp]
        n = 0
        for record in batch.records:
            offset = record.offset
            if (committed is None or offset >= committed) and offset not in acked_index:
                acked_index.add(offset)
                acked.append(offset)
                n += 1
        self._n_acked += n

    async def rewind(self, batches: list[RecordBatch]) -> None:
        """Refused records must be read again. The fetch position has moved past them, and a seek to
        the committed offset moves nothing for a partition that never committed: without this seek
        they would be skipped for good. A partition this worker no longer owns is left alone; its
        new owner starts from the committed offset, which is before them (they were never acked)."""
        assigned = self.assignment()
        for batch in batches:
            if batch.tp in assigned:
                offset = batch.records[0].offset
                try:  # in the consumer's thread, whose fetcher state it changes
                    await self._thread.call_thread(self._thread.seek, batch.tp, offset)
                except IllegalStateError:  # revoked in the meantime: the new owner reads them
                    continue
                self._read_offset[batch.tp] = offset or None

    async def _drain_messages(self, fetcher) -> None:  # pragma: no cover - exercised through the broker tests
        handler: BatchHandler | None = getattr(self.app, "batch_handler", None)
        batch_topics: frozenset[str] = getattr(self.app, "batch_topics", frozenset())
        if handler is None or not batch_topics:
            return await super()._drain_messages(fetcher)
        callback = self.callback
        to_message = self._to_message
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    await self.perform_seek()
                    continue
                batches: list[RecordBatch] = []
                generation = self.app.consumer_generation_id  # a rebalance after this fences the batch
                for tp, tp_records in records.items():
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        continue
                    fresh = []
                    read = get_read_offset(tp)
                    for record in tp_records:
                        offset = record.offset
                        if read is not None and offset < read:
                            continue  # already read before a seek
                        if read is not None and offset - read > 1 and acks_enabled_for(tp.topic):
                            await self._add_gap(tp, read + 1, offset)  # skipped offsets must not block commits
                        read = offset
                        fresh.append(record)
                    if not fresh:
                        continue
                    if tp.topic in batch_topics:
                        batches.append(RecordBatch(tp, fresh))
                    else:
                        for record in fresh:
                            await self.wait_first(callback(to_message(tp, record)), self.suspend_flow.wait())
                    set_read_offset(tp, read)
                if batches:
                    if await handler(batches, generation):
                        for batch in batches:
                            self.ack_batch(batch)
                    else:
                        await self.rewind(batches)
                        await self.sleep(0.05)  # the rebalance is finishing: no tight refetch loop meanwhile
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise


class BatchingTransport(faust_aiokafka.Transport):
    Consumer = BatchingConsumer


_LEVELS = {"crit": "CRITICAL", "warn": "WARNING"}


class HealthApp(faust.App):
    """A Faust app whose consumer hands `batch_topics` to `batch_handler` a fetched batch at a time."""

    batch_handler: BatchHandler | None = None
    batch_topics: frozenset[str] = frozenset()
    declared_topics: tuple = ()  # created (if absent) before the consumer subscribes
    startup_checks: tuple = ()  # coroutines run after that; one that raises stops the worker
    log_level: str | None = None  # the worker's --loglevel
    faust_views: bool = False  # serve Faust's built-in web views (debugging only; see _new_web)

    async def on_first_start(self) -> None:
        if self.log_level:
            # faust's terminal spinner sets the root logger to DEBUG for levels from warn up: every
            # debug call in aiokafka then builds a record the handlers drop (5 % of a busy worker)
            logging.getLogger().setLevel(_LEVELS.get(self.log_level, self.log_level.upper()))
        quiet_logs.install()  # an outage's repeated warnings, once per message per half minute
        logging.getLogger(__name__).info("event loop: %s", type(asyncio.get_running_loop()).__module__)
        await super().on_first_start()
        for topic in self.declared_topics:
            await topic.maybe_declare()
        for check in self.startup_checks:
            await check()

    def _new_transport(self):
        return BatchingTransport(self.conf.broker_consumer, self)

    def _new_web(self):
        """The web server, without Faust's built-in views unless `faust_views`: they list the tables and
        serve their values (/table), the cluster's layout (/router), sensor statistics and partition
        assignments (/, /assignment) and the service graph (/graph); the read API is the pipeline's pages."""
        web = super()._new_web()
        if not self.faust_views:
            drop_builtin_views(web)
        return web


# Faust builds the web server in App._new_web (the cached `app.web`) and mounts its views as blueprints named
# by import path under faust.web.apps, held in Web.blueprints._enabled until the server starts. If either
# member is gone, the views would silently come back: refuse to run instead.
_FAUST_VIEWS_PACKAGE = "faust.web.apps."
if not callable(getattr(faust.App, "_new_web", None)):  # pragma: no cover - a faust upgrade
    raise ImportError("faust.App._new_web is gone (faust-streaming changed): streams.worker.batching can no longer "
                      "turn Faust's built-in web views off; check the pinned faust-streaming version")


def drop_builtin_views(web) -> None:
    """Unmount every built-in Faust view before the server starts; the app's own pages stay."""
    manager = getattr(web, "blueprints", None)
    enabled = getattr(manager, "_enabled", None)
    if not isinstance(enabled, list) or getattr(manager, "applied", True):
        raise RuntimeError("faust's Web.blueprints._enabled is gone or already applied (faust-streaming changed): "
                           "its built-in web views cannot be turned off; check the pinned faust-streaming version")
    enabled[:] = [(prefix, bp) for prefix, bp in enabled
                  if not (isinstance(bp, str) and bp.startswith(_FAUST_VIEWS_PACKAGE))]
