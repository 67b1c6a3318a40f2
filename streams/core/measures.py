"""Measure types: each declared once, in :data:`MEASURE_TYPES` (the parameters the model file
may give, how its value is computed, which events it depends on). Values are computed at a
given day from any source of aggregates (the incremental state, or the batch twin's event
lists); ``None`` means missing (no data to compute it from).

A source implements: count(names, lo, hi), value(names, lo, hi), users(lo), features(lo),
last_usage_day(names), last_kind_day(kind), open_tickets(), ticket_durations(lo, field),
sla(lo), surveys(lo), attributes(), has_data(lo). ``lo`` is the first day included.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping

from .days import CENTI, MILLI, day_of_date
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


# ------------------------------------------------------------------ the types
MeasureFn = Callable[[Any, int, Mapping[str, Any], Callable[[str], "float | None"]], "float | None"]
Deps = frozenset  # of (kind, usage event name or "*")

_ANY_USAGE: Deps = frozenset({("usage", "*")})
_TICKETS: Deps = frozenset({("ticket", "*")})
_SURVEYS: Deps = frozenset({("survey", "*")})
_NONE: Deps = frozenset()  # attributes: account events trigger a full recompute anyway


def per_user_value(num: float | None, den: float | None, factor: float) -> float | None:
    """per_user's arithmetic (the generated code inlines the measure with it)."""
    if num is None or not den or den <= 0:
        return None
    return num / den * factor


def _usage_events(m: Measure, measures, deps_of) -> Deps:
    return frozenset(("usage", e) for e in m.events) if m.events else _ANY_USAGE


def _window(m: Measure) -> tuple[int | None, int | None]:
    """(window_days, back): the window's first day is ``today - back if w else None`` (None: all
    retained days), written out in each measure (a call per measure would cost more than it)."""
    w = m.window_days
    return w, (w - 1 if w else None)


def _event_count(m, measures):
    events, (w, back) = m.events, _window(m)
    return lambda src, today, attrs, get: float(src.count(events, today - back if w else None))


def _distinct_users(m, measures):
    w, back = _window(m)
    return lambda src, today, attrs, get: float(src.users(today - back if w else None))


def _value_sum(m, measures):
    events, (w, back) = m.events, _window(m)
    return lambda src, today, attrs, get: src.value(events, today - back if w else None)[0] / CENTI


def _value_avg(m, measures):
    events, (w, back) = m.events, _window(m)

    def value_avg(src, today, attrs, get):
        s, n = src.value(events, today - back if w else None)
        return s / n / CENTI if n else None
    return value_avg


def _per_user(m, measures):
    num_name, den_name, factor = m.measure, m.per, (100.0 if m.percent else 1.0)
    return lambda src, today, attrs, get: per_user_value(get(num_name), get(den_name), factor)


def _feature_adoption(m, measures):
    w, back = _window(m)
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


def _pct_change(m, measures):
    bm = measures[m.of]
    n = bm.window_days
    bevents = bm.events
    if bm.type == "event_count":
        def totals(src, cur_lo, prev_lo):
            return src.count(bevents, cur_lo), src.count(bevents, prev_lo, cur_lo)
    else:
        def totals(src, cur_lo, prev_lo):
            return src.value(bevents, cur_lo)[0], src.value(bevents, prev_lo, cur_lo)[0]

    def pct_change(src, today, attrs, get):
        cur, prev = totals(src, today - n + 1, today - 2 * n + 1)
        if prev == 0:
            return None
        return (cur - prev) * 100.0 / abs(prev)
    return pct_change


def _days_since(m, measures):
    if m.attribute is not None:  # a date attribute: signed (a date ahead gives a negative number of days)
        attribute = m.attribute

        def days_since_date(src, today, attrs, get):
            day = day_of_date(attrs.get(attribute))
            return None if day is None else float(today - day)
        return days_since_date
    if m.kinds is not None:
        kinds = m.kinds

        def last_day(src):
            last = None  # the max of the kinds' last days (None: none)
            for k in kinds:
                d = src.last_kind_day(k)
                if d is not None and (last is None or d > last):
                    last = d
            return last
    else:
        events = m.events

        def last_day(src):
            return src.last_usage_day(events)

    def days_since(src, today, attrs, get):
        last = last_day(src)
        if last is None:
            return None
        return float(max(today - last, 0))
    return days_since


def _days_since_deps(m: Measure, measures, deps_of) -> Deps:
    if m.attribute is not None:
        return _NONE
    if m.kinds is not None:
        return frozenset(("usage", "*") if k == "usage" else (k, "*") for k in m.kinds)
    return _usage_events(m, measures, deps_of)


def _open_tickets(m, measures):
    return lambda src, today, attrs, get: float(src.open_tickets())


def _mean_hours(end_field: int):
    def compile_mean_hours(m, measures):
        w, back = _window(m)

        def mean_hours(src, today, attrs, get):
            s, n = src.ticket_durations(today - back if w else None, end_field)
            return s / n / 60.0 if n else None
        return mean_hours
    return compile_mean_hours


