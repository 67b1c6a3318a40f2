import copy

import pytest

from streams.core import DEFAULT_MODEL_PATH, ModelError, load_model, parse_model

SRC = "models/x.yaml"


def base() -> dict:
    return {
        "version": "t1",
        "measures": {
            "logins_30d": {"type": "event_count", "events": ["login"], "window_days": 30},
            "usage_15d": {"type": "event_count", "window_days": 15},
            "trend": {"type": "pct_change", "of": "usage_15d"},
            "rating": {"type": "attribute", "attribute": "csm_rating"},
        },
        "components": {
            "logins": {"measure": "logins_30d", "scoring": {"type": "linear", "worst": 0, "best": 10}},
            "rating": {"measure": "rating", "scoring": {"type": "max", "max": 10}, "impact": "high"},
        },
    }


def errors_of(doc) -> str:
    with pytest.raises(ModelError) as exc:
        parse_model(doc, source=SRC)
    msg = str(exc.value)
    for line in msg.splitlines():
        assert line.startswith(f"{SRC}: "), line
    return msg


def test_base_is_valid():
    m = parse_model(base(), source=SRC)
    assert m.version == "t1" and len(m.fingerprint) == 16
    assert [b.name for b in m.bands] == ["Healthy", "At Risk", "Needs Attention"]


def test_default_model_loads():
    m = load_model(DEFAULT_MODEL_PATH)
    assert m.version and len(m.components) >= 10
    assert {s.name for s in m.segments} >= {"onboarding"}
    assert set(m.sections) == {"adoption", "support", "sentiment", "relationship", "reliability"}


def test_unknown_measure_in_component():
    d = base()
    d["components"]["logins"]["measure"] = "logins_30x"
    msg = errors_of(d)
    assert "components.logins.measure: unknown measure 'logins_30x' (expected one of:" in msg
    assert "logins_30d" in msg


def test_unknown_measure_type():
    d = base()
    d["measures"]["logins_30d"]["type"] = "event_cnt"
    assert "measures.logins_30d.type: unknown measure type 'event_cnt'" in errors_of(d)


def test_weights_all_zero():
    d = base()
    d["components"]["logins"]["weight"] = 0
    d["components"]["rating"]["impact"] = "none"
    assert "components: all weights are zero" in errors_of(d)


def test_weights_all_zero_in_segment():
    d = base()
    d["segments"] = [{"name": "s", "priority": 1, "filter": {"plan": "x"}, "components": {"logins": 0}}]
    assert "segments[0]: all weights are zero in configuration 's'" in errors_of(d)


def test_negative_weight():
    d = base()
    d["components"]["logins"]["weight"] = -1
    assert "components.logins.weight: expected a number >= 0, got -1" in errors_of(d)


def test_unknown_impact():
    d = base()
    d["components"]["rating"]["impact"] = "huge"
    assert "components.rating.impact: unknown impact level 'huge' (expected one of: none, low, medium, high)" in errors_of(d)


def test_no_band_with_minimum_zero():
    d = base()
    d["bands"] = [{"name": "Good", "colour": "green", "min": 70}, {"name": "Bad", "colour": "red", "min": 10}]
    assert "bands: no band has minimum 0" in errors_of(d)


def test_duplicate_band_minimums():
    d = base()
    d["bands"] = [{"name": "A", "colour": "green", "min": 50}, {"name": "B", "colour": "red", "min": 50},
                  {"name": "C", "colour": "red", "min": 0}]
    assert "bands[1].min: duplicate minimum 50" in errors_of(d)


def test_pct_change_longer_than_retention():
    d = base()
    d["state"] = {"retention_days": 45}
    d["measures"]["usage_15d"]["window_days"] = 30
    msg = errors_of(d)
    assert "measures.trend.of: comparing two periods of 30 days needs 60 days of history but state.retention_days is 45" in msg


def test_window_longer_than_retention():
    d = base()
    d["state"] = {"retention_days": 20}
    assert "measures.logins_30d.window_days: a window of 30 days is longer than the retained history" in errors_of(d)


def test_missing_required_fields():
    d = base()
    del d["version"]
    del d["components"]["logins"]["measure"]
    del d["components"]["rating"]["scoring"]
    msg = errors_of(d)
    assert "version: missing required field" in msg
    assert "components.logins.measure: missing required field" in msg
    assert "components.rating.scoring: missing required field" in msg
    assert len(msg.splitlines()) == 3  # all problems collected


def test_missing_measures_and_components():
    msg = errors_of({"version": "1"})
    assert "measures: missing required field" in msg and "components: missing required field" in msg


def test_wrong_types():
    d = base()
    d["state"] = {"retention_days": "sixty"}
    d["components"]["logins"]["scoring"]["worst"] = "low"
    d["measures"]["logins_30d"]["window_days"] = 7.5
    msg = errors_of(d)
    assert "state.retention_days: expected an integer, got 'sixty'" in msg
    assert "components.logins.scoring.worst: expected a number, got 'low'" in msg
    assert "measures.logins_30d.window_days: expected an integer, got 7.5" in msg


def test_steps_not_ordered():
    d = base()
    d["components"]["rating"]["scoring"] = {"type": "steps", "thresholds": [
        {"min": 99, "points": 70}, {"min": 99.9, "points": 100}]}
    assert "components.rating.scoring.thresholds[1].min: thresholds not ordered" in errors_of(d)


def test_worst_equals_best():
    d = base()
    d["components"]["logins"]["scoring"] = {"type": "linear", "worst": 5, "best": 5}
    assert "components.logins.scoring: worst and best are both 5" in errors_of(d)


def test_unknown_keys_and_references():
    d = base()
    d["components"]["logins"]["wieght"] = 2
    d["segments"] = [{"name": "s", "priority": 1, "filter": {"plan": "x"}, "components": ["logins", "nope"]}]
    d["alerts"] = {"component_thresholds": [{"component": "ghost", "below": 30}]}
    msg = errors_of(d)
    assert "components.logins.wieght: unknown key" in msg
    assert "segments[0].components[1]: unknown component 'nope'" in msg
    assert "alerts.component_thresholds[0].component: unknown component 'ghost'" in msg


def test_sections_must_be_named_when_defined():
    d = base()
    d["sections"] = {"adoption": {"weight": 1}}
    d["components"]["logins"]["section"] = "adoption"
    msg = errors_of(d)
    assert "components.rating.section: missing: sections are defined" in msg


def test_trend_needs_score_history():
    d = base()
    d["state"] = {"score_history_days": 7}
    d["alerts"] = {"trend": {"days": 14, "drop_points": 10}}
    assert "alerts.trend.days: comparing with the score 14 days ago needs state.score_history_days >= 14" in errors_of(d)


def test_load_model_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("version: '1'\nmeasures: {m: {type: attribute, attribute: x}}\n"
                 "components: {c: {measure: mm, scoring: {type: max, max: 10}}}\n")
    with pytest.raises(ModelError) as exc:
        load_model(p)
    assert str(exc.value).startswith(f"{p}: components.c.measure: unknown measure 'mm'")
    p.write_text("version: [unclosed\n")
    with pytest.raises(ModelError, match="not valid YAML"):
        load_model(p)


def test_fingerprint_ignores_key_order_but_not_content():
    d1 = base()
    d2 = copy.deepcopy(d1)
    d2["components"] = dict(reversed(list(d2["components"].items())))
    assert parse_model(d1).fingerprint == parse_model(d2).fingerprint
    d2["components"]["logins"]["scoring"]["best"] = 11
    assert parse_model(d1).fingerprint != parse_model(d2).fingerprint
