"""Restart to first score with the table in memory (memory://) and on disk (rocksdb://), in one run, on
the local stack (not a test).

    .venv/bin/python ops/bench/bench_restart.py [--accounts 100000] [--rounds 2]

The changelog is seeded as bench_state.py seeds it (N account states, copied from `--templates`
simulated accounts after 60 days). Then, one worker at a time in one consumer group:

- rocksdb, first start: an empty data directory, filled from the whole changelog;
- then `--rounds` times: a memory:// worker (rebuilds every account from the changelog), a rocksdb://
  worker restarted on the data directory of the one before (replays only what follows its stored
  offsets: nothing, here).

Each worker starts with one probe event waiting on the usage topic; restart to first score is from
the process start until the probe's score update is on the score topic. From its log: start to
"Worker ready" and the changelog records it replayed (Faust's "Highwater" and "Reading Starts At"
tables); its peak resident memory (VmHWM). Each is stopped with SIGTERM once its group has committed
the probe, so the next one starts clean. Every worker must end up holding N accounts: checked on
the last memory and rocksdb rounds through the band gauges (/metrics).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops" / "bench"))

from bench_pipeline import metric, settings_for  # noqa: E402
from bench_state import log_time, seed_changelog, send, template_values, wait  # noqa: E402
from schemas.events import UsageEvent, encode_event  # noqa: E402
from streams.worker.processor import partition_for  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.topics import changelog_topic, create_topics  # noqa: E402

PROBE_ACCOUNT = "acct-000001"
ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*(\d+)\s*\|\s*(-?\d+)\s*\|\s*$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_env(settings: Settings, port: int, store: str, data_dir: Path) -> dict[str, str]:
    return {**os.environ, "HEALTH_APP_ID": settings.app_id, "HEALTH_KAFKA_BROKER": settings.broker,
            "HEALTH_REDIS_PREFIX": settings.redis_prefix, "HEALTH_PARTITIONS": str(settings.partitions),
            "HEALTH_WEB_PORT": str(port), "HEALTH_STORE": store, "HEALTH_DATA_DIR": str(data_dir),
            **{f"HEALTH_TOPIC_{kind.upper()}": name for kind, name in vars(settings.topics).items()}}


def log_table(log: str, title: str, changelog: str) -> dict[int, int]:
    """partition -> number from the Faust log table that follows `title` (the last such table in the log)."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if title in line]
    if not starts:
        return {}
    out = {}
    for line in lines[starts[-1] + 1:]:
        m = ROW.match(line.strip().replace("│", "|"))
        if m and (m.group(1) == changelog or m.group(1) == "〃"):
            out[int(m.group(2))] = int(m.group(3))
        elif out and not line.strip().startswith(("|", "+", "│", "┌", "├", "└")):
            break
    return out


def replayed(log: str, changelog: str) -> int:
    """Changelog records the worker read at start: highwater minus the offset reading started at, per partition."""
    highwaters = log_table(log, "Highwater for active changelog partitions", changelog)
    starts = log_table(log, "active offsets at start of reading", changelog)
    return sum(max(0, hw - max(starts.get(p, -1), -1)) for p, hw in highwaters.items() if hw >= 0)


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        return None
    return None


