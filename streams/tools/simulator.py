"""A simulated customer base: healthy, declining and churning accounts, and their events.

Pure and deterministic: no Kafka, no clock reads (every time is a parameter), and the same
seed gives the same accounts and the same events, so demos, benchmarks and tests are
repeatable. Two ways to play the base:

- :func:`history` -- every event between two times, in ``occurred_at`` order, generated UTC
  day by UTC day so memory holds one day of events (plus the follow-up steps of open
  tickets), not the whole period: 10k accounts x 90 days streams in bounded memory.
- :func:`live` -- an endless (or ``duration``-bounded) stream of ``(send_at, event)`` at a
  target overall rate, for the real-time demo; the caller sends each event at ``send_at``
  (which is also its ``occurred_at``).

Each account follows its profile's trajectory, expressed as *trouble*: 0 = all is well,
1 = the profile's bad state is fully there (it may grow past 1: a declining account keeps
declining). Over a history from ``start`` to ``end``:

- healthy: never in trouble. Steady usage by most seats across most features, few tickets
  answered within the hour, CSAT 4-5, NPS 9-10, uptime >= 99.9 %.
- declining: trouble grows linearly over the second half (0 at the midpoint, 1 at ``end``):
  usage and active users fall to ~20 %, feature breadth narrows, more tickets, slower first
  responses (so SLA breaches), CSAT drifts to 2-3, NPS to 5-7, the CSM rating to 4-6.
- churning: a mediocre account until 21 days before ``end``, then usage collapses to near
  zero within a week, tickets pile up unresolved, NPS turns detractor (0-4), CSAT 1-2, the CSM
  rating drops to 1-3 and uptime suffers.

Volume at ``intensity=1``: a healthy account sends ~20-60 usage events a day (more with more
seats, fewer on weekends); tickets and surveys are sized from the same base so the kind mix
by volume is about 80 % usage, 15 % ticket steps, 5 % survey answers, plus a few account
updates (the benchmark's mix; see :func:`kind_mix`).
"""
from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import accumulate, count
from typing import Iterable, Iterator, Sequence

from schemas.events import EVENT_KINDS, AccountEvent, Event, SurveyEvent, TicketEvent, UsageEvent

__all__ = ["PROFILES", "CustomerMix", "SimulatedAccount", "customer_base", "history", "live", "kind_mix"]

DAY = 86400.0
HOUR = 3600.0
PROFILES = ("healthy", "declining", "churning")
FEATURES = ("dashboards", "reports", "alerts", "integrations", "automation", "api", "exports", "mobile")
# Usage event names and their shares: logins drive the login measures, feature_used the
# adoption measure, session carries minutes spent.
USAGE_NAMES = ("login", "feature_used", "session", "page_view")
USAGE_CUM = tuple(accumulate((0.30, 0.35, 0.20, 0.15)))
# Ticket priorities, their shares, and the first-response SLA in hours that decides `sla_breached`.
PRIORITIES = ("low", "normal", "high", "urgent")
PRIORITY_CUM = tuple(accumulate((0.30, 0.45, 0.20, 0.05)))
SLA_HOURS = {"low": 24.0, "normal": 8.0, "high": 4.0, "urgent": 1.0}

# Tickets opened and survey answers per day, as a fraction of the account's usage events per day.
# Calibrated (tests/test_simulator.py) so that a base with the default mix lands near 80/15/5:
# a healthy ticket is ~4 events (opened, first response, resolved, closed).
TICKETS_PER_USAGE = 0.042
SURVEYS_PER_USAGE = 0.058
UPDATES_PER_DAY = 1 / 14  # CRM touches of a quiet account (csm_rating, uptime_pct)
CHURN_COLLAPSE_DAYS = 21.0  # churning accounts collapse this long before the end of the history
CHURN_RAMP_DAYS = 7.0  # ... and are fully collapsed a week later
# Business days carry more activity than weekends; the weekly mean stays 1.
WEEKDAY, WEEKEND = 7 / 5.8, 0.4 * 7 / 5.8


# ------------------------------------------------------------------ the base

