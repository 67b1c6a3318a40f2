"""Per-account state: compact rolling windows, exact de-duplication, order independence.

One :class:`AccountState` per account is stored as ONE value in a table, serialised with
orjson (``to_dict`` gives plain JSON types with string keys). Layout (short keys keep
it under 4 KB after months of activity):

- ``d0``: first retained day (day = floor(epoch / 86400), UTC); every daily series is a
  dense list whose index 0 is day ``d0``; retention slides ``d0`` and drops the head. The
  retained days end at the account's newest event, not at today: an account gone silent keeps
  the data its score had on the day of its last event, so the score of every day since can be
  evaluated again (after a late event or a model change; see the silence floor in
  :mod:`streams.core.engine`). Every query below counts only the days retained on the day
  evaluated (``lo``, not stored): ``lo = day - retention + 1``.
- ``wm``: event kind -> event-time watermark (max ``occurred_at`` applied). Lateness is
  judged per kind because each kind arrives on its own topic: Kafka orders a partition, not
  topics against each other, so a worker catching up can read days of usage before the
  tickets of the same days, and that must not make the tickets late.
  ``fp``: kind initial + hour (counted from the start of day ``d0``) -> the 8-character
  fingerprints of the event ids of that kind applied in that hour, concatenated; kept only
  while the hour may still receive events (not wholly older than the kind's
  ``wm - allowed lateness``; each kind has its own, ``StateConfig.lateness``).
- ``uc`` / ``uv``: usage event name -> daily counts / daily value sums (hundredths).
- ``us``: fingerprint of the user id -> last day seen; stored grouped by day (day -> the fingerprints
  of the users last seen that day, concatenated: a user costs its 8 characters alone).
  ``ft``: feature -> last day seen.
- ``tk``: ticket id -> [last activity, last action rank, episode (absent once folded), next episode
  (only while both are live)]; an episode is [opened (min), first_response (min), resolved (max), last time flagged
  sla_breached (max), first resolution (min: its *anchor*)]; times in whole minutes since the start of
  day ``d0`` (rebased when ``d0`` slides; an anchor may go below zero, the others become null). A
  ticket's events more than its kind's allowed lateness after the episode's first resolution belong to
  the next episode (a ticket reopened a week after it was resolved counts as a new ticket, with no
  ``opened`` of its own): that rule is decided on arrival (:func:`ticket_episode_minutes`; the two
  cases the batch twin does not model are in docs/health-model.md, "Ticket episodes").
- ``tf`` / ``tl``: the figures of finished episodes, folded so that finished tickets cost days, not
  tickets. An episode is finished once its ticket kind's watermark minus the allowed lateness has
  passed its anchor plus the allowed lateness: no event that could still be accepted can reach it.
  ``tf``: a dense list indexed by the opened day (index 0 is ``d0``), each 0 or [episodes opened,
  of them flagged sla_breached on or after the opened day, first responses as a flat [day lag,
  minutes, n, day lag, minutes, n, ...] list, resolutions likewise, and (rarely) breaches flagged before
  the opened day as a flat [day lag, n, ...] list]; ``tl``: the day of the latest activity of a ticket folded away (for recency).
- ``sv``: a dense list indexed by day (index 0 is ``d0``), each 0 (no answer that day) or [csat sum
  (thousandths of the 1..5 scale), csat answers, promoters, passives, detractors]; it ends on the last
  day with an answer.
- ``at``: attribute -> [value, occurred_at, fingerprint]: last writer wins by
  (occurred_at, fingerprint of event_id), so arrival order does not matter.
- ``pub``: the last evaluated score (for change detection, explanations and incremental
  rescoring); ``al``: alert state (see :mod:`streams.core.alerts`).

Every aggregate is a sum, a max, or a min over events, so any arrival order and any number
of duplicate deliveries within the allowed lateness give the same state-derived measures.

The state is bounded (:data:`STATE_LIMITS`): an event that would add a key beyond a limit (the
101st distinct usage event name of the retained days, say) is refused with the outcome
``over_limit``, whatever else it carries, so one account's value can never outgrow what the broker
accepts. Below the limits nothing depends on arrival order; at a limit, which event is refused does.
"""
from __future__ import annotations

from types import MappingProxyType

from dataclasses import dataclass, field
from math import floor
from typing import Any

from schemas.events import AccountEvent, SurveyEvent, TicketEvent, UsageEvent

from .cache import BoundedCache
from .days import DAY, FINGERPRINT_CHARS, HOUR, MINUTES_PER_DAY, csat_milli, day_of, fingerprint, minute_of, nps_class, to_centi
from .model import StateConfig

