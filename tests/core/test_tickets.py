"""Ticket episodes and their folding (issue 10, part 5): the state keeps a ticket individually only while
an event that could still be accepted may change it; then its figures go to daily aggregates. The stream's
ticket measures equal the batch twin's (which splits episodes from the whole event set) in any arrival
order within the allowed lateness, on the day of the newest event and on every silent day after it."""
import orjson
from hypothesis import HealthCheck, given, settings, strategies as st

from schemas.events import TicketEvent
from streams.core import DEFAULT_MODEL_PATH, load_model
from streams.core.batch import EventLog, ticket_episodes
from streams.core.days import DAY, HOUR, day_of
from streams.core.state import T_FIRST, T_RESOLVED, AccountState, ticket_episode_minutes

from .helpers import T0, roundtrip, ticket, usage

MODEL = load_model(DEFAULT_MODEL_PATH)
CFG = MODEL.state
LATENESS = CFG.lateness_of["ticket"]
RETENTION = CFG.retention_days
assert LATENESS == 7 * DAY
WINDOWS = (None, 1, 7, 30)


def measures(src, day: int) -> tuple:
    """Every ticket query a measure makes, for the day evaluated ``day``."""
    out = [src.open_tickets(), src.last_kind_day("ticket"), src.has_data()]
    for w in WINDOWS:
        lo = day - (w or RETENTION) + 1  # no window: every retained day
        out += [src.ticket_durations(lo, T_FIRST), src.ticket_durations(lo, T_RESOLVED), src.sla(lo)]
    return tuple(out)


def twin(events, day: int) -> tuple:
    start = (day - RETENTION + 1) * DAY
    log = EventLog([e for e in events if e.occurred_at >= start], ticket_episodes(events, ticket_episode_minutes(CFG)))
    return measures(log, day)


def stream(state: AccountState, day: int) -> tuple:
    state.lo = day - RETENTION + 1  # as the engine sets it per day evaluated
    return measures(state, day)


def feed(batches, state=None):
    """Apply batches as the engine does (advance, apply, prune), with a table round trip after each."""
    for now, events in batches:
        if state is None:
            state = AccountState.new(now, CFG, events)
        state.advance(day_of(now), CFG)
        for e in events:
            state.apply(e, now, CFG)
        state.prune_fingerprints(CFG)
        state = roundtrip(state)
    return state


# ------------------------------------------------------------------------------------- examples
def test_a_ticket_reopened_after_a_week_is_a_new_episode_and_folds():
    t = [ticket("a1", T0, "T1", "opened", id="o"), ticket("a1", T0 + HOUR, "T1", "first_response", id="f"),
         ticket("a1", T0 + 5 * HOUR, "T1", "resolved", id="r"),
         ticket("a1", T0 + 9 * DAY, "T1", "reopened", id="x"), ticket("a1", T0 + 10 * DAY, "T1", "resolved", id="y")]
    st = feed([(e.occurred_at + 60, [e]) for e in t])
    day = day_of(T0 + 10 * DAY)
    # the first episode's figures only: 5 hours to resolve, not 10 days; the second has no opening
    assert stream(st, day)[3 + 3 * 3 + 1] == (300, 1)  # window 30: resolution minutes, episodes
    assert stream(st, day) == twin(t, day)
    assert list(st.tk) == ["T1"] and len(st.tk["T1"]) == 4  # both episodes live: an event may still reach either
    # a week (lateness) after the first episode's end (its resolution + a week), it folds: same figures
    later = ticket("a1", T0 + 5 * HOUR + 14 * DAY + HOUR, "T9", "opened", id="z")
    st = feed([(later.occurred_at + 60, [later])], st)
    day = day_of(later.occurred_at)
    assert st.tf and len(st.tk["T1"]) == 3 and stream(st, day) == twin(t + [later], day)
    # another week later the second episode folds and the closed ticket is forgotten, its recency kept
    last = ticket("a1", T0 + 25 * DAY, "T9", "closed", id="w")
    st = feed([(last.occurred_at + 60, [last])], st)
    assert "T1" not in st.tk and st.tl is not None
    day = day_of(last.occurred_at)
    for d in range(day, day + RETENTION + 2):  # and on every silent day after
        assert stream(st, d) == twin(t + [later, last], d), d


