"""Alert rules as pure transitions of a small per-account alert state.

- band degraded / recovered, with hysteresis: the alerted band moves only when the score
  leaves it by at least ``margin_points`` beyond its boundary; per-type cooldown: inside
  the cooldown no alert of that type is emitted AND the alerted band does not move, so a
  move is raised by the first evaluation after the cooldown that still finds the score beyond
  the margin. A band alert states the move from the last alerted band and is explained
  against the score at that alert (its components' contributions are kept in the alert state,
  ``bs``), so its explanation shows what changed since subscribers last heard of the account;
- declining trend: the score fell by >= drop_points or >= drop_percent against its value
  ``days`` ago (daily score history); raised once per decline, re-armed when it clears;
- component thresholds: a component score going below a level (re-armed when back above);
- global score threshold: the score going below a level (re-armed back above it by a margin);
- fall: the score ``points`` below its highest daily score of the last ``days`` days.

History pages nobody: an evaluation whose triggering events are older than the rules'
``history_horizon_seconds`` behind the processing clock (a replay, a backfill, a worker
catching up) tracks the alerted band, the trend and the thresholds as usual, but emits
nothing and starts no cooldown; what it would have raised is only counted (``held_back``).
No alert has an empty explanation: one with nothing changed since its reference lists the
components as they stand (before = after).

Alert ids are deterministic: a hash of the account, type, model fingerprint, bands or
component, the evaluation day and the account's alert sequence number (kept in the alert
state, which is restored with the table after a crash), so reprocessing the same events
gives the same ids.
"""
from __future__ import annotations

from types import MappingProxyType

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from schemas.outputs import ALERT_TYPES

from .days import day_of
from .model import AlertRules, Band, band_of
from .scoring import AccountScore

DEGRADED, RECOVERED, TREND, COMPONENT, BELOW, FALL = ALERT_TYPES
MAX_ALERT_EVENT_IDS = 20  # the newest ids of the events behind an alert
# keys of the stored "t" (last times)
_KEY = MappingProxyType({DEGRADED: "dg", RECOVERED: "rc", TREND: "tr", BELOW: "sb", FALL: "fl"})


@dataclass(frozen=True, slots=True)
class ComponentChange:
    component: str
    value_before: float | None
    value_after: float | None
    score_before: float | None
    score_after: float | None
    contribution_before: float
    contribution_after: float

    @property
    def change(self) -> float:
        return round(self.contribution_after - self.contribution_before, 4)

    def to_dict(self) -> dict[str, Any]:
        return {"component": self.component, "value_before": self.value_before, "value_after": self.value_after,
                "score_before": self.score_before, "score_after": self.score_after,
                "contribution_before": self.contribution_before, "contribution_after": self.contribution_after,
                "change": self.change}


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    type: str
    account_id: str
    time: float
    score_before: float | None
    score_after: float | None
    band_before: str | None
    band_after: str | None
    model_version: str
    explanation: tuple[ComponentChange, ...] = ()
    event_ids: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "account_id": self.account_id, "time": self.time,
                "score_before": self.score_before, "score_after": self.score_after,
                "band_before": self.band_before, "band_after": self.band_after,
                "model_version": self.model_version,
                "explanation": [c.to_dict() for c in self.explanation],
                "event_ids": list(self.event_ids), "detail": self.detail}


def explain(old: AccountScore | None, new: AccountScore) -> tuple[ComponentChange, ...]:
    """The components whose contribution changed, the largest |change| first."""
    before = old.components if old is not None else {}
    changes = []
    for name in sorted(set(before) | set(new.components)):
        b, a = before.get(name), new.components.get(name)
        cb = b.contribution if b else 0.0
        ca = a.contribution if a else 0.0
        if cb == ca and (b and b.value) == (a and a.value):
            continue
        changes.append(ComponentChange(name, b.value if b else None, a.value if a else None,
                                       b.score if b else None, a.score if a else None, cb, ca))
    return _largest_first(changes)


def _largest_first(changes: list[ComponentChange]) -> tuple[ComponentChange, ...]:
    changes.sort(key=lambda c: (-abs(c.contribution_after - c.contribution_before), c.component))
    return tuple(changes)


def band_snapshot(score: AccountScore, day: int, components: Sequence[str]) -> list:
    """What a band alert is later explained against, compact (it stays in the account's state):
    [score, day, model fingerprint (8 digits), the contribution of each of ``components`` in hundredths, or null]."""
    comps = score.components
    return [score.score, day, score.model_fingerprint[:8],
            [round(comps[n].contribution * 100) if n in comps else None for n in components]]


def explain_since(snapshot: list, new: AccountScore, components: Sequence[str]) -> tuple[ComponentChange, ...] | None:
    """The components whose contribution changed since a band snapshot (to the hundredth), the largest change
    first; their values and scores before are not kept (None). None: the snapshot is of another model."""
    if snapshot[2] != new.model_fingerprint[:8] or len(snapshot[3]) != len(components):
        return None
    changes = []
    for name, kept in zip(components, snapshot[3]):
        a = new.components.get(name)
        cb = kept / 100 if kept is not None else 0.0
        ca = a.contribution if a else 0.0
        if kept is None and a is None or kept is not None and round(ca * 100) == kept:
            continue
        changes.append(ComponentChange(name, None, a.value if a else None, None, a.score if a else None, cb, ca))
    return _largest_first(changes)


