"""Behaviour a customer-success team relies on, through the real broker and Redis: decay on the
clock alone, hysteresis and cooldown, bad input, and a Redis outage."""
from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import time
from datetime import datetime

import orjson
import pytest
import redis

from schemas.events import AccountEvent, UsageEvent, encode_event
from schemas.outputs import iso
from streams.core import load_model, score_all
from streams.core.days import DAY
from streams.settings import DEFAULT_MODEL
from streams.worker.processor import partition_for
from tests.conftest import PARTITIONS
from tests.harness import Worker, free_port, produce, wait_for
from tests.integration.pipeline_helpers import NOW, clock_file, event_log, publish, read_topic, wait_until_equal

pytestmark = pytest.mark.broker

ADOPTION = {"logins_per_user", "seat_activation", "feature_adoption", "usage_trend", "login_recency"}


def scores_of(bootstrap: str, topic: str, account: str, at_least: int, timeout: float = 60) -> list[dict]:
    """The account's score updates, once there are at least `at_least` of them."""
    def enough(records):
        return sum(1 for r in records if orjson.loads(r.value)["account_id"] == account) >= at_least
    records = read_topic(bootstrap, topic, until=enough, timeout=timeout)
    return [r for r in records if r["account_id"] == account]


def test_an_account_that_goes_quiet_degrades_on_the_timer_and_the_alert_names_usage(stack, worker_env, unique,
                                                                                      tmp_path):
    model = load_model(DEFAULT_MODEL)
    events = event_log(accounts=30, days=40, seed=11, usage_per_day=30)
    now_scores = score_all(events, model, NOW)
    later = NOW + 21 * DAY
    later_scores = score_all(events, model, later)
    quiet = sorted(a for a, s in now_scores.items()
                   if s.band == "Healthy" and later_scores[a].score < 70 - model.alerts.band_change.margin_points)
    assert quiet, "the event log must hold healthy accounts that decay within three weeks"
    account = quiet[0]
    clock = clock_file(tmp_path)
    publish(stack.bootstrap, unique, sorted((e for e in events if e.account_id == account),
                                            key=lambda e: e.occurred_at))
    env = {**worker_env, "HEALTH_CLOCK_FILE": str(clock), "HEALTH_REEVALUATE_SECONDS": "1"}
    with Worker(env, tmp_path, "--without-web") as worker:
        expected = now_scores[account].score
        first = read_topic(stack.bootstrap, f"{unique}.scores", timeout=60,
                           until=lambda rs: any(orjson.loads(r.value)["score"] == expected for r in rs))
        assert first[-1]["band"] == "Healthy" and first[-1]["score"] == expected
        for day in range(1, 22):  # three quiet weeks pass, one day at a time, no new event
            clock.write_text(repr(NOW + day * DAY + 30.5))  # the timer evaluates at the minute (NOW + day * DAY)
            time.sleep(1.5)
        alerts = read_topic(stack.bootstrap, f"{unique}.alerts", timeout=60,
                            until=lambda rs: any(orjson.loads(r.value)["type"] == "health.band.degraded" for r in rs))
        assert worker.alive(), worker.report()
    degraded = [a for a in alerts if a["type"] == "health.band.degraded" and a["subject"] == account]
    assert len(degraded) == 1
    data = degraded[0]["data"]
    assert data["band_before"] == "Healthy" and data["score_after"] < data["score_before"]
    assert ADOPTION & {c["component"] for c in data["explanation"]}, data["explanation"]
    updates = scores_of(stack.bootstrap, f"{unique}.scores", account, len(first) + 1)
    assert all(u["cause"] == "timer" for u in updates[len(first):])
    # but its score updates say when they were computed (the read model orders the score history by it)
    assert {u["computed_at_ms"] % 60_000 for u in updates[len(first):]} == {30_500}


