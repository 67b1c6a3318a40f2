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


# ------------------------------------------------------------------ limits
# A model comes from people and from anything that can write to the control topic: hostile or
# broken models are refused at load, and a model the loader accepts is one a worker can run.

def compact_components_yaml(n: int) -> str:
    """A model file of ``n`` components in flow style (5,000 fit in the YAML size cap)."""
    lines = ["version: big", "measures:", "  m: {type: event_count, window_days: 30}", "components:"]
    lines += [f"  c{i}: {{measure: m, scoring: {{type: max, max: 1}}}}" for i in range(n)]
    return "\n".join(lines) + "\n"


def alias_bomb(levels: int = 10, width: int = 8) -> str:
    """"Billion laughs" in `description`: under 1 KB, 8**10 (about 10**9) strings expanded. The
    loader before the YAML budget built the aliases as shared objects, then expanded all of them
    writing the fingerprint: minutes and gigabytes (it died of a segfault under a 4 GB ulimit)."""
    lines = ["version: bomb", "description:", f"  l0: &l0 [{', '.join(['lol'] * width)}]"]
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    lines += ["measures:", "  m: {type: event_count, window_days: 30}",
              "components:", "  c: {measure: m, scoring: {type: linear, worst: 0, best: 10}}"]
    return "\n".join(lines) + "\n"


def test_5000_components_are_refused_with_the_path_and_the_limit(tmp_path):
    d = base()
    d["components"] = {f"c{i}": {"measure": "logins_30d", "scoring": {"type": "linear", "worst": 0, "best": 10}}
                       for i in range(5000)}
    msg = errors_of(d)
    assert msg == f"{SRC}: components: 5000 components; expected at most 100"
    # the same as a file (the worker could not build it: RecursionError compiling its code)
    p = tmp_path / "big.yaml"
    p.write_text(compact_components_yaml(5000))
    assert p.stat().st_size <= 256 * 1024
    with pytest.raises(ModelError) as exc:
        load_model(p)
    assert f"{p}: components: 5000 components; expected at most 100" in str(exc.value).splitlines()
    d["components"] = dict(list(d["components"].items())[:100])  # the limit itself is fine
    assert len(parse_model(d, source=SRC).components) == 100


def test_alias_bomb_in_description_is_refused(tmp_path):
    text = alias_bomb()
    assert len(text.encode()) < 1024
    p = tmp_path / "bomb.yaml"
    p.write_text(text)
    with pytest.raises(ModelError) as exc:
        load_model(p)
    msg = str(exc.value)
    assert f"{p}: <yaml>: 72 aliases; expected at most 50" in msg
    assert "more than 20000 YAML nodes with aliases expanded" in msg


def test_yaml_budget_nodes_depth_recursion_scalars_documents():
    from streams.core.model_loader import model_from_yaml

    def refused(text):
        with pytest.raises(ModelError) as exc:
            model_from_yaml(text, "msg")
        return str(exc.value)

    # few aliases but many nodes: 40 aliases of a 1,000-item list
    items = ", ".join(["x"] * 1000)
    text = f"version: a\ndescription:\n  base: &b [{items}]\n  more: [{', '.join(['*b'] * 40)}]\n"
    assert "msg: <yaml>: more than 20000 YAML nodes with aliases expanded" in refused(text)
    assert "nesting deeper than 12 levels" in refused("version: a\ndescription: " + "[" * 13 + "]" * 13 + "\n")
    # deep through an alias
    assert "with alias *d expanded" in refused("a: &d " + "[" * 11 + "x" + "]" * 11 + "\nb: {c: *d}\n")  # a: 12 levels, b.c: 13
    assert "alias *r inside its own anchor" in refused("version: a\ndescription: &r [x, *r]\n")
    assert "undefined alias *nope" in refused("version: a\ndescription: *nope\n")
    assert "a scalar of 3000 characters" in refused(f"version: a\ndescription: {'x' * 3000}\n")
    assert "more than one YAML document" in refused("version: a\n---\nversion: b\n")
    assert "262145 bytes; expected a model of at most 262144 bytes (256 KiB)" in refused("#" * (256 * 1024 + 1))
    assert "not UTF-8" in refused(b"version: \xff\n")
    assert "msg: <yaml>: not valid YAML" in refused("version: [unclosed\n")
    # 50 aliases are fine
    ok = ("version: a\ndescription: ok\nmeasures:\n  m: &m {type: event_count, window_days: 30}\n"
          + "".join(f"  m{i}: *m\n" for i in range(50))
          + "components: {c: {measure: m, scoring: {type: max, max: 1}}}\n")
    assert len(model_from_yaml(ok, "msg").measures) == 51


