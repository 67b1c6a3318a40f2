"""The Redis read model through the real broker and Redis: rebuilt after Redis lost its data (with no new
update, and with new updates for some accounts), and the backlog gauge counting the updates waiting."""
from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import urllib.request
from collections import Counter

import pytest
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from streams.core import load_model, score_all
from streams.settings import DEFAULT_MODEL
from tests.conftest import PARTITIONS
from tests.harness import Worker, free_port, wait_for
from tests.integration.pipeline_helpers import (NOW, clock_file, deliveries, event_log, latest_scores, publish,
                                                read_all, wait_until_equal)

pytestmark = pytest.mark.broker

BANDS = [band.name for band in load_model(DEFAULT_MODEL).bands]


# ---------------------------------------------------------------------------------------- helpers
def samples(port: int) -> list | None:
    """The samples of the worker's /metrics (None while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def metric(port: int, name: str, **labels) -> float | None:
    """One sample of the worker's /metrics (None if the worker does not answer or lacks it)."""
    for sample in samples(port) or ():
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    return None


def consumed(port: int) -> float | None:
    """Input records the worker has finished (outputs published), from its outcome counters: each record
    ends in exactly one outcome (a re-routed one is counted again where it lands, so that one is left out)."""
    found = samples(port)
    return None if found is None else sum(s.value for s in found if s.name == "health_events_total"
                                          and s.labels.get("outcome") != "rerouted")


def topic_size(bootstrap: str, topic: str) -> int:
    """Records on the topic now: the sum of its partitions' end offsets (nothing is compacted or deleted here)."""
    async def ends():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            end = await consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
            return sum(end.values())
        finally:
            await consumer.stop()

    return asyncio.run(ends())


def read_model_problems(client: redis.Redis, prefix: str, latest: dict[str, dict]) -> list[str]:
    """How Redis differs from the latest score update of every account on the topic (empty when equal):
    each account's seq, score and band, the band counts and the ranking's size."""
    problems = []
    pipe = client.pipeline(transaction=False)
    for account in latest:
        pipe.hmget(f"{prefix}:account:{account}", "seq", "score", "band")
    for band in BANDS:
        pipe.scard(f"{prefix}:band:{band}")
    pipe.zcard(f"{prefix}:ranking")
    rows = pipe.execute()
    for (account, record), (seq, score, band) in zip(latest.items(), rows):
        want = (str(record["seq"]), "" if record["score"] is None else str(record["score"]), record["band"] or "")
        if (seq, score, band) != want:
            problems.append(f"{account}: redis {(seq, score, band)} topic {want}")
    counts = dict(zip(BANDS, rows[len(latest):]))
    expected = Counter(r["band"] for r in latest.values() if r["band"])
    if counts != {band: expected.get(band, 0) for band in BANDS}:
        problems.append(f"band counts: redis {counts} topic {dict(expected)}")
    ranked = rows[-1]
    if ranked != sum(1 for r in latest.values() if r["score"] is not None):
        problems.append(f"ranking holds {ranked} accounts")
    return problems


def wait_until_redis_matches_topic(bootstrap: str, client: redis.Redis, prefix: str, timeout: float,
                                   alive=lambda: True) -> dict[str, dict]:
    """Until Redis equals the latest update of every account on the score topic (read again each time)."""
    state = {}

    def matches() -> bool:
        assert alive(), "the worker died"
        state["latest"] = latest_scores(read_all(bootstrap, f"{prefix}.scores", idle_ms=300))
        state["problems"] = read_model_problems(client, prefix, state["latest"])
        return bool(state["latest"]) and not state["problems"]

    try:
        wait_for(matches, timeout, interval=0.5, what="Redis to equal the score topic")
    except AssertionError as err:
        raise AssertionError(f"{err}: {len(state.get('problems', []))} differences, "
                             f"first: {state.get('problems', [])[:5]}") from None
    return state["latest"]


