"""Silence never helps (issue 11, finding 3): with no new event an account's score never rises as
time passes, under the shipped model, on random histories of every event kind; the stream's timer
and the batch twin agree on every silent day; a new event starts the floor again."""
from hypothesis import HealthCheck, given, settings, strategies as st

from streams.core import apply_events, last_score, load_model, needs_reevaluation, reevaluate, score_all
from streams.core.engine import floor_pending
from streams.core.days import DAY

from .helpers import DEFAULT_YAML, T0, usage
from .test_properties import build, spec_st

SHIPPED = load_model(DEFAULT_YAML)


def _streamed(events, model):
    """Each event applied as it happens (the clock a minute behind it), as a live worker would."""
    states = {}
    for e in sorted(events, key=lambda e: e.occurred_at):
        states[e.account_id] = apply_events(states.get(e.account_id), e.account_id, [e], model,
                                            e.occurred_at + 60).state
    return states


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=spec_st, silent_days=st.integers(1, 100), step=st.integers(1, 9))
def test_no_score_rises_on_the_silent_days_after_the_last_event(specs, silent_days, step):
    events = build(specs)
    end = max(e.occurred_at for e in events)
    states = _streamed(events, SHIPPED)
    before = {acc: last_score(state, acc, SHIPPED) for acc, state in states.items()}
    for day in range(step, silent_days + 1, step):  # the timer, every `step` days (a worker down between)
        now = end + day * DAY
        twin = score_all(events, SHIPPED, now)
        for acc, state in states.items():
            up = reevaluate(state, acc, SHIPPED, now)
            states[acc] = up.state
            score = last_score(up.state, acc, SHIPPED)
            assert score == twin[acc]
            old = before[acc]
            if old is not None and old.score is not None:
                assert score.score is not None and score.score <= old.score, (acc, day, old.score, score.score)
            before[acc] = score


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=spec_st, days=st.lists(st.integers(0, 100), min_size=2, max_size=6))
def test_the_batch_twin_alone_never_rises_with_the_clock(specs, days):
    events = build(specs)
    end = max(e.occurred_at for e in events)
    scores = [score_all(events, SHIPPED, end + d * DAY) for d in sorted(days)]
    for earlier, later in zip(scores, scores[1:]):
        for acc, s in earlier.items():
            if s.score is not None:
                assert later[acc].score is not None and later[acc].score <= s.score


def test_the_issue_11_account_that_stops_all_activity_falls_and_a_new_event_starts_again():
    # the finding: under the shipped model an account that stopped all activity scored 48.4 after 45
    # silent days and 50.6 after 59 (its bad data aged out, the rest re-spread)
    events = [usage("a1", T0 + d * DAY + h * 3600, name=n, user=f"u{h % 3}", feature=f, id=f"{d}-{h}-{n}")
              for d in range(30) for h in range(0, 24, 6)
              for n, f in (("login", None), ("feature_used", "reports"), ("page_view", None))]
    end = T0 + 30 * DAY
    by_day = {d: score_all(events, SHIPPED, end + d * DAY)["a1"].score for d in (1, 15, 30, 45, 59, 75)}
    assert all(a >= b for a, b in zip(list(by_day.values()), list(by_day.values())[1:])), by_day
    assert by_day[59] < by_day[1]
    # a login today is news: the floor starts again at its day (the score may rise)
    back = apply_events(_streamed(events, SHIPPED)["a1"], "a1", [usage("a1", end + 59 * DAY, id="back")], SHIPPED,
                        end + 59 * DAY + 60)
    assert back.state.pub.get("n") is None and back.state.pub.get("a") is None  # evaluated on today alone
    assert back.score is not None and back.score.score == score_all(events + [usage("a1", end + 59 * DAY, id="back")],
                                                                     SHIPPED, end + 59 * DAY + 60)["a1"].score


def test_a_batch_of_history_leaves_the_floor_pending_until_one_reevaluation_finishes_it():
    # a backfill: one evaluation per batch, the days since evaluated once, as history (no alert)
    events = [usage("a1", T0 + d * DAY + h * 3600, name=n, user=f"u{h % 3}", feature=f, id=f"{d}-{h}-{n}")
              for d in range(30) for h in range(0, 24, 6)
              for n, f in (("login", None), ("feature_used", "reports"), ("page_view", None))]
    now = T0 + 100 * DAY  # 70 silent days: nothing of it is retained today
    up = apply_events(None, "a1", events, SHIPPED, now)
    assert floor_pending(up.state) and needs_reevaluation(up.state, SHIPPED, now)
    assert not needs_reevaluation(up.state, SHIPPED, now, pending_floor=False)  # as while catching up
    floor = score_all(events, SHIPPED, now)["a1"]
    pending = last_score(up.state, "a1", SHIPPED)
    assert pending.score is None  # today alone: no data
    assert floor.score == 28.57 and floor.band is not None
    done = reevaluate(up.state, "a1", SHIPPED, now)
    assert not floor_pending(done.state) and not needs_reevaluation(done.state, SHIPPED, now)
    assert last_score(done.state, "a1", SHIPPED) == score_all(events, SHIPPED, now)["a1"]
    assert done.score is not None and done.score.score == score_all(events, SHIPPED, now)["a1"].score
    assert done.alerts == ()
    # today's events are evaluated at once (the floor's one day)
    fresh = apply_events(done.state, "a1", [usage("a1", now + 30, id="today")], SHIPPED, now + 60)
    assert not floor_pending(fresh.state)
    assert last_score(fresh.state, "a1", SHIPPED) == score_all(events + [usage("a1", now + 30, id="today")],
                                                               SHIPPED, now + 60)["a1"]


def test_a_clock_gone_back_evaluates_the_floor_afresh():
    # worker A rescored a silent account just after midnight; worker B, its clock seconds behind, the same
    # account just before it: B must not keep A's floor of a day it has not reached
    events = [usage("a1", T0 + d * DAY + h * 3600, name=n, user=f"u{h % 3}", id=f"{d}-{h}-{n}")
              for d in range(30) for h in range(0, 24, 8) for n in ("login", "page_view")]
    state = _streamed(events, SHIPPED)["a1"]
    end = T0 + 30 * DAY
    for k in range(1, 26):
        state = reevaluate(state, "a1", SHIPPED, end + k * DAY + 30).state
    behind = end + 25 * DAY - 1
    again = reevaluate(state, "a1", SHIPPED, behind)
    assert last_score(again.state, "a1", SHIPPED) == score_all(events, SHIPPED, behind)["a1"]