def test_model_from_yaml_is_load_model_of_the_text():
    from streams.core.model_loader import model_from_yaml

    text = DEFAULT_MODEL_PATH.read_text()
    a, b = model_from_yaml(text, "control message"), load_model(DEFAULT_MODEL_PATH)
    assert a.fingerprint == b.fingerprint and a.source == "control message"
    assert a.components == b.components and a.segments == b.segments and a.alerts == b.alerts


def test_nested_structure_in_description_is_refused():
    for where in ([], ["measures", "logins_30d"], ["components", "logins"]):
        d = base()
        target = d
        for k in where:
            target = target[k]
        target["description"] = {"a": [1, 2, {"b": 3}]}
        path = ".".join(where + ["description"])
        assert f"{path}: expected a string of at most 2000 characters, got " in errors_of(d)
    d = base()
    d["sections"] = {"s": {"weight": 1, "description": ["x"]}}
    d["segments"] = [{"name": "g", "priority": 1, "filter": {"plan": "x"}, "description": "x" * 2001}]
    for c in d["components"].values():
        c["section"] = "s"
    msg = errors_of(d)
    assert "sections.s.description: expected a string of at most 2000 characters, got [\"x\"]" in msg
    assert "segments[0].description: expected a string of at most 2000 characters, got 2001 characters" in msg


def test_control_characters_in_names_are_refused():
    d = base()
    d["components"]["log\x1b[31mins\n"] = d["components"].pop("logins")
    d["measures"]["logins_30d"]["events"] = ["login", "page\x85view"]
    d["bands"] = [{"name": "Good\x7f", "colour": "gr\x00een", "min": 0}]
    msg = errors_of(d)
    assert "\x1b" not in msg and "\x7f" not in msg and "\x85" not in msg and "\x00" not in msg
    assert len(msg.splitlines()) == 4  # one line per problem: a newline in a name never splits one
    assert r"components.log\x1b[31mins\n: expected a component name without control characters" in msg
    assert r"measures.logins_30d.events[1]: expected a name without control characters, got 'page\x85view'" in msg
    assert r"bands[0].name: expected a name without control characters" in msg
    assert r"bands[0].colour: expected a colour without control characters" in msg


def test_names_texts_and_keys_are_bounded_strings():
    d = base()
    d["version"] = "v" * 65
    d["name"] = "n" * 201
    d["components"][1] = d["components"].pop("rating")  # a YAML key `1:` is an int
    d["measures"]["m" * 101] = {"type": "attribute", "attribute": "x"}
    d["measures"]["rating"]["attribute"] = ["csm_rating"]
    msg = errors_of(d)
    assert "version: expected a string of at most 64 printable characters" in msg
    assert "name: expected a string of at most 200 characters, got 201 characters" in msg
    assert "components.1: expected a component name (a non-empty string), got 1" in msg
    assert f"measures.{'m' * 100}...: expected a measure name of at most 100 characters, got 101 characters" in msg
    assert "measures.rating.attribute: expected a non-empty string, got [\"csm_rating\"]" in msg


