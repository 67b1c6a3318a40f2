"""The health model: measures, components, sections, bands, segments and alert rules.

Frozen dataclasses built by :mod:`streams.core.model_loader` from the YAML file; see
``docs/health-model.md`` for the reference of every key.
"""
from __future__ import annotations

from types import MappingProxyType

from dataclasses import dataclass, field
from typing import Any

IMPACTS = MappingProxyType({"none": 0.0, "low": 1.0, "medium": 2.0, "high": 3.0})
MISSING_POLICIES = ("exclude", "zero", "neutral")
NEUTRAL_SCORE = 50.0

INTERACTION_KINDS = ("usage", "ticket", "survey")


LATE_KINDS = ("usage", "ticket", "survey", "account")  # the event kinds, in the order of StateConfig.lateness
# usage is streamed by the product (a day covers retries and the merge of the topics); tickets, surveys and
# account attributes come by daily or weekly syncs of PSA, survey and CRM tools, days after the fact
DEFAULT_LATENESS = (86400, 7 * 86400, 7 * 86400, 7 * 86400)


@dataclass(frozen=True, slots=True)
class StateConfig:
    retention_days: int = 60
    lateness: tuple[int, ...] = DEFAULT_LATENESS  # allowed lateness in seconds per kind (LATE_KINDS order)
    max_future_skew_seconds: int = 300
    score_history_days: int = 30
    lateness_of: Any = field(default=None, init=False, compare=False, hash=False, repr=False)  # kind -> seconds

    def __post_init__(self) -> None:
        object.__setattr__(self, "lateness_of", MappingProxyType(dict(zip(LATE_KINDS, self.lateness))))

    @property
    def allowed_lateness_seconds(self) -> int:
        """The shortest allowed lateness of any kind: events displaced by less count whatever their kind."""
        return min(self.lateness)


@dataclass(frozen=True, slots=True)
class Measure:
    name: str
    type: str
    window_days: int | None = None
    events: tuple[str, ...] | None = None  # usage event names; None = every usage event
    kinds: tuple[str, ...] | None = None  # days_since over event kinds
    measure: str | None = None  # per_user numerator
    per: str | None = None  # per_user denominator (a measure)
    percent: bool = False  # per_user: x100
    of: str | None = None  # pct_change base measure
    expected_features: tuple[str, ...] | None = None
    expected_count_attribute: str | None = None
    attribute: str | None = None
    points: tuple[tuple[str, float], ...] | None = None  # category: value (case-folded) -> points
    values: tuple[str, ...] | None = None  # category: the values the attribute may take (each needs points)


@dataclass(frozen=True, slots=True)
class Condition:
    """One test of an account filter: ``attribute`` ``op`` ``arg``.

    ops: eq, ne, in, not_in, gt, gte, lt, lte, exists (arg bool), has (attribute holds a
    measure name: true when that measure has a value).
    """
    attribute: str
    op: str
    arg: Any


@dataclass(frozen=True, slots=True)
class AccountFilter:
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True, slots=True)
class Scoring:
    type: str  # linear | steps | max
    worst: float | None = None
    best: float | None = None
    steps: tuple[tuple[float, float], ...] = ()  # (min, points), strictly descending min
    otherwise: float = 0.0  # steps: points below the last threshold
    max: float | None = None


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    measure: str
    scoring: Scoring
    weight: float = 1.0
    missing: str = "exclude"
    bands: tuple[float, float] | None = None  # (average, good) minimums on the component score
    restrict_to: AccountFilter | None = None
    section: str | None = None


@dataclass(frozen=True, slots=True)
class Band:
    name: str
    colour: str
    min: float


@dataclass(frozen=True, slots=True)
class ScoreConfig:
    """What a segment (or the default) scores: components with weights, and section weights.

    ``entries`` are (component name, weight, section) sorted by name, so that the
    order of components in the file never changes a result.
    """
    name: str
    entries: tuple[tuple[str, float, str | None], ...]
    section_weights: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    priority: float
    filter: AccountFilter
    config: ScoreConfig


@dataclass(frozen=True, slots=True)
class BandChangeRule:
    margin_points: float = 3.0
    cooldown_seconds: float = 86400.0


@dataclass(frozen=True, slots=True)
class TrendRule:
    days: int = 14
    drop_points: float | None = 15.0
    drop_percent: float | None = 20.0


@dataclass(frozen=True, slots=True)
class ComponentThreshold:
    component: str
    below: float


@dataclass(frozen=True, slots=True)
class ScoreThreshold:
    """The global score went below ``below``; re-armed once it is back at ``below + margin_points``."""
    below: float
    margin_points: float = 3.0


@dataclass(frozen=True, slots=True)
class FallRule:
    """The score is ``points`` below its highest daily score of the last ``days`` days."""
    points: float
    days: int


@dataclass(frozen=True, slots=True)
class AlertRules:
    band_change: BandChangeRule | None = BandChangeRule()
    trend: TrendRule | None = None
    component_thresholds: tuple[ComponentThreshold, ...] = ()
    cooldown_seconds: float = 86400.0  # trend, component, score threshold and fall alerts
    score_threshold: ScoreThreshold | None = None
    fall: FallRule | None = None
    # an evaluation whose newest event is older than this behind the processing clock (a replay, a
    # backfill) tracks bands but publishes no alert
    history_horizon_seconds: float = 86400.0


DEFAULT_BANDS = (
    Band("Healthy", "green", 70.0),
    Band("At Risk", "orange", 40.0),
    Band("Needs Attention", "red", 0.0),
)


@dataclass(frozen=True, slots=True)
class HealthModel:
    version: str
    name: str
    state: StateConfig
    measures: dict[str, Measure]
    components: dict[str, Component]
    sections: dict[str, float]
    bands: tuple[Band, ...]  # sorted by min, descending
    default: ScoreConfig
    segments: tuple[Segment, ...]  # sorted by priority, descending
    alerts: AlertRules
    fingerprint: str  # sha256 of the canonical model document (first 16 hex digits)
    source: str = "<string>"
    # an account whose data covers less of the configured weight gets no band (status insufficient_data)
    min_coverage: float = 0.0

    def band_of(self, score: float | None) -> str | None:
        return band_of(self.bands, score)


def band_of(bands: tuple[Band, ...], score: float | None) -> str | None:
    """The band whose minimum the score reaches; a score equal to a minimum is in that band."""
    if score is None:
        return None
    for band in bands:
        if score >= band.min:
            return band.name
    return bands[-1].name
