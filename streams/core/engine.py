"""The incremental entry points called by the stream processor (one call per account per
batch of events, or per timer tick / model rollout).

The state passed in is updated in place and returned in the :class:`AccountUpdate` (the
caller stores ``update.state`` back in its table); nothing here reads a clock or touches
a broker.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import orjson

from schemas.events import Event

from .alerts import Alert, AlertState, evaluate_alerts
from .days import day_of
from .measures import MeasureValues
from .model import HealthModel
from .scoring import AccountScore, ComponentScore, component_band, dependent_components, evaluate
from .state import APPLIED, DUPLICATE, OUTCOMES, AccountState


@dataclass(frozen=True, slots=True)
class AccountUpdate:
    account_id: str
    state: AccountState
    outcomes: dict[str, int]  # applied / duplicate / late / expired / future -> count
    rejected: tuple[tuple[Event, str], ...] = ()  # (event, 'late' | 'expired' | 'future')
    score: AccountScore | None = None  # the new score when it changed (publish it), else None
    alerts: tuple[Alert, ...] = ()
    evaluated: bool = False  # the account was (re)scored
    state_changed: bool = False  # the state must be written back
    event_outcomes: tuple[str, ...] = ()  # the outcome of each event, in the order given
    applied_ids: tuple[str, ...] = ()  # ids of the events applied
    latest_event_time: float | None = None  # occurred_at of the newest event applied


def apply_events(state: AccountState | None, account_id: str, events: Sequence[Event],
                 model: HealthModel, now: float) -> AccountUpdate:
    """Fold a batch of one account's events into its state and rescore what they affect."""
    cfg = model.state
    st = state if state is not None else AccountState.new(now, cfg)
    today = day_of(now)
    moved = st.advance(today, cfg)
    outcomes = dict.fromkeys(OUTCOMES, 0)
    rejected = []
    applied_ids = []
    affected: set[str] = set()
    full = False
    latest = None
    per_event = []
    for ev in events:
        r = st.apply(ev, now, cfg)
        outcomes[r] += 1
        per_event.append(r)
        if r == APPLIED:
            applied_ids.append(ev.event_id)
            if ev.kind == "account":
                full = True
            else:
                affected |= dependent_components(model, ev)
            if latest is None or ev.occurred_at > latest:
                latest = ev.occurred_at
        elif r != DUPLICATE:
            rejected.append((ev, r))
    if not applied_ids and not needs_reevaluation(st, model, now):
        return AccountUpdate(account_id, st, outcomes, tuple(rejected), state_changed=moved or state is None,
                             event_outcomes=tuple(per_event))
    st.prune_fingerprints(cfg)
    update = _rescore(st, account_id, model, now, today, outcomes, tuple(rejected), full, affected,
                      applied_ids, latest)
    return replace(update, event_outcomes=tuple(per_event), applied_ids=tuple(applied_ids),
                   latest_event_time=latest)


def reevaluate(state: AccountState, account_id: str, model: HealthModel, now: float) -> AccountUpdate:
    """Full recompute (timer: windows slid; model rollout). Publishes only a changed score."""
    cfg = model.state
    today = day_of(now)
    state.advance(today, cfg)
    state.prune_fingerprints(cfg)
    return _rescore(state, account_id, model, now, today, dict.fromkeys(OUTCOMES, 0), (), True, set(), [], None)


def needs_reevaluation(state: AccountState | None, model: HealthModel, now: float) -> bool:
    """Cheap check for the timer: the day changed (windows slid) or the model changed since
    the last evaluation, or the account was never scored."""
    if state is None:
        return False
    pub = state.pub
    if pub is None:
        return state.has_data(0)
    return pub.get("d") != day_of(now) or pub.get("m") != model.fingerprint


def current_score(state: AccountState, account_id: str, model: HealthModel, now: float) -> AccountScore:
    """A full evaluation at ``now`` without touching the given state (read-only helper)."""
    st = AccountState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    st.advance(day_of(now), model.state)
    return evaluate(model, account_id, MeasureValues(model, st, day_of(now)), st.has_data(0))


_ORDER: dict[str, tuple[str, ...]] = {}


def _order(model: HealthModel) -> tuple[str, ...]:
    """Component names in the order of the positional list kept in ``pub``."""
    names = _ORDER.get(model.fingerprint)
    if names is None:
        names = _ORDER[model.fingerprint] = tuple(sorted(model.components))
    return names


def last_score(state: AccountState | None, account_id: str, model: HealthModel) -> AccountScore | None:
    """The last evaluated score kept in the state (for explanations and read models). Its
    components are known only under the model that produced it (after a model rollout the
    previous score comes back with no components)."""
    pub = state.pub if state is not None else None
    if pub is None:
        return None
    components = {}
    if pub["m"] == model.fingerprint:
        comps = model.components
        for name, row in zip(_order(model), pub["c"]):
            if row:
                value, score, weight, contrib = row
                components[name] = ComponentScore(value, score, component_band(comps[name], score), weight, contrib)
    return AccountScore(account_id=account_id, score=pub["s"], band=pub["b"], segment=pub["g"],
                        coverage=pub["cv"], components=components, model_version=pub["v"],
                        model_fingerprint=pub["m"])


def _to_pub(score: AccountScore, model: HealthModel, today: int) -> dict:
    comps = score.components
    rows = []
    for n in _order(model):
        c = comps.get(n)
        rows.append([c.value, c.score, c.weight, c.contribution] if c is not None else 0)
    return {"s": score.score, "b": score.band, "g": score.segment, "cv": score.coverage, "c": rows,
            "m": score.model_fingerprint, "v": score.model_version, "d": today}


def _rescore(st: AccountState, account_id: str, model: HealthModel, now: float, today: int,
             outcomes: dict[str, int], rejected: tuple, full: bool, affected: set[str],
             applied_ids: list[str], latest: float | None) -> AccountUpdate:
    pub = st.pub
    mv = MeasureValues(model, st, today)
    has = st.has_data(0)
    if not full and pub is not None and pub["m"] == model.fingerprint and pub["d"] == today:
        cached = {n: (row[0], row[1]) for n, row in zip(_order(model), pub["c"]) if row}
        new = evaluate(model, account_id, mv, has, cached, affected)
        if new.segment != pub["g"]:
            new = evaluate(model, account_id, mv, has)
    else:
        new = evaluate(model, account_id, mv, has)
    old = last_score(st, account_id, model)
    changed = not new.same_result(old) or (old is not None and old.model_fingerprint != new.model_fingerprint)
    if old is None and new.score is None:
        changed = False
    st.pub = _to_pub(new, model, today)
    alerts: list[Alert] = []
    if new.score is not None:
        al, alerts = evaluate_alerts(AlertState.from_dict(st.al), old, new, now, model.alerts, model.bands,
                                     event_ids=applied_ids, time=latest if latest is not None else now,
                                     history_days=model.state.score_history_days)
        st.al = al.to_dict()
    return AccountUpdate(account_id, st, outcomes, rejected, new if changed else None, tuple(alerts),
                         evaluated=True, state_changed=True)
