"""Topics and agents of the worker. Agents stay thin: decode, hand to the core, send what it returns."""
from __future__ import annotations

import faust
import orjson
import redis.asyncio as aioredis

from schemas.events import InvalidEvent, decode_event
from streams.settings import Settings


def register(app: faust.App, settings: Settings) -> None:
    topics = settings.topics
    kinds = topics.inputs()
    # internal=True: the worker declares its topics with the configured partitions (co-partitioning)
    inputs = app.topic(*kinds, key_type=bytes, value_type=bytes, partitions=settings.partitions, internal=True)
    deadletter = app.topic(topics.deadletter, key_type=bytes, value_type=bytes, partitions=settings.partitions,
                           internal=True)
    redis = aioredis.from_url(settings.redis_url)
    prefix = settings.redis_prefix

    @app.agent(inputs, name="events")
    async def events(stream):
        async for message_event in stream.events():
            message = message_event.message
            try:
                event = decode_event(message_event.value, kinds.get(message.topic))
            except InvalidEvent as err:
                await deadletter.send(key=message_event.key, value=orjson.dumps({
                    "topic": message.topic, "partition": message.partition, "offset": message.offset,
                    "reason": str(err), "raw": message_event.value.decode("utf-8", "replace"),
                }))
                continue
            await redis.hset(f"{prefix}:seen:{event.account_id}",
                             mapping={"event_id": event.event_id, "occurred_at": event.occurred_at})
