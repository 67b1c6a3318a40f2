"""The input-event contract: typed events, a strict fast decoder, and the encoder.

Producers write JSON objects to the input topics (``health.usage``, ``health.tickets``,
``health.surveys``, ``health.accounts``, key = ``account_id``). Every event carries
``event_id`` (for de-duplication), ``account_id`` and ``occurred_at`` (ISO 8601 *with*
a time zone), plus kind-specific fields; it may carry ``kind``, which must then agree
with the topic's kind.

Policy:

- Strict on what we read: ids are non-empty JSON strings (numbers are refused, so
  ``42`` and ``"42"`` can never be two spellings of one account); numbers are finite
  and never booleans; timestamps without a zone are refused (guessing a zone would
  shift windows silently); a key given twice in one object is refused (parsers
  disagree on which one wins).
- Bounded, so no record can grow an account's state or a dead letter without limit:
  strings and numbers have the documented limits of :data:`LIMITS`.
- Unknown extra fields are ignored, so producers can add fields before consumers
  know them (forward compatibility). Optional fields may be absent or ``null``.
- Every failure is an :class:`InvalidEvent` naming the JSON path of the bad field, so
  the agent can dead-letter the raw bytes with a reason a producer can act on.
- No clock here: "too far in the future" is the scoring core's call.

The decoder is hand-written per kind for speed (it runs per event); :data:`FIELDS`
is the declarative description that ``schemas.generate`` turns into JSON Schema, and
``tests/test_event_schemas.py`` proves the two agree.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import ClassVar, NamedTuple

import orjson

__all__ = [
    "LIMITS", "EVENT_KINDS", "TICKET_ACTIONS", "SURVEY_TYPES", "SURVEY_SCALES", "FIELDS", "FieldSpec",
    "UsageEvent", "TicketEvent", "SurveyEvent", "AccountEvent", "Event", "EVENT_CLASSES",
    "InvalidEvent", "decode_event", "event_from_dict", "event_to_dict", "encode_event",
]

EVENT_KINDS = ("usage", "ticket", "survey", "account")
TICKET_ACTIONS = ("opened", "first_response", "resolved", "reopened", "closed")
SURVEY_TYPES = ("csat", "nps")
# survey type -> (bottom, default top) of its scale. CSAT's top may be raised by
# `scale` (1..scale); NPS is always 0..10 by definition.
SURVEY_SCALES = {"csat": (1.0, 5.0), "nps": (0.0, 10.0)}


@dataclass(frozen=True)
class Limits:
    """What one event may carry (documented in the README's contract). Each string is kept in an
    account's state or in an output record, so each has a length limit; numbers have a range that
    keeps every fixed-point sum and every stored value within 64-bit integers."""

    id_chars: int = 128  # event_id, account_id, user_id, ticket_id, respondent_id
    name_chars: int = 100  # usage event name, feature, ticket priority, attribute names
    text_chars: int = 500  # a string attribute value
    max_value: float = 1e9  # |usage value| (hundredths are kept: 1e11 per event at most)
    max_attribute_number: float = 1e15  # |numeric attribute value|
    max_csat_scale: float = 100.0  # top of a CSAT scale
    attributes: int = 100  # attributes in one account event


LIMITS = Limits()


# ---------------------------------------------------------------- the events

@dataclass(frozen=True, slots=True)
class UsageEvent:
    event_id: str
    account_id: str
    occurred_at: float  # epoch seconds, UTC
    name: str  # login, feature_used, session, ... any non-empty name
    user_id: str | None = None
    feature: str | None = None
    value: float | None = None  # finite; e.g. minutes spent
    kind: ClassVar[str] = "usage"


@dataclass(frozen=True, slots=True)
class TicketEvent:
    event_id: str
    account_id: str
    occurred_at: float
    ticket_id: str
    action: str  # one of TICKET_ACTIONS
    priority: str | None = None
    sla_breached: bool | None = None
    kind: ClassVar[str] = "ticket"


@dataclass(frozen=True, slots=True)
class SurveyEvent:
    event_id: str
    account_id: str
    occurred_at: float
    survey: str  # one of SURVEY_TYPES
    score: float  # within the scale
    scale: float | None = None  # top of the scale; None -> the survey type's default
    respondent_id: str | None = None
    kind: ClassVar[str] = "survey"

    @property
    def scale_range(self) -> tuple[float, float]:
        """(bottom, top) of this answer's scale, with the default filled in."""
        bottom, top = SURVEY_SCALES[self.survey]
        return bottom, top if self.scale is None else self.scale


@dataclass(frozen=True, slots=True)
class AccountEvent:
    event_id: str
    account_id: str
    occurred_at: float
    attributes: dict  # name -> str | int | float | bool | None (upsert; None clears)
    kind: ClassVar[str] = "account"


Event = UsageEvent | TicketEvent | SurveyEvent | AccountEvent
EVENT_CLASSES = {cls.kind: cls for cls in (UsageEvent, TicketEvent, SurveyEvent, AccountEvent)}


class InvalidEvent(ValueError):
    """An event that breaks the contract.

    ``field``: JSON path of the offending field ('occurred_at', 'attributes.seats'),
    or '' for the whole message; ``expected``: what the contract wants there;
    ``reason``: one line naming the field, fit for a dead-letter record.
    """

    def __init__(self, field: str, expected: str, reason: str):
        super().__init__(reason)
        self.field = field
        self.expected = expected
        self.reason = reason

    def __reduce__(self):  # keep it picklable despite the 3-argument constructor
        return type(self), (self.field, self.expected, self.reason)


# ------------------------------------------------ the declarative description

class FieldSpec(NamedTuple):
    name: str
    type: str  # id | string | timestamp | number | boolean | enum | attributes
    required: bool
    description: str
    enum: tuple[str, ...] | None = None
    bound: float | None = None  # numbers: |x| <= bound


_COMMON = (
    FieldSpec("event_id", "id", True,
              "Unique id of the event, used for de-duplication (redelivery is normal)."),
    FieldSpec("account_id", "id", True,
              "The customer account; also the Kafka message key."),
    FieldSpec("occurred_at", "timestamp", True,
              "When it happened: ISO 8601 / RFC 3339 with a time zone ('Z' or +hh:mm)."),
)

FIELDS: dict[str, tuple[FieldSpec, ...]] = {
    "usage": _COMMON + (
        FieldSpec("name", "string", True, "What happened: login, feature_used, session, ..."),
        FieldSpec("user_id", "id", False, "The user who acted, for distinct-active-user measures."),
        FieldSpec("feature", "string", False, "The feature used, for adoption measures."),
        FieldSpec("value", "number", False, "A finite amount, e.g. minutes spent.", bound=LIMITS.max_value),
    ),
    "ticket": _COMMON + (
        FieldSpec("ticket_id", "id", True, "The support ticket this lifecycle step belongs to."),
        FieldSpec("action", "enum", True, "The lifecycle step.", TICKET_ACTIONS),
        FieldSpec("priority", "string", False, "The ticket's priority as the PSA names it."),
        FieldSpec("sla_breached", "boolean", False, "Whether the ticket breached its SLA."),
    ),
    "survey": _COMMON + (
        FieldSpec("survey", "enum", True, "The survey type.", SURVEY_TYPES),
        FieldSpec("score", "number", True,
                  "The answer: csat within 1..scale (default 5), nps within 0..10."),
        FieldSpec("scale", "number", False,
                  "Top of the scale: csat 1..scale (> 1, default 5); nps must be 10 or absent."),
        FieldSpec("respondent_id", "id", False, "Who answered."),
    ),
    "account": _COMMON + (
        FieldSpec("attributes", "attributes", True,
                  "Upsert of account attributes (CRM): name -> string, finite number, "
                  "boolean, or null to clear. Non-empty; no nested objects or arrays.",
                  bound=LIMITS.max_attribute_number),
    ),
}


# ------------------------------------------------------------------ decoding

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_fromiso = datetime.fromisoformat
_isfinite = math.isfinite
_UTC = timezone.utc
# Bounds that keep every decoded timestamp encodable (years 1..9999 in UTC).
_MIN_TS = datetime(1, 1, 1, tzinfo=_UTC).timestamp()
_MAX_TS = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=_UTC).timestamp()
_ACTIONS = frozenset(TICKET_ACTIONS)