def test_hysteresis_and_cooldown_raise_one_alert_for_a_wobbling_score(stack, worker_env, unique, tmp_path):
    model_file = tmp_path / "model.yaml"
    model_file.write_text(
        "version: wobble-1\n"
        "measures:\n  rating: {type: attribute, attribute: csm_rating}\n"
        "components:\n  rating: {measure: rating, scoring: {type: max, max: 100}, weight: 1}\n"
        "alerts:\n  band_change: {margin_points: 3, cooldown_seconds: 3600}\n")
    env = {**worker_env, "HEALTH_MODEL": str(model_file), "HEALTH_CLOCK_FILE": str(clock_file(tmp_path))}
    # around the Healthy boundary (70) by less than the margin, then through it twice within the cooldown
    ratings = [80, 69, 71, 68, 72, 69, 66, 71, 72, 68, 80, 60]
    with Worker(env, tmp_path, "--without-web"):
        for i, rating in enumerate(ratings):
            event = AccountEvent(f"r{i}", "wobbly", NOW - 3600 + i, {"csm_rating": rating})
            asyncio.run(produce(stack.bootstrap, f"{unique}.accounts", [(b"wobbly", encode_event(event))]))
            updates = scores_of(stack.bootstrap, f"{unique}.scores", "wobbly", i + 1)  # one evaluation each
            assert updates[-1]["score"] == rating
    time.sleep(2)  # let any further (wrong) alert arrive before reading them all
    alerts = read_topic(stack.bootstrap, f"{unique}.alerts", timeout=30, until=lambda rs: len(rs) >= 2)
    # 66 is the first score below 70 - 3: one degraded alert; 80 (>= 73) recovers; 60 falls again
    # inside the one-hour cooldown of the degraded alert: held back, not raised again
    assert [(a["type"], a["data"]["score_after"]) for a in alerts] == [
        ("health.band.degraded", 66.0), ("health.band.recovered", 80.0)]


def test_bad_input_goes_to_the_dead_letter_topic_and_the_worker_stays_up(stack, worker_env, unique, tmp_path):
    now = time.time()
    good = [UsageEvent(f"g{i}", f"acct-{i}", now - 600, "login", "u1") for i in range(5)]
    bad = {
        "not json": b"\x00\x01 binary",
        "missing event_id": orjson.dumps({"account_id": "x", "occurred_at": iso(now), "name": "login"}),
        "wrong type": orjson.dumps({"event_id": "w", "account_id": "x", "occurred_at": iso(now), "name": "session",
                                    "value": "long"}),
        "far future": orjson.dumps({"event_id": "f", "account_id": "x", "occurred_at": "2099-01-01T00:00:00Z",
                                    "name": "login"}),
        "unknown kind": orjson.dumps({"kind": "webinar", "event_id": "k", "account_id": "x",
                                      "occurred_at": iso(now), "name": "login"}),
        "oversized": orjson.dumps({"event_id": "o", "account_id": "x", "occurred_at": iso(now), "name": "login",
                                   "padding": "x" * 100_000}),
    }
    records = []
    for i, value in enumerate(bad.values()):
        records += [(b"x", value), (good[i % len(good)].account_id.encode(), encode_event(good[i % len(good)]))]
    asyncio.run(produce(stack.bootstrap, f"{unique}.usage", records))
    with Worker(worker_env, tmp_path, "--without-web") as worker:
        letters = read_topic(stack.bootstrap, f"{unique}.deadletter", until=lambda rs: len(rs) >= len(bad),
                             timeout=90)
        scored = read_topic(stack.bootstrap, f"{unique}.scores", until=lambda rs: len(rs) >= len(good), timeout=60)
        time.sleep(1)
        assert worker.alive(), worker.report()
    assert len(letters) == len(bad)
    letters.sort(key=lambda letter: letter["offset"])
    reasons = [letter["reason"] for letter in letters]
    assert "JSON" in reasons[0] and reasons[1].startswith("event_id") and reasons[2].startswith("value")
    assert reasons[3].startswith("occurred_at") and reasons[4].startswith("kind") and "bytes" in reasons[5]
    assert all(letter["topic"] == f"{unique}.usage" for letter in letters)
    assert {letter["partition"] for letter in letters} == {partition_for("x", PARTITIONS)}
    assert len({letter["offset"] for letter in letters}) == len(bad)
    # the raw value as it came (its first 8 KiB; the whole value's size and hash)
    assert [letter["raw"] for letter in letters[1:]] == [v[:8192].decode() for v in list(bad.values())[1:]]
    assert [letter["raw_bytes"] for letter in letters] == [len(v) for v in bad.values()]
    assert letters[-1]["raw_truncated"] and letters[-1]["raw_sha256"] == hashlib.sha256(bad["oversized"]).hexdigest()
    assert letters[0]["raw_encoding"] == "utf-8"  # NUL and \x01 are valid UTF-8
    assert {s["account_id"] for s in scored} == {e.account_id for e in good}


