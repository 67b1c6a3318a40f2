"""The compiled evaluation (generated code, compiled measures, cached weights, the one alert
transition on the stored form, the compact pub rows) gives exactly what the straightforward
reference formulas (tests/core/oracles.py) give."""
import copy
import random

import orjson
from hypothesis import HealthCheck, given, settings, strategies as st

from streams.core import AccountState, apply_events, last_score, parse_model, reevaluate
from streams.core.alerts import alerts_of, band_snapshot, transition
from streams.core.days import DAY, HOUR, day_of, fingerprint
from streams.core.model import band_of
from streams.core.scoring import AccountScore, ComponentScore, _normalise, plan_of
from streams.core.state import _last_hour_before

from .helpers import T0, AlertState, roundtrip
from .oracles import choose_config, component_band, component_score, compute, matches, reference_alerts
from .test_properties import MODEL, build, spec_st


class _ReferenceValues:
    """Measure values computed with measures.compute (the reference), memoised."""

    def __init__(self, model, source, today):
        self.model, self.source, self.today = model, source, today
        self.attrs = source.attributes()
        self.values = {}

    def get(self, name):
        if name not in self.values:
            m = self.model.measures
            self.values[name] = compute(m[name], m, self.source, self.today, self.attrs, self.get)
        return self.values[name]


def reference_evaluate(model, account_id, source, today, has_data) -> AccountScore:
    """The scoring as first written: one loop, dictionaries, no caches."""
    from math import fsum
    mv = _ReferenceValues(model, source, today)
    config = choose_config(model, mv)
    rows = []
    for name, w, sec in config.entries:
        c = model.components[name]
        if c.restrict_to is not None and not matches(c.restrict_to, mv.attrs, mv.get):
            continue
        value = mv.get(c.measure)
        rows.append((name, w, sec, c, value, component_score(c, value)))
    nominal = _normalise([(n, w, s) for n, w, s, _, _, _ in rows], config.section_weights)
    coverage = fsum(nominal[n] for n, _, _, _, v, _ in rows if v is not None)
    actual = _normalise([(n, w, s) for n, w, s, _, _, sc in rows if sc is not None], config.section_weights)
    components, parts = {}, []
    for n, _, _, c, value, score in rows:
        eff = actual.get(n, 0.0)
        contrib = eff * score if score is not None else 0.0
        parts.append(contrib)
        components[n] = ComponentScore(None if value is None else round(value, 4), score, component_band(c, score),
                                       round(eff, 6), round(contrib, 4))
    total = None
    if has_data and coverage > 1e-12:
        total = min(max(round(fsum(parts), 2), 0.0), 100.0)
    band = band_of(model.bands, total) if round(coverage, 4) >= model.min_coverage else None
    return AccountScore(account_id, total, band, config.name, round(coverage, 4), components,
                        model.version, model.fingerprint)


def _states(specs, now):
    states = {}
    for e in sorted(build(specs), key=lambda e: e.occurred_at):
        if e.occurred_at <= now:
            states.setdefault(e.account_id, []).append(e)
    return {acc: apply_events(None, acc, evs, MODEL, now).state for acc, evs in states.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=spec_st, now_day=st.integers(1, 80), masks=st.lists(st.integers(0, 2 ** 17 - 1), min_size=3, max_size=3))
def test_compiled_paths_equal_the_reference(specs, now_day, masks):
    now = T0 + now_day * DAY
    today = day_of(now)
    plan = plan_of(MODEL)
    for acc, state in _states(specs, now).items():
        has = state.has_data(0)
        ref = reference_evaluate(MODEL, acc, state, today, has)
        assert plan.evaluate(acc, state, today, has) == ref  # the batch twin's call
        out = plan.run(state, today, state.attributes(), has, None, 0, None)  # the stream's
        assert plan.account_score(acc, *out) == ref
        # incremental: when the rows kept in pub were evaluated on this same state today (not on an
        # earlier day of the silence floor), whichever components a mask recomputes, the result is the full one
        pub = state.pub
        if pub is not None and pub["m"] == MODEL.fingerprint and pub["d"] == today and pub.get("a", today) == today:
            for mask in masks + [0, plan.all_mask]:
                again = plan.run(state, today, state.attributes(), has, pub["c"], mask, pub["g"])
                assert plan.account_score(acc, *again) == ref