@dataclass
class CustomerMix:
    """Shares of each profile in the base; any non-negative weights, normalised on creation."""

    healthy: float = 0.7
    declining: float = 0.2
    churning: float = 0.1

    def __post_init__(self) -> None:
        weights = [self.healthy, self.declining, self.churning]
        for name, w in zip(PROFILES, weights):
            if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
                raise ValueError(f"CustomerMix.{name}: expected a finite number >= 0, got {w!r}")
        total = sum(weights)
        if total <= 0:
            raise ValueError("CustomerMix: the shares must not all be 0")
        self.healthy, self.declining, self.churning = (w / total for w in weights)

    def shares(self) -> dict[str, float]:
        return {"healthy": self.healthy, "declining": self.declining, "churning": self.churning}


@dataclass(frozen=True)
class SimulatedAccount:
    """One customer: its CRM attributes, its users, and how it behaves (profile, volume)."""

    account_id: str
    profile: str  # healthy | declining | churning
    seats: int
    plan: str  # starter | business | enterprise
    tier: str  # bronze | silver | gold | platinum
    lifecycle_stage: str  # onboarding | adopted | expanding | renewal
    users: tuple[str, ...]  # the account's user ids (a tuple: the account is immutable)
    csm_rating: int = 8  # 0..10 at the start
    uptime_pct: float = 99.95
    mrr: float = 0.0
    renewal_in_days: int = 180  # renewal date, counted from the start of the simulation
    utc_offset_hours: int = 0  # where its users work: shifts their business hours
    usage_per_day: float = 40.0  # usage events a day while healthy, at intensity 1
    active_share: float = 0.85  # share of its users active while healthy
    feature_breadth: int = 8  # how many of FEATURES it uses while healthy


_PLANS = ("starter", "business", "enterprise")
_PLAN_CUM = tuple(accumulate((0.45, 0.35, 0.20)))
_SEATS = {"starter": (3, 15), "business": (10, 60), "enterprise": (60, 300)}
_PRICE = {"starter": 15.0, "business": 40.0, "enterprise": 85.0}  # per seat and month
_TIERS = {"starter": ("bronze", "silver"), "business": ("silver", "gold"), "enterprise": ("gold", "platinum")}
_STAGES = ("adopted", "expanding", "renewal")


def customer_base(n: int, mix: CustomerMix | None = None, seed: int = 0) -> list[SimulatedAccount]:
    """``n`` accounts ("acct-00001", ...), profiles in the proportions of ``mix`` (exact up to
    rounding, then shuffled), plans, seats, tiers and stages varied; ~8 % are onboarding."""
    if n < 0:
        raise ValueError(f"n: expected a count >= 0, got {n}")
    mix = mix or CustomerMix()
    rng = random.Random(f"customer-base/{seed}")
    profiles = _apportion(n, mix.shares())
    rng.shuffle(profiles)
    width = max(5, len(str(n)))
    return [_account(f"acct-{i + 1:0{width}d}", profile, rng) for i, profile in enumerate(profiles)]


def _apportion(n: int, shares: dict[str, float]) -> list[str]:
    """Largest-remainder rounding, so a base of 10 with the default mix has exactly 7/2/1."""
    exact = {p: n * s for p, s in shares.items()}
    counts = {p: int(x) for p, x in exact.items()}
    for p in sorted(exact, key=lambda p: exact[p] - counts[p], reverse=True)[: n - sum(counts.values())]:
        counts[p] += 1
    return [p for p in PROFILES for _ in range(counts[p])]


def _account(account_id: str, profile: str, rng: random.Random) -> SimulatedAccount:
    plan = _PLANS[bisect_right(_PLAN_CUM, rng.random() * _PLAN_CUM[-1])]
    seats = rng.randint(*_SEATS[plan])
    onboarding = rng.random() < 0.08
    stage = "onboarding" if onboarding else rng.choice(_STAGES)
    # Onboarding accounts have not provisioned every seat yet, so seat activation is low.
    n_users = max(1, round(seats * (rng.uniform(0.5, 0.8) if onboarding else rng.uniform(0.9, 1.0))))
    # Volume grows with the size of the account, but slowly: 20-60 a day at intensity 1.
    usage = 25 + 45 * min(1.0, math.log(seats) / math.log(300)) * rng.uniform(0.8, 1.0)
    good = profile == "healthy"
    return SimulatedAccount(
        account_id=account_id, profile=profile, seats=seats, plan=plan,
        tier=rng.choice(_TIERS[plan]), lifecycle_stage=stage,
        users=tuple(f"{account_id}/u{j + 1}" for j in range(n_users)),
        csm_rating=rng.randint(7, 10) if good else rng.randint(5, 8),
        uptime_pct=rng.choice((99.9, 99.95, 99.99, 100.0)) if good else rng.choice((99.5, 99.9, 99.95)),
        mrr=round(seats * _PRICE[plan] * rng.uniform(0.8, 1.1), 2),
        renewal_in_days=rng.randint(20, 365),
        utc_offset_hours=rng.choice((-8, -5, -5, 0, 1, 1, 2, 5, 9)),
        usage_per_day=round(usage * (0.6 if onboarding else 1.0), 1),
        active_share=rng.uniform(0.75, 0.95),
        feature_breadth=rng.randint(6, 8),
    )