async def end_offsets(bootstrap: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
    finally:
        await admin.close()
    meta = offsets.get(tp)
    return meta.offset if meta is not None else -1


async def wait_for_score(bootstrap: str, topic: str, start: dict, event_id: str, proc: subprocess.Popen,
                         timeout: float) -> float:
    """Follow the score topic from `start` until the probe's score update; returns time.time() then."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                for record in records:
                    if event_id in orjson.loads(record.value).get("event_ids", ()):
                        return time.time()
        raise RuntimeError(f"no score update for the probe {event_id} (worker exit code {proc.poll()})")
    finally:
        await consumer.stop()


def run_worker(label: str, settings: Settings, store: str, data_dir: Path, workdir: Path, port: int,
               accounts: int, check_accounts: bool, n: int) -> dict:
    bootstrap = settings.bootstrap_servers
    changelog = changelog_topic(settings)
    scores = [TopicPartition(settings.topics.scores, p) for p in range(settings.partitions)]
    usage = TopicPartition(settings.topics.usage, partition_for(PROBE_ACCOUNT, settings.partitions))
    probe_id = f"bench-restart-probe-{n}"
    probe = UsageEvent(probe_id, PROBE_ACCOUNT, time.time(), "login", f"u-probe-{n}")
    asyncio.run(send(bootstrap, usage.topic, PROBE_ACCOUNT.encode(), encode_event(probe), usage.partition))
    start = asyncio.run(end_offsets(bootstrap, scores))
    log_path = workdir / f"worker-{n}-{label.replace(' ', '-')}.log"
    script = Path(sys.executable).with_name("health")
    started = time.time()
    proc = subprocess.Popen([str(script), "worker", "--loglevel", "info"], cwd=workdir,
                            env=worker_env(settings, port, store, data_dir), stdout=open(log_path, "ab"),
                            stderr=subprocess.STDOUT)
    try:
        scored = asyncio.run(wait_for_score(bootstrap, settings.topics.scores, start, probe_id, proc, 900))
        held = None
        if check_accounts:  # the gauges count the accounts of the table, scanned after recovery
            wait(lambda: metric(port, "health_accounts") >= accounts, 300, f"the gauges to count {accounts}", proc,
                 interval=0.5)
            held = int(metric(port, "health_accounts"))
        end = asyncio.run(end_offsets(bootstrap, [usage]))[usage]
        wait(lambda: asyncio.run(committed(bootstrap, settings.app_id, usage)) >= end, 120,
             "the probe to be committed", proc, interval=0.5)
        rss = peak_rss_mb(proc.pid)
    finally:
        proc.terminate()
        code = proc.wait(120)
    log = log_path.read_text(errors="replace")
    ready = log_time(log, "Worker ready")
    result = {"run": label, "store": store, "restart_to_first_score_seconds": round(scored - started, 2),
              "start_to_ready_seconds": round(ready - started, 2) if ready else None,
              "changelog_records_replayed": replayed(log, changelog), "peak_rss_mb": rss, "exit_code": code}
    if held is not None:
        result["accounts_held"] = held
    if store.startswith("rocksdb"):
        result["data_dir_mb"] = round(sum(f.stat().st_size for f in data_dir.rglob("*") if f.is_file()) / 2**20)
    print("  ".join(f"{k}={v}" for k, v in result.items()), flush=True)
    return result


def run(bootstrap: str, accounts: int, partitions: int, templates: int, seed: int, rounds: int,
        workdir: Path) -> dict:
    settings = settings_for(f"bench-restart-{int(time.time())}", partitions, bootstrap)
    asyncio.run(create_topics(settings))
    end = time.time()
    t0 = time.perf_counter()
    values = template_values(templates, partitions, end, seed)
    size = asyncio.run(seed_changelog(bootstrap, changelog_topic(settings), partitions, accounts, values))
    print(f"seeded {accounts} account states ({size / accounts:,.0f} B mean) in {time.perf_counter() - t0:.1f}s",
          flush=True)
    data_dir = workdir / "data"
    port, n, runs = free_port(), 0, []
    runs.append(run_worker("rocksdb first start", settings, "rocksdb://", data_dir, workdir, port, accounts,
                           False, n))
    for r in range(rounds):
        last = r == rounds - 1
        for label, store in (("memory", "memory://"), ("rocksdb restart", "rocksdb://")):
            n += 1
            runs.append(run_worker(label, settings, store, data_dir, workdir, port, accounts, last, n))
    restarts = {label: [x["restart_to_first_score_seconds"] for x in runs if x["run"] == label]
                for label in ("memory", "rocksdb restart")}
    return {"accounts": accounts, "partitions": partitions, "state_bytes_mean": round(size / accounts),
            "app_id": settings.app_id, "runs": runs,
            "memory_over_rocksdb_restart": round(min(restarts["memory"]) / min(restarts["rocksdb restart"]), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--templates", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bootstrap", default=os.environ.get("HEALTH_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=ROOT / "bench-results" / "restart.json")
    args = parser.parse_args()
    result = run(args.bootstrap, args.accounts, args.partitions, args.templates, args.seed, args.rounds,
                 Path(tempfile.mkdtemp(prefix="bench-restart-")))
    print(f"memory / rocksdb restart to first score (best of each): {result['memory_over_rocksdb_restart']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
