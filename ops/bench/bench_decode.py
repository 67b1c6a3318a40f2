"""Micro-benchmark of the input-event decoder against bare orjson.loads, one core.

    python ops/bench/bench_decode.py [--events 200000] [--repeat 5]

Decodes N distinct typical usage events (bytes as they come off Kafka) with
schemas.events.decode_event, and the same bytes with orjson.loads alone, in the same
process; prints the best of --repeat runs for each and the ratio (the validation cost).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout
from schemas.events import decode_event  # noqa: E402


def messages(n: int) -> list[bytes]:
    # Distinct ids and timestamps, so nothing is accidentally cached.
    return [
        orjson.dumps({
            "event_id": f"0b6f3c1e-5e0c-4a0e-9a7f-{i:012d}",
            "account_id": f"acct-{i % 5000:06d}",
            "occurred_at": f"2024-05-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
            "name": "feature_used",
            "user_id": f"user-{i % 97}",
            "feature": "reports",
            "value": (i % 600) / 10,
        })
        for i in range(n)
    ]


def best_rate(fn, msgs: list[bytes], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for m in msgs:
            fn(m)
        best = min(best, time.perf_counter() - start)
    return len(msgs) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    msgs = messages(args.events)
    assert decode_event(msgs[-1], "usage").name == "feature_used"
    baseline = best_rate(orjson.loads, msgs, args.repeat)
    decoded = best_rate(lambda m: decode_event(m, "usage"), msgs, args.repeat)
    print(f"{args.events} usage events of ~{sum(map(len, msgs)) // len(msgs)} bytes, best of {args.repeat}")
    print(f"orjson.loads   {baseline:12,.0f} /s")
    print(f"decode_event   {decoded:12,.0f} /s   ({decoded / baseline:.2f} of bare orjson, "
          f"{1e6 / decoded - 1e6 / baseline:.2f} us validation per event)")


if __name__ == "__main__":
    main()
