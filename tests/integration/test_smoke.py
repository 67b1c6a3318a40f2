"""First end-to-end path: an event produced with aiokafka, a worker started as a user starts it, Redis."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import orjson
import pytest

from tests.harness import Worker, consume, produce, wait_for

pytestmark = pytest.mark.broker


def test_event_reaches_redis_and_bad_input_reaches_deadletter(stack, worker_env, unique, redis_client, tmp_path):
    good = {"event_id": "e-1", "account_id": "acme", "occurred_at": "2026-11-20T10:00:00Z", "name": "login"}
    asyncio.run(produce(stack.bootstrap, f"{unique}.usage", [(b"acme", good), (b"acme", b"{not json")]))

    with Worker(worker_env, tmp_path, "--without-web") as worker:
        seen = wait_for(lambda: redis_client.hgetall(f"{unique}:seen:acme") or not worker.alive(), 90,
                        what="the worker to record the event in Redis")
        assert worker.alive(), worker.log()[-3000:]
        occurred = datetime(2026, 11, 20, 10, tzinfo=timezone.utc).timestamp()
        assert seen == {"event_id": "e-1", "occurred_at": str(occurred)}

        dead = asyncio.run(consume(stack.bootstrap, f"{unique}.deadletter", until=lambda r: len(r) >= 1))
        letter = orjson.loads(dead[0].value)
        assert letter["topic"] == f"{unique}.usage" and letter["offset"] == 1
        assert letter["raw"] == "{not json" and "JSON" in letter["reason"]
