"""streams.sinks.kafka_batches through the real broker: records split over as many batches as the
producer's batch size needs, in order per partition; a record no batch can hold is refused."""
from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer

from streams.sinks.kafka_batches import send_records
from tests.harness import consume, create_topics

pytestmark = pytest.mark.broker


def test_records_arrive_in_order_per_partition_across_several_batches(stack, unique):
    topic = f"{unique}.out"
    asyncio.run(create_topics(stack.bootstrap, [topic], 2))
    records = [(topic, i % 2, f"k{i}".encode(), (f"{i:05d}" + "x" * 1000).encode()) for i in range(60)]

    async def send():
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, max_batch_size=16 * 1024)
        await producer.start()
        try:
            sent = await send_records(producer, records)
            metas = [await delivered for *_, delivered in sent]
        finally:
            await producer.stop()
        return sent, metas

    sent, metas = asyncio.run(send())
    assert len(sent) > 2  # 30 records of 1 KB per partition do not fit one 16 KB batch
    assert sum(n for _, _, n, _ in sent) == 60
    got = asyncio.run(consume(stack.bootstrap, topic, until=lambda rs: len(rs) >= 60))
    for partition in (0, 1):
        values = [r.value[:5].decode() for r in sorted(got, key=lambda r: r.offset) if r.partition == partition]
        assert values == [f"{i:05d}" for i in range(partition, 60, 2)]
    # a batch's future gives the offset of its first record (the worker records first + n - 1 as the
    # changelog offset its store holds): per partition, each batch starts where the previous ended
    for partition in (0, 1):
        batches = [(meta.offset, n) for (_, p, n, _), meta in zip(sent, metas) if p == partition]
        assert [first for first, _ in batches] == [sum(n for _, n in batches[:i]) for i in range(len(batches))]


def test_a_record_larger_than_the_batch_size_goes_in_a_batch_of_its_own(stack, unique):
    topic = f"{unique}.out"
    asyncio.run(create_topics(stack.bootstrap, [topic], 1))
    big = b"x" * 40_000

    async def send():
        producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, max_batch_size=16 * 1024)
        await producer.start()
        try:
            sent = await send_records(producer, [(topic, 0, b"a", b"small"), (topic, 0, b"b", big),
                                                 (topic, 0, b"c", b"after")])
            await asyncio.gather(*(delivered for *_, delivered in sent))
        finally:
            await producer.stop()
        return sent

    assert [n for _, _, n, _ in asyncio.run(send())] == [1, 1, 1]
    got = sorted(asyncio.run(consume(stack.bootstrap, topic, until=lambda rs: len(rs) >= 3)), key=lambda r: r.offset)
    assert [(r.key, r.value) for r in got] == [(b"a", b"small"), (b"b", big), (b"c", b"after")]
