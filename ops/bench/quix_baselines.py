"""quixstreams apps the benchmark runs beside the Faust baselines and the worker, on the same preloaded topics:
the peer a user would pick today instead of Faust, written the way its documentation teaches.

- Qc, `counter`: a minimal app that only counts events (the analogue of Faust's B): one
  StreamingDataFrame per input topic ("Consuming multiple topics"), values as raw bytes, a
  stateless `update()` that counts.
- Q, `scorer`: the scorer of faust_baselines.py's C, with the same work and the same formula, as
  quixstreams teaches stateful processing: the four input topics concatenated into one
  StreamingDataFrame (`concat()`, so an account's events of every kind reach one per-key state),
  JSON values (the topic's default deserializer), and one `apply(..., stateful=True)` keeping the
  account's counters in its `State` with `state.get`/`state.set`. The state is quixstreams' default:
  RocksDB in BENCH_STATE_DIR, backed by its own changelog topic, which the app creates; the commit
  interval is the default (5 s). Like C, which writes its score into a table (and so to the table's
  changelog) and produces nothing else, Q writes the score into its state (and so to the changelog).

Run: BENCH_PREFIX=<topic prefix> BENCH_TOTAL=<events> BENCH_OUT=<file> BENCH_STATE_DIR=<dir> \
     python ops/bench/quix_baselines.py counter      (or scorer)
Each uses the consumer group `<prefix>-quix-<app>`, reads from the earliest offset and writes
`{"first": t, "last": t, "events": n}` to BENCH_OUT when it has seen BENCH_TOTAL events; when it
is stopped (SIGTERM), `{"events": n}` to BENCH_OUT.final: what it counted in all (nothing twice).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import quixstreams
from quixstreams import Application, State

from ops.bench.baseline import DAY, OUT, Progress, score

PREFIX = os.environ.get("BENCH_PREFIX", "bench")
BROKER = os.environ.get("BENCH_BROKER", "kafka://127.0.0.1:9092").removeprefix("kafka://")
INPUTS = [f"{PREFIX}.{t}" for t in ("usage", "tickets", "surveys", "accounts")]


def _app(name: str) -> Application:
    return Application(broker_address=BROKER, consumer_group=f"{PREFIX}-quix-{name}", auto_offset_reset="earliest",
                       state_dir=os.environ.get("BENCH_STATE_DIR") or tempfile.mkdtemp(prefix="quix-state-"))


# ---------------------------------------------------------------- Qc: the framework's cost
def counter() -> tuple[Application, Progress]:
    app = _app("counter")
    progress = Progress(lambda: {"quixstreams": quixstreams.__version__})
    for name in INPUTS:
        sdf = app.dataframe(app.topic(name, value_deserializer="bytes"))
        sdf = sdf.update(lambda _: progress.tick())
    return app, progress


# ---------------------------------------------------------------- Q: the documented way
def _score(state: State, now: float) -> float:
    """faust_baselines._score over the account's State instead of Faust tables."""
    today = int(now // DAY)
    logins = sum(state.get(f"daily|login|{d}", 0) for d in range(today - 29, today + 1))
    return score(logins, state.get("last_seen|login", 0.0), state.get("open_tickets", 0), state.get("csat", []),
                 state.get("attributes", {}).get("csm_rating"), now)


def scorer() -> tuple[Application, Progress]:
    app = _app("scorer")
    progress = Progress(lambda: {"quixstreams": quixstreams.__version__})

    def score_event(event: dict, state: State) -> dict:
        ts = time.mktime(time.strptime(event["occurred_at"][:19], "%Y-%m-%dT%H:%M:%S"))
        kind = event.get("kind")
        if kind == "usage":
            key = f"daily|{event['name']}|{int(ts // DAY)}"
            state.set(key, state.get(key, 0) + 1)
            state.set(f"last_seen|{event['name']}", ts)
        elif kind == "ticket":
            if event["action"] == "opened":
                state.set("open_tickets", state.get("open_tickets", 0) + 1)
            elif event["action"] in ("resolved", "closed"):
                state.set("open_tickets", max(0, state.get("open_tickets", 0) - 1))
        elif kind == "survey" and event["survey"] == "csat":
            c = state.get("csat") or [0.0, 0]
            state.set("csat", [c[0] + event["score"], c[1] + 1])
        elif kind == "account":
            state.set("attributes", {**state.get("attributes", {}), **event["attributes"]})
        score = _score(state, time.time())
        state.set("score", score)
        progress.tick()
        return {"account_id": event["account_id"], "score": score}

    sdf = app.dataframe(app.topic(INPUTS[0]))
    for name in INPUTS[1:]:
        sdf = sdf.concat(app.dataframe(app.topic(name)))
    sdf = sdf.apply(score_event, stateful=True)
    return app, progress


if __name__ == "__main__":
    apps = {"counter": counter, "scorer": scorer}
    if len(sys.argv) != 2 or sys.argv[1] not in apps:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(apps)}")
    app, progress = apps[sys.argv[1]]()
    app.run()  # until SIGTERM
    with open(OUT + ".final", "w") as f:
        json.dump({"events": progress.n}, f)
