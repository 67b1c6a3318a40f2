"""The batch twin: every account's score from the full event log at a given time, computed
directly from per-account event lists (no buckets, no fingerprints, no pruning).

It applies the same time rules (future beyond the clock skew; each day evaluated counts the
events of its retained days; attribute upserts never expire) and counts each event_id once, then
shares the compiled evaluation (measures and scoring) and the silence floor (the lowest evaluation
of the days since the account's newest event, see :mod:`streams.core.engine`) with the incremental
path. Streaming the same events in any order within the allowed lateness, with duplicates, must give
the same scores. It assumes each event reached the stream within its kind's allowed lateness (a
replay of history older than the retention drops, in the stream, what had expired when it arrived).
"""
from __future__ import annotations

from typing import Any, Iterable

from schemas.events import Event

from .days import DAY, MINUTES_PER_DAY, day_of, fingerprint, minute_of, to_centi
from .engine import silence_floor
from .model import HealthModel
from .scoring import AccountScore, plan_of
from .state import OPEN_RANKS, add_survey, T_BREACH, T_OPENED, T_RANK, TICKET_RANK, is_future

__all__ = ("score_all", "EventLog")


class EventLog:
    """A measure source over one account's accepted events."""

    def __init__(self, events: list[Event]):
        self.usage = [(day_of(e.occurred_at), e) for e in events if e.kind == "usage"]
        self.ticket_events = [e for e in events if e.kind == "ticket"]
        self.survey_events = [e for e in events if e.kind == "survey"]
        self.account_events = [e for e in events if e.kind == "account"]
        self.tickets = self._tickets()

    def _tickets(self) -> dict[str, list]:
        out: dict[str, list] = {}
        for e in self.ticket_events:
            rank = TICKET_RANK.get(e.action)
            if rank is None:
                continue
            out.setdefault(e.ticket_id, []).append((minute_of(e.occurred_at), rank, bool(e.sla_breached)))
        tickets = {}
        for tid, evs in out.items():
            opened = [ts for ts, r, _ in evs if r == 0]
            first = [ts for ts, r, _ in evs if r == 1]
            resolved = [ts for ts, r, _ in evs if r == 3]
            breached = [ts for ts, _, b in evs if b]
            last_ts, last_rank = max((ts, r) for ts, r, _ in evs)
            tickets[tid] = [min(opened) if opened else None, min(first) if first else None,
                            max(resolved) if resolved else None, last_ts, last_rank,
                            max(breached) if breached else None]
        return tickets

    def _usage(self, names, lo, hi=None):
        return [e for d, e in self.usage
                if d >= lo and (hi is None or d < hi) and (names is None or e.name in names)]

    def count(self, names, lo, hi=None) -> int:
        return len(self._usage(names, lo, hi))

    def value(self, names, lo, hi=None) -> tuple[int, int]:
        evs = self._usage(names, lo, hi)
        return sum(to_centi(e.value) for e in evs if e.value is not None), len(evs)

    def users(self, lo) -> int:
        return len({e.user_id for e in self._usage(None, lo) if e.user_id is not None})

    def features(self, lo) -> set[str]:
        return {e.feature for e in self._usage(None, lo) if e.feature is not None}

    def last_usage_day(self, names):
        days = [d for d, e in self.usage if names is None or e.name in names]
        return max(days) if days else None

    def last_kind_day(self, kind):
        evs = {"usage": [e for _, e in self.usage], "ticket": self.ticket_events,
               "survey": self.survey_events}.get(kind, [])
        return max(day_of(e.occurred_at) for e in evs) if evs else None

    def open_tickets(self) -> int:
        return sum(1 for t in self.tickets.values() if t[T_RANK] in OPEN_RANKS)

    def ticket_durations(self, lo, end_field) -> tuple[int, int]:
        total = n = 0
        for t in self.tickets.values():
            end, start = t[end_field], t[T_OPENED]
            if end is not None and start is not None and end // MINUTES_PER_DAY >= lo:
                total += max(end - start, 0)
                n += 1
        return total, n

    def sla(self, lo) -> tuple[int, int]:
        opened = [t for t in self.tickets.values() if t[T_OPENED] is not None and t[T_OPENED] // MINUTES_PER_DAY >= lo]
        return len(opened), sum(1 for t in opened if t[T_BREACH] is not None)

    def surveys(self, lo) -> list[int]:
        out = [0, 0, 0, 0, 0]
        for e in self.survey_events:
            if day_of(e.occurred_at) >= lo:
                add_survey(out, e)
        return out

    def attributes(self) -> dict[str, Any]:
        latest: dict[str, tuple] = {}
        for e in self.account_events:
            key = (e.occurred_at, fingerprint(e.event_id))
            for k, v in e.attributes.items():
                if k not in latest or key > latest[k][0]:
                    latest[k] = (key, v)
        return {k: v for k, (_, v) in latest.items() if v is not None}

    def has_data(self, lo=None) -> bool:
        return bool(self.usage or self.tickets or self.survey_events or self.attributes())


def score_all(events: Iterable[Event], model: HealthModel, now: float) -> dict[str, AccountScore]:
    """Every account's score at ``now`` from scratch (accounts with no event that is not in the future are
    absent)."""
    cfg = model.state
    retention = cfg.retention_days
    today = day_of(now)
    accounts: dict[str, dict[str, Event]] = {}
    for e in events:
        if is_future(e.occurred_at, now, cfg):
            continue
        accounts.setdefault(e.account_id, {}).setdefault(e.event_id, e)
    plan = plan_of(model)
    out = {}
    for account_id in sorted(accounts):
        evs = list(accounts[account_id].values())
        newest = min(max(day_of(e.occurred_at) for e in evs), today)

        def retained(day: int, evs=evs) -> EventLog:
            start = (day - retention + 1) * DAY
            return EventLog([e for e in evs if e.kind == "account" or e.occurred_at >= start])

        best, _, _ = silence_floor(plan, retained, today, newest, retention)
        out[account_id] = plan.account_score(account_id, *best)
    return out
