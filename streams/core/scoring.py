"""Component scores, the global score, bands and segment choice: shared by the incremental
engine and the batch twin.

Rounding happens once, at the end: component scores to 4 decimals, the global score to 2.
Sums use math.fsum and components are visited in name order, so neither the order of the
components in the model file nor the order of arrival of events can change a result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import fsum
from typing import Any, Iterable, Mapping

from schemas.events import Event

from .filters import matches
from .measures import MeasureValues
from .model import NEUTRAL_SCORE, Component, HealthModel, ScoreConfig, Scoring, band_of

COMPONENT_BANDS = ("bad", "average", "good")


@dataclass(frozen=True, slots=True)
class ComponentScore:
    value: float | None  # the measure value (None = missing)
    score: float | None  # 0..100 (the missing-data policy's score when the value is missing)
    band: str | None  # bad / average / good when the component defines bands
    weight: float  # effective normalised weight in this account's global score (0 = no effect)
    contribution: float  # weight * score: the points it adds to the global score

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "score": self.score, "band": self.band, "weight": self.weight,
                "contribution": self.contribution}


@dataclass(frozen=True, slots=True)
class AccountScore:
    account_id: str
    score: float | None  # None = no data to score the account
    band: str | None
    segment: str
    coverage: float  # share (0..1) of the configured weight whose components had data
    components: dict[str, ComponentScore]
    model_version: str
    model_fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "score": self.score, "band": self.band,
                "segment": self.segment, "coverage": self.coverage,
                "components": {k: c.to_dict() for k, c in self.components.items()},
                "model_version": self.model_version, "model_fingerprint": self.model_fingerprint}

    def same_result(self, other: "AccountScore | None") -> bool:
        """Equal score, band, segment, coverage and components (model identity aside)."""
        return (other is not None and self.score == other.score and self.band == other.band
                and self.segment == other.segment and self.coverage == other.coverage
                and self.components == other.components)


# ------------------------------------------------------------------ components
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


# -------------------------------------------------------------------- segments
def choose_config(model: HealthModel, mv: MeasureValues) -> ScoreConfig:
    """The highest-priority segment whose filter matches, else the default configuration."""
    for seg in model.segments:
        if matches(seg.filter, mv.attrs, mv.get):
            return seg.config
    return model.default


def _normalise(items: list[tuple[str, float, str | None]], section_weights: Mapping[str, float]) -> dict[str, float]:
    """Effective weights summing to 1 (or all 0). With sections: section weights are
    normalised over the sections that have weighted components, and the components of a
    section share its weight in proportion to their own weights."""
    if not section_weights:
        total = fsum(w for _, w, _ in items)
        return {n: (w / total if total > 0 else 0.0) for n, w, _ in items}
    per_section: dict[str | None, list[float]] = {}
    for _, w, sec in items:
        per_section.setdefault(sec, []).append(w)
    sums = {sec: fsum(ws) for sec, ws in per_section.items()}
    active = {sec: section_weights.get(sec, 0.0) for sec, s in sums.items() if s > 0}
    total = fsum(sorted(active.values()))
    out = {}
    for n, w, sec in items:
        sw = active.get(sec, 0.0)
        out[n] = (sw / total) * (w / sums[sec]) if total > 0 and sw > 0 else 0.0
    return out


def evaluate(model: HealthModel, account_id: str, mv: MeasureValues, has_data: bool,
             cached: Mapping[str, tuple[float | None, float | None]] | None = None,
             recompute: Iterable[str] | None = None) -> AccountScore:
    """Score one account. With ``cached`` (component -> (value, score)), components outside
    ``recompute`` reuse their cached value and score instead of recomputing the measure."""
    config = choose_config(model, mv)
    comps = model.components
    recompute = set(recompute) if recompute is not None else None
    rows: list[tuple[str, float, str | None, Component, float | None, float | None]] = []
    for name, w, sec in config.entries:
        c = comps[name]
        if c.restrict_to is not None and not matches(c.restrict_to, mv.attrs, mv.get):
            continue
        if cached is not None and name in cached and (recompute is None or name not in recompute):
            value, score = cached[name]
        else:
            value = mv.get(c.measure)
            score = component_score(c, value)
        rows.append((name, w, sec, c, value, score))
    nominal = _normalise([(n, w, s) for n, w, s, _, _, _ in rows], config.section_weights)
    coverage = fsum(nominal[n] for n, _, _, _, v, _ in rows if v is not None)
    actual = _normalise([(n, w, s) for n, w, s, _, _, sc in rows if sc is not None], config.section_weights)
    components = {}
    parts = []
    for n, _, _, c, value, score in rows:
        eff = actual.get(n, 0.0)
        contrib = eff * score if score is not None else 0.0
        parts.append(contrib)
        components[n] = ComponentScore(
            value=None if value is None else round(value, 4), score=score, band=component_band(c, score),
            weight=round(eff, 6), contribution=round(contrib, 4))
    total = None
    if has_data and coverage > 1e-12:
        total = round(fsum(parts), 2)
        total = min(max(total, 0.0), 100.0)
    return AccountScore(account_id=account_id, score=total, band=band_of(model.bands, total),
                        segment=config.name, coverage=round(coverage, 4), components=components,
                        model_version=model.version, model_fingerprint=model.fingerprint)


# --------------------------------------------------------- incremental rescoring
_DEP_INDEX: dict[str, tuple[dict[str, frozenset], frozenset, frozenset, frozenset, frozenset]] = {}


def _measure_deps(model: HealthModel, name: str) -> set[tuple[str, str]]:
    m = model.measures[name]
    t = m.type
    if t in ("event_count", "value_sum", "value_avg"):
        return {("usage", e) for e in m.events} if m.events else {("usage", "*")}
    if t == "distinct_users":
        return {("usage", "*")}
    if t == "feature_adoption":
        return {("usage", "*")}
    if t == "per_user":
        return _measure_deps(model, m.measure) | _measure_deps(model, m.per)
    if t == "pct_change":
        return _measure_deps(model, m.of)
    if t == "days_since":
        if m.kinds is not None:
            return {("usage", "*") if k == "usage" else (k, "*") for k in m.kinds}
        return {("usage", e) for e in m.events} if m.events else {("usage", "*")}
    if t in ("open_tickets", "mean_first_response_hours", "mean_resolution_hours", "sla_breach_share"):
        return {("ticket", "*")}
    if t in ("csat_avg", "nps"):
        return {("survey", "*")}
    return set()  # attribute: account events trigger a full recompute anyway


def _index(model: HealthModel):
    idx = _DEP_INDEX.get(model.fingerprint)
    if idx is None:
        by_name: dict[str, set] = {}
        any_usage, tickets, surveys = set(), set(), set()
        for c in model.components.values():
            deps = set(_measure_deps(model, c.measure))
            if c.restrict_to is not None:
                for cond in c.restrict_to.conditions:
                    if cond.op == "has":
                        deps |= _measure_deps(model, cond.attribute)
            for kind, name in deps:
                if kind == "usage":
                    (any_usage.add(c.name) if name == "*" else by_name.setdefault(name, set()).add(c.name))
                elif kind == "ticket":
                    tickets.add(c.name)
                elif kind == "survey":
                    surveys.add(c.name)
        idx = ({k: frozenset(v | any_usage) for k, v in by_name.items()}, frozenset(any_usage),
               frozenset(tickets), frozenset(surveys), frozenset(model.components))
        _DEP_INDEX[model.fingerprint] = idx
    return idx


def dependent_components(model: HealthModel, event: Event) -> frozenset[str]:
    """The components whose value an event can change (account events: all of them)."""
    by_name, any_usage, tickets, surveys, everything = _index(model)
    kind = event.kind
    if kind == "usage":
        return by_name.get(event.name, any_usage)
    if kind == "ticket":
        return tickets
    if kind == "survey":
        return surveys
    return everything
