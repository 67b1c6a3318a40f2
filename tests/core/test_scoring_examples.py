"""Worked examples from the seed documents."""
import pytest

from streams.core import parse_model, score_all
from streams.core.days import DAY

from .helpers import T0, attr_model, attrs, both, survey, usage

NOW = T0 + 10 * DAY


def score_with(model, **values):
    return both(model, [attrs("a1", T0 + 5 * DAY, **values)], NOW)


def test_impacts_low_medium_high_give_weighted_average():
    m = attr_model({"a": {"impact": "low"}, "b": {"impact": "medium"}, "c": {"impact": "high"}})
    s = score_with(m, a=60, b=30, c=90)
    assert s.score == round((60 + 2 * 30 + 3 * 90) / 6, 2) == 65.0
    assert s.components["c"].weight == 0.5 and s.components["c"].contribution == 45.0
    assert s.coverage == 1.0


def test_impact_none_is_tracked_but_has_no_effect():
    m = attr_model({"a": {"impact": "none"}, "b": {"impact": "high"}})
    s = score_with(m, a=10, b=80)
    assert s.score == 80.0
    assert s.components["a"].score == 10.0 and s.components["a"].contribution == 0.0


@pytest.mark.parametrize("x,band", [(70, "Healthy"), (69.99, "At Risk"), (40, "At Risk"),
                                    (39.99, "Needs Attention"), (0, "Needs Attention"), (100, "Healthy")])
def test_score_on_band_boundary_belongs_to_upper_band(x, band):
    m = attr_model({"x": {}})
    assert score_with(m, x=x).band == band


@pytest.mark.parametrize("x,band", [(7, "good"), (6.99, "average"), (3, "average"), (2.99, "bad")])
def test_component_band_border_belongs_to_upper_interval(x, band):
    # Custify: 0 .. <3 red, 3 .. <7 yellow, >= 7 green, worst 0 best 10
    m = attr_model({"logins": {"scoring": {"type": "linear", "worst": 0, "best": 10},
                               "bands": {"average": 30, "good": 70}}})
    assert score_with(m, logins=x).components["logins"].band == band


@pytest.mark.parametrize("value,expected", [(1, 0.0), (2, 0.0), (5, 50.0), (8, 100.0), (9, 100.0), (3.5, 25.0)])
def test_linear_zero_at_or_below_hundred_at_or_above(value, expected):
    # Freshsuccess: average time spent, 0 at or below 2 mins, 100 at or above 8 mins
    m = attr_model({"t": {"scoring": {"type": "linear", "worst": 2, "best": 8}}})
    assert score_with(m, t=value).components["t"].score == expected


@pytest.mark.parametrize("tickets,expected", [(0, 100.0), (1, 100.0), (2, 66.6667), (3, 33.3333), (4, 0.0), (7, 0.0)])
def test_linear_inverted_open_tickets(tickets, expected):
    # Freshsuccess: >= 4 open tickets -> 0, <= 1 -> 100
    m = attr_model({"open": {"scoring": {"type": "linear", "worst": 4, "best": 1}}})
    assert score_with(m, open=tickets).components["open"].score == expected


def _trend_model():
    return parse_model({
        "version": "t",
        "measures": {"time_15d": {"type": "value_sum", "events": ["session"], "window_days": 15},
                     "time_change": {"type": "pct_change", "of": "time_15d"}},
        "components": {"time_trend": {"measure": "time_change",
                                      "scoring": {"type": "linear", "worst": -40, "best": 5}}},
    })


@pytest.mark.parametrize("current,change,expected", [(105, 5.0, 100.0), (120, 20.0, 100.0), (60, -40.0, 0.0),
                                                     (50, -50.0, 0.0), (80, -20.0, 44.4444)])
def test_percentage_change_between_two_15_day_periods(current, change, expected):
    m = _trend_model()
    now = T0 + 40 * DAY
    prev = [usage("a1", now - 20 * DAY, "session", value=50), usage("a1", now - 25 * DAY, "session", value=50)]
    cur = [usage("a1", now - 3 * DAY, "session", value=current)]
    s = both(m, prev + cur, now)
    assert s.components["time_trend"].value == change
    assert s.components["time_trend"].score == expected


def test_percentage_change_undefined_when_previous_period_is_zero():
    m = _trend_model()
    now = T0 + 40 * DAY
    s = both(m, [usage("a1", now - 3 * DAY, "session", value=10)], now)
    assert s.components["time_trend"].value is None and s.score is None and s.coverage == 0.0


def test_sections_are_normalised_and_shared():
    m = attr_model({"a1": {"section": "A"}, "a2": {"section": "A"}, "b": {"section": "B", "weight": 5}},
                   sections={"A": {"weight": 30}, "B": {"weight": 10}})
    s = score_with(m, a1=100, a2=50, b=20)
    assert s.components["a1"].weight == 0.375 and s.components["b"].weight == 0.25
    assert s.score == round(0.375 * 100 + 0.375 * 50 + 0.25 * 20, 2)


