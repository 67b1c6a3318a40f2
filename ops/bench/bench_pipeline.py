"""End-to-end benchmark on the local stack: a preloaded topic set drained by a real worker, beside
a bare aiokafka consumer on the same topics (the ceiling), then event-to-score latency at a fixed
offered load. Prints a table and writes it as JSON.

    .venv/bin/python ops/bench/bench_pipeline.py --events 200000 --accounts 10000

Needs the stack (`ops/stack up`). Figures are wall-clock on a shared machine: compare the ratio to
the ceiling measured in the same run rather than absolute numbers across runs.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from streams.core.days import DAY  # noqa: E402
from schemas.events import encode_event  # noqa: E402
from streams.sinks.kafka_batches import send_records  # noqa: E402
from streams.worker.processor import partition_for  # noqa: E402
from streams.tools.publisher import publish, topic_of_kind  # noqa: E402
from streams.settings import Settings, Topics  # noqa: E402
from streams.tools.simulator import CustomerMix, customer_base, history, kind_mix, live  # noqa: E402
from streams.topics import create_topics  # noqa: E402
from streams.tools.whatif import read_table  # noqa: E402


def settings_for(prefix: str, partitions: int, bootstrap: str) -> Settings:
    return Settings(app_id=prefix, broker=f"kafka://{bootstrap}", partitions=partitions,
                    topics=Topics.from_env(f"{prefix}."), redis_prefix=prefix)


def simulated_history(events_wanted: int, accounts: int, seed: int, end: float, days: int = 60) -> list:
    """About `events_wanted` events of `accounts` simulated accounts over the `days` before `end`
    (the simulator's intensity scaled from one day of a twentieth of the base)."""
    base = customer_base(accounts, CustomerMix(), seed)
    sample = sum(1 for _ in history(base[: max(1, accounts // 20)], end - DAY, end, seed))
    per_day = sample * accounts / max(1, accounts // 20)
    intensity = events_wanted / (per_day * days)
    return list(history(base, end - days * DAY, end, seed, intensity=intensity))


def preload(settings: Settings, events_wanted: int, accounts: int, seed: int) -> tuple[int, float, dict, list]:
    """Publish about `events_wanted` events of `accounts` simulated accounts; returns (count, end time, mix,
    the events)."""
    end = time.time()
    events = simulated_history(events_wanted, accounts, seed, end)
    report = asyncio.run(publish(events, settings))
    return report.total, end, kind_mix(events), events


async def ceiling_a(settings: Settings, total: int) -> float:
    """A bare aiokafka getmany loop decoding every value with orjson: events/s."""
    consumer = AIOKafkaConsumer(*settings.topics.inputs(), bootstrap_servers=settings.bootstrap_servers,
                                group_id=f"{settings.app_id}-ceiling", auto_offset_reset="earliest",
                                enable_auto_commit=False, max_poll_records=20000)
    await consumer.start()
    seen = 0
    started = None
    try:
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=20000)
            if started is None and batch:
                started = time.perf_counter()
            for records in batch.values():
                for record in records:
                    orjson.loads(record.value)
                seen += len(records)
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def faust_baseline(app: str, settings: Settings, total: int, workdir: Path) -> float:
    """Run one of ops/bench/faust_baselines.py on the preloaded topics (uvloop, like the worker): events/s."""
    out = workdir / f"{app}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_PREFIX": settings.app_id, "BENCH_TOTAL": str(total),
           "BENCH_OUT": str(out), "BENCH_BROKER": settings.broker, "BENCH_PARTITIONS": str(settings.partitions)}
    faust_cli = Path(sys.executable).with_name("faust")
    log = open(workdir / f"{app}.log", "ab")
    proc = subprocess.Popen([str(faust_cli), "-A", f"ops.bench.faust_baselines:{app}", "--loop", "uvloop",
                             "-l", "info", "worker", "--without-web"], env=env, cwd=workdir,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 1800
        while not out.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"baseline {app} exited or timed out; see {workdir / (app + '.log')}")
            time.sleep(0.5)
        time.sleep(0.1)
        result = json.loads(out.read_text())
    finally:
        proc.terminate()
        proc.wait(30)
    return result["events"] / (result["last"] - result["first"]), result["loop"]


def quix_baseline(app: str, settings: Settings, total: int, workdir: Path, settle: float = 0.0,
                  timeout: float = 1800) -> tuple[float, dict]:
    """Run one of ops/bench/quix_baselines.py on the preloaded topics, in its own process with a state dir
    of its own: events/s, and its report (with `final_events`: all it counted, read after it stopped;
    `settle` seconds after the last expected event, in case more come)."""
    out = workdir / f"quix-{app}.json"
    final = Path(f"{out}.final")
    state_dir = Path(tempfile.mkdtemp(prefix=f"quix-{app}-state-", dir=workdir))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_PREFIX": settings.app_id, "BENCH_TOTAL": str(total),
           "BENCH_OUT": str(out), "BENCH_BROKER": settings.broker, "BENCH_STATE_DIR": str(state_dir)}
    log_path = workdir / f"quix-{app}.log"
    log = open(log_path, "ab")
    proc = subprocess.Popen([sys.executable, str(ROOT / "ops/bench/quix_baselines.py"), app], env=env, cwd=workdir,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not out.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"quixstreams baseline {app} exited or timed out; see {log_path}")
            time.sleep(0.5)
        time.sleep(0.1 + settle)
        result = json.loads(out.read_text())
    finally:
        proc.terminate()
        proc.wait(60)
    if not final.exists():
        raise RuntimeError(f"quixstreams baseline {app} did not stop cleanly; see {log_path}")
    result["final_events"] = json.loads(final.read_text())["events"]
    return result["events"] / (result["last"] - result["first"]), result


def metric(port: int, name: str) -> float:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def start_worker(settings: Settings, workdir: Path, port: int, clock: Path | None, command: str = "worker",
                 **extra_env: str) -> subprocess.Popen:
    """A `health worker` (or another `health` command) of these settings, logging to <app id>.log."""
    env = {**os.environ, **extra_env, "HEALTH_APP_ID": settings.app_id, "HEALTH_KAFKA_BROKER": settings.broker,
           "HEALTH_REDIS_PREFIX": settings.redis_prefix, "HEALTH_PARTITIONS": str(settings.partitions),
           "HEALTH_WEB_PORT": str(port),
           **{f"HEALTH_TOPIC_{kind.upper()}": name for kind, name in vars(settings.topics).items()}}
    if clock:
        env["HEALTH_CLOCK_FILE"] = str(clock)
    script = Path(sys.executable).with_name("health")
    log = open(workdir / f"{settings.app_id}{'' if command == 'worker' else '-' + command}.log", "ab")
    return subprocess.Popen([str(script), command, "--loglevel", "info"], env=env, cwd=workdir,
                            stdout=log, stderr=subprocess.STDOUT)


def read_all(bootstrap: str, topic: str, idle_ms: int = 3000) -> list[dict]:
    async def read():
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        out = []
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=idle_ms, max_records=50000)
                if not batch:
                    return out
                for records in batch.values():
                    out += [orjson.loads(r.value) for r in records]
        finally:
            await consumer.stop()

    return asyncio.run(read())


def run_settings(settings: Settings, run: str) -> Settings:
    """The same input topics; this run's own consumer group, changelog, output topics and Redis keys."""
    app_id = f"{settings.app_id}-{run}"
    topics = replace(settings.topics, **{k: f"{app_id}.{k}" for k in ("scores", "alerts", "deadletter", "control")})
    run = replace(settings, app_id=app_id, redis_prefix=app_id, topics=topics)
    asyncio.run(create_topics(run))
    return run


def state_bytes(settings: Settings) -> dict:
    """Bytes per account in the table: the newest changelog value of every key."""
    sizes = sorted(len(v) for v in asyncio.run(read_table(settings)).values() if v)
    return {"accounts": len(sizes), "mean": round(statistics.fmean(sizes)), "p99": sizes[int(0.99 * len(sizes))],
            "max": sizes[-1]}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stack_pids() -> dict[str, int]:
    """The broker's and Redis's pids from ops/stack's pid files, where it started them."""
    stack_dir = Path(os.environ.get("HEALTH_STACK_DIR", ROOT / ".stack"))
    pids = {}
    for name in ("kafka", "redis"):
        try:
            pids[name] = int((stack_dir / f"{name}.pid").read_text())
        except (OSError, ValueError):
            pass
    return pids


def ready(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2).status == 200
    except OSError:
        return False


def scale_out(bootstrap: str, partitions: int, events: list, workdir: Path) -> dict:
    """One worker against two on the same events. A worker that starts on a backlog takes every
    partition and works through a whole fetch before a second one can join, so each run starts
    its workers on empty topics, waits until all are ready in their group, then loads the events
    (encoded beforehand, one record batch per partition: the load takes about a second) and
    measures as D does."""
    runs = {}
    for name, workers in (("one", 1), ("two", 2)):
        settings = settings_for(f"bench-scale{workers}-{int(time.time())}", partitions, bootstrap)
        asyncio.run(create_topics(settings))
        kinds = topic_of_kind(settings)
        records = [(kinds[e.kind], partition_for(e.account_id, partitions), e.account_id.encode(), encode_event(e))
                   for e in events]
        ports = [6190 + i for i in range(workers)]

        def load(mark):
            deadline = time.monotonic() + 120
            while not all(ready(port) for port in ports):  # all in the group, the rebalance over
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers not ready; see {workdir}")
                time.sleep(0.2)
            time.sleep(2)
            mark()
            asyncio.run(_load_batches(bootstrap, records))

        runs[name] = ours_d(settings, len(records), workdir, workers=workers, before=load, first_port=ports[0])
    return {**runs, "ratio": round(runs["two"]["events_per_s"] / runs["one"]["events_per_s"], 2)}


async def _load_batches(bootstrap: str, records: list) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=512 * 1024, linger_ms=5)
    await producer.start()
    try:
        await asyncio.gather(*(f for *_, f in await send_records(producer, records)))
    finally:
        await producer.stop()


def ours_d(settings: Settings, total: int, workdir: Path, workers: int = 1, before=None, first_port: int = 6170,
           separate_sink: bool = False) -> dict:
    """The real worker(s) draining the preloaded topics, on the real clock, until every event is
    consumed and every score update is in Redis. The span runs from the start of the first batch
    (the earliest computation time of the batches' score updates) to the moment the read model had applied the
    last update (polled every 0.1 s). `separate_sink`: Redis is written by a `health read-model` process
    (HEALTH_READ_MODEL_SINK=separate), not by the workers."""
    ports = [first_port + i for i in range(workers)]
    mode = {"HEALTH_READ_MODEL_SINK": "separate"} if separate_sink else {}
    procs = [start_worker(settings, workdir, port, None, **mode) for port in ports]
    if separate_sink:
        procs.append(start_worker(settings, workdir, first_port + workers, None, "read-model", **mode))
        ports.append(first_port + workers)
    names = [f"worker{i}" for i in range(workers)] + (["read_model"] if separate_sink else [])
    total_of = lambda name: sum(metric(port, name) for port in ports)  # noqa: E731
    others = stack_pids()
    start: dict = {}

    def mark() -> None:  # the CPU accounting starts here
        start["cpu"] = {**{name: cpu_seconds(p.pid) for name, p in zip(names, procs)},
                        **{name: cpu_seconds(pid) for name, pid in others.items()}}
        start["wall"] = time.time()

    try:
        if before:
            before(mark)
        else:
            mark()
        deadline = time.monotonic() + 900
        while True:
            consumed = total_of("health_events_total")
            scored = total_of("health_score_updates_total")
            if consumed >= total and scored and total_of("health_read_model_updates_total") >= scored:
                done = time.time()
                cpu = {**{name: cpu_seconds(p.pid) for name, p in zip(names, procs)},
                       **{name: cpu_seconds(pid) for name, pid in others.items()}}
                break
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"worker exited or timed out; see {workdir}")
            time.sleep(0.1)
        batch_sum = total_of("health_batch_processing_seconds_sum")
        batches = total_of("health_batch_processing_seconds_count")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    records = read_all(settings.bootstrap_servers, settings.topics.scores)
    # from the first batch's score updates: a sweep (cause timer) runs only after the catch-up
    span = done - min(r["computed_at_ms"] for r in records if r["cause"] == "events") / 1000
    logged = (workdir / f"{settings.app_id}.log").read_text(errors="replace")
    loop = logged.split("event loop: ", 1)[1].split()[0] if "event loop: " in logged else "unknown"
    return {"events": total, "workers": workers, "seconds": round(span, 2), "events_per_s": round(total / span),
            "loop": loop, "score_updates": len(records), "batches": int(batches),
            "busy_share": round(batch_sum / span / workers, 3) if span else None,
            # cores used on average from the workers' start (or the load) to the end
            "cores_used": {k: round((cpu[k] - start["cpu"][k]) / (done - start["wall"]), 2) for k in cpu}}


