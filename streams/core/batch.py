"""The batch twin: every account's score from the full event log at a given time, computed
directly from per-account event lists (no buckets, no fingerprints, no pruning).

It applies the same time rules (future beyond the clock skew; each day evaluated counts the
events of its retained days; attribute upserts never expire), splits each ticket's events into the
same episodes (:func:`ticket_episodes`, over all of the account's events) and counts each event_id once, then
shares the compiled evaluation (measures and scoring) and the silence floor (the lowest evaluation
of the days since the account's newest event, see :mod:`streams.core.engine`) with the incremental
path. Streaming the same events in any order within the allowed lateness, with duplicates, must give
the same scores. It assumes each event reached the stream within its kind's allowed lateness (a
replay of history older than the retention drops, in the stream, what had expired when it arrived).
"""
from __future__ import annotations

from typing import Any, Iterable

from schemas.events import Event

from .days import DAY, HOUR, MINUTES_PER_DAY, day_of, fingerprint, minute_of, to_centi
from .engine import silence_floor
from .model import HealthModel
from .scoring import AccountScore, plan_of
from .state import OPEN_RANKS, add_survey, T_BREACH, T_OPENED, TICKET_RANK, is_future, ticket_episode_minutes

__all__ = ("score_all", "EventLog", "ticket_episodes")


def ticket_episodes(events: Iterable[Event], q: int) -> dict[tuple[str, int], int]:
    """(event_id, minute) -> the episode of its ticket it belongs to (0, 1, ...), over all of an account's ticket
    events: an episode ends ``q`` minutes after its first resolution (:func:`ticket_episode_minutes`), the
    ticket's later events start the next one."""
    by_ticket: dict[str, list] = {}
    for e in events:
        if e.kind == "ticket" and e.action in TICKET_RANK:
            by_ticket.setdefault(e.ticket_id, []).append((minute_of(e.occurred_at), TICKET_RANK[e.action], e.event_id))
    out = {}
    for evs in by_ticket.values():
        episode, anchor = 0, None
        for ts, rank, event_id in sorted(evs):
            if anchor is not None and ts > anchor + q:
                episode, anchor = episode + 1, None
            if rank == 3 and anchor is None:
                anchor = ts
            out[(event_id, ts)] = episode  # an id may recur in another hour: another event
    return out


class EventLog:
    """A measure source over one account's accepted events (``episode_of``: see :func:`ticket_episodes`)."""

    def __init__(self, events: list[Event], episode_of: dict[tuple[str, int], int] | None = None):
        self.usage = [(day_of(e.occurred_at), e) for e in events if e.kind == "usage"]
        self.ticket_events = [e for e in events if e.kind == "ticket"]
        self.survey_events = [e for e in events if e.kind == "survey"]
        self.account_events = [e for e in events if e.kind == "account"]
        self.tickets, self.episodes = self._tickets(episode_of or {})

    def _tickets(self, episode_of: dict[tuple[str, int], int]) -> tuple[dict[str, tuple], list[list]]:
        """ticket id -> (last activity, last action rank); and each episode's
        [opened (min), first response (min), resolved (max), sla breach flag (max)]."""
        last: dict[str, tuple] = {}
        grouped: dict[tuple, list] = {}
        for e in self.ticket_events:
            rank = TICKET_RANK.get(e.action)
            if rank is None:
                continue
            ts = minute_of(e.occurred_at)
            tid = e.ticket_id
            if tid not in last or (ts, rank) > last[tid]:
                last[tid] = (ts, rank)
            grouped.setdefault((tid, episode_of.get((e.event_id, ts), 0)), []).append((ts, rank, bool(e.sla_breached)))
        episodes = []
        for evs in grouped.values():
            opened = [ts for ts, r, _ in evs if r == 0]
            first = [ts for ts, r, _ in evs if r == 1]
            resolved = [ts for ts, r, _ in evs if r == 3]
            breached = [ts for ts, _, b in evs if b]
            episodes.append([min(opened) if opened else None, min(first) if first else None,
                             max(resolved) if resolved else None, max(breached) if breached else None])
        return last, episodes

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
        return sum(1 for _, rank in self.tickets.values() if rank in OPEN_RANKS)

    def ticket_durations(self, lo, end_field) -> tuple[int, int]:
        total = n = 0
        for ep in self.episodes:
            end, start = ep[end_field], ep[T_OPENED]
            if end is not None and start is not None and end // MINUTES_PER_DAY >= lo:
                total += max(end - start, 0)
                n += 1
        return total, n

    def sla(self, lo) -> tuple[int, int]:
        opened = [ep for ep in self.episodes if ep[T_OPENED] is not None and ep[T_OPENED] // MINUTES_PER_DAY >= lo]
        return len(opened), sum(1 for ep in opened if ep[T_BREACH] is not None)

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
    q = ticket_episode_minutes(cfg)
    today = day_of(now)
    accounts: dict[str, dict[str, Event]] = {}
    for e in events:
        if is_future(e.occurred_at, now, cfg):
            continue
        # one event per kind, hour and id, as the stream's de-duplication (state.py: fp) counts them
        accounts.setdefault(e.account_id, {}).setdefault((e.kind, int(e.occurred_at // HOUR), e.event_id), e)
    plan = plan_of(model)
    out = {}
    for account_id in sorted(accounts):
        evs = list(accounts[account_id].values())
        newest = min(max(day_of(e.occurred_at) for e in evs), today)
        episode_of = ticket_episodes(evs, q)

        def retained(day: int, evs=evs, episode_of=episode_of) -> EventLog:
            start = (day - retention + 1) * DAY
            return EventLog([e for e in evs if e.kind == "account" or e.occurred_at >= start], episode_of)

        best, _, _ = silence_floor(plan, retained, today, newest, retention)
        out[account_id] = plan.account_score(account_id, *best)
    return out
