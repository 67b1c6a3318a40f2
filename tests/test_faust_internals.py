"""The worker's contact with faust-streaming internals (streams.worker.batching): every member it relies on
exists in the pinned version, an upgrade that changes one fails loudly naming it, and the hand-off of a
fetch to the agent keeps its promise (each fetch acked once processed, never lost to a rebalance).
No broker: the consumer is built, not started."""
from __future__ import annotations

import asyncio

import faust
import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.utils.locks import Event
from mode.utils.queues import FlowControlEvent

from streams.worker import batching
from streams.worker.batching import (BatchingConsumer, FaustInternalsChanged, FetchedBatch, HealthApp, RecordBatch,
                                     check_faust_internals, missing_consumer_state, put_table_value)


def test_the_pinned_faust_has_every_member_the_worker_relies_on():
    check_faust_internals()
    assert faust.__version__ == "0.15.3"
    for owner, member, params, _ in batching.FAUST_INTERNALS:
        assert hasattr(owner, member), member


@pytest.mark.parametrize("owner, member", [(faust_aiokafka.Consumer, "_add_gap"),
                                           (faust_aiokafka.Consumer, "_drain_messages"),
                                           (faust.App, "_new_web"),
                                           (faust.streams, "_current_event")])
def test_a_member_gone_in_an_upgrade_is_named(monkeypatch, owner, member):
    # deleted where it is defined (a consumer's members come from Faust's base classes)
    defined_in = next((c for c in getattr(owner, "__mro__", ()) if member in vars(c)), owner)
    monkeypatch.delattr(defined_in, member)
    with pytest.raises(FaustInternalsChanged, match=rf"\.{member} \(.*\): gone"):
        check_faust_internals()


def test_a_member_whose_parameters_changed_is_named(monkeypatch):
    async def _wait_next_records(self, timeout, *, max_records=None):  # an upgrade adding a keyword: fine
        return None, None

    monkeypatch.setattr(faust_aiokafka.Consumer, "_wait_next_records", _wait_next_records)
    with pytest.raises(FaustInternalsChanged, match="_wait_next_records"):
        check_faust_internals()

    async def _add_gap(self, tp, offsets):
        return None

    monkeypatch.undo()
    monkeypatch.setattr(faust_aiokafka.Consumer, "_add_gap", _add_gap)
    with pytest.raises(FaustInternalsChanged, match=r"Consumer\._add_gap .*takes \('tp', 'offsets'\)"):
        check_faust_internals()


def _app(name: str = "internals-test") -> HealthApp:
    return HealthApp(name, broker="kafka://127.0.0.1:1", store="memory://", key_serializer="raw",
                     value_serializer="raw")


def test_a_built_consumer_has_the_state_the_fetch_loop_reads():
    consumer = _app().consumer
    assert isinstance(consumer, BatchingConsumer)
    missing_consumer_state(consumer)
    for member, _ in batching.CONSUMER_STATE:
        assert hasattr(consumer, member), member
    del consumer._acked_index
    with pytest.raises(FaustInternalsChanged, match=r"_acked_index \(the set of those offsets\): gone"):
        missing_consumer_state(consumer)


def test_a_seek_back_that_a_rebalance_overtakes_does_not_stop_the_fetch_loop(monkeypatch, caplog):
    # seen in CI: a partition revoked between Faust listing the committed offsets and seeking it
    from aiokafka.errors import IllegalStateError

    consumer = _app().consumer
    sought = []

    async def seek_to_committed():
        sought.append(True)
        raise IllegalStateError("No current assignment for partition TopicPartition(topic='t.usage', partition=1)")

    monkeypatch.setattr(consumer, "seek_to_committed", seek_to_committed)
    asyncio.run(consumer.seek_back_to_committed())
    assert sought  # through Faust's own perform_seek
    assert "seek to the committed offsets during a rebalance failed (IllegalStateError" in caplog.text

    async def moved():
        return {TP("t.usage", 1): 42}

    monkeypatch.setattr(consumer, "seek_to_committed", moved)
    asyncio.run(consumer.seek_back_to_committed())
    assert consumer._read_offset[TP("t.usage", 1)] == 42 and consumer._committed_offset[TP("t.usage", 1)] == 42


def test_table_writes_land_in_their_partition_and_the_memory_stores_index():
    app = _app()
    table = app.Table("accounts", partitions=4, key_type=bytes, value_type=bytes)
    put_table_value(table, "t.usage", 3, b"acme", b"v1")
    assert table.data[b"acme"] == b"v1"
    assert getattr(table.data, batching.MEMORY_STORE_STATE)[b"acme"] == 3
    put_table_value(table, "t.usage", 3, b"acme", None)
    assert b"acme" not in table.data and b"acme" not in getattr(table.data, batching.MEMORY_STORE_STATE)
    put_table_value(table, "t.usage", 3, b"acme", None)  # deleting twice is not an error


