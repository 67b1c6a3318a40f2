"""HEALTH_STORE=rocksdb://: a restarted worker keeps its accounts on local disk and resumes from there.

The proof that it does not rebuild from the changelog is not a time: before the restart the test
deletes the changelog records the store says it holds (Kafka's DeleteRecords, up to the store's
offset, whose record Faust reads again). A worker that re-read the changelog would then start from an empty (or partial) table and
its scores would lose the old events; one that kept its files scores them on top. Both variants
also read the RocksDB files while no worker runs: the store never holds a state the changelog lacks
(the hot path writes the table only after the changelog has it), and its offset is honest.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas.events import UsageEvent
from streams.worker.control import MODEL_KEY, model_message
from streams.core import load_model, score_all
from streams.settings import DEFAULT_MODEL
from tests.conftest import PARTITIONS
from tests.harness import ROOT, Worker, health_command, wait_for
from tests.integration.pipeline_helpers import (NOW, clock_file, deliveries, event_log, latest_scores, publish,
                                                read_all, wait_until_equal)

OFFSET_KEY = b"__faust\0offset__"  # where faust.stores.rocksdb.Store keeps a partition's changelog offset


@pytest.fixture(scope="module")
def model():
    return load_model(DEFAULT_MODEL)


def rocks_env(worker_env: dict, tmp_path: Path) -> dict[str, str]:
    return {**worker_env, "HEALTH_STORE": "rocksdb://", "HEALTH_DATA_DIR": str(tmp_path / "data"),
            "HEALTH_CLOCK_FILE": str(clock_file(tmp_path))}


def table_files(tmp_path: Path, app_id: str) -> dict[int, Path]:
    """The RocksDB directory of each table partition: <HEALTH_DATA_DIR>/<app id>/v1/tables/accounts-<p>.db."""
    tables = tmp_path / "data" / app_id / "v1" / "tables"
    return {p: tables / f"accounts-{p}.db" for p in range(PARTITIONS) if (tables / f"accounts-{p}.db").exists()}


def read_store(path: Path) -> tuple[int | None, dict[bytes, bytes]]:
    """(stored changelog offset, key -> value) of one partition's files, opened read-only (no worker runs)."""
    from rocksdict import AccessType, Options, Rdict

    db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        items = dict(db.items())
    finally:
        db.close()
    offset = items.pop(OFFSET_KEY, None)
    return (int(offset) if offset is not None else None), items


def read_changelog(bootstrap: str, topic: str) -> dict[int, list[tuple[int, bytes, bytes | None]]]:
    """partition -> [(offset, key, value)] of what the changelog holds now."""
    async def read():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            out = {tp.partition: [] for tp in tps}
            pending = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
            while pending:
                for tp, records in (await consumer.getmany(*pending, timeout_ms=1000)).items():
                    out[tp.partition] += [(r.offset, r.key, r.value) for r in records if r.offset < ends[tp]]
                pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
            return out, {tp.partition: ends[tp] for tp in tps}
        finally:
            await consumer.stop()

    return asyncio.run(read())


def delete_changelog_before(bootstrap: str, topic: str, before: dict[int, int]) -> None:
    """Delete every changelog record before the given offset of each partition. Kafka refuses DeleteRecords on
    a topic that is only compacted, so the test topic's policy becomes compact,delete first."""
    async def delete():
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                      {"cleanup.policy": "compact,delete"})])
            await asyncio.sleep(1.0)  # the broker applies a topic's new config asynchronously
            await admin.delete_records({TopicPartition(topic, p): RecordsToDelete(offset)
                                        for p, offset in before.items() if offset > 0}, timeout_ms=30_000)
        finally:
            await admin.close()

    asyncio.run(delete())