def lose_data(client: redis.Redis, prefix: str) -> int:
    """Redis loses everything of this test: every key of its prefix, in one DEL (as a restart would)."""
    keys = list(client.scan_iter(f"{prefix}:*", count=1000))
    return client.delete(*keys) if keys else 0


def start_redis(port: int, workdir) -> subprocess.Popen:
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    try:
        wait_for(lambda: _pings(client), 10, what="the test's own redis-server")
    finally:
        client.close()
    return server


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        server.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


def scored_env(worker_env, tmp_path, **extra) -> dict[str, str]:
    return {**worker_env, "HEALTH_CLOCK_FILE": str(clock_file(tmp_path)), **extra}


# ---------------------------------------------------------------------------------------- rebuilds
def test_the_read_model_is_rebuilt_after_redis_lost_its_data(stack, worker_env, unique, redis_client, tmp_path):
    events = event_log(accounts=120, days=30, seed=41)
    twin = score_all(events, load_model(DEFAULT_MODEL), NOW)
    arrivals = deliveries(events, seed=42)
    publish(stack.bootstrap, unique, arrivals)
    port = free_port()
    with Worker(scored_env(worker_env, tmp_path, HEALTH_WEB_PORT=str(port)), tmp_path) as worker:
        wait_until_equal(stack.bootstrap, f"{unique}.scores", twin, timeout=120, alive=worker.alive)
        wait_for(lambda: consumed(port) == len(arrivals), 60, what="every event consumed: no more updates to come")
        before = wait_until_redis_matches_topic(stack.bootstrap, redis_client, unique, 60, worker.alive)
        updates = topic_size(stack.bootstrap, f"{unique}.scores")
        assert lose_data(redis_client, unique) > len(before)  # no new event arrives from here on

        after = wait_until_redis_matches_topic(stack.bootstrap, redis_client, unique, 60, worker.alive)
        assert after == before and topic_size(stack.bootstrap, f"{unique}.scores") == updates
        assert wait_for(lambda: metric(port, "health_read_model_backlog") == 0, 30, what="no backlog")
        assert metric(port, "health_read_model_rebuilds_total", reason="lost") >= 1
        assert metric(port, "health_read_model_rebuilding_partitions") == 0
        status, bands = _get_json(port, "/bands")
        assert status == 200 and sum(bands["bands"].values()) == sum(1 for r in after.values() if r["band"])
        assert worker.alive()  # rebuilt in place, no restart
    log = worker.log()
    assert "Redis lost the projection; rebuilding it" in log and "rebuild done" in log, log[-3000:]
    markers = {k: redis_client.hget(k, "state") for k in redis_client.scan_iter(f"{unique}:readmodel:p*")}
    assert markers and set(markers.values()) == {"built"}


def test_the_read_model_is_rebuilt_when_new_updates_arrive_for_some_accounts_after_the_loss(
        stack, worker_env, unique, redis_client, tmp_path):
    events = event_log(accounts=120, days=30, seed=43)
    twin = score_all(events, load_model(DEFAULT_MODEL), NOW)
    publish(stack.bootstrap, unique, deliveries(events, seed=44))
    with Worker(scored_env(worker_env, tmp_path), tmp_path, "--without-web") as worker:
        wait_until_equal(stack.bootstrap, f"{unique}.scores", twin, timeout=120, alive=worker.alive)
        before = wait_until_redis_matches_topic(stack.bootstrap, redis_client, unique, 60, worker.alive)
        updated = sorted(before)[:10]
        assert lose_data(redis_client, unique) > len(before)

        # new activity of ten accounts right after the loss: their new scores flow while the rest is gone
        fresh = [dataclasses.replace(e, account_id=updated[int(e.account_id.rsplit("-", 1)[1])],
                                     event_id=f"late-{e.event_id}")
                 for e in event_log(accounts=len(updated), days=3, seed=45, usage_per_day=12)]
        publish(stack.bootstrap, unique, fresh)
        wait_for(lambda: any(r["seq"] > before[r["account_id"]]["seq"]
                             for r in latest_scores(read_all(stack.bootstrap, f"{unique}.scores", idle_ms=300)).values()
                             if r["account_id"] in before),
                 60, what="new score updates for the accounts with new events")

        after = wait_until_redis_matches_topic(stack.bootstrap, redis_client, unique, 60, worker.alive)
        assert set(after) == set(before)
        assert {a for a in after if after[a]["seq"] != before[a]["seq"]} <= set(updated)
        assert worker.alive()


