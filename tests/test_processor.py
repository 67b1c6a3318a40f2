"""The worker's batch logic without a broker: decode, route, fold, envelope, outputs, replay."""
from __future__ import annotations

import base64
import hashlib
import random
from types import SimpleNamespace

import orjson
import pytest

from schemas.events import encode_event
from streams.core import load_model, score_all
from streams.core.days import DAY
from streams.core.simulate import account_events
from streams.core.state import STATE_LIMITS
from streams.worker.envelope import decode_state
from streams.worker.processor import HealthProcessor, OutputTopics, partition_for
from streams.settings import DEFAULT_MODEL

N = 4
KINDS = {"in.usage": "usage", "in.tickets": "ticket", "in.surveys": "survey", "in.accounts": "account"}
TOPIC_OF = {kind: topic for topic, kind in KINDS.items()}
NOW = 20060 * DAY + 3600.0


@pytest.fixture(scope="module")
def model():
    return load_model(DEFAULT_MODEL)


def processor(model) -> HealthProcessor:
    return HealthProcessor(model, OutputTopics("out.scores", "out.alerts", "out.dead"), KINDS, N)


def records_for(events, offset=0):
    """Records as the consumer fetches them: per (topic, home partition), in order."""
    grouped: dict = {}
    for i, event in enumerate(events):
        tp = (TOPIC_OF[event.kind], partition_for(event.account_id, N))
        grouped.setdefault(tp, []).append(SimpleNamespace(
            key=event.account_id.encode(), value=encode_event(event), offset=offset + i, timestamp=1_000 + i))
    return [(topic, partition, recs) for (topic, partition), recs in grouped.items()]


def run(proc, table, batches):
    result = proc.process(batches, lambda a: table.get(a), NOW)
    for account, (_, value) in result.writes.items():
        table[account] = value
    return result


def simulated(n_accounts=12, days=40, seed=7):
    rng = random.Random(seed)
    events = []
    for i in range(n_accounts):
        events += account_events(f"acct-{i}", NOW - days * DAY, days, rng, usage_per_day=8, users=4)
    return [e for e in events if e.occurred_at <= NOW]


def last_records(outputs, topic):
    latest = {}
    for out in outputs:
        if out.topic == topic:
            record = orjson.loads(out.value)
            if record["seq"] > latest.get(record["account_id"], {"seq": -1})["seq"]:
                latest[record["account_id"]] = record
    return latest


def test_stream_of_batches_ends_equal_to_the_batch_twin(model):
    events = simulated()
    proc, table, published = processor(model), {}, []
    rng = random.Random(3)
    shuffled = sorted(events, key=lambda e: e.occurred_at + rng.uniform(0, 3600))  # within the lateness
    # small batches: the processor takes a batch topic by topic, and the cross-topic skew inside
    # one batch must stay within the allowed lateness for the twin's equality to hold
    for start in range(0, len(shuffled), 40):
        published += run(proc, table, records_for(shuffled[start:start + 40], start)).outputs
    twin = score_all(events, model, NOW)
    final = last_records(published, "out.scores")
    assert set(final) == {a for a, s in twin.items() if s.score is not None}
    for account, record in final.items():
        assert record["score"] == twin[account].score and record["band"] == twin[account].band
        assert record["components"] == twin[account].to_dict()["components"]


def test_replayed_batch_republishes_the_same_outputs_and_counts_nothing_twice(model):
    events = simulated(n_accounts=3, days=20)
    proc, table = processor(model), {}
    first = run(proc, table, records_for(events))
    states = {a: decode_state(v).to_dict() for a, v in table.items()}
    replay = run(proc, table, records_for(events))  # the worker died after the writes, before the acks
    assert sorted(o.value for o in replay.outputs) == sorted(o.value for o in first.outputs)
    assert {a: decode_state(v).to_dict() for a, v in table.items()} == states
    assert sum(n for (kind, outcome), n in replay.outcomes.items() if outcome == "applied") == 0


def test_replay_mixed_with_new_events_republishes_the_stored_outputs_unchanged(model):
    events = sorted(simulated(n_accounts=3, days=20), key=lambda e: e.occurred_at)
    half = len(events) // 2
    proc, table = processor(model), {}
    first = run(proc, table, records_for(events[:half]))
    # the worker died after writing the first batch; the replay brings it again with newer events
    replay = run(proc, table, records_for(events[:half + 30]))
    firsts = {(r["account_id"], r["seq"]): r for r in map(orjson.loads, (o.value for o in first.outputs))
              if "seq" in r}
    for record in (orjson.loads(o.value) for o in replay.outputs):
        key = (record.get("account_id"), record.get("seq"))
        if key in firsts:
            assert record == firsts[key]


