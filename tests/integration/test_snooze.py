"""Snoozes through the real broker and Redis: `health snooze` keeps a worker from publishing an account's
alerts (its scores go on), the read API shows the snooze, `health unsnooze` ends it; a worker started
later takes the snoozes already on the control topic."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from schemas.events import AccountEvent, encode_event
from tests.harness import Worker, free_port, health_command, produce, wait_for
from tests.integration.pipeline_helpers import NOW, clock_file, read_topic
from tests.integration.test_read_model import metric

pytestmark = pytest.mark.broker

MODEL = ("version: snooze-1\n"
         "measures:\n  rating: {type: attribute, attribute: csm_rating}\n"
         "components:\n  rating: {measure: rating, scoring: {type: max, max: 100}, weight: 1}\n"
         "alerts:\n  band_change: {margin_points: 0, cooldown_seconds: 0}\n")


def account(port: int, account_id: str) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/{account_id}", timeout=5) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError):
        return None


def test_a_snoozed_account_keeps_its_scores_and_loses_its_alerts_until_unsnoozed(stack, worker_env, unique,
                                                                                 tmp_path):
    model_file = tmp_path / "model.yaml"
    model_file.write_text(MODEL)
    port = free_port()
    env = {**worker_env, "HEALTH_MODEL": str(model_file), "HEALTH_CLOCK_FILE": str(clock_file(tmp_path)),
           "HEALTH_WEB_PORT": str(port)}
    cli_env = {**os.environ, **env}

    def rate(i: int, rating: int) -> None:
        event = AccountEvent(f"r{i}", "acme", NOW - 600 + i, {"csm_rating": rating})
        asyncio.run(produce(stack.bootstrap, f"{unique}.accounts", [(b"acme", encode_event(event))]))
        wait_for(lambda: (account(port, "acme") or {}).get("score") == float(rating), 60,
                 what=f"the score {rating} in the read model")

    def cli(*args: str) -> str:
        done = subprocess.run(health_command() + list(args), env=cli_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    with Worker(env, tmp_path) as worker:
        rate(0, 90)
        until = "2099-01-01"
        said = cli("snooze", "acme", "--until", until, "--reason", "renewal call on Monday")
        assert said.startswith("acme: alerts snoozed until 2099-01-01T00:00:00")
        shown = wait_for(lambda: (account(port, "acme") or {}).get("snooze"), 60, what="the snooze in the read API")
        assert shown["reason"] == "renewal call on Monday" and shown["until"].startswith("2099-01-01T00:00:00")
        assert "alerts snoozed until 2099-01-01" in cli("show", "acme")
        rate(1, 20)  # Healthy -> Needs Attention: scored, not alerted
        assert wait_for(lambda: metric(port, "health_alerts_snoozed_total") == 1, 30, what="the alert counted")
        cli("unsnooze", "acme")
        wait_for(lambda: "snooze" not in (account(port, "acme") or {"snooze": 1}), 60, what="the snooze to end")
        rate(2, 90)  # the move back is news again
        read_topic(stack.bootstrap, f"{unique}.alerts", timeout=30, until=lambda rs: len(rs) >= 1)
        settle = time.monotonic() + 2  # any further (wrong) alert would be there by then
        alerts = read_topic(stack.bootstrap, f"{unique}.alerts", timeout=30, until=lambda rs: time.monotonic() > settle)
        assert [(a["type"], a["data"]["band_before"], a["data"]["band_after"]) for a in alerts] == [
            ("health.band.recovered", "Needs Attention", "Healthy")]
        # a snooze published while the worker runs is also taken by a worker started after it
        cli("snooze", "acme", "--until", until, "--reason", "on hold")
        wait_for(lambda: (account(port, "acme") or {}).get("snooze", {}).get("reason") == "on hold", 60,
                 what="the second snooze")
        assert worker.alive(), worker.report()
    port = free_port()
    env["HEALTH_WEB_PORT"] = str(port)
    with Worker(env, tmp_path, name="worker-2") as again:
        wait_for(lambda: metric(port, "health_snoozed_accounts") == 1, 60, what="the snooze read at start")
        rate(3, 20)
        time.sleep(2)
        alerts = read_topic(stack.bootstrap, f"{unique}.alerts", timeout=30, until=lambda rs: len(rs) >= 1)
        assert len(alerts) == 1  # still only the recovery: the second drop is snoozed
        assert metric(port, "health_alerts_snoozed_total") == 1
        assert again.alive(), again.report()
