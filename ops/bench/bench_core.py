"""Pure-core throughput on one core for the default model (not a test).

    python ops/bench/bench_core.py [--accounts 10000] [--events 200000] [--repeat 2] [--profile]

Prints, for the default model:

- ``apply_events`` events/s with the events of a pipeline batch grouped per account, as the
  worker does: a 20k-event batch over 10k accounts (~2 events per call, the common case
  of a stream worker), the same with the state round-tripped through orjson as the table
  does, a 2k-event batch (~1 event per call) and a 20k-event batch over 1k accounts (~20
  events per call);
- ``reevaluate`` accounts/s (the timer's and a model rollout's full recompute);
- the bytes of state per account after 90 days of typical activity (mean and max);
- a baseline measured in the same process: ``orjson.loads`` of the same events as JSON
  (events/s), and each throughput as a share of it, so that figures taken on a noisy or
  different machine can be compared through the ratio.

Each timing is the best of ``--repeat`` runs (CPU time of this process). The generated
input events are moved out of the garbage collector's reach (``gc.freeze``): a worker does
not hold 200k events, and collecting them would be charged to the core.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import random
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from schemas.events import AccountEvent, SurveyEvent, TicketEvent, UsageEvent, encode_event  # noqa: E402
from streams.core import DEFAULT_MODEL_PATH, AccountState, apply_events, load_model, reevaluate  # noqa: E402
from streams.core.days import DAY, HOUR  # noqa: E402
from streams.core.simulate import FEATURES, USAGE_NAMES, account_events  # noqa: E402

T0 = 20000 * DAY


def mixed_events(accounts: int, n: int, rng: random.Random, span: float):
    """~80% usage, 15% tickets, 5% surveys, a few account updates, spread over `span` seconds."""
    out = []
    for i in range(n):
        acc = f"acc-{rng.randrange(accounts):05d}"
        ts = T0 + rng.random() * span
        r = rng.random()
        eid = f"ev-{i}"
        if r < 0.80:
            name = rng.choice(USAGE_NAMES)
            out.append(UsageEvent(eid, acc, ts, name, f"u{rng.randrange(10)}",
                                  rng.choice(FEATURES) if name == "feature_used" else None,
                                  rng.uniform(1, 60) if name == "session" else None))
        elif r < 0.95:
            out.append(TicketEvent(eid, acc, ts, f"T{rng.randrange(50)}",
                                   rng.choice(["opened", "first_response", "resolved", "closed"]), None,
                                   rng.random() < 0.1))
        elif r < 0.995:
            out.append(SurveyEvent(eid, acc, ts, "csat", float(rng.randint(1, 5))))
        else:
            out.append(AccountEvent(eid, acc, ts, {"csm_rating": rng.randint(1, 10), "seats": 20}))
    out.sort(key=lambda e: e.occurred_at)
    return out


def bench_apply(model, events, batch_size: int, roundtrip: bool):
    """(CPU seconds, calls, states): every batch grouped per account, one apply_events per account."""
    states: dict[str, AccountState] = {}
    tables: dict[str, bytes] = {}
    calls = 0
    t0 = time.process_time()
    for start in range(0, len(events), batch_size):
        batch = events[start:start + batch_size]
        now = batch[-1].occurred_at + 1
        by_acc: dict[str, list] = {}
        for e in batch:
            by_acc.setdefault(e.account_id, []).append(e)
        calls += len(by_acc)
        for acc, evs in by_acc.items():
            if roundtrip:
                raw = tables.get(acc)
                st = AccountState.from_dict(orjson.loads(raw)) if raw else None
                tables[acc] = orjson.dumps(apply_events(st, acc, evs, model, now).state.to_dict())
            else:
                states[acc] = apply_events(states.get(acc), acc, evs, model, now).state
    return time.process_time() - t0, calls, states


def best(fn, repeat: int):
    """The run with the least CPU time: (seconds, other results...)."""
    runs = []
    for _ in range(repeat):
        gc.collect()
        runs.append(fn())
    return min(runs, key=lambda r: r[0])


def decode_rate(raw: list[bytes], repeat: int) -> float:
    def run():
        t0 = time.process_time()
        for b in raw:
            orjson.loads(b)
        return (time.process_time() - t0,)
    return len(raw) / best(run, repeat)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--size-accounts", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    model = load_model(DEFAULT_MODEL_PATH)
    events = mixed_events(args.accounts, args.events, random.Random(7), 2 * DAY)
    few = mixed_events(max(args.accounts // 10, 1), args.events, random.Random(8), 2 * DAY)
    raw = [encode_event(e) for e in events]
    gc.freeze()
    print(f"model {model.version} ({model.fingerprint}), {args.accounts} accounts, {len(events)} events")

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        bench_apply(model, events, 20_000, False)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        return

    base = decode_rate(raw, args.repeat)
    print(f"baseline:     {base:>10,.0f} events/s  orjson.loads of the same events (JSON)")
    rows = (("10k-batch", events, 20_000, False, ""), ("10k-batch", events, 20_000, True, ", with orjson table round trip"),
            ("2k-batch", events, 2_000, False, ""), ("20/call", few, 20_000, False, f", {len({e.account_id for e in few})} accounts"))
    states = {}
    for _, evs, batch, rt, note in rows:
        dt, calls, st = best(lambda: bench_apply(model, evs, batch, rt), args.repeat)
        if evs is events and not rt:
            states = st
        eps = len(evs) / dt
        print(f"apply_events: {eps:>10,.0f} events/s  ({eps / base:6.2%} of baseline; pipeline batch {batch:>6} events, "
              f"~{len(evs) / calls:.1f} events per account call{note})")

    now = events[-1].occurred_at + DAY
    snapshot = {acc: orjson.dumps(st.to_dict()) for acc, st in states.items()}

    def run_reevaluate():
        fresh = {acc: AccountState.from_dict(orjson.loads(raw)) for acc, raw in snapshot.items()}
        t0 = time.process_time()
        for acc, st in fresh.items():
            reevaluate(st, acc, model, now)
        return (time.process_time() - t0,)
    dt = best(run_reevaluate, args.repeat)[0]
    aps = len(snapshot) / dt
    print(f"reevaluate:   {aps:>10,.0f} accounts/s  ({aps / base:6.2%} of baseline; full recompute a day later, "
          f"{len(snapshot)} accounts)")

    sizes = []
    for i in range(args.size_accounts):
        acc = f"account-{i:05d}"
        evs = sorted((e for e in account_events(acc, T0, 90, random.Random(i)) if e.occurred_at < T0 + 90 * DAY),
                     key=lambda e: e.occurred_at)
        st = None
        j = 0
        while j < len(evs):  # hourly batches
            cut = evs[j].occurred_at + HOUR
            k = j
            while k < len(evs) and evs[k].occurred_at <= cut:
                k += 1
            st = apply_events(st, acc, evs[j:k], model, cut).state
            j = k
        sizes.append(len(orjson.dumps(st.to_dict())))
    print(f"state after 90 days of typical activity: mean {statistics.mean(sizes):,.0f} B, "
          f"max {max(sizes):,} B per account ({len(sizes)} accounts)")


if __name__ == "__main__":
    main()