def _alert_model(**alerts):
    doc = copy.deepcopy({"version": "a", "measures": {"x": {"type": "attribute", "attribute": "x"},
                                                      "y": {"type": "attribute", "attribute": "y"}},
                         "components": {"x": {"measure": "x", "scoring": {"type": "max", "max": 100}},
                                        "y": {"measure": "y", "scoring": {"type": "max", "max": 100}}},
                         "state": {"score_history_days": 6}, "alerts": alerts})
    return parse_model(doc)


ALERT_MODELS = [
    _alert_model(band_change={"margin_points": 3, "cooldown_seconds": 3600},
                 trend={"days": 3, "drop_points": 10, "drop_percent": 15},
                 component_thresholds=[{"component": "x", "below": 40}, {"component": "y", "below": 60}],
                 cooldown_seconds=7200),
    _alert_model(band_change={"margin_points": 0, "cooldown_seconds": 0}, trend={"days": 1, "drop_points": 5}),
    _alert_model(trend={"days": 2, "drop_percent": 30}, component_thresholds=[{"component": "y", "below": 10}]),
    _alert_model(score_threshold={"below": 45, "margin_points": 5}, fall={"points": 12, "days": 3},
                 cooldown_seconds=3600),
    _alert_model(band_change={"margin_points": 2, "cooldown_seconds": 0}, score_threshold={"below": 60},
                 fall={"points": 5, "days": 6}, cooldown_seconds=0),
    _alert_model(),
]


def test_the_alert_transition_is_the_reference():
    rng = random.Random(5)
    quiet = 0
    for _ in range(20000):
        model = rng.choice(ALERT_MODELS)
        rules, bands = model.alerts, model.bands
        history = {}
        start = rng.randint(19990, 20010)
        for d in range(start, start + rng.randint(0, 9)):
            if rng.random() < 0.7:
                history[str(d)] = round(rng.uniform(0, 100), 2)
        state = AlertState(band=rng.choice([None, "Healthy", "At Risk", "Needs Attention", "gone"]),
                           last={k: int(T0 + rng.uniform(-DAY, DAY)) for k in rng.sample(["dg", "rc", "tr", "c:x", "sb", "fl"], 2)},
                           trend_armed=rng.random() < 0.5, below=rng.sample(["x", "y"], rng.randint(0, 2)),
                           score_below=rng.random() < 0.3, fallen=rng.random() < 0.3,
                           seq=rng.randint(0, 3), history=history,
                           snapshot=rng.choice([None, [round(rng.uniform(0, 100), 2), start, model.fingerprint[:8],
                                                       [rng.choice([None, 0, 2500]), rng.choice([None, 1250])]],
                                                [50.0, start, "another model", [100, None]]]))
        historic = rng.random() < 0.2
        now = (20000 + rng.randint(0, 12)) * DAY + rng.uniform(0, DAY)
        score = round(rng.uniform(0, 100), 2)
        comps = {n: ComponentScore(None, rng.choice([None, round(rng.uniform(0, 100), 4)]), None, 0.5, 0.0)
                 for n in ("x", "y") if rng.random() < 0.8}
        old_score = rng.choice([None, round(rng.uniform(0, 100), 2)])
        old = None if old_score is None else AccountScore("a", old_score, band_of(bands, old_score), "default", 1.0,
                                                          {}, "a", model.fingerprint)
        new = AccountScore("a", score, band_of(bands, score), "default", 1.0, comps, "a", model.fingerprint)
        stored = state.to_dict()
        frozen = orjson.dumps(stored)
        after, raised, held = transition(stored, score, old_score,
                                         [comps[th.component].score if th.component in comps else None
                                          for th in rules.component_thresholds],
                                         now, rules, bands, model.state.score_history_days, historic=historic,
                                         snapshot=lambda: band_snapshot(new, day_of(now), ("x", "y")))
        assert orjson.dumps(stored) == frozen  # the input is not mutated
        full, alerts = reference_alerts(AlertState.from_dict(stored), old, new, now, rules, bands,
                                        event_ids=["e1", "e2"], time=now - 5,
                                        history_days=model.state.score_history_days, historic=historic,
                                        components=("x", "y"))
        assert alerts_of(raised, old, new, now, event_ids=["e1", "e2"], time=now - 5,
                         components=("x", "y")) == alerts, (stored, score, now)
        assert held == full.held_back and not (historic and alerts)
        assert all(a.explanation for a in alerts) or not comps  # a real score always has components
        assert after == full.to_dict(), (stored, score, now)
        assert list(after) == list(full.to_dict())  # same keys in the same order (same bytes)
        quiet += not alerts
    assert 5000 < quiet < 19000  # both sides exercised


