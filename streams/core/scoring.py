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

from .filters import compile_filter, matches
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
    plan = plan_of(model)
    old = None
    mask = 0
    if cached is not None:
        index = plan.index
        rows: list = [0] * len(plan.order)
        for name, (value, score) in cached.items():
            i = index.get(name)
            if i is not None:
                rows[i] = (value, score)
        if recompute is None:
            mask = 0
        else:
            for name in recompute:
                i = index.get(name)
                if i is not None:
                    mask |= 1 << i
        old = rows
    seg, total, band, coverage, rows, norm = plan.score(mv, has_data, old, mask, False)
    return plan.account_score(account_id, seg, total, band, coverage, rows, norm)


# ------------------------------------------------------------- compiled plans
# ComponentScores are built by filling their slots directly: the same objects as
# ComponentScore(...), at half the cost of the frozen dataclass's __init__ (which goes
# through object.__setattr__ per field), and a score has a dozen of them.
_new = object.__new__
_set_value = ComponentScore.value.__set__
_set_score = ComponentScore.score.__set__
_set_band = ComponentScore.band.__set__
_set_weight = ComponentScore.weight.__set__
_set_contribution = ComponentScore.contribution.__set__


def compile_scoring(c: Component):
    """``value -> score``: exactly :func:`component_score` for this component."""
    s = c.scoring
    missing = None if c.missing not in ("zero", "neutral") else (0.0 if c.missing == "zero" else NEUTRAL_SCORE)
    if s.type == "linear":
        worst, span = s.worst, s.best - s.worst

        def score(value):
            if value is None:
                return missing
            x = (value - worst) / span * 100.0
            return round(0.0 if x <= 0.0 else 100.0 if x >= 100.0 else x, 4)
    elif s.type == "steps":
        steps, otherwise = s.steps, s.otherwise

        def score(value):
            if value is None:
                return missing
            x = otherwise
            for lo, points in steps:
                if value >= lo:
                    x = points
                    break
            return round(0.0 if x <= 0.0 else 100.0 if x >= 100.0 else x, 4)
    else:  # max
        top = s.max

        def score(value):
            if value is None:
                return missing
            x = value / top * 100.0
            return round(0.0 if x <= 0.0 else 100.0 if x >= 100.0 else x, 4)
    return score


class _ConfigPlan:
    """One scoring configuration (a segment or the default) compiled against the model's
    positional component order."""

    __slots__ = ("name", "config", "entries", "norm", "size", "cache_size")

    def __init__(self, config: ScoreConfig, plan: "Plan", cache_size: int = 4096):
        self.name = config.name
        self.config = config
        # (component index, measure name, value -> score, restriction predicate or None)
        self.entries = tuple((plan.index[n], plan.components[plan.index[n]].measure,
                              plan.scorers[plan.index[n]], plan.restrictions[plan.index[n]])
                             for n, _, _ in config.entries)
        # presence key -> normalised weights (see Plan.score); bounded
        self.norm: dict[int, tuple] = {}
        self.size = len(plan.order)
        self.cache_size = cache_size

    def normalised(self, key: int, codes: list[int]) -> tuple:
        """(coverage > 1e-12, rounded coverage, effective weight per component index,
        rounded effective weight per component index) for the presence codes of the entries
        (0 = restricted out, 1 = no value and no score, 2 = no value but a policy score,
        3 = a value). Computed with the reference formulas, then cached by ``key``."""
        cfg = self.config
        present = [e for e, code in zip(cfg.entries, codes) if code]
        nominal = _normalise(present, cfg.section_weights)
        coverage = fsum(nominal[name] for (name, _, _), code in zip(cfg.entries, codes) if code == 3)
        actual = _normalise([e for e, code in zip(cfg.entries, codes) if code >= 2], cfg.section_weights)
        size = self.size
        eff = [0.0] * size
        rounded = [0.0] * size
        for (name, _, _), (i, _, _, _) in zip(cfg.entries, self.entries):
            e = actual.get(name, 0.0)
            eff[i] = e
            rounded[i] = round(e, 6)
        out = (coverage > 1e-12, round(coverage, 4), tuple(eff), tuple(rounded))
        if len(self.norm) >= self.cache_size:
            self.norm.clear()
        self.norm[key] = out
        return out