def _as_they_stand(new: AccountScore) -> tuple[ComponentChange, ...]:
    """The components of a score unchanged (before = after), the largest contribution first: the
    explanation of an alert whose reference has the same components (a trend judged on a later day)."""
    rows = sorted(new.components.items(), key=lambda kv: (-abs(kv[1].contribution), kv[0]))
    return tuple(ComponentChange(n, c.value, c.value, c.score, c.score, c.contribution, c.contribution)
                 for n, c in rows)


def _alert_id(*parts: Any) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]


# (type, band before, band after, parts of the id, score before, detail, sequence number, what the alert is
# explained against: a band snapshot, or None for the previous score)
Raised = tuple[str, "str | None", "str | None", tuple, "float | None", dict, int, "list | None"]


def transition(stored: dict[str, Any] | None, score: float, old_score: float | None,
               component_scores: Sequence[float | None], now: float, rules: AlertRules,
               bands: tuple[Band, ...], history_days: int, names: Mapping[str, int] | None = None, *,
               historic: bool = False, snapshot: Callable[[], list] | None = None
               ) -> tuple[dict[str, Any], list[Raised], int]:
    """The alert rules' one transition, on the stored alert state ({"b": band last alerted, "bs": the score
    when it was alerted (see band_snapshot), "t": {dg / rc / tr / c:<component>: time emitted}, "x": 1 while
    the trend rule is disarmed, "sl": 1 while the score is below its threshold, "fx": 1 while the fall rule
    is disarmed, "lo": components below their threshold, "n": alerts emitted (part of their
    ids), "h": [first day, a score or null per day]}):
    (stored state, new score, previous score, component scores) -> (new stored state, what to raise,
    how many alerts were held back because the evaluation is ``historic``).

    ``component_scores`` gives, for each of ``rules.component_thresholds`` in order, the new score of
    its component (None when the component is not part of the score or has no score). ``snapshot``
    gives the new score's band snapshot, taken when the alerted band is set or moves. The input is
    never mutated. :func:`alerts_of` turns what is raised into alerts."""
    al = stored or {}
    today = day_of(now)
    if names is None:
        names = band_names(bands)
    raised: list[Raised] = []
    held = 0
    last_times = al.get("t")
    seq = al.get("n", 0)
    band_now = band_of(bands, score)
    band_moved = False

    def band_before() -> str | None:
        """The account's band at the previous evaluation (threshold alerts report it as the band before)."""
        return band_of(bands, old_score) if old_score is not None else band_now

    def cooled(key: str, cooldown: float) -> bool:
        if historic:  # a replay starts no cooldown, and none holds it back
            return True
        t = last_times.get(key) if last_times else None
        return t is None or now - t >= cooldown

    def emit(key: str, atype: str, band_before, band_after, id_parts: tuple, score_before, detail: dict,
             reference: list | None = None) -> None:
        nonlocal last_times, seq, held
        if historic:
            held += 1
            return
        raised.append((atype, band_before, band_after, id_parts, score_before, detail, seq, reference))
        seq += 1
        last_times = dict(last_times or ())
        last_times[key] = int(now)

    # band crossing with hysteresis (the alerted band moves only beyond the margin) and cooldown (the
    # move waits for the first evaluation after it that still finds the score beyond the margin)
    band = al.get("b")
    reference = al.get("bs")
    rule = rules.band_change
    if band is None or band not in names:
        band, band_moved = band_now, True
    elif rule is not None:
        margin = rule.margin_points
        i = names[band]
        atype = None
        if score < bands[i].min - margin:
            atype = DEGRADED
        elif i > 0 and score >= bands[i - 1].min + margin:
            atype = RECOVERED
        if atype is not None and cooled(_KEY[atype], rule.cooldown_seconds):
            detail = {"margin_points": margin}
            if reference:
                detail["band_since_day"] = reference[1]  # the day the band before was alerted (or first set)
            emit(_KEY[atype], atype, band, band_now, (band, band_now),
                 reference[0] if reference else old_score, detail, reference)
            band, band_moved = band_now, True

    # declining trend against the latest daily score at least `days` old; once per decline
    armed = not al.get("x")
    h = al.get("h")
    trend = rules.trend
    if trend is not None and h:
        first = h[0]
        k = min(today - trend.days - first, len(h) - 2)
        ref = None
        while k >= 0:
            ref = h[1 + k]
            if ref is not None:
                break
            k -= 1
        if ref is not None:
            drop = ref - score
            cond = ((trend.drop_points is not None and drop >= trend.drop_points)
                    or (trend.drop_percent is not None and ref > 0 and drop * 100.0 / ref >= trend.drop_percent))
            if not cond:
                armed = True
            elif armed and cooled(_KEY[TREND], rules.cooldown_seconds):
                ref_day = first + k
                emit(_KEY[TREND], TREND, band_of(bands, ref), band_now, (ref_day,), ref,
                     {"reference_day": ref_day, "reference_score": ref, "drop_points": round(drop, 2),
                      "days": trend.days})
                armed = False

    # the global score below a level: once per fall below, re-armed back at the level plus its margin
    under = bool(al.get("sl"))
    st_rule = rules.score_threshold
    if st_rule is not None:
        if score < st_rule.below:
            if not under and cooled(_KEY[BELOW], rules.cooldown_seconds):
                emit(_KEY[BELOW], BELOW, band_before(), band_now, (), old_score, {"below": st_rule.below})
                under = True
        elif score >= st_rule.below + st_rule.margin_points:
            under = False

    # a fall of `points` below the highest daily score of the last `days` days (today's before this one
    # included); once per fall, re-armed when the condition clears
    fallen = bool(al.get("fx"))
    fall = rules.fall
    if fall is not None:
        peak = peak_day = None
        if h:
            first = h[0]
            for i in range(max(0, today - fall.days - first), min(len(h) - 1, today - first + 1)):
                v = h[1 + i]
                if v is not None and (peak is None or v > peak):
                    peak, peak_day = v, first + i
        if peak is None or peak - score < fall.points:
            fallen = False
        elif not fallen and cooled(_KEY[FALL], rules.cooldown_seconds):
            emit(_KEY[FALL], FALL, band_of(bands, peak), band_now, (peak_day,), peak,
                 {"reference_day": peak_day, "reference_score": peak, "drop_points": round(peak - score, 2),
                  "days": fall.days})
            fallen = True

    # component thresholds: once per fall below, re-armed when back above
    below = al.get("lo") or []
    copied = False
    for th, s in zip(rules.component_thresholds, component_scores):
        if s is None:
            continue
        was = th.component in below
        if s < th.below and not was:
            key = f"c:{th.component}"
            if cooled(key, rules.cooldown_seconds):
                emit(key, COMPONENT, band_before(), band_now, (th.component,), old_score,
                     {"component": th.component, "below": th.below, "component_score": s})
                if not copied:
                    below, copied = list(below), True
                below.append(th.component)
        elif s >= th.below and was:
            if not copied:
                below, copied = list(below), True
            below.remove(th.component)

    # the day's score for later trend comparisons, history bounded to `history_days`, stored dense
    # (first day, a score or null per day)
    if h:
        first = h[0]
        vals = h[1:]
        last = first + len(vals) - 1
        if today > last:
            if today > last + 1:
                vals.extend([None] * (today - last - 1))
            vals.append(score)
        elif today >= first:
            vals[today - first] = score
        else:
            vals = [score] + [None] * (first - today - 1) + vals
            first = today
    else:
        first, vals = today, [score]
    keep_from = today - history_days
    if first < keep_from:
        vals = vals[keep_from - first:]
        first = keep_from
    a, b = 0, len(vals)
    while a < b and vals[a] is None:
        a += 1
    while b > a and vals[b - 1] is None:
        b -= 1
    d: dict[str, Any] = {}
    if band is not None:
        d["b"] = band
    if band_moved and snapshot is not None:
        reference = snapshot()
    if reference:
        d["bs"] = reference
    if last_times:
        d["t"] = last_times
    if not armed:
        d["x"] = 1
    if under:
        d["sl"] = 1
    if fallen:
        d["fx"] = 1
    if below:
        d["lo"] = below
    if seq:
        d["n"] = seq
    if a < b:
        d["h"] = [first + a] + vals[a:b]
    return d, raised, held