def check_store_against_changelog(tmp_path: Path, app_id: str, bootstrap: str, changelog_topic: str,
                                  complete: bool) -> dict[int, int]:
    """Every stored value is one the changelog has for that key (never a state it lacks), every key of the
    changelog up to the stored offset is stored with a value at least that recent; complete: the stored
    offset is the changelog's last (a clean stop). Returns partition -> the offset recovery reads from: Faust
    seeks to the stored offset itself (it reads that record again), 0 where nothing is stored."""
    changelog, ends = read_changelog(bootstrap, changelog_topic)
    files = table_files(tmp_path, app_id)
    resume = {}
    for partition in (p for p, end in ends.items() if end > 0):
        assert partition in files, f"partition {partition} has changelog records but no RocksDB files"
        offset, stored = read_store(files[partition])
        records = changelog[partition]
        if complete:
            assert offset == ends[partition] - 1, f"partition {partition}: stored offset {offset}, end {ends[partition]}"
        offset = -1 if offset is None else offset  # killed before its first commit there: it replays it all
        assert offset <= ends[partition] - 1, f"partition {partition}: stored offset {offset} past the changelog end"
        values_of: dict[bytes, list[bytes | None]] = {}
        latest_upto: dict[bytes, tuple[int, bytes | None]] = {}
        for at, key, value in records:
            values_of.setdefault(key, []).append(value)
            if at <= offset:
                latest_upto[key] = (at, value)
        for key, value in stored.items():
            assert value in values_of.get(key, []), f"partition {partition}: {key!r} holds a state the changelog lacks"
        for key, (at, value) in latest_upto.items():
            if value is not None:
                assert key in stored, f"partition {partition}: {key!r} (changelog offset {at} <= {offset}) not stored"
                later = [v for o, k, v in records if k == key and o >= at]
                assert stored[key] in later, f"partition {partition}: {key!r} older than the stored offset says"
        resume[partition] = max(offset, 0)
    return resume


