"""Hands whole fetched record batches of the input topics to a Faust agent, past Faust's per-event path.

Faust delivers every record through a channel queue and a stream iteration: about three
event-loop iterations per event, which caps a worker at a few thousand events per second
whatever the work per event. Here the consumer's fetch loop wraps each `getmany` result for the
subscribed input topics in one :class:`FetchedBatch` and puts it on an in-memory channel, whose
agent processes it as a unit (three loop iterations per fetch, not per event); the offsets are
acked only when the agent says it processed the fetch, and a fetch it refuses is read again.
Everything else stays Faust's: the consumer group and rebalancing, flow control, offset commits
(only acked offsets commit, after the producer buffer is flushed), table changelogs and their
recovery. Other topics (tables' changelogs) take the usual path.

This is the one module that touches faust-streaming's internals; each member it uses is listed in
:data:`FAUST_INTERNALS` and checked at import (:func:`check_faust_internals`), so an upgrade that
renames or drops one stops the worker at start, naming it. The version is pinned in pyproject.toml.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator

import faust
import faust.streams
from aiokafka.errors import IllegalStateError
from faust.streams import _current_event
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams.worker import quiet_logs

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RecordBatch:
    """The records of one topic partition from one fetch, in offset order (aiokafka ConsumerRecords)."""

    tp: TP
    records: list[Any]


# handler(batches, generation) -> True when processed (then acked); False to refuse them: they are read again
BatchHandler = Callable[[list[RecordBatch], int], Awaitable[bool]]


@dataclass(slots=True, eq=False)
class FetchedBatch:
    """One fetch of the input topics as the agent receives it: the records of each partition, the consumer
    generation they were fetched in (a rebalance after it fences them), and the outcome the consumer waits for."""

    partitions: list[RecordBatch]
    generation: int
    outcome: asyncio.Future
    taken: bool = False  # the agent started on it: the consumer waits for its outcome, rebalance or not
    abandoned: bool = False  # the consumer gave up on it before the agent started (a rebalance): skipped

    async def handle(self, handler: BatchHandler) -> None:
        """The agent's step: run `handler` on the fetch and tell the consumer whether to ack it."""
        if self.abandoned or self.outcome.done():
            return
        self.taken = True
        processed = False
        try:
            processed = bool(await handler(self.partitions, self.generation))
        except Exception:  # noqa: BLE001 - a crashed agent would be restarted on a new subscription: stay up
            log.exception("the batch handler failed; the fetch is read again")
        finally:  # refused, failed or cancelled: the fetch is read again
            if not self.outcome.done():
                self.outcome.set_result(processed)


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