def test_huge_numbers_are_refused():
    d = base()
    d["components"]["logins"]["weight"] = 1e300  # fsum of two of them overflows
    d["components"]["logins"]["scoring"] = {"type": "linear", "worst": -1e300, "best": 10 ** 400}
    d["components"]["rating"]["scoring"] = {"type": "max", "max": 1e13}
    d["state"] = {"max_future_skew_seconds": 10 ** 20}
    d["alerts"] = {"cooldown_seconds": 1e20, "band_change": {"cooldown_seconds": 366 * 86400},
                   "history_horizon_hours": 0.5,
                   "trend": {"days": 7, "drop_points": 1e9}}
    d["segments"] = [{"name": "s", "priority": 1e300, "filter": {"seats": {"gte": 1e13}, "arr": 1e300}}]
    msg = errors_of(d)
    assert "components.logins.weight: expected a number <= 1000000, got 1e+300" in msg
    assert "components.logins.scoring.worst: expected a number >= -1e+12, got -1e+300" in msg
    assert "components.logins.scoring.best: expected a number, got an integer of 401 digits" in msg
    assert "components.rating.scoring.max: expected a number <= 1e+12" in msg
    assert "state.max_future_skew_seconds: expected a number <= 604800" in msg
    assert "alerts.cooldown_seconds: expected a number <= 31536000, got 1e+20" in msg
    assert "alerts.band_change.cooldown_seconds: expected a number <= 31536000, got 31622400" in msg
    assert "alerts.trend.drop_points: expected a number <= 100" in msg
    assert "alerts.history_horizon_hours: expected a number >= 1, got 0.5" in msg
    assert "segments[0].priority: expected a number <= 1e+12" in msg
    assert "segments[0].filter.seats.gte: expected a number between -1e+12 and 1e+12" in msg
    assert "segments[0].filter.arr: expected a text, a number between -1e+12 and 1e+12 or true/false" in msg
    d = base()
    d["sections"] = {"s": 1e7}
    for c in d["components"].values():
        c["section"] = "s"
    assert "sections.s.weight: expected a number <= 1000000, got 10000000" in errors_of(d)


def test_filter_values_are_bounded_scalars():
    d = base()
    d["segments"] = [{"name": "s", "priority": 1, "filter": {
        "plan": {"eq": {"nested": [1]}}, "tier": [["a"], "b"], "region": {"in": [f"r{i}" for i in range(201)]},
        "stage": "x" * 501, "gone": None}}]
    d["components"]["logins"]["restrict_to"] = {f"a{i}": 1 for i in range(21)}
    msg = errors_of(d)
    assert "segments[0].filter.plan.eq: expected a text, a number between" in msg
    assert "segments[0].filter.tier[0]: expected a text, a number between" in msg
    assert "segments[0].filter.region.in: 201 values; expected at most 200" in msg
    assert "segments[0].filter.stage: expected a text of at most 500 characters, got 501 characters" in msg
    assert "segments[0].filter.gone: expected a text, a number between" in msg
    assert "components.logins.restrict_to: 21 conditions; expected at most 20" in msg


def test_counts_inside_the_model_are_bounded():
    d = base()
    d["measures"]["logins_30d"]["events"] = [f"e{i}" for i in range(101)]
    d["measures"]["features"] = {"type": "feature_adoption", "window_days": 30,
                                 "expected_features": [f"f{i}" for i in range(501)]}
    d["components"]["rating"]["scoring"] = {"type": "steps", "thresholds": [
        {"min": 100 - i, "points": 50} for i in range(21)]}
    d["bands"] = [{"name": f"b{i}", "min": i} for i in range(11)]
    d["alerts"] = {"component_thresholds": [{"component": "rating", "below": 10}] * 101}
    msg = errors_of(d)
    assert "bands: 11 bands; expected at most 10" in msg
    assert "alerts.component_thresholds: 101 component thresholds; expected at most 100" in msg
    d["bands"], d["alerts"] = None, None
    msg = errors_of(d)
    assert "measures.logins_30d.events: 101 event names; expected at most 100" in msg
    assert "measures.features.expected_features: 501 expected features; expected at most 500" in msg
    assert "components.rating.scoring.thresholds: 21 thresholds; expected at most 20" in msg


def test_what_the_generated_code_unrolls_is_bounded():
    d = base()
    d["components"] = {f"c{i}": {"measure": "logins_30d", "scoring": {"type": "max", "max": 1},
                                 "restrict_to": {f"a{j}": 1 for j in range(20)} if i < 5 else None}
                       for i in range(100)}
    d["segments"] = [{"name": f"s{i}", "priority": i, "filter": {"plan": f"p{i}"}} for i in range(10)]
    msg = errors_of(d)  # 11 configurations of 100 components; 11 x 5 x 20 + 10 conditions
    assert "segments: 1100 scored components over 11 configurations" in msg and "expected at most 1000" in msg
    assert "segments: 1110 filter conditions evaluated over 11 configurations" not in msg  # within 2000
    d["segments"] = d["segments"][:9]
    parse_model(d, source=SRC)  # 1000 scored components: fine


