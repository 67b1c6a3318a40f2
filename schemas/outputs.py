"""The output contract: score-update records (`health.scores`) and alerts (`health.alerts`).

Alerts use the CloudEvents 1.0 structured JSON format, so playbook engines and event routers
can route on `type` and de-duplicate on `id` (same cause -> same id). Dead letters carry the
raw input and the reason. Builders take plain values; the worker feeds them from the core.
"""
from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone
from typing import Any

SCORE_TYPE = "health.score.updated"
ALERT_TYPES = ("health.band.degraded", "health.band.recovered", "health.trend.declining",
               "health.component.threshold", "health.score.threshold", "health.score.fall")
CAUSES = ("events", "timer", "model")
CLOUDEVENTS_SOURCE = "urn:customer-health"


def iso(ts: float | None) -> str | None:
    """Epoch seconds -> ISO 8601 UTC with milliseconds and 'Z'."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def score_update(*, account_id: str, seq: int, score: dict, previous: dict | None, changes: list[dict],
                 cause: str, computed_at: float, event_time: float | None,
                 source_timestamp_ms: int | None, event_ids: list[str]) -> dict[str, Any]:
    """One record per changed score; `score` is the core's AccountScore.to_dict()."""
    return {
        "type": SCORE_TYPE,
        "account_id": account_id,
        "seq": seq,
        "score": score["score"],
        "band": score["band"],
        "status": score["status"],
        "previous_score": previous["score"] if previous else None,
        "previous_band": previous["band"] if previous else None,
        "segment": score["segment"],
        "coverage": score["coverage"],
        "components": score["components"],
        "changes": changes,
        "model_version": score["model_version"],
        "cause": cause,
        "computed_at": iso(computed_at),
        "computed_at_ms": int(computed_at * 1000),
        "event_time": iso(event_time),
        "source_timestamp_ms": source_timestamp_ms,
        "event_ids": event_ids,
    }


def alert_event(alert: dict) -> dict[str, Any]:
    """A CloudEvents structured-mode envelope around the core's Alert.to_dict()."""
    data = {k: v for k, v in alert.items() if k not in ("id", "type", "time")}
    data["occurred_at"] = iso(alert["time"])
    return {
        "specversion": "1.0",
        "id": alert["id"],
        "source": CLOUDEVENTS_SOURCE,
        "type": alert["type"],
        "subject": alert["account_id"],
        "time": iso(alert["time"]),
        "datacontenttype": "application/json",
        "data": data,
    }


DEAD_LETTER_RAW_BYTES = 8192  # of the input kept in a dead letter; the rest is known by its size and hash
DEAD_LETTER_KEY_CHARS = 256
DEAD_LETTER_REASON_CHARS = 1000


def dead_letter(*, topic: str, partition: int, offset: int, key: bytes | None, raw: bytes, reason: str,
                field: str | None, at: float) -> dict[str, Any]:
    """An input that could not be used: why, where it was, and its bytes (UTF-8 text, or base64 when
    not UTF-8). Bounded whatever the input, so the broker always accepts it: the first
    DEAD_LETTER_RAW_BYTES bytes are kept, with the whole input's size and SHA-256."""
    kept = raw[:DEAD_LETTER_RAW_BYTES]
    try:
        text, encoding = kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as err:
        if len(kept) < len(raw) and err.start >= len(kept) - 3 and err.reason == "unexpected end of data":
            kept = kept[:err.start]  # the cut fell inside a character
            text, encoding = kept.decode("utf-8"), "utf-8"
        else:
            text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    key_text = key.decode("utf-8", "replace") if key is not None else None
    if key_text is not None and len(key_text) > DEAD_LETTER_KEY_CHARS:
        key_text = key_text[:DEAD_LETTER_KEY_CHARS] + "..."
    if len(reason) > DEAD_LETTER_REASON_CHARS:
        reason = reason[:DEAD_LETTER_REASON_CHARS] + "..."
    return {"topic": topic, "partition": partition, "offset": offset, "key": key_text,
            "reason": reason, "field": field[:DEAD_LETTER_KEY_CHARS] if field else field,
            "raw": text, "raw_encoding": encoding, "raw_bytes": len(raw), "raw_truncated": len(kept) < len(raw),
            "raw_sha256": hashlib.sha256(raw).hexdigest(), "dead_lettered_at": iso(at)}


# ------------------------------------------------------------------ JSON Schemas
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}

_CHANGE = {
    "type": "object",
    "description": "A component whose contribution to the global score changed; the largest change first.",
    "required": ["component", "contribution_before", "contribution_after", "change"],
    "properties": {
        "component": {"type": "string"},
        "value_before": _NUM_OR_NULL, "value_after": _NUM_OR_NULL,
        "score_before": _NUM_OR_NULL, "score_after": _NUM_OR_NULL,
        "contribution_before": {"type": "number", "description": "points of the global score before"},
        "contribution_after": {"type": "number", "description": "points of the global score after"},
        "change": {"type": "number"},
    },
}

_COMPONENT = {
    "type": "object",
    "required": ["value", "score", "weight", "contribution"],
    "properties": {
        "value": {**_NUM_OR_NULL, "description": "the measure's value (null: no data)"},
        "score": {**_NUM_OR_NULL, "description": "0..100"},
        "band": {**_STR_OR_NULL, "description": "the component's bad/average/good band, when configured"},
        "weight": {"type": "number", "description": "effective normalised weight (0..1)"},
        "contribution": {"type": "number", "description": "points this component adds to the global score"},
    },
}