def test_compact_pub_rows_and_states_stored_by_earlier_versions():
    events = sorted(build([("usage", "acc-a", T0 + i * HOUR, ("login", f"u{i % 3}", "api", 3.0)) for i in range(30)]
                          + [("account", "acc-a", T0 + 5, {"seats": 10, "csm_rating": 7, "uptime_pct": 99.2})]),
                    key=lambda e: e.occurred_at)
    now = T0 + 30 * HOUR  # the last login (T0 + 29 h) is today's: the silence floor is today alone
    up = apply_events(None, "acc-a", events, MODEL, now)
    pub = up.state.pub
    assert all(r == 0 or len(r) == 2 for r in pub["c"])  # [value, score]: weights follow from the pattern
    score = last_score(up.state, "acc-a", MODEL)
    assert score == up.score
    # the layout of earlier versions: [value, score, weight, contribution]
    legacy = roundtrip(up.state)
    plan = plan_of(MODEL)
    legacy.pub = dict(legacy.pub, c=[[r[0], r[1], c.weight, c.contribution] if r else 0
                                     for r, c in zip(pub["c"], (score.components.get(n) for n in plan.order))])
    assert last_score(legacy, "acc-a", MODEL) == score
    # nothing changed: no new score to publish, and the pub is rewritten in the compact form
    again = reevaluate(legacy, "acc-a", MODEL, now)
    assert again.score is None and again.state.pub == pub
    legacy.pub = dict(again.state.pub, c=[[r[0], r[1], 0.0, 0.0] if r else 0 for r in pub["c"]])  # weights unused
    more = apply_events(legacy, "acc-a", [e for e in events[:1]], MODEL, now)  # a duplicate: nothing applied
    assert more.score is None


def test_fingerprints_and_lateness_hours():
    from base64 import urlsafe_b64encode
    from hashlib import blake2b
    rng = random.Random(1)
    for _ in range(2000):
        s = "".join(rng.choice("ab-_/+é0123456789") for _ in range(rng.randint(0, 30)))
        assert fingerprint(s) == urlsafe_b64encode(blake2b(s.encode(), digest_size=6).digest()).decode()
    for _ in range(20000):
        c = rng.choice([rng.uniform(-1e7, 1e7), rng.randint(-3000, 3000) * 3600.0,
                        rng.randint(-3000, 3000) * 3600 + rng.choice([-1e-9, 1e-9, 0.5, -0.5])])
        h = _last_hour_before(c)
        assert (h + 1) * HOUR <= c < (h + 2) * HOUR


def test_pruning_keeps_exactly_the_hours_not_wholly_before_the_horizon():
    rng = random.Random(2)
    cfg = MODEL.state
    for _ in range(500):
        st_ = AccountState(d0=20000)
        st_.wm = {k: T0 + rng.uniform(0, 5 * DAY) for k in rng.sample(["usage", "ticket", "survey", "account"], 3)}
        st_.fp = {f"{rng.choice('utsa')}{rng.randint(-30, 140)}": "x" * 8 for _ in range(rng.randint(0, 40))}
        cutoffs = {kind[0]: wm - cfg.lateness_of[kind] - st_.d0 * DAY for kind, wm in st_.wm.items()}
        expected = {h: v for h, v in st_.fp.items()
                    if not (int(h[1:]) + 1) * HOUR <= cutoffs.get(h[0], float("-inf"))}
        st_.prune_fingerprints(cfg)
        assert st_.fp == expected