def test_duplicate_components_in_a_segment_are_refused():
    d = base()
    d["segments"] = [{"name": "s", "priority": 1, "filter": {"plan": "x"}, "components": ["logins", "logins"]}]
    assert "segments[0].components[1]: duplicate component 'logins'" in errors_of(d)


def test_a_model_that_does_not_build_is_refused(monkeypatch):
    from streams.core import codegen

    def fail(plan, fns):
        raise RecursionError("maximum recursion depth exceeded during compilation")
    monkeypatch.setattr(codegen, "generate", fail)
    d = base()
    d["version"] = "does-not-build"  # a fingerprint no plan is cached for
    with pytest.raises(ModelError) as exc:
        parse_model(d, source=SRC)
    assert str(exc.value) == (f"{SRC}: <root>: cannot build the model: RecursionError: "
                              "maximum recursion depth exceeded during compilation")


def all_caps_doc() -> dict:
    """A model at every maximum of MODEL_LIMITS at once: every count, name and text length,
    number bound, and both budgets of the generated code (most filter conditions a `has` on
    a per_user measure: the most code per condition)."""
    from streams.core.model_loader import MODEL_LIMITS as L

    def nm(prefix, i):  # the first names of each kind have exactly name_chars characters
        s = f"{prefix}{i}"
        return s + "_" + "x" * (L.name_chars - len(s) - 1) if i < 3 else s
    M = [nm("m", i) for i in range(L.measures)]
    C = [nm("c", i) for i in range(L.components)]
    S = [nm("s", i) for i in range(L.sections)]
    measures = {}
    for i, name in enumerate(M):
        k = i % 10
        if k == 0:
            measures[name] = {"type": "event_count", "window_days": 30,
                              "events": [nm("e", j) for j in range(L.events - 1)] + ["login"] if i == 0 else ["login"]}
        elif k in (1, 9):
            measures[name] = {"type": "per_user", "measure": M[i - 1], "per": M[i - 7 if k == 9 else i + 1],
                              "percent": True}
        elif k == 2:
            measures[name] = {"type": "distinct_users", "window_days": 30}
        elif k == 3:
            measures[name] = {"type": "pct_change", "of": M[i - 3]}
        elif k == 4:
            measures[name] = {"type": "feature_adoption", "window_days": 30,
                              "expected_features": [f"f{j}" for j in range(L.expected_features - 1)] + ["api"]
                              if i == 4 else ["api"]}
        elif k == 5:
            measures[name] = {"type": "days_since", "kinds": ["usage", "ticket", "survey"]}
        elif k == 6:
            measures[name] = {"type": "csat_avg", "window_days": 60}
        elif k == 7:
            measures[name] = {"type": "open_tickets"}
        else:
            measures[name] = {"type": "attribute", "attribute": f"a{i}"}
    measures[M[0]]["description"] = "d" * L.description_chars
    per_user = [n for n, m in measures.items() if m["type"] == "per_user"]

    def flt(i):  # filter_conditions conditions
        f = {"has": [per_user[(i + j) % len(per_user)] for j in range(L.filter_conditions - 3)]}
        f["plan"] = [f"p{j}" for j in range(L.filter_values - 1)] + ["pro"] if i == 0 else ["pro", "enterprise"]
        f["seats"] = {"gte": -L.number_abs, "lte": L.number_abs}
        return f

    restricted = 10  # c0..c9 carry a restriction of filter_conditions conditions
    components = {}
    for i, name in enumerate(C):
        if i % 5 == 0:
            scoring = {"type": "steps", "thresholds": [{"min": L.number_abs - j, "points": 100 - j}
                                                        for j in range(L.thresholds - 1)] + [{"min": 0, "points": 50}]}
        elif i % 5 == 1:
            scoring = {"type": "max", "max": L.number_abs}
        else:
            scoring = {"type": "linear", "worst": -L.number_abs, "best": L.number_abs}
        components[name] = {"measure": M[(2 * i) % L.measures], "scoring": scoring, "weight": L.weight_max,
                            "section": S[i % L.sections], "missing": ["exclude", "zero", "neutral"][i % 3]}
        if i < restricted:
            components[name]["restrict_to"] = flt(i)
    components[C[0]]["description"] = "d" * L.description_chars
    per_segment = (L.scored_entries - L.components) // L.segments  # the default scores them all
    conditions_left = L.evaluated_conditions - (L.segments + restricted) * L.filter_conditions
    with_restricted = conditions_left // L.filter_conditions  # segments scoring one restricted component
    segments = []
    for i in range(L.segments):
        listed = C[restricted:restricted + per_segment]
        if i < with_restricted:
            listed = [C[i % restricted]] + listed[1:]
        segments.append({"name": nm("g", i), "priority": L.number_abs - i, "filter": flt(i + 1),
                         "components": listed, "description": "d" * 100})
    segments[2]["section_weights"] = {s: L.weight_max for s in S}
    return {
        "version": "v" * L.version_chars, "name": "n" * L.model_name_chars, "description": "d" * L.description_chars,
        "state": {"retention_days": L.retention_days, "allowed_lateness_seconds": L.allowed_lateness_seconds,
                  "max_future_skew_seconds": L.max_future_skew_seconds, "score_history_days": L.score_history_days},
        "measures": measures,
        "sections": {s: {"weight": L.weight_max, "description": "d" * 100} for s in S},
        "components": components,
        "bands": [{"name": nm("b", i), "colour": nm("k", i), "min": 10 * i} for i in range(L.bands)],
        "segments": segments,
        "alerts": {"band_change": {"margin_points": L.margin_points, "cooldown_seconds": L.cooldown_seconds},
                   "trend": {"days": L.score_history_days, "drop_points": L.drop_points, "drop_percent": 100},
                   "component_thresholds": [{"component": c, "below": 50} for c in C],
                   "cooldown_seconds": L.cooldown_seconds},
    }


