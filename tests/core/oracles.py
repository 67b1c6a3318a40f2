"""The reference formulas: the scoring, measures, filters and alert rules as first written (one loop,
dictionaries, no caches, no generated code). Production evaluates through the compiled plan
(streams.core.scoring / codegen) and the one alert transition (streams.core.alerts.transition);
the tests hold both to these, bit for bit."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from streams.core.alerts import (BELOW, COMPONENT, DEGRADED, FALL, MAX_ALERT_EVENT_IDS, RECOVERED, TREND, Alert,
                                 ComponentChange, _alert_id, explain)
from streams.core.days import CENTI, MILLI, day_of
from streams.core.filters import _eq, _num
from streams.core.measures import numeric
from streams.core.model import (NEUTRAL_SCORE, AccountFilter, AlertRules, Band, Component, HealthModel, Measure,
                                ScoreConfig, Scoring, band_of)
from streams.core.scoring import AccountScore
from streams.core.state import T_FIRST, T_RESOLVED
from .helpers import AlertState

_KEY = {DEGRADED: "dg", RECOVERED: "rc", TREND: "tr", BELOW: "sb", FALL: "fl"}


# -------------------------------------------------------------------- scoring
def scale(s: Scoring, value: float) -> float:
    """0..100 from a measure value."""
    if s.type == "linear":
        x = (value - s.worst) / (s.best - s.worst) * 100.0
    elif s.type == "steps":
        x = s.otherwise
        for lo, points in s.steps:
            if value >= lo:
                x = points
                break
    else:  # max
        x = value / s.max * 100.0
    return 0.0 if x <= 0.0 else 100.0 if x >= 100.0 else x


def component_score(c: Component, value: float | None) -> float | None:
    """The component's score: scaled, clamped to 0..100, rounded to 4 decimals; for a missing
    value the policy's score (zero: 0, neutral: 50) or None (exclude)."""
    if value is None:
        if c.missing == "zero":
            return 0.0
        if c.missing == "neutral":
            return NEUTRAL_SCORE
        return None
    return round(scale(c.scoring, value), 4)


def component_band(c: Component, score: float | None) -> str | None:
    """bad / average / good; a score on a border belongs to the upper interval."""
    if c.bands is None or score is None:
        return None
    average, good = c.bands
    return "good" if score >= good else "average" if score >= average else "bad"

def choose_config(model: HealthModel, mv) -> ScoreConfig:
    """The highest-priority segment whose filter matches, else the default configuration."""
    for seg in model.segments:
        if matches(seg.filter, mv.attrs, mv.get):
            return seg.config
    return model.default


def same_result(a: AccountScore, b: AccountScore | None) -> bool:
    """Equal score, band, segment, coverage and components (model identity aside)."""
    return (b is not None and a.score == b.score and a.band == b.band and a.segment == b.segment
            and a.coverage == b.coverage and a.components == b.components)


# -------------------------------------------------------------------- filters
def matches(flt: AccountFilter | None, attributes: Mapping[str, Any],
            measure: Callable[[str], float | None]) -> bool:
    """True when every condition holds. A missing attribute fails every test but
    ``exists: false``, ``ne`` and ``not_in``."""
    if flt is None:
        return True
    for c in flt.conditions:
        op = c.op
        if op == "has":
            if measure(c.attribute) is None:
                return False
            continue
        v = attributes.get(c.attribute)
        if op == "exists":
            if (v is not None) != c.arg:
                return False
        elif op == "eq":
            if v is None or not _eq(v, c.arg):
                return False
        elif op == "ne":
            if v is not None and _eq(v, c.arg):
                return False
        elif op == "in":
            if v is None or not any(_eq(v, a) for a in c.arg):
                return False
        elif op == "not_in":
            if v is not None and any(_eq(v, a) for a in c.arg):
                return False
        else:
            x = _num(v)
            if x is None:
                return False
            a = c.arg
            if not ((op == "gt" and x > a) or (op == "gte" and x >= a)
                    or (op == "lt" and x < a) or (op == "lte" and x <= a)):
                return False
    return True


