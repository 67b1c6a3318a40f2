"""The pipeline benchmark runs end to end in a small configuration (figures are printed, not asserted)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.harness import ROOT

pytestmark = pytest.mark.broker


def test_pipeline_benchmark_runs_and_writes_its_table(stack, tmp_path):
    out = tmp_path / "pipeline.json"
    result = subprocess.run([sys.executable, str(ROOT / "ops/bench/bench_pipeline.py"), "--events", "3000",
                             "--accounts", "300", "--partitions", "4", "--latency-rate", "100",
                             "--latency-seconds", "15", "--bootstrap", stack.bootstrap, "--json", str(out)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    table = json.loads(out.read_text())
    for key in ("ceiling_a_events_per_s", "ceiling_b_events_per_s", "baseline_c_events_per_s", "d_over_c"):
        assert table[key] > 0, key
    assert table["ours_d"]["events"] == table["events"] > 0
    assert table["latency"]["score_updates"] > 0
    assert table["scale_out"]["two"]["workers"] == 2 and table["scale_out"]["ratio"] > 0
    assert table["state_bytes_per_account"]["accounts"] == table["accounts"]
    print(result.stdout)


def test_state_benchmark_recovers_and_rolls_out_every_account(stack, tmp_path):
    out = tmp_path / "state.json"
    result = subprocess.run([sys.executable, str(ROOT / "ops/bench/bench_state.py"), "--accounts", "3000",
                             "--templates", "20", "--partitions", "4", "--bootstrap", stack.bootstrap,
                             "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    table = json.loads(out.read_text())
    assert table["accounts_held"] == table["rollout_rescored"] == table["rollout_score_updates"] == 3000
    assert table["recovery_seconds"] > 0 and table["rollout_seconds"] > 0
    print(result.stdout)