def test_section_with_no_data_is_excluded_and_others_renormalised():
    m = attr_model({"a1": {"section": "A"}, "b": {"section": "B"}},
                   sections={"A": {"weight": 3}, "B": {"weight": 1}})
    s = score_with(m, a1=80)
    assert s.score == 80.0 and s.coverage == 0.75


def _csat_model(missing):
    return parse_model({
        "version": "t",
        "measures": {"logins": {"type": "event_count", "events": ["login"], "window_days": 30},
                     "csat": {"type": "csat_avg", "window_days": 30}},
        "components": {
            "logins": {"measure": "logins", "scoring": {"type": "linear", "worst": 0, "best": 10}},
            "csat": {"measure": "csat", "scoring": {"type": "linear", "worst": 1, "best": 5}, "missing": missing},
        },
    })


def _logins(n):
    return [usage("a1", T0 + DAY + i * 60) for i in range(n)]


def test_missing_csat_is_excluded_and_renormalised_not_zero():
    s = both(_csat_model("exclude"), _logins(8), NOW)
    assert s.score == 80.0 and s.coverage == 0.5
    assert s.components["csat"].value is None and s.components["csat"].weight == 0.0


def test_missing_policy_zero_and_neutral():
    assert both(_csat_model("zero"), _logins(8), NOW).score == 40.0
    assert both(_csat_model("neutral"), _logins(8), NOW).score == 65.0


def test_csat_normalised_to_five_point_scale_whatever_the_scale():
    events = _logins(10) + [survey("a1", T0 + 2 * DAY, "csat", 10, scale=10), survey("a1", T0 + 3 * DAY, "csat", 3)]
    s = both(_csat_model("exclude"), events, NOW)
    assert s.components["csat"].value == 4.0  # (5 + 3) / 2
    assert s.score == round((100 + 75) / 2, 2)


def test_restricted_component_is_not_part_of_the_score():
    m = attr_model({"usage": {}, "csm": {"restrict_to": {"csm": {"exists": True}}, "missing": "zero"}})
    s = score_with(m, usage=60)
    assert "csm" not in s.components and s.score == 60.0 and s.coverage == 1.0
    s = score_with(m, usage=60, csm=100)
    assert s.score == 80.0


def test_no_data_means_no_score():
    m = _csat_model("zero")
    assert score_all([], m, NOW) == {}
    # an account last seen 90 days ago went silent: its score holds at its lowest since (logins 0 from the
    # day its login left the 30-day window; the silence floor), not "no data"
    old = usage("a1", NOW - 90 * DAY)
    assert both(m, [old], NOW).score == 0.0
    assert both(m, [old], NOW - 89 * DAY).score == 5.0  # the day after it: 1 login of 10, csat missing: 0
    s = both(m, [attrs("a1", T0, plan="x")], NOW)  # an account with attributes only: logins 0 are data
    assert s.score == 0.0


def test_segment_priority():
    m = attr_model({"a": {}, "b": {}}, segments=[
        {"name": "low", "priority": 1, "filter": {"plan": ["business", "enterprise"]}, "components": ["a"]},
        {"name": "high", "priority": 5, "filter": {"plan": "enterprise", "seats": {"gte": 100}}, "components": ["b"]},
    ])
    s = score_with(m, a=20, b=90, plan="enterprise", seats=150)
    assert (s.segment, s.score) == ("high", 90.0)
    s = score_with(m, a=20, b=90, plan="enterprise", seats=50)
    assert (s.segment, s.score) == ("low", 20.0)
    s = score_with(m, a=20, b=90, plan="starter")
    assert (s.segment, s.score) == ("default", 55.0)


@pytest.mark.parametrize("uptime,points", [(100, 100.0), (99.95, 100.0), (99.9, 100.0), (99.5, 70.0),
                                           (99, 70.0), (96, 40.0), (95, 40.0), (94.9, 0.0)])
def test_uptime_steps(uptime, points):
    m = attr_model({"uptime": {"scoring": {"type": "steps", "thresholds": [
        {"min": 99.9, "points": 100}, {"min": 99, "points": 70}, {"min": 95, "points": 40}], "else": 0}}})
    assert score_with(m, uptime=uptime).components["uptime"].score == points


def test_max_scoring_csm_rating():
    m = attr_model({"csm": {"scoring": {"type": "max", "max": 10}}})
    assert score_with(m, csm=7).score == 70.0
    assert score_with(m, csm=12).score == 100.0


def test_nps_promoters_minus_detractors():
    m = parse_model({"version": "t", "measures": {"nps": {"type": "nps", "window_days": 30}},
                     "components": {"nps": {"measure": "nps", "scoring": {"type": "linear", "worst": -100, "best": 100}}}})
    answers = [10, 9, 9, 8, 7, 6, 3, 0]  # 3 promoters, 2 passives, 3 detractors
    s = both(m, [survey("a1", T0 + DAY + i, "nps", x) for i, x in enumerate(answers)], NOW)
    assert s.components["nps"].value == 0.0
    s = both(m, [survey("a1", T0 + DAY + i, "nps", x) for i, x in enumerate([10, 9, 6, 8])], NOW)
    assert s.components["nps"].value == 25.0


