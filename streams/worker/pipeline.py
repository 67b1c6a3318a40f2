"""Topics, the account table, the batch handler, timers, the read model sink and the web views.

The hot path is one agent, `score_accounts`, that receives the input topics a fetched batch at a time
(see streams.worker.batching): the processor turns the batch into table writes and outputs; this
module writes the table, waits until the changelog has it, publishes the outputs, and only then
lets the offsets be acked.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time

from faust.web import Request, Response

from schemas.outputs import INSUFFICIENT_DATA, iso

from streams.worker.batching import HealthApp, RecordBatch, input_backlog, kafka_producer, put_table_value
from streams.worker.broker_watch import BrokerWatch
from streams.worker.control import ControlChannel, Snooze
from streams.worker.snoozes import Snoozes
from streams.sinks.kafka_batches import send_records
from streams.clock import Clock, supervised
from streams.core.model_loader import load_model
from streams.worker.metrics import HealthMetrics, consumer_lag, scan_partitions
from streams.text import printable
from streams.topics import CONTROL_TOPIC_CONFIG, SCORE_TOPIC_CONFIG, warn_unless_compacted
from streams.worker.processor import BatchResult, HealthProcessor, OutputTopics, partition_for
from streams.sinks.readmodel import ReadModel
from streams.sinks.readmodel_sink import ReadModelSink
from streams.settings import Settings

log = logging.getLogger(__name__)

GAUGES_SECONDS = 10.0  # how often the portfolio and consumer lag gauges are refreshed
# a worker is catching up (alerts held, bands tracked) until every input partition it owns is at most
# this many records from its end: at start, and after taking partitions over
CATCH_UP_RECORDS = 500
FLOOR_SECONDS = 2.0  # how soon after a batch of history its accounts' silence floors are evaluated
FLOORS_PER_RUN = 2000
FLOORS_PER_LOCK = 100  # up to 61 evaluations each (a floor after two months of silence): ~0.25 s a hold


class Pipeline:
    """Everything one worker runs; built by `register` on a fresh app."""

    def __init__(self, app: HealthApp, settings: Settings, metrics: HealthMetrics, clock: Clock):
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        topics = settings.topics
        n = settings.partitions
        self.kinds = topics.inputs()
        self.model = load_model(settings.model_path)
        self.model_mtime = _mtime(settings.model_path)
        self.snoozes = Snoozes()
        self.snooze_display_failing = False
        self.processor = HealthProcessor(self.model, OutputTopics(topics.scores, topics.alerts, topics.deadletter),
                                         self.kinds, n, settings.max_event_bytes, self.snoozes)
        self.processor.catching_up = True  # until the first check finds the backlog small
        # internal=True: the worker declares every topic with the configured partitions (co-partitioning)
        self.inputs = app.topic(*self.kinds, key_type=bytes, value_type=bytes, partitions=n, internal=True)
        # the score topic is compacted by account (after a week): a read model rebuild finds every latest score
        self.outputs = [app.topic(t, key_type=bytes, value_type=bytes, partitions=n, internal=True,
                                  config=SCORE_TOPIC_CONFIG if t == topics.scores else None)
                        for t in (topics.scores, topics.alerts, topics.deadletter)]
        # one partition, compacted: every worker reads all of it, and the latest valid model wins
        self.control = app.topic(topics.control, key_type=bytes, value_type=bytes, partitions=1, internal=True,
                                 config=CONTROL_TOPIC_CONFIG)
        # one TLS context for the worker's own clients (each call of client_options builds one)
        kafka_security = settings.kafka_security.client_options()
        self.control_channel = ControlChannel(settings.bootstrap_servers, topics.control,
                                              client_options=kafka_security,
                                              on_outcome=metrics.on_control_message,
                                              secret=settings.control_secret, on_snooze=self.on_snooze)
        self.table = app.Table("accounts", partitions=n, key_type=bytes, value_type=bytes)
        self.lock = asyncio.Lock()  # the batch handler and the timer must not interleave on one account
        self.caught_up_sweep: asyncio.Future | None = None  # kept: asyncio holds running tasks weakly
        self.anchor_topic = topics.usage  # the source topic table writes are attributed to
        self.read_model = ReadModel.from_settings(settings)
        # None: `health read-model` processes write Redis (HEALTH_READ_MODEL_SINK=separate)
        self.sink = (ReadModelSink.of(settings, self.read_model, metrics, kafka_security)
                     if settings.read_model_sink == "worker" else None)
        self.broker = BrokerWatch(settings.bootstrap_servers, topics.control,
                                  client_options=kafka_security)
        self.stopping = asyncio.Event()

    @property
    def changelog_topic(self) -> str:
        return self.table.changelog_topic.get_topic_name()

    # ------------------------------------------------------------------ hot path
    def settled(self, generation: int | None = None) -> bool:
        """No rebalance or table recovery under way (and still the given consumer generation):
        only then may this worker write the accounts of the partitions it owns."""
        app = self.app
        return (not app.rebalancing and not app.in_recovery and app.tables.recovery.completed.is_set()
                and (generation is None or app.consumer_generation_id == generation))

    def check_caught_up(self, batches: list[RecordBatch] = ()) -> None:
        """End the catch-up once the backlog (counting a fetch being processed in full) is small: from then
        on alerts are published. Before it, an account's state is built from its history topic by topic, and
        the moves between those partial states are no news to anyone."""
        consumer = self.app.consumer
        if not self.processor.catching_up or consumer is None or not self.settled():
            return
        first = {b.tp: b.records[0].offset for b in batches if b.records}
        backlog = input_backlog(consumer, self.kinds, first)
        if backlog <= CATCH_UP_RECORDS:
            self.processor.catching_up = False
            log.info("caught up with the input (%d records behind at most): alerts are published from here on",
                     backlog)
            # the silence floors the catch-up left pending, now rather than at the next timer run, as history
            self.processor.pending_floors.clear()
            self.caught_up_sweep = asyncio.ensure_future(self.reevaluate_owned("timer", historic=True))
            self.caught_up_sweep.add_done_callback(_log_failure)

    async def on_batch(self, batches: list[RecordBatch], generation: int) -> bool:
        started = self.clock.monotonic()
        self.check_caught_up(batches)
        async with self.lock:
            if not self.settled(generation):
                # fetched before a rebalance: the partitions may belong to another worker now;
                # refused, the records are read again: here after a seek back, or by their new owner
                return False
            now = self.clock.now()
            try:
                result = self.processor.process(((b.tp.topic, b.tp.partition, b.records) for b in batches),
                                                self._load, now)
            except Exception as err:  # noqa: BLE001 - a bug outside any one record: stall and say so, never exit
                log.error("a batch could not be processed (%s: %s); it is read again",
                          type(err).__name__, printable(str(err), 300), exc_info=True)
                await asyncio.sleep(5.0)
                return False
            if not await self.commit_or_undo(result):
                return False  # refused: read again after a seek back, with the table as it was
        self.metrics.on_batch(result, self.clock.monotonic() - started, self.clock.wall())
        return True

    def _load(self, account_id: str) -> bytes | None:
        return self.table.get(account_id.encode())

    async def commit_or_undo(self, result: BatchResult) -> bool:
        """Commit; if Kafka fails (the broker is away, a delivery timed out), put the table's values back
        as they were and say False: the batch is then read and processed again, so the changelog
        never misses a state the table holds and no event is acked unapplied."""
        before = {account_id: self.table.data.get(account_id.encode()) for account_id in result.writes}
        try:
            await self.commit(result)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as err:  # noqa: BLE001 - KafkaError and its kin: retried with the batch
            self.undo(result, before)
            self.metrics.on_commit_failure()
            log.warning("could not write a batch to Kafka (%s: %s); it is read and processed again",
                        type(err).__name__, printable(str(err), 200))
            await asyncio.sleep(1.0)
            return False

    def undo(self, result: BatchResult, before: dict[str, bytes | None]) -> None:
        """Put back the table values a failed commit had written; partitions revoked meanwhile are left
        to their new owner, which recovers them from the changelog."""
        owned = self.owned_partitions()
        for account_id, value in before.items():
            partition = result.writes[account_id][0]
            if partition in owned:
                self._put(account_id.encode(), partition, value)

    def _put(self, key: bytes, partition: int, value: bytes | None) -> None:
        put_table_value(self.table, self.anchor_topic, partition, key, value)

    def owned_partitions(self) -> set[int]:
        """The table partitions this worker owns actively."""
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == self.anchor_topic}

    async def commit(self, result: BatchResult) -> None:
        """Write the changelog, then the table, publish, then the store's offset; raises if Kafka refuses.

        A RocksDB store (rocksdb://) survives the worker, so it must never get ahead of the changelog:
        written before the changelog has them, states of a worker killed on the way would stay in the
        store, and the replayed events, duplicates of them, would never bring them to the changelog
        (another worker taking the partition would miss them). The stored offset, where a restart
        replays from, moves only once the outputs are out too, so the values `undo` puts back after a
        failed publication are replayed over at a restart. A store is at worst behind its changelog."""
        changelog_topic = self.changelog_topic
        changelog = [(changelog_topic, partition, account_id.encode(), value)
                     for account_id, (partition, value) in result.writes.items()]
        producer = kafka_producer(self.app)
        persisted = {}
        if changelog:
            for topic, partition, n, delivered in await send_records(producer, changelog):
                meta = await delivered
                persisted[meta.topic_partition] = meta.offset + n - 1
            # a partition revoked while Kafka had the batch is its new owner's, recovered from the changelog
            # (writing it would also reopen the RocksDB files of a partition this worker no longer owns)
            owned = self.owned_partitions()
            for _, partition, key, value in changelog:
                if partition in owned:
                    self._put(key, partition, value)
        outputs = [(o.topic, o.partition, o.key, o.value) for o in (*result.outputs, *result.dead_letters,
                                                                     *result.reroutes)]
        if outputs:
            await asyncio.gather(*(delivered for _, _, _, delivered in await send_records(producer, outputs)))
        if persisted:
            owned = self.owned_partitions()
            for tp, offset in persisted.items():
                if tp.partition in owned:  # as Table._on_changelog_sent does: a persistent store remembers
                    self.table.data.set_persisted_offset(tp, offset)

    # ------------------------------------------------------------------ time and model
    async def settle_floors(self) -> int:
        """The silence floors that batches of history left pending (see engine.apply_events), a few seconds
        after: one evaluation of the days since per account, however many batches brought its history. A
        floor can cost up to retention + 1 evaluations: at most FLOORS_PER_RUN accounts a run, the lock
        held for FLOORS_PER_LOCK at a time, so the batches go on between them."""
        pending = self.processor.pending_floors
        if not pending or self.processor.catching_up:
            return 0  # the end of a catch-up sweeps every account
        accounts = list(itertools.islice(pending, FLOORS_PER_RUN))
        for account_id in accounts:
            del pending[account_id]  # one not settled here (a rebalance, Kafka away) waits for the timer
        return await self.reevaluate_owned("timer", [a.encode() for a in accounts], chunk=FLOORS_PER_LOCK)

    async def reevaluate_owned(self, cause: str, keys: list[bytes] | None = None, *, historic: bool = False,
                               chunk: int = 1000) -> int:
        """Rescore the accounts of this worker's partitions (or of `keys`) whose windows slid, whose model
        changed or whose silence floor is pending, `chunk` accounts per hold of the lock. `historic`: their
        moves page nobody (the sweep that ends a catch-up)."""
        started = self.clock.monotonic()
        if not self.settled():  # during recovery a table holds old values: rescoring them would roll back
            return 0
        generation = self.app.consumer_generation_id
        owned = self.owned_partitions()
        if not owned:
            return 0
        # evaluated at a whole minute: a retried timer run after a crash computes the same outputs
        now = math.floor(self.clock.now() / 60) * 60
        n = self.settings.partitions
        rescored = 0
        if keys is None:
            keys = list(self.table.data.keys())
        for start in range(0, len(keys), chunk):
            async with self.lock:
                if not self.settled(generation):
                    break  # a rebalance started: the next run sweeps what this worker then owns
                result = BatchResult()
                # the score updates say when they were computed: the read model orders an account's score
                # history by it, and batches of events may have been scored since the sweep began
                computed_at = self.clock.now()
                for key in keys[start:start + chunk]:
                    account_id = key.decode()
                    partition = partition_for(account_id, n)
                    if partition not in owned:
                        continue
                    stored = self.table.data.get(key)
                    if stored is not None and self.processor.reevaluate(account_id, partition, stored, now, cause,
                                                                        result, historic, computed_at):
                        rescored += 1
                if not await self.commit_or_undo(result):
                    break  # Kafka is away: the next run sweeps again (the model stays in force meanwhile)
            self.metrics.on_batch(result, 0.0, self.clock.wall(), path=cause)
            await asyncio.sleep(0)
        self.metrics.on_rescore(cause, rescored, self.clock.monotonic() - started)
        return rescored

    # ------------------------------------------------------------------ gauges
    async def refresh_gauges(self) -> None:
        """Accounts per band and segment over this worker's active partitions, and consumer lag.
        The index follows the batches' score updates; a newly owned partition is scanned once."""
        self.check_caught_up()  # an idle input ends a catch-up too
        app = self.app
        if not self.settled() or app.consumer is None:
            return  # the table is complete only after recovery; on_assigned dropped the revoked partitions
        owned = self.owned_partitions()
        index = self.metrics.index
        index.retain(owned)
        missing = index.missing(owned)
        if missing and not await scan_partitions(index, self.table.data, missing, self.settings.partitions,
                                                 lambda: app.rebalancing):
            return
        self.metrics.active_partitions.set(len(owned))
        self.metrics.publish_portfolio()
        self.metrics.publish_lag(consumer_lag(app.consumer, self.kinds))
        self.metrics.gauges_refreshed.set(time.time())

    async def check_model_file(self) -> None:
        mtime = _mtime(self.settings.model_path)
        if mtime == self.model_mtime:
            return
        self.model_mtime = mtime
        try:  # a model at the limits takes about a second to build: not on the event loop
            model = await asyncio.to_thread(load_model, self.settings.model_path)
        except Exception as err:  # noqa: BLE001 - ModelError, OSError, or anything a hostile file causes
            self.metrics.model_errors.inc()
            log.error("model file refused, keeping version %s: %s", printable(self.model.version, 80),
                      printable(str(err), 2000))
            return
        await self.roll_out(model)

    async def load_control_model(self) -> None:
        """Before any event is consumed: the latest valid model of the control topic, if there is one,
        replaces the file's, so no score is ever published under a superseded model."""
        await warn_unless_compacted(self.settings.bootstrap_servers, self.settings.topics.control,
                                    "the model in force is deleted with it after the retention time",
                                    self.settings.kafka_security.client_options())
        model = await self.control_channel.load()
        if model is not None and model.fingerprint != self.model.fingerprint:
            self.use_model(model)

    async def on_snooze(self, snooze: Snooze, live: bool) -> None:
        """An operator's snooze (or its end) from the control topic: in force for the alerts of this worker at
        once, and shown with the account's record in Redis (best effort: Redis may be away)."""
        now = self.clock.now()
        taken = self.snoozes.apply(snooze, now)
        self.snoozes.expire(now)
        self.metrics.snoozed_accounts.set(len(self.snoozes))
        if not taken:
            return  # over the bound (logged): not in force, so not shown either
        if live:
            until = "ended" if snooze.until is None else f"until {iso(snooze.until)}"
            log.info("account %r snoozed %s: %s", printable(snooze.account_id, 80), until,
                     printable(snooze.reason, 200))
        elif self.snooze_display_failing or (snooze.until is not None and snooze.until <= now):
            return  # at start: Redis away (said once), or a lapsed snooze (its key expired with it)
        try:
            await self.read_model.set_snooze(snooze.account_id, snooze.until, snooze.reason, snooze.at, now)
            self.snooze_display_failing = False
        except Exception as err:  # noqa: BLE001 - Redis away: the snooze holds; only its display waits
            if not self.snooze_display_failing:  # once, not once per snooze of a long topic
                self.snooze_display_failing = True
                log.warning("could not show the snooze of %r in Redis (%s: %s); it is in force all the same",
                            printable(snooze.account_id, 80), type(err).__name__, printable(str(err), 200))

    def use_model(self, model) -> None:
        log.info("health model %s in use (was %s)", printable(model.version, 80), printable(self.model.version, 80))
        self.model = self.processor.model = model
        self.metrics.on_model(model)

    async def roll_out(self, model) -> None:
        if model.fingerprint == self.model.fingerprint:
            return
        self.use_model(model)
        try:
            await self.reevaluate_owned("model")
        except Exception as err:  # noqa: BLE001 - the timer sweeps the rest: the model fingerprint is stored
            log.error("rolling out model %s stopped (%s: %s); the timer rescores the rest",
                      printable(model.version, 80), type(err).__name__, printable(str(err), 200))

    async def check_copartitioning(self) -> None:
        """Refuse to start when an account-data topic has another partition count than the table:
        an account's events would then be read by one worker and its state kept by another."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**self.settings.kafka_options())
        await admin.start()
        try:
            names = [*self.kinds, self.settings.topics.scores, self.settings.topics.alerts]
            for _ in range(20):  # a topic created a moment ago may not show its partitions yet
                described = await admin.describe_topics(names)
                sizes = {t["topic"]: len(t["partitions"]) for t in described}
                if all(sizes.values()):
                    break
                await asyncio.sleep(0.5)
        finally:
            await admin.close()
        wrong = {topic: n for topic, n in sizes.items() if n != self.settings.partitions}
        if wrong:
            message = (f"topics {wrong} do not have HEALTH_PARTITIONS={self.settings.partitions} partitions: every "
                       f"topic keyed by account_id must have the table's partition count (co-partitioning); "
                       f"set HEALTH_PARTITIONS to match, or recreate the topics")
            log.critical(message)
            raise SystemExit(message)

def _log_failure(task: "asyncio.Future") -> None:
    if not task.cancelled() and task.exception() is not None:
        err = task.exception()
        log.error("rescoring after the catch-up stopped (%s: %s); the timer rescores the rest",
                  type(err).__name__, err)


def _mtime(path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def register(app: HealthApp, settings: Settings, metrics: HealthMetrics, clock: Clock) -> Pipeline:
    pipeline = Pipeline(app, settings, metrics, clock)
    app.declared_topics = (pipeline.inputs, *pipeline.outputs, pipeline.control)
    app.startup_checks = (pipeline.check_copartitioning, pipeline.load_control_model)
    metrics.on_model(pipeline.model)

    @app.agent(app.fetched_batches(pipeline.inputs))
    async def score_accounts(fetches) -> None:
        """The input events, a fetched batch of every partition at a time: scored, committed, then acked."""
        async for fetch in fetches:
            await fetch.handle(pipeline.on_batch)

    @app.timer(interval=settings.reevaluate_seconds, on_leader=False)
    async def reevaluate_accounts() -> None:
        pipeline.check_caught_up()
        await pipeline.reevaluate_owned("timer")

    @app.timer(interval=5.0)
    async def watch_model_file() -> None:
        await pipeline.check_model_file()

    @app.timer(interval=FLOOR_SECONDS)
    async def settle_floors() -> None:
        await pipeline.settle_floors()

    @app.timer(interval=GAUGES_SECONDS)
    async def refresh_gauges() -> None:
        await pipeline.refresh_gauges()

    @app.on_partitions_assigned.connect
    async def partitions_assigned(app, assigned, **kwargs) -> None:
        metrics.on_assigned({tp.partition for tp in assigned if tp.topic == pipeline.anchor_topic})
        if any(tp.topic in pipeline.kinds for tp in assigned):
            pipeline.processor.catching_up = True  # partitions taken over may come with a backlog

    if pipeline.sink is not None:
        @app.task
        async def read_model_sink() -> None:
            await supervised("the read model sink", lambda: pipeline.sink.run(pipeline.stopping), pipeline.stopping)

    @app.task
    async def control_topic() -> None:
        await supervised("the control topic reader",
                         lambda: pipeline.control_channel.follow(pipeline.stopping, pipeline.roll_out), pipeline.stopping)

    @app.task
    async def watch_broker() -> None:
        await supervised("the broker watch", lambda: pipeline.broker.run(pipeline.stopping), pipeline.stopping)

    @app.on_before_shutdown.connect
    async def stop(app, **kwargs) -> None:
        pipeline.stopping.set()

    _register_views(app, pipeline)
    return pipeline


def _register_views(app: HealthApp, pipeline: Pipeline) -> None:
    read_model = pipeline.read_model

    @app.page("/health/live")
    async def live(web, request: Request) -> Response:
        return web.json({"status": "live"})

    @app.page("/health/ready")
    async def ready(web, request: Request) -> Response:
        """Ready: Kafka reachable, partitions owned, no rebalance or recovery under way. Redis is reported,
        not required (scoring goes on without it)."""
        reasons = []
        if not pipeline.broker.reachable:
            reasons.append("kafka unreachable")
        if app.consumer is None or not app.assignor.assigned_actives():
            reasons.append("no partitions assigned")
        if not pipeline.settled():
            reasons.append("rebalancing or recovering")
        body = {"status": "not ready" if reasons else "ready", "kafka": pipeline.broker.reachable,
                "model_version": pipeline.model.version}
        if pipeline.sink is not None:  # else Redis is the read-model processes' to report
            body["redis"] = pipeline.sink.redis_ok
        if reasons:
            body["reasons"] = reasons
        return web.json(body, status=503 if reasons else 200)

    @app.page("/accounts/{account_id}")
    async def account(web, request: Request, account_id: str) -> Response:
        record = await read_model.account(account_id)
        if record is None:
            return web.json({"error": f"no score for account {account_id!r}"}, status=404)
        return web.json(record)

    @app.page("/bands")
    async def bands(web, request: Request) -> Response:
        names = [b.name for b in pipeline.model.bands] + [INSUFFICIENT_DATA]  # scored, with too little data
        return web.json({"model_version": pipeline.model.version, "bands": await read_model.band_counts(names)})

    @app.page("/metrics")
    async def metrics(web, request: Request) -> Response:
        body, _ = pipeline.metrics.exposition()
        # aiohttp refuses a charset inside content_type; Prometheus' text format is UTF-8 anyway
        return web.bytes(body, content_type="text/plain; version=0.0.4")