def test_bad_input_goes_to_the_dead_letter_topic_with_its_reason(model):
    proc = processor(model)
    good = {"event_id": "g1", "account_id": "acme", "occurred_at": "2024-12-01T10:00:00Z", "name": "login"}
    home = partition_for("acme", N)
    raw = [b"\xff\xfenot json", orjson.dumps({**good, "account_id": 42}), orjson.dumps({**good, "kind": "webinar"}),
           orjson.dumps({**good, "occurred_at": "2099-01-01T00:00:00Z"}), b"{" + b" " * 70000 + b"}",
           orjson.dumps(good), None]
    records = [SimpleNamespace(key=b"acme", value=v, offset=i, timestamp=0) for i, v in enumerate(raw)]
    result = proc.process([("in.usage", home, records)], lambda a: None, 20058 * DAY + 12 * 3600)
    letters = [orjson.loads(o.value) for o in result.dead_letters]
    reasons = {letter["offset"]: letter["reason"] for letter in letters}
    assert set(reasons) == {0, 1, 2, 3, 4, 6}
    assert "null" in reasons[6]  # a tombstone is dead-lettered, not a crash
    assert "JSON" in reasons[0] and reasons[1].startswith("account_id") and reasons[2].startswith("kind")
    assert reasons[3].startswith("occurred_at") and "ahead" in reasons[3]
    assert "65536" in reasons[4] or "bytes" in reasons[4]
    assert letters[0]["raw_encoding"] == "base64" and letters[1]["topic"] == "in.usage"
    assert result.outcomes[("usage", "applied")] == 1 and "acme" in result.writes


def test_an_event_on_the_wrong_partition_is_rerouted_to_its_accounts_partition(model):
    proc = processor(model)
    event = {"event_id": "r1", "account_id": "acme", "occurred_at": "2024-12-01T10:00:00Z", "name": "login"}
    wrong = (partition_for("acme", N) + 1) % N
    result = proc.process([("in.usage", wrong, [SimpleNamespace(key=b"other", value=orjson.dumps(event),
                                                                 offset=0, timestamp=0)])], lambda a: None, NOW)
    assert not result.writes and len(result.reroutes) == 1
    assert (result.reroutes[0].topic, result.reroutes[0].partition, result.reroutes[0].key) == \
           ("in.usage", partition_for("acme", N), b"acme")


# ------------------------------------------------------------------ hostile input
def usage_record(offset, account="acme", **fields):
    event = {"event_id": f"ev-{offset}", "account_id": account, "occurred_at": "2024-12-01T10:00:00Z",
             "name": "login", **fields}
    return SimpleNamespace(key=account.encode(), value=orjson.dumps(event), offset=offset, timestamp=offset)


def outcome_total(result) -> int:
    return sum(result.outcomes.values())


HOSTILE_NOW = 20058 * DAY + 12 * 3600


def test_poison_records_are_dead_lettered_and_the_rest_of_the_batch_is_scored(model):
    home = partition_for("acme", N)
    records = [usage_record(0, value=1e308), usage_record(1, value=1e18), usage_record(2, value=-1e300),
               SimpleNamespace(key=b"acme", value=b"\0" * 200_000, offset=3, timestamp=3),
               SimpleNamespace(key=b"k" * 1_000_000, value=b"\xff" * 100_000, offset=4, timestamp=4),
               usage_record(5, value=12.5)]
    result = processor(model).process([("in.usage", home, records)], lambda a: None, HOSTILE_NOW)
    assert outcome_total(result) == len(records)
    assert result.outcomes[("usage", "dead_lettered")] == 5 and result.outcomes[("usage", "applied")] == 1
    letters = {orjson.loads(o.value)["offset"]: (o, orjson.loads(o.value)) for o in result.dead_letters}
    assert "between -1e+09 and 1e+09" in letters[0][1]["reason"] and "1e+18" in letters[1][1]["reason"]
    for out, letter in letters.values():  # every letter is small enough for the broker, whatever came in
        assert len(out.value) < 64 * 1024 and len(out.key) <= 256
    nul = letters[3][1]
    assert nul["raw_bytes"] == 200_000 and nul["raw_truncated"] and nul["raw_encoding"] == "utf-8"
    assert nul["raw_sha256"] == hashlib.sha256(b"\0" * 200_000).hexdigest()
    binary = letters[4][1]
    assert binary["raw_encoding"] == "base64" and base64.b64decode(binary["raw"]) == b"\xff" * 8192
    assert len(binary["key"]) <= 260
    assert orjson.loads(result.writes["acme"][1])  # the good event was applied and its state encodes


