"""Nothing a producer sends stops a worker: thousands of hostile records through the real broker and a
real worker, interleaved with valid events. The worker never exits, every record is counted once by
outcome, every refusal has its dead letter, and every valid event is scored (stream == batch twin)."""
from __future__ import annotations

import asyncio
import random
import urllib.request

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from schemas.events import UsageEvent, encode_event
from streams.core import load_model, score_all
from streams.core.state import STATE_LIMITS
from streams.worker.processor import partition_for
from streams.settings import DEFAULT_MODEL
from tests.conftest import PARTITIONS
from tests.harness import Worker, free_port, wait_for
from tests.integration import hostile
from tests.integration.pipeline_helpers import (NOW, TOPIC_SUFFIX, clock_file, deliveries, event_log, read_all,
                                                wait_until_equal)

pytestmark = pytest.mark.broker


def events_total(port: int) -> dict[str, float] | None:
    """health_events_total summed over kinds, by outcome."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    totals: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith("health_events_total{"):
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            totals[outcome] = totals.get(outcome, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


async def produce_raw(bootstrap: str, records: list[tuple[str, int, bytes | None, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=2 * 1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key, partition=partition)
                   for topic, partition, key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def test_a_worker_survives_thousands_of_hostile_records_and_scores_every_valid_event(stack, worker_env, unique,
                                                                                   tmp_path):
    rng = random.Random(20261202)
    model = load_model(DEFAULT_MODEL)
    topic = lambda suffix: f"{unique}.{suffix}"
    home = lambda account: partition_for(account, PARTITIONS)

    # valid events: typical accounts, and accounts whose ids carry control characters and other scripts
    valid = event_log(accounts=30, days=20, seed=11)
    for account in ("acct-\n\x1b[31mred", "acct-日本-\u2028"):
        valid += [UsageEvent(f"{account}-{i}", account, NOW - i * 3600, "login", f"u{i % 3}") for i in range(20)]
    twin = score_all(valid, model, NOW)
    stream = [(topic(TOPIC_SUFFIX[e.kind]), home(e.account_id), e.account_id.encode(), encode_event(e))
              for e in deliveries(valid, seed=12)]

    hostile_records = []
    for suffix, key, value, expected in hostile.designed(NOW, rng):
        account_home = home("hostile-1")
        partition = (account_home + 1) % PARTITIONS if expected == "rerouted" else rng.randrange(PARTITIONS)
        hostile_records.append(((topic(suffix), partition, key, value), expected))
    names = STATE_LIMITS.event_names + 40
    for value in hostile.many_names("acct-many-names", NOW, names):
        hostile_records.append(((topic("usage"), home("acct-many-names"), b"acct-many-names", value), None))
    seeds = hostile.fuzz_events(40, NOW, rng)
    mutated = hostile.mutations(seeds, rng, 1500)
    for value in mutated:
        hostile_records.append(((topic("usage"), rng.randrange(PARTITIONS), b"fuzz", value), None))
    designed_bad = sum(1 for _, expected in hostile_records if expected == "dead_lettered")
    mutated_bad = sum(1 for value in mutated if hostile.mutation_is_invalid(value, "usage"))

    # the hostile records interleaved with the valid ones (whose order stays as delivered)
    records = list(stream)
    for record, _ in hostile_records:
        records.insert(rng.randrange(len(records) + 1), record)
    assert len(records) > 4000

    port = free_port()
    env = {**worker_env, "HEALTH_CLOCK_FILE": str(clock_file(tmp_path)), "HEALTH_WEB_PORT": str(port)}
    with Worker(env, tmp_path) as worker:
        wait_for(lambda: events_total(port) is not None or not worker.alive(), 60, what="the worker's metrics")
        asyncio.run(produce_raw(stack.bootstrap, records))

        def all_counted():
            totals = events_total(port) or {}
            # a re-routed record is counted as re-routed, then again when its copy is read on its partition
            return sum(totals.values()) == len(records) + totals.get("rerouted", 0) or not worker.alive()

        wait_for(all_counted, 240, interval=1, what="every record to be counted")
        assert worker.alive(), worker.report()
        totals = events_total(port)
        assert totals["dead_lettered"] == designed_bad + mutated_bad, totals
        assert totals["over_limit"] == names - STATE_LIMITS.event_names, totals
        assert totals["rerouted"] >= 1, totals

        wait_until_equal(stack.bootstrap, topic("scores"), twin, timeout=120, alive=worker.alive,
                         only=lambda account: account in twin)

        letters = read_all(stack.bootstrap, topic("deadletter"))
        assert len(letters) == totals["dead_lettered"] + totals["over_limit"] + totals["future"]
        assert max(len(orjson.dumps(letter)) for letter in letters) < 64 * 1024
        assert all(letter["reason"] and letter["raw_sha256"] for letter in letters)
        assert worker.alive()
    log = worker.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 500:][:3000]
    assert "\x1b[31m" not in log  # ids with control characters are escaped wherever they are logged