def test_an_event_of_the_first_episode_arriving_after_one_of_the_next_is_routed_to_the_first():
    o = ticket("a1", T0, "T1", "opened", id="o")
    r = ticket("a1", T0 + DAY, "T1", "resolved", id="r")
    nxt = ticket("a1", T0 + 9 * DAY, "T1", "opened", id="n")  # a week and a day after the resolution
    f = ticket("a1", T0 + 7 * DAY, "T1", "first_response", True, id="f")  # late, but within the lateness
    st = feed([(T0 + DAY + 60, [o, r]), (T0 + 9 * DAY + 60, [nxt]), (T0 + 9 * DAY + 120, [f])])
    assert len(st.tk["T1"]) == 4  # two live episodes
    day = day_of(T0 + 9 * DAY)
    assert stream(st, day) == twin([o, r, nxt, f], day)
    assert st.sla(None) == (2, 1)  # two episodes opened; the first breached its SLA


def test_an_episode_folds_only_once_no_acceptable_event_can_reach_it():
    o = ticket("a1", T0, "T1", "opened", id="o")
    r = ticket("a1", T0 + HOUR, "T1", "resolved", id="r")
    push = ticket("a1", T0 + HOUR + 2 * LATENESS, "T2", "opened", id="p")  # the kind's newest event
    f = ticket("a1", T0 + HOUR + LATENESS, "T1", "first_response", id="f")  # the episode's last minute
    st = feed([(T0 + HOUR + 60, [o, r]), (push.occurred_at + 60, [push])])
    assert len(st.tk["T1"]) == 3  # not folded: an event as old as the episode's end is still accepted
    g = ticket("a1", f.occurred_at + 60, "T1", "opened", id="g")  # a minute after its end: the next episode
    st = feed([(push.occurred_at + 120, [f, g])], st)
    day = day_of(push.occurred_at)
    assert stream(st, day) == twin([o, r, push, f, g], day)
    assert st.ticket_durations(None, T_FIRST) == (7 * 24 * 60 + 60, 1)  # a week and an hour after opening
    assert st.sla(None) == (3, 0)  # T1's two episodes and T2
    later = ticket("a1", push.occurred_at + 60, "T2", "first_response", id="l")  # a minute on: it folds
    st = feed([(later.occurred_at + 60, [later])], st)
    assert len(st.tk["T1"]) == 3 and st.tk["T1"][2][0] is not None and st.tf  # folded; the next one live
    assert stream(st, day) == twin([o, r, push, f, g, later], day)


def test_a_ticket_whose_activity_left_the_retained_days_keeps_the_end_of_its_episode():
    # another kind slides the retained days past the ticket's resolution; its episode still decides where the
    # ticket's next events go (found by a second read: the ticket and its anchor were dropped together)
    r0 = ticket("a1", T0 + 40 * DAY + 20 * HOUR, "T1", "resolved", id="r0")  # its episode ends on day 47.8
    u = usage("a1", T0 + 100 * DAY, id="u")  # the retained days now start on day 41
    o = ticket("a1", T0 + 41 * DAY + HOUR, "T1", "opened", id="o")  # the same episode
    r1 = ticket("a1", T0 + 48 * DAY, "T1", "resolved", id="r1")  # after its end: the next one
    st = feed([(r0.occurred_at + 60, [r0]), (u.occurred_at + 60, [u]), (u.occurred_at + 120, [o]),
               (u.occurred_at + 180, [r1])])
    day = day_of(u.occurred_at)
    assert stream(st, day) == twin([r0, o, r1], day)
    assert st.ticket_durations(None, T_RESOLVED) == (0, 0)  # r1 is not timed from o
    assert st.open_tickets() == 0 and st.last_kind_day("ticket") == day_of(r1.occurred_at)


def test_an_expired_resolution_in_a_first_batch_still_ends_its_episode():
    # one batch of history: its newest event puts the first resolution before the retained days
    r0 = ticket("a1", T0 + 12 * HOUR, "T1", "resolved", id="r0")  # its episode ends on day 7 12:00
    o = ticket("a1", T0 + 6 * DAY + 12 * HOUR, "T1", "opened", id="o")
    r1 = ticket("a1", T0 + 7 * DAY + 13 * HOUR, "T1", "resolved", id="r1")  # the next episode
    x = ticket("a1", T0 + 61 * DAY, "T2", "opened", id="x")
    events = [r0, o, r1, x]
    day = day_of(x.occurred_at)
    one = feed([(x.occurred_at + 60, events)])
    two = feed([(r1.occurred_at + 60, [r0, o, r1]), (x.occurred_at + 60, [x])])
    assert stream(one, day) == stream(two, day) == twin(events, day)
    assert one.ticket_durations(None, T_RESOLVED) == (0, 0)


