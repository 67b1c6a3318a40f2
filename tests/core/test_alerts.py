from streams.core.alerts import DEGRADED, RECOVERED, TREND, COMPONENT
from streams.core.model import DEFAULT_BANDS, AlertRules, BandChangeRule, ComponentThreshold, TrendRule
from streams.core.scoring import AccountScore, ComponentScore
from streams.core.days import DAY

from .helpers import T0, AlertState, evaluate_alerts

BANDS = DEFAULT_BANDS


def score(s, usage=None, support=None, acc="a1"):
    comps = {}
    if usage is not None:
        comps["usage"] = ComponentScore(usage, usage, None, 0.5, usage * 0.5)
    if support is not None:
        comps["support"] = ComponentScore(support, support, None, 0.5, support * 0.5)
    band = "Healthy" if s >= 70 else "At Risk" if s >= 40 else "Needs Attention"
    return AccountScore(acc, s, band, "default", 1.0, comps, "v1", "fp1")


def run(scores, rules, start=T0, step=60.0, state=None):
    st = state or AlertState()
    old = None
    out = []
    for i, s in enumerate(scores):
        new = s if isinstance(s, AccountScore) else score(s)
        st, alerts = evaluate_alerts(st, old, new, start + i * step, rules, BANDS)
        out.extend(alerts)
        old = new
    return st, out


def test_hysteresis_oscillation_raises_one_alert():
    rules = AlertRules(band_change=BandChangeRule(margin_points=3, cooldown_seconds=0))
    st, alerts = run([72, 69, 71, 68, 70, 67.5, 69.9, 67], rules)
    assert alerts == []  # never below 67
    st, alerts = run([72, 69, 71, 66.9, 70, 68, 72.9, 66, 71], rules)
    assert [(a.type, a.band_before, a.band_after) for a in alerts] == [(DEGRADED, "Healthy", "At Risk")]
    st, alerts = run([72, 66, 73], rules)
    assert [a.type for a in alerts] == [DEGRADED, RECOVERED]
    assert st.band == "Healthy"


def test_large_drop_goes_straight_to_the_lowest_band():
    rules = AlertRules(band_change=BandChangeRule(margin_points=3, cooldown_seconds=0))
    _, alerts = run([80, 20], rules)
    assert [(a.band_before, a.band_after, a.score_before, a.score_after) for a in alerts] == \
        [("Healthy", "Needs Attention", 80, 20)]


def test_cooldown_delays_but_does_not_lose_a_transition():
    rules = AlertRules(band_change=BandChangeRule(margin_points=0, cooldown_seconds=3600))
    st, alerts = run([80, 60, 80, 60], rules, step=100)
    # degraded, recovered (another type), then the second degradation is inside the cooldown
    assert [a.type for a in alerts] == [DEGRADED, RECOVERED]
    assert st.band == "Healthy"  # the band state did not move while suppressed
    st2, later = evaluate_alerts(st, score(60), score(60), T0 + 100 + 3600, rules, BANDS)
    assert [a.type for a in later] == [DEGRADED] and st2.band == "At Risk"


def test_trend_decline_raised_once_and_rearmed():
    rules = AlertRules(band_change=None, trend=TrendRule(days=14, drop_points=15, drop_percent=None),
                       cooldown_seconds=0)
    st = AlertState()
    alerts = []
    day_scores = [(0, 80), (5, 78), (14, 64), (14, 62), (15, 60), (16, 61)]
    for d, s in day_scores:
        st, a = evaluate_alerts(st, None, score(s), T0 + d * DAY + 100, rules, BANDS)
        alerts.extend(a)
    assert [a.type for a in alerts] == [TREND]
    assert alerts[0].detail["reference_score"] == 80 and alerts[0].score_after == 64
    # the condition clears (score recovers against its reference), then a new decline alerts again
    for d, s in [(19, 77), (33, 60)]:
        st, a = evaluate_alerts(st, None, score(s), T0 + d * DAY, rules, BANDS)
        alerts.extend(a)
    assert [a.type for a in alerts] == [TREND, TREND]


