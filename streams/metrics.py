"""Prometheus metrics of a worker, on an injected registry (tests read it directly).

Names follow Prometheus conventions: base units, `_total` counters, `_seconds` durations,
and bounded label sets (event kind, outcome, alert type, cause; never an account id).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class HealthMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("health_events_total", "Input events by kind and outcome "
                              "(applied, duplicate, late, expired, future, dead_lettered, rerouted)",
                              ["kind", "outcome"], registry=r)
        self.score_updates = Counter("health_score_updates_total", "Score updates published, by cause",
                                     ["cause"], registry=r)
        self.alerts = Counter("health_alerts_total", "Alerts published, by type", ["type"], registry=r)
        self.batch_seconds = Histogram("health_batch_processing_seconds",
                                       "Time to process one fetched batch, from decode to published outputs",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.batch_events = Histogram("health_batch_events", "Input records per fetched batch",
                                      buckets=(1, 10, 50, 100, 500, 1000, 5000, 20000), registry=r)
        self.latency = Histogram("health_event_to_score_seconds",
                                 "From the input record's Kafka timestamp to its score update being published",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.rescore_runs = Counter("health_rescore_runs_total", "Re-evaluation sweeps, by cause (timer, model)",
                                    ["cause"], registry=r)
        self.rescore_seconds = Histogram("health_rescore_seconds", "Duration of a re-evaluation sweep",
                                         ["cause"], buckets=(0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
                                         registry=r)
        self.rescored_accounts = Counter("health_rescored_accounts_total", "Accounts re-evaluated by sweeps",
                                         ["cause"], registry=r)
        self.read_model_updates = Counter("health_read_model_updates_total",
                                          "Score updates written to the Redis read model", registry=r)
        self.read_model_errors = Counter("health_read_model_write_failures_total",
                                         "Failed Redis read model writes (retried)", registry=r)
        self.read_model_backlog = Gauge("health_read_model_backlog", "Score updates fetched, not yet in Redis",
                                        registry=r)
        self.model_errors = Counter("health_model_load_failures_total", "Health model files or messages refused",
                                    registry=r)
        self.model_info = Info("health_model", "The health model in use", registry=r)

    def on_batch(self, result, seconds: float, now: float) -> None:
        for (kind, outcome), n in result.outcomes.items():
            self.events.labels(kind, outcome).inc(n)
        for alert_type, n in result.alerts.items():
            self.alerts.labels(alert_type).inc(n)
        if result.outcomes:
            self.batch_seconds.observe(seconds)
            self.batch_events.observe(sum(result.outcomes.values()))
        for ts_ms in result.source_timestamps_ms:
            self.latency.observe(max(0.0, now - ts_ms / 1000.0))
        for cause, n in result.score_causes.items():
            self.score_updates.labels(cause).inc(n)

    def on_rescore(self, cause: str, accounts: int, seconds: float) -> None:
        self.rescore_runs.labels(cause).inc()
        self.rescore_seconds.labels(cause).observe(seconds)
        self.rescored_accounts.labels(cause).inc(accounts)

    def on_read_model_applied(self, n: int, backlog: int) -> None:
        self.read_model_updates.inc(n)
        self.read_model_backlog.set(backlog)

    def on_read_model_error(self, exc: Exception) -> None:
        self.read_model_errors.inc()

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
