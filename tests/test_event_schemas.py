"""The input-event contract: decoder, encoder, and the generated JSON Schema files agree."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import generate
from schemas.events import (
    EVENT_CLASSES, EVENT_KINDS, FIELDS, LIMITS, SURVEY_TYPES, TICKET_ACTIONS, AccountEvent,
    InvalidEvent, SurveyEvent, TicketEvent, UsageEvent, decode_event, encode_event,
    event_from_dict, event_to_dict,
)

T0 = "2024-05-01T10:00:00.123Z"
TS0 = datetime(2024, 5, 1, 10, 0, 0, 123000, tzinfo=timezone.utc).timestamp()

# One valid payload per kind with every field present, and the event it must decode to.
VALID = {
    "usage": ({"event_id": "e-1", "account_id": "acme", "occurred_at": T0, "name": "feature_used",
               "user_id": "u-7", "feature": "reports", "value": 12.5},
              UsageEvent("e-1", "acme", TS0, "feature_used", "u-7", "reports", 12.5)),
    "ticket": ({"event_id": "e-2", "account_id": "acme", "occurred_at": T0, "ticket_id": "T-9",
                "action": "first_response", "priority": "high", "sla_breached": False},
               TicketEvent("e-2", "acme", TS0, "T-9", "first_response", "high", False)),
    "survey": ({"event_id": "e-3", "account_id": "acme", "occurred_at": T0, "survey": "csat",
                "score": 4, "scale": 5, "respondent_id": "u-7"},
               SurveyEvent("e-3", "acme", TS0, "csat", 4.0, 5.0, "u-7")),
    "account": ({"event_id": "e-4", "account_id": "acme", "occurred_at": T0,
                 "attributes": {"seats": 40, "plan": "pro", "uptime": 99.95, "churned": False,
                                "csm_rating": None}},
                AccountEvent("e-4", "acme", TS0, {"seats": 40, "plan": "pro", "uptime": 99.95,
                                                  "churned": False, "csm_rating": None})),
}


def payload(kind: str, /, **changes) -> dict:  # positional-only: "kind" may be a change
    d = dict(VALID[kind][0])
    d.update(changes)
    return d


def raw(kind: str, /, drop: str | None = None, **changes) -> bytes:
    d = payload(kind, **changes)
    d.pop(drop, None)
    return orjson.dumps(d)


def invalid(data, kind=None, **kw) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        if isinstance(data, (bytes, str)):
            decode_event(data, kind, **kw)
        else:
            event_from_dict(data, kind)
    return info.value


# ------------------------------------------------------------------ schema files

def test_schema_files_are_in_sync_with_the_generator():
    stale = generate.check()
    assert not stale, f"JSON Schema files out of date: {stale}; run `python -m schemas.generate`"


def test_generator_writes_deterministic_files_and_check_sees_changes(tmp_path):
    assert set(generate.check(tmp_path)) == set(generate.all_schemas())  # every registered file is missing
    assert generate.main(["--dir", str(tmp_path)]) == 0
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert generate.check(tmp_path) == [] and generate.main(["--check", "--dir", str(tmp_path)]) == 0
    assert generate.main(["--dir", str(tmp_path)]) == 0
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == first
    for text in first.values():
        assert text.endswith(b"}\n") and b'\n  "$schema"' in text  # 2-space indent, sorted keys
    (tmp_path / "usage-event.schema.json").write_text("{}\n")
    assert generate.check(tmp_path) == ["usage-event.schema.json"]


def test_more_record_types_register_the_same_way(tmp_path, monkeypatch):
    monkeypatch.setattr(generate, "SCHEMAS", dict(generate.SCHEMAS))
    generate.register_schema("example-record.schema.json", lambda: {"$schema": generate.DIALECT, "type": "object"})
    assert "example-record.schema.json" in generate.check(tmp_path)
    generate.main(["--dir", str(tmp_path)])
    assert json.loads((tmp_path / "example-record.schema.json").read_text())["type"] == "object"
    with pytest.raises(ValueError, match="registered twice"):
        generate.register_schema("example-record.schema.json", {})


def load_schema(kind: str) -> dict:
    return json.loads((generate.SCHEMA_DIR / f"{kind}-event.schema.json").read_text())


# ------------------------------------------------------------------ valid events

@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_valid_examples_decode_to_the_right_dataclass(kind):
    data, expected = VALID[kind]
    event = decode_event(orjson.dumps(data), kind)
    assert type(event) is EVENT_CLASSES[kind] and event == expected and event.kind == kind
    # the payload's own kind is enough without a topic kind; str input works too
    assert decode_event(json.dumps({**data, "kind": kind})) == expected
    assert event_from_dict({**data, "kind": kind}, kind) == expected


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_round_trip(kind):
    event = VALID[kind][1]
    d = event_to_dict(event)
    assert d["kind"] == kind and d["occurred_at"] == T0
    assert decode_event(encode_event(event)) == event
    assert orjson.loads(encode_event(event)) == d


def test_optional_fields_may_be_absent_or_null_and_extra_fields_are_ignored():
    minimal = {"event_id": "e", "account_id": "a", "occurred_at": T0, "name": "login"}
    expected = UsageEvent("e", "a", TS0, "login")
    assert event_from_dict(minimal, "usage") == expected
    assert event_from_dict({**minimal, "user_id": None, "value": None, "new_field": [1]}, "usage") == expected
    assert "user_id" not in event_to_dict(expected)  # absent optionals are omitted


def test_timestamps_with_any_zone_become_utc_epoch_seconds():
    at = lambda s: event_from_dict(payload("usage", occurred_at=s), "usage").occurred_at
    assert at("2024-05-01T12:00:00.123+02:00") == at("2024-05-01t10:00:00.123z") == TS0
    assert event_to_dict(UsageEvent("e", "a", TS0 + 0.000456, "x"))["occurred_at"] == "2024-05-01T10:00:00.123456Z"


def test_survey_scales():
    ok = lambda **kw: event_from_dict(payload("survey", **kw), "survey")
    assert ok(score=7, scale=10).scale_range == (1.0, 10.0)
    assert ok(survey="nps", score=0, scale=None).scale_range == (0.0, 10.0)
    assert ok(survey="nps", score=10, scale=10).score == 10.0
    assert ok(scale=None, score=5).scale_range == (1.0, 5.0)


def test_event_from_dict_copies_attributes_and_values_become_floats():
    attrs = {"seats": 3}
    event = event_from_dict(payload("account", attributes=attrs), "account")
    attrs["seats"] = 4
    assert event.attributes == {"seats": 3}
    assert type(event_from_dict(payload("usage", value=3), "usage").value) is float


def test_invalid_event_pickles_and_is_a_value_error():
    exc = invalid(raw("usage", account_id=42), "usage")
    assert isinstance(exc, ValueError) and str(exc) == exc.reason
    again = pickle.loads(pickle.dumps(exc))
    assert (again.field, again.expected, again.reason) == (exc.field, exc.expected, exc.reason)


# ------------------------------------------------------------------ invalid events

NESTED = {"seats": {"count": 3}}
BAD = [
    # id, raw message or dict, topic kind, expected .field, text the reason must contain
    ("not-json", b"hello", None, "", "not JSON"),
    ("not-utf8", b'{"event_id": "\xff"}', "usage", "", "not UTF-8"),
    ("json-array", b"[1, 2]", "usage", "", "an array"),
    ("json-string", b'"usage"', "usage", "", "a string"),
    ("nan-literal", raw("usage")[:-1] + b',"value":NaN}', "usage", "", "not JSON"),
    ("oversized", b'{"pad":"' + b"x" * 70_000 + b'"}', "usage", "", "at most 65536 bytes"),
    ("missing-event_id", raw("usage", drop="event_id"), "usage", "event_id", "missing"),
    ("empty-event_id", raw("usage", event_id=""), "usage", "event_id", "''"),
    ("account_id-int", raw("usage", account_id=42), "usage", "account_id", "numbers are not accepted"),
    ("user_id-int", raw("usage", user_id=7), "usage", "user_id", "got 7"),
    ("occurred_at-naive", raw("usage", occurred_at="2024-01-01T00:00:00"), "usage", "occurred_at",
     "expected an ISO 8601 timestamp with a time zone, got '2024-01-01T00:00:00'"),
    ("occurred_at-garbage", raw("usage", occurred_at="yesterday"), "usage", "occurred_at", "'yesterday'"),
    ("occurred_at-epoch", raw("usage", occurred_at=1714557600), "usage", "occurred_at", "got 1714557600"),
    ("value-str", raw("usage", value="abc"), "usage", "value", "finite number"),
    ("value-bool", raw("usage", value=True), "usage", "value", "got true"),
    ("value-nan-dict", payload("usage", value=float("nan")), "usage", "value", "finite number"),
    ("value-inf-dict", payload("usage", value=float("inf")), "usage", "value", "finite number"),
    ("name-empty", raw("usage", name=""), "usage", "name", "non-empty string"),
    ("no-kind", raw("usage"), None, "kind", "one of usage, ticket, survey, account"),
    ("unknown-kind", raw("usage", kind="foo"), None, "kind",
     "kind: expected one of usage, ticket, survey, account, got 'foo'"),
    ("unknown-topic-kind", raw("usage"), "foo", "kind", "got 'foo'"),
    ("kind-mismatch", raw("usage", kind="ticket"), "usage", "kind", "'usage' (the topic's kind), got 'ticket'"),
    ("kind-not-str", raw("usage", kind=["usage"]), None, "kind", "an array"),
    ("ticket-action", raw("ticket", action="escalated"), "ticket", "action", "one of opened, first_response"),
    ("ticket-sla-str", raw("ticket", sla_breached="yes"), "ticket", "sla_breached", "a boolean"),
    ("csat-7-default-scale", raw("survey", score=7, scale=None), "survey", "score", "between 1 and 5"),
    ("csat-0", raw("survey", score=0), "survey", "score", "between 1 and 5"),
    ("csat-scale-1", raw("survey", scale=1), "survey", "scale", "greater than 1"),
    ("nps-scale-5", raw("survey", survey="nps", score=3, scale=5), "survey", "scale", "NPS is always 0..10"),
    ("nps-11", raw("survey", survey="nps", score=11, scale=None), "survey", "score", "between 0 and 10"),
    ("survey-type", raw("survey", survey="ces"), "survey", "survey", "one of csat, nps"),
    ("attributes-empty", raw("account", attributes={}), "account", "attributes", "non-empty object"),
    ("attributes-list", raw("account", attributes=[1]), "account", "attributes", "an array"),
    ("attributes-nested", raw("account", attributes=NESTED), "account", "attributes.seats", "an object"),
    ("attributes-array-value", raw("account", attributes={"tags": ["a"]}), "account", "attributes.tags", "array"),
    ("attributes-inf-dict", payload("account", attributes={"x": float("inf")}), "account", "attributes.x", "inf"),
    ("attributes-empty-name", raw("account", attributes={"": 1}), "account", "attributes", "got ''"),
    ("attributes-int-name-dict", payload("account", attributes={1: "x"}), "account", "attributes", "got 1"),
    ("not-a-dict", ["a"], "usage", "", "an array"),
    # the limits: nothing a producer sends may grow state or outputs without bound, or overflow
    ("value-1e308", raw("usage", value=1e308), "usage", "value", "between -1e+09 and 1e+09"),
    ("value-1e18", raw("usage", value=1e18), "usage", "value", "got 1e+18"),
    ("value-huge-int", raw("usage", value=10**19), "usage", "value", "finite number"),
    ("account_id-long", raw("usage", account_id="a" * 129), "usage", "account_id", "a string of 129 characters"),
    ("event_id-long", raw("usage", event_id="e" * 1000), "usage", "event_id", "at most 128 characters"),
    ("name-long", raw("usage", name="n" * 101), "usage", "name", "at most 100 characters"),
    ("feature-long", raw("usage", feature="f" * 101), "usage", "feature", "at most 100"),
    ("ticket_id-long", raw("ticket", ticket_id="t" * 129), "ticket", "ticket_id", "at most 128"),
    ("csat-scale-huge", raw("survey", scale=1e300, score=3), "survey", "scale", "at most 100"),
    ("attributes-too-many", raw("account", attributes={f"a{i}": i for i in range(101)}), "account", "attributes",
     "at most 100 attributes"),
    ("attributes-long-name", raw("account", attributes={"n" * 101: 1}), "account", "attributes", "1 to 100"),
    ("attributes-long-text", raw("account", attributes={"plan": "p" * 501}), "account", "attributes.plan",
     "a string of 501 characters"),
    ("attributes-1e18", raw("account", attributes={"seats": 10**18}), "account", "attributes.seats", "1e+15"),
    # beyond a float's range: float() of it raises OverflowError (a CSV cell of 400 digits)
    ("attributes-huge-int-dict", payload("account", attributes={"seats": 10**400}), "account", "attributes.seats",
     "1e+15"),
    ("attributes-control-name", raw("account", attributes={"a\nb": {}}), "account", "attributes.a\\nb",
     "an object"),
    # a key given twice: orjson would keep the last silently, other parsers the first
    ("duplicate-key", raw("usage")[:-1] + b',"name":"other"}', "usage", "name", "the key 'name' twice"),
    ("duplicate-key-spaced", raw("usage")[:-1] + b',"name" \t:"other"}', "usage", "name", "twice"),
    ("duplicate-key-deep", raw("usage")[:-1] + b',"name":"x","pad":' + b"[" * 1010 + b"]" * 1010 + b"}", "usage", "",
     "nested less deeply"),
    ("duplicate-attribute", b'{"event_id":"e","account_id":"a","occurred_at":"2024-01-01T00:00:00Z",'
     b'"attributes":{"plan":"a","plan":"b"}}', "account", "plan", "the key 'plan' twice"),
]


@pytest.mark.parametrize("data, kind, field, text", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_names_the_field(data, kind, field, text):
    exc = invalid(data, kind)
    assert exc.field == field
    assert exc.reason.startswith(f"{field or 'message'}: expected {exc.expected}, got ")
    assert text in exc.reason and "\n" not in exc.reason


def test_max_bytes_is_configurable():
    assert invalid(raw("usage"), "usage", max_bytes=10).field == ""
    assert decode_event(raw("usage"), "usage", max_bytes=len(raw("usage"))) == VALID["usage"][1]


# ---------------------------------------- the JSON Schema files agree with the decoder

@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_schema_fields_match_the_dataclass_and_the_field_table(kind):
    schema = load_schema(kind)
    cls = EVENT_CLASSES[kind]
    assert set(schema["properties"]) - {"kind"} == {f.name for f in dataclasses.fields(cls)}
    assert set(schema["required"]) == {
        f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
    } == {s.name for s in FIELDS[kind] if s.required}
    assert schema["properties"]["kind"]["const"] == kind
    assert schema["additionalProperties"] is True


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_schema_required_fields_are_required_by_the_decoder(kind):
    schema = load_schema(kind)
    for name in schema["properties"]:
        if name == "kind":
            continue
        if name in schema["required"]:
            exc = invalid(raw(kind, drop=name), kind)
            assert exc.field == name and "missing" in exc.reason
        else:  # optional: absent or null both fine
            decode_event(raw(kind, drop=name), kind)
            decode_event(raw(kind, **{name: None}), kind)


# wrong-typed values for each JSON type the schema declares
WRONG = {"string": [42, True, "", {}], "number": ["abc", True, [1]], "boolean": ["yes", 1, 0.0]}


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_schema_types_and_enums_are_enforced_by_the_decoder(kind):
    for name, prop in load_schema(kind)["properties"].items():
        if name == "kind":
            continue
        types = prop.get("type", [])
        types = [types] if isinstance(types, str) else types
        for t in types:
            for bad in WRONG.get(t, []):
                if t == "string" and bad == "" and prop.get("minLength") != 1:
                    continue
                assert invalid(raw(kind, **{name: bad}), kind).field == name, (name, bad)
        if "enum" in prop:
            allowed = [v for v in prop["enum"] if v is not None]
            assert tuple(allowed) == {"action": TICKET_ACTIONS, "survey": SURVEY_TYPES}[name]
            for v in allowed:
                extra = {"scale": None} if v == "nps" else {}
                decode_event(raw(kind, **{name: v}, **extra), kind)
            assert invalid(raw(kind, **{name: "other"}), kind).field == name


def test_schema_survey_rules_match_the_decoder():
    rules = load_schema("survey")["allOf"]
    nps = next(r["then"]["properties"] for r in rules if r["if"]["properties"]["survey"]["const"] == "nps"
               and "scale" not in r["if"]["properties"])
    assert (nps["score"]["minimum"], nps["score"]["maximum"], nps["scale"]["enum"]) == (0, 10, [10, None])
    default_csat = next(r["then"]["properties"] for r in rules if "scale" in r["if"]["properties"])
    top = default_csat["score"]["maximum"]
    decode_event(raw("survey", score=top, scale=None), "survey")
    assert invalid(raw("survey", score=top + 0.5, scale=None), "survey").field == "score"


@pytest.mark.parametrize("stamp", [
    "2024-05-01T10:00:00Z", "2024-05-01t10:00:00z", "2024-05-01T10:00:00.1+05:30",
    "2024-05-01T10:00:00.123456789-08:00", "1999-12-31T23:59:59.000+00:00",
])
def test_every_timestamp_the_schema_pattern_accepts_decodes(stamp):
    assert re.match(load_schema("usage")["properties"]["occurred_at"]["pattern"], stamp)
    decode_event(raw("usage", occurred_at=stamp), "usage")


@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_examples_validate_with_jsonschema_when_available(kind):
    jsonschema = pytest.importorskip("jsonschema")  # not a project dependency
    jsonschema.Draft202012Validator(load_schema(kind)).validate(VALID[kind][0])


# ------------------------------------------------------------------ property

ids = st.text(min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)
values = st.floats(-LIMITS.max_value, LIMITS.max_value)
attribute_numbers = st.floats(-LIMITS.max_attribute_number, LIMITS.max_attribute_number)
zones = st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
# microsecond timestamps whose epoch float is exact to the microsecond (|ts| < 2**33 s)
instants = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1),
                        timezones=st.just(timezone.utc)).map(lambda d: d.timestamp())
common = dict(event_id=ids, account_id=ids, occurred_at=instants)
scalars = st.one_of(st.none(), st.booleans(), st.text(max_size=8), attribute_numbers,
                    st.integers(min_value=-int(LIMITS.max_attribute_number), max_value=int(LIMITS.max_attribute_number)))


@st.composite
def surveys(draw):
    survey = draw(st.sampled_from(SURVEY_TYPES))
    if survey == "nps":
        scale, top = draw(st.sampled_from([None, 10.0])), 10.0
        score = draw(st.floats(0, 10))
    else:
        scale = draw(st.none() | st.floats(1, LIMITS.max_csat_scale, exclude_min=True))
        score = draw(st.floats(1, 5.0 if scale is None else scale))
    return draw(st.builds(SurveyEvent, **common, survey=st.just(survey), score=st.just(score),
                          scale=st.just(scale), respondent_id=st.none() | ids))


events = st.one_of(
    st.builds(UsageEvent, **common, name=ids, user_id=st.none() | ids, feature=st.none() | ids,
              value=st.none() | values),
    st.builds(TicketEvent, **common, ticket_id=ids, action=st.sampled_from(TICKET_ACTIONS),
              priority=st.none() | ids, sla_breached=st.none() | st.booleans()),
    surveys(),
    st.builds(AccountEvent, **common, attributes=st.dictionaries(ids, scalars, min_size=1, max_size=5)),
)


@settings(max_examples=300, deadline=None)
@given(events)
def test_decode_encode_round_trip(event):
    assert decode_event(encode_event(event)) == event
    assert decode_event(encode_event(event), event.kind) == event


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=zones))
def test_any_zone_offset_gives_the_same_instant(moment):
    event = event_from_dict(payload("usage", occurred_at=moment.isoformat()), "usage")
    assert event.occurred_at == moment.timestamp()
    assert decode_event(encode_event(event)) == event