def alerts_of(raised: Sequence[Raised], old: AccountScore | None, new: AccountScore, now: float, *,
              event_ids: Iterable[str] = (), time: float | None = None,
              components: Sequence[str] = ()) -> list[Alert]:
    """The alerts of a transition: ids from the account, type, model, what the rule names, the day and
    the account's alert sequence number. A band alert is explained against the band snapshot it carries
    (taken over ``components``, the model's in order), the others, and a band alert whose snapshot is of
    another model, against the previous score; one with nothing changed lists the components as they stand."""
    if not raised:
        return []
    today = day_of(now)
    when = now if time is None else time
    ids = tuple(event_ids)[-MAX_ALERT_EVENT_IDS:]
    since_old = None
    alerts = []
    for atype, band_before, band_after, parts, score_before, detail, seq, reference in raised:
        explanation = explain_since(reference, new, components) if reference else None
        if explanation is None:
            if since_old is None:
                since_old = explain(old, new)
            explanation = since_old
        alerts.append(Alert(id=_alert_id(new.account_id, atype, new.model_fingerprint, *parts, today, seq),
                            type=atype, account_id=new.account_id, time=when, score_before=score_before,
                            score_after=new.score, band_before=band_before, band_after=band_after,
                            model_version=new.model_version, explanation=explanation or _as_they_stand(new),
                            event_ids=ids, detail=detail))
    return alerts


def band_names(bands: tuple[Band, ...]) -> dict[str, int]:
    return {b.name: i for i, b in enumerate(bands)}