_ID = (f"a non-empty string of at most {LIMITS.id_chars} characters "
       "(ids must be JSON strings, numbers are not accepted)")
_STR = f"a non-empty string of at most {LIMITS.name_chars} characters"
_MAX_ID = LIMITS.id_chars
_MAX_NAME = LIMITS.name_chars
_NUM = "a finite number (not a boolean)"
_TS = "an ISO 8601 timestamp with a time zone"
_KINDS = "one of " + ", ".join(EVENT_KINDS)


def _show(v) -> str:
    """A short JSON-flavoured rendering of a bad value for the reason text."""
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, str) and len(v) > 80:
        return f"a string of {len(v)} characters"
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _invalid(field: str, expected: str, got: str) -> InvalidEvent:
    return InvalidEvent(field, expected, f"{field or 'message'}: expected {expected}, got {got}")


def _bad(d: dict, name: str, expected: str) -> InvalidEvent:
    # Only on the error path: tell "missing" apart from "present but wrong".
    got = _show(d[name]) if name in d else "nothing (the field is missing)"
    return _invalid(name, expected, got)


def _req_str(d: dict, name: str, expected: str = _STR, limit: int = _MAX_NAME) -> str:
    v = d.get(name)
    if isinstance(v, str) and v and len(v) <= limit:
        return v
    raise _bad(d, name, expected)