def _sla_breach_share(m, measures):
    w, back = _window(m)

    def sla_breach_share(src, today, attrs, get):
        opened, breached = src.sla(today - back if w else None)
        return breached * 100.0 / opened if opened else None
    return sla_breach_share


def _csat_avg(m, measures):
    w, back = _window(m)

    def csat_avg(src, today, attrs, get):
        b = src.surveys(today - back if w else None)
        return b[0] / b[1] / MILLI if b[1] else None
    return csat_avg


def _nps(m, measures):
    w, back = _window(m)

    def nps(src, today, attrs, get):
        b = src.surveys(today - back if w else None)
        n = b[2] + b[3] + b[4]
        return (b[2] - b[4]) * 100.0 / n if n else None
    return nps


def _attribute(m, measures):
    attribute = m.attribute
    return lambda src, today, attrs, get: numeric(attrs.get(attribute))


def _days_until(m, measures):
    attribute = m.attribute

    def days_until(src, today, attrs, get):  # signed: a renewal date passed gives a negative number
        day = day_of_date(attrs.get(attribute))
        return None if day is None else float(day - today)
    return days_until


def category_key(v: Any) -> str | None:
    """How a categorical value is matched: text (or a whole number) trimmed and case-folded."""
    if isinstance(v, str):
        return v.strip().casefold()
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return None


def _category(m, measures):
    attribute, points = m.attribute, MappingProxyType(dict(m.points or ()))

    def category(src, today, attrs, get):  # a value the map lacks is missing data
        key = category_key(attrs.get(attribute))
        return None if key is None else points.get(key)
    return category


@dataclass(frozen=True, slots=True)
class MeasureType:
    """Everything about one type of measure: the model file's fields (for the loader), how its value
    is computed (``compile(measure, measures) -> fn(source, today, attrs, get)``) and which events can
    change it (``depends(measure, measures, deps_of) -> {(kind, usage event name or "*")}``)."""

    params: tuple[str, ...]  # the fields a measure of this type may give
    required: tuple[str, ...]
    compile: Callable[[Measure, Mapping[str, Measure]], MeasureFn]
    depends: Callable[[Measure, Mapping[str, Measure], Callable[[str], Deps]], Deps]
    composite: bool = False  # computed from other measures (which must be plain)
    comparable: bool = False  # pct_change can compare two periods of it


_W = ("window_days",)
MEASURE_TYPES: Mapping[str, MeasureType] = MappingProxyType({
    "event_count": MeasureType(("events",) + _W, _W, _event_count, _usage_events, comparable=True),
    "distinct_users": MeasureType(_W, _W, _distinct_users, lambda m, ms, d: _ANY_USAGE),
    "value_sum": MeasureType(("events",) + _W, _W, _value_sum, _usage_events, comparable=True),
    "value_avg": MeasureType(("events",) + _W, _W, _value_avg, _usage_events),
    "per_user": MeasureType(("measure", "per", "percent"), ("measure", "per"), _per_user,
                            lambda m, ms, deps_of: deps_of(m.measure) | deps_of(m.per), composite=True),
    "feature_adoption": MeasureType(_W + ("expected_features", "expected_count_attribute"), _W, _feature_adoption,
                                    lambda m, ms, d: _ANY_USAGE),
    "pct_change": MeasureType(("of",), ("of",), _pct_change, lambda m, ms, deps_of: deps_of(m.of), composite=True),
    "days_since": MeasureType(("events", "kinds", "attribute"), (), _days_since, _days_since_deps),
    "days_until": MeasureType(("attribute",), ("attribute",), _days_until, lambda m, ms, d: _NONE),
    "open_tickets": MeasureType((), (), _open_tickets, lambda m, ms, d: _TICKETS),
    "mean_first_response_hours": MeasureType(_W, _W, _mean_hours(T_FIRST), lambda m, ms, d: _TICKETS),
    "mean_resolution_hours": MeasureType(_W, _W, _mean_hours(T_RESOLVED), lambda m, ms, d: _TICKETS),
    "sla_breach_share": MeasureType(_W, _W, _sla_breach_share, lambda m, ms, d: _TICKETS),
    "csat_avg": MeasureType(_W, _W, _csat_avg, lambda m, ms, d: _SURVEYS),
    "nps": MeasureType(_W, _W, _nps, lambda m, ms, d: _SURVEYS),
    "attribute": MeasureType(("attribute",), ("attribute",), _attribute, lambda m, ms, d: _NONE),
    "category": MeasureType(("attribute", "points", "values"), ("attribute", "points"), _category,
                            lambda m, ms, d: _NONE),
})


def compile_measures(model: HealthModel) -> dict[str, MeasureFn]:
    """measure name -> ``fn(source, today, attrs, get)``."""
    return {name: MEASURE_TYPES[m.type].compile(m, model.measures) for name, m in model.measures.items()}


def measure_deps(model: HealthModel, name: str) -> Deps:
    """The (kind, usage event name or "*") pairs whose events can change the measure."""
    m = model.measures[name]
    return MEASURE_TYPES[m.type].depends(m, model.measures, lambda other: measure_deps(model, other))
