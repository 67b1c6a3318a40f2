"""What-if preview: score the current account state under another model, without touching the workers.

The state is read from the account table's changelog topic (the latest value per account), so the
preview needs no running worker and changes nothing. It compares against the model the workers run:
the latest valid model on the control topic, else the model file.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.outputs import INSUFFICIENT_DATA, band_label
from streams.core import AccountState, HealthModel, current_score
from streams.connections import start_client
from streams.worker.envelope import decode_state
from streams.settings import Settings
from streams.topics import changelog_topic


async def read_table(settings: Settings) -> dict[bytes, bytes | None]:
    """The latest changelog value of every account key (None for a deleted key)."""
    topic = changelog_topic(settings)
    consumer = AIOKafkaConsumer(**settings.kafka_options(), group_id=None,
                                enable_auto_commit=False)
    await start_client(consumer)
    latest: dict[bytes, bytes | None] = {}
    try:
        tps = [TopicPartition(topic, p) for p in await _partitions(settings, topic)]
        if not tps:
            return {}
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for record in records:
                    latest[record.key] = record.value
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return latest


async def read_states(settings: Settings) -> dict[str, AccountState]:
    states = {}
    for key, value in (await read_table(settings)).items():
        state = decode_state(value) if value else None
        if state is not None:
            states[key.decode()] = state
    return states


async def _partitions(settings: Settings, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(**settings.kafka_options())
    await start_client(admin)
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [p["partition"] for p in described["partitions"]]


@dataclass(frozen=True)
class BandChange:
    account_id: str
    band_before: str | None
    band_after: str | None
    score_before: float | None
    score_after: float | None

    @property
    def size(self) -> float:
        """How far the score moved (an account that gains or loses its score counts as 100 points)."""
        if self.score_before is None or self.score_after is None:
            return 100.0
        return abs(self.score_after - self.score_before)
    # (band_before / band_after: a band, insufficient_data, or "no score")


@dataclass
class WhatIf:
    bands: list[str]
    before: Counter
    after: Counter
    moved: int
    mean_before: float
    mean_after: float
    changes: list[BandChange] = field(default_factory=list)  # accounts that change band, the largest move first
    # component -> ((p10, p50, p90) before or None, (p10, p50, p90) after or None) of its scores
    components: dict[str, tuple] = field(default_factory=dict)


PERCENTILES = (10, 50, 90)


def percentiles(values: list[float]) -> tuple[float, ...] | None:
    """Nearest-rank percentiles (PERCENTILES) of `values`; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    return tuple(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in PERCENTILES)


def compare(states: dict[str, AccountState], current: HealthModel, candidate: HealthModel, now: float) -> WhatIf:
    before, after = Counter(), Counter()
    changes = []
    totals = [0.0, 0.0, 0]
    scores: dict[str, tuple[list, list]] = {}
    for account, state in states.items():
        a = current_score(state, account, current, now)
        b = current_score(state, account, candidate, now)
        band_a, band_b = band_label(a.score, a.band) or "no score", band_label(b.score, b.band) or "no score"
        before[band_a] += 1
        after[band_b] += 1
        if band_a != band_b:
            changes.append(BandChange(account, band_a, band_b, a.score, b.score))
        if a.score is not None and b.score is not None:
            totals[0] += a.score
            totals[1] += b.score
            totals[2] += 1
        for side, score in ((0, a), (1, b)):
            for name, component in score.components.items():
                if component.score is not None:
                    scores.setdefault(name, ([], []))[side].append(component.score)
    n = totals[2] or 1
    names = list(dict.fromkeys([b.name for b in current.bands] + [b.name for b in candidate.bands]
                               + [INSUFFICIENT_DATA, "no score"]))
    changes.sort(key=lambda c: (-c.size, c.account_id))
    return WhatIf(names, before, after, len(changes), totals[0] / n, totals[1] / n, changes,
                  {name: (percentiles(pair[0]), percentiles(pair[1])) for name, pair in sorted(scores.items())})