def _opt_str(d: dict, name: str, expected: str = _STR, limit: int = _MAX_NAME) -> str | None:
    v = d.get(name)
    if v is None or (isinstance(v, str) and v and len(v) <= limit):
        return v
    raise _bad(d, name, expected)


def _num(v):
    """float(v) for a finite non-bool number, else None."""
    if type(v) is float:  # the common case from orjson; inf/nan fail x - x == 0
        return v if v - v == 0.0 else None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        try:
            f = float(v)
        except OverflowError:  # a huge int from event_from_dict
            return None
        if _isfinite(f):
            return f
    return None


def _req_num(d: dict, name: str) -> float:
    f = _num(d.get(name))
    if f is None:
        raise _bad(d, name, _NUM)
    return f


def _opt_num(d: dict, name: str, bound: float, expected: str) -> float | None:
    v = d.get(name)
    if v is None:
        return None
    f = _num(v)
    if f is None or not -bound <= f <= bound:
        raise _bad(d, name, expected)
    return f


_VALUE = f"a finite number between -{LIMITS.max_value:g} and {LIMITS.max_value:g} (not a boolean)"


def _timestamp(d: dict) -> float:
    v = d.get("occurred_at")
    if isinstance(v, str):
        try:
            dt = _fromiso(v)
        except ValueError:
            try:  # RFC 3339 allows lower-case 't'/'z'; only costs on this rare path
                dt = _fromiso(v.upper())
            except ValueError:
                dt = None
        if dt is not None and dt.tzinfo is not None:
            ts = dt.timestamp()
            if _MIN_TS <= ts <= _MAX_TS:
                return ts
    raise _bad(d, "occurred_at", _TS)


def _usage(d: dict) -> UsageEvent:
    return UsageEvent(
        _req_str(d, "event_id", _ID, _MAX_ID), _req_str(d, "account_id", _ID, _MAX_ID), _timestamp(d),
        _req_str(d, "name"), _opt_str(d, "user_id", _ID, _MAX_ID), _opt_str(d, "feature"),
        _opt_num(d, "value", LIMITS.max_value, _VALUE),
    )


def _ids(d: dict) -> tuple[str, str, float]:
    return _req_str(d, "event_id", _ID, _MAX_ID), _req_str(d, "account_id", _ID, _MAX_ID), _timestamp(d)