def latency(bootstrap: str, partitions: int, workdir: Path, accounts: int, rate: float, seconds: float,
            seed: int) -> dict:
    """Event-to-score latency at a fixed offered load, from the score records (Kafka timestamp of the
    newest input record -> the update's computation), on the real clock."""
    settings = settings_for(f"bench-lat-{int(time.time())}", partitions, bootstrap)
    asyncio.run(create_topics(settings))
    worker = start_worker(settings, workdir, 6171, None)
    try:
        time.sleep(8)  # the worker joins its group before the load starts
        base = customer_base(accounts, CustomerMix(), seed)
        stream = live(base, time.time(), seed, rate=rate, duration=seconds)
        report = asyncio.run(publish(stream, settings, rate=rate))
        time.sleep(3)
    finally:
        worker.terminate()
        worker.wait(30)

    records = [r for r in read_all(bootstrap, settings.topics.scores) if r.get("source_timestamp_ms")]
    # the opening burst of the live stream (every account's attributes) is not steady load
    warm = min(r["computed_at_ms"] for r in records) + min(10_000, seconds * 1000 / 3)
    lat = sorted((r["computed_at_ms"] - r["source_timestamp_ms"]) / 1000 for r in records if r["computed_at_ms"] >= warm)
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    return {"offered_events_per_s": rate, "events": report.total, "score_updates": len(lat),
            "p50_ms": round(pick(0.5) * 1000, 1), "p99_ms": round(pick(0.99) * 1000, 1),
            "max_ms": round(lat[-1] * 1000, 1), "mean_ms": round(statistics.fmean(lat) * 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--latency-rate", type=float, default=1000.0)
    parser.add_argument("--latency-seconds", type=float, default=60.0)
    parser.add_argument("--bootstrap", default=os.environ.get("HEALTH_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip-usual", action="store_true", help="skip baseline C (the slowest run)")
    parser.add_argument("--skip-quix", action="store_true",
                        help="skip the quixstreams peers Q and Qc (they need the bench extra: pip install -e '.[bench]')")
    parser.add_argument("--skip-latency", action="store_true", help="skip the fixed-load latency run")
    parser.add_argument("--skip-scale-out", action="store_true", help="skip the two-worker run")
    parser.add_argument("--separate-sink", action="store_true",
                        help="also run D with Redis written by a `health read-model` process (row Ds)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench-results" / "pipeline.json")
    args = parser.parse_args()
    if not args.skip_quix and importlib.util.find_spec("quixstreams") is None:
        parser.error("quixstreams is not installed: pip install -e '.[bench]' (ops/install does), or --skip-quix")
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    settings = settings_for(f"bench-{int(time.time())}", args.partitions, args.bootstrap)
    asyncio.run(create_topics(settings))
    t0 = time.perf_counter()
    total, end, mix, events = preload(settings, args.events, args.accounts, args.seed)
    print(f"preloaded {total} events over {args.accounts} accounts in {time.perf_counter() - t0:.1f}s; "
          f"mix {', '.join(f'{k} {v:.0%}' for k, v in mix.items())}")
    a = asyncio.run(ceiling_a(settings, total))
    b, b_loop = faust_baseline("counter", settings, total, workdir)
    c, c_loop = (None, None) if args.skip_usual else faust_baseline("usual", settings, total, workdir)
    qc, qc_run = (None, None) if args.skip_quix else quix_baseline("counter", settings, total, workdir)
    q, q_run = (None, None) if args.skip_quix else quix_baseline("scorer", settings, total, workdir)
    one = run_settings(settings, "d1")
    d = ours_d(one, total, workdir)
    ds = ours_d(run_settings(settings, "d2"), total, workdir, separate_sink=True) if args.separate_sink else None
    scale = None if args.skip_scale_out else scale_out(args.bootstrap, args.partitions, events, workdir)
    state = state_bytes(one)
    lat = None if args.skip_latency else latency(args.bootstrap, args.partitions, workdir, min(args.accounts, 2000),
                                                 args.latency_rate, args.latency_seconds, args.seed)
    result = {"events": total, "accounts": args.accounts, "partitions": args.partitions,
              "ceiling_a_events_per_s": round(a), "ceiling_b_events_per_s": round(b),
              "baseline_c_events_per_s": round(c) if c else None,
              "quix_q_events_per_s": round(q) if q else None, "quix_qc_events_per_s": round(qc) if qc else None,
              "quix": {"Q": q_run, "Qc": qc_run}, "ours_d": d, "ours_d_separate_sink": ds,
              "event_loops": {"B": b_loop, "C": c_loop, "D": d["loop"]},
              "scale_out": scale,
              "state_bytes_per_account": state,
              "d_over_a": round(d["events_per_s"] / a, 4), "d_over_b": round(d["events_per_s"] / b, 2),
              "d_over_c": round(d["events_per_s"] / c, 2) if c else None,
              "d_over_q": round(d["events_per_s"] / q, 2) if q else None,
              "d_over_qc": round(d["events_per_s"] / qc, 2) if qc else None, "latency": lat}
    print(f"{'run':<46}{'events/s':>12}")
    print(f"{'A: bare aiokafka getmany + orjson':<46}{round(a):>12}")
    print(f"{'B: minimal Faust agent counting events':<46}{round(b):>12}")
    if c:
        print(f"{'C: Faust scorer the usual way':<46}{round(c):>12}")
    if q:
        print(f"{'Qc: minimal quixstreams app counting events':<46}{round(qc):>12}")
        print(f"{'Q: quixstreams scorer the documented way':<46}{round(q):>12}")
        print(f"  quixstreams {q_run['quixstreams']}: counted in all: Qc {qc_run['final_events']}, "
              f"Q {q_run['final_events']} of {total}")
    print(f"{'D: worker, events in to scores out':<46}{d['events_per_s']:>12}")
    if ds:
        print(f"{'Ds: D with Redis written by health read-model':<46}{ds['events_per_s']:>12}")
    print(f"D/A = {result['d_over_a']:.3f}   D/B = {result['d_over_b']:.2f}   D/C = {result['d_over_c']}   "
          f"D/Q = {result['d_over_q']}   D/Qc = {result['d_over_qc']}")
    if scale:
        print(f"scale-out, workers in their group before the load: one {scale['one']['events_per_s']} events/s, "
              f"two {scale['two']['events_per_s']} events/s: {scale['ratio']}x")
    print(f"state per account in the table after D: mean {state['mean']} B, p99 {state['p99']} B, max {state['max']} B "
          f"({state['accounts']} accounts)")
    print(f"event loops: B {b_loop}, C {c_loop}, D {d['loop']}")
    if lat:
        print(f"latency at {lat['offered_events_per_s']:g} events/s offered: p50 {lat['p50_ms']} ms, "
              f"p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms ({lat['score_updates']} score updates)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.json}")


if __name__ == "__main__":
    main()