def test_an_app_has_one_channel_of_fetched_batches():
    app = _app()
    topic = app.topic("a", "b")
    channel = app.fetched_batches(topic)
    assert app.fetch_channel is channel and app.batch_topics == {"a", "b"}
    with pytest.raises(RuntimeError, match="one channel"):
        app.fetched_batches(app.topic("c"))


# ---------------------------------------------------------------- the hand-off, with a stand-in channel
class _Channel:
    def __init__(self, subscribers: int = 1):
        self.subscriber_count = subscribers
        self.queue: asyncio.Queue = asyncio.Queue()

    async def put(self, fetch) -> None:
        self.queue.put_nowait(fetch)


class _Consumer:
    """What BatchingConsumer.deliver reads of its consumer."""

    deliver = BatchingConsumer.deliver

    def __init__(self):
        self.app = type("App", (), {})()
        self.app.flow_control = FlowControlEvent(initially_suspended=False)
        self.suspend_flow = Event()


def _batches() -> list[RecordBatch]:
    return [RecordBatch(TP("t", 0), [object()])]


def test_a_fetch_is_acked_only_when_the_agent_processed_it():
    async def run():
        consumer, channel = _Consumer(), _Channel()
        seen = []

        async def handler(batches, generation):
            seen.append(generation)
            return generation == 1

        async def agent():
            while True:
                await (await channel.queue.get()).handle(handler)

        task = asyncio.ensure_future(agent())
        try:
            return (await consumer.deliver(channel, _batches(), 1), await consumer.deliver(channel, _batches(), 2),
                    seen)
        finally:
            task.cancel()

    assert asyncio.run(run()) == (True, False, [1, 2])


def test_a_handler_that_raises_refuses_the_fetch_and_the_agent_goes_on():
    async def run():
        consumer, channel = _Consumer(), _Channel()

        async def handler(batches, generation):
            raise ValueError("a bug")

        delivered = asyncio.ensure_future(consumer.deliver(channel, _batches(), 1))
        await asyncio.sleep(0)
        await (await channel.queue.get()).handle(handler)  # does not raise
        return await delivered

    assert asyncio.run(run()) is False


def test_no_fetch_is_handed_over_without_exactly_one_agent_or_while_the_flow_is_suspended():
    async def run():
        consumer = _Consumer()
        results = [await consumer.deliver(_Channel(subscribers=0), _batches(), 1),
                   await consumer.deliver(_Channel(subscribers=2), _batches(), 1)]
        channel = _Channel()
        consumer.app.flow_control.suspend()
        results.append(await consumer.deliver(channel, _batches(), 1))
        return results, channel.queue.qsize()

    assert asyncio.run(run()) == ([False, False, False], 0)


def test_a_rebalance_before_the_agent_takes_a_fetch_abandons_it_after_it_waits_for_it():
    async def run():
        consumer, channel = _Consumer(), _Channel()
        calls = []

        async def handler(batches, generation):
            calls.append(generation)
            await asyncio.sleep(0.01)
            return True

        # not taken yet when the rebalance starts: refused (read again), and the agent skips it later
        delivered = asyncio.ensure_future(consumer.deliver(channel, _batches(), 1))
        await asyncio.sleep(0)
        consumer.suspend_flow.set()
        refused = await delivered
        await (await channel.queue.get()).handle(handler)
        consumer.suspend_flow.clear()
        # taken before the rebalance starts: its outcome is awaited (the handler fences it by generation)
        delivered = asyncio.ensure_future(consumer.deliver(channel, _batches(), 2))
        await asyncio.sleep(0)
        handled = asyncio.ensure_future((await channel.queue.get()).handle(handler))
        await asyncio.sleep(0)
        consumer.suspend_flow.set()
        accepted = await delivered
        await handled
        return refused, accepted, calls

    assert asyncio.run(run()) == (False, True, [2])


def test_fetched_batch_outcome_is_set_once():
    async def run():
        fetch = FetchedBatch(_batches(), 1, asyncio.get_running_loop().create_future())

        async def ok(batches, generation):
            return True

        await fetch.handle(ok)
        await fetch.handle(ok)  # a second handling does nothing
        return fetch.outcome.result(), fetch.taken

    assert asyncio.run(run()) == (True, True)