_SCALE = f"a number greater than 1 and at most {LIMITS.max_csat_scale:g} (csat answers lie in 1..scale)"


def _ticket(d: dict) -> TicketEvent:
    event_id, account_id, ts = _ids(d)
    ticket_id = _req_str(d, "ticket_id", _ID, _MAX_ID)
    action = d.get("action")
    if not (isinstance(action, str) and action in _ACTIONS):
        raise _bad(d, "action", "one of " + ", ".join(TICKET_ACTIONS))
    breached = d.get("sla_breached")
    if not (breached is None or breached is True or breached is False):
        raise _bad(d, "sla_breached", "a boolean")
    return TicketEvent(event_id, account_id, ts, ticket_id, action, _opt_str(d, "priority"), breached)


def _survey(d: dict) -> SurveyEvent:
    event_id, account_id, ts = _ids(d)
    survey = d.get("survey")
    if not (isinstance(survey, str) and survey in SURVEY_SCALES):
        raise _bad(d, "survey", "one of " + ", ".join(SURVEY_TYPES))
    score, scale = _req_num(d, "score"), _opt_num(d, "scale", LIMITS.max_csat_scale, _SCALE)
    bottom, top = SURVEY_SCALES[survey]
    if scale is not None:
        if survey == "nps" and scale != top:
            raise _bad(d, "scale", "10 or null (NPS is always 0..10)")
        if scale <= bottom:
            raise _bad(d, "scale", _SCALE)
        top = scale
    if not bottom <= score <= top:
        raise _bad(d, "score", f"a number between {bottom:g} and {top:g} (the {survey} scale)")
    return SurveyEvent(event_id, account_id, ts, survey, score, scale,
                       _opt_str(d, "respondent_id", _ID, _MAX_ID))


def _account(d: dict) -> AccountEvent:
    event_id, account_id, ts = _ids(d)
    attrs = d.get("attributes")
    if not (isinstance(attrs, dict) and attrs):
        raise _bad(d, "attributes", "a non-empty object of attribute name -> scalar")
    if len(attrs) > LIMITS.attributes:
        raise _invalid("attributes", f"at most {LIMITS.attributes} attributes in one event", f"{len(attrs)}")
    for key, v in attrs.items():
        if not (isinstance(key, str) and key and len(key) <= _MAX_NAME):  # dicts from callers may not be JSON
            raise _invalid("attributes", f"attribute names of 1 to {_MAX_NAME} characters", _show(key))
        if v is None or v is True or v is False:
            continue
        if isinstance(v, str):
            if len(v) <= LIMITS.text_chars:
                continue
        elif isinstance(v, (int, float)):
            # bounds first: isfinite() of an int too large for a float raises OverflowError
            if -LIMITS.max_attribute_number <= v <= LIMITS.max_attribute_number and _isfinite(v):
                continue
        raise _invalid(f"attributes.{_show_key(key)}", _ATTRIBUTE, _show(v))
    # A copy: the event is frozen, callers of event_from_dict keep their dict.
    return AccountEvent(event_id, account_id, ts, dict(attrs))


_ATTRIBUTE = (f"a string of at most {LIMITS.text_chars} characters, a finite number between "
              f"-{LIMITS.max_attribute_number:g} and {LIMITS.max_attribute_number:g}, a boolean or null "
              "(no nested values)")


def _show_key(key: str) -> str:
    """An attribute name inside a field path, with control characters escaped (reasons reach logs)."""
    return key if key.isprintable() else repr(key)[1:-1]


_DECODERS = {"usage": _usage, "ticket": _ticket, "survey": _survey, "account": _account}