def put_table_value(table, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
    """Set (None: delete) a table value in its partition, in the store only (the changelog is the caller's)."""
    with in_partition(topic, partition):  # a persistent store keeps a db per partition
        if value is None:
            try:
                del table.data[key]
            except KeyError:
                pass
        else:
            table.data[key] = value
    # the memory store forgets a revoked partition's keys by this index, which Faust fills only when it
    # recovers a key from the changelog: written here, a key is registered here (RocksDB has no such index)
    key_partition = getattr(table.data, MEMORY_STORE_STATE, None)
    if key_partition is not None:
        if value is None:
            key_partition.pop(key, None)
        else:
            key_partition[key] = partition


def kafka_producer(app: faust.App):
    """The started aiokafka producer under the app's Faust producer (record batches go to it directly)."""
    return app.producer._ensure_producer()


def consumer_position(consumer, tp: TP) -> int:
    """The next offset this consumer will consume on `tp`: the committed one, else one past what it read."""
    position = consumer._committed_offset.get(tp)
    if position is None:
        read = consumer._read_offset.get(tp)
        position = read + 1 if read is not None else 0
    return position


def partition_lags(consumer, topics, position: Callable[[TP], int]) -> dict[TP, int]:
    """High watermark minus `position(tp)` per assigned partition of `topics` whose high watermark is known."""
    topics = set(topics)
    lags = {}
    for tp in consumer.assignment():
        if tp.topic not in topics:
            continue
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - not fetched yet, or just revoked: nothing known
            continue
        if highwater is not None:
            lags[tp] = highwater - position(tp)
    return lags


def input_backlog(consumer, topics, from_offsets: dict | None = None) -> int:
    """Records of `topics` on this consumer's assigned partitions not yet processed: per partition, its high
    watermark minus `from_offsets[tp]` (the first offset of a fetch being processed) or else one past the last
    offset read; the largest over the partitions (0 when none is known yet)."""
    from_offsets = from_offsets or {}

    def position(tp: TP) -> int:
        if tp in from_offsets:
            return from_offsets[tp]
        read = consumer._read_offset.get(tp)
        return read + 1 if read is not None else consumer_position(consumer, tp)
    return max(partition_lags(consumer, topics, position).values(), default=0)


class BatchingConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer whose fetch loop hands the input topics' records to the agent a fetch at a time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        missing_consumer_state(self)

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
                except (IllegalStateError, AssertionError):  # revoked meanwhile (aiokafka asserts a subscription)
                    continue
                self._read_offset[batch.tp] = offset or None

    async def seek_back_to_committed(self) -> None:
        """While the flow is suspended (a rebalance), move every partition back to its committed offset,
        as Faust's own fetch loop does, and like it survive a seek that fails: the assignment can change
        under it (a partition revoked between listing and seeking it). Faust's recovery seeks every
        assigned partition to its committed offset again before it resumes the flow."""
        try:
            await self.perform_seek()
        except Exception as err:  # noqa: BLE001 - IllegalStateError and kin; an escaping one crashes the worker
            log.warning("seek to the committed offsets during a rebalance failed (%s: %s)",
                        type(err).__name__, err)

    async def deliver(self, channel, batches: list[RecordBatch], generation: int) -> bool:
        """Put one fetch on the agent's channel and wait for its outcome; False: read it again.

        Refused at once while the agent is not reading yet (start-up) or Faust's flow control is
        suspended (a rebalance, a recovery): a put would then wait for the flow, and this loop also
        feeds the changelog records a recovery waits for. A rebalance that starts before the agent
        took the fetch abandons it (Faust clears the agents' queues); once taken, its outcome is awaited
        (the handler checks the generation itself)."""
        if channel.subscriber_count != 1 or not self.app.flow_control.is_active():
            return False
        fetch = FetchedBatch(batches, generation, asyncio.get_running_loop().create_future())
        await channel.put(fetch)
        stopped = asyncio.ensure_future(self.suspend_flow.wait())
        try:
            await asyncio.wait((fetch.outcome, stopped), return_when=asyncio.FIRST_COMPLETED)
            if not fetch.outcome.done() and not fetch.taken:
                fetch.abandoned = True
                return False
            return await fetch.outcome
        finally:
            stopped.cancel()

    async def _drain_messages(self, fetcher) -> None:  # pragma: no cover - exercised through the broker tests
        channel = getattr(self.app, "fetch_channel", None)
        batch_topics: frozenset[str] = getattr(self.app, "batch_topics", frozenset())
        if channel is None or not batch_topics:
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
                    await self.seek_back_to_committed()
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
                    if await self.deliver(channel, batches, generation):
                        for batch in batches:
                            self.ack_batch(batch)
                    else:
                        await self.rewind(batches)
                        await self.sleep(0.05)  # a rebalance is finishing: no tight refetch loop meanwhile
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
    """A Faust app whose input topics reach one agent a fetched batch at a time (see `fetched_batches`)."""

    fetch_channel: faust.ChannelT | None = None  # the agent's channel of FetchedBatch, set by fetched_batches
    batch_topics: frozenset[str] = frozenset()
    declared_topics: tuple = ()  # created (if absent) before the consumer subscribes
    startup_checks: tuple = ()  # coroutines run after that; one that raises stops the worker
    log_level: str | None = None  # the worker's --loglevel
    faust_views: bool = False  # serve Faust's built-in web views (debugging only; see _new_web)

    def fetched_batches(self, topic: faust.TopicT) -> faust.ChannelT:
        """Subscribe to `topic` (one or more topic names) and return the channel for an agent to read
        it from: one :class:`FetchedBatch` per fetch, each to be finished with `await fetch.handle(...)`.
        One agent, of concurrency 1: a fetch is handled once, and the next waits for its outcome."""
        if self.fetch_channel is not None:
            raise RuntimeError("an app has one channel of fetched batches")
        self.topics.add(topic)
        self.batch_topics = frozenset(topic.topics)
        self.fetch_channel = self.channel()
        return self.fetch_channel

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


_FAUST_VIEWS_PACKAGE = "faust.web.apps."


# Every faust-streaming member outside its documented API that the worker relies on, with what for. Checked
# at import and on each consumer built (check_faust_internals, missing_consumer_state; tested by
# tests/test_faust_internals.py): an upgrade that renames or drops one stops the worker at start, naming it,
# instead of letting it skip records, block commits or serve the table through the built-in views.
FAUST_INTERNALS: tuple[tuple[Any, str, tuple[str, ...] | None, str], ...] = (
    # (owner, member, its parameters after self where they are passed positionally, what it is used for)
    (faust_aiokafka.Consumer, "_drain_messages", ("fetcher",), "the fetch loop, replaced to hand whole fetches over"),
    (faust_aiokafka.Consumer, "_wait_next_records", ("timeout",), "the next fetch of the fetch loop"),
    (faust_aiokafka.Consumer, "_to_message", ("tp", "record"), "changelog records on Faust's usual path"),
    (faust_aiokafka.Consumer, "perform_seek", (), "the seek back to committed offsets while the flow is suspended"),
    (faust_aiokafka.Consumer, "_add_gap", ("tp", "offset_from", "offset_to"),
     "offsets skipped inside a partition, so that they do not block commits"),
    (faust_aiokafka.Consumer, "consumer_stopped_errors", None, "the errors that end the fetch loop quietly"),
    (faust_aiokafka.ConsumerThread, "call_thread", None, "a seek back run in the consumer's thread"),
    (faust_aiokafka.AIOKafkaConsumerThread, "seek", ("partition", "offset"), "a refused fetch is read again"),
    (faust_aiokafka.Producer, "_ensure_producer", (), "table writes and outputs sent as record batches"),
    (faust.App, "_new_transport", (), "the app's transport with the batching consumer"),
    (faust.App, "_new_web", (), "the web server without Faust's built-in views"),
    (faust.streams, "_current_event", None, "the partition a table write goes to"),
)
# set by Consumer.__init__: checked on every consumer built
CONSUMER_STATE: tuple[tuple[str, str], ...] = (
    ("_read_offset", "the last offset read per partition (skips re-read records, consumer lag)"),
    ("_committed_offset", "the committed offset per partition (acks below it are ignored, consumer lag)"),
    ("_acked", "the acked offsets per partition, which the commits advance over"),
    ("_acked_index", "the set of those offsets"),
    ("_n_acked", "acks since the last commit (commit_every)"),
    ("_commit_every", "Faust's broker_commit_every"),
    ("_buffered_partitions", "partitions whose records are fetched while paused"),
    ("_stopped", "the consumer's stop event"),
    ("_thread", "the consumer's thread (seeks run in it)"),
    ("callback", "Faust's delivery of a record to its topic's subscribers"),
    ("suspend_flow", "the event a rebalance sets before Faust clears the agents' queues"),
)
# the web server's views before it starts (Web.blueprints), and the memory store's key -> partition index
WEB_STATE = ("_enabled", "applied")
MEMORY_STORE_STATE = "_key_partition"


class FaustInternalsChanged(ImportError):
    """faust-streaming no longer has a member this module relies on (an upgrade): the message names it."""


def _changed(owner: Any, member: str, why: str, found: str) -> str:
    name = getattr(owner, "__qualname__", getattr(owner, "__name__", repr(owner)))
    return f"{name}.{member} ({why}): {found}"


def check_faust_internals() -> None:
    """Raise FaustInternalsChanged naming every listed member that is gone or takes other parameters."""
    problems = []
    for owner, member, params, why in FAUST_INTERNALS:
        if not hasattr(owner, member):
            problems.append(_changed(owner, member, why, "gone"))
            continue
        if params is None:
            continue
        try:
            found = tuple(inspect.signature(getattr(owner, member)).parameters)[1:]
        except (TypeError, ValueError):
            problems.append(_changed(owner, member, why, "no longer a function"))
            continue
        if found != params:
            problems.append(_changed(owner, member, why, f"takes {found}, expected {params}"))
    if problems:
        raise FaustInternalsChanged(_report(problems))


def missing_consumer_state(consumer: Any) -> None:
    """Raise FaustInternalsChanged naming every listed attribute a built consumer lacks."""
    problems = [_changed(type(consumer), member, why, "gone") for member, why in CONSUMER_STATE
                if not hasattr(consumer, member)]
    if problems:
        raise FaustInternalsChanged(_report(problems))


def _report(problems: list[str]) -> str:
    return (f"faust-streaming {getattr(faust, '__version__', '?')} changed members the worker relies on "
            f"(streams.worker.batching; pinned version in pyproject.toml): " + "; ".join(problems))


check_faust_internals()


def drop_builtin_views(web) -> None:
    """Unmount every built-in Faust view before the server starts; the app's own pages stay."""
    manager = getattr(web, "blueprints", None)
    enabled = getattr(manager, WEB_STATE[0], None)
    if not isinstance(enabled, list) or getattr(manager, WEB_STATE[1], True):
        raise FaustInternalsChanged("faust's Web.blueprints._enabled is gone or already applied (faust-streaming changed): "
                           "its built-in web views cannot be turned off; check the pinned faust-streaming version")
    enabled[:] = [(prefix, bp) for prefix, bp in enabled
                  if not (isinstance(bp, str) and bp.startswith(_FAUST_VIEWS_PACKAGE))]
