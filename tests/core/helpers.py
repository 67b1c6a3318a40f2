"""Shared builders for the core tests."""
from __future__ import annotations

import copy

import orjson
import yaml

from schemas.events import AccountEvent, SurveyEvent, TicketEvent, UsageEvent
from streams.core import DEFAULT_MODEL_PATH, AccountState, apply_events, current_score, parse_model, score_all
from streams.core.days import DAY

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
