"""A real Prometheus scrapes a real worker with the project's rules: the event counters move, the band
gauges add up to the accounts scored in Redis, the rules evaluate and every dashboard query runs."""
from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

from streams.core import load_model, score_all
from streams.settings import DEFAULT_MODEL
from tests.harness import ROOT, Worker, free_port, wait_for
from tests.integration.pipeline_helpers import NOW, clock_file, event_log, publish

pytestmark = [pytest.mark.broker, pytest.mark.prometheus]

RULES = sorted((ROOT / "ops" / "prometheus" / "rules").glob("*.yml"))
JOB = "health-workers"  # the job name the rules and dashboards select


class Prometheus:
    """/usr/bin/prometheus on a free loopback port, scraping `targets` every second with the project's rules."""

    def __init__(self, workdir, targets: list[str]):
        binary = shutil.which("prometheus")
        if not binary:
            pytest.fail("prometheus is not installed: run ops/install (Debian package prometheus)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in RULES],
            "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                                "static_configs": [{"targets": targets}]}],
        }))
        self.log_path = workdir / "prometheus.log"
        self.command = [binary, f"--config.file={self.config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{self.port}"]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Prometheus":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: self.ready() or self.proc.poll() is not None, 60, what="Prometheus to be ready")
        assert self.proc.poll() is None, self.log()
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def api(self, path: str, **params) -> dict:
        url = f"{self.url}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:  # a bad query answers 400 with the error in the body
            return json.loads(err.read())

    def query(self, expr: str) -> list[dict]:
        answer = self.api("query", query=expr)
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def value(self, expr: str) -> float | None:
        """The value of a query returning one sample (None while it returns none)."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


def test_prometheus_sees_the_events_and_band_gauges_add_up_to_the_scored_accounts(
        stack, worker_env, unique, redis_client, tmp_path):
    model = load_model(DEFAULT_MODEL)
    events = event_log(accounts=30, days=4, seed=21)
    scored = sum(1 for s in score_all(events, model, NOW).values() if s.score is not None)
    assert 300 <= len(events) <= 3000 and scored >= 20
    publish(stack.bootstrap, unique, events)

    port = free_port()
    env = {**worker_env, "HEALTH_CLOCK_FILE": str(clock_file(tmp_path))}
    with Worker(env, tmp_path, "--web-port", str(port)) as worker, \
            Prometheus(tmp_path, [f"127.0.0.1:{port}"]) as prometheus:
        def check(what, predicate, timeout=120):
            try:
                return wait_for(lambda: predicate() or not worker.alive(), timeout, interval=1, what=what)
            finally:
                assert worker.alive(), worker.report()

        check("the read model to hold every scored account",
              lambda: redis_client.zcard(f"{unique}:ranking") == scored)
        check("Prometheus to scrape the worker", lambda: prometheus.value(f'up{{job="{JOB}"}}') == 1)
        check("the event counters to count every published event",
              lambda: prometheus.value("sum(health_events_total)") == len(events))
        assert prometheus.value('sum(health_events_total{outcome="applied"})') > 0
        assert prometheus.value("sum(health_score_updates_total)") >= scored
        check("the band gauges to add up to the scored accounts",
              lambda: prometheus.value("sum(health_accounts)") == scored)

        # per band (and insufficient_data: scored, no band), the gauges equal the read model's band sets
        by_band = {r["metric"]["band"]: float(r["value"][1])
                   for r in prometheus.query("sum by (band) (health_accounts)")}
        assert by_band == {name: redis_client.scard(f"{unique}:band:{name}")
                           for name in [b.name for b in model.bands] + ["insufficient_data"]}
        assert prometheus.value("sum(health_active_partitions)") == int(worker_env["HEALTH_PARTITIONS"])
        assert prometheus.value("sum(health_rebalances_total)") >= 1
        lag = prometheus.query("health_consumer_lag")
        assert lag and {r["metric"]["topic"] for r in lag} <= {f"{unique}.{t}" for t in
                                                               ("usage", "tickets", "surveys", "accounts")}

        # the recording rules evaluate over the scraped series, and no rule fails
        check("the recording rules to see the band gauges",
              lambda: prometheus.value("sum(job_band:health_accounts:sum)") == scored, timeout=30)
        ratio = prometheus.value("job:health_accounts_lowest_band:ratio")
        lowest = min(model.bands, key=lambda b: b.min).name
        assert ratio == pytest.approx(by_band[lowest] / scored)
        groups = prometheus.api("rules")["data"]["groups"]
        assert {g["name"] for g in groups} >= {"health-engine-recording", "health-engine-alerts",
                                               "health-business-recording", "health-business-alerts"}
        failing = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] == "err"]
        assert not failing, failing

        # every dashboard query is valid PromQL that Prometheus evaluates
        for dashboard in sorted((ROOT / "ops" / "grafana" / "dashboards").glob("*.json")):
            for panel in json.loads(dashboard.read_text())["panels"]:
                for target in panel.get("targets", ()):
                    expr = target["expr"].replace("$__rate_interval", "1m")
                    answer = prometheus.api("query", query=expr)
                    assert answer["status"] == "success", (dashboard.name, panel["title"], answer.get("error"))


def test_band_gauges_of_two_workers_add_up_after_a_rebalance(stack, worker_env, unique, redis_client, tmp_path):
    """Each worker counts only the accounts of the partitions it owns actively: when a second worker
    joins and takes partitions over (scanning them from its recovered table), the sums stay the totals."""
    model = load_model(DEFAULT_MODEL)
    events = event_log(accounts=40, days=3, seed=22)
    scored = sum(1 for s in score_all(events, model, NOW).values() if s.score is not None)
    publish(stack.bootstrap, unique, events)
    env = {**worker_env, "HEALTH_CLOCK_FILE": str(clock_file(tmp_path))}
    ports = [free_port(), free_port()]
    partitions = int(worker_env["HEALTH_PARTITIONS"])
    with Worker(env, tmp_path, "--web-port", str(ports[0]), name="worker-a") as a, \
            Prometheus(tmp_path, [f"127.0.0.1:{p}" for p in ports]) as prometheus:
        def check(what, predicate, workers, timeout=120):
            try:
                return wait_for(lambda: predicate() or not all(w.alive() for w in workers), timeout, interval=1,
                                what=what)
            finally:
                for w in workers:
                    assert w.alive(), w.report()

        check("worker a to count every scored account", lambda: prometheus.value("sum(health_accounts)") == scored,
              [a])
        with Worker(env, tmp_path, "--web-port", str(ports[1]), name="worker-b") as b:
            def both_own_partitions_and_agree() -> bool:
                owned = {r["metric"]["instance"]: float(r["value"][1])
                         for r in prometheus.query("health_active_partitions")}
                per_worker = prometheus.query("sum by (instance) (health_accounts)")
                return (len(owned) == 2 and all(owned.values()) and sum(owned.values()) == partitions
                        and len(per_worker) == 2 and all(float(r["value"][1]) > 0 for r in per_worker)
                        and prometheus.value("sum(health_accounts)") == scored)

            check("both workers to own partitions and their band gauges to add up to the scored accounts",
                  both_own_partitions_and_agree, [a, b], timeout=180)
            assert redis_client.zcard(f"{unique}:ranking") == scored
            by_band = {r["metric"]["band"]: float(r["value"][1])
                       for r in prometheus.query("sum by (band) (health_accounts)")}
            assert by_band == {name: redis_client.scard(f"{unique}:band:{name}")
                               for name in [band.name for band in model.bands] + ["insufficient_data"]}
            assert prometheus.value("sum(health_rebalances_total)") >= 3  # a: start and b joining; b: start