# ------------------------------------------------------------ trajectories

@dataclass(frozen=True)
class _Arc:
    """When trouble starts: the declining slope's start and length, the churn collapse."""

    decline_start: float
    decline_span: float
    collapse_start: float

    @classmethod
    def over(cls, start: float, end: float) -> "_Arc":
        mid = start + (end - start) / 2
        return cls(mid, max(end - mid, DAY), max(start, end - CHURN_COLLAPSE_DAYS * DAY))

    def trouble(self, profile: str, t: float) -> float:
        if profile == "declining":
            return max(0.0, (t - self.decline_start) / self.decline_span)
        if profile == "churning":
            return max(0.0, (t - self.collapse_start) / (CHURN_RAMP_DAYS * DAY))
        return 0.0


@dataclass(frozen=True, slots=True)
class _Mood:
    """What an account looks like at one moment: rates per day (intensity 1) and behaviour."""

    usage: float  # usage events per day
    users: int  # size of the active user pool
    features: int  # features in use
    tickets: float  # tickets opened per day
    response_hours: float  # median first response
    resolve_p: float  # chance a ticket gets resolved at all
    resolve_hours: float  # median from first response to resolution
    reopen_p: float
    surveys: float  # survey answers per day
    bad: float  # 0..1: chance a sentiment / CRM value is drawn from the bad range
    updates: float  # account updates per day

    def volume(self) -> float:
        """Expected events per day, ticket follow-ups included (for rate targeting)."""
        steps = 2 + self.resolve_p * 1.9 + self.reopen_p
        return self.usage + self.tickets * steps + self.surveys + self.updates


def _mood(a: SimulatedAccount, trouble: float) -> _Mood:
    bad = min(1.0, trouble)
    n_users = len(a.users)
    base_tickets = a.usage_per_day * TICKETS_PER_USAGE
    base_surveys = a.usage_per_day * SURVEYS_PER_USAGE
    if a.profile == "declining":
        level = max(0.05, 1 - 0.8 * trouble)  # 20 % of the usage at the end of the history
        users = a.active_share * max(0.15, 1 - 0.75 * trouble)
        return _Mood(a.usage_per_day * level, max(1, round(n_users * users)),
                     max(2, round(a.feature_breadth * (1 - 0.6 * bad))),
                     base_tickets * (1 + 0.8 * bad), 1 + 9 * bad, 0.97 - 0.25 * bad, 6 + 42 * bad,
                     0.03 + 0.12 * bad, base_surveys, bad, UPDATES_PER_DAY + 0.15 * bad)
    if a.profile == "churning":
        level = 0.8 * math.exp(-trouble * CHURN_RAMP_DAYS / 2.5)  # halves every ~1.7 days
        return _Mood(a.usage_per_day * level, max(1, round(n_users * a.active_share * max(0.05, level))),
                     max(1, round(a.feature_breadth * (0.8 - 0.7 * bad))),
                     base_tickets * (1.2 + 1.0 * bad), 2 + 28 * bad, 0.85 - 0.75 * bad, 12 + 60 * bad,
                     0.08, base_surveys * (1 - 0.5 * bad), 0.35 + 0.65 * bad, UPDATES_PER_DAY + 0.3 * bad)
    return _Mood(a.usage_per_day, max(1, round(n_users * a.active_share)), a.feature_breadth,
                 base_tickets, 1.0, 0.98, 5.0, 0.03, base_surveys, 0.0, UPDATES_PER_DAY)


