"""Publish events to the input topics: the producer side of demos, replays and benchmarks.

Each event goes to the topic of its kind (``settings.topics``), keyed by its account id so all
of an account's events land in one partition, in order (the workers' co-partitioning relies
on it); the value is the contract's JSON (:func:`schemas.events.encode_event`).

Two ways to send, chosen per run:

- bulk (no pacing): events are appended to one aiokafka batch per topic-partition and a batch
  is handed over when full. This skips aiokafka's per-message future and bookkeeping, which
  is most of the cost of ``send()``: about 3x the throughput on the local broker.
- paced (``rate``, or ``(send_at, event)`` items): each event is sent on its own with
  ``send()`` and goes out within ``linger_ms``, since batching would delay it.

Either way at most ``window`` events are awaiting acknowledgement (the oldest delivery is
awaited first), plus the open batches (one per topic-partition), so memory stays bounded however many events there are, and the report's elapsed time ends
when the broker has acknowledged the last event.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from schemas.events import Event, encode_event

from streams.connections import start_client
from streams.settings import Settings

__all__ = ["PublishReport", "publish", "topic_of_kind"]

_PARTITIONER = DefaultPartitioner()


@dataclass(frozen=True)
class PublishReport:
    counts: dict[str, int] = field(default_factory=dict)  # events sent per kind
    elapsed: float = 0.0  # seconds from the first send to the last acknowledgement

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.total / self.elapsed if self.elapsed > 0 else 0.0


def topic_of_kind(settings: Settings) -> dict[str, str]:
    """Event kind -> input topic name."""
    return {kind: topic for topic, kind in settings.topics.inputs().items()}


async def publish(events: Iterable[Event | tuple[float, Event]], settings: Settings, *,
                  rate: float | None = None, progress: Callable[[int], None] | None = None,
                  progress_every: int = 10_000, clock: Any = time, linger_ms: int = 5,
                  window: int = 10_000, **producer_options: Any) -> PublishReport:
    """Send every event and wait until all are delivered; return counts per kind and the time.

    ``events`` may hold ``(send_at, event)`` pairs instead (as :func:`streams.tools.simulator.live`
    yields; the first item decides): each is sent no earlier than ``send_at`` by
    ``clock.time()``. ``rate``: at most this many events per second on average, by
    ``clock.monotonic()``. ``progress(sent)`` is called every ``progress_every`` events and
    once at the end. ``producer_options`` go to AIOKafkaProducer.
    Delivery failures raise (aiokafka's KafkaError) after the producer is closed.
    """
    if rate is not None and not rate > 0:
        raise ValueError(f"rate: expected events per second > 0, got {rate}")
    items = iter(events)
    first = next(items, None)
    if first is None:
        return PublishReport({}, 0.0)
    items = itertools.chain([first], items)
    paired = isinstance(first, tuple)
    options = {"linger_ms": linger_ms, "max_batch_size": 256 * 1024, **producer_options}
    producer = AIOKafkaProducer(**settings.kafka_options(), **options)
    await start_client(producer)
    outbox = _Outbox(producer, topic_of_kind(settings), bulk=rate is None and not paired, window=window)
    counts: Counter[str] = Counter()
    sent = 0
    try:
        began = clock.monotonic()
        for item in items:
            if paired:
                send_at, event = item
                delay = send_at - clock.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                event = item
            if rate is not None:
                # Pace against the schedule, not the previous send, so jitter does not add up;
                # tiny delays are skipped because sleeping costs more than it saves.
                delay = began + sent / rate - clock.monotonic()
                if delay > 0.002:
                    await asyncio.sleep(delay)
            await outbox.put(event)
            counts[event.kind] += 1
            sent += 1
            if progress is not None and sent % progress_every == 0:
                progress(sent)
        await outbox.drain()
        elapsed = clock.monotonic() - began
    finally:
        await producer.stop()
    if progress is not None and sent % progress_every:
        progress(sent)
    return PublishReport(dict(counts), elapsed)


class _Outbox:
    """Routes events to their topic-partition and keeps the pending deliveries bounded."""

    def __init__(self, producer: AIOKafkaProducer, topics: dict[str, str], *, bulk: bool, window: int):
        self.producer = producer
        self.topics = topics
        self.bulk = bulk
        self.window = max(1, window)
        self.pending: deque[tuple[asyncio.Future, int]] = deque()  # (delivery, events in it)
        self.in_flight = 0  # events handed to the producer and not yet acknowledged
        self.routes: dict[tuple[str, str], tuple[int, bytes]] = {}  # (topic, account) -> (partition, key)
        self.batches: dict[tuple[str, int], Any] = {}  # open batch per topic-partition (bulk)

    async def put(self, event: Event) -> None:
        topic = self.topics[event.kind]
        route = self.routes.get((topic, event.account_id))
        if route is None:
            route = self.routes[topic, event.account_id] = await self._route(topic, event.account_id)
        partition, key = route
        value = encode_event(event)
        if not self.bulk:
            await self._track(await self.producer.send(topic, value, key=key, partition=partition), 1)
            return
        batch = self.batches.get((topic, partition))
        if batch is None:
            batch = self.batches[topic, partition] = self.producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:  # full: hand it over
            await self._submit(topic, partition, batch)
            batch = self.batches[topic, partition] = self.producer.create_batch()
            batch.append(key=key, value=value, timestamp=None)

    async def drain(self) -> None:
        """Hand over the open batches and wait for every delivery."""
        for (topic, partition), batch in self.batches.items():
            await self._submit(topic, partition, batch)
        self.batches.clear()
        while self.pending:
            await self._settle_oldest()

    async def _submit(self, topic: str, partition: int, batch: Any) -> None:
        n = batch.record_count()
        batch.close()
        await self._track(await self.producer.send_batch(batch, topic, partition=partition), n)

    async def _track(self, future: asyncio.Future, n: int) -> None:
        self.pending.append((future, n))
        self.in_flight += n
        while self.in_flight > self.window:
            await self._settle_oldest()

    async def _settle_oldest(self) -> None:
        future, n = self.pending.popleft()
        await future
        self.in_flight -= n

    async def _route(self, topic: str, account_id: str) -> tuple[int, bytes]:
        # The murmur2 partitioner of aiokafka and the Java clients, so co-partitioning holds
        # whoever produces; computed once per account and topic instead of per message.
        key = account_id.encode()
        partitions = sorted(await self.producer.partitions_for(topic))
        return _PARTITIONER(key, partitions, partitions), key