def test_distinct_event_names_beyond_the_state_limit_are_refused_and_counted(model):
    """Twenty 60 KB events, each with another name, used to grow one table value past the broker's limit."""
    home = partition_for("acme", N)
    pad = "p" * 60_000  # unknown fields are ignored but count towards the record's size
    records = [usage_record(i, name=f"name-{i:03d}".ljust(100, "x"), pad=pad) for i in range(150)]
    proc = processor(model)
    proc.max_event_bytes = 128 * 1024
    result = proc.process([("in.usage", home, records)], lambda a: None, HOSTILE_NOW)
    assert result.outcomes[("usage", "applied")] == STATE_LIMITS.event_names
    assert result.outcomes[("usage", "over_limit")] == 150 - STATE_LIMITS.event_names
    assert outcome_total(result) == 150
    assert len(result.dead_letters) == 150 - STATE_LIMITS.event_names
    assert all("distinct names" in orjson.loads(o.value)["reason"] for o in result.dead_letters)
    assert len(result.writes["acme"][1]) < 64 * 1024


def test_an_event_the_core_cannot_fold_is_dead_lettered_alone(model, monkeypatch):
    """Whatever fails while an account's events are folded, only the failing record is dead-lettered."""
    import streams.worker.processor as processor_module

    real = processor_module.apply_events

    def fragile(state, account_id, events, *args, **kwargs):
        if any(e.event_id == "ev-boom" for e in events):
            raise ZeroDivisionError("a bug the event triggers")
        return real(state, account_id, events, *args, **kwargs)

    monkeypatch.setattr(processor_module, "apply_events", fragile)
    home = partition_for("acme", N)
    other = next(a for a in (f"acct-{i}" for i in range(100)) if partition_for(a, N) == home)
    records = [usage_record(0), SimpleNamespace(**{**vars(usage_record(1)), "value": orjson.dumps(
        {"event_id": "ev-boom", "account_id": "acme", "occurred_at": "2024-12-01T11:00:00Z", "name": "login"})}),
        usage_record(2, name="export"), usage_record(3, account=other)]
    result = processor(model).process([("in.usage", home, records)], lambda a: None, HOSTILE_NOW)
    assert outcome_total(result) == 4 and result.outcomes[("usage", "applied")] == 3
    (letter,) = [orjson.loads(o.value) for o in result.dead_letters]
    assert letter["offset"] == 1 and "ZeroDivisionError: a bug the event triggers" in letter["reason"]
    assert set(result.writes) == {"acme", other} and result.failures == 1
    state = decode_state(result.writes["acme"][1])
    assert sorted(state.uc) == ["export", "login"]


def test_a_state_that_would_outgrow_the_record_limit_refuses_the_events_that_grow_it(model, monkeypatch):
    import streams.worker.processor as processor_module

    monkeypatch.setattr(processor_module, "MAX_RECORD_BYTES", 3000)
    home = partition_for("acme", N)
    records = [usage_record(i, name=f"n{i}".ljust(90, "x")) for i in range(40)]
    result = processor(model).process([("in.usage", home, records)], lambda a: None, HOSTILE_NOW)
    assert outcome_total(result) == 40
    refused = result.outcomes[("usage", "over_limit")]
    assert 0 < refused < 40 and result.outcomes[("usage", "applied")] == 40 - refused
    assert len(result.writes["acme"][1]) <= 3000
    assert all("over the limit of 3,000" in orjson.loads(o.value)["reason"] for o in result.dead_letters)


def test_a_score_with_too_little_data_is_published_without_a_band_and_counted_as_insufficient(model):
    from schemas.events import AccountEvent

    event = AccountEvent("crm-1", "crm-only", NOW - 3600, {"csm_rating": 7, "uptime_pct": 99.9})
    result = run(processor(model), {}, records_for([event]))
    (update,) = [orjson.loads(o.value) for o in result.outputs if o.topic == "out.scores"]
    assert (update["band"], update["status"]) == (None, "insufficient_data") and update["score"] is not None
    assert result.scores["crm-only"][2] == "insufficient_data"
