"""Property tests: the stream equals its batch twin in any order within the allowed
lateness, with duplicates and table round trips, and on the silent days after (the timer);
scores stay in 0..100; the order of components in the model file does not matter."""
import copy

from hypothesis import HealthCheck, given, settings, strategies as st

from schemas.events import AccountEvent, SurveyEvent, TicketEvent, UsageEvent
from streams.core import apply_events, current_score, last_score, parse_model, reevaluate, score_all
from streams.core.days import DAY

from .helpers import T0, default_dict, roundtrip

DOC = default_dict()
# extra components so every measure type takes part
DOC["measures"].update({
    "minutes_30d": {"type": "value_sum", "events": ["session"], "window_days": 30},
    "minutes_avg_30d": {"type": "value_avg", "events": ["session"], "window_days": 30},
    "resolution_hours_30d": {"type": "mean_resolution_hours", "window_days": 30},
    "features_vs_plan": {"type": "feature_adoption", "window_days": 20, "expected_count_attribute": "features"},
    "days_to_renewal": {"type": "days_until", "attribute": "renewal_date"},
    "tenure_days": {"type": "days_since", "attribute": "contract_start"},
    "sentiment": {"type": "category", "attribute": "csm_sentiment",
                  "points": {"positive": 100, "neutral": 50, "negative": 0}},
})
DOC["components"].update({
    "minutes": {"measure": "minutes_30d", "scoring": {"type": "linear", "worst": 0, "best": 300},
                "section": "adoption", "weight": 1},
    "minutes_avg": {"measure": "minutes_avg_30d", "scoring": {"type": "linear", "worst": 0, "best": 30},
                    "section": "adoption", "weight": 1, "missing": "neutral"},
    "resolution": {"measure": "resolution_hours_30d", "scoring": {"type": "linear", "worst": 72, "best": 4},
                   "section": "support", "weight": 1},
    "features_vs_plan": {"measure": "features_vs_plan", "scoring": {"type": "linear", "worst": 0, "best": 100},
                         "section": "adoption", "weight": 0.5},
    "renewal": {"measure": "days_to_renewal", "scoring": {"type": "linear", "worst": 0, "best": 180},
                "section": "relationship", "weight": 0.5},
    "tenure": {"measure": "tenure_days", "scoring": {"type": "linear", "worst": 0, "best": 365},
               "section": "relationship", "weight": 0.5, "missing": "neutral"},
    "sentiment": {"measure": "sentiment", "scoring": {"type": "linear", "worst": 0, "best": 100},
                  "section": "relationship", "weight": 1},
})
MODEL = parse_model(DOC, source="property-model")
LATENESS = MODEL.state.allowed_lateness_seconds  # the shortest (usage)
LATENESS_OF = MODEL.state.lateness_of
assert LATENESS_OF["ticket"] == LATENESS_OF["survey"] == LATENESS_OF["account"] == 7 * DAY > LATENESS
SPAN_DAYS = 75  # longer than the retention, so expiry and pruning take part
ACCOUNTS = ("acc-a", "acc-b", "acc-c")

ts_st = st.floats(min_value=0, max_value=SPAN_DAYS * DAY, allow_nan=False).map(lambda x: T0 + round(x, 3))
usage_st = st.builds(
    lambda acc, ts, name, user, feature, value: ("usage", acc, ts, (name, user, feature, value)),
    st.sampled_from(ACCOUNTS), ts_st, st.sampled_from(["login", "page_view", "session", "feature_used"]),
    st.one_of(st.none(), st.sampled_from(["u1", "u2", "u3", "u4"])),
    st.one_of(st.none(), st.sampled_from(["api", "reports", "alerts", "mobile", "exports"])),
    st.one_of(st.none(), st.floats(min_value=0, max_value=120, allow_nan=False)))
ticket_st = st.builds(
    lambda acc, ts, d1, d2, d3, reopen, breach: ("ticket", acc, ts, (d1, d2, d3, reopen, breach)),
    st.sampled_from(ACCOUNTS), ts_st, st.one_of(st.none(), st.floats(60, 2 * DAY)),
    st.one_of(st.none(), st.floats(60, 5 * DAY)), st.one_of(st.none(), st.floats(60, DAY)),
    st.booleans(), st.booleans())
survey_st = st.builds(
    lambda acc, ts, kind, score, scale: ("survey", acc, ts, (kind, score, scale)),
    st.sampled_from(ACCOUNTS), ts_st, st.sampled_from(["csat", "nps"]), st.integers(0, 10),
    st.sampled_from([None, 10]))
account_st = st.builds(
    lambda acc, ts, a: ("account", acc, ts, a), st.sampled_from(ACCOUNTS), ts_st,
    st.dictionaries(st.sampled_from(["seats", "csm_rating", "uptime_pct", "plan", "lifecycle_stage", "features",
                                     "renewal_date", "contract_start", "csm_sentiment"]),
                    st.one_of(st.none(), st.integers(0, 120), st.sampled_from([99.95, 99.2, 96.0]),
                              st.sampled_from(["onboarding", "enterprise", "starter"]),
                              st.sampled_from(["2024-11-30", "2025-02-29", "2025-03-01T00:00:00Z", "soon",
                                               float(T0 + 40 * DAY), "2027-W10-1", "0000-01-01", "2024-1-05"]),
                              st.sampled_from(["Positive", " neutral", "NEGATIVE", "meh", "POSİTİVE"])),
                    min_size=1, max_size=3))
