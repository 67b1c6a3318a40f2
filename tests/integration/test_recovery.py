"""A killed worker's replacement scores again within seconds, not after the group's default minute."""
from __future__ import annotations

import asyncio
import time

import pytest

from schemas.events import UsageEvent, encode_event
from tests.harness import Worker, produce, wait_for
from tests.integration.pipeline_helpers import NOW, clock_file, deliveries, event_log, publish, read_all

pytestmark = pytest.mark.broker


def restart_to_first_score(stack, worker_env, unique, tmp_path, extra_env=None) -> float:
    env = {**worker_env, "HEALTH_CLOCK_FILE": str(clock_file(tmp_path)), **(extra_env or {})}
    events = event_log(accounts=20, days=10, seed=41)
    publish(stack.bootstrap, unique, deliveries(events, seed=42))
    scores = f"{unique}.scores"
    first = Worker(env, tmp_path, "--without-web", name="worker-1").start()
    wait_for(lambda: len(read_all(stack.bootstrap, scores)) >= 20 or not first.alive(), 90, what="first scores")
    first.kill()  # SIGKILL: it never leaves the group; the group waits out its session
    started = time.monotonic()
    with Worker(env, tmp_path, "--without-web", name="worker-2") as second:
        probe = UsageEvent("probe-1", "probe-account", NOW - 60, "login", "u1")
        asyncio.run(produce(stack.bootstrap, f"{unique}.usage", [(b"probe-account", encode_event(probe))]))
        wait_for(lambda: any(r["account_id"] == "probe-account" for r in read_all(stack.bootstrap, scores, 300))
                 or not second.alive(), 60, interval=0.5, what="the probe's score")
        assert second.alive()
        return time.monotonic() - started


def test_a_killed_workers_replacement_scores_before_the_old_minute_is_up(stack, worker_env, unique, tmp_path):
    """With Faust's default session (60 s) the dead worker kept its partitions past the probe's deadline
    (60 s from the restart); with the worker's 10 s the probe is scored. The time is printed, not judged."""
    seconds = restart_to_first_score(stack, worker_env, unique, tmp_path)
    print(f"restart to first score: {seconds:.1f} s")