def _csat(profile: str, bad: bool, rng: random.Random) -> int:
    if not bad:
        return rng.choice((4, 5, 5)) if profile != "churning" else rng.choice((3, 4, 4, 5))
    return rng.choice((2, 3)) if profile == "declining" else rng.choice((1, 1, 2))


def _nps(profile: str, bad: bool, rng: random.Random) -> int:
    if not bad:
        return rng.choice((9, 10)) if profile != "churning" else rng.randint(6, 9)
    return rng.randint(5, 7) if profile == "declining" else rng.randint(0, 4)


def _crm(a: SimulatedAccount, bad: bool, rng: random.Random) -> dict:
    """A CSM / monitoring update: the rating and the uptime, good or bad for the profile."""
    if not bad:
        return {"csm_rating": min(10, max(0, a.csm_rating + rng.choice((-1, 0, 0, 1)))),
                "uptime_pct": a.uptime_pct if rng.random() < 0.7 else rng.choice((99.9, 99.95, 99.99))}
    if a.profile == "declining":
        return {"csm_rating": rng.randint(4, 6), "uptime_pct": rng.choice((99.0, 99.5, 99.8))}
    return {"csm_rating": rng.randint(1, 3), "uptime_pct": rng.choice((97.5, 98.5, 99.0))}


def _attributes(a: SimulatedAccount, start: float, trouble: float, rng: random.Random) -> dict:
    """The first account event: everything the CRM knows, as it stands at ``start``."""
    attrs = {"seats": a.seats, "plan": a.plan, "tier": a.tier, "lifecycle_stage": a.lifecycle_stage,
             "csm_rating": a.csm_rating, "uptime_pct": a.uptime_pct, "mrr": a.mrr,
             "renewal_date": datetime.fromtimestamp(start + a.renewal_in_days * DAY, timezone.utc).date().isoformat()}
    if rng.random() < min(1.0, trouble):
        attrs.update(_crm(a, True, rng))
    return attrs


# -------------------------------------------------------------- the engine

def _ms(t: float) -> float:
    """Millisecond precision, so encode/decode round-trips exactly (producers' usual precision)."""
    return math.floor(t * 1000 + 0.5) / 1000


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:  # normal approximation: cheap and close enough for volumes
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _lognormal_hours(rng: random.Random, median: float, sigma: float = 0.9) -> float:
    return min(14 * 24.0, max(0.05, median * math.exp(rng.gauss(0, sigma))))


# Record kinds in the queue; events are built only when released, so ids follow release order.
_USAGE, _TICKET, _SURVEY, _ACCOUNT = range(4)