SCORE_STATUSES = ("scored", "insufficient_data", "no_data")
INSUFFICIENT_DATA = SCORE_STATUSES[1]


def band_label(score: float | None, band: str | None) -> str | None:
    """The band an account is counted in (read model sets, gauges): its band, or insufficient_data for a
    score without one; None (not counted) without a score."""
    return band if band is not None else INSUFFICIENT_DATA if score is not None else None


def score_update_schema() -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "score-update.schema.json",
        "title": "Score update",
        "description": "One record per changed account health score on the score topic (key: account_id).",
        "type": "object",
        "required": ["type", "account_id", "seq", "score", "band", "segment", "coverage", "components",
                     "changes", "model_version", "cause", "computed_at", "computed_at_ms"],
        "properties": {
            "type": {"const": SCORE_TYPE},
            "account_id": {"type": "string"},
            "seq": {"type": "integer", "minimum": 0,
                    "description": "per-account sequence; a reader keeps the highest"},
            "score": {**_NUM_OR_NULL, "minimum": 0, "maximum": 100, "description": "null: no data"},
            "band": {**_STR_OR_NULL, "description": "null: no data, or insufficient_data"},
            "status": {"enum": list(SCORE_STATUSES),
                       "description": "scored (a band); insufficient_data: a score whose data covers less of the "
                                      "model's weight than its min_coverage, so no band and no band alert; "
                                      "no_data. Absent in records written before it existed: scored when band "
                                      "is set"},
            "previous_score": _NUM_OR_NULL,
            "previous_band": _STR_OR_NULL,
            "segment": {"type": "string"},
            "coverage": {"type": "number", "minimum": 0, "maximum": 1},
            "components": {"type": "object", "additionalProperties": _COMPONENT},
            "changes": {"type": "array", "items": _CHANGE},
            "model_version": {"type": "string"},
            "cause": {"enum": list(CAUSES)},
            "computed_at": _TIME,
            "computed_at_ms": {"type": "integer"},
            "event_time": {**_STR_OR_NULL, "description": "occurred_at of the newest event applied"},
            "source_timestamp_ms": {"type": ["integer", "null"],
                                    "description": "Kafka timestamp of the newest input record"},
            "event_ids": {"type": "array", "items": {"type": "string"}},
        },
    }


def alert_schema() -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "alert.schema.json",
        "title": "Health alert (CloudEvents 1.0, structured JSON)",
        "description": "Band degraded/recovered, declining trend or component threshold (key: account_id). "
                       "The same cause gives the same id.",
        "type": "object",
        "required": ["specversion", "id", "source", "type", "subject", "time", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string"},
            "source": {"type": "string"},
            "type": {"enum": list(ALERT_TYPES)},
            "subject": {"type": "string", "description": "the account_id"},
            "time": _TIME,
            "datacontenttype": {"const": "application/json"},
            "data": {
                "type": "object",
                "required": ["account_id", "score_before", "score_after", "band_before", "band_after",
                             "model_version", "explanation", "event_ids"],
                "properties": {
                    "account_id": {"type": "string"},
                    "score_before": _NUM_OR_NULL, "score_after": _NUM_OR_NULL,
                    "band_before": _STR_OR_NULL, "band_after": _STR_OR_NULL,
                    "model_version": {"type": "string"},
                    "explanation": {
                        "type": "array", "items": _CHANGE, "minItems": 1,
                        "description": "Band alerts: the components whose contribution changed since the account's "
                                       "band was last alerted (score_before is that alert's score; the values and "
                                       "component scores before are not kept: null). Other alerts: since the "
                                       "previous evaluation. Never empty: with nothing changed, the components as "
                                       "they stand (before = after)."},
                    "event_ids": {"type": "array", "items": {"type": "string"}},
                    "occurred_at": _TIME,
                    "detail": {"type": "object"},
                },
            },
        },
    }


def dead_letter_schema() -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "dead-letter.schema.json",
        "title": "Dead letter",
        "description": "An input record the worker could not use, with the reason.",
        "type": "object",
        "required": ["topic", "partition", "offset", "reason", "raw", "raw_encoding", "raw_bytes", "raw_truncated",
                     "raw_sha256", "dead_lettered_at"],
        "properties": {
            "topic": {"type": "string"}, "partition": {"type": "integer"}, "offset": {"type": "integer"},
            "key": {**_STR_OR_NULL, "description": f"the record's key as text, cut after {DEAD_LETTER_KEY_CHARS} "
                    "characters"},
            "reason": {"type": "string", "description": f"what was expected and what came, at most "
                       f"{DEAD_LETTER_REASON_CHARS} characters"},
            "field": _STR_OR_NULL,
            "raw": {"type": "string", "description": f"the first {DEAD_LETTER_RAW_BYTES} bytes of the record's value"},
            "raw_encoding": {"enum": ["utf-8", "base64"]},
            "raw_bytes": {"type": "integer", "description": "size of the whole value"},
            "raw_truncated": {"type": "boolean"},
            "raw_sha256": {"type": "string", "description": "SHA-256 of the whole value, hex"},
            "dead_lettered_at": _TIME,
        },
    }


JSON_SCHEMAS = {
    "score-update.schema.json": score_update_schema,
    "alert.schema.json": alert_schema,
    "dead-letter.schema.json": dead_letter_schema,
}
