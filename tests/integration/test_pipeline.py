"""The product's main property through the real broker and Redis: the stream equals the batch twin,
across arrival order, duplicate deliveries, worker crashes and a second worker."""
from __future__ import annotations

import random
import time
import urllib.request

import orjson
import pytest

from streams.core import load_model, score_all
from streams.settings import DEFAULT_MODEL
from tests.conftest import PARTITIONS
from tests.harness import Worker, free_port, wait_for
from tests.integration.pipeline_helpers import (NOW, clock_file, deliveries, event_log, publish, read_all,
                                                wait_until_equal)

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def model():
    return load_model(DEFAULT_MODEL)


def env_for(worker_env, tmp_path) -> dict[str, str]:
    return {**worker_env, "HEALTH_CLOCK_FILE": str(clock_file(tmp_path))}


def assert_read_model_matches(redis_client, prefix: str, twin) -> None:
    for account, expected in twin.items():
        raw = redis_client.hget(f"{prefix}:account:{account}", "record")
        if expected.score is None:
            assert raw is None
            continue
        record = orjson.loads(raw)
        assert (record["score"], record["band"]) == (expected.score, expected.band), account
    counts = {band.name: redis_client.scard(f"{prefix}:band:{band.name}") for band in load_model(DEFAULT_MODEL).bands}
    assert sum(counts.values()) == sum(1 for s in twin.values() if s.score is not None)


def test_stream_equals_the_batch_twin_in_kafka_and_redis(stack, worker_env, unique, redis_client, tmp_path, model):
    events = event_log(accounts=150, days=40, seed=1)
    twin = score_all(events, model, NOW)
    publish(stack.bootstrap, unique, deliveries(events, seed=2))
    with Worker(env_for(worker_env, tmp_path), tmp_path, "--without-web") as worker:
        wait_until_equal(stack.bootstrap, f"{unique}.scores", twin, timeout=120, alive=worker.alive)
        deadline = time.monotonic() + 60
        while True:  # the read model follows the score topic
            try:
                assert_read_model_matches(redis_client, unique, twin)
                break
            except (AssertionError, TypeError, ValueError):  # Redis may still be a moment behind the topic
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    assert len(events) > 5000


def test_killed_and_restarted_worker_still_ends_equal_to_the_twin(stack, worker_env, unique, tmp_path, model):
    events = event_log(accounts=200, days=40, seed=3)
    twin = score_all(events, model, NOW)
    arrivals = deliveries(events, seed=4)
    env = env_for(worker_env, tmp_path)
    rng = random.Random(5)
    waves = 4
    size = len(arrivals) // waves + 1
    for wave in range(waves):  # produce while the worker is being killed, so kills land mid-batch
        publish(stack.bootstrap, unique, arrivals[wave * size:(wave + 1) * size])
        worker = Worker(env, tmp_path, "--without-web", name=f"worker-{wave}").start()
        time.sleep(rng.uniform(4.0, 9.0))
        worker.kill()  # SIGKILL: no flush, no commit, no goodbye
    with Worker(env, tmp_path, "--without-web", name="worker-final") as worker:
        records = wait_until_equal(stack.bootstrap, f"{unique}.scores", twin, timeout=180, alive=worker.alive)
    alerts = read_all(stack.bootstrap, f"{unique}.alerts")
    by_id: dict[str, dict] = {}
    for alert in alerts:
        assert by_id.setdefault(alert["id"], alert) == alert, f"alert {alert['id']} published with two contents"
    by_seq: dict[tuple, dict] = {}
    for record in records:
        key = (record["account_id"], record["seq"])
        assert by_seq.setdefault(key, record) == record, f"score update {key} published with two contents"


def active_partitions(port: int) -> float | None:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    values = [float(line.split()[-1]) for line in body.splitlines() if line.startswith("health_active_partitions ")]
    return values[0] if values else None


def test_two_workers_split_the_partitions_and_together_match_the_twin(stack, worker_env, unique, tmp_path, model):
    events = event_log(accounts=150, days=30, seed=6)
    twin = score_all(events, model, NOW)
    env = env_for(worker_env, tmp_path)
    ports = free_port(), free_port()
    with Worker({**env, "HEALTH_WEB_PORT": str(ports[0])}, tmp_path, name="worker-a") as a, \
            Worker({**env, "HEALTH_WEB_PORT": str(ports[1])}, tmp_path, name="worker-b") as b:
        time.sleep(8)  # both in the group before the events arrive
        publish(stack.bootstrap, unique, deliveries(events, seed=7))
        wait_until_equal(stack.bootstrap, f"{unique}.scores", twin, timeout=150,
                         alive=lambda: a.alive() and b.alive())
        # each owns some of the partitions, and together all of them
        # (the gauges refresh every ten seconds: a reading may still predate the last rebalance)
        wait_for(lambda: (lambda p: None not in p and sum(p) == PARTITIONS and min(p) >= 1)(
            [active_partitions(port) for port in ports]), 60, what="both workers to own partitions")
