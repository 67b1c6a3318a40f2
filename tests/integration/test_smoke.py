"""First end-to-end path: events produced with aiokafka, a worker started as a user starts it, Redis."""
from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from schemas.outputs import iso
from tests.harness import Worker, consume, produce, wait_for

pytestmark = pytest.mark.broker


def test_event_is_scored_into_redis_and_bad_input_reaches_deadletter(stack, worker_env, unique, redis_client,
                                                                     tmp_path):
    good = {"event_id": "e-1", "account_id": "acme", "occurred_at": iso(time.time() - 3600), "name": "login",
            "user_id": "u-1"}
    asyncio.run(produce(stack.bootstrap, f"{unique}.usage", [(b"acme", good), (b"acme", b"{not json")]))

    with Worker(worker_env, tmp_path, "--without-web") as worker:
        raw = wait_for(lambda: redis_client.hget(f"{unique}:account:acme", "record") or not worker.alive(), 90,
                       what="the worker to write acme's score to Redis")
        assert worker.alive(), worker.report()
        record = orjson.loads(raw)
        assert record["account_id"] == "acme" and record["seq"] == 1 and record["event_ids"] == ["e-1"]
        assert 0 <= record["score"] <= 100 and record["band"] in {"Healthy", "At Risk", "Needs Attention"}
        assert redis_client.sismember(f"{unique}:band:{record['band']}", "acme")

        dead = asyncio.run(consume(stack.bootstrap, f"{unique}.deadletter", until=lambda r: len(r) >= 1))
        letter = orjson.loads(dead[0].value)
        assert letter["topic"] == f"{unique}.usage" and letter["offset"] == 1
        assert letter["raw"] == "{not json" and "JSON" in letter["reason"]