spec_st = st.lists(st.one_of(usage_st, usage_st, usage_st, ticket_st, survey_st, account_st), min_size=1, max_size=120)


def build(specs):
    events = []
    for i, (kind, acc, ts, x) in enumerate(specs):
        eid = f"{acc}-{i}"
        if kind == "usage":
            name, user, feature, value = x
            events.append(UsageEvent(eid, acc, ts, name, user, feature, value))
        elif kind == "ticket":  # one ticket life: opened, maybe first response, resolved, reopened/closed
            d1, d2, d3, reopen, breach = x
            tid = f"T{i}"
            events.append(TicketEvent(eid + "o", acc, ts, tid, "opened", "high", None))
            if d1 is not None:
                events.append(TicketEvent(eid + "f", acc, ts + d1, tid, "first_response", None, breach))
            if d2 is not None:
                events.append(TicketEvent(eid + "r", acc, ts + d2, tid, "resolved", None, None))
                if d3 is not None:
                    events.append(TicketEvent(eid + "c", acc, ts + d2 + d3, tid, "reopened" if reopen else "closed"))
        elif kind == "survey":
            kind_, score, scale = x
            score = max(score, 1) if kind_ == "csat" and scale is None else score
            score = min(score, 5) if kind_ == "csat" and scale is None else max(score, 1) if kind_ == "csat" else score
            events.append(SurveyEvent(eid, acc, ts, kind_, float(score), scale if kind_ == "csat" else None))
        else:
            events.append(AccountEvent(eid, acc, ts, x))
    return events


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=spec_st, data=st.data())
def test_stream_equals_batch_in_any_order_with_duplicates(specs, data):
    events = build(specs)
    share = data.draw(st.lists(st.floats(0, 0.999), min_size=len(events), max_size=len(events)))
    # arrival order: each event displaced by less than its kind's allowed lateness (a day for usage, a
    # week for the synced kinds: tickets, surveys, attributes)
    keyed = [(events[i].occurred_at + share[i] * LATENESS_OF[events[i].kind], i) for i in range(len(events))]
    dups = data.draw(st.lists(st.tuples(st.integers(0, len(events) - 1), st.floats(0, 2)), max_size=15))
    for idx, extra in dups:  # redeliver some events later (a late redelivery is dropped as late)
        keyed.append((keyed[idx][0] + extra * LATENESS_OF[events[idx].kind], idx))
    arrivals = [events[i] for _, i in sorted(keyed)]
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(arrivals) - 1)), max_size=10))))
    batches = [arrivals[a:b] for a, b in zip([0] + cuts, cuts + [len(arrivals)])]
    states = {}
    delivered = {}
    for e in arrivals:
        delivered[e.event_id] = delivered.get(e.event_id, 0) + 1
    now = T0
    for batch in batches:
        now = max([now] + [e.occurred_at for e in batch]) + data.draw(st.floats(0, 3600))
        by_acc = {}
        for e in batch:
            by_acc.setdefault(e.account_id, []).append(e)
        for acc, evs in by_acc.items():
            up = apply_events(states.get(acc), acc, evs, MODEL, now)
            assert up.outcomes["future"] == 0
            # only a redelivery may arrive later than the allowed lateness (and is then dropped)
            assert all(delivered[e.event_id] > 1 for e, r in up.rejected if r == "late")
            states[acc] = roundtrip(up.state)  # as the table does
    now += data.draw(st.floats(0, 2 * DAY))
    expected = score_all(events, MODEL, now)
    for acc, state in states.items():
        stream = current_score(state, acc, MODEL, now)
        batch = expected.get(acc)
        if batch is None:
            assert stream.score is None
            continue
        assert stream == batch
        up = reevaluate(state, acc, MODEL, now)  # the timer: published score == batch
        assert last_score(up.state, acc, MODEL) == batch
        if batch.score is not None:
            assert 0.0 <= batch.score <= 100.0
        for c in batch.components.values():
            assert c.score is None or 0.0 <= c.score <= 100.0
        states[acc] = roundtrip(up.state)
    # then silence: the timer on later days extends each account's floor (the days since its newest
    # event), frozen once the retention has passed; it still equals the batch twin
    for gap in sorted(data.draw(st.lists(st.floats(0, 80 * DAY), max_size=3))):
        later = now + gap
        expected = score_all(events, MODEL, later)
        for acc, state in states.items():
            up = reevaluate(state, acc, MODEL, later)
            assert last_score(up.state, acc, MODEL) == expected[acc]
            states[acc] = roundtrip(up.state)


@settings(max_examples=40, deadline=None)
@given(specs=spec_st, perm=st.permutations(list(DOC["components"])), now_day=st.integers(30, SPAN_DAYS + 5))
def test_scores_in_range_and_component_order_irrelevant(specs, perm, now_day):
    events = build(specs)
    now = T0 + now_day * DAY
    doc = copy.deepcopy(DOC)
    doc["components"] = {k: doc["components"][k] for k in perm}
    shuffled = parse_model(doc)
    a, b = score_all(events, MODEL, now), score_all(events, shuffled, now)
    assert a == b
    for s in a.values():
        assert s.score is None or 0.0 <= s.score <= 100.0
        assert 0.0 <= s.coverage <= 1.0