def test_a_model_at_every_limit_builds_and_scores():
    import yaml

    from streams.core import apply_events, current_score, score_all
    from streams.core.days import DAY
    from streams.core.model_loader import MODEL_LIMITS as L, model_from_yaml
    from streams.core.scoring import plan_of

    from .helpers import T0, attrs, survey, ticket, usage
    from .oracles import same_result

    doc = all_caps_doc()
    text = yaml.safe_dump(doc, default_flow_style=True, width=10 ** 6, sort_keys=False)
    model = model_from_yaml(text, "all-caps.yaml")  # parsed, validated and built
    configs = [model.default] + [s.config for s in model.segments]
    assert (len(model.measures), len(model.components), len(model.sections), len(model.segments),
            len(model.bands), len(model.alerts.component_thresholds)) == (
        L.measures, L.components, L.sections, L.segments, L.bands, L.component_thresholds)
    assert sum(len(c.entries) for c in configs) == L.scored_entries
    conditions = sum(len(model.components[n].restrict_to.conditions) for c in configs for n, _, _ in c.entries
                     if model.components[n].restrict_to is not None)
    assert conditions + sum(len(s.filter.conditions) for s in model.segments) == L.evaluated_conditions
    assert plan_of(model).run is not None
    now = T0 + 10 * DAY
    numbers = {f"a{i}": L.number_abs - 5 for i in range(8, L.measures, 10)}
    for account, plan, segment in (("acc-1", "pro", model.segments[0].name), ("acc-2", "p0", "default")):
        events = [usage(account, T0 + i * 3600, name="login", user=f"u{i % 3}", feature="api", value=5)
                  for i in range(40)]
        events += [ticket(account, T0 + 100, "t1", "opened"), survey(account, T0 + 200, "csat", 4),
                   attrs(account, T0 + 300, plan=plan, seats=10, **numbers)]
        batch = score_all(events, model, now)[account]
        stream = current_score(apply_events(None, account, events, model, now).state, account, model, now)
        assert batch.segment == segment and batch.score is not None and 0 <= batch.score <= 100
        assert same_result(stream, batch)


