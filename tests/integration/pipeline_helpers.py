"""Shared pieces of the end-to-end pipeline tests: an event log, producing it, reading results."""
from __future__ import annotations

import asyncio
import random
from pathlib import Path

import orjson

from schemas.events import Event, encode_event
from streams.core.days import DAY
from streams.core.simulate import account_events
from tests.harness import consume, produce

NOW = 20400 * DAY + 15 * 3600.0  # a fixed worker clock (HEALTH_CLOCK_FILE) so the batch twin can match it
TOPIC_SUFFIX = {"usage": "usage", "ticket": "tickets", "survey": "surveys", "account": "accounts"}


def clock_file(tmp_path: Path, now: float = NOW) -> Path:
    path = tmp_path / "clock"
    path.write_text(repr(now))
    return path


def event_log(accounts: int, days: int, seed: int, usage_per_day: int = 6) -> list[Event]:
    """Typical activity of `accounts` accounts over the last `days` days before NOW."""
    rng = random.Random(seed)
    events: list[Event] = []
    for i in range(accounts):
        users = rng.choice([2, 4, 8])
        events += account_events(f"acct-{seed}-{i}", NOW - days * DAY, days, rng,
                                 usage_per_day=rng.choice([0, usage_per_day // 2, usage_per_day]), users=users)
    return [e for e in events if e.occurred_at <= NOW]


def deliveries(events: list[Event], seed: int, max_shift: float = 6 * 3600, duplicates: float = 0.05) -> list[Event]:
    """Arrival order: each event displaced by at most `max_shift` seconds (inside the allowed lateness),
    and a share of events delivered twice."""
    rng = random.Random(seed)
    keyed = [(e.occurred_at + rng.uniform(0, max_shift), e) for e in events]
    keyed += [(e.occurred_at + rng.uniform(0, max_shift), e) for e in events if rng.random() < duplicates]
    keyed.sort(key=lambda pair: pair[0])
    return [e for _, e in keyed]


def publish(bootstrap: str, prefix: str, events: list[Event]) -> None:
    by_topic: dict[str, list] = {}
    for e in events:
        by_topic.setdefault(f"{prefix}.{TOPIC_SUFFIX[e.kind]}", []).append((e.account_id.encode(), encode_event(e)))

    async def send_all():
        for topic, records in by_topic.items():
            await produce(bootstrap, topic, records)

    asyncio.run(send_all())


def read_topic(bootstrap: str, topic: str, until=lambda records: True, timeout: float = 30) -> list[dict]:
    return [orjson.loads(r.value) for r in asyncio.run(consume(bootstrap, topic, until, timeout))]


def latest_scores(records: list[dict]) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for record in records:
        if record["seq"] > latest.get(record["account_id"], {"seq": -1})["seq"]:
            latest[record["account_id"]] = record
    return latest


def mismatches(latest: dict[str, dict], twin: dict) -> list[str]:
    """Accounts whose last published score differs from the batch twin's (empty when equal)."""
    out = []
    expected = {a: s for a, s in twin.items() if s.score is not None}
    for account in sorted(set(expected) | set(latest)):
        want, got = expected.get(account), latest.get(account)
        if want is None or got is None:
            out.append(f"{account}: twin {want and want.score} stream {got and got['score']}")
        elif (got["score"], got["band"], got["components"]) != (want.score, want.band, want.to_dict()["components"]):
            out.append(f"{account}: twin {want.score} {want.band} stream {got['score']} {got['band']}")
    return out


def wait_until_equal(bootstrap: str, topic: str, twin: dict, timeout: float, alive=lambda: True,
                     only=lambda account: True) -> dict[str, dict]:
    """Follow the score topic until every account's last score equals the twin's; return all records seen.
    `only`: the accounts compared (others on the topic are ignored)."""
    import time

    from aiokafka import AIOKafkaConsumer

    async def follow():
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    group_id=None, enable_auto_commit=False)
        await consumer.start()
        records: list[dict] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                records += [orjson.loads(r.value) for part in batch.values() for r in part]
                diff = mismatches({a: r for a, r in latest_scores(records).items() if only(a)}, twin)
                if not diff:
                    return records
                if time.monotonic() > deadline or not alive():
                    raise AssertionError(f"{len(diff)} accounts differ from the batch twin after {timeout}s "
                                         f"(worker alive: {alive()}); first: {diff[:5]}")
        finally:
            await consumer.stop()

    return asyncio.run(follow())


def read_all(bootstrap: str, topic: str, idle_ms: int = 1000) -> list[dict]:
    """Everything in the topic now: read from the start until a poll brings nothing for `idle_ms`."""
    from aiokafka import AIOKafkaConsumer

    async def read():
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    group_id=None, enable_auto_commit=False)
        await consumer.start()
        out: list[dict] = []
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=idle_ms)
                if not batch:
                    return out
                out += [orjson.loads(r.value) for part in batch.values() for r in part]
        finally:
            await consumer.stop()

    return asyncio.run(read())
