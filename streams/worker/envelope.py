"""The table value: the one codec of what a worker stores per account.

An envelope holds the core's account state, the per-account score sequence number, the last
two published scores ([score, band]), the facts of the last published score update
(:class:`ScoreMeta`) and the outbox (what the last write published, for re-publication after
a crash). Only this module knows the stored keys; the core's state has its own codec
(``AccountState.to_dict`` / ``from_dict``), reached only through here.
"""
from __future__ import annotations

from dataclasses import dataclass

import orjson

from streams.core.state import AccountState


@dataclass(slots=True)
class ScoreMeta:
    """What the last score update said beyond the score itself (stored with it, so a re-publication
    after a crash has exactly the content of the first)."""

    computed_at_ms: int
    cause: str  # events / timer / model
    event_time: float | None  # occurred_at of the newest event applied
    source_timestamp_ms: int | None  # of the newest input record behind it
    event_ids: list[str]
    # [component, score_before, score_after, contribution_before, contribution_after], largest first
    changes: list[list]

    def to_stored(self) -> dict:
        return {"t": self.computed_at_ms, "c": self.cause, "e": self.event_time, "x": self.source_timestamp_ms,
                "i": self.event_ids, "ch": self.changes}

    @classmethod
    def from_stored(cls, d: dict | None) -> "ScoreMeta | None":
        if d is None:
            return None
        return cls(d["t"], d["c"], d["e"], d["x"], d["i"], d["ch"])


class Envelope:
    __slots__ = ("state", "seq", "current", "previous", "meta", "published", "alerts")

    def __init__(self, state: AccountState | None, seq: int = 0, current: list | None = None,
                 previous: list | None = None, meta: ScoreMeta | None = None, published: bool = False,
                 alerts: list | None = None):
        self.state, self.seq, self.current, self.previous = state, seq, current, previous
        self.meta, self.published, self.alerts = meta, published, alerts or []

    def dump(self) -> bytes:
        d = {"s": self.state.to_dict() if self.state is not None else None, "q": self.seq}
        if self.current is not None:
            d["p"] = [self.current, self.previous]
            d["m"] = self.meta.to_stored() if self.meta is not None else None
        if self.published:
            d["u"] = 1
        if self.alerts:
            d["a"] = self.alerts
        return orjson.dumps(d)


def load_envelope(stored: bytes | None) -> Envelope:
    if not stored:
        return Envelope(None)
    d = orjson.loads(stored)
    state = AccountState.from_dict(d["s"]) if d.get("s") is not None else None
    current, previous = d.get("p") or (None, None)
    return Envelope(state, d.get("q", 0), current, previous, ScoreMeta.from_stored(d.get("m")), bool(d.get("u")),
                    d.get("a"))


def decode_state(stored: bytes | None) -> AccountState | None:
    return load_envelope(stored).state
