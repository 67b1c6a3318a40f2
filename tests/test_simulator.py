"""The simulated customer base: deterministic, ordered, consistent, and the profiles behave as named."""
from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from itertools import islice

import pytest

from schemas.events import TICKET_ACTIONS
from streams.tools.simulator import CustomerMix, SimulatedAccount, customer_base, history, kind_mix, live

DAY = 86400.0
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z, a Thursday
DAYS = 60
END = START + DAYS * DAY


@pytest.fixture(scope="module")
def base() -> list[SimulatedAccount]:
    return customer_base(60, CustomerMix(), seed=7)


@pytest.fixture(scope="module")
def events(base) -> list:
    """One 60-day history shared by the tests of this module (~190k events, about a second)."""
    return list(history(base, START, END, seed=7))


def _by_profile(base) -> dict[str, list[str]]:
    groups = defaultdict(list)
    for a in base:
        groups[a.profile].append(a.account_id)
    return groups


def _usage_per_account_day(events, base, lo_day: float, hi_day: float) -> dict[str, float]:
    """Mean usage events per account and day of each profile in days [lo_day, hi_day)."""
    profile = {a.account_id: a.profile for a in base}
    lo, hi = START + lo_day * DAY, START + hi_day * DAY
    counts = Counter(profile[e.account_id] for e in events if e.kind == "usage" and lo <= e.occurred_at < hi)
    sizes = Counter(profile.values())
    return {p: counts[p] / sizes[p] / (hi_day - lo_day) for p in sizes}


# ----------------------------------------------------------------- the base

def test_mix_is_validated_and_normalised():
    mix = CustomerMix(healthy=2, declining=1, churning=1)
    assert (mix.healthy, mix.declining, mix.churning) == (0.5, 0.25, 0.25)
    with pytest.raises(ValueError, match="declining"):
        CustomerMix(declining=-0.1)
    with pytest.raises(ValueError, match="all be 0"):
        CustomerMix(0, 0, 0)


def test_customer_base_is_deterministic_varied_and_follows_the_mix():
    accounts = customer_base(200, CustomerMix(), seed=1)
    assert accounts == customer_base(200, CustomerMix(), seed=1)
    assert accounts != customer_base(200, CustomerMix(), seed=2)
    assert accounts[41].account_id == "acct-00042"
    assert len({a.account_id for a in accounts}) == 200
    assert Counter(a.profile for a in accounts) == {"healthy": 140, "declining": 40, "churning": 20}
    assert Counter(a.profile for a in customer_base(10, CustomerMix(), seed=3)) == {
        "healthy": 7, "declining": 2, "churning": 1}
    assert {a.plan for a in accounts} == {"starter", "business", "enterprise"}
    assert len({a.tier for a in accounts}) >= 3 and len({a.seats for a in accounts}) > 50
    stages = Counter(a.lifecycle_stage for a in accounts)
    assert 3 <= stages["onboarding"] <= 40 and len(stages) >= 3
    assert any(a.plan == "enterprise" and a.seats >= 100 for a in accounts)  # the enterprise segment
    for a in accounts:
        assert 1 <= len(a.users) <= a.seats and len(set(a.users)) == len(a.users)
        assert 20 * 0.6 <= a.usage_per_day <= 70


def test_only_profiles_of_the_mix_appear():
    assert {a.profile for a in customer_base(30, CustomerMix(healthy=0, declining=1, churning=0), 0)} == {"declining"}


# ---------------------------------------------------------------- history

def test_history_is_deterministic_for_a_seed(base):
    few = base[:5]
    one = list(history(few, START, START + 5 * DAY, seed=11))
    assert one == list(history(few, START, START + 5 * DAY, seed=11))
    assert one != list(history(few, START, START + 5 * DAY, seed=12))


def test_history_is_ordered_bounded_and_ids_are_unique(events):
    times = [e.occurred_at for e in events]
    assert times == sorted(times)
    assert START <= times[0] and times[-1] < END
    assert len({e.event_id for e in events}) == len(events)
    assert all(e.event_id.startswith(e.account_id + "-") for e in islice(events, 1000))