# ---------------------------------------------------------------- issue 11, finding 6: dates and categories
def _model(measures: dict, components: dict):
    return parse_model({"version": "t", "measures": measures, "components": components})


def test_days_until_a_renewal_date_and_since_a_contract_start_count_down_with_the_clock():
    m = _model({"renewal": {"type": "days_until", "attribute": "renewal_date"},
                "tenure": {"type": "days_since", "attribute": "contract_start"}},
               {"renewal": {"measure": "renewal", "scoring": {"type": "steps", "thresholds": [
                   {"min": 90, "points": 100}, {"min": 30, "points": 60}], "else": 20}},
                "tenure": {"measure": "tenure", "scoring": {"type": "linear", "worst": 0, "best": 365}}})
    # T0 + 5 days is 2024-10-09; NOW (T0 + 10 days) is 2024-10-14
    events = [attrs("a1", NOW, renewal_date="2024-12-13", contract_start="2023-10-15T09:30:00Z")]
    s = both(m, events, NOW)
    assert (s.components["renewal"].value, s.components["renewal"].score) == (60.0, 60.0)
    assert s.components["tenure"].value == 365.0 and s.components["tenure"].score == 100.0
    later = both(m, events, NOW + 45 * DAY)  # no new event: the renewal came nearer
    assert later.components["renewal"].value == 15.0 and later.components["renewal"].score == 20.0
    # set five days earlier, the tenure grew since (359 -> 364 days), but silence lifts no score: it is
    # the lowest since the upsert (its day's values), not today's
    earlier = both(m, [attrs("a1", T0 + 5 * DAY, renewal_date="2024-12-13", contract_start="2023-10-15")], NOW)
    assert earlier.components["tenure"].value == 360.0 and earlier.score == s.score - round((365 - 360) / 365 * 50, 2)
    unreadable = both(m, [attrs("a1", T0 + 5 * DAY, renewal_date="next spring", contract_start="2023-02-30")], NOW)
    assert unreadable.score is None and unreadable.components["renewal"].value is None  # missing data


def test_a_categorical_attribute_maps_to_points_ignoring_case_and_unknown_values_are_missing():
    m = _model({"sentiment": {"type": "category", "attribute": "csm_sentiment",
                              "points": {"positive": 100, "neutral": 50, "negative": 0}}},
               {"sentiment": {"measure": "sentiment", "scoring": {"type": "linear", "worst": 0, "best": 100}}})
    assert score_with(m, csm_sentiment=" Neutral").score == 50.0
    assert score_with(m, csm_sentiment="NEGATIVE").score == 0.0
    assert score_with(m, csm_sentiment="ecstatic").score is None


# ---------------------------------------------------------------- issue 11, finding 4: coverage
def test_below_min_coverage_an_account_has_a_score_but_no_band_and_raises_no_alert():
    from streams.core import apply_events, load_model, DEFAULT_MODEL_PATH

    shipped = load_model(DEFAULT_MODEL_PATH)
    assert shipped.min_coverage == 0.5
    crm_only = both(shipped, [attrs("a1", T0 + 5 * DAY, csm_rating=7, uptime_pct=99.95)], NOW)
    assert crm_only.score is not None and crm_only.coverage < 0.5
    assert (crm_only.band, crm_only.status, crm_only.to_dict()["status"]) == (None, "insufficient_data",
                                                                            "insufficient_data")
    m = attr_model({"a": {}, "b": {}, "c": {}, "d": {}}, min_coverage=0.5,
                   alerts={"band_change": {"margin_points": 0, "cooldown_seconds": 0},
                           "component_thresholds": [{"component": "a", "below": 50}]})
    up = apply_events(None, "a1", [attrs("a1", T0, a=90, b=90, c=90)], m, T0 + 60)
    assert (up.score.band, up.score.status) == ("Healthy", "scored")
    # three of four components lose their data: a score of 10 on a quarter of the weight, no band, no alert
    up = apply_events(up.state, "a1", [attrs("a1", T0 + 120, a=10, b=None, c=None)], m, T0 + 180)
    assert (up.score.score, up.score.band, up.score.status) == (10.0, None, "insufficient_data")
    assert up.alerts == ()
    # data back, still low: the band alert compares with the band last alerted (Healthy)
    up = apply_events(up.state, "a1", [attrs("a1", T0 + 240, b=20, c=20)], m, T0 + 300)
    assert [(a.type, a.band_before, a.band_after) for a in up.alerts if a.type.startswith("health.band")] == [
        ("health.band.degraded", "Healthy", "Needs Attention")]
    assert score_all([], m, NOW) == {}