def wait_until_acked(bootstrap: str, group: str, topics: list[str], alive, timeout: float = 60) -> None:
    """Until the worker's group has committed every input record: it acks a batch only after its table writes,
    outputs and stored offset, so no commit is half done when the worker is stopped after this."""
    async def acked() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        await admin.start()
        await consumer.start()
        try:
            committed = await admin.list_consumer_group_offsets(group)
            tps = [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
            ends = await consumer.end_offsets(tps)
            return all(ends[tp] == 0 or (tp in committed and committed[tp].offset >= ends[tp]) for tp in tps)
        finally:
            await consumer.stop()
            await admin.close()

    wait_for(lambda: asyncio.run(acked()) or not alive(), timeout, interval=1.0, what="the input to be committed")
    assert alive()


def new_events(accounts: list[str], seed: int) -> list[UsageEvent]:
    """Events after the restart: recent logins (within the allowed lateness), ids never used before."""
    rng = random.Random(seed)
    return [UsageEvent(f"after-{seed}-{a}-{i}", a, NOW - rng.uniform(60, 3 * 3600), "login", f"u-new-{i}")
            for a in accounts for i in range(rng.randint(3, 8))]


def roll_out_same_model(bootstrap: str, control_topic: str, version: str) -> None:
    """The default model under another version: the worker rescores every account it holds from its table."""
    text = "\n".join(f'version: "{version}"' if line.startswith("version:") else line
                     for line in DEFAULT_MODEL.read_text().splitlines()) + "\n"

    async def send():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(control_topic, model_message(text, version), key=MODEL_KEY, partition=0)
        finally:
            await producer.stop()

    asyncio.run(send())


def scored_under(bootstrap: str, topic: str, version: str, accounts: set[str], timeout: float, alive) -> dict:
    """account -> its score update under `version`, once every one of `accounts` has one."""
    deadline = time.monotonic() + timeout
    while True:
        got = latest_scores([r for r in read_all(bootstrap, topic) if r.get("model_version") == version])
        if accounts <= set(got):
            return got
        if time.monotonic() > deadline or not alive():
            raise AssertionError(f"{len(accounts - set(got))} of {len(accounts)} accounts not rescored under "
                                 f"{version} after {timeout}s (worker alive: {alive()})")
        time.sleep(1.0)


def same_score(a: dict, b: dict) -> bool:
    return (a["score"], a["band"], a["components"]) == (b["score"], b["band"], b["components"])


def assert_old_events_matter(old, new, model) -> None:
    """The test can fail: a worker that lost the old state would score only the new events, which differs."""
    full, new_only = score_all(old + new, model, NOW), score_all(new, model, NOW)
    differ = [a for a in full if new_only.get(a) is None or
              (full[a].score, full[a].band) != (new_only[a].score, new_only[a].band)]
    assert len(differ) >= len(full) // 2, f"only {len(differ)} of {len(full)} accounts depend on the old events"


@pytest.mark.broker
def test_a_stopped_worker_restarts_on_its_rocksdb_files_without_the_changelog(stack, worker_env, unique, tmp_path,
                                                                              model):
    env = rocks_env(worker_env, tmp_path)
    scores, changelog = f"{unique}.scores", f"{unique}-accounts-changelog"
    old = event_log(accounts=40, days=20, seed=61)
    accounts = sorted({e.account_id for e in old})
    publish(stack.bootstrap, unique, deliveries(old, seed=62))
    first = Worker(env, tmp_path, "--without-web", name="worker-1").start()
    try:
        before = latest_scores(wait_until_equal(stack.bootstrap, scores, score_all(old, model, NOW), timeout=120,
                                                alive=first.alive))
        # scores are out before the batch's commit returns: SIGTERM only once every batch is acked, so the stop
        # is clean (a SIGTERM inside a commit leaves that batch's offset unstored: replayed, as after a kill)
        wait_until_acked(stack.bootstrap, unique, [f"{unique}.{t}" for t in ("usage", "tickets", "surveys",
                                                                              "accounts")], first.alive)
    finally:
        code = first.stop(timeout=60)
    assert code == 0, f"SIGTERM: the worker exited with {code}\n{first.report()}"

    # a clean stop leaves the store complete: its offset is the changelog's last, nothing to replay
    resume = check_store_against_changelog(tmp_path, unique, stack.bootstrap, changelog, complete=True)
    # all but the last record of each partition (which Faust reads again): only the local files have the state
    delete_changelog_before(stack.bootstrap, changelog, resume)
    assert all(len(records) <= 1 for records in read_changelog(stack.bootstrap, changelog)[0].values())

    with Worker(env, tmp_path, "--without-web", name="worker-2") as second:
        # its table as it was: a model rollout rescores every account it holds, to the scores of before
        roll_out_same_model(stack.bootstrap, f"{unique}.control", "restart-check")
        after = scored_under(stack.bootstrap, scores, "restart-check", set(accounts), 120, second.alive)
        differ = [a for a in accounts if not same_score(after[a], before[a])]
        assert not differ, f"{len(differ)} accounts scored differently after the restart: {differ[:5]}"
        # new events are scored on top of the kept state
        later = new_events(accounts, seed=63)
        assert_old_events_matter(old, later, model)
        publish(stack.bootstrap, unique, later)
        wait_until_equal(stack.bootstrap, scores, score_all(old + later, model, NOW), timeout=120,
                         alive=second.alive)
    assert "Restoring state from changelog topics" not in second.log(), "the restarted worker replayed a changelog"
    assert "out of range" not in second.log()  # it read from its stored offsets, not from a reset position


@pytest.mark.broker
def test_a_killed_worker_catches_up_from_its_stored_offset(stack, worker_env, unique, tmp_path, model):
    """Killed mid-batch, its store may be behind the changelog; meanwhile another worker (memory://) takes the
    partitions and writes more states, for half of the accounts. Restarted on its files, it must replay
    exactly what follows its stored offsets: the records before them are deleted from Kafka first, so the
    other half's states are then nowhere but in its files."""
    env = rocks_env(worker_env, tmp_path)
    scores, changelog = f"{unique}.scores", f"{unique}-accounts-changelog"
    inputs = [f"{unique}.{t}" for t in ("usage", "tickets", "surveys", "accounts")]
    events = event_log(accounts=60, days=30, seed=71)
    accounts = sorted({e.account_id for e in events})
    kept = set(accounts[::2])  # accounts only the killed worker's files will know after the deletion
    settled = deliveries([e for e in events if e.account_id in kept], seed=72)
    moving = deliveries([e for e in events if e.account_id not in kept], seed=73)
    publish(stack.bootstrap, unique, settled + moving[:len(moving) // 3])
    first = Worker(env, tmp_path, "--without-web", name="worker-1").start()
    try:
        wait_until_equal(stack.bootstrap, scores, score_all(settled + moving[:len(moving) // 3], model, NOW),
                         timeout=120, alive=first.alive)
        wait_until_acked(stack.bootstrap, unique, inputs, first.alive)  # the kept accounts are never read again
        publish(stack.bootstrap, unique, moving[len(moving) // 3:2 * len(moving) // 3])
        time.sleep(random.Random().uniform(0.0, 1.5))  # SIGKILL while it works through these (or after)
    finally:
        first.kill()
    check_store_against_changelog(tmp_path, unique, stack.bootstrap, changelog, complete=False)

    with Worker({**env, "HEALTH_STORE": "memory://"}, tmp_path, "--without-web", name="worker-other") as other:
        publish(stack.bootstrap, unique, moving[2 * len(moving) // 3:])
        wait_until_equal(stack.bootstrap, scores, score_all(events, model, NOW), timeout=150, alive=other.alive)
        wait_until_acked(stack.bootstrap, unique, inputs, other.alive)

    # the killed worker's files, behind by (at least) what the other worker wrote
    resume = check_store_against_changelog(tmp_path, unique, stack.bootstrap, changelog, complete=False)
    _, ends = read_changelog(stack.bootstrap, changelog)
    behind = sum(ends[p] - offset - 1 for p, offset in resume.items())
    assert behind > 0, "the other worker wrote nothing to the changelog"
    print(f"changelog records after the killed worker's stored offsets: {behind} of {sum(ends.values())}")
    delete_changelog_before(stack.bootstrap, changelog, resume)  # what the store says it holds is gone from Kafka

    with Worker(env, tmp_path, "--without-web", name="worker-2") as second:
        later = new_events(accounts, seed=74)
        assert_old_events_matter(events, later, model)
        publish(stack.bootstrap, unique, later)
        wait_until_equal(stack.bootstrap, scores, score_all(events + later, model, NOW), timeout=150,
                         alive=second.alive)
        wait_until_acked(stack.bootstrap, unique, inputs, second.alive)
    # every account had events after the deletion: each key has records left to compare with
    check_store_against_changelog(tmp_path, unique, stack.bootstrap, changelog, complete=True)
    assert "out of range" not in second.log()  # it read from its stored offsets, not from a reset position


@pytest.mark.broker  # the worker command checks that Kafka and Redis answer before it builds the app
def test_rocksdb_store_without_the_extra_refuses_to_start(worker_env, tmp_path):
    """The bindings made unimportable (a `rocksdict` package that raises, first on the path): the worker stops
    at once with a message naming the setting and the extra, instead of failing inside Faust's start-up."""
    fake = tmp_path / "site" / "rocksdict"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('rocksdict hidden by the test')\n")
    env = {**os.environ, **worker_env, "PYTHONPATH": os.pathsep.join([str(fake.parent), str(ROOT)]),
           "HEALTH_STORE": "rocksdb://", "HEALTH_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(health_command() + ["worker", "--without-web"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "HEALTH_STORE=rocksdb://" in result.stderr and "'rocksdb' extra" in result.stderr, result.stderr[-2000:]
    assert "customer-health[rocksdb]" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "data").exists()  # refused before Faust made its directories


@pytest.mark.broker
def test_restart_benchmark_runs_small(stack, tmp_path):
    """ops/bench/bench_restart.py in a small configuration: it must work (its times are printed, not judged);
    the records replayed are counts: the memory:// worker reads the whole changelog, the restarted rocksdb://
    one only what the memory worker wrote after it stopped (its probe's state)."""
    out = tmp_path / "restart.json"
    result = subprocess.run([sys.executable, str(ROOT / "ops/bench/bench_restart.py"), "--accounts", "2000",
                             "--templates", "10", "--partitions", "4", "--rounds", "1",
                             "--bootstrap", stack.bootstrap, "--json", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    runs = {run["run"]: run for run in json.loads(out.read_text())["runs"]}
    assert set(runs) == {"rocksdb first start", "memory", "rocksdb restart"}
    assert all(run["exit_code"] == 0 for run in runs.values())
    assert runs["rocksdb first start"]["changelog_records_replayed"] == 2000
    assert runs["memory"]["changelog_records_replayed"] >= 2000
    # what the memory worker wrote: its probe's state (a timer sweep could add a few)
    assert 1 <= runs["rocksdb restart"]["changelog_records_replayed"] < 100
    assert runs["memory"]["accounts_held"] == runs["rocksdb restart"]["accounts_held"] == 2000
    print(result.stdout)
