"""Fixtures: the real local stack (used if running, else started and stopped again) and unique names."""
from __future__ import annotations

import asyncio
import os
import subprocess

import pytest
import redis

from streams.topics import CONTROL_TOPIC_CONFIG, SCORE_TOPIC_CONFIG
from tests.harness import STACK, Stack, create_topics, delete_topics, unique_name

PARTITIONS = 4  # per test topic: enough to exercise partitioning, cheap to create and recover


@pytest.fixture(scope="session")
def stack() -> Stack:
    """Kafka and Redis on loopback: the running ones, or ones this session starts with ops/stack."""
    current = Stack.from_env()
    if current.answers():
        yield current
        return
    started = subprocess.run([str(STACK), "up"], capture_output=True, text=True)
    if started.returncode != 0:
        pytest.fail(f"ops/stack up failed:\n{started.stdout}{started.stderr}")
    yield current
    if not os.environ.get("HEALTH_KEEP_STACK"):
        subprocess.run([str(STACK), "down"], capture_output=True)


@pytest.fixture
def unique(request) -> str:
    """A prefix for this test's topics, consumer group (app id) and Redis keys."""
    return unique_name(request.node.name)


@pytest.fixture
def redis_client(stack: Stack):
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def worker_env(stack: Stack, unique: str):
    """Environment for a worker isolated by unique names: its own group, topics and Redis keys.
    Its topics are created first, as an operator would: a test consumer that subscribes to a topic
    before the worker declared it would otherwise have the broker create it with its default size."""
    keyed = ("usage", "tickets", "surveys", "accounts", "alerts", "deadletter")
    asyncio.run(create_topics(stack.bootstrap, [f"{unique}.{t}" for t in keyed], PARTITIONS))
    asyncio.run(create_topics(stack.bootstrap, [f"{unique}.scores"], PARTITIONS, SCORE_TOPIC_CONFIG))
    asyncio.run(create_topics(stack.bootstrap, [f"{unique}.control"], 1, CONTROL_TOPIC_CONFIG))
    yield {
        "HEALTH_APP_ID": unique,
        "HEALTH_KAFKA_BROKER": stack.broker_url,
        "HEALTH_REDIS_URL": stack.redis_url,
        "HEALTH_TOPIC_PREFIX": f"{unique}.",
        "HEALTH_REDIS_PREFIX": unique,
        "HEALTH_PARTITIONS": str(PARTITIONS),
    }
    try:  # the test's topics go with it (its workers have stopped); best effort: a broker may be away
        asyncio.run(asyncio.wait_for(delete_topics(stack.bootstrap, unique), 30))
    except Exception:  # noqa: BLE001 - a topic left behind costs only disk
        pass
