"""The control topic through the real broker: a starting worker applies only the latest valid model
(history is never replayed), and nothing an operator writes to the topic stops a worker."""
from __future__ import annotations

import asyncio
import urllib.request

import pytest
import yaml

from streams.worker.control import MODEL_KEY, model_message
from streams.core import parse_model, score_all
from streams.settings import DEFAULT_MODEL
from tests.harness import Worker, free_port, produce, wait_for
from tests.integration.pipeline_helpers import NOW, clock_file, deliveries, event_log, publish, read_all

pytestmark = pytest.mark.broker


def variant(version: str, csm_weight: int) -> tuple[str, object]:
    doc = yaml.safe_load(DEFAULT_MODEL.read_text())
    doc["version"] = version
    doc["sections"]["relationship"] = {"weight": csm_weight}
    text = yaml.safe_dump(doc)
    return text, parse_model(doc, source=version)


def metric_values(port: int, name: str) -> dict[str, float]:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    out = {}
    for line in body.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, value = line.rsplit(" ", 1)
            out[labels[len(name):]] = float(value)
    return out


def control(stack, unique, *values: bytes) -> None:
    asyncio.run(produce(stack.bootstrap, f"{unique}.control", [(MODEL_KEY, v) for v in values]))


def test_a_starting_worker_applies_only_the_latest_valid_model_and_never_replays_history(
        stack, worker_env, unique, tmp_path):
    old_text, _ = variant("hist-1", 5)
    new_text, new = variant("hist-2", 40)
    control(stack, unique, model_message(old_text, "hist-1"), model_message(new_text, "hist-2"),
            b'{"type": "pause"}', b"\xff not json", model_message("version: broken\nmeasures: {}\n", "broken"))
    events = event_log(accounts=30, days=20, seed=31)
    accounts = {a for a, s in score_all(events, new, NOW).items() if s.score is not None}
    publish(stack.bootstrap, unique, deliveries(events, seed=32))
    port = free_port()
    env = {**worker_env, "HEALTH_CLOCK_FILE": str(clock_file(tmp_path)), "HEALTH_WEB_PORT": str(port)}
    with Worker(env, tmp_path) as worker:
        def scored():
            latest = {r["account_id"]: r for r in read_all(stack.bootstrap, f"{unique}.scores")}
            return len(latest) == len(accounts) or not worker.alive()

        wait_for(scored, 120, what="every account scored")
        assert worker.alive()
        records = read_all(stack.bootstrap, f"{unique}.scores")
        # not one score under the file's model or the superseded one: the latest valid model from the start
        assert {r["model_version"] for r in records} == {"hist-2"}
        assert {r["cause"] for r in records} == {"events"}
        expected = score_all(events, new, NOW)
        latest = {r["account_id"]: r for r in records}
        assert {a: r["score"] for a, r in latest.items()} == {a: expected[a].score for a in accounts}
        outcomes = metric_values(port, "health_control_messages_total")
        assert outcomes['{outcome="superseded"}'] == 1 and outcomes['{outcome="applied"}'] == 1
        assert outcomes['{outcome="unknown_type"}'] == 1 and outcomes['{outcome="malformed"}'] == 1
        assert outcomes['{outcome="refused"}'] == 1
        # read back at start, old refusals are counted but do not raise the "model refused" alert again
        assert metric_values(port, "health_model_load_failures_total")[""] == 0

        # while it runs: a model that cannot be used, then garbage, then a good model
        huge = yaml.safe_load(new_text)
        huge["version"] = "huge"
        huge["components"] = {f"c{i}": {"measure": next(iter(huge["measures"])), "section": "relationship",
                                        "scoring": {"type": "max", "max": 100}} for i in range(5000)}
        control(stack, unique, model_message(yaml.safe_dump(huge), "huge"), b"\x00" * 1000, b'{"type": 42}')
        wait_for(lambda: metric_values(port, "health_model_load_failures_total").get("") == 3 or not worker.alive(),
                 60, what="three refusals")
        assert worker.alive() and "hist-2" in urllib.request.urlopen(
            f"http://127.0.0.1:{port}/health/ready", timeout=5).read().decode()
        final_text, final = variant("hist-3", 10)
        control(stack, unique, model_message(final_text, "hist-3"))
        wait_for(lambda: all(r["model_version"] == "hist-3" for r in
                             {r["account_id"]: r for r in read_all(stack.bootstrap, f"{unique}.scores")}.values()),
                 90, what="every account rescored under hist-3")
    # the log names each refusal once, with its reason, and no traceback
    log = worker.log()
    assert "Traceback" not in log
    assert log.count("control message refused") == 3