class _World:
    """The accounts' shared machinery: a time-ordered queue of pending records (today's events
    and the future steps of open tickets) and per-account counters for deterministic ids."""

    def __init__(self, accounts: Sequence[SimulatedAccount], arc: _Arc, rng: random.Random):
        self.accounts = list(accounts)
        self.arc = arc
        self.rng = rng
        self.queue: list[tuple] = []  # (ts, seq, account index, record kind, payload)
        self.seq = count()
        self.event_no = [0] * len(self.accounts)
        self.ticket_no = [0] * len(self.accounts)

    def push(self, ts: float, i: int, kind: int, payload: tuple) -> None:
        heapq.heappush(self.queue, (_ms(ts), next(self.seq), i, kind, payload))

    def release(self, until: float) -> Iterator[Event]:
        """Every queued event before ``until``, in (occurred_at, creation) order."""
        q = self.queue
        while q and q[0][0] < until:
            ts, _, i, kind, p = heapq.heappop(q)
            account_id = self.accounts[i].account_id
            self.event_no[i] += 1
            eid = f"{account_id}-{self.event_no[i]}"
            if kind == _USAGE:
                yield UsageEvent(eid, account_id, ts, *p)
            elif kind == _TICKET:
                yield TicketEvent(eid, account_id, ts, *p)
            elif kind == _SURVEY:
                yield SurveyEvent(eid, account_id, ts, *p)
            else:
                yield AccountEvent(eid, account_id, ts, p[0])

    # --- one event (or one ticket's whole lifecycle) of account i at time ts
    def usage(self, i: int, m: _Mood, ts: float) -> None:
        a, rng = self.accounts[i], self.rng
        name = USAGE_NAMES[bisect_right(USAGE_CUM, rng.random() * USAGE_CUM[-1])]
        # Power users: low indexes of the active pool act more often.
        user = a.users[int(m.users * rng.random() ** 1.6)]
        if name == "feature_used":
            payload = (name, user, FEATURES[int(m.features * rng.random() ** 1.3)], None)
        elif name == "session":
            payload = (name, user, None, round(rng.uniform(3, 90) * (0.4 + 0.6 * m.usage / a.usage_per_day), 1))
        else:
            payload = (name, user, None, None)
        self.push(ts, i, _USAGE, payload)

    def ticket(self, i: int, m: _Mood, ts: float) -> None:
        """Open a ticket and queue its lifecycle: opened < first response < resolved < closed."""
        a, rng = self.accounts[i], self.rng
        self.ticket_no[i] += 1
        tid = f"{a.account_id}-T{self.ticket_no[i]}"
        priority = PRIORITIES[bisect_right(PRIORITY_CUM, rng.random() * PRIORITY_CUM[-1])]
        self.push(ts, i, _TICKET, (tid, "opened", priority, None))
        response = _lognormal_hours(rng, m.response_hours * (0.5 if priority == "urgent" else 1.0))
        t = ts + max(60.0, response * HOUR)
        self.push(t, i, _TICKET, (tid, "first_response", None, response > SLA_HOURS[priority]))
        if rng.random() >= m.resolve_p:
            return  # stays open: this is how churning accounts pile up tickets
        t += max(60.0, _lognormal_hours(rng, m.resolve_hours) * HOUR)
        self.push(t, i, _TICKET, (tid, "resolved", None, None))
        if rng.random() < m.reopen_p:  # the fix did not hold
            t += rng.uniform(2, 48) * HOUR
            self.push(t, i, _TICKET, (tid, "reopened", None, None))
            t += max(60.0, _lognormal_hours(rng, m.resolve_hours) * HOUR)
            self.push(t, i, _TICKET, (tid, "resolved", None, None))
        if rng.random() < 0.9:  # auto-close after the customer's confirmation window
            self.push(t + rng.uniform(24, 72) * HOUR, i, _TICKET, (tid, "closed", None, None))

    def survey(self, i: int, m: _Mood, ts: float) -> None:
        a, rng = self.accounts[i], self.rng
        bad = rng.random() < m.bad
        respondent = a.users[rng.randrange(len(a.users))]
        if rng.random() < 0.7:
            self.push(ts, i, _SURVEY, ("csat", float(_csat(a.profile, bad, rng)), None, respondent))
        else:
            self.push(ts, i, _SURVEY, ("nps", float(_nps(a.profile, bad, rng)), None, respondent))

    def update(self, i: int, m: _Mood, ts: float) -> None:
        a = self.accounts[i]
        self.push(ts, i, _ACCOUNT, (_crm(a, self.rng.random() < m.bad, self.rng),))

    def open_accounts(self, at: float) -> None:
        for i, a in enumerate(self.accounts):
            self.push(at, i, _ACCOUNT, (_attributes(a, at, self.arc.trouble(a.profile, at), self.rng),))


def _business_time(rng: random.Random, offset_hours: int) -> float:
    """Seconds into a UTC day: mostly the account's local business hours, some around the clock."""
    local = rng.triangular(7, 19, 13) if rng.random() < 0.85 else rng.uniform(0, 24)
    return ((local - offset_hours) % 24) * HOUR