_NORM_PATTERNS = 4096


class Plan:
    """A health model compiled for fast evaluation (built once per model fingerprint).

    Components are identified by their index in name order (the positional order of the
    rows kept in the state's ``pub``); measures, scorings and filters are closures; the
    normalised weights of a configuration are cached per presence pattern. Results are
    those of the reference formulas (``_normalise``, ``component_score``, ``matches``,
    ``measures.compute``), bit for bit.
    """

    def __init__(self, model: HealthModel):
        self.model = model
        self.fingerprint = model.fingerprint
        self.version = model.version
        self.bands = model.bands
        self.order: tuple[str, ...] = tuple(sorted(model.components))
        self.index = {n: i for i, n in enumerate(self.order)}
        self.components = tuple(model.components[n] for n in self.order)
        self.scorers = tuple(compile_scoring(c) for c in self.components)
        self.restrictions = tuple(compile_filter(c.restrict_to) for c in self.components)
        self.band_limits = tuple(c.bands for c in self.components)
        # the normalised-weight caches share one bound per plan (~4,096 presence patterns in all)
        cache = max(64, _NORM_PATTERNS // (len(model.segments) + 1))
        self.segments = tuple((compile_filter(seg.filter), _ConfigPlan(seg.config, self, cache))
                              for seg in model.segments)
        self.default = _ConfigPlan(model.default, self, cache)
        self.configs = {cfg.name: cfg for _, cfg in self.segments}
        self.configs[self.default.name] = self.default
        by_name, any_usage, tickets, surveys, everything = _index(model)
        idx = self.index
        mask = lambda names: sum(1 << idx[n] for n in names)  # noqa: E731
        self.usage_masks = {k: mask(v) for k, v in by_name.items()}
        self.any_usage_mask = mask(any_usage)
        self.ticket_mask = mask(tickets)
        self.survey_mask = mask(surveys)
        self.all_mask = mask(everything)
        self.band_names = {b.name: i for i, b in enumerate(model.bands)}
        self.alerts = model.alerts
        self.history_days = model.state.score_history_days
        # per component threshold rule: the index of its component (None: not a component)
        self.threshold_index = tuple(idx.get(th.component) for th in model.alerts.component_thresholds)
        from .codegen import generate
        from .measures import compiled_measures
        # run(src, today, attrs, has_data, old, recompute, old_segment): Plan.score as
        # straight-line code (the engine's path)
        self.run = generate(self, compiled_measures(model))

    def dependent_mask(self, event: Event) -> int:
        """:func:`dependent_components` as a bit mask over the component indexes."""
        kind = event.kind
        if kind == "usage":
            return self.usage_masks.get(event.name, self.any_usage_mask)
        if kind == "ticket":
            return self.ticket_mask
        if kind == "survey":
            return self.survey_mask
        return self.all_mask

    def choose(self, mv: MeasureValues) -> _ConfigPlan:
        attrs, get = mv.attrs, mv.get
        for flt, cfg in self.segments:
            if flt(attrs, get):
                return cfg
        return self.default

    def score(self, mv: MeasureValues, has_data: bool, old: list | None = None, recompute: int = 0,
              old_segment: str | bool | None = False):
        """Evaluate: (segment, score, band, coverage, rows, norm) where rows are the positional
        ``[value, score]`` lists kept in ``pub`` (0 for a component not in the score) and
        norm the configuration's normalised weights for the rows' presence pattern (see
        _ConfigPlan.normalised; with them a row gives its ComponentScore).

        ``old``: the previous rows (or ``(value, score)`` pairs); a component outside the
        ``recompute`` bit mask reuses its previous value and score. With ``old_segment``
        given (a string: the engine's incremental mode), the previous rows are used only if
        the segment is the same (else everything is recomputed), and the restriction of a
        component outside ``recompute`` is not re-evaluated (its inputs did not change: a
        component absent before stays absent).
        """
        cfg = self.choose(mv)
        incremental = old_segment is not False
        if incremental and cfg.name != old_segment:
            old = None
        if old is None:
            incremental = False
        attrs, get = mv.attrs, mv.get
        items = []
        codes = []
        key = 0
        for i, measure, scorer, restrict in cfg.entries:
            prev = old[i] if old is not None else 0
            if incremental and not (recompute >> i) & 1:
                if not prev:  # restricted out before, so still
                    codes.append(0)
                    key <<= 2
                    continue
                value, score = prev[0], prev[1]
                row = prev if len(prev) == 2 else None
            else:
                row = None
                if restrict is not None and not restrict(attrs, get):
                    codes.append(0)
                    key <<= 2
                    continue
                if prev and not (recompute >> i) & 1:
                    value, score = prev[0], prev[1]
                else:
                    value = get(measure)
                    score = scorer(value)
            code = 3 if value is not None else 2 if score is not None else 1
            codes.append(code)
            key = (key << 2) | code
            items.append((i, value, score, row))
        norm = cfg.norm.get(key)
        if norm is None:
            norm = cfg.normalised(key, codes)
        positive, coverage, eff, _ = norm
        rows: list = [0] * len(self.order)
        parts = []
        for i, value, score, row in items:
            parts.append(eff[i] * score if score is not None else 0.0)
            rows[i] = row if row is not None else [None if value is None else round(value, 4), score]
        total = None
        if has_data and positive:
            total = round(fsum(parts), 2)
            total = min(max(total, 0.0), 100.0)
        return cfg.name, total, band_of(self.bands, total), coverage, rows, norm

    def norm_of(self, segment: str, rows: list) -> tuple | None:
        """The normalised weights of ``[value, score]`` rows evaluated under ``segment``."""
        cfg = self.configs.get(segment)
        if cfg is None:
            return None
        codes = []
        key = 0
        for i, _, _, _ in cfg.entries:
            row = rows[i]
            code = 0 if not row else 3 if row[0] is not None else 2 if row[1] is not None else 1
            codes.append(code)
            key = (key << 2) | code
        norm = cfg.norm.get(key)
        return norm if norm is not None else cfg.normalised(key, codes)

    def components_of(self, rows: list, segment: str | None = None, norm: tuple | None = None
                      ) -> dict[str, ComponentScore]:
        """The ComponentScores of positional pub rows: ``[value, score]`` (weight and
        contribution from the normalised weights ``norm`` of the rows' pattern under
        ``segment``, as the evaluation computed them) or, as stored before, ``[value, score,
        weight, contribution]``."""
        out = {}
        new, cls = _new, ComponentScore
        set_value, set_score, set_band, set_weight, set_contribution = (
            _set_value, _set_score, _set_band, _set_weight, _set_contribution)
        eff = rounded = None
        for i, (name, row, lim) in enumerate(zip(self.order, rows, self.band_limits)):
            if row:
                if len(row) == 2:
                    if eff is None:
                        if norm is None:
                            norm = self.norm_of(segment, rows)
                        eff, rounded = norm[2], norm[3]
                    value, score = row
                    weight = rounded[i]
                    contrib = round(eff[i] * score if score is not None else 0.0, 4)
                else:
                    value, score, weight, contrib = row
                c = new(cls)
                set_value(c, value)
                set_score(c, score)
                if lim is None or score is None:
                    set_band(c, None)
                else:
                    set_band(c, "good" if score >= lim[1] else "average" if score >= lim[0] else "bad")
                set_weight(c, weight)
                set_contribution(c, contrib)
                out[name] = c
        return out

    def account_score(self, account_id: str, segment: str, total, band, coverage, rows,
                      norm: tuple | None = None) -> AccountScore:
        return AccountScore(account_id, total, band, segment, coverage, self.components_of(rows, segment, norm),
                            self.version, self.fingerprint)


_PLANS: dict[str, Plan] = {}


def plan_of(model: HealthModel) -> Plan:
    """The compiled plan of a model (cached per fingerprint)."""
    plan = _PLANS.get(model.fingerprint)
    if plan is None:
        plan = Plan(model)
        if len(_PLANS) > 64:
            _PLANS.clear()
        _PLANS[model.fingerprint] = plan
    return plan


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
        if len(_DEP_INDEX) > 64:  # bounded like the plans: every model checked or received adds one
            _DEP_INDEX.clear()
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
