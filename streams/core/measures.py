"""Measure values at a given day, from any source of aggregates (the incremental state, or
the batch twin's event lists). ``None`` means missing (no data to compute it from).

A source implements: count(names, lo, hi), value(names, lo, hi), users(lo), features(lo),
last_usage_day(names), last_kind_day(kind), open_tickets(), ticket_durations(lo, field),
sla(lo), surveys(lo), attributes(), has_data(lo). ``lo`` is the first day included.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from .days import CENTI, MILLI
from .model import HealthModel, Measure
from .state import T_FIRST, T_RESOLVED


def numeric(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            x = float(v.strip().rstrip("%"))
        except ValueError:
            return None
        return x if x == x and x not in (float("inf"), float("-inf")) else None
    return None


_UNSET = object()


class MeasureValues:
    """Lazily computed, memoised measure values of one account at one day."""

    __slots__ = ("model", "source", "today", "attrs", "values", "fns")

    def __init__(self, model: HealthModel, source, today: int, attrs: Mapping[str, Any] | None = None):
        self.model = model
        self.source = source
        self.today = today
        self.attrs: Mapping[str, Any] = source.attributes() if attrs is None else attrs
        self.values: dict[str, float | None] = {}
        self.fns = compiled_measures(model)

    def get(self, name: str) -> float | None:
        v = self.values.get(name, _UNSET)
        if v is _UNSET:
            v = self.values[name] = self.fns[name](self.source, self.today, self.attrs, self.get)
        return v


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
    raise ValueError(f"unknown measure type {t!r}")


# ------------------------------------------------------------------ compiled form
MeasureFn = Callable[[Any, int, Mapping[str, Any], Callable[[str], "float | None"]], "float | None"]
_COMPILED: dict[str, dict[str, MeasureFn]] = {}


def compiled_measures(model: HealthModel) -> dict[str, MeasureFn]:
    """measure name -> ``fn(source, today, attrs, get)``, cached per model fingerprint."""
    fns = _COMPILED.get(model.fingerprint)
    if fns is None:
        fns = {name: compile_measure(m, model.measures) for name, m in model.measures.items()}
        if len(_COMPILED) > 64:
            _COMPILED.clear()
        _COMPILED[model.fingerprint] = fns
    return fns


def compile_measure(m: Measure, measures: Mapping[str, Measure]) -> MeasureFn:
    """The measure as a closure computing exactly what :func:`compute` computes (same source
    calls, same arithmetic in the same order), without the per-call dispatch on the type."""
    t = m.type
    w = m.window_days
    back = w - 1 if w else None  # lo = today - back (== today - w + 1)
    events = m.events
    if t == "event_count":
        return lambda src, today, attrs, get: float(src.count(events, today - back if w else None))
    if t == "distinct_users":
        return lambda src, today, attrs, get: float(src.users(today - back if w else None))
    if t == "value_sum":
        return lambda src, today, attrs, get: src.value(events, today - back if w else None)[0] / CENTI
    if t == "value_avg":
        def value_avg(src, today, attrs, get):
            s, n = src.value(events, today - back if w else None)
            return s / n / CENTI if n else None
        return value_avg
    if t == "per_user":
        num_name, den_name, factor = m.measure, m.per, (100.0 if m.percent else 1.0)

        def per_user(src, today, attrs, get):
            num, den = get(num_name), get(den_name)
            if num is None or not den or den <= 0:
                return None
            return num / den * factor
        return per_user
    if t == "feature_adoption":
        if m.expected_features is not None:
            expected_features = m.expected_features
            n_expected = len(set(expected_features))
            return lambda src, today, attrs, get: \
                len(src.features(today - back if w else None).intersection(expected_features)) * 100.0 / n_expected
        attr = m.expected_count_attribute

        def adoption_vs_attribute(src, today, attrs, get):
            used = src.features(today - back if w else None)
            expected = numeric(attrs.get(attr))
            if not expected or expected <= 0:
                return None
            return min(len(used) * 100.0 / expected, 100.0)
        return adoption_vs_attribute
    if t == "pct_change":
        bm = measures[m.of]
        n = bm.window_days
        bevents = bm.events
        if bm.type == "event_count":
            def pct_change(src, today, attrs, get):
                cur_lo, prev_lo = today - n + 1, today - 2 * n + 1
                cur, prev = src.count(bevents, cur_lo), src.count(bevents, prev_lo, cur_lo)
                if prev == 0:
                    return None
                return (cur - prev) * 100.0 / abs(prev)
        else:
            def pct_change(src, today, attrs, get):
                cur_lo, prev_lo = today - n + 1, today - 2 * n + 1
                cur, prev = src.value(bevents, cur_lo)[0], src.value(bevents, prev_lo, cur_lo)[0]
                if prev == 0:
                    return None
                return (cur - prev) * 100.0 / abs(prev)
        return pct_change
    if t == "days_since":
        if m.kinds is not None:
            kinds = m.kinds

            def days_since_kinds(src, today, attrs, get):
                last = None  # the max of the kinds' last days (None: none)
                for k in kinds:
                    d = src.last_kind_day(k)
                    if d is not None and (last is None or d > last):
                        last = d
                if last is None:
                    return None
                return float(max(today - last, 0))
            return days_since_kinds

        def days_since(src, today, attrs, get):
            last = src.last_usage_day(events)
            if last is None:
                return None
            return float(max(today - last, 0))
        return days_since
    if t == "open_tickets":
        return lambda src, today, attrs, get: float(src.open_tickets())
    if t in ("mean_first_response_hours", "mean_resolution_hours"):
        end_field = T_FIRST if t == "mean_first_response_hours" else T_RESOLVED

        def mean_hours(src, today, attrs, get):
            s, n = src.ticket_durations(today - back if w else None, end_field)
            return s / n / 60.0 if n else None
        return mean_hours
    if t == "sla_breach_share":
        def sla_breach_share(src, today, attrs, get):
            opened, breached = src.sla(today - back if w else None)
            return breached * 100.0 / opened if opened else None
        return sla_breach_share
    if t == "csat_avg":
        def csat_avg(src, today, attrs, get):
            b = src.surveys(today - back if w else None)
            return b[0] / b[1] / MILLI if b[1] else None
        return csat_avg
    if t == "nps":
        def nps(src, today, attrs, get):
            b = src.surveys(today - back if w else None)
            n = b[2] + b[3] + b[4]
            return (b[2] - b[4]) * 100.0 / n if n else None
        return nps
    if t == "attribute":
        attribute = m.attribute
        return lambda src, today, attrs, get: numeric(attrs.get(attribute))

    def unknown(src, today, attrs, get):
        raise ValueError(f"unknown measure type {t!r}")
    return unknown
