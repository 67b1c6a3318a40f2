"""Operating the engine: model rollout (file and control topic), the read API, the what-if preview."""
from __future__ import annotations

import json
import os
import subprocess
import urllib.request

import pytest
import yaml

from streams.core import parse_model, score_all
from streams.settings import DEFAULT_MODEL
from tests.harness import Worker, free_port, health_command, wait_for
from tests.integration.pipeline_helpers import NOW, clock_file, deliveries, event_log, publish, read_all

pytestmark = pytest.mark.broker


def model_variant(tmp_path, version: str, csm_weight: int):
    """The default model under another version, with the CSM rating weighing differently."""
    doc = yaml.safe_load(DEFAULT_MODEL.read_text())
    doc["version"] = version
    doc["sections"]["relationship"] = {"weight": csm_weight}
    path = tmp_path / f"{version}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, parse_model(doc, source=str(path))


def get_json(port: int, path: str):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_new_model_rescores_every_account_from_state_and_the_read_api_explains(stack, worker_env, unique,
                                                                                 tmp_path):
    first_path, first = model_variant(tmp_path, "ops-1", 15)
    model_file = tmp_path / "current.yaml"
    model_file.write_text(first_path.read_text())
    events = event_log(accounts=40, days=30, seed=21)
    accounts = {a for a, s in score_all(events, first, NOW).items() if s.score is not None}
    port = free_port()
    env = {**worker_env, "HEALTH_MODEL": str(model_file), "HEALTH_CLOCK_FILE": str(clock_file(tmp_path)),
           "HEALTH_WEB_PORT": str(port)}
    publish(stack.bootstrap, unique, deliveries(events, seed=22))
    with Worker(env, tmp_path) as worker:
        def versions():
            latest = {}
            for r in read_all(stack.bootstrap, f"{unique}.scores"):
                latest[r["account_id"]] = r
            return latest

        wait_for(lambda: len(versions()) == len(accounts) or not worker.alive(), 90, what="first scores")
        # the file changes: every account is rescored from table state, no Kafka replay
        second_path, second = model_variant(tmp_path, "ops-2", 60)
        model_file.write_text(second_path.read_text())
        wait_for(lambda: all(r["model_version"] == "ops-2" for r in versions().values()), 90,
                 what="every account rescored under ops-2")
        latest = versions()
        assert {r["cause"] for r in latest.values()} == {"model"}
        expected = score_all(events, second, NOW)
        assert {a: r["score"] for a, r in latest.items()} == {a: expected[a].score for a in accounts}

        # a bad model file is refused; the worker keeps ops-2
        model_file.write_text("version: broken\nmeasures: {}\n")
        wait_for(lambda: "model file refused" in worker.log(), 30, what="the bad model to be refused")
        assert worker.alive()

        # the control topic rolls out to every worker
        third_path, third = model_variant(tmp_path, "ops-3", 5)
        published = subprocess.run(health_command() + ["publish-model", str(third_path)],
                                   env={**os.environ, **env}, capture_output=True, text=True)
        assert published.returncode == 0, published.stderr
        wait_for(lambda: all(r["model_version"] == "ops-3" for r in versions().values()), 90,
                 what="every account rescored under ops-3 from the control topic")

        # the read API
        account = sorted(accounts)[0]
        status, body = wait_for(lambda: (lambda r: r if r[1].get("model_version") == "ops-3" else None)(
            get_json(port, f"/accounts/{account}")), 30, what="the read model to follow")
        assert status == 200 and body["account_id"] == account and body["components"]
        assert body["changes"] and {"component", "contribution_before", "contribution_after"} <= set(body["changes"][0])
        status, bands = get_json(port, "/bands")
        assert status == 200 and sum(bands["bands"].values()) == len(accounts)
        assert get_json(port, "/accounts/nobody")[0] == 404
        assert get_json(port, "/health/live") == (200, {"status": "live"})
        assert get_json(port, "/health/ready")[0] == 200

        shown = subprocess.run(health_command() + ["show", account], env={**os.environ, **env},
                               capture_output=True, text=True)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith(f"{account}: {body['score']} {body['band']}") and "model ops-3" in shown.stdout
        assert all(name in shown.stdout for name in body["components"])

        # what-if: the current state under another model, nothing changed; compared with the model the workers
        # run (ops-3 from the control topic), not the local file (ops-2 here)
        preview = subprocess.run(health_command() + ["what-if", str(first_path), "--limit", "5"],
                                 env={**os.environ, **env, "HEALTH_MODEL": str(second_path)},
                                 capture_output=True, text=True)
        assert preview.returncode == 0, preview.stderr
        assert f"model in force: ops-3 (from the control topic {unique}.control)" in preview.stdout, preview.stdout
        assert f"{len(accounts)} accounts; ops-3 -> ops-1" in preview.stdout
        before = score_all(events, third, NOW)
        after = score_all(events, first, NOW)
        for band in ("Healthy", "At Risk", "Needs Attention"):
            row = next(line for line in preview.stdout.splitlines() if line.startswith(band))
            n_before = sum(1 for a in accounts if before[a].band == band)
            n_after = sum(1 for a in accounts if after[a].band == band)
            assert row.split()[-2:] == [str(n_before), str(n_after)], (row, n_before, n_after)
        # the accounts that change band, the largest score change first, and each component's spread
        moved = sorted((a for a in accounts if before[a].band != after[a].band),
                       key=lambda a: (-abs(after[a].score - before[a].score), a))
        assert f"{len(moved)} accounts change band" in preview.stdout
        listed = [line.split(":")[0].strip() for line in preview.stdout.splitlines() if line.startswith("  acct-")]
        assert listed == moved[:5], (listed, moved)
        assert "component scores, p10/p50/p90 before -> after:" in preview.stdout
        csm = next(line for line in preview.stdout.splitlines() if line.startswith("  csm_rating"))
        assert csm.split()[1] == csm.split()[3]  # the same state, another weight: the same component scores