def history(accounts: Sequence[SimulatedAccount], start: float, end: float, seed: int = 0,
            *, intensity: float = 1.0) -> Iterator[Event]:
    """Every event of ``accounts`` with ``start <= occurred_at < end``, in occurred_at order.

    Opens with one AccountEvent per account (its attributes) at ``start``. Generated day by
    UTC day; each day's activity follows the account's trajectory at midday (see the module
    doc). Tickets still open at ``end`` simply have no later steps.
    """
    if not end > start:
        raise ValueError(f"end ({end}) must be after start ({start})")
    if not intensity >= 0:
        raise ValueError(f"intensity: expected >= 0, got {intensity}")
    start = math.ceil(start * 1000) / 1000  # the first event sits at start, to the millisecond
    world = _World(accounts, _Arc.over(start, end), random.Random(f"history/{seed}"))
    world.open_accounts(start)
    rng = world.rng
    for day in range(int(start // DAY), math.ceil(end / DAY)):
        lo = day * DAY
        shape = WEEKEND if (day + 3) % 7 >= 5 else WEEKDAY  # day 0 (1970-01-01) was a Thursday
        for i, a in enumerate(world.accounts):
            m = _mood(a, world.arc.trouble(a.profile, lo + DAY / 2))
            for make, rate in ((world.usage, m.usage * shape), (world.ticket, m.tickets * shape),
                               (world.survey, m.surveys), (world.update, m.updates)):
                for _ in range(_poisson(rng, rate * intensity)):
                    ts = lo + _business_time(rng, a.utc_offset_hours)
                    if ts >= start:  # the first day may be partial: nothing precedes the opening
                        make(i, m, ts)
        yield from world.release(min(lo + DAY, end))


def live(accounts: Sequence[SimulatedAccount], start: float, seed: int = 0, rate: float | None = None,
         *, duration: float | None = None, intensity: float = 1.0,
         history_days: float = 60.0) -> Iterator[tuple[float, Event]]:
    """``(send_at, event)`` pairs from ``start`` on, ``send_at == event.occurred_at``, in order.

    The stream continues a history of ``history_days`` that ended at ``start`` (whether or not
    it was published): declining accounts are already at the end of their slope and keep
    sliding, churning ones have collapsed. It opens with one AccountEvent per account.

    ``rate``: target overall events per second (ticket follow-ups included, once tickets
    opened earlier in the run start coming due); None = the base's natural volume times
    ``intensity``. No day/week shape here, so a demo runs at an even pace at any hour.
    Memory: the queued follow-up steps of open tickets, i.e. roughly the ticket events of
    the next day or so; it grows with ``rate``, keep rates demo-sized (hundreds a second).
    Stops at ``start + duration`` if given.
    """
    if rate is not None and not rate > 0:
        raise ValueError(f"rate: expected events per second > 0, got {rate}")
    stop = math.inf if duration is None else start + duration
    world = _World(accounts, _Arc.over(start - history_days * DAY, start), random.Random(f"live/{seed}"))
    rng, n = world.rng, len(world.accounts)
    world.open_accounts(start)
    t = start
    refresh = 600.0  # moods move over days: re-read them every 10 simulated minutes
    while t < stop and n:
        moods = [_mood(a, world.arc.trouble(a.profile, t)) for a in world.accounts]
        natural = sum(m.volume() for m in moods) / DAY  # events per second at intensity 1
        scale = rate / natural if rate is not None and natural > 0 else intensity
        # Primary draws (usage, ticket opening, survey, update): pick an account by its rate,
        # then what it does by its own split. Equivalent to one Poisson process per account.
        weights = [(m.usage, m.tickets, m.surveys, m.updates) for m in moods]
        acc_cum = list(accumulate(sum(w) for w in weights))
        per_sec = acc_cum[-1] * scale / DAY
        # Slices of ~2000 events keep the queue small at any rate.
        step = min(refresh, max(1.0, 2000 / per_sec)) if per_sec > 0 else refresh
        t_next = min(t + refresh, stop)
        while t < t_next:
            hi = min(t + step, t_next)
            for _ in range(_poisson(rng, per_sec * (hi - t))):
                i = min(n - 1, bisect_right(acc_cum, rng.random() * acc_cum[-1]))
                u, tk, sv, up = weights[i]
                x = rng.random() * (u + tk + sv + up)
                make = (world.usage if x < u else world.ticket if x < u + tk
                        else world.survey if x < u + tk + sv else world.update)
                make(i, moods[i], t + rng.random() * (hi - t))
            for event in world.release(hi):
                yield event.occurred_at, event
            t = hi


def kind_mix(events: Iterable[Event]) -> dict[str, float]:
    """Share of each event kind by count ({kind: 0..1}, every kind present; all 0 when empty)."""
    counts = Counter(e.kind for e in events)
    total = sum(counts.values())
    return {k: (counts[k] / total if total else 0.0) for k in EVENT_KINDS}
