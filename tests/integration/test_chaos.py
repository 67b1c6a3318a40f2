"""The chaos run in its short configuration (ops/chaos --short): the worker SIGKILLed twice, the broker
restarted once and Redis restarted once with its data lost, while events flow; every account's score in
Redis must then equal the count of what was produced. The script runs its own private Kafka and Redis on
free ports, so this test needs the stack's binaries, not the shared stack."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.harness import ROOT

pytestmark = pytest.mark.broker

CHAOS = ROOT / "ops" / "chaos"
TIMEOUT = 1800  # every wait in the script is bounded; a healthy short run takes about 90 s


def test_short_chaos_run_ends_with_every_account_equal(tmp_path):
    """One plan (seed 1: the order of the kills and restarts and the pauses between them); another seed,
    HEALTH_CHAOS_SEED=<seed>, runs another plan."""
    run_dir = tmp_path / "chaos"
    seed = os.environ.get("HEALTH_CHAOS_SEED") or "1"
    command = [sys.executable, str(CHAOS), "--short", "--seed", seed, "--dir", str(run_dir)]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.terminate()  # on SIGTERM ops/chaos reports, stops its worker and its private stack
        try:
            output, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(f"ops/chaos --short --seed {seed} did not finish within {TIMEOUT}s; its output:\n{output}\n"
                    f"logs: {run_dir}")
    print(output)  # the figures, with `pytest -rP` or `-s`
    assert proc.returncode == 0, f"ops/chaos --short --seed {seed} exited {proc.returncode}; logs in {run_dir}\n{output}"
    assert "result                       PASS" in output, output
    assert "kills (SIGKILL)              2 of 2" in output, output
    assert "broker restarts survived     1" in output, output
    assert "redis restarts (data lost)   1" in output, output
