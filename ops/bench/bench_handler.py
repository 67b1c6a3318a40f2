"""The worker's batch handler without Kafka: HealthProcessor.process over the events the
end-to-end benchmark preloads, cut into fetched batches, with a dict for the table (not a test).

    .venv/bin/python ops/bench/bench_handler.py [--events 200000] [--accounts 10000] [--batches 3] [--profile]

This is D's hot path (decode, fold per account, score, envelope, output records) on one core,
so a change to it can be measured in seconds and profiled with cProfile. `--batches 3` is how
the worker fetched the preloaded topics in the end-to-end run; more batches mean fewer events
per account per batch, as on a live stream. Prints events/s (CPU time, best of --repeat) beside
a bare orjson.loads of the same records measured in the same process.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from schemas.events import encode_event  # noqa: E402
from streams.core import DEFAULT_MODEL_PATH, load_model  # noqa: E402
from streams.core.days import DAY  # noqa: E402
from streams.worker.processor import HealthProcessor, OutputTopics, partition_for  # noqa: E402
from bench_pipeline import simulated_history  # noqa: E402

KIND_TOPIC = {"usage": "in.usage", "ticket": "in.tickets", "survey": "in.surveys", "account": "in.accounts"}


class Record:
    """What the handler reads of an aiokafka ConsumerRecord."""

    __slots__ = ("key", "value", "offset", "timestamp")

    def __init__(self, key: bytes, value: bytes, offset: int, timestamp: int):
        self.key, self.value, self.offset, self.timestamp = key, value, offset, timestamp


def as_fetches(events, partitions: int, batches: int) -> list:
    """Events as the worker fetches them: `batches` fetches, each a list of (topic, partition,
    records), records in offset order."""
    offsets: dict[tuple[str, int], int] = {}
    fetches = [dict() for _ in range(batches)]
    per = len(events) // batches + 1
    for i, e in enumerate(events):
        tp = (KIND_TOPIC[e.kind], partition_for(e.account_id, partitions))
        offsets[tp] = offsets.get(tp, -1) + 1
        record = Record(e.account_id.encode(), encode_event(e), offsets[tp], int(e.occurred_at * 1000))
        fetches[i // per].setdefault(tp, []).append(record)
    return [[(t, p, recs) for (t, p), recs in f.items()] for f in fetches]


def processor_for(model, partitions: int) -> HealthProcessor:
    return HealthProcessor(model, OutputTopics("scores", "alerts", "deadletter"),
                           {t: k for k, t in KIND_TOPIC.items()}, partitions)


def run(fetches, model, partitions: int, now: float, catching_up: bool = False) -> float:
    processor = processor_for(model, partitions)
    processor.catching_up = catching_up
    table: dict[str, bytes] = {}
    started = time.process_time()
    for fetch in fetches:
        result = processor.process(fetch, table.get, now)
        for account_id, (_, value) in result.writes.items():
            table[account_id] = value
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile of one run")
    parser.add_argument("--catching-up", action="store_true",
                        help="as a worker starting on this backlog runs (end-to-end run D): alerts held back, "
                             "silence floors left for after the catch-up; without it, as a caught-up worker "
                             "receiving a backfill of 60 days")
    args = parser.parse_args()
    model = load_model(DEFAULT_MODEL_PATH)
    end = 20000 * DAY
    events = simulated_history(args.events, args.accounts, args.seed, end)
    fetches, total = as_fetches(events, args.partitions, args.batches), len(events)
    gc.freeze()
    values = [r.value for f in fetches for _, _, recs in f for r in recs]
    t = time.process_time()
    for v in values:
        orjson.loads(v)
    decode_rate = total / (time.process_time() - t)
    best = min(run(fetches, model, args.partitions, end, args.catching_up) for _ in range(args.repeat))
    print(f"{total} events, {args.accounts} accounts, {args.batches} batches, "
          f"{'catching up' if args.catching_up else 'caught up'} "
          f"(~{total / args.accounts / args.batches:.1f} events per account per batch)")
    print(f"handler: {total / best:,.0f} events/s ({best:.2f} s CPU); orjson.loads alone: {decode_rate:,.0f} "
          f"events/s; ratio {total / best / decode_rate:.3f}")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        run(fetches, model, args.partitions, end, args.catching_up)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


if __name__ == "__main__":
    main()
