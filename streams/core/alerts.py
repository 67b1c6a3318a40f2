"""Alert rules as pure transitions of a small per-account alert state.

- band degraded / recovered, with hysteresis: the alerted band moves only when the score
  leaves it by at least ``margin_points`` beyond its boundary; per-type cooldown: inside
  the cooldown no alert of that type is emitted AND the alerted band does not move, so the
  transition is delayed (raised by the first evaluation after the cooldown), never lost;
- declining trend: the score fell by >= drop_points or >= drop_percent against its value
  ``days`` ago (daily score history); raised once per decline, re-armed when it clears;
- component thresholds: a component score going below a level (re-armed when back above).

Alert ids are deterministic: a hash of the account, type, model fingerprint, bands or
component, the evaluation day and the account's alert sequence number (kept in the alert
state, which is restored with the table after a crash), so reprocessing the same events
gives the same ids.
"""
from __future__ import annotations

from types import MappingProxyType

import hashlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from schemas.outputs import ALERT_TYPES

from .days import day_of
from .model import AlertRules, Band, band_of
from .scoring import AccountScore

DEGRADED, RECOVERED, TREND, COMPONENT = ALERT_TYPES
MAX_ALERT_EVENT_IDS = 20  # the newest ids of the events behind an alert
_KEY = MappingProxyType({DEGRADED: "dg", RECOVERED: "rc", TREND: "tr"})  # keys of the stored "t" (last times)


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
    changes.sort(key=lambda c: (-abs(c.contribution_after - c.contribution_before), c.component))
    return tuple(changes)


def _alert_id(*parts: Any) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()[:32]


# (type, band before, band after, parts of the id, score before, detail, sequence number)
Raised = tuple[str, "str | None", "str | None", tuple, "float | None", dict, int]


def transition(stored: dict[str, Any] | None, score: float, old_score: float | None,
               component_scores: Sequence[float | None], now: float, rules: AlertRules,
               bands: tuple[Band, ...], history_days: int, names: Mapping[str, int] | None = None
               ) -> tuple[dict[str, Any], list[Raised]]:
    """The alert rules' one transition, on the stored alert state ({"b": band last alerted, "t": {dg / rc / tr /
    c:<component>: time emitted}, "x": 1 while the trend rule is disarmed, "lo": components below their
    threshold, "n": alerts emitted (part of their ids), "h": [first day, a score or null per day]}):
    (stored state, new score, previous score, component scores) -> (new stored state, what to raise).

    ``component_scores`` gives, for each of ``rules.component_thresholds`` in order, the new score of
    its component (None when the component is not part of the score or has no score). The input is
    never mutated. :func:`alerts_of` turns what is raised into alerts."""
    al = stored or {}
    today = day_of(now)
    if names is None:
        names = band_names(bands)
    raised: list[Raised] = []
    last_times = al.get("t")
    seq = al.get("n", 0)
    band_now = band_of(bands, score)

    def cooled(key: str, cooldown: float) -> bool:
        t = last_times.get(key) if last_times else None
        return t is None or now - t >= cooldown

    def emit(key: str, atype: str, band_before, band_after, id_parts: tuple, score_before, detail: dict) -> None:
        nonlocal last_times, seq
        raised.append((atype, band_before, band_after, id_parts, score_before, detail, seq))
        seq += 1
        last_times = dict(last_times or ())
        last_times[key] = int(now)

    # band crossing with hysteresis (the alerted band moves only beyond the margin) and cooldown (the
    # move waits, and is raised by the first evaluation after it)
    band = al.get("b")
    rule = rules.band_change
    if band is None or band not in names:
        band = band_now
    elif rule is not None:
        margin = rule.margin_points
        i = names[band]
        atype = None
        if score < bands[i].min - margin:
            atype = DEGRADED
        elif i > 0 and score >= bands[i - 1].min + margin:
            atype = RECOVERED
        if atype is not None and cooled(_KEY[atype], rule.cooldown_seconds):
            emit(_KEY[atype], atype, band, band_now, (band, band_now), old_score, {"margin_points": margin})
            band = band_now

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
                emit(key, COMPONENT, band_now, band_now, (th.component,), old_score,
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
    if last_times:
        d["t"] = last_times
    if not armed:
        d["x"] = 1
    if below:
        d["lo"] = below
    if seq:
        d["n"] = seq
    if a < b:
        d["h"] = [first + a] + vals[a:b]
    return d, raised


def alerts_of(raised: Sequence[Raised], old: AccountScore | None, new: AccountScore, now: float, *,
              event_ids: Iterable[str] = (), time: float | None = None) -> list[Alert]:
    """The alerts of a transition: ids from the account, type, model, what the rule names, the day and
    the account's alert sequence number; one explanation (``explain(old, new)``) shared by all."""
    if not raised:
        return []
    today = day_of(now)
    when = now if time is None else time
    ids = tuple(event_ids)[-MAX_ALERT_EVENT_IDS:]
    explanation = explain(old, new)
    return [Alert(id=_alert_id(new.account_id, atype, new.model_fingerprint, *parts, today, seq), type=atype,
                  account_id=new.account_id, time=when, score_before=score_before, score_after=new.score,
                  band_before=band_before, band_after=band_after, model_version=new.model_version,
                  explanation=explanation, event_ids=ids, detail=detail)
            for atype, band_before, band_after, parts, score_before, detail, seq in raised]


def band_names(bands: tuple[Band, ...]) -> dict[str, int]:
    return {b.name: i for i, b in enumerate(bands)}