def test_old_ticket_records_migrate_on_load():
    old = {"d0": day_of(T0) - RETENTION + 1, "wm": {"ticket": T0 + 3 * HOUR},
           "tk": {"T1": [(RETENTION - 1) * 1440, (RETENTION - 1) * 1440 + 60, (RETENTION - 1) * 1440 + 180,
                         (RETENTION - 1) * 1440 + 180, 3, None]}}
    st = AccountState.from_dict(orjson.loads(orjson.dumps(old)))
    day = day_of(T0)
    events = [ticket("a1", T0, "T1", "opened", id="o"), ticket("a1", T0 + HOUR, "T1", "first_response", id="f"),
              ticket("a1", T0 + 3 * HOUR, "T1", "resolved", id="r")]
    assert stream(st, day) == twin(events, day)
    assert st.to_dict()["tk"]["T1"][2][4] == st.to_dict()["tk"]["T1"][2][2]  # anchored at its resolution


# ------------------------------------------------------------------------------------- property
TIDS = ("T1", "T2", "T3")
# whole days often, so events fall exactly on an episode's end (a week after a resolution) or a minute after
when = st.one_of(st.floats(0, 40 * DAY, allow_nan=False), st.integers(0, 40).map(lambda d: d * DAY),
                 st.integers(0, 40).map(lambda d: d * DAY + 60))
# A ticket's first `opened` and first response are kept as minimums (the state holds no other): at most one
# of each per ticket here, as two of them straddling the retention boundary differ from the twin (a
# limitation older than episodes, see the note on issue 10). Resolutions, reopenings, closings and breach
# flags come in any number.
late = st.one_of(st.floats(0, 0.999), st.floats(0.9, 0.999))  # a share of the allowed lateness, often most
once = st.tuples(st.sampled_from(("opened", "first_response")), st.sampled_from(TIDS), when, st.booleans(), late)
many = st.tuples(st.sampled_from(("resolved", "reopened", "closed")), st.sampled_from(TIDS), when, st.booleans(), late)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(firsts=st.lists(once, max_size=6, unique_by=lambda x: (x[0], x[1])), rest=st.lists(many, max_size=30),
       cuts=st.lists(st.integers(1, 40), max_size=8), silent=st.lists(st.integers(0, RETENTION + 5), max_size=4))
def test_stream_ticket_measures_equal_the_twin_in_any_order(firsts, rest, cuts, silent):
    specs = firsts + rest
    if not specs:
        return
    events = [TicketEvent(f"e{i}", "a1", T0 + round(x, 3), tid, action, None, breach)
              for i, (action, tid, x, breach, _) in enumerate(specs)]
    # arrival order: each event displaced by less than the ticket kind's allowed lateness
    arrivals = [e for _, e in sorted(((e.occurred_at + s[4] * LATENESS, i), e)
                                     for i, (e, s) in enumerate(zip(events, specs)))]
    bounds = sorted({c for c in cuts if c < len(arrivals)})
    batches, now = [], T0
    for a, b in zip([0] + bounds, bounds + [len(arrivals)]):
        now = max([now] + [e.occurred_at for e in arrivals[a:b]]) + 60
        batches.append((now, arrivals[a:b]))
    st_ = feed(batches)
    assert all(st_.apply(e, now, CFG) in ("duplicate", "late") for e in events)  # nothing new on redelivery
    newest = day_of(max(e.occurred_at for e in events))
    for d in [newest] + [newest + s for s in silent]:
        assert stream(st_, d) == twin(events, d), d


def test_expired_resolutions_of_many_tickets_stay_within_the_tickets_limit():
    from streams.core.state import STATE_LIMITS
    x = usage("a1", T0 + 61 * DAY, id="x")  # the retained days start on day 2
    hostile = [ticket("a1", T0 + 30 * HOUR, f"H{i}", "resolved", id=f"h{i}")  # expired, within reach of them
               for i in range(STATE_LIMITS.tickets + 50)]
    st = feed([(x.occurred_at + 60, [x] + hostile)])
    assert len(st.tk) == STATE_LIMITS.tickets