def test_trend_percent_rule():
    rules = AlertRules(band_change=None, trend=TrendRule(days=7, drop_points=None, drop_percent=20))
    st, _ = evaluate_alerts(AlertState(), None, score(50), T0, rules, BANDS)
    st, a = evaluate_alerts(st, None, score(41), T0 + 7 * DAY, rules, BANDS)
    assert a == []  # -18 %
    st, a = evaluate_alerts(st, None, score(40), T0 + 7 * DAY + 60, rules, BANDS)
    assert [x.type for x in a] == [TREND]  # -20 %


def test_component_threshold_crossing():
    rules = AlertRules(band_change=None, component_thresholds=(ComponentThreshold("support", 40),),
                       cooldown_seconds=0)
    scores = [score(70, 80, 60), score(65, 80, 30), score(64, 80, 20), score(70, 80, 50), score(60, 80, 10)]
    _, alerts = run(scores, rules)
    assert [a.type for a in alerts] == [COMPONENT, COMPONENT]
    assert alerts[0].detail["component"] == "support"


def test_explanation_names_the_components_that_moved():
    rules = AlertRules(band_change=BandChangeRule(margin_points=0, cooldown_seconds=0))
    _, alerts = run([score(75, 90, 60), score(50, 85, 15)], rules)
    (a,) = alerts
    assert [c.component for c in a.explanation] == ["support", "usage"]
    sup = a.explanation[0]
    # a band alert is explained against the contributions kept at the last band alert (values and component
    # scores before are not kept in the account's state: None)
    assert (sup.score_before, sup.score_after, sup.contribution_before, sup.contribution_after) == (None, 15, 30, 7.5)
    assert sup.change == -22.5


def test_alert_ids_are_deterministic():
    rules = AlertRules(band_change=BandChangeRule(margin_points=3, cooldown_seconds=0))
    _, a1 = run([80, 50, 80, 30], rules)
    _, a2 = run([80, 50, 80, 30], rules)
    assert [a.id for a in a1] == [a.id for a in a2] and len({a.id for a in a1}) == 3
    assert [a.to_dict() for a in a1] == [a.to_dict() for a in a2]
    _, a3 = run([score(80, acc="b"), score(50, acc="b")], rules)
    assert a3[0].id != a1[0].id


def test_engine_alerts_end_to_end():
    from streams.core import apply_events
    from .helpers import attr_model, attrs
    model = attr_model(
        {"csm_rating": {"scoring": {"type": "max", "max": 10}},
         "uptime": {"attribute": "uptime_pct", "scoring": {"type": "steps", "thresholds": [
             {"min": 99.9, "points": 100}, {"min": 99, "points": 70}, {"min": 95, "points": 40}]}}},
        alerts={"band_change": {"margin_points": 3, "cooldown_seconds": 3600},
                "component_thresholds": [{"component": "uptime", "below": 50}]})
    up = apply_events(None, "a1", [attrs("a1", T0, id="x1", csm_rating=10, uptime_pct=99.95)], model, T0 + 60)
    assert up.score.score == 100.0 and up.alerts == ()
    up = apply_events(up.state, "a1", [attrs("a1", T0 + 120, id="x2", csm_rating=2, uptime_pct=96.0)], model, T0 + 180)
    types = sorted(a.type for a in up.alerts)
    assert types == [DEGRADED, COMPONENT]
    deg = next(a for a in up.alerts if a.type == DEGRADED)
    assert deg.event_ids == ("x2",) and deg.time == T0 + 120
    assert {c.component for c in deg.explanation} == {"csm_rating", "uptime"}


