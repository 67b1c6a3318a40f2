"""publish(): a simulated base reaches the topic of each kind, keyed by account id, every event once."""
from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter

import pytest

from schemas.events import decode_event
from streams.tools.publisher import publish, topic_of_kind
from streams.settings import Settings, Topics
from streams.tools.simulator import customer_base, history, live
from tests.harness import consume

pytestmark = pytest.mark.broker

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def test_publish_a_simulated_base(stack, unique):
    settings = dataclasses.replace(Settings(), broker=stack.broker_url, topics=Topics.from_env(f"{unique}."))
    events = list(history(customer_base(12, seed=4), START, START + 2 * 86400, seed=4, intensity=0.5))
    expected = Counter(e.kind for e in events)
    assert set(expected) == {"usage", "ticket", "survey", "account"}
    seen_progress: list[int] = []

    report = asyncio.run(publish(iter(events), settings, progress=seen_progress.append, progress_every=250, window=100))

    assert report.counts == dict(expected) and report.total == len(events) and report.elapsed > 0
    assert seen_progress[-1] == len(events) and seen_progress == sorted(seen_progress)
    by_id = {e.event_id: e for e in events}
    for kind, topic in topic_of_kind(settings).items():
        assert topic == f"{unique}.{kind if kind == 'usage' else kind + 's'}"
        records = asyncio.run(consume(stack.bootstrap, topic, until=lambda r, n=expected[kind]: len(r) >= n))
        assert len(records) == expected[kind]
        decoded = [decode_event(r.value, kind) for r in records]
        assert all(r.key == e.account_id.encode() for r, e in zip(records, decoded))
        assert all(by_id[e.event_id] == e for e in decoded)
        # One account, one partition: its events keep their order.
        per_account = {}
        for r, e in zip(records, decoded):
            assert per_account.setdefault(e.account_id, r.partition) == r.partition


class _FarFuture:
    """A clock whose wall time is past every send time, so paced sends never sleep."""

    def time(self) -> float:
        return START + 10 * 86400

    def monotonic(self) -> float:
        return time.monotonic()


def test_publish_paced_live_pairs(stack, unique):
    settings = dataclasses.replace(Settings(), broker=stack.broker_url, topics=Topics.from_env(f"{unique}."))
    pairs = list(live(customer_base(5, seed=2), START, seed=2, rate=20.0, duration=60))
    expected = Counter(e.kind for _, e in pairs)

    report = asyncio.run(publish(pairs, settings, rate=5000.0, clock=_FarFuture()))

    assert report.counts == dict(expected)
    topic = topic_of_kind(settings)["usage"]
    records = asyncio.run(consume(stack.bootstrap, topic, until=lambda r: len(r) >= expected["usage"]))
    sent = [e.event_id for _, e in pairs if e.kind == "usage"]
    assert sorted(decode_event(r.value).event_id for r in records) == sorted(sent)
