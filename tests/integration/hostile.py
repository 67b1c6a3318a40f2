"""Hostile input for the fuzz test: what a broken or malicious producer can write to the input topics.

`designed` gives (topic suffix, key, value, expected outcome) for the known ways to break a worker;
`many_names` valid events past the state limit on distinct names; `mutations` random byte-level
mutations of valid events (whatever they decode to, the worker must count each once and go on;
`mutation_is_invalid` says which the decoder refuses).
"""
from __future__ import annotations

import random

import orjson

from schemas.events import InvalidEvent, UsageEvent, decode_event, encode_event
from streams.core.days import DAY

KIND_OF_TOPIC = {"usage": "usage", "tickets": "ticket", "surveys": "survey", "accounts": "account"}


def _usage(account: str, i: int, now: float, **fields) -> dict:
    return {"event_id": f"h-{account}-{i}", "account_id": account, "occurred_at": "2025-11-01T10:00:00Z",
            "name": "login", **fields}


def designed(now: float, rng: random.Random) -> list[tuple[str, bytes | None, bytes | None, str]]:
    """(topic suffix, key, value, expected outcome) for the known ways to break a worker."""
    out: list[tuple[str, bytes | None, bytes | None, str]] = []

    def bad(value: bytes | None, topic: str = "usage", key: bytes | None = b"hostile-1") -> None:
        out.append((topic, key, value, "dead_lettered"))

    iso = "2025-11-01T10:00:00Z"
    # extreme numbers
    for value in (1e308, -1e308, 1e18, 1e10, -1e9 - 1):
        bad(orjson.dumps(_usage("hostile-1", len(out), now, value=value)))
    bad(orjson.dumps(_usage("hostile-1", 90, now))[:-1] + b',"value":18446744073709551616}')  # 2**64 as an int
    bad(orjson.dumps(_usage("hostile-1", 91, now))[:-1] + b',"value":1e400}')  # infinity when parsed
    bad(orjson.dumps(_usage("hostile-1", 92, now))[:-1] + b',"value":NaN}')
    bad(orjson.dumps({"event_id": "h-s1", "account_id": "hostile-2", "occurred_at": iso, "survey": "csat",
                      "score": 1e308}), "surveys")
    bad(orjson.dumps({"event_id": "h-s2", "account_id": "hostile-2", "occurred_at": iso, "survey": "csat",
                      "score": 3, "scale": 1e300}), "surveys")
    bad(orjson.dumps({"event_id": "h-a1", "account_id": "hostile-2", "occurred_at": iso,
                      "attributes": {"seats": 10 ** 18}}), "accounts")
    # huge strings and many attributes
    bad(orjson.dumps(_usage("hostile-1", 93, now, name="n" * 1000)))
    bad(orjson.dumps(_usage("hostile-1", 94, now, event_id="e" * 10_000)))
    bad(orjson.dumps(_usage("a" * 5000, 95, now)))
    bad(orjson.dumps({"event_id": "h-t1", "account_id": "hostile-2", "occurred_at": iso, "ticket_id": "t" * 500,
                      "action": "opened"}), "tickets")
    bad(orjson.dumps({"event_id": "h-a2", "account_id": "hostile-2", "occurred_at": iso,
                      "attributes": {f"a{i}": i for i in range(500)}}), "accounts")
    bad(orjson.dumps({"event_id": "h-a3", "account_id": "hostile-2", "occurred_at": iso,
                      "attributes": {"plan": "p" * 100_000}}), "accounts")
    # oversized and binary records
    bad(b"\0" * 200_000)
    bad(bytes(rng.getrandbits(8) for _ in range(100_000)))
    bad(b'{"pad":"' + b"x" * 900_000 + b'"}')
    for _ in range(20):
        bad(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))), rng.choice(list(KIND_OF_TOPIC)))
    bad(b"\xef\xbb\xbf" + orjson.dumps(_usage("hostile-1", 96, now)))  # a byte order mark
    # deep nesting
    bad(b"[" * 5000 + b"]" * 5000)
    bad(b'{"a":' * 1000 + b"1" + b"}" * 1000)
    bad(orjson.dumps(_usage("hostile-1", 97, now))[:-1] + b',"extra":' + b"[" * 1100 + b"]" * 1100 + b"}")
    # duplicate keys, wrong types, nothing at all
    bad(orjson.dumps(_usage("hostile-1", 98, now))[:-1] + b',"account_id":"hostile-3"}')
    bad(orjson.dumps(_usage("hostile-1", 99, now))[:-1] + b',"name" \t : "again"}')
    bad(orjson.dumps(_usage("hostile-1", 100, now, account_id=42)))
    bad(orjson.dumps(_usage("hostile-1", 101, now, occurred_at="yesterday")))
    bad(orjson.dumps(_usage("hostile-1", 102, now, occurred_at="2025-11-01T10:00:00")))  # no zone
    bad(orjson.dumps(_usage("hostile-1", 103, now, kind="ticket")))
    bad(b'{"event_id":"h-104","account_id":"hostile-1","occurred_at":"2025-11-01T10:00:00Z","name":"\\ud800"}')
    bad(None)  # a tombstone
    bad(b"")
    bad(b"null")
    bad(b"[]")
    bad(b'"a string"')
    bad(orjson.dumps({"event_id": "h-n1", "account_id": "hostile-2", "occurred_at": iso,
                      "attributes": {"nested": {"a": 1}}}), "accounts")
    # a huge key on a valid event: produced to another partition than its account's, it is re-routed
    out.append(("usage", b"k" * 100_000, orjson.dumps(_usage("hostile-1", 105, now)), "rerouted"))
    return out


def many_names(account: str, now: float, names: int) -> list[bytes]:
    """Valid usage events of one account, each with another name (past the state limit on names)."""
    return [encode_event(UsageEvent(f"{account}-name-{i}", account, now - 3600 - i, f"name-{i:04d}", None))
            for i in range(names)]


def mutations(valid: list[bytes], rng: random.Random, n: int) -> list[bytes]:
    """Random byte-level mutations of valid events: flips, cuts, splices, repeats."""
    out = []
    for _ in range(n):
        raw = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if op < 0.4 and raw:
                raw[rng.randrange(len(raw))] = rng.getrandbits(8)
            elif op < 0.6 and raw:
                raw = raw[:rng.randrange(len(raw))]
            elif op < 0.8:
                other = rng.choice(valid)
                cut = rng.randrange(len(other))
                raw = raw[:rng.randrange(len(raw) + 1)] + other[cut:]
            else:
                at = rng.randrange(len(raw) + 1)
                raw = raw[:at] + raw[at:at + 8] * rng.randint(2, 50) + raw[at:]
        out.append(bytes(raw))
    return out


def mutation_is_invalid(raw: bytes, kind: str) -> bool:
    try:
        decode_event(raw, kind)
    except InvalidEvent:
        return True
    return False


def fuzz_events(accounts: int, now: float, rng: random.Random) -> list[bytes]:
    """Valid usage events of throwaway accounts, to mutate."""
    out = []
    for a in range(accounts):
        account = f"fuzz-{a}"
        for i in range(5):
            ts = now - rng.uniform(0, 20) * DAY
            out.append(encode_event(UsageEvent(f"{account}-{i}", account, ts, rng.choice(["login", "x"]), f"u{i}",
                                               rng.choice([None, "reports"]), rng.choice([None, 3.5]))))
    return out
