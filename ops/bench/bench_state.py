"""Table state at scale, on the local stack (not a test): how fast a worker rebuilds the state of
N accounts (default 100k) from the changelog and resumes, and how fast it rolls a new health
model out over all of them.

    .venv/bin/python ops/bench/bench_state.py [--accounts 100000]

The changelog is seeded directly: the table values of `--templates` simulated accounts after
60 days of history (scored by the worker's own HealthProcessor), copied under N account ids,
each written to its account's partition, as the worker would have written them. Then:

- recovery: a worker starts; from its log, the time from "Restoring state from changelog
  topics" to "Worker ready", and from process start to ready; then the worker's band gauges
  must count N scored accounts (the state is really there) and a probe event for one account
  must come out as a score update (it resumed);
- rollout: a model with another version and weights is published on the control topic; the
  worker's own measure of the sweep (health_rescore_seconds, cause "model"), the number of
  accounts it rescored, and when the read model had written all their score updates to Redis.
  `--separate-sink`: the read model is written by a `health read-model` process beside the worker
  (HEALTH_READ_MODEL_SINK=separate) instead of by the worker itself.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

from bench_handler import as_fetches, processor_for  # noqa: E402
from bench_pipeline import metric, read_all, settings_for, start_worker  # noqa: E402
from schemas.events import UsageEvent, encode_event  # noqa: E402
from streams.worker.control import MODEL_KEY  # noqa: E402
from streams.core import DEFAULT_MODEL_PATH, load_model  # noqa: E402
from streams.core.days import DAY  # noqa: E402
from streams.sinks.kafka_batches import send_records  # noqa: E402
from streams.worker.processor import partition_for  # noqa: E402
from streams.tools.simulator import CustomerMix, customer_base, history  # noqa: E402
from streams.topics import changelog_topic, create_topics  # noqa: E402

LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def template_values(templates: int, partitions: int, end: float, seed: int, intensity: float = 1.0,
                    model=None) -> list[bytes]:
    """Table values of `templates` simulated accounts after 60 days, scored by the worker's processor.
    Their outboxes are emptied: they stand for states whose outputs were published long ago."""
    events = list(history(customer_base(templates, CustomerMix(), seed), end - 60 * DAY, end - 60, seed,
                          intensity=intensity))
    [fetch] = as_fetches(events, partitions, 1)
    model = model if model is not None else load_model(DEFAULT_MODEL_PATH)
    result = processor_for(model, partitions).process(fetch, {}.get, end)
    values = []
    for _, value in result.writes.values():
        envelope = orjson.loads(value)
        envelope.pop("a", None)
        envelope.pop("u", None)
        values.append(orjson.dumps(envelope))
    return values


async def seed_changelog(bootstrap: str, changelog: str, partitions: int, accounts: int, values: list[bytes]) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(changelog, partitions, 1, topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=512 * 1024, linger_ms=5)
    await producer.start()
    size = 0
    try:
        for start in range(0, accounts, 20_000):
            records = []
            for i in range(start, min(accounts, start + 20_000)):
                account = f"acct-{i:06d}"
                value = values[i % len(values)]
                size += len(value)
                records.append((changelog, partition_for(account, partitions), account.encode(), value))
            await asyncio.gather(*(f for *_, f in await send_records(producer, records)))
    finally:
        await producer.stop()
    return size


def log_time(log: str, marker: str) -> float | None:
    for line in log.splitlines():
        if marker in line:
            m = LOG_TIME.match(line)
            if m:
                return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def wait(predicate, timeout: float, what: str, proc: subprocess.Popen, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(interval)


async def send(bootstrap: str, topic: str, key: bytes | None, value: bytes, partition: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


def rollout_model_yaml() -> str:
    text = DEFAULT_MODEL_PATH.read_text()
    text = re.sub(r'^version: .*$', 'version: "bench-rollout"', text, count=1, flags=re.M)
    return text.replace("adoption:     {weight: 35}", "adoption:     {weight: 40}", 1)


def run(bootstrap: str, accounts: int, partitions: int, templates: int, seed: int, workdir: Path,
        intensity: float = 1.0, separate_sink: bool = False) -> dict:
    settings = settings_for(f"bench-state-{int(time.time())}", partitions, bootstrap)
    asyncio.run(create_topics(settings))
    end = time.time()
    t0 = time.perf_counter()
    values = template_values(templates, partitions, end, seed, intensity)
    changelog = changelog_topic(settings)
    size = asyncio.run(seed_changelog(bootstrap, changelog, partitions, accounts, values))
    print(f"seeded {accounts} account states ({size / accounts:,.0f} B mean) in {time.perf_counter() - t0:.1f}s",
          flush=True)
    port = 6180
    started = time.time()
    sink_mode = {"HEALTH_READ_MODEL_SINK": "separate"} if separate_sink else {}
    worker = start_worker(settings, workdir, port, None, **sink_mode)
    # with --separate-sink the read model is written by a `health read-model` process beside the worker
    sink = start_worker(settings, workdir, port + 1, None, "read-model", **sink_mode) if separate_sink else None
    log_path = workdir / f"{settings.app_id}.log"
    try:
        wait(lambda: "Worker ready" in log_path.read_text(errors="replace"), 600, "the worker to be ready", worker)
        log = log_path.read_text(errors="replace")
        restoring, ready = log_time(log, "Restoring state from changelog"), log_time(log, "Worker ready")
        # the band gauges are refreshed from the table: they count the accounts the worker now holds
        wait(lambda: metric(port, "health_accounts") >= accounts, 120, f"the gauges to count {accounts} accounts",
             worker, interval=0.5)
        held = metric(port, "health_accounts")
        probe = UsageEvent("bench-probe-1", "acct-000001", time.time(), "login", "u-probe")
        sent = time.time()
        asyncio.run(send(bootstrap, settings.topics.usage, b"acct-000001", encode_event(probe),
                         partition_for("acct-000001", partitions)))
        wait(lambda: metric(port, "health_events_total") >= 1, 60, "the probe event", worker)
        probe_ms = (time.time() - sent) * 1000

        def in_redis() -> float:  # score updates the read model wrote, in the worker or beside it
            return metric(port, "health_read_model_updates_total") + metric(port + 1, "health_read_model_updates_total")

        wait(lambda: in_redis() >= 1, 60, "the probe's score in Redis", worker)
        before = in_redis()
        message = orjson.dumps({"type": "model", "version": "bench-rollout", "yaml": rollout_model_yaml()})
        published = time.time()
        asyncio.run(send(bootstrap, settings.topics.control, MODEL_KEY, message, 0))
        wait(lambda: metric(port, 'health_rescore_runs_total{cause="model"}') >= 1, 600, "the rollout", worker)
        rollout_wall = time.time() - published
        rollout_seconds = metric(port, 'health_rescore_seconds_sum{cause="model"}')
        rescored = metric(port, 'health_rescored_accounts_total{cause="model"}')
        wait(lambda: in_redis() >= before + rescored, 600, "the rollout's scores in Redis", worker, interval=0.2)
        rollout_redis = time.time() - published
    finally:
        for process in (worker, sink):
            if process is not None:
                process.terminate()
                process.wait(60)
    updates = [r for r in read_all(bootstrap, settings.topics.scores) if r.get("model_version") == "bench-rollout"]
    return {"accounts": accounts, "intensity": intensity, "read_model_sink": "separate" if separate_sink else "worker",
            "state_bytes_mean": round(size / accounts),
            "recovery_seconds": round(ready - restoring, 2) if ready and restoring else None,
            "start_to_ready_seconds": round(ready - started, 2) if ready else None,
            "accounts_held": int(held), "probe_event_to_metric_ms": round(probe_ms),
            "rollout_seconds": round(rollout_seconds, 2), "rollout_wall_seconds": round(rollout_wall, 2),
            "rollout_in_redis_seconds": round(rollout_redis, 2),
            "rollout_rescored": int(rescored), "rollout_score_updates": len(updates)}


def state_sizes(templates: int, partitions: int, seed: int, intensity: float) -> dict:
    """Table value bytes (mean, p99, max) of the templates under the shipped model and under the same model
    with every kind a day late at most (before issue 11 gave the synced kinds a week): the week's cost.
    In process, no broker."""
    import yaml

    from streams.core import parse_model

    doc = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    doc["state"]["allowed_lateness_seconds"] = 86400
    out = {}
    end = time.time()
    for name, model in (("one_day", parse_model(doc)), ("shipped", load_model(DEFAULT_MODEL_PATH))):
        sizes = sorted(len(v) for v in template_values(templates, partitions, end, seed, intensity, model))
        out[name] = {"mean": round(sum(sizes) / len(sizes)), "p99": sizes[min(len(sizes) - 1, len(sizes) * 99 // 100)],
                     "max": sizes[-1]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--templates", type=int, default=100)
    parser.add_argument("--bootstrap", default=os.environ.get("HEALTH_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--intensity", type=float, default=1.0,
                        help="the simulator's activity (1.0: its default, ~52 events per account and day)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench-results" / "state.json")
    parser.add_argument("--separate-sink", action="store_true",
                        help="the read model written by a `health read-model` process, not by the worker")
    parser.add_argument("--sizes", action="store_true",
                        help="only the state bytes, one-day lateness against the shipped model's (no broker)")
    args = parser.parse_args()
    if args.sizes:
        for name, figures in state_sizes(args.templates, args.partitions, args.seed, args.intensity).items():
            print(f"{name:<10}" + "  ".join(f"{k} {v:,} B" for k, v in figures.items()))
        return
    result = run(args.bootstrap, args.accounts, args.partitions, args.templates, args.seed,
                 Path(tempfile.mkdtemp(prefix="bench-state-")), args.intensity, args.separate_sink)
    for key, value in result.items():
        print(f"{key:<28}{value}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