def event_from_dict(data: dict, kind: str | None = None) -> Event:
    """Validate an already-parsed JSON object. ``kind`` is the topic's kind, if known."""
    if not isinstance(data, dict):
        raise _invalid("", "a JSON object", _show(data))
    k = data.get("kind")
    if k is None:
        k = kind
        if k is None:
            raise _invalid("kind", _KINDS, "nothing (no kind in the event and none given by the topic)")
    elif kind is not None and k != kind:
        raise _invalid("kind", f"{kind!r} (the topic's kind)", _show(k))
    decoder = _DECODERS.get(k) if isinstance(k, str) else None
    if decoder is None:
        raise _invalid("kind", _KINDS, _show(k))
    return decoder(data)


def decode_event(raw: bytes | str, kind: str | None = None, *, max_bytes: int = 65536) -> Event:
    """Decode one message value (bytes from Kafka) into an event, or raise InvalidEvent."""
    if isinstance(raw, str):
        try:
            raw = raw.encode()
        except UnicodeEncodeError:  # lone surrogates
            raise _invalid("", "UTF-8 JSON", "text that cannot be encoded as UTF-8") from None
    if len(raw) > max_bytes:
        raise _invalid("", f"a message of at most {max_bytes} bytes", f"{len(raw)} bytes")
    try:
        data = _loads(raw)
    except _JSONDecodeError as exc:
        try:  # classify only on the error path
            bytes(raw).decode()
        except UnicodeDecodeError as u:
            raise _invalid("", "UTF-8 JSON", f"bytes that are not UTF-8 ({u.reason} at byte {u.start})") from None
        raise _invalid("", "a JSON object", f"text that is not JSON ({exc})") from None
    if type(data) is not dict:
        got = _show(data)
        if not isinstance(data, list) and data is not None:
            got = ("a boolean " if isinstance(data, bool) else "a string " if isinstance(data, str)
                   else "a number ") + got
        raise _invalid("", "a JSON object", got)
    _refuse_duplicate_keys(raw, data)
    return event_from_dict(data, kind)


def _refuse_duplicate_keys(raw: bytes, data: dict) -> None:
    """orjson keeps the last of two equal keys; other parsers keep the first. Every key of the text
    ends in '"', optional whitespace and ':'. Without whitespace, the text has at least as many '":'
    as key occurrences; when that is no more than the parsed objects' keys, no key came twice
    (about 0.4 us). Otherwise (strings containing '":', nested objects) an exact, slower check decides."""
    keys = len(data)
    attrs = data.get("attributes")
    if type(attrs) is dict:
        keys += len(attrs)
    if raw.translate(None, b" \t\r\n").count(b'":') <= keys:
        return
    try:
        json.loads(raw, object_pairs_hook=_unique_pairs)
    except _DuplicateKey as dup:
        raise _invalid(dup.path, "each key at most once in an object", f"the key {_show(dup.key)} twice") from None
    except RecursionError:  # deeper than the exact check can go: the keys cannot be vouched for
        raise _invalid("", "JSON nested less deeply (the duplicate-key check gives up at about 900 levels)",
                       "deeper nesting") from None
    except ValueError:  # orjson accepted it; nothing more to say
        pass


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key, self.path = key, _show_key(key)


def _unique_pairs(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateKey(k)
            seen.add(k)
    return d


# ------------------------------------------------------------------ encoding

def _iso(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, _UTC)
    # Milliseconds when exact (the common producer precision), else microseconds, so
    # decode(encode(e)) == e for microsecond timestamps.
    spec = "milliseconds" if dt.microsecond % 1000 == 0 else "microseconds"
    return dt.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def event_to_dict(event: Event) -> dict:
    """The JSON form: ``kind`` first, ``occurred_at`` as ISO 8601 UTC ('Z'), absent optionals omitted."""
    d = {"kind": event.kind}
    for name in _FIELD_NAMES[event.kind]:
        v = getattr(event, name)
        if v is not None:
            d[name] = v
    d["occurred_at"] = _iso(event.occurred_at)
    if event.kind == "account":
        d["attributes"] = dict(event.attributes)
    return d


def encode_event(event: Event) -> bytes:
    return orjson.dumps(event_to_dict(event))


_FIELD_NAMES = {kind: tuple(f.name for f in specs) for kind, specs in FIELDS.items()}
