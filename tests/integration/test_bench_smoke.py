"""The pipeline benchmark runs end to end in a small configuration (figures are printed, not asserted)."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.harness import ROOT, consume

pytestmark = pytest.mark.broker


def test_pipeline_benchmark_runs_and_writes_its_table(stack, tmp_path):
    out = tmp_path / "pipeline.json"
    result = subprocess.run([sys.executable, str(ROOT / "ops/bench/bench_pipeline.py"), "--events", "3000",
                             "--accounts", "300", "--partitions", "4", "--latency-rate", "100",
                             "--latency-seconds", "15", "--bootstrap", stack.bootstrap, "--json", str(out),
                             "--separate-sink"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    table = json.loads(out.read_text())
    for key in ("ceiling_a_events_per_s", "ceiling_b_events_per_s", "baseline_c_events_per_s", "d_over_c",
                "quix_q_events_per_s", "quix_qc_events_per_s", "d_over_q", "d_over_qc"):
        assert table[key] > 0, key
    assert table["quix"]["Q"]["final_events"] == table["quix"]["Qc"]["final_events"] == table["events"]
    assert table["ours_d"]["events"] == table["events"] > 0
    assert table["ours_d_separate_sink"]["events"] == table["events"]
    assert "read_model" in table["ours_d_separate_sink"]["cores_used"]
    assert table["latency"]["score_updates"] > 0
    assert table["scale_out"]["two"]["workers"] == 2 and table["scale_out"]["ratio"] > 0
    assert table["state_bytes_per_account"]["accounts"] == table["accounts"]
    print(result.stdout)


@pytest.mark.parametrize("sink", ["worker", "separate"])
def test_state_benchmark_recovers_and_rolls_out_every_account(stack, tmp_path, sink):
    out = tmp_path / "state.json"
    result = subprocess.run([sys.executable, str(ROOT / "ops/bench/bench_state.py"), "--accounts", "3000",
                             "--templates", "20", "--partitions", "4", "--bootstrap", stack.bootstrap,
                             "--json", str(out)] + (["--separate-sink"] if sink == "separate" else []),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    table = json.loads(out.read_text())
    assert table["accounts_held"] == table["rollout_rescored"] == table["rollout_score_updates"] == 3000
    assert table["recovery_seconds"] > 0 and table["rollout_seconds"] > 0
    # every rolled-out score reached Redis, written by the worker or by the read-model process
    assert table["read_model_sink"] == sink and table["rollout_in_redis_seconds"] >= table["rollout_wall_seconds"]
    print(result.stdout)


def test_quixstreams_peers_count_every_event_once_and_keep_scores_in_their_state(stack, tmp_path):
    """Q and Qc (ops/bench/quix_baselines.py) on a small preloaded topic set: each counted exactly the events
    published, none twice (its count read after it stopped, seconds after the last), and Q's per-account
    state reached its changelog topic with a score for every account that had events."""
    from ops.bench import bench_pipeline as bench
    from streams.topics import create_topics

    # short: quixstreams names its changelog topic after the consumer group and all four input topics
    prefix = f"t-quix-{uuid.uuid4().hex[:8]}"
    settings = bench.settings_for(prefix, 4, stack.bootstrap)
    asyncio.run(create_topics(settings))
    total, _, _, events = bench.preload(settings, 2000, 200, seed=3)
    assert total == len(events) > 1000
    for app in ("counter", "scorer"):
        events_per_s, run = bench.quix_baseline(app, settings, total, tmp_path, settle=3, timeout=300)
        assert run["events"] == run["final_events"] == total, (app, run)
        assert events_per_s > 0 and run["quixstreams"]

    async def changelogs():
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
        await admin.start()
        try:
            return [t for t in await admin.list_topics() if t.startswith(f"changelog__{prefix}-quix-scorer--")]
        finally:
            await admin.close()

    (changelog,) = asyncio.run(changelogs())
    accounts = {e.account_id.encode() for e in events}
    scored = lambda records: {r.key.rsplit(b"|", 1)[0] for r in records if r.key.endswith(b'|"score"')}  # noqa: E731
    records = asyncio.run(consume(stack.bootstrap, changelog, lambda rs: scored(rs) >= accounts, timeout=30))
    assert scored(records) == accounts