# ---------------------------------------------------------------- issue 11: alerts a playbook engine can act on
def test_a_band_alert_is_explained_against_the_score_last_alerted_not_the_previous_one():
    # 80 (Healthy) drifts to 68 (inside the margin: no alert), then a last step to 60: the alert says what
    # changed since subscribers last heard (80), not only the last step (68 -> 60)
    rules = AlertRules(band_change=BandChangeRule(margin_points=3, cooldown_seconds=0))
    _, alerts = run([score(80, 90, 70), score(68, 70, 66), score(60, 70, 50)], rules)
    (a,) = alerts
    assert (a.type, a.band_before, a.band_after, a.score_before, a.score_after) == (DEGRADED, "Healthy", "At Risk",
                                                                                     80, 60)
    assert [(c.component, c.contribution_before, c.contribution_after) for c in a.explanation] == \
        [("support", 35, 25), ("usage", 45, 35)]
    assert a.detail["band_since_day"] == int(T0 // DAY)


def test_a_move_held_back_by_the_cooldown_is_raised_later_only_if_still_beyond_the_margin_and_explained():
    rules = AlertRules(band_change=BandChangeRule(margin_points=3, cooldown_seconds=3600))
    # degraded, recovered (another type: at once), then a second degradation inside the cooldown of the first
    st, alerts = run([score(80, 80, 80), score(60, 60, 60), score(80, 80, 80), score(60, 60, 60)], rules, step=100)
    assert [a.type for a in alerts] == [DEGRADED, RECOVERED]
    assert st.band == "Healthy"
    # after the cooldown, an account back inside the margin raises nothing...
    later, none = evaluate_alerts(st, score(60, 60, 60), score(69, 69, 69), T0 + 4000, rules, BANDS)
    assert none == [] and later.band == "Healthy"
    # ...and one still beyond it is raised, explained against the recovery's score (80), never empty
    _, (a,) = evaluate_alerts(st, score(61, 61, 61), score(61, 61, 61), T0 + 4000, rules, BANDS)
    assert (a.type, a.score_before, a.score_after) == (DEGRADED, 80, 61)
    assert a.explanation and all(c.contribution_before == 40 for c in a.explanation)


def test_history_tracks_the_band_but_pages_nobody_and_starts_no_cooldown():
    rules = AlertRules(band_change=BandChangeRule(margin_points=3, cooldown_seconds=86400),
                       trend=TrendRule(days=1, drop_points=10), component_thresholds=(ComponentThreshold("usage", 40),),
                       cooldown_seconds=86400)
    st = AlertState()
    held = 0
    for i, s in enumerate([score(90, 90, 90), score(30, 20, 40), score(85, 85, 85), score(35, 30, 40)]):
        st, alerts = evaluate_alerts(st, None, s, T0 + i * DAY, rules, BANDS, historic=True)
        assert alerts == []
        held += st.held_back
    assert held >= 4 and st.band == "Needs Attention" and not st.last  # tracked; no cooldown started
    # live again: the account is where history left it, so nothing is said about the past...
    st, alerts = evaluate_alerts(st, score(35, 30, 40), score(36, 30, 42), T0 + 4 * DAY, rules, BANDS)
    assert alerts == []
    # ...and a live move is raised at once (no cooldown inherited from the replay)
    st, alerts = evaluate_alerts(st, score(36, 30, 42), score(80, 80, 80), T0 + 4 * DAY + 60, rules, BANDS)
    assert [(a.type, a.band_before, a.band_after, a.score_before) for a in alerts] == \
        [(RECOVERED, "Needs Attention", "Healthy", 35)]


def test_a_component_threshold_alert_carries_the_band_before_it():
    rules = AlertRules(band_change=None, component_thresholds=(ComponentThreshold("support", 40),), cooldown_seconds=0)
    _, (a,) = run([score(75, 90, 60), score(52, 90, 14)], rules)
    assert (a.type, a.band_before, a.band_after, a.score_before, a.score_after) == (COMPONENT, "Healthy", "At Risk",
                                                                                     75, 52)


def test_no_alert_has_an_empty_explanation():
    # a trend judged on a later day with the same score: nothing changed since the previous evaluation
    rules = AlertRules(band_change=None, trend=TrendRule(days=2, drop_points=10), cooldown_seconds=0)
    st, _ = evaluate_alerts(AlertState(), None, score(80, 80, 80), T0, rules, BANDS)
    st, a = evaluate_alerts(st, score(80, 80, 80), score(65, 65, 65), T0 + DAY, rules, BANDS)
    assert a == []  # one day: no reference yet
    st, (alert,) = evaluate_alerts(st, score(65, 65, 65), score(65, 65, 65), T0 + 2 * DAY, rules, BANDS)
    assert alert.type == TREND
    assert [(c.component, c.contribution_before, c.contribution_after) for c in alert.explanation] == \
        [("support", 32.5, 32.5), ("usage", 32.5, 32.5)]  # the components as they stand


def test_events_older_than_the_horizon_raise_no_alert_through_the_engine():
    from streams.core import apply_events, last_score, reevaluate
    from streams.core.engine import floor_pending
    from .helpers import attr_model, attrs
    model = attr_model({"csm_rating": {"scoring": {"type": "max", "max": 10}}},
                       alerts={"band_change": {"margin_points": 3, "cooldown_seconds": 3600},
                               "history_horizon_hours": 24})
    now = T0 + 10 * DAY
    up = apply_events(None, "a1", [attrs("a1", T0, id="x1", csm_rating=10)], model, now)
    up = reevaluate(up.state, "a1", model, now)  # the worker settles the floor the old event left pending
    assert last_score(up.state, "a1", model).band == "Healthy" and up.alerts == ()
    up = apply_events(up.state, "a1", [attrs("a1", T0 + DAY, id="x2", csm_rating=2)], model, now)
    # a batch that leaves its floor pending publishes today's evaluation alone and no rule looks at it
    assert floor_pending(up.state) and up.alerts == () and up.held_back == 0
    up = reevaluate(up.state, "a1", model, now)
    assert last_score(up.state, "a1", model).band == "Needs Attention" and up.alerts == () and up.held_back == 1
    # a sync within the horizon is news: it alerts, against the band history left
    # (an hour before midnight: its batch leaves the floor pending, the worker's settling of it alerts)
    up = apply_events(up.state, "a1", [attrs("a1", now - 3600, id="x3", csm_rating=9)], model, now)
    assert floor_pending(up.state) and up.alerts == ()
    up = reevaluate(up.state, "a1", model, now + 2)
    assert [(a.type, a.band_before, a.band_after) for a in up.alerts] == [(RECOVERED, "Needs Attention", "Healthy")]
    assert up.held_back == 0 and up.alerts[0].time == now - 3600  # the time of the event behind it
    # today's event is evaluated (and alerted) in its own batch
    up = apply_events(up.state, "a1", [attrs("a1", now + 60, id="x4", csm_rating=1)], model, now + 120)
    assert [(a.type, a.band_before, a.band_after) for a in up.alerts] == [(DEGRADED, "Healthy", "Needs Attention")]


def test_the_global_score_below_a_level_alerts_once_and_rearms_past_its_margin():
    from streams.core.alerts import BELOW
    from streams.core.model import ScoreThreshold
    rules = AlertRules(band_change=None, score_threshold=ScoreThreshold(50, 5), cooldown_seconds=0)
    _, alerts = run([score(60, 60, 60), score(48, 48, 48), score(45, 45, 45), score(52, 52, 52), score(49, 49, 49),
                     score(56, 56, 56), score(40, 40, 40)], rules)
    assert [(a.type, a.score_before, a.score_after, a.band_before, a.band_after) for a in alerts] == [
        (BELOW, 60, 48, "At Risk", "At Risk"), (BELOW, 56, 40, "At Risk", "At Risk")]
    assert alerts[0].detail == {"below": 50} and alerts[0].explanation


def test_a_fall_from_the_highest_score_of_the_last_days_alerts_once():
    from streams.core.alerts import FALL
    from streams.core.model import FallRule
    rules = AlertRules(band_change=None, fall=FallRule(points=20, days=3), cooldown_seconds=0)
    st = AlertState()
    alerts = []
    # the peak (90, day 2) is inside the 3 days, the older 95 (day 0) is not by day 4
    for d, s in [(0, 95), (2, 90), (3, 80), (4, 71), (4, 69), (5, 65), (9, 60), (9, 30)]:
        st, a = evaluate_alerts(st, None, score(s, s, s), T0 + d * DAY + 100, rules, BANDS)
        alerts.extend(a)
    assert [(a.type, a.detail["reference_day"] - int(T0 // DAY), a.detail["reference_score"], a.score_after)
            for a in alerts] == [(FALL, 2, 90, 69), (FALL, 9, 60, 30)]