# ---------------------------------------------------------------------------------------- backlog
def test_the_backlog_gauge_counts_the_updates_waiting_for_redis(stack, worker_env, unique, tmp_path):
    redis_port, web_port = free_port(), free_port()  # nothing listens on redis_port yet: Redis is away
    env = scored_env(worker_env, tmp_path, HEALTH_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
                     HEALTH_WEB_PORT=str(web_port))
    scores = f"{unique}.scores"
    model = load_model(DEFAULT_MODEL)
    first = event_log(accounts=60, days=20, seed=47)
    arrivals = deliveries(first, seed=48)
    publish(stack.bootstrap, unique, arrivals)
    server = None
    try:
        with Worker(env, tmp_path) as worker:
            # scoring goes on without Redis; every update it publishes waits for the read model
            wait_until_equal(stack.bootstrap, scores, score_all(first, model, NOW), timeout=120, alive=worker.alive)
            wait_for(lambda: consumed(web_port) == len(arrivals), 60, what="every event consumed")
            waiting = topic_size(stack.bootstrap, scores)  # final: no more updates to come
            assert waiting >= 60  # at least one update per account
            wait_for(lambda: metric(web_port, "health_read_model_backlog") == waiting, 60,
                     what=f"the backlog gauge to count the {waiting} updates waiting")
            assert topic_size(stack.bootstrap, scores) == waiting

            server = start_redis(redis_port, tmp_path)  # Redis arrives: the sink catches up
            client = redis.Redis(port=redis_port, decode_responses=True)
            wait_until_redis_matches_topic(stack.bootstrap, client, unique, 60, worker.alive)
            wait_for(lambda: metric(web_port, "health_read_model_backlog") == 0, 30, what="the backlog back to 0")

            # Redis goes away again, and with it its data (no persistence); new accounts are scored meanwhile
            stop(server)
            client.close()
            second = event_log(accounts=30, days=20, seed=49)
            more = deliveries(second, seed=50)
            publish(stack.bootstrap, unique, more)
            wait_until_equal(stack.bootstrap, scores, score_all(second, model, NOW), timeout=120,
                             alive=worker.alive, only=lambda a: a.startswith("acct-49-"))
            wait_for(lambda: consumed(web_port) == len(arrivals) + len(more), 60, what="every new event consumed")
            new = topic_size(stack.bootstrap, scores) - waiting  # Redis had everything up to `waiting`
            assert new >= 30
            wait_for(lambda: metric(web_port, "health_read_model_backlog") == new, 60,
                     what=f"the backlog gauge to count the {new} new updates waiting")

            # Redis returns empty: the sink notices its markers are gone and rebuilds everything
            server = start_redis(redis_port, tmp_path)
            client = redis.Redis(port=redis_port, decode_responses=True)
            latest = wait_until_redis_matches_topic(stack.bootstrap, client, unique, 60, worker.alive)
            client.close()
            assert len(latest) == 90
            wait_for(lambda: metric(web_port, "health_read_model_backlog") == 0, 30, what="the backlog back to 0")
            assert metric(web_port, "health_read_model_rebuilds_total", reason="lost") >= 1
            assert worker.alive()
        log = worker.log()
        assert log.count("Redis read model reachable again") == 2, log[-3000:]  # once per outage, not per retry
        assert 1 <= log.count("Redis read model unavailable") <= 2
    finally:
        if server is not None:
            stop(server)


