"""Metrics, Prometheus rules and Grafana dashboards, without a broker.

The rules pass promtool (syntax, and unit tests of the alerts in ops/prometheus/tests/), the dashboards
are what ops/grafana/dashboards.py writes, and every metric a rule or a panel queries is one the
workers export. The portfolio gauges add up over partitions and follow each batch's score updates.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.core import load_model
from streams.core.simulate import account_events
from streams.worker.metrics import AccountIndex, HealthMetrics, consumer_lag, scan_partitions
from streams.worker.processor import HealthProcessor, OutputTopics, partition_for
from streams.settings import DEFAULT_MODEL
from tests.harness import ROOT
from tests.test_processor import KINDS, NOW, records_for, run

PROMETHEUS = ROOT / "ops" / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
DASHBOARDS = ROOT / "ops" / "grafana" / "dashboards"
SYNTHETIC = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
            "inf", "nan", "Inf", "NaN"}
N = 4


# ---------------------------------------------------------------------------------------- helpers
def promtool(*args: str) -> subprocess.CompletedProcess:
    if not shutil.which("promtool"):
        pytest.fail("promtool is not installed: run ops/install (Debian package prometheus)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=PROMETHEUS)


def metric_names(expr: str) -> set[str]:
    """The metric (and recording rule) names a PromQL expression selects: identifiers that are not
    functions, aggregations, keywords, label names, strings, durations or Grafana variables."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values, regexes)
    s = re.sub(r"\$__\w+|\$\{?\w+\}?", "1m", s)  # Grafana variables
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)  # label lists
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    names = set(re.findall(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()", s))
    return {n for n in names if n not in KEYWORDS and not re.fullmatch(r"\d+[smhdwy]", n)}


def exported_names(metrics: HealthMetrics) -> set[str]:
    """Every sample name the workers' registry can expose (a labelled family may have no child yet)."""
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",), "info": ("_info",),
                "histogram": ("_bucket", "_count", "_sum", "_created"), "summary": ("_count", "_sum", "_created")}
    names = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def rules() -> list[dict]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def dashboard_exprs() -> list[tuple[str, str, str]]:
    return [(name, panel["title"], t["expr"]) for name, d in dashboards().items() for panel in panels(d)
            for t in panel.get("targets", ())]


# ---------------------------------------------------------------------------------------- Prometheus
@pytest.mark.prometheus
def test_prometheus_config_and_rules_pass_promtool():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules/*.yml"] and len(RULE_FILES) >= 2
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(RULE_FILES)} rule files found" in checked.stdout + checked.stderr
    checked = promtool("check", "rules", *map(str, RULE_FILES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.prometheus
def test_alerting_rules_fire_as_specified():
    """ops/prometheus/tests/rules.test.yml: each alert fires on its synthetic series, not before."""
    tested = promtool("test", "rules", "tests/rules.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_rules_cover_engine_and_business_alerts():
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert {"HealthNoEventsConsumed", "HealthDeadLettersRising", "HealthConsumerLagGrowing",
            "HealthEventToScoreLatencyHigh", "HealthLowestBandShareRising"} <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"], name
    assert "0.25" in alerts["HealthEventToScoreLatencyHigh"]["expr"]  # the 250 ms target
    for rule in rules():
        if "record" in rule:  # level:metric:operations
            assert re.fullmatch(r"[a-z_]+:health_[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def test_every_metric_a_rule_or_dashboard_queries_is_exported():
    exported = exported_names(HealthMetrics(CollectorRegistry()))
    recorded = {r["record"] for r in rules() if "record" in r}
    unknown = []
    for rule in rules():
        for name in metric_names(rule["expr"]) - exported - recorded - SYNTHETIC:
            unknown.append(f"rule {rule.get('alert') or rule.get('record')}: {name}")
    for dashboard, title, expr in dashboard_exprs():
        for name in metric_names(expr) - exported - recorded - SYNTHETIC:
            unknown.append(f"{dashboard} panel {title!r}: {name}")
    assert not unknown, unknown
    # and the panels use most of what the workers export
    queried = set().union(*(metric_names(e) for _, _, e in dashboard_exprs()))
    assert {"health_accounts", "health_consumer_lag", "health_rebalances_total", "health_read_model_backlog",
            "health_batch_processing_seconds_bucket", "health_alerts_total", "health_events_total"} <= queried


def test_metric_names_parser():
    expr = ('sum by (job) (rate(health_events_total{outcome=~"dead_lettered|future", kind!="x"}[5m])) '
            '/ on (job) group_left (band) (job:health_events:rate1m offset 6h > 0.01) and up '
            'or histogram_quantile(0.99, sum by (le) (rate(health_batch_events_bucket[$__rate_interval]))) '
            'and deriv(x_y[10m:1m]) > 1e3')
    assert metric_names(expr) == {"health_events_total", "job:health_events:rate1m", "up",
                                  "health_batch_events_bucket", "x_y"}


# ---------------------------------------------------------------------------------------- Grafana
def test_dashboards_are_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location("dashboards", ROOT / "ops" / "grafana" / "dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered = module.render()
    assert set(rendered) == {p.name for p in DASHBOARDS.glob("*.json")}
    for name, content in rendered.items():
        assert (DASHBOARDS / name).read_text() == content, f"{name} is stale: run python ops/grafana/dashboards.py"


def test_dashboards_use_the_provisioned_datasource_and_show_what_the_issue_asks():
    datasource = yaml.safe_load((ROOT / "ops/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    found = dashboards()
    titles = {d["title"]: d for d in found.values()}
    assert {"Customer health", "Engine"} <= set(titles)
    assert len({d["uid"] for d in found.values()}) == len(found)
    for name, d in found.items():
        ids = [p["id"] for p in panels(d)]
        assert len(ids) == len(set(ids)), name
        for panel in panels(d):
            assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
            for t in panel.get("targets", ()):
                assert t["datasource"]["uid"] == uid and t["expr"].strip(), (name, panel["title"])
    customer = " ".join(p["title"] for p in panels(titles["Customer health"]))
    for wanted in ("Accounts per band", "Mean score per segment", "Alerts per hour", "declining accounts"):
        assert wanted in customer, wanted
    assert any(p["type"] == "table" for p in panels(titles["Customer health"]))
    engine = " ".join(p["title"] for p in panels(titles["Engine"]))
    for wanted in ("Events / s", "latency", "lag", "Dead letters", "Rebalances", "Batch processing", "Read model"):
        assert wanted.lower() in engine.lower(), wanted
    provider = yaml.safe_load((ROOT / "ops/grafana/provisioning/dashboards/health.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_compose_loads_the_rules_and_dashboards_and_runs_a_simulator():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert "./ops/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert "./ops/grafana/dashboards:/var/lib/grafana/dashboards:ro" in services["grafana"]["volumes"]
    simulator = services["simulator"]
    assert simulator["command"] == ["health", "simulate", "--accounts", "500", "--days", "30", "--live"]
    assert simulator["environment"]["HEALTH_KAFKA_BROKER"] == "kafka://kafka:19092"


# ---------------------------------------------------------------------------------------- metrics
def test_metric_names_follow_prometheus_conventions():
    metrics = HealthMetrics(CollectorRegistry())
    for family in metrics.registry.collect():
        assert re.fullmatch(r"health_[a-z0-9_]+", family.name), family.name
        assert not family.name.endswith("_total"), family.name  # prometheus_client adds it to counters
        labels = {label for sample in family.samples for label in sample.labels}
        assert not any("account" in label for label in labels), family.name
    help_of = {f.name: f for f in metrics.registry.collect()}
    assert help_of["health_events"].type == "counter" and help_of["health_consumer_lag"].type == "gauge"
    for name in ("health_batch_processing_seconds", "health_event_to_score_seconds", "health_rescore_seconds"):
        assert help_of[name].type == "histogram"


def test_event_alert_and_cause_counters_exist_at_zero():
    """rate() and increase() see the first events only when the series existed before them."""
    text = HealthMetrics(CollectorRegistry()).exposition()[0].decode()
    assert 'health_events_total{kind="usage",outcome="dead_lettered"} 0.0' in text
    assert 'health_alerts_total{type="health.band.degraded"} 0.0' in text
    assert 'health_score_updates_total{cause="timer"} 0.0' in text


@pytest.fixture(scope="module")
def model():
    return load_model(DEFAULT_MODEL)


def simulated_batches(accounts: int, seed: int = 3):
    import random

    from streams.core.days import DAY

    rng = random.Random(seed)
    events = []
    for i in range(accounts):
        events += account_events(f"acct-{i}", NOW - 40 * DAY, 40, rng, usage_per_day=rng.choice([0, 2, 8]), users=4)
    return records_for([e for e in events if e.occurred_at <= NOW])


def expected_portfolio(table: dict, processor_model) -> tuple[dict, dict]:
    """Accounts per (band, segment) and score points per segment, decoded from every envelope."""
    from collections import Counter

    from streams.core.engine import last_segment
    from streams.worker.envelope import load_envelope

    counts, points = Counter(), Counter()
    for value in table.values():
        envelope = load_envelope(value)
        if envelope.current and envelope.current[0] is not None:
            score, band = envelope.current
            segment = last_segment(envelope.state)
            counts[(band, segment)] += 1
            points[segment] += score
    return dict(counts), dict(points)


def test_portfolio_follows_batches_and_sums_over_partitions(model):
    metrics = HealthMetrics(CollectorRegistry())
    metrics.on_model(model)
    proc = HealthProcessor(model, OutputTopics("out.scores", "out.alerts", "out.dead"), KINDS, N)
    table: dict = {}
    metrics.index.begin(range(N))  # the worker owns every partition from the start
    metrics.on_batch(run(proc, table, simulated_batches(40)), 0.01, NOW)
    counts, points = metrics.index.totals()
    want_counts, want_points = expected_portfolio(table, model)
    assert dict(counts) == want_counts and sum(want_counts.values()) > 30
    assert points == pytest.approx(want_points)

    # per partition: two workers owning half each add up to the whole
    halves = [metrics.index.totals({0, 1})[0], metrics.index.totals({2, 3})[0]]
    assert halves[0] + halves[1] == counts

    metrics.publish_portfolio()
    exposed = {tuple(s.labels.values()): s.value for f in metrics.registry.collect() if f.name == "health_accounts"
               for s in f.samples}
    assert sum(exposed.values()) == sum(want_counts.values())
    assert {("Needs Attention", "enterprise"), ("Healthy", "default")} <= set(exposed)  # every band x segment
    mins = {s.labels["band"]: s.value for f in metrics.registry.collect() if f.name == "health_band_min_score"
            for s in f.samples}
    assert mins == {"Healthy": 70, "At Risk": 40, "Needs Attention": 0}


def test_band_moves_are_counted_and_revoked_partitions_leave_the_gauges():
    metrics = HealthMetrics(CollectorRegistry())
    metrics.bands, metrics.segments = ("Healthy", "At Risk"), ("default",)
    metrics.index.begin([0, 1])
    batch = SimpleNamespace(outcomes={}, alerts={}, alerts_held_back=0, alerts_snoozed=0, source_timestamps_ms=[],
                            score_causes={}, failures=0,
                            scores={"a": (0, 80.0, "Healthy", "default"), "b": (1, 50.0, "At Risk", "default"),
                                    "c": (2, 10.0, "At Risk", "default")})  # partition 2: not owned
    metrics.on_batch(batch, 0.0, 0.0)
    batch.scores = {"a": (0, 55.0, "At Risk", "default"), "b": (1, None, None, "default")}  # b: no data any more
    metrics.on_batch(batch, 0.0, 0.0)
    assert metrics.band_transitions.labels("Healthy", "At Risk")._value.get() == 1
    assert dict(metrics.index.totals()[0]) == {("At Risk", "default"): 1}
    assert metrics.index.totals()[1] == {"default": 55.0}

    metrics.on_assigned({1})  # a rebalance took partition 0 away
    assert len(metrics.index) == 0 and metrics.rebalances._value.get() == 1
    assert metrics.accounts.labels("At Risk", "default")._value.get() == 0
    assert metrics.active_partitions._value.get() == 1


def test_scan_indexes_a_newly_owned_partition_from_the_table(model):
    proc = HealthProcessor(model, OutputTopics("out.scores", "out.alerts", "out.dead"), KINDS, N)
    table: dict = {}
    run(proc, table, simulated_batches(30))
    data = {account.encode(): value for account, value in table.items()}
    index = AccountIndex()
    index.begin([0])  # partition 0 is already followed
    done = asyncio.run(scan_partitions(index, data, {1, 3}, N, lambda: False, chunk=7))
    assert done and set(index.partitions) == {0, 1, 3}
    want = {a for a in table if partition_for(a, N) in {1, 3}}
    scored = {a for p in (1, 3) for a in index.partitions[p].accounts}
    assert scored <= want and len(scored) >= len(want) - 2  # accounts without data have no score
    full, _ = expected_portfolio({a: v for a, v in table.items() if a in want}, model)
    assert dict(index.totals({1, 3})[0]) == full

    interrupted = AccountIndex()
    assert not asyncio.run(scan_partitions(interrupted, data, {2}, N, lambda: True, chunk=7))
    assert not interrupted.partitions


def test_consumer_lag_per_owned_input_partition():
    from faust.types import TP
    tps = [TP("in.usage", 0), TP("in.usage", 1), TP("in.tickets", 0), TP("accounts-changelog", 0), TP("in.surveys", 2)]
    highwaters = {("in.usage", 0): 120, ("in.usage", 1): 40, ("in.tickets", 0): 7, ("accounts-changelog", 0): 999}

    def highwater(tp):
        if (tp.topic, tp.partition) not in highwaters:
            raise RuntimeError("not fetched yet")
        return highwaters[(tp.topic, tp.partition)]

    consumer = SimpleNamespace(assignment=lambda: tps, highwater=highwater,
                               _committed_offset={tps[0]: 100, tps[1]: None},
                               _read_offset={tps[1]: 29})
    lags = consumer_lag(consumer, ["in.usage", "in.tickets", "in.surveys"])
    assert lags == {("in.usage", 0): 20, ("in.usage", 1): 10, ("in.tickets", 0): 7}

    metrics = HealthMetrics(CollectorRegistry())
    metrics.publish_lag(lags)
    metrics.publish_lag({("in.usage", 0): 0})
    series = {tuple(s.labels.values()): s.value for f in metrics.registry.collect()
              if f.name == "health_consumer_lag" for s in f.samples}
    assert series == {("in.usage", "0"): 0}


def test_accounts_without_a_band_for_too_little_data_are_counted_apart():
    from streams.worker.metrics import HealthMetrics
    from streams.core import load_model, DEFAULT_MODEL_PATH

    metrics = HealthMetrics()
    metrics.on_model(load_model(DEFAULT_MODEL_PATH))
    metrics.index.begin([0])
    batch = SimpleNamespace(outcomes={}, alerts={}, alerts_held_back=0, alerts_snoozed=0, source_timestamps_ms=[],
                            score_causes={}, failures=0, scores={"a": (0, 80.0, "Healthy", "default"),
                                                "b": (0, 30.0, "insufficient_data", "default")})
    metrics.on_batch(batch, 0.0, 0.0)
    metrics.publish_portfolio()
    body = metrics.exposition()[0].decode()
    assert 'health_accounts{band="insufficient_data",segment="default"} 1.0' in body
    assert 'health_accounts{band="Healthy",segment="default"} 1.0' in body
    assert 'health_accounts{band="insufficient_data",segment="onboarding"} 0.0' in body  # exported at zero
