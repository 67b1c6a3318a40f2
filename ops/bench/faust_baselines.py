"""Faust apps the benchmark runs beside the real worker, on the same preloaded topics.

- B, `counter`: a minimal agent that only counts events: the framework's own per-event cost.
- C, `usual`: a straightforward Faust scorer written the usual way: Faust's JSON codec, one
  table update per measure per event, the score recomputed from the tables on every event.

Run: BENCH_PREFIX=<topic prefix> BENCH_TOTAL=<events> BENCH_OUT=<file> \
     faust -A ops.bench.faust_baselines:counter worker      (or :usual)
Each writes `{"first": t, "last": t, "events": n}` to BENCH_OUT when it has seen BENCH_TOTAL events.
"""
from __future__ import annotations

import asyncio
import os
import time

import faust

from ops.bench.baseline import DAY, Progress, score

PREFIX = os.environ.get("BENCH_PREFIX", "bench")
BROKER = os.environ.get("BENCH_BROKER", "kafka://127.0.0.1:9092")
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "12"))
INPUTS = [f"{PREFIX}.{t}" for t in ("usage", "tickets", "surveys", "accounts")]


def _loop() -> dict:
    return {"loop": type(asyncio.get_running_loop()).__module__}


def _app(name: str, **kw) -> faust.App:
    return faust.App(f"{PREFIX}-{name}", broker=BROKER, store="memory://", topic_partitions=PARTITIONS,
                     consumer_auto_offset_reset="earliest", web_enabled=False, **kw)


# ---------------------------------------------------------------- B: the framework's cost
counter = _app("counter", value_serializer="raw", key_serializer="raw")
_count_progress = Progress(_loop)


@counter.agent(counter.topic(*INPUTS, value_type=bytes, key_type=bytes))
async def count_events(stream):
    async for _ in stream:
        _count_progress.tick()


# ---------------------------------------------------------------- C: the usual way
usual = _app("usual")  # Faust's default JSON codec
daily_counts = usual.Table("daily_counts", default=int, partitions=PARTITIONS)  # account|name|day -> n
last_seen = usual.Table("last_seen", default=float, partitions=PARTITIONS)  # account|name -> ts
open_tickets = usual.Table("open_tickets", default=int, partitions=PARTITIONS)  # account -> n
csat = usual.Table("csat", default=list, partitions=PARTITIONS)  # account -> [sum, n]
attributes = usual.Table("attributes", default=dict, partitions=PARTITIONS)  # account -> {}
scores = usual.Table("scores", default=float, partitions=PARTITIONS)  # account -> score
_usual_progress = Progress(_loop)


def _score(account: str, now: float) -> float:
    today = int(now // DAY)
    logins = sum(daily_counts[f"{account}|login|{d}"] for d in range(today - 29, today + 1))
    return score(logins, last_seen[f"{account}|login"], open_tickets[account], csat[account],
                 attributes[account].get("csm_rating"), now)


@usual.agent(usual.topic(*INPUTS))
async def score_events(stream):
    async for event in stream:
        account = event["account_id"]
        ts = time.mktime(time.strptime(event["occurred_at"][:19], "%Y-%m-%dT%H:%M:%S"))
        kind = event.get("kind")
        if kind == "usage":
            key = f"{account}|{event['name']}|{int(ts // DAY)}"
            daily_counts[key] += 1
            last_seen[f"{account}|{event['name']}"] = ts
        elif kind == "ticket":
            if event["action"] == "opened":
                open_tickets[account] += 1
            elif event["action"] in ("resolved", "closed"):
                open_tickets[account] = max(0, open_tickets[account] - 1)
        elif kind == "survey" and event["survey"] == "csat":
            c = csat[account] or [0.0, 0]
            csat[account] = [c[0] + event["score"], c[1] + 1]
        elif kind == "account":
            attributes[account] = {**attributes[account], **event["attributes"]}
        scores[account] = _score(account, time.time())
        _usual_progress.tick()