def test_scoring_goes_on_while_redis_is_away_and_the_read_model_catches_up(stack, worker_env, unique, tmp_path):
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port, decode_responses=True)
    try:
        wait_for(lambda: _pings(client), 10, what="the test's own redis-server")
        env = {**worker_env, "HEALTH_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
        now = time.time()
        with Worker(env, tmp_path, "--without-web") as worker:
            publish(stack.bootstrap, unique, [UsageEvent("b1", "before", now - 60, "login", "u1")])
            wait_for(lambda: client.hget(f"{unique}:account:before", "seq"), 60, what="the first score in Redis")
            os.kill(server.pid, signal.SIGSTOP)  # Redis stops answering (connections hang)
            try:
                publish(stack.bootstrap, unique, [UsageEvent(f"d{i}", f"during-{i}", now - 30, "login", "u1")
                                                  for i in range(20)])
                during = read_topic(stack.bootstrap, f"{unique}.scores", timeout=60,
                                    until=lambda rs: len(rs) >= 21)  # scored and published meanwhile
                assert {r["account_id"] for r in during} >= {f"during-{i}" for i in range(20)}
                time.sleep(6)  # long enough for the sink's writes to time out and back off
            finally:
                os.kill(server.pid, signal.SIGCONT)
            wait_for(lambda: all(client.hget(f"{unique}:account:during-{i}", "seq") for i in range(20)), 60,
                     what="the read model to catch up after Redis returned")
            assert worker.alive()
        assert "Redis read model unavailable" in worker.log()
    finally:
        client.close()
        server.terminate()
        server.wait(10)


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


def test_replayed_history_pages_nobody_and_every_alert_is_explained(stack, worker_env, unique, tmp_path):
    """Issue 11, finding 1: 45 days of history published to a worker whose clock is at NOW (a demo's start, a
    backfill). Moves inside the history are tracked and counted as held back, never published; the alerts the
    last days raise are about the present and each explains itself."""
    from tests.integration.test_read_model import metric

    model = load_model(DEFAULT_MODEL)
    margin = model.alerts.band_change.margin_points
    horizon = model.alerts.history_horizon_seconds
    events = event_log(accounts=40, days=45, seed=32)
    phases = [[e for e in events if e.occurred_at < NOW - 25 * DAY],
              [e for e in events if NOW - 25 * DAY <= e.occurred_at < NOW - 2 * DAY],
              [e for e in events if e.occurred_at >= NOW - 2 * DAY]]
    first, second = score_all(phases[0], model, NOW), score_all(phases[0] + phases[1], model, NOW)

    def must_move(before: float, after: float) -> bool:
        """The alerted band is surely band_of(before) (no boundary within the margin) and after leaves it."""
        i = next(k for k, b in enumerate(model.bands) if before >= b.min)
        low, high = model.bands[i].min, model.bands[i - 1].min if i else None
        sure = before - low >= margin and (high is None or high - before > margin)
        return sure and (after < low - margin or (high is not None and after >= high + margin))

    assert any(must_move(first[a].score, second[a].score) for a in first if first[a].score is not None
               and second[a].score is not None), "the history must move some account's band between the phases"
    port = free_port()
    # no timer sweep within the test: the silence floors each phase leaves pending (accounts whose newest
    # event is days old) must be settled by the worker's prompt pass for them, or the twin is not reached
    env = {**worker_env, "HEALTH_CLOCK_FILE": str(clock_file(tmp_path)), "HEALTH_REEVALUATE_SECONDS": "3600"}
    seen: list[dict] = []
    with Worker(env, tmp_path, "--web-port", str(port)) as worker:
        for n, phase in enumerate(phases):
            publish(stack.bootstrap, unique, sorted(phase, key=lambda e: e.occurred_at))
            twin = score_all([e for p in phases[:n + 1] for e in p], model, NOW)
            wait_until_equal(stack.bootstrap, f"{unique}.scores", twin, timeout=120, alive=worker.alive)
            time.sleep(1.0)  # alerts are published with the scores; let the last ones land
            settle = time.monotonic() + 3  # everything on the alert topic by then
            alerts = read_topic(stack.bootstrap, f"{unique}.alerts", timeout=30,
                                until=lambda rs: time.monotonic() > settle)
            if n < 2:  # history only: nothing published, the moves counted
                assert alerts == [], [(a["type"], a["time"]) for a in alerts]
            seen = alerts
        held = metric(port, "health_alerts_held_back_total")
        assert worker.alive(), worker.report()
    assert held is not None and held >= 1
    for alert in seen:
        assert alert["data"]["explanation"], alert
        occurred = datetime.fromisoformat(alert["time"].replace("Z", "+00:00")).timestamp()
        assert occurred >= NOW - horizon - 1, alert  # about the present: the newest event behind it is recent


def test_a_worker_starting_on_a_backlog_pages_nobody_until_it_has_caught_up(stack, worker_env, unique, tmp_path):
    """Issue 11, finding 1, the demo's start: 45 days published before the worker starts, the last of them
    recent. The worker reads the topics side by side, so an account's state passes through partial states
    (its usage up to day 20 with all its surveys, say): moves between those are no news, even where the
    batch holds recent events. After the catch-up a live move pages as usual.
    Finding 3 on the way: an account silent for 62 days has no data retained today, but its score is the
    lowest since its last event (the silence floor, left pending during the catch-up, done after it as
    history), not "no score"."""
    from tests.integration.test_read_model import metric

    model = load_model(DEFAULT_MODEL)
    events = event_log(accounts=40, days=45, seed=33, usage_per_day=30)
    silent = [UsageEvent(f"silent-{d}-{h}-{n}", "acct-silent", NOW - (92 - d) * DAY + h * 3600, n, f"u{h % 3}",
                         f, None)
              for d in range(30) for h in range(0, 24, 6)
              for n, f in (("login", None), ("feature_used", "reports"), ("page_view", None))]
    events += silent
    publish(stack.bootstrap, unique, sorted(events, key=lambda e: e.occurred_at))
    twin = score_all(events, model, NOW)
    assert twin["acct-silent"].score is not None and twin["acct-silent"].score < 40  # the floor held it
    assert score_all(silent, model, NOW - 62 * DAY)["acct-silent"].score > 70  # its last active day
    port = free_port()
    env = {**worker_env, "HEALTH_CLOCK_FILE": str(clock_file(tmp_path))}
    with Worker(env, tmp_path, "--web-port", str(port)) as worker:
        wait_until_equal(stack.bootstrap, f"{unique}.scores", twin, timeout=180, alive=worker.alive)
        assert "caught up with the input" in wait_for(
            lambda: "caught up with the input" in worker.log() and worker.log(), 60, what="the catch-up to end")
        settle = time.monotonic() + 3
        alerts = read_topic(stack.bootstrap, f"{unique}.alerts", timeout=30, until=lambda rs: time.monotonic() > settle)
        assert alerts == [], [(a["type"], a["subject"], a["time"]) for a in alerts]
        assert (metric(port, "health_alerts_held_back_total") or 0) >= 1
        # caught up: a live move is news
        margin = model.alerts.band_change.margin_points  # beyond it, the alerted band is surely Healthy
        live = {a: AccountEvent(f"live-{a}", a, NOW - 60, {"csm_rating": 0, "uptime_pct": 50.0})
                for a, s in twin.items() if s.score is not None and s.score >= 70 + margin}
        healthy = next(a for a in sorted(live) if score_all(events + [live[a]], model, NOW)[a].score < 70 - margin)
        asyncio.run(produce(stack.bootstrap, f"{unique}.accounts", [(healthy.encode(), encode_event(live[healthy]))]))
        alerts = read_topic(stack.bootstrap, f"{unique}.alerts", timeout=60, until=lambda rs: len(rs) >= 1)
        assert {a["subject"] for a in alerts} == {healthy} and all(a["data"]["explanation"] for a in alerts)
        assert worker.alive(), worker.report()
