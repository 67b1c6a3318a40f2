"""The incremental entry points called by the stream processor (one call per account per
batch of events, or per timer tick / model rollout).

Silence never helps. With no new event an account's published score is the lowest of the
model's evaluations of its data on each day since its newest event (day ``D``):
``score(today) = min over d in [D, min(today, D + retention)] of raw(d)``, where ``raw(d)``
evaluates the model on day ``d`` with the data retained that day (the latest such day wins a
tie; its components, coverage and band are published with it). Windows empty as an account
falls silent, and a model's ratios, window means and re-spread weights can then rise as bad data
ages out; the floor keeps every such rise from reaching the score. A new event starts the floor
again at its day (the account's data changed: its score is news). After ``retention`` silent days
nothing of the account's activity is left, and the score holds. The state keeps its data up to
its newest event (see :mod:`streams.core.state`), so a late event or a model change evaluates
the days since again, exactly as the batch twin does. The stored ``pub`` says which: ``n`` the
day ``D`` and ``a`` the day of the published evaluation (each absent when it is ``d``, the day of the
evaluation: an active account stores neither), ``k`` set when day ``D``'s evaluation had a band (the
floor keeps one, see :func:`silence_floor`), ``p`` set when the floor is pending (while a worker
catches up on a backlog only ``raw(today)`` is evaluated; the next evaluation does the days since).

The state passed in is updated in place and returned in the :class:`AccountUpdate` (the
caller stores ``update.state`` back in its table); nothing here reads a clock or touches
a broker.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

import orjson

from schemas.events import Event

from .alerts import Alert, ComponentChange, alerts_of, band_snapshot, explain, transition
from .days import day_of
from .model import HealthModel, band_of
from .scoring import AccountScore, Plan, plan_of
from .state import APPLIED, DUPLICATE, OUTCOMES, AccountState


@dataclass(frozen=True, slots=True)
class AccountUpdate:
    account_id: str
    state: AccountState
    outcomes: dict[str, int]  # applied / duplicate / late / expired / future -> count
    rejected: tuple[tuple[Event, str], ...] = ()  # (event, 'late' | 'expired' | 'future' | 'over_limit')
    score: AccountScore | None = None  # the new score when it changed (publish it), else None
    alerts: tuple[Alert, ...] = ()
    evaluated: bool = False  # the account was (re)scored
    state_changed: bool = False  # the state must be written back
    event_outcomes: tuple[str, ...] = ()  # the outcome of each event, in the order given
    applied_ids: tuple[str, ...] = ()  # ids of the events applied
    latest_event_time: float | None = None  # occurred_at of the newest event applied
    previous: AccountScore | None = None  # with a new score: the one before it (None: the first)
    changes: tuple[ComponentChange, ...] = ()  # with a new score: what changed, the largest first
    held_back: int = 0  # alerts not raised because the events behind them are history (see alerts.py)


def apply_events(state: AccountState | None, account_id: str, events: Sequence[Event],
                 model: HealthModel, now: float, *, historic: bool = False) -> AccountUpdate:
    """Fold a batch of one account's events into its state and rescore what they affect. `historic`: the
    caller knows the evaluation is history whatever the events' times (a worker catching up on a backlog):
    bands are tracked, no alert is raised, and the silence floor waits (only today is evaluated; the
    next :func:`reevaluate` evaluates the days since the newest event). It waits too where the account's
    newest event is not today's (a backfill, a sync, yesterday's events just after midnight): a batch of
    history then costs one evaluation, not one per day since, and the caller runs :func:`reevaluate` once
    for the account (:func:`floor_pending`), however many batches brought its history."""
    plan = plan_of(model)
    cfg = model.state
    st = state if state is not None else AccountState.new(now, cfg, events)
    today = day_of(now)
    moved = st.advance(today, cfg)
    outcomes = dict.fromkeys(OUTCOMES, 0)
    rejected = []
    applied_ids = []
    per_event = []
    affected = 0  # bit mask over the plan's component indexes (see Plan.dependent_mask)
    full = False
    latest = None
    apply = st.apply
    usage_masks, any_usage = plan.usage_masks, plan.any_usage_mask
    for ev in events:
        r = apply(ev, now, cfg)
        outcomes[r] += 1
        per_event.append(r)
        if r == APPLIED:
            applied_ids.append(ev.event_id)
            kind = ev.kind
            if kind == "usage":
                affected |= usage_masks.get(ev.name, any_usage)
            elif kind == "account":
                full = True
            else:
                affected |= plan.dependent_mask(ev)
            ts = ev.occurred_at
            if latest is None or ts > latest:
                latest = ts
        elif r != DUPLICATE:
            rejected.append((ev, r))
    # a pending floor is left to the caller's reevaluate: a replay of duplicates changes nothing
    if not applied_ids and not needs_reevaluation(st, model, now, pending_floor=False):
        return _update(account_id, st, outcomes, tuple(rejected), None, (), False, moved or state is None,
                       tuple(per_event), (), None)
    st.prune_fingerprints(cfg)
    return _rescore(plan, st, account_id, now, today, outcomes, tuple(rejected), full, affected,
                    applied_ids, latest, tuple(per_event), historic, floor=not historic)


def reevaluate(state: AccountState, account_id: str, model: HealthModel, now: float, *,
               historic: bool = False) -> AccountUpdate:
    """Rescore with no new event (timer: windows slid, the silence floor extended or pending; model
    rollout: every day since the newest event again). Publishes only a changed score. A pending floor's
    evaluation is the alert rules' first look at the events that left it pending (their evaluation ran
    no rule): it is history when the newest of them is older than the history horizon, or when the
    caller says so (the sweep that ends a catch-up)."""
    cfg = model.state
    today = day_of(now)
    pending = floor_pending(state)
    state.advance(today, cfg)
    state.prune_fingerprints(cfg)
    latest = max(state.wm.values()) if pending and state.wm else None
    return _rescore(plan_of(model), state, account_id, now, today, dict.fromkeys(OUTCOMES, 0), (), True, 0,
                    [], latest, (), historic)


def floor_pending(state: AccountState | None) -> bool:
    """The account's published score is today's evaluation alone: its silence floor waits for a
    :func:`reevaluate` (after a catch-up, or a batch whose newest event is not today's)."""
    return state is not None and state.pub is not None and "p" in state.pub


def needs_reevaluation(state: AccountState | None, model: HealthModel, now: float, *,
                       pending_floor: bool = True) -> bool:
    """Cheap check for the timer: the day changed (windows slid) or the model changed since
    the last evaluation, or the account was never scored, or (with `pending_floor`; a worker catching
    up passes False: the floor waits for the end of it) its silence floor is pending."""
    if state is None:
        return False
    pub = state.pub
    if pub is None:
        return state.has_data()
    return (pub.get("d") != day_of(now) or pub.get("m") != model.fingerprint
            or (pending_floor and "p" in pub))


def current_score(state: AccountState, account_id: str, model: HealthModel, now: float) -> AccountScore:
    """The score the engine publishes at ``now`` (silence floor included), computed from scratch on a
    copy of the state (read-only helper: the batch twin's counterpart)."""
    st = AccountState.from_dict(orjson.loads(orjson.dumps(state.to_dict())))
    today = day_of(now)
    st.advance(today, model.state)
    plan = plan_of(model)
    out, _, _ = silence_floor(plan, st, today, st.newest_day(today), model.state.retention_days)
    return plan.account_score(account_id, *out)


def silence_floor(plan: Plan, source, today: int, newest: int, retention: int, first: int | None = None,
                  known: tuple[tuple, int, bool] | None = None) -> tuple[tuple, int, bool]:
    """The lowest evaluation over the days ``newest`` .. ``min(today, newest + retention)``, its day, and
    whether the evaluation on day ``newest`` had a band; ``known``: those three for the days before
    ``first``, evaluated already. ``source`` is an AccountState (its ``lo`` set per day) or a callable
    day -> a measure source of the data retained that day (the batch twin). The latest day wins a tie
    (the values shown are the newest of that score). An account whose data had a band on its newest
    event's day keeps one: the lowest score gets the band it falls in even where its own day's coverage
    is below the model's min_coverage (components drop out as an account falls silent; that is no lack
    of data about it, and must not take it out of its band into insufficient_data)."""
    last = min(today, newest + retention)  # after that, nothing of the activity is left: the score holds
    best, best_day, banded = known if known is not None else (None, newest, False)
    day = newest if first is None else first
    state = source if isinstance(source, AccountState) else None
    lowered = False
    while day <= last:
        if state is not None:
            state.lo = day - retention + 1
            src = state
        else:
            src = source(day)
        out = plan.run(src, day, src.attributes(), src.has_data(), None, 0, None)
        if day == newest:
            banded = out[2] is not None
        if best is None or out[1] is not None and (best[1] is None or out[1] <= best[1]):
            best, best_day, lowered = out, day, True
        day += 1
    if state is not None:
        state.lo = today - retention + 1
    if lowered and banded and best[2] is None and best[1] is not None:
        best = (best[0], best[1], band_of(plan.bands, best[1])) + tuple(best[3:])
    return best, best_day, banded


def last_score(state: AccountState | None, account_id: str, model: HealthModel) -> AccountScore | None:
    """The last evaluated score kept in the state (for explanations and read models). Its
    components are known only under the model that produced it (after a model rollout the
    previous score comes back with no components)."""
    return snapshot_score(score_snapshot(state), account_id, model)


ScoreSnapshot = dict  # opaque to callers: pass it back to snapshot_score


def score_snapshot(state: AccountState | None) -> ScoreSnapshot | None:
    """The state's last evaluated score as it is now, to rebuild later with :func:`snapshot_score`
    although the state is folded further: the engine replaces it on every evaluation, never
    mutates it."""
    return state.pub if state is not None else None


def snapshot_score(snapshot: ScoreSnapshot | None, account_id: str, model: HealthModel) -> AccountScore | None:
    return _score_of_pub(snapshot, account_id, plan_of(model)) if snapshot is not None else None


def last_segment(state: AccountState | None) -> str | None:
    """The segment of the state's last evaluation (None: never scored)."""
    pub = state.pub if state is not None else None
    return pub["g"] if pub is not None else None


def _score_of_pub(pub: dict, account_id: str, plan: Plan) -> AccountScore:
    components = plan.components_of(pub["c"], pub["g"]) if pub["m"] == plan.fingerprint else {}
    return AccountScore(account_id, pub["s"], pub["b"], pub["g"], pub["cv"], components, pub["v"], pub["m"])


def _legacy(rows: list) -> bool:
    """Rows stored by earlier versions as [value, score, weight, contribution] (now [value,
    score]: weight and contribution follow from the presence pattern, see Plan.norm_of)."""
    for row in rows:
        if row:
            return len(row) != 2
    return False


def _rescore(plan: Plan, st: AccountState, account_id: str, now: float, today: int,
             outcomes: dict[str, int], rejected: tuple, full: bool, affected: int,
             applied_ids: list[str], latest: float | None, per_event: tuple[str, ...],
             historic: bool = False, floor: bool = True) -> AccountUpdate:
    pub = st.pub
    fp = plan.fingerprint
    old_rows = None  # the previous rows, when evaluated under this model
    legacy = False
    if pub is not None and pub["m"] == fp:
        old_rows = pub["c"]
        if _legacy(old_rows):  # recompute, compare on [value, score]
            full = legacy = True
            old_rows = [row[:2] if row else 0 for row in old_rows]
    retention = plan.model.state.retention_days
    newest = st.newest_day(today)
    if applied_ids and newest != today:
        floor = False  # a batch of history: one evaluation now, the days since once for all its batches
    if not floor or newest == today:
        # today alone: the floor's one day, or a catch-up (the floor waits: pending)
        if old_rows is not None and not full and pub["d"] == today and pub.get("a", today) == today:
            # incremental: components outside `affected` keep their value and score
            out = plan.run(st, today, st.attributes(), st.has_data(), old_rows, affected, pub["g"])
        else:
            out = plan.run(st, today, st.attributes(), st.has_data(), None, 0, None)
        day, start, banded = today, (today if newest == today else None), False
    elif (old_rows is not None and not legacy and not applied_ids and "p" not in pub and pub["d"] <= today
          and pub.get("n", pub["d"]) == newest):  # (a clock gone back: evaluated afresh)
        # the same data since the floor was evaluated up to day pub["d"]: extend it by the days since
        # day D's band: flagged, or (a floor of one day so far) the published evaluation's own
        banded = "k" in pub if "n" in pub else pub["b"] is not None
        known = ((pub["g"], pub["s"], pub["b"], pub["cv"], pub["c"], None), pub.get("a", pub["d"]), banded)
        out, day, banded = silence_floor(plan, st, today, newest, retention, pub["d"] + 1, known)
        start = newest
    else:
        out, day, banded = silence_floor(plan, st, today, newest, retention)
        start = newest
    segment, total, band, coverage, rows, norm = out
    if pub is None:
        changed = total is not None
    elif old_rows is None:  # another model: always a new score
        changed = True
    else:  # same segment and rows: same weights and contributions (see Plan.norm_of)
        changed = not (total == pub["s"] and band == pub["b"] and segment == pub["g"] and coverage == pub["cv"]
                       and rows == old_rows)
    # a new dict: the previous one is never mutated (callers may keep it)
    st.pub = {"s": total, "b": band, "g": segment, "cv": coverage, "c": rows, "m": fp, "v": plan.version, "d": today}
    if start is None:
        st.pub["p"] = 1
    elif start != today:
        st.pub["n"] = start
        if banded:
            st.pub["k"] = 1
    if day != today:
        st.pub["a"] = day
    new = plan.account_score(account_id, segment, total, band, coverage, rows, norm) if changed else None
    old = _UNBUILT
    changes: tuple = ()
    if new is not None:
        old = _score_of_pub(pub, account_id, plan) if pub is not None else None
        changes = explain(old, new)
    alerts: tuple[Alert, ...] = ()
    held = 0
    # no band (no data, or too little: insufficient_data): nothing to alert on; a pending floor: the score
    # published is today's evaluation alone, maybe above the floor, so no rule looks at it (not even to
    # track: the reevaluation that settles the floor compares the floor with the alert state as it was)
    if band is not None and start is not None:
        scored = new

        def current() -> AccountScore:
            nonlocal scored
            if scored is None:
                scored = plan.account_score(account_id, segment, total, band, coverage, rows, norm)
            return scored

        rules = plan.alerts
        # the events behind this evaluation are history (a replay, a backfill): track, publish nothing
        historic = historic or latest is not None and now - latest > rules.history_horizon_seconds
        st.al, raised, held = transition(
            st.al, total, pub["s"] if pub is not None else None,
            [rows[i][1] if i is not None and rows[i] else None for i in plan.threshold_index],
            now, rules, plan.bands, plan.history_days, plan.band_names, historic=historic,
            snapshot=lambda: band_snapshot(current(), today, plan.order))
        if raised:
            if old is _UNBUILT:
                old = _score_of_pub(pub, account_id, plan) if pub is not None else None
            alerts = tuple(alerts_of(raised, old, current(), now, event_ids=applied_ids,
                                     time=latest if latest is not None else now, components=plan.order))
    return _update(account_id, st, outcomes, rejected, new, alerts, True, True, per_event,
                   tuple(applied_ids), latest, old if new is not None else None, changes, held)


_UNBUILT = object()
_make = object.__new__
_FIELDS = ("account_id", "state", "outcomes", "rejected", "score", "alerts", "evaluated", "state_changed",
           "event_outcomes", "applied_ids", "latest_event_time", "previous", "changes", "held_back")
assert tuple(f.name for f in fields(AccountUpdate)) == _FIELDS, "update _FIELDS and _update"
_setters = tuple(AccountUpdate.__dict__[f].__set__ for f in _FIELDS)


def _update(account_id, state, outcomes, rejected, score, alerts, evaluated, state_changed, event_outcomes,
            applied_ids, latest_event_time, previous=None, changes=(), held_back=0) -> AccountUpdate:
    """``AccountUpdate(...)`` with every field given, without the frozen dataclass's
    per-field ``object.__setattr__`` calls (the same object)."""
    u = _make(AccountUpdate)
    (s_account_id, s_state, s_outcomes, s_rejected, s_score, s_alerts, s_evaluated, s_state_changed,
     s_event_outcomes, s_applied_ids, s_latest, s_previous, s_changes, s_held_back) = _setters
    s_account_id(u, account_id)
    s_state(u, state)
    s_outcomes(u, outcomes)
    s_rejected(u, rejected)
    s_score(u, score)
    s_alerts(u, alerts)
    s_evaluated(u, evaluated)
    s_state_changed(u, state_changed)
    s_event_outcomes(u, event_outcomes)
    s_applied_ids(u, applied_ids)
    s_latest(u, latest_event_time)
    s_previous(u, previous)
    s_changes(u, changes)
    s_held_back(u, held_back)
    return u
