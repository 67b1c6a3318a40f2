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


class MeasureValues:
    """Lazily computed, memoised measure values of one account at one day."""

    __slots__ = ("model", "source", "today", "attrs", "values")

    def __init__(self, model: HealthModel, source, today: int):
        self.model = model
        self.source = source
        self.today = today
        self.attrs: Mapping[str, Any] = source.attributes()
        self.values: dict[str, float | None] = {}

    def get(self, name: str) -> float | None:
        try:
            return self.values[name]
        except KeyError:
            measures = self.model.measures
            v = self.values[name] = compute(measures[name], measures, self.source, self.today, self.attrs, self.get)
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
