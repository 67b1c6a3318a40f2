"""Many records to one topic partition, produced as one Kafka record batch.

aiokafka's `send()` costs a future, a metadata lookup and an accumulator append per record:
about 100 µs of the worker's CPU per table write plus score update, as long as the scoring
itself (measured on the end-to-end benchmark). The worker knows every record of a batch, and
each record's partition, before it sends any: `create_batch()` + `send_batch()` cost one
future per partition instead. Ordering within a partition is Kafka's as usual.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata


async def send_records(producer: AIOKafkaProducer, records: Iterable[tuple[str, int, bytes | None, bytes]]
                       ) -> list[tuple[str, int, int, "asyncio.Future[RecordMetadata]"]]:
    """Queue (topic, partition, key, value) records as batches, in order per partition.
    Returns (topic, partition, records in the batch, delivery future) per batch; await the futures."""
    by_tp: dict[tuple[str, int], list[tuple[bytes | None, bytes]]] = defaultdict(list)
    for topic, partition, key, value in records:
        by_tp[(topic, partition)].append((key, value))
    sent = []
    for (topic, partition), items in by_tp.items():
        batch, n = producer.create_batch(), 0
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                sent.append((topic, partition, n, await producer.send_batch(batch, topic, partition=partition)))
                batch, n = producer.create_batch(), 0
                # an empty batch takes a record of any size (the broker's message size limit still holds)
                batch.append(key=key, value=value, timestamp=None)
            n += 1
        sent.append((topic, partition, n, await producer.send_batch(batch, topic, partition=partition)))
    return sent