def test_history_opens_with_the_attributes_of_every_account(events, base):
    opening = events[: len(base)]
    assert {e.kind for e in opening} == {"account"} and all(e.occurred_at == START for e in opening)
    assert {e.account_id for e in opening} == {a.account_id for a in base}
    for e in opening:
        attrs = e.attributes
        assert {"seats", "plan", "tier", "lifecycle_stage", "csm_rating", "uptime_pct", "renewal_date", "mrr"} <= set(attrs)
        assert 0 <= attrs["csm_rating"] <= 10 and 90 <= attrs["uptime_pct"] <= 100


def test_history_starting_mid_day_has_nothing_before_start(base):
    start = START + 15.5 * 3600 + 0.0004
    evs = list(history(base[:10], start, start + 2 * DAY, seed=1))
    assert all(e.occurred_at >= start for e in evs)
    assert evs[0].kind == "account"


def test_ticket_lifecycles_are_ordered(events):
    rank = {action: i for i, action in enumerate(TICKET_ACTIONS)}
    steps = defaultdict(list)
    for e in events:
        if e.kind == "ticket":
            steps[e.ticket_id].append(e)
    assert len(steps) > 500
    for ticket_id, lifecycle in steps.items():
        actions = [e.action for e in lifecycle]
        assert actions[0] == "opened" and actions.count("opened") == 1, (ticket_id, actions)
        times = [e.occurred_at for e in lifecycle]
        assert times == sorted(times) and len(set(times)) == len(times), (ticket_id, actions)
        if len(actions) > 1:
            assert actions[1] == "first_response"
        if "closed" in actions:
            assert actions[-1] == "closed" and "resolved" in actions
        if "reopened" in actions:
            i = actions.index("reopened")
            # resolved again later, unless the history ended first
            assert actions[i - 1] == "resolved" and ("resolved" in actions[i + 1:] or i == len(actions) - 1)
        assert all(rank[a] >= rank["first_response"] for a in actions[1:])


def test_kind_mix_is_close_to_80_15_5(events):
    mix = kind_mix(events)
    assert mix["usage"] == pytest.approx(0.80, abs=0.04)
    assert mix["ticket"] == pytest.approx(0.15, abs=0.03)
    assert mix["survey"] == pytest.approx(0.05, abs=0.02)
    assert 0 < mix["account"] < 0.01
    assert sum(mix.values()) == pytest.approx(1.0)


def test_kind_mix_counts_shares():
    assert kind_mix([]) == {"usage": 0.0, "ticket": 0.0, "survey": 0.0, "account": 0.0}
    evs = list(history(customer_base(2, seed=0), START, START + DAY, seed=0))
    mix = kind_mix(evs)
    assert mix["account"] == pytest.approx(sum(e.kind == "account" for e in evs) / len(evs))


def test_healthy_volume_is_20_to_60_usage_events_a_day(events, base):
    per_day = _usage_per_account_day(events, base, 0, DAYS)
    assert 20 <= per_day["healthy"] <= 60


def test_intensity_scales_the_volume(base):
    few = base[:10]
    full = sum(1 for _ in history(few, START, START + 7 * DAY, seed=3))
    half = sum(1 for _ in history(few, START, START + 7 * DAY, seed=3, intensity=0.5))
    assert half == pytest.approx(full / 2, rel=0.1)


def test_profiles_follow_their_trajectories(events, base):
    first = _usage_per_account_day(events, base, 0, 14)
    last = _usage_per_account_day(events, base, DAYS - 14, DAYS)
    last_week = _usage_per_account_day(events, base, DAYS - 7, DAYS)
    assert last["healthy"] == pytest.approx(first["healthy"], rel=0.15)  # steady
    assert last["declining"] < 0.5 * first["declining"]  # falls over the second half
    assert last_week["churning"] < 0.02 * first["churning"]  # collapsed to near zero