# Ticket actions ordered to break ties between actions at the same second.
TICKET_RANK = MappingProxyType({"opened": 0, "first_response": 1, "reopened": 2, "resolved": 3, "closed": 4})
OPEN_RANKS = (0, 1, 2)
CLOSED_RANKS = (3, 4)
# a ticket: [last activity, last action rank, episode (none once folded), next episode (optional)]
T_LAST, T_RANK, T_EPISODE, T_NEXT = range(4)
# an episode: [opened (min), first response (min), resolved (max), sla breach flag (max), first resolution]
T_OPENED, T_FIRST, T_RESOLVED, T_BREACH, T_ANCHOR = range(5)
# a folded day (tf): [episodes opened, breached on or after that day, first responses, resolutions, breaches before]
F_OPENED, F_BREACHED, F_FIRST, F_RESOLVED, F_EARLY = range(5)
_F_LISTS = MappingProxyType({T_FIRST: F_FIRST, T_RESOLVED: F_RESOLVED})

APPLIED, DUPLICATE, LATE, EXPIRED, FUTURE, OVER_LIMIT = "applied", "duplicate", "late", "expired", "future", "over_limit"
OUTCOMES = (APPLIED, DUPLICATE, LATE, EXPIRED, FUTURE, OVER_LIMIT)


@dataclass(frozen=True)
class StateLimits:
    """Distinct keys one account's state may hold (each within the retained days). A heavy but ordinary
    account at every limit (short ids and names) holds about 750 KB; ids and names at their longest,
    or full of characters JSON escapes, can exceed that: the worker then refuses the events that would
    take the table value past its record limit (streams.worker.processor.MAX_RECORD_BYTES)."""

    event_names: int = 100  # usage event names (uc / uv)
    users: int = 10_000  # distinct user ids (us)
    features: int = 300  # distinct features (ft)
    tickets: int = 1_000  # tickets held one by one (tk): open, or resolved less than two lateness windows ago
    attributes: int = 100  # account attributes with a value (at)
    # events remembered for de-duplication (fp): those of the hours not wholly before their kind's
    # newest event minus the allowed lateness, 8 bytes each; about a lateness window of events
    fingerprints: int = 50_000


STATE_LIMITS = StateLimits()
_L_NAMES, _L_USERS, _L_FEATURES, _L_TICKETS, _L_ATTRIBUTES, _L_FINGERPRINTS = (
    STATE_LIMITS.event_names, STATE_LIMITS.users, STATE_LIMITS.features, STATE_LIMITS.tickets, STATE_LIMITS.attributes,
    STATE_LIMITS.fingerprints)


def add_survey(b: list[int], e: SurveyEvent) -> None:
    """Count one answer into [csat sum (thousandths of the 1..5 scale), csat answers, promoters, passives,
    detractors] (the state's daily buckets, the batch twin's totals)."""
    bottom, top = e.scale_range
    if e.survey == "csat":
        b[0] += csat_milli(e.score, bottom, top)
        b[1] += 1
    elif e.survey == "nps":
        b[2 + nps_class(e.score, bottom, top)] += 1


def is_future(occurred_at: float, now: float, cfg: StateConfig) -> bool:
    """Beyond the allowed clock skew: refused as 'future' (the stream) or left out (the batch twin)."""
    return occurred_at > now + cfg.max_future_skew_seconds


def classify_time(occurred_at: float, kind: str, now: float, retention_start: int, cfg: StateConfig) -> str | None:
    """The time rules shared by the stream and the batch twin: 'future' beyond the allowed
    clock skew, 'expired' before the retained days (account attribute upserts never expire). The
    retained days end at the account's newest event, not at the clock: an old event reaching an account
    with nothing newer counts (the days after it are the account's silence)."""
    if is_future(occurred_at, now, cfg):
        return FUTURE
    if kind != "account" and occurred_at < retention_start * DAY:
        return EXPIRED
    return None