def test_docs_list_the_limits():
    """docs/health-model.md, "Limits", lists every field of MODEL_LIMITS with its value."""
    import dataclasses
    import re

    from streams.core.model_loader import MODEL_LIMITS

    doc = (DEFAULT_MODEL_PATH.parents[2] / "docs" / "health-model.md").read_text()
    section = doc.split("\n## Limits\n", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| ([0-9.e+]+)", section, re.M))
    rows["errors_reported"] = re.search(r"`errors_reported` \((\d+)\)", section).group(1)
    fields = {f.name: getattr(MODEL_LIMITS, f.name) for f in dataclasses.fields(MODEL_LIMITS)}
    assert set(rows) == set(fields)
    for name, value in fields.items():
        assert float(rows[name]) == value, name


def test_allowed_lateness_is_one_number_or_one_per_kind():
    d = base()
    assert parse_model(d).state.lateness_of == {"usage": 86400, "ticket": 604800, "survey": 604800,
                                                "account": 604800}
    d["state"] = {"allowed_lateness_seconds": 3600}
    assert set(parse_model(d).state.lateness) == {3600}
    d["state"] = {"allowed_lateness_seconds": {"survey": 1209600}}
    assert parse_model(d).state.lateness_of == {"usage": 86400, "ticket": 604800, "survey": 1209600,
                                                "account": 604800}
    d["state"] = {"allowed_lateness_seconds": {"surveys": 3600, "ticket": -1, "usage": "a day"}}
    msg = errors_of(d)
    assert "state.allowed_lateness_seconds.surveys: unknown key (expected one of: usage, ticket, survey, account)" \
        in msg
    assert "state.allowed_lateness_seconds.ticket: expected a number >= 0, got -1" in msg
    assert "state.allowed_lateness_seconds.usage: expected an integer, got 'a day'" in msg
    d["state"] = {"allowed_lateness_seconds": [1]}
    assert "state.allowed_lateness_seconds: expected an integer, got" in errors_of(d)


def test_a_category_measure_is_refused_only_where_its_declared_values_lack_points():
    d = base()
    d["measures"]["mood"] = {"type": "category", "attribute": "csm_sentiment",
                             "points": {"positive": 100, "neutral": 50}}
    assert dict(parse_model(d).measures["mood"].points) == {"neutral": 50.0, "positive": 100.0}  # no values: fine
    d["measures"]["mood"]["values"] = ["Positive", "neutral", "negative"]
    assert "measures.mood.points: no points for the value 'negative' (listed in values)" in errors_of(d)
    d["measures"]["mood"] = {"type": "category", "attribute": "x", "points": {"a": 1, "A": 2, "b": "high", True: 3}}
    msg = errors_of(d)
    assert "measures.mood.points.A: the value 'a' is given twice (values are matched ignoring case)" in msg
    assert "measures.mood.points.b: expected a number, got 'high'" in msg
    assert "measures.mood.points: expected values that are non-empty text, got true" in msg
    d["measures"]["mood"] = {"type": "category", "attribute": "x"}
    assert "measures.mood.points: missing required field for a category measure" in errors_of(d)
    d["measures"]["mood"] = {"type": "days_since", "attribute": "contract_start", "kinds": ["ticket"]}
    assert "measures.mood: give one of events (usage event names), kinds or attribute (a date attribute)" \
        in errors_of(d)


def test_the_global_score_threshold_and_fall_rules_are_checked():
    d = base()
    d["alerts"] = {"score_threshold": {"below": 35}, "fall": {"points": 20, "days": 7}}
    rules = parse_model(d).alerts
    assert (rules.score_threshold.below, rules.score_threshold.margin_points) == (35.0, 3.0)
    assert (rules.fall.points, rules.fall.days) == (20.0, 7)
    d["alerts"] = {"score_threshold": {"below": 135, "margin": 1}, "fall": {"points": 0, "days": 400}}
    d["state"] = {"score_history_days": 30}
    msg = errors_of(d)
    assert "alerts.score_threshold.below: expected a number <= 100, got 135" in msg
    assert "alerts.score_threshold.margin: unknown key (expected one of: below, margin_points)" in msg
    assert "alerts.fall.points: expected a number > 0, got 0" in msg
    assert "alerts.fall.days: looking 400 days back needs state.score_history_days >= 400, got 30" in msg