def test_active_users_fall_for_declining_accounts(events, base):
    groups = _by_profile(base)

    def active(account_id: str, lo_day: float, hi_day: float) -> int:
        lo, hi = START + lo_day * DAY, START + hi_day * DAY
        return len({e.user_id for e in events if e.account_id == account_id and e.kind == "usage"
                    and lo <= e.occurred_at < hi})

    declining = groups["declining"]
    first = sum(active(a, 0, 14) for a in declining)
    last = sum(active(a, DAYS - 14, DAYS) for a in declining)
    assert last < 0.6 * first


def test_sentiment_support_and_crm_differ_by_profile(events, base):
    profile = {a.account_id: a.profile for a in base}
    late = START + (DAYS - 14) * DAY
    scores = defaultdict(list)  # (profile, survey) -> answers in the last 14 days
    breached, responded = Counter(), Counter()
    states: dict[str, str] = {}  # ticket -> last action
    csm: dict[str, float] = {}
    for e in events:
        p = profile[e.account_id]
        if e.kind == "survey" and e.occurred_at >= late:
            scores[p, e.survey].append(e.score)
        elif e.kind == "ticket":
            states[e.ticket_id] = e.action
            if e.action == "first_response" and e.occurred_at >= START + DAYS / 2 * DAY:
                responded[p] += 1
                breached[p] += bool(e.sla_breached)
        elif e.kind == "account" and "csm_rating" in e.attributes:
            csm[e.account_id] = e.attributes["csm_rating"]

    assert min(scores["healthy", "csat"]) >= 4 and min(scores["healthy", "nps"]) >= 9
    assert statistics.mean(scores["declining", "csat"]) <= 3.3
    assert 4.5 <= statistics.mean(scores["declining", "nps"]) <= 7.5
    assert statistics.mean(scores["churning", "nps"]) <= 4.5  # detractors

    share = {p: breached[p] / responded[p] for p in ("healthy", "declining")}
    assert share["declining"] > 2 * share["healthy"]

    open_per_account = Counter(profile[t.rsplit("-T", 1)[0]] for t, last in states.items()
                               if last in ("opened", "first_response", "reopened"))
    sizes = Counter(profile.values())
    assert open_per_account["churning"] / sizes["churning"] > 3 * open_per_account["healthy"] / sizes["healthy"]

    groups = _by_profile(base)
    assert statistics.mean(csm[a] for a in groups["churning"]) <= 4
    assert statistics.mean(csm[a] for a in groups["healthy"]) >= 7


# -------------------------------------------------------------------- live

def test_live_is_deterministic_ordered_and_paced(base):
    few = base[:20]
    one = list(live(few, START, seed=5, rate=50.0, duration=1800))
    assert one == list(live(few, START, seed=5, rate=50.0, duration=1800))
    send_times = [t for t, _ in one]
    assert send_times == sorted(send_times) and all(t == e.occurred_at for t, e in one)
    assert START <= send_times[0] and send_times[-1] < START + 1800
    assert len({e.event_id for _, e in one}) == len(one)
    assert {e.account_id for _, e in one[:20]} == {a.account_id for a in few}  # opens with attributes
    # Target rate; ticket follow-ups opened during the run come due later, so a bit below.
    assert 0.8 * 50 <= len(one) / 1800 <= 1.1 * 50


def test_live_profiles_keep_evolving(base):
    """A declining account keeps declining after the history it continues."""
    declining = [a for a in base if a.profile == "declining"]
    counts = Counter()
    for t, e in live(declining, START, seed=2, duration=10 * DAY):
        if e.kind == "usage":
            counts[int((t - START) // DAY)] += 1
    assert counts[9] < 0.7 * counts[0]


def test_live_is_endless_without_duration(base):
    stream = live(base[:3], START, seed=1, rate=10.0)
    assert len(list(islice(stream, 5000))) == 5000
