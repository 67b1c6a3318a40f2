"""Shared builders for the core tests, and test views over the production path: the decoded alert state
(`AlertState`, `evaluate_alerts` over the core's one `transition`) and the components an event can change
(`dependent_components`, from the plan's bit mask)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterable

import orjson
import yaml

from schemas.events import AccountEvent, SurveyEvent, TicketEvent, UsageEvent
from streams.core import DEFAULT_MODEL_PATH, AccountState, apply_events, current_score, parse_model, score_all
from streams.core.alerts import Alert, alerts_of, band_snapshot, transition
from streams.core.days import DAY, day_of
from streams.core.model import AlertRules, Band, HealthModel
from streams.core.scoring import AccountScore, plan_of

DEFAULT_YAML = DEFAULT_MODEL_PATH
T0 = 20000 * DAY  # midnight UTC, day 20000
_n = [0]


def eid() -> str:
    _n[0] += 1
    return f"e{_n[0]}"


def usage(acc, ts, name="login", user="u1", feature=None, value=None, id=None):
    return UsageEvent(id or eid(), acc, ts, name, user, feature, value)


def ticket(acc, ts, tid, action, breached=None, id=None):
    return TicketEvent(id or eid(), acc, ts, tid, action, None, breached)


def survey(acc, ts, kind, score, scale=None, id=None):
    return SurveyEvent(id or eid(), acc, ts, kind, score, scale)


def attrs(acc, ts, id=None, **a):
    return AccountEvent(id or eid(), acc, ts, a)


def default_dict() -> dict:
    return yaml.safe_load(DEFAULT_YAML.read_text())


def attr_model(components: dict, **extra) -> "HealthModel":
    """A model whose measures are account attributes named after the components."""
    measures = {}
    comps = {}
    for name, spec in components.items():
        spec = dict(spec)
        measures[name] = {"type": "attribute", "attribute": spec.pop("attribute", name)}
        spec.setdefault("scoring", {"type": "max", "max": 100})
        comps[name] = {"measure": name, **spec}
    doc = {"version": "test", "measures": measures, "components": comps, **extra}
    return parse_model(doc, source="test.yaml")


def roundtrip(state: AccountState) -> AccountState:
    return AccountState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))


def stream_score(model, events, now, acc="a1"):
    up = apply_events(None, acc, sorted(events, key=lambda e: e.occurred_at), model, now)
    return current_score(up.state, acc, model, now)


def both(model, events, now, acc="a1"):
    """Stream and batch scores of one account; asserts they agree."""
    s = stream_score(model, events, now, acc)
    b = score_all(events, model, now).get(acc)
    if b is not None:
        assert s == b
    return s


def with_changes(doc: dict, **changes) -> dict:
    d = copy.deepcopy(doc)
    d.update(changes)
    return d


# ------------------------------------------------------------- views over the production path
@dataclass(slots=True)
class AlertState:
    band: str | None = None  # the band last alerted (or first seen)
    last: dict[str, int] = field(default_factory=dict)  # dg / rc / tr / c:<component> -> time emitted
    trend_armed: bool = True
    below: list[str] = field(default_factory=list)  # components currently below their threshold
    seq: int = 0  # alerts emitted so far (part of the deterministic id)
    history: dict[str, float] = field(default_factory=dict)  # day -> score of the day's last evaluation
    score_below: bool = False  # the global score is below the score threshold (disarmed)
    fallen: bool = False  # the fall rule is disarmed
    snapshot: list | None = None  # [score, day, model fingerprint, contributions x100] when the band was alerted
    held_back: int = 0  # not stored: the alerts the last (historic) evaluation held back

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.band is not None:
            d["b"] = self.band
        if self.snapshot:
            d["bs"] = self.snapshot
        if self.last:
            d["t"] = self.last
        if not self.trend_armed:
            d["x"] = 1
        if self.score_below:
            d["sl"] = 1
        if self.fallen:
            d["fx"] = 1
        if self.below:
            d["lo"] = self.below
        if self.seq:
            d["n"] = self.seq
        if self.history:  # dense: [first day, score or null per day]
            days = [int(k) for k in self.history]
            first = min(days)
            row: list = [None] * (max(days) - first + 1)
            for k, v in self.history.items():
                row[int(k) - first] = v
            d["h"] = [first] + row
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "AlertState":
        d = d or {}
        return cls(band=d.get("b"), last=dict(d.get("t", {})), trend_armed=not d.get("x"),
                   below=list(d.get("lo", [])), seq=d.get("n", 0), history=_history(d.get("h")),
                   snapshot=d.get("bs"), score_below=bool(d.get("sl")), fallen=bool(d.get("fx")))


def _history(h: list | None) -> dict[str, float]:
    if not h:
        return {}
    first = h[0]
    return {str(first + i): v for i, v in enumerate(h[1:]) if v is not None}




def evaluate_alerts(state: AlertState, old: AccountScore | None, new: AccountScore, now: float,
                    rules: AlertRules, bands: tuple[Band, ...], *, event_ids: Iterable[str] = (),
                    time: float | None = None, history_days: int = 30, historic: bool = False,
                    components: tuple[str, ...] | None = None) -> tuple[AlertState, list[Alert]]:
    """:func:`transition` on a decoded :class:`AlertState` and whole scores: (alert state, previous
    score, new score) -> (new alert state, alerts). The caller's state is not mutated. `components`: the
    model's component names (default: the new score's, sorted; give them when the set changes)."""
    names = tuple(sorted(new.components)) if components is None else components
    if new.score is None or new.band is None:  # as the engine: no band, no alert transition
        return AlertState.from_dict(state.to_dict()), []
    comps = new.components
    scores = [comps[th.component].score if th.component in comps else None for th in rules.component_thresholds]
    stored, raised, held = transition(state.to_dict(), new.score, old.score if old is not None else None, scores,
                                      now, rules, bands, history_days, historic=historic,
                                      snapshot=lambda: band_snapshot(new, day_of(now), names))
    after = AlertState.from_dict(stored)
    after.held_back = held
    return after, alerts_of(raised, old, new, now, event_ids=event_ids, time=time, components=names)


def dependent_components(model: HealthModel, event) -> frozenset[str]:
    """The components whose value an event can change (account events: all of them)."""
    plan = plan_of(model)
    mask = plan.dependent_mask(event)
    return frozenset(n for i, n in enumerate(plan.order) if mask >> i & 1)