def _get_json(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, json.loads(response.read())


def test_a_read_model_process_of_its_own_writes_redis_for_workers_that_run_no_sink(stack, worker_env, unique,
                                                                                   redis_client, tmp_path):
    events = event_log(accounts=40, days=30, seed=51)
    twin = score_all(events, load_model(DEFAULT_MODEL), NOW)
    arrivals = deliveries(events, seed=52)
    publish(stack.bootstrap, unique, arrivals)
    port, sink_port = free_port(), free_port()
    env = scored_env(worker_env, tmp_path, HEALTH_WEB_PORT=str(port), HEALTH_READ_MODEL_SINK="separate")
    with Worker(env, tmp_path) as worker:
        wait_until_equal(stack.bootstrap, f"{unique}.scores", twin, timeout=120, alive=worker.alive)
        wait_for(lambda: consumed(port) == len(arrivals), 60, what="every event consumed: no more updates to come")
        # the worker runs no sink: nothing of this test's reaches Redis
        assert metric(port, "health_read_model_updates_total") == 0
        assert not list(redis_client.scan_iter(f"{unique}:account:*"))
        status, ready = _get_json(port, "/health/ready")
        assert status == 200 and ready["status"] == "ready" and "redis" not in ready

        sink = Worker({**env, "HEALTH_WEB_PORT": str(sink_port)}, tmp_path, name="read-model", command="read-model")
        with sink:
            latest = wait_until_redis_matches_topic(stack.bootstrap, redis_client, unique, 60, sink.alive)
            assert {a for a, r in latest.items() if r["score"] is not None} == {
                a for a, s in twin.items() if s.score is not None}
            assert wait_for(lambda: metric(sink_port, "health_read_model_backlog") == 0, 30, what="no backlog")
            assert metric(sink_port, "health_read_model_updates_total") >= len(latest)
            status, bands = _get_json(port, "/bands")  # the worker's read API reads what the sink wrote
            assert status == 200 and sum(bands["bands"].values()) == sum(1 for r in latest.values() if r["band"])
        assert sink.proc.returncode == 0, sink.report()
        assert worker.alive(), worker.report()
    assert "read model sink stopped" in sink.log(), sink.report()


def test_records_on_the_score_topic_that_are_not_score_updates_do_not_stall_the_sink(stack, worker_env, unique,
                                                                                      redis_client, tmp_path):
    """Redis refuses these (a null account, a boolean seq, a score that is text): skipped, not retried forever."""
    from tests.harness import produce

    strays = [{"account_id": None, "seq": True, "computed_at_ms": 1}, {"account_id": "stray", "seq": 1,
              "computed_at_ms": 1, "score": "n/a"}, {"account_id": "stray", "seq": "1", "computed_at_ms": 1},
              [1, 2], b"\xff"]
    asyncio.run(produce(stack.bootstrap, f"{unique}.scores",
                        [(b"stray", s if isinstance(s, bytes) else json.dumps(s).encode()) for s in strays]))
    events = event_log(accounts=20, days=10, seed=47)
    twin = {a: s for a, s in score_all(events, load_model(DEFAULT_MODEL), NOW).items() if s.score is not None}
    publish(stack.bootstrap, unique, deliveries(events, seed=48))

    def in_redis():
        pipe = redis_client.pipeline(transaction=False)
        for account in twin:
            pipe.hmget(f"{unique}:account:{account}", "score", "band")
        return {a: tuple(row) for a, row in zip(twin, pipe.execute())}

    want = {a: (str(s.score), s.band) for a, s in twin.items()}
    with Worker(scored_env(worker_env, tmp_path), tmp_path, "--without-web") as worker:
        wait_for(lambda: in_redis() == want or not worker.alive(), 90, what="every account in Redis")
        assert worker.alive() and in_redis() == want
        assert redis_client.hget(f"{unique}:account:stray", "seq") is None
    assert worker.log().count("skipped a record that is not a score update") == len(strays)