# ------------------------------------------------------------------- measures
def compute(m: Measure, measures: Mapping[str, Measure], src, today: int, attrs: Mapping[str, Any],
            get: Callable[[str], float | None]) -> float | None:
    t = m.type
    lo = today - m.window_days + 1 if m.window_days else None
    if t == "event_count":
        return float(src.count(m.events, lo))
    if t == "distinct_users":
        return float(src.users(lo))
    if t == "value_sum":
        return src.value(m.events, lo)[0] / CENTI
    if t == "value_avg":
        s, n = src.value(m.events, lo)
        return s / n / CENTI if n else None
    if t == "per_user":
        num, den = get(m.measure), get(m.per)
        if num is None or not den or den <= 0:
            return None
        return num / den * (100.0 if m.percent else 1.0)
    if t == "feature_adoption":
        used = src.features(lo)
        if m.expected_features is not None:
            return len(used.intersection(m.expected_features)) * 100.0 / len(set(m.expected_features))
        expected = numeric(attrs.get(m.expected_count_attribute))
        if not expected or expected <= 0:
            return None
        return min(len(used) * 100.0 / expected, 100.0)
    if t == "pct_change":
        bm = measures[m.of]
        n = bm.window_days
        cur_lo, prev_lo = today - n + 1, today - 2 * n + 1
        if bm.type == "event_count":
            cur, prev = src.count(bm.events, cur_lo), src.count(bm.events, prev_lo, cur_lo)
        else:
            cur, prev = src.value(bm.events, cur_lo)[0], src.value(bm.events, prev_lo, cur_lo)[0]
        if prev == 0:
            return None
        return (cur - prev) * 100.0 / abs(prev)
    if t == "days_since":
        if m.attribute is not None:
            day = _date_day(attrs.get(m.attribute))
            return None if day is None else float(today - day)
        if m.kinds is not None:
            days = [d for d in (src.last_kind_day(k) for k in m.kinds) if d is not None]
            last = max(days) if days else None
        else:
            last = src.last_usage_day(m.events)
        if last is None:
            return None
        return float(max(today - last, 0))
    if t == "open_tickets":
        return float(src.open_tickets())
    if t == "mean_first_response_hours":
        s, n = src.ticket_durations(lo, T_FIRST)
        return s / n / 60.0 if n else None
    if t == "mean_resolution_hours":
        s, n = src.ticket_durations(lo, T_RESOLVED)
        return s / n / 60.0 if n else None
    if t == "sla_breach_share":
        opened, breached = src.sla(lo)
        return breached * 100.0 / opened if opened else None
    if t == "csat_avg":
        b = src.surveys(lo)
        return b[0] / b[1] / MILLI if b[1] else None
    if t == "nps":
        b = src.surveys(lo)
        n = b[2] + b[3] + b[4]
        return (b[2] - b[4]) * 100.0 / n if n else None
    if t == "attribute":
        return numeric(attrs.get(m.attribute))
    if t == "days_until":
        day = _date_day(attrs.get(m.attribute))
        return None if day is None else float(day - today)
    if t == "category":
        v = attrs.get(m.attribute)
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            return None
        return dict(m.points).get(str(v).strip().casefold())
    raise ValueError(f"unknown measure type {t!r}")


