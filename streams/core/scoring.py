"""Component scores, the global score, bands and segment choice: one compiled plan per model,
evaluated by generated code (:mod:`streams.core.codegen`) for the stream, the timer, the
rollout, the what-if preview and the batch twin alike. The plain reference formulas the plan
must equal live in the tests (``tests/core/oracles.py``).

Rounding happens once, at the end: component scores to 4 decimals, the global score to 2.
Sums use math.fsum and components are visited in name order, so neither the order of the
components in the model file nor the order of arrival of events can change a result.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from math import fsum
from typing import Any, Callable, Mapping

from schemas.events import Event

from .cache import BoundedCache
from .measures import compile_measures, measure_deps
from .model import NEUTRAL_SCORE, HealthModel, ScoreConfig

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

    @property
    def status(self) -> str:
        """scored (a band); insufficient_data (a score, but its data covers less than the model's min_coverage:
        no band); no_data (nothing to score)."""
        if self.score is None:
            return "no_data"
        return "scored" if self.band is not None else "insufficient_data"

    def to_dict(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "score": self.score, "band": self.band, "status": self.status,
                "segment": self.segment, "coverage": self.coverage,
                "components": {k: c.to_dict() for k, c in self.components.items()},
                "model_version": self.model_version, "model_fingerprint": self.model_fingerprint}


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


MISSING_SCORES = MappingProxyType({"zero": 0.0, "neutral": NEUTRAL_SCORE})  # the others: None (exclude)


def step_points(s) -> Callable[[float], float]:
    """``value -> points`` of a steps scoring (before clamping): the points of the first threshold
    the value reaches, highest first (the loader checks the order), else ``otherwise``."""
    steps, otherwise = s.steps, s.otherwise

    def step(value):
        for lo, points in steps:
            if value >= lo:
                return points
        return otherwise
    return step


class _ConfigPlan:
    """One scoring configuration (a segment or the default) compiled against the model's
    positional component order."""

    __slots__ = ("name", "config", "entries", "norm", "size", "cache_size")

    def __init__(self, config: ScoreConfig, plan: "Plan", cache_size: int = 4096):
        self.name = config.name
        self.config = config
        # (component index, measure name); the generated code scores each (codegen.score)
        self.entries = tuple((plan.index[n], plan.components[plan.index[n]].measure) for n, _, _ in config.entries)
        # presence key -> normalised weights (see normalised); bounded
        self.norm: dict[int, tuple] = {}
        self.size = len(plan.order)
        self.cache_size = cache_size

    def normalised(self, key: int, codes: list[int]) -> tuple:
        """(coverage > 1e-12, rounded coverage, effective weight per component index,
        rounded effective weight per component index) for the presence codes of the entries
        (0 = restricted out, 1 = no value and no score, 2 = no value but a policy score,
        3 = a value), cached by ``key`` (the codes, two bits each)."""
        cfg = self.config
        present = [e for e, code in zip(cfg.entries, codes) if code]
        nominal = _normalise(present, cfg.section_weights)
        coverage = fsum(nominal[name] for (name, _, _), code in zip(cfg.entries, codes) if code == 3)
        actual = _normalise([e for e, code in zip(cfg.entries, codes) if code >= 2], cfg.section_weights)
        size = self.size
        eff = [0.0] * size
        rounded = [0.0] * size
        for (name, _, _), (i, _) in zip(cfg.entries, self.entries):
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
    rows kept in the state's ``pub``); the evaluation is generated straight-line code
    (``run``, see :mod:`streams.core.codegen`) over compiled measures; the
    normalised weights of a configuration are cached per presence pattern.
    """

    def __init__(self, model: HealthModel):
        self.model = model
        self.fingerprint = model.fingerprint
        self.version = model.version
        self.bands = model.bands
        self.order: tuple[str, ...] = tuple(sorted(model.components))
        self.index = {n: i for i, n in enumerate(self.order)}
        self.components = tuple(model.components[n] for n in self.order)
        self.band_limits = tuple(c.bands for c in self.components)
        # the normalised-weight caches share one bound per plan (~4,096 presence patterns in all)
        cache = max(64, _NORM_PATTERNS // (len(model.segments) + 1))
        self.segments = tuple(_ConfigPlan(seg.config, self, cache) for seg in model.segments)
        self.default = _ConfigPlan(model.default, self, cache)
        self.configs = {cfg.name: cfg for cfg in self.segments}
        self.configs[self.default.name] = self.default
        self._dependencies(model)
        self.band_names = {b.name: i for i, b in enumerate(model.bands)}
        self.alerts = model.alerts
        self.history_days = model.state.score_history_days
        # per component threshold rule: the index of its component (None: not a component)
        self.threshold_index = tuple(self.index.get(th.component) for th in model.alerts.component_thresholds)
        from .codegen import generate
        # run(src, today, attrs, has_data, old, recompute, old_segment) -> (segment, score, band,
        # coverage, rows, norm); see codegen
        self.run = generate(self, compile_measures(model))

    def _dependencies(self, model: HealthModel) -> None:
        """Bit masks over the component indexes: which components an event can change."""
        by_name: dict[str, int] = {}
        any_usage = tickets = surveys = 0
        for c in model.components.values():
            bit = 1 << self.index[c.name]
            deps = set(measure_deps(model, c.measure))
            if c.restrict_to is not None:
                for cond in c.restrict_to.conditions:
                    if cond.op == "has":
                        deps |= measure_deps(model, cond.attribute)
            for kind, name in deps:
                if kind == "usage":
                    if name == "*":
                        any_usage |= bit
                    else:
                        by_name[name] = by_name.get(name, 0) | bit
                elif kind == "ticket":
                    tickets |= bit
                elif kind == "survey":
                    surveys |= bit
        self.usage_masks = {k: v | any_usage for k, v in by_name.items()}
        self.any_usage_mask = any_usage
        self.ticket_mask = tickets
        self.survey_mask = surveys
        self.all_mask = (1 << len(self.order)) - 1

    def dependent_mask(self, event: Event) -> int:
        """The components whose value an event can change, as a bit mask over the component
        indexes (account events: all of them)."""
        kind = event.kind
        if kind == "usage":
            return self.usage_masks.get(event.name, self.any_usage_mask)
        if kind == "ticket":
            return self.ticket_mask
        if kind == "survey":
            return self.survey_mask
        return self.all_mask

    def evaluate(self, account_id: str, source, today: int, has_data: bool) -> AccountScore:
        """A full evaluation of one account from a source of aggregates (see measures)."""
        return self.account_score(account_id, *self.run(source, today, source.attributes(), has_data, None, 0, None))

    def norm_of(self, segment: str, rows: list) -> tuple | None:
        """The normalised weights of ``[value, score]`` rows evaluated under ``segment``."""
        cfg = self.configs.get(segment)
        if cfg is None:
            return None
        codes = []
        key = 0
        for i, _ in cfg.entries:
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


_PLANS = BoundedCache(64)  # model fingerprint -> Plan: every model checked or received adds one


def plan_of(model: HealthModel) -> Plan:
    """The compiled plan of a model (cached per fingerprint)."""
    plan = _PLANS.get(model.fingerprint)
    return plan if plan is not None else _PLANS.put(model.fingerprint, Plan(model))