def ticket_episode_minutes(cfg: StateConfig) -> int:
    """How long after an episode's first resolution its ticket's events still belong to it (minutes): the
    ticket kind's allowed lateness, rounded up. No shorter, so the split is decided exactly on arrival:
    a resolution that could still be accepted is never so early that an event already applied would
    fall after its end (the batch twin applies the same rule to the whole event set)."""
    return -(-cfg.lateness_of["ticket"] // 60)


def _new_episode() -> list:
    return [None, None, None, None, None]


def _episode_add(ep: list, ts: int, rank: int, breached: bool) -> None:
    if rank == 0:
        if ep[T_OPENED] is None or ts < ep[T_OPENED]:
            ep[T_OPENED] = ts
    elif rank == 1:
        if ep[T_FIRST] is None or ts < ep[T_FIRST]:
            ep[T_FIRST] = ts
    elif rank == 3:
        if ep[T_RESOLVED] is None or ts > ep[T_RESOLVED]:
            ep[T_RESOLVED] = ts
        if ep[T_ANCHOR] is None or ts < ep[T_ANCHOR]:
            ep[T_ANCHOR] = ts
    if breached and (ep[T_BREACH] is None or ts > ep[T_BREACH]):
        ep[T_BREACH] = ts


def _add_lag(flat: list, lag: int, *values: int) -> None:
    """Add ``values`` to the group of ``lag`` in a flat [lag, v1, v2.., lag, ...] list."""
    step = 1 + len(values)
    for i in range(0, len(flat), step):
        if flat[i] == lag:
            for j, v in enumerate(values, 1):
                flat[i + j] += v
            return
    flat.append(lag)
    flat.extend(values)


_KEY_HOURS = BoundedCache(65536)  # fingerprint key ("u1392") -> hour (1392): the keys recur across accounts


def _key_hour(key: str) -> int:
    return _KEY_HOURS.put(key, int(key[1:]))


def _last_hour_before(cutoff: float) -> int:
    """The largest integer h with (h + 1) * HOUR <= cutoff (compared exactly)."""
    h = floor(cutoff / HOUR) - 1
    while (h + 2) * HOUR <= cutoff:
        h += 1
    while (h + 1) * HOUR > cutoff:
        h -= 1
    return h


def _grow(dense: list, i: int) -> None:
    """Make a dense daily list (index 0 is d0) long enough to hold day index ``i``."""
    n = len(dense)
    if i >= n:
        dense.extend([0] * (i - n + 1))


def _add(series: dict[str, list], key: str, i: int, x: int) -> None:
    arr = series.get(key)
    if arr is None:
        arr = series[key] = []
    _grow(arr, i)
    arr[i] += x


@dataclass(slots=True)
class AccountState:
    d0: int = 0
    wm: dict[str, float] = field(default_factory=dict)
    fp: dict[str, str] = field(default_factory=dict)
    uc: dict[str, list[int]] = field(default_factory=dict)
    uv: dict[str, list[int]] = field(default_factory=dict)
    us: dict[str, int] = field(default_factory=dict)
    ft: dict[str, int] = field(default_factory=dict)
    tk: dict[str, list] = field(default_factory=dict)
    sv: list = field(default_factory=list)
    at: dict[str, list] = field(default_factory=dict)
    pub: dict | None = None
    al: dict = field(default_factory=dict)
    tf: list = field(default_factory=list)
    tl: int | None = None
    # not stored: fingerprints held in fp, counted when first needed (-1: not counted yet)
    fn: int = field(default=-1, compare=False, repr=False)
    # not stored: the first day retained on the day being evaluated (set by advance and the engine)
    lo: int = field(default=0, compare=False, repr=False)

    # ------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"d0": self.d0}
        if self.wm:
            d["wm"] = self.wm
        if self.fp:
            d["fp"] = self.fp
        if self.uc:
            d["uc"] = self.uc
        if self.uv:
            d["uv"] = self.uv
        if self.us:
            d["us"] = _group_users(self.us)
        if self.ft:
            d["ft"] = self.ft
        if self.tk:
            d["tk"] = self.tk
        if self.tf:
            d["tf"] = self.tf
        if self.tl is not None:
            d["tl"] = self.tl
        if self.sv:
            d["sv"] = self.sv
        if self.at:
            d["at"] = self.at
        if self.al:
            d["al"] = self.al
        if self.pub is not None:
            d["pub"] = self.pub
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AccountState":
        get = d.get
        d0 = get("d0", 0)
        tk = get("tk", {})
        if tk and len(next(iter(tk.values()))) == 6:
            tk = _migrate_tickets(tk)
        us = get("us", {})
        if us and isinstance(next(iter(us.values())), str):  # grouped by day (stored before: as in memory)
            us = _ungroup_users(us)
        sv = get("sv", [])
        if isinstance(sv, dict):
            sv = _migrate_surveys(sv, d0)
        return cls(d0, get("wm", {}), get("fp", {}), get("uc", {}), get("uv", {}), us,
                   get("ft", {}), tk, sv, get("at", {}), get("pub"), get("al", {}), get("tf", []),
                   get("tl"), -1, d0)

    @classmethod
    def new(cls, now: float, cfg: StateConfig, events=()) -> "AccountState":
        """An empty state whose retained days end at the newest of ``events`` (the first batch) that is
        not in the future, else today."""
        today = day_of(now)
        newest = max((e.occurred_at for e in events if not is_future(e.occurred_at, now, cfg)), default=None)
        end = today if newest is None or newest // DAY >= today else int(newest // DAY)
        return cls(d0=end - cfg.retention_days + 1, lo=today - cfg.retention_days + 1)

    def newest_day(self, today: int) -> int:
        """The day of the newest event applied (today if none, or if it is ahead of today)."""
        wm = self.wm
        if not wm:
            return today
        d = int(max(wm.values()) // DAY)
        return d if d < today else today

    # ------------------------------------------------------------- retention
    def advance(self, today: int, cfg: StateConfig) -> bool:
        """Slide the retained days so the first one is ``newest event's day - retention + 1`` (never
        later than ``today - retention + 1``); drop what fell out. Returns True when something moved.
        The clock never moves ``d0`` back. Queries then count the days retained today (``lo``)."""
        self.lo = today - cfg.retention_days + 1
        if not self.wm:  # nothing applied yet: the retained days end where new() put them
            return False
        new_d0 = self.newest_day(today) - cfg.retention_days + 1
        shift = new_d0 - self.d0
        if shift <= 0:
            return False
        for series in (self.uc, self.uv):
            for name in list(series):
                arr = series[name][shift:]
                if any(arr):
                    series[name] = arr
                else:
                    del series[name]
        for m in (self.us, self.ft):
            for k in [k for k, d in m.items() if d < new_d0]:
                del m[k]
        if self.sv:
            self.sv = _strip(self.sv[shift:])
        dm = shift * MINUTES_PER_DAY
        q = ticket_episode_minutes(cfg)
        for tid in list(self.tk):
            t = self.tk[tid]
            t[T_LAST] -= dm
            if t[T_LAST] < 0 and not any(ep[T_ANCHOR] is not None and ep[T_ANCHOR] - dm + q >= 0
                                         for ep in t[T_EPISODE:]):
                del self.tk[tid]  # nothing of it retained, and no event that can still come belongs with it
                continue
            for ep in t[T_EPISODE:]:
                for i in (T_OPENED, T_FIRST, T_RESOLVED, T_BREACH):
                    if ep[i] is not None:
                        ep[i] = ep[i] - dm if ep[i] >= dm else None
                if ep[T_ANCHOR] is not None:  # kept below zero: it still decides where the episode ends
                    ep[T_ANCHOR] -= dm
        if self.tf:
            self.tf = _strip(self.tf[shift:])  # episodes opened before the first retained day never count again
        if self.tl is not None and self.tl < new_d0:
            self.tl = None
        if self.fp:
            dh = shift * 24
            # hours before the new d0 can only receive expired events: forget them
            self.fp = {h[0] + str(int(h[1:]) - dh): v for h, v in self.fp.items() if int(h[1:]) >= dh}
            self.fn = -1
        self.d0 = new_d0
        return True

    def prune_fingerprints(self, cfg: StateConfig) -> None:
        """Drop the fingerprints of hours wholly before ``wm - allowed_lateness``: any event
        of those hours is now rejected as late, so de-duplication stays exact. Cleared attributes
        (kept as null to win over older upserts) go too once older than that: any older upsert is late."""
        lateness = cfg.lateness_of
        account_wm = self.wm.get("account")
        if account_wm is not None and self.at:
            cutoff = account_wm - lateness["account"]
            for k in [k for k, v in self.at.items() if v[0] is None and v[1] < cutoff]:
                del self.at[k]
        if self.tk and "ticket" in self.wm:
            self._fold_tickets(cfg)
        if not self.wm or not self.fp:
            return
        start = self.d0 * DAY
        # kind initial -> the last hour wholly before the kind's cutoff: (h + 1) * HOUR <= cutoff
        self._drop_fingerprints({kind[0]: _last_hour_before(wm - lateness[kind] - start)
                                 for kind, wm in self.wm.items()})

    def _drop_fingerprints(self, last: dict[str, int]) -> None:
        """Forget the fingerprints of each kind's hours up to `last[kind initial]` (counted from d0)."""
        hours = _KEY_HOURS
        dead = None
        for h in self.fp:
            x = last.get(h[0])
            if x is not None:
                hour = hours.get(h)
                if hour is None:
                    hour = _key_hour(h)
                if hour <= x:
                    if dead is None:
                        dead = [h]
                    else:
                        dead.append(h)
        if dead is not None:
            for h in dead:
                del self.fp[h]
            self.fn = -1

    # ------------------------------------------------------------------ apply
    def apply(self, event, now: float, cfg: StateConfig) -> str:
        """Fold one event in; returns its outcome (applied, duplicate, late, expired, future, over_limit)."""
        ts = event.occurred_at
        kind = event.kind
        d0 = self.d0
        outside = classify_time(ts, kind, now, d0, cfg)
        if outside is not None:
            if outside == EXPIRED and kind == "ticket" and event.action == "resolved":
                self._expired_resolution(event, cfg)
            return outside
        wm = self.wm.get(kind)
        lateness = cfg.lateness_of[kind]
        if wm is not None and ts < wm - lateness:
            return LATE
        fpr = fingerprint(event.event_id)
        hkey = kind[0] + str(int(ts // HOUR) - d0 * 24)  # the hour counted from the start of day d0
        fp = self.fp
        seen = fp.get(hkey)
        if seen is not None:
            i = seen.find(fpr)
            while i >= 0:
                if i % FINGERPRINT_CHARS == 0:
                    return DUPLICATE
                i = seen.find(fpr, i + 1)
        # near a limit only, a closer look (len() is all the usual case costs)
        if kind == "usage":
            if (len(self.uc) >= _L_NAMES or len(self.us) >= _L_USERS or len(self.ft) >= _L_FEATURES) \
                    and self._over_limit(event) is not None:
                return OVER_LIMIT
        elif kind == "ticket":
            if len(self.tk) >= _L_TICKETS and self._over_limit(event) is not None:
                return OVER_LIMIT
        elif kind == "account" and len(self.at) + len(event.attributes) > _L_ATTRIBUTES \
                and self._over_limit(event) is not None:
            return OVER_LIMIT
        held = self.fn
        if held < 0:
            held = sum(map(len, fp.values())) // FINGERPRINT_CHARS
        if held >= _L_FINGERPRINTS:
            if wm is None or ts > wm:  # it moves its kind's watermark: the hours it makes late can go now
                self._drop_fingerprints({kind[0]: _last_hour_before(ts - lateness - d0 * DAY)})
                held = sum(map(len, fp.values())) // FINGERPRINT_CHARS
            if held >= _L_FINGERPRINTS:
                self.fn = held
                return OVER_LIMIT
        fp[hkey] = fpr if seen is None else seen + fpr
        self.fn = held + 1
        if wm is None or ts > wm:
            self.wm[kind] = ts
        day = int(ts // DAY)  # day_of(ts)
        if kind == "usage":
            self._usage(event, day - d0, day)
        elif kind == "ticket":
            self._ticket(event, cfg)
        elif kind == "survey":
            self._survey(event, day - d0)
        elif kind == "account":
            self._account(event, fpr)
        return APPLIED

    def _over_limit(self, e) -> str | None:
        """Which limit of STATE_LIMITS the event would exceed (it adds keys only below them), or None."""
        lim = STATE_LIMITS
        kind = e.kind
        if kind == "usage":
            if e.name not in self.uc and len(self.uc) >= lim.event_names:
                return f"usage event names: the account already has {lim.event_names} distinct names in its retained days"
            if e.user_id is not None and len(self.us) >= lim.users and fingerprint(e.user_id) not in self.us:
                return f"user ids: the account already has {lim.users} distinct users in its retained days"
            if e.feature is not None and len(self.ft) >= lim.features and e.feature not in self.ft:
                return f"features: the account already has {lim.features} distinct features in its retained days"
        elif kind == "ticket":
            if len(self.tk) >= lim.tickets and e.ticket_id not in self.tk:
                return (f"tickets: the account already has {lim.tickets} tickets open or resolved too recently to "
                        "be folded into its daily figures")
        elif kind == "account":
            at = self.at
            live = sum(1 for v in at.values() if v[0] is not None)
            new = sum(1 for k, v in e.attributes.items() if v is not None and (k not in at or at[k][0] is None))
            if live + new > lim.attributes:  # clearing one (null) is always allowed
                return f"attributes: the account would have {live + new} attributes, over the limit of {lim.attributes}"
        return None

    def limit_reason(self, e) -> str:
        """Why an event was refused as over_limit (for its dead letter)."""
        if sum(map(len, self.fp.values())) // FINGERPRINT_CHARS >= _L_FINGERPRINTS:
            return (f"de-duplication: the account already has {_L_FINGERPRINTS} events within the allowed lateness "
                    "(send aggregated events, e.g. a session rather than each click)")
        return self._over_limit(e) or "a state limit"

    def _usage(self, e: UsageEvent, i: int, day: int) -> None:
        name = e.name
        arr = self.uc.get(name)  # _add(self.uc, name, i, 1), inlined
        if arr is None:
            arr = self.uc[name] = [0] * (i + 1)
        elif i >= len(arr):
            arr.extend([0] * (i - len(arr) + 1))
        arr[i] += 1
        if e.value is not None:
            _add(self.uv, name, i, to_centi(e.value))
        if e.user_id is not None:
            u = fingerprint(e.user_id)
            if self.us.get(u, -1) < day:
                self.us[u] = day
        feature = e.feature
        if feature is not None and self.ft.get(feature, -1) < day:
            self.ft[feature] = day

    def _ticket(self, e: TicketEvent, cfg: StateConfig) -> None:
        rank = TICKET_RANK.get(e.action)
        if rank is None:
            return
        ts = minute_of(e.occurred_at) - self.d0 * MINUTES_PER_DAY
        t = self.tk.get(e.ticket_id)
        q = ticket_episode_minutes(cfg)
        if t is None:
            t = self.tk[e.ticket_id] = [ts, rank]
        else:
            if (ts, rank) > (t[T_LAST], t[T_RANK]):
                t[T_LAST], t[T_RANK] = ts, rank
            if len(t) > T_EPISODE and "ticket" in self.wm:
                self._fold_finished(t, self._fold_cutoff(cfg), q)
        breached = bool(e.sla_breached)
        if not breached and rank in (2, 4):  # a reopening or a closing sets no figure of an episode
            return
        if len(t) == T_EPISODE:
            t.append(_new_episode())
        ep = t[T_EPISODE]
        anchor = ep[T_ANCHOR]
        if anchor is not None and ts > anchor + q:  # after its episode's end: the next episode
            if len(t) == T_NEXT:
                t.append(_new_episode())
            ep = t[T_NEXT]
        _episode_add(ep, ts, rank, breached)

    def _expired_resolution(self, e: TicketEvent, cfg: StateConfig) -> None:
        """A resolution from before the retained days counts for nothing, but it still ends its episode a
        lateness window later: the events that can still come after it must be split where the batch twin
        splits them (a ticket whose last activity is before the retained days stays, as a stub that no
        query counts, for as long as its anchor can decide that). Not always exact: the episodes a ticket had
        before the retained days are forgotten once they can no longer reach an acceptable event, so a
        resolution arriving after the retained days passed it may start an episode where the batch twin,
        which knows them, would not (docs/health-model.md)."""
        ts = e.occurred_at
        wm = self.wm.get("ticket")
        if (wm is None or ts >= wm - cfg.lateness_of["ticket"]) and (
                e.ticket_id in self.tk
                or (len(self.tk) < _L_TICKETS  # a new stub stays within the tickets limit
                    and minute_of(ts) - self.d0 * MINUTES_PER_DAY + ticket_episode_minutes(cfg) >= 0)):
            self._ticket(e, cfg)

    # ------------------------------------------------------ ticket folding
    def _fold_cutoff(self, cfg: StateConfig) -> int:
        """The earliest minute (from d0) an event of the ticket kind can still be accepted at."""
        return minute_of(self.wm["ticket"] - cfg.lateness_of["ticket"]) - self.d0 * MINUTES_PER_DAY

    def _fold_tickets(self, cfg: StateConfig) -> None:
        """Fold every finished episode; forget the tickets left with no episode, a closed last action and
        no accepted event that could come before it (a later event of theirs starts afresh, the same)."""
        cutoff, q = self._fold_cutoff(cfg), ticket_episode_minutes(cfg)
        # _fold_finished folds as it checks: a ticket it empties may then be forgotten
        dead = [tid for tid, t in self.tk.items()
                if (len(t) == T_EPISODE or self._fold_finished(t, cutoff, q))
                and t[T_RANK] in CLOSED_RANKS and t[T_LAST] < cutoff]
        for tid in dead:
            last = self.tk.pop(tid)[T_LAST]
            if last >= 0:  # a stub's activity is not retained: it adds no recency
                day = self.d0 + last // MINUTES_PER_DAY
                if self.tl is None or day > self.tl:
                    self.tl = day

    def _fold_finished(self, t: list, cutoff: int, q: int) -> bool:
        """Fold the ticket's episodes that have ended before ``cutoff``; True when none is left."""
        while True:
            ep = t[T_EPISODE]
            anchor = ep[T_ANCHOR]
            if anchor is None or cutoff <= anchor + q:
                return False
            self._fold(ep)
            if len(t) > T_NEXT:
                t[T_EPISODE] = t.pop()
            else:
                t.pop()
                return True

    def _fold(self, ep: list) -> None:
        """Add a finished episode's figures to its opened day in ``tf`` (nothing if its opening is not retained)."""
        opened = ep[T_OPENED]
        if opened is None:
            return
        i = opened // MINUTES_PER_DAY
        tf = self.tf
        _grow(tf, i)
        f = tf[i]
        if not f:
            f = tf[i] = [0, 0, [], []]
        f[F_OPENED] += 1
        breach = ep[T_BREACH]
        if breach is not None:
            lag = breach // MINUTES_PER_DAY - i
            if lag >= 0:
                f[F_BREACHED] += 1
            else:
                if len(f) == F_EARLY:
                    f.append([])
                _add_lag(f[F_EARLY], lag, 1)
        for field_, slot in _F_LISTS.items():
            end = ep[field_]
            if end is not None:
                _add_lag(f[slot], end // MINUTES_PER_DAY - i, max(end - opened, 0), 1)

    def _survey(self, e: SurveyEvent, i: int) -> None:
        sv = self.sv
        _grow(sv, i)
        b = sv[i]
        if not b:
            b = sv[i] = [0, 0, 0, 0, 0]
        add_survey(b, e)

    def _account(self, e: AccountEvent, fpr: str) -> None:
        ts = e.occurred_at
        for k, v in e.attributes.items():
            cur = self.at.get(k)
            if cur is None or (ts, fpr) > (cur[1], cur[2]):
                self.at[k] = [v, ts, fpr]

    # ------------------------------------------------- measure primitives
    # (the MeasureSource protocol of streams.core.measures; callers advance() first or set ``lo``
    # to the first day retained on the day they evaluate; a window never reaches before it)
    def _since(self, lo: int | None) -> int:
        """A window's first day, never before the first day retained on the day evaluated (None: that day),
        nor before the first day held: after a clock gone back (another worker's, a few seconds behind, just
        after midnight) the day evaluated can retain days ``advance`` already dropped (it never moves d0 back)."""
        first = self.lo
        if first < self.d0:
            first = self.d0
        return first if lo is None or lo < first else lo

    def count(self, names, lo: int | None, hi: int | None = None) -> int:
        a = self._since(lo) - self.d0
        series = self.uc
        total = 0
        if hi is None:
            if names is None:
                for arr in series.values():
                    total += sum(arr[a:])
            else:
                for n in names:
                    arr = series.get(n)
                    if arr is not None:
                        total += sum(arr[a:])
            return total
        b = hi - self.d0
        if b < a:
            return 0
        for arr in (series.values() if names is None else [series[n] for n in names if n in series]):
            total += sum(arr[a:b])
        return total

    def value(self, names, lo: int | None, hi: int | None = None) -> tuple[int, int]:
        a = self._since(lo) - self.d0
        b = None if hi is None else max(hi - self.d0, a)
        uc, uv = self.uc, self.uv
        s = n = 0
        for name in (uc if names is None else names):
            arr = uc.get(name)
            if arr is not None:
                n += sum(arr[a:b])
                vals = uv.get(name)
                if vals is not None:
                    s += sum(vals[a:b])
        return s, n

    def users(self, lo: int | None) -> int:
        lo = self._since(lo)
        n = 0
        for d in self.us.values():
            if d >= lo:
                n += 1
        return n

    def features(self, lo: int | None) -> set[str]:
        lo = self._since(lo)
        return {f for f, d in self.ft.items() if d >= lo}

    def last_usage_day(self, names) -> int | None:
        # series are never empty and end on their last day with an event
        uc = self.uc
        longest = 0
        for arr in (uc.values() if names is None else [uc[n] for n in names if n in uc]):
            if len(arr) > longest:
                longest = len(arr)
        last = self.d0 + longest - 1
        return last if longest and last >= self.lo else None

    def last_kind_day(self, kind: str) -> int | None:
        if kind == "usage":
            return self.last_usage_day(None)
        if kind == "ticket":
            day = self.tl
            if self.tk:
                last = max(t[T_LAST] for t in self.tk.values())
                live = self.d0 + last // MINUTES_PER_DAY
                if day is None or live > day:
                    day = live
            return day if day is not None and day >= self.lo else None
        if kind == "survey":
            day = self.d0 + len(self.sv) - 1  # the list ends on its last day with an answer
            return day if self.sv and day >= self.lo else None
        return None

    def open_tickets(self) -> int:
        first = (self.lo - self.d0) * MINUTES_PER_DAY  # a ticket with no activity since is no longer retained
        n = 0
        for t in self.tk.values():
            if t[T_RANK] in OPEN_RANKS and t[T_LAST] >= first:
                n += 1
        return n

    def ticket_durations(self, lo: int | None, end_field: int) -> tuple[int, int]:
        """(sum of minutes from opened to first response / resolution, episodes) for the ticket
        episodes whose response / resolution happened on day >= lo (opened in the retained days)."""
        first_day = self.lo - self.d0
        first = first_day * MINUTES_PER_DAY
        lo_day = self._since(lo) - self.d0
        lo_ts = lo_day * MINUTES_PER_DAY
        total = n = 0
        for t in self.tk.values():
            for ep in t[T_EPISODE:]:
                end, start = ep[end_field], ep[T_OPENED]
                if end is not None and start is not None and end >= lo_ts and start >= first:
                    total += max(end - start, 0)
                    n += 1
        slot = _F_LISTS[end_field]
        tf = self.tf
        for i in range(max(first_day, 0), len(tf)):
            f = tf[i]
            if f:
                flat = f[slot]
                for j in range(0, len(flat), 3):
                    if i + flat[j] >= lo_day:
                        total += flat[j + 1]
                        n += flat[j + 2]
        return total, n

    def sla(self, lo: int | None) -> tuple[int, int]:
        first_day = self.lo - self.d0
        first = first_day * MINUTES_PER_DAY
        lo_day = self._since(lo) - self.d0
        lo_ts = lo_day * MINUTES_PER_DAY
        opened = breached = 0
        for t in self.tk.values():
            for ep in t[T_EPISODE:]:
                if ep[T_OPENED] is not None and ep[T_OPENED] >= lo_ts:
                    opened += 1
                    if ep[T_BREACH] is not None and ep[T_BREACH] >= first:
                        breached += 1
        tf = self.tf
        for i in range(max(lo_day, 0), len(tf)):
            f = tf[i]
            if f:
                opened += f[F_OPENED]
                breached += f[F_BREACHED]  # flagged on or after a day >= lo >= the first retained
                if len(f) > F_EARLY:
                    early = f[F_EARLY]
                    for j in range(0, len(early), 2):
                        if i + early[j] >= first_day:
                            breached += early[j + 1]
        return opened, breached

    def surveys(self, lo: int | None) -> list[int]:
        """[csat sum (thousandths), csat answers, promoters, passives, detractors] since day lo."""
        lo = self._since(lo)
        c0 = c1 = c2 = c3 = c4 = 0
        every = lo <= self.d0  # a window as long as the retained days (the usual case) takes every bucket
        for b in (self.sv if every else self.sv[lo - self.d0:]):
            if b:
                c0 += b[0]
                c1 += b[1]
                c2 += b[2]
                c3 += b[3]
                c4 += b[4]
        return [c0, c1, c2, c3, c4]

    def attributes(self) -> dict[str, Any]:
        return {k: v[0] for k, v in self.at.items() if v[0] is not None}

    def has_data(self, lo: int | None = None) -> bool:
        """Any usage, ticket or survey in the days retained on the day evaluated, or any attribute set."""
        if self.d0 >= self.lo:  # everything held is retained (the usual case)
            if self.uc or self.sv or self.tl is not None or any(t[T_LAST] >= 0 for t in self.tk.values()):
                return True
        elif (self.last_usage_day(None) is not None or self.last_kind_day("ticket") is not None
              or self.last_kind_day("survey") is not None):
            return True
        return any(v[0] is not None for v in self.at.values())


def _group_users(us: dict[str, int]) -> dict[str, str]:
    """user fingerprint -> day, stored as day -> the fingerprints concatenated (a key and a number less per user)."""
    groups: dict[int, list[str]] = {}  # joined once: appending to a string per user is quadratic in a day's users
    for u, day in us.items():
        g = groups.get(day)
        if g is None:
            groups[day] = [u]
        else:
            g.append(u)
    return {str(day): "".join(g) for day, g in groups.items()}


def _ungroup_users(groups: dict[str, str]) -> dict[str, int]:
    return {g[i:i + FINGERPRINT_CHARS]: int(day) for day, g in groups.items()
            for i in range(0, len(g), FINGERPRINT_CHARS)}


def _strip(dense: list) -> list:
    """A dense daily list without its trailing empty days (so it ends on its last day with data)."""
    n = len(dense)
    while n and not dense[n - 1]:
        n -= 1
    return dense if n == len(dense) else dense[:n]


def _migrate_surveys(sv: dict[str, list[int]], d0: int) -> list:
    """Survey buckets stored keyed by day before they were a dense list."""
    out: list = []
    for k, b in sv.items():
        i = int(k) - d0
        if i >= 0:
            if i >= len(out):
                out.extend([0] * (i - len(out) + 1))
            out[i] = b
    return _strip(out)


def _migrate_tickets(tk: dict[str, list]) -> dict[str, list]:
    """Tickets stored before episodes ([opened, first, resolved, last, rank, breach]): one episode each,
    anchored at the resolution held (the latest; the first is not known), so their figures are unchanged."""
    return {tid: [t[3], t[4], [t[0], t[1], t[2], t[5], t[2]]] for tid, t in tk.items()}