def _date_day(v) -> int | None:
    """A date attribute's day, the way the standard library reads it (the core may not import datetime)."""
    import datetime

    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return int(v // 86400) if -1e12 < v < 1e12 else None
    if not isinstance(v, str) or len(v.strip()) < 10 or (len(v.strip()) > 10 and v.strip()[10] not in "Tt "):
        return None
    head = v.strip()[:10]
    if not (head[4] == head[7] == "-" and (head[:4] + head[5:7] + head[8:]).isdigit()):  # YYYY-MM-DD only
        return None
    try:
        return (datetime.date.fromisoformat(head) - datetime.date(1970, 1, 1)).days
    except ValueError:
        return None


# --------------------------------------------------------------------- alerts
def reference_alerts(state: AlertState, old: AccountScore | None, new: AccountScore, now: float,
                    rules: AlertRules, bands: tuple[Band, ...], *, event_ids: Iterable[str] = (),
                    time: float | None = None, history_days: int = 30, historic: bool = False,
                    components: tuple[str, ...] = ()) -> tuple[AlertState, list[Alert]]:
    """Pure transition: (alert state, previous score, new score) -> (new alert state, alerts). The number of
    alerts a historic evaluation held back is in the returned state's ``held_back``; `components`: the model's
    component names, over which band snapshots are taken."""
    # never mutate the caller's state
    st = AlertState(state.band, dict(state.last), state.trend_armed, list(state.below), state.seq,
                    dict(state.history), state.score_below, state.fallen, state.snapshot)
    alerts: list[Alert] = []
    score = new.score
    if score is None or new.band is None:  # no data, or too little for a band: nothing to alert on
        return st, alerts
    today = day_of(now)
    when = now if time is None else time
    ids = tuple(event_ids)[-MAX_ALERT_EVENT_IDS:]
    old_score = old.score if old is not None else None
    names = {b.name: i for i, b in enumerate(bands)}

    def cooled(key: str, cooldown: float) -> bool:
        t = st.last.get(_KEY.get(key, key))
        return historic or t is None or now - t >= cooldown

    def mark(key: str) -> None:
        if not historic:
            st.last[_KEY.get(key, key)] = int(now)

    def snapshot_of(score_: AccountScore) -> list:
        return [score_.score, today, score_.model_fingerprint[:8],
                [round(score_.components[n].contribution * 100) if n in score_.components else None
                 for n in components]]

    def since(snapshot: list) -> tuple | None:
        if snapshot[2] != new.model_fingerprint[:8] or len(snapshot[3]) != len(components):
            return None
        changes = []
        for name, kept in zip(components, snapshot[3]):
            now_c = new.components.get(name)
            after = now_c.contribution if now_c is not None else 0.0
            before = 0.0 if kept is None else kept / 100
            unchanged = now_c is None if kept is None else round(after * 100) == kept
            if not unchanged:
                changes.append(ComponentChange(name, None, now_c.value if now_c else None, None,
                                               now_c.score if now_c else None, before, after))
        return tuple(sorted(changes, key=lambda c: (-abs(c.contribution_after - c.contribution_before),
                                                    c.component)))

    def emit(atype: str, band_before, band_after, key_parts, score_before, detail=None, against=None) -> None:
        if historic:
            st.held_back += 1
            return
        explanation = since(against) if against else None
        if explanation is None:
            explanation = explain(old, new)
        if not explanation:
            explanation = tuple(ComponentChange(n, c.value, c.value, c.score, c.score, c.contribution, c.contribution)
                                for n, c in sorted(new.components.items(),
                                                   key=lambda kv: (-abs(kv[1].contribution), kv[0])))
        aid = _alert_id(new.account_id, atype, new.model_fingerprint, *key_parts, today, st.seq)
        st.seq += 1
        alerts.append(Alert(id=aid, type=atype, account_id=new.account_id, time=when,
                            score_before=score_before, score_after=score, band_before=band_before,
                            band_after=band_after, model_version=new.model_version,
                            explanation=explanation, event_ids=ids, detail=detail or {}))

    # band crossing with hysteresis and cooldown; explained against the score when the band was alerted
    rule = rules.band_change
    if st.band is None or st.band not in names:
        st.band = band_of(bands, score)
        st.snapshot = snapshot_of(new)
    elif rule is not None:
        i = names[st.band]
        lower = bands[i].min
        upper = bands[i - 1].min if i > 0 else None
        target, atype = None, None
        if score < lower - rule.margin_points:
            target, atype = band_of(bands, score), DEGRADED
        elif upper is not None and score >= upper + rule.margin_points:
            target, atype = band_of(bands, score), RECOVERED
        if target is not None and cooled(atype, rule.cooldown_seconds):
            detail = {"margin_points": rule.margin_points}
            if st.snapshot:
                detail["band_since_day"] = st.snapshot[1]
            emit(atype, st.band, target, (st.band, target), st.snapshot[0] if st.snapshot else old_score,
                 detail, st.snapshot)
            mark(atype)
            st.band = target
            st.snapshot = snapshot_of(new)

    # declining trend against the score `days` ago
    trend = rules.trend
    if trend is not None:
        ref_day = None
        for d in st.history:
            di = int(d)
            if di <= today - trend.days and (ref_day is None or di > ref_day):
                ref_day = di
        if ref_day is not None:
            ref = st.history[str(ref_day)]
            drop = ref - score
            cond = ((trend.drop_points is not None and drop >= trend.drop_points)
                    or (trend.drop_percent is not None and ref > 0 and drop * 100.0 / ref >= trend.drop_percent))
            if not cond:
                st.trend_armed = True
            elif st.trend_armed and cooled(TREND, rules.cooldown_seconds):
                emit(TREND, band_of(bands, ref), new.band, (ref_day,), ref,
                     {"reference_day": ref_day, "reference_score": ref, "drop_points": round(drop, 2),
                      "days": trend.days})
                mark(TREND)
                st.trend_armed = False

    # the global score below a level
    rule_below = rules.score_threshold
    if rule_below is not None:
        if score < rule_below.below:
            if not st.score_below and cooled(BELOW, rules.cooldown_seconds):
                emit(BELOW, band_of(bands, old_score) if old_score is not None else new.band, new.band, (), old_score,
                     {"below": rule_below.below})
                mark(BELOW)
                st.score_below = True
        elif score >= rule_below.below + rule_below.margin_points:
            st.score_below = False

    # a fall below the highest daily score of the last days
    fall = rules.fall
    if fall is not None:
        recent = {int(d): v for d, v in st.history.items() if today - fall.days <= int(d) <= today}
        if recent:
            peak = max(recent.values())
            peak_day = min(d for d, v in recent.items() if v == peak)
        if not recent or peak - score < fall.points:
            st.fallen = False
        elif not st.fallen and cooled(FALL, rules.cooldown_seconds):
            emit(FALL, band_of(bands, peak), new.band, (peak_day,), peak,
                 {"reference_day": peak_day, "reference_score": peak, "drop_points": round(peak - score, 2),
                  "days": fall.days})
            mark(FALL)
            st.fallen = True

    # component thresholds
    for th in rules.component_thresholds:
        c = new.components.get(th.component)
        if c is None or c.score is None:
            continue
        was = th.component in st.below
        if c.score < th.below and not was:
            key = f"c:{th.component}"
            if cooled(key, rules.cooldown_seconds):
                emit(COMPONENT, band_of(bands, old_score) if old_score is not None else new.band, new.band,
                     (th.component,), old_score,
                     {"component": th.component, "below": th.below, "component_score": c.score})
                mark(key)
                st.below.append(th.component)
        elif c.score >= th.below and was:
            st.below.remove(th.component)

    # the day's score for later trend comparisons (bounded)
    st.history[str(today)] = score
    keep_from = today - history_days
    for d in [d for d in st.history if int(d) < keep_from]:
        del st.history[d]
    return st, alerts
