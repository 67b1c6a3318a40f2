"""Synthetic "typical activity" of accounts, for benchmarks, size checks and load tests.

Deterministic for a seed; no clock. Per account and day: ~40 usage events from up to 10
users across 4 event names and 8 features, a ticket every ~3 days (opened, first response,
resolved, closed), a CSAT answer a month, an NPS answer a quarter, a few attribute updates.
"""
from __future__ import annotations

import random
from typing import Iterator

from schemas.events import AccountEvent, Event, SurveyEvent, TicketEvent, UsageEvent

from .days import DAY

FEATURES = ("dashboards", "reports", "alerts", "integrations", "automation", "api", "exports", "mobile")
USAGE_NAMES = ("login", "page_view", "feature_used", "session")


def account_events(account_id: str, start: float, days: int, rng: random.Random,
                   usage_per_day: int = 40, users: int = 10) -> Iterator[Event]:
    n = 0

    def eid() -> str:
        nonlocal n
        n += 1
        return f"{account_id}-{n}"

    user_ids = [f"u{i}@{account_id}" for i in range(users)]
    yield AccountEvent(eid(), account_id, start + 1, {
        "plan": rng.choice(["starter", "business", "enterprise"]), "seats": rng.choice([10, 25, 120]),
        "lifecycle_stage": "adopted", "csm_rating": rng.randint(4, 10), "uptime_pct": rng.choice([99.95, 99.5, 97.0]),
    })
    ticket = 0
    for day in range(days):
        base = start + day * DAY
        for _ in range(max(0, int(rng.gauss(usage_per_day, usage_per_day / 5)))):
            ts = base + rng.random() * DAY
            name = rng.choices(USAGE_NAMES, (2, 5, 4, 1))[0]
            user = rng.choice(user_ids)
            if name == "feature_used":
                yield UsageEvent(eid(), account_id, ts, name, user, rng.choice(FEATURES))
            elif name == "session":
                yield UsageEvent(eid(), account_id, ts, name, user, None, round(rng.uniform(1, 90), 1))
            else:
                yield UsageEvent(eid(), account_id, ts, name, user)
        if rng.random() < 1 / 3:
            ticket += 1
            tid = f"T{ticket}"
            ts = base + rng.random() * DAY
            breached = rng.random() < 0.15
            yield TicketEvent(eid(), account_id, ts, tid, "opened", rng.choice(["low", "normal", "high"]))
            yield TicketEvent(eid(), account_id, ts + rng.uniform(300, 20000), tid, "first_response", None, breached)
            if rng.random() < 0.8:
                yield TicketEvent(eid(), account_id, ts + rng.uniform(20000, 200000), tid, "resolved")
                yield TicketEvent(eid(), account_id, ts + 210000, tid, "closed")
        if rng.random() < 1 / 30:
            yield SurveyEvent(eid(), account_id, base + rng.random() * DAY, "csat", rng.choice([3, 4, 4, 5, 5]))
        if rng.random() < 1 / 90:
            yield SurveyEvent(eid(), account_id, base + rng.random() * DAY, "nps", rng.randint(4, 10))
        if rng.random() < 1 / 20:
            yield AccountEvent(eid(), account_id, base + rng.random() * DAY,
                               {"csm_rating": rng.randint(3, 10), "uptime_pct": rng.choice([99.95, 99.5, 97.0])})
