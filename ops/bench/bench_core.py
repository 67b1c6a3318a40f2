"""Pure-core throughput on one core for the default model (not a test).

    python ops/bench/bench_core.py [--accounts 10000] [--events 200000] [--profile]

Prints: events applied per second (events grouped per account per pipeline batch, as
the worker does), accounts rescored per second (full reevaluate, the timer's path) and
the bytes of state per account after 90 days of typical activity (mean and max).
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import statistics
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from schemas.events import AccountEvent, SurveyEvent, TicketEvent, UsageEvent  # noqa: E402
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
    states: dict[str, AccountState] = {}
    tables: dict[str, bytes] = {}
    t0 = time.perf_counter()
    for start in range(0, len(events), batch_size):
        batch = events[start:start + batch_size]
        now = batch[-1].occurred_at + 1
        by_acc: dict[str, list] = {}
        for e in batch:
            by_acc.setdefault(e.account_id, []).append(e)
        for acc, evs in by_acc.items():
            if roundtrip:
                raw = tables.get(acc)
                st = AccountState.from_dict(orjson.loads(raw)) if raw else None
                tables[acc] = orjson.dumps(apply_events(st, acc, evs, model, now).state.to_dict())
            else:
                states[acc] = apply_events(states.get(acc), acc, evs, model, now).state
    dt = time.perf_counter() - t0
    return len(events) / dt, states


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--size-accounts", type=int, default=200)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    model = load_model(DEFAULT_MODEL_PATH)
    rng = random.Random(7)
    events = mixed_events(args.accounts, args.events, rng, 2 * DAY)
    print(f"model {model.version} ({model.fingerprint}), {args.accounts} accounts, {len(events)} events")

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        bench_apply(model, events, 20_000, False)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        return

    for batch, rt in ((20_000, False), (20_000, True), (2_000, False)):
        eps, states = bench_apply(model, events, batch, rt)
        per_acc = batch / args.accounts
        print(f"apply_events: {eps:>10,.0f} events/s  (pipeline batch {batch:>6} events, "
              f"~{max(per_acc, 1):.1f} events per account call{', with orjson table round trip' if rt else ''})")

    now = events[-1].occurred_at + DAY
    t0 = time.perf_counter()
    for acc, st in states.items():
        reevaluate(st, acc, model, now)
    dt = time.perf_counter() - t0
    print(f"reevaluate:   {len(states) / dt:>10,.0f} accounts/s  (full recompute, {len(states)} accounts)")

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
