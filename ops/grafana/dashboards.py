"""The Grafana dashboards, as code: `python ops/grafana/dashboards.py` writes ops/grafana/dashboards/*.json.

Edit this file, not the JSON; tests/test_observability.py checks the JSON is what this writes and
that every metric a panel queries is one the workers export (or a recording rule).
Every panel uses the provisioned Prometheus datasource by its fixed uid.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "health-prometheus"}
BAND_COLOURS = {"Healthy": "green", "At Risk": "orange", "Needs Attention": "red"}  # the shipped model's
ALERT_COLOURS = {"health.band.degraded": "red", "health.band.recovered": "green",
                 "health.trend.declining": "orange", "health.component.threshold": "yellow",
                 "health.score.threshold": "dark-red", "health.score.fall": "purple"}


class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping to a new row."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0
        self.next_id = 1

    def place(self, panel: dict, w: int, h: int) -> dict:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        panel["id"] = self.next_id
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        return panel

    def row(self, title: str) -> dict:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel = {"type": "row", "title": title, "collapsed": False, "panels": []}
        self.place(panel, 24, 1)
        self.x, self.y, self.row_h = 0, self.y + 1, 0
        return panel


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False, table: bool = False) -> dict:
    t = {"datasource": DATASOURCE, "refId": ref, "expr": expr, "legendFormat": legend or "__auto",
         "range": not instant, "instant": instant}
    if table:
        t["format"] = "table"
    return t


def targets(*pairs: tuple[str, str]) -> list[dict]:
    return [target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(pairs)]


def colour_overrides(colours: dict[str, str]) -> list[dict]:
    return [{"matcher": {"id": "byName", "options": name},
             "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}]}
            for name, colour in colours.items()]


def timeseries(title: str, tgts: list[dict], unit: str = "short", description: str = "", stacked: bool = False,
               overrides: list | None = None, thresholds: list | None = None, bars: bool = False) -> dict:
    custom = {"drawStyle": "bars" if bars else "line", "fillOpacity": 40 if stacked or bars else 10,
              "lineWidth": 1, "showPoints": "never", "spanNulls": True,
              "stacking": {"mode": "normal" if stacked else "none", "group": "A"}}
    defaults: dict = {"unit": unit, "custom": custom, "min": 0}
    if thresholds:
        custom["thresholdsStyle"] = {"mode": "dashed"}
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "green", "value": None}] + thresholds}
    return {"type": "timeseries", "title": title, "description": description, "datasource": DATASOURCE,
            "targets": tgts, "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}}}


def stat(title: str, expr: str, unit: str = "short", description: str = "", thresholds: list | None = None,
         decimals: int | None = None) -> dict:
    steps = thresholds or []
    if not steps or steps[0]["value"] is not None:
        steps = [{"color": "green", "value": None}] + steps
    defaults: dict = {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}, "color": {"mode": "thresholds"}}
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"type": "stat", "title": title, "description": description, "datasource": DATASOURCE,
            "targets": [target(expr, instant=True)], "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "background", "graphMode": "area", "textMode": "value"}}


def bargauge(title: str, expr: str, legend: str, description: str = "", overrides: list | None = None) -> dict:
    return {"type": "bargauge", "title": title, "description": description, "datasource": DATASOURCE,
            "targets": [target(expr, legend, instant=True)],
            "fieldConfig": {"defaults": {"unit": "short", "min": 0, "color": {"mode": "fixed", "fixedColor": "blue"}},
                            "overrides": overrides or []},
            "options": {"orientation": "horizontal", "displayMode": "basic", "showUnfilled": True,
                        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}}


def table(title: str, expr: str, columns: dict[str, str], description: str = "", sort_by: str | None = None) -> dict:
    """An instant query shown as a table; `columns` renames labels (and Value) in display order."""
    order = {name: i for i, name in enumerate(columns)}
    panel = {"type": "table", "title": title, "description": description, "datasource": DATASOURCE,
             "targets": [target(expr, instant=True, table=True)],
             "fieldConfig": {"defaults": {"custom": {"align": "auto"}}, "overrides": []},
             "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
             "transformations": [{"id": "organize", "options": {
                 "excludeByName": {"Time": True, "job": True, "instance": True},
                 "indexByName": order, "renameByName": columns}}]}
    if sort_by:
        panel["options"]["sortBy"] = [{"displayName": sort_by, "desc": True}]
    return panel


def text(title: str, content: str) -> dict:
    return {"type": "text", "title": title, "options": {"mode": "markdown", "content": content}}


def dashboard(uid: str, title: str, description: str, panels: list[dict], tags: list[str]) -> dict:
    return {"uid": uid, "title": title, "description": description, "tags": tags, "editable": True,
            "schemaVersion": 39, "version": 1, "refresh": "10s", "timezone": "browser",
            "time": {"from": "now-3h", "to": "now"}, "graphTooltip": 1,
            "annotations": {"list": []}, "templating": {"list": []}, "links": [
                {"type": "dashboards", "tags": ["customer-health"], "asDropdown": False, "title": "Dashboards"}],
            "panels": panels}


READ_API = """\
Prometheus never holds per-account series (an account id is never a label), so the lowest and
falling accounts come from the Redis read model that every worker keeps up to date:

* `GET http://<worker>:6066/accounts/{account_id}`: score, band, components, the last change and what moved it
* `GET http://<worker>:6066/bands`: accounts per band
* `.venv/bin/health show <account_id>`: the same, with the score history
* `redis-cli ZRANGE health:ranking 0 19 WITHSCORES`: the 20 lowest scores
* `redis-cli ZRANGE health:history:<account_id> -30 -1 WITHSCORES`: an account's recent scores

Declining accounts are also announced on `health.alerts` (`health.band.degraded`,
`health.trend.declining`) for playbook engines; the table beside this shows the band moves counted by
the workers.
"""


def customer_health() -> dict:
    L = Layout()
    p = [L.row("Now")]
    p.append(L.place(stat("Scored accounts", "sum(health_accounts)",
                          description="Accounts with a score, over every worker's partitions"), 6, 4))
    p.append(L.place(stat("Mean score", "sum(health_segment_score_points) / sum(health_accounts)", decimals=1,
                          thresholds=[{"color": "orange", "value": None}, {"color": "green", "value": 70}],
                          description="Mean global score (points) of the scored accounts"), 6, 4))
    p.append(L.place(stat("In the lowest band", "sum(job:health_accounts_lowest_band:ratio)", unit="percentunit",
                          thresholds=[{"color": "orange", "value": 0.15}, {"color": "red", "value": 0.25}],
                          description="Share of the scored accounts in the model's lowest band"), 6, 4))
    p.append(L.place(stat("Band degradations, 24 h",
                          'sum(increase(health_alerts_total{type="health.band.degraded"}[24h]))', decimals=0,
                          thresholds=[{"color": "orange", "value": 10}],
                          description="health.band.degraded alerts published in the last 24 hours"), 6, 4))
    p.append(L.row("Bands"))
    p.append(L.place(timeseries("Accounts per band", targets(("sum by (band) (health_accounts)", "{{band}}")),
                                stacked=True, overrides=colour_overrides(BAND_COLOURS),
                                description="Band distribution over time (stacked)"), 16, 9))
    p.append(L.place(bargauge("Accounts per band, now", "sum by (band) (health_accounts)", "{{band}}",
                              overrides=colour_overrides(BAND_COLOURS)), 8, 9))
    p.append(L.place(timeseries("Share in the lowest band", targets(
        ("sum(job:health_accounts_lowest_band:ratio)", "lowest band")), unit="percentunit",
        description="Alert HealthLowestBandShareRising: up more than 5 points in 6 hours"), 12, 8))
    p.append(L.place(table("Accounts per segment and band", "sum by (segment, band) (health_accounts)",
                           {"segment": "segment", "band": "band", "Value": "accounts"}), 12, 8))
    p.append(L.row("Segments"))
    p.append(L.place(timeseries("Mean score per segment", targets(
        ("sum by (segment) (health_segment_score_points) / (sum by (segment) (health_accounts) > 0)", "{{segment}}")),
        unit="none", description="Mean global score (points) of the scored accounts of each segment"), 12, 8))
    p.append(L.place(timeseries("Scored accounts per segment", targets(
        ("sum by (segment) (health_accounts)", "{{segment}}")), stacked=True), 12, 8))
    p.append(L.row("Alerts and declining accounts"))
    p.append(L.place(timeseries("Alerts per hour, by type", targets(
        ("sum by (type) (increase(health_alerts_total[1h]))", "{{type}}")), stacked=True, bars=False,
        overrides=colour_overrides(ALERT_COLOURS),
        description="Alerts published on health.alerts (CloudEvents), by type"), 12, 8))
    p.append(L.place(timeseries("Band moves per hour", targets(
        ("sum by (from_band, to_band) (increase(health_band_transitions_total[1h]))", "{{from_band}} → {{to_band}}")),
        description="Score updates that moved an account to another band (no hysteresis, unlike alerts)"), 12, 8))
    p.append(L.place(table("Band moves, last 24 h",
                           "sort_desc(sum by (from_band, to_band) (increase(health_band_transitions_total[24h])) > 0)",
                           {"from_band": "from", "to_band": "to", "Value": "accounts"}, sort_by="accounts",
                           description="Accounts that changed band in the last 24 hours, by move"), 10, 10))
    p.append(L.place(text("Top declining accounts: the read API", READ_API), 14, 10))
    return dashboard("health-customers", "Customer health", "The customer base: bands, segments, alerts",
                     p, ["customer-health"])


def engine() -> dict:
    L = Layout()
    p = [L.row("Now")]
    p.append(L.place(stat("Workers up", 'sum(up{job="health-workers"})',
                          thresholds=[], description="Workers answering Prometheus' scrapes"), 4, 4))
    p.append(L.place(stat("Events / s", "sum(rate(health_events_total[1m]))", unit="ops", decimals=0), 4, 4))
    p.append(L.place(stat("p99 event → score", "max(job:health_event_to_score_seconds:p99_5m)", unit="s",
                          thresholds=[{"color": "orange", "value": 0.2}, {"color": "red", "value": 0.25}],
                          description="Target: 250 ms (alert HealthEventToScoreLatencyHigh)"), 4, 4))
    p.append(L.place(stat("Consumer lag", "sum(health_consumer_lag)", unit="short", decimals=0,
                          thresholds=[{"color": "orange", "value": 1000}, {"color": "red", "value": 100000}]), 4, 4))
    p.append(L.place(stat("Dead letters, 1 h",
                          'sum(increase(health_events_total{outcome=~"dead_lettered|future"}[1h]))', decimals=0,
                          thresholds=[{"color": "orange", "value": 1}]), 4, 4))
    p.append(L.place(stat("Active partitions", "sum(health_active_partitions)",
                          description="Partitions owned actively, over all workers: HEALTH_PARTITIONS when all is well"),
                     4, 4))
    p.append(L.row("Throughput"))
    p.append(L.place(timeseries("Events / s by kind", targets(
        ("sum by (kind) (rate(health_events_total[$__rate_interval]))", "{{kind}}")), unit="ops", stacked=True), 12, 8))
    p.append(L.place(timeseries("Events / s by outcome", targets(
        ("sum by (outcome) (rate(health_events_total[$__rate_interval]))", "{{outcome}}")), unit="ops",
        stacked=True, description="applied, duplicate, late, expired, future, dead_lettered, rerouted"), 12, 8))
    p.append(L.place(timeseries("Score updates / s by cause", targets(
        ("sum by (cause) (rate(health_score_updates_total[$__rate_interval]))", "{{cause}}")), unit="ops",
        stacked=True), 12, 8))
    p.append(L.place(timeseries("Batch size (records)", targets(
        ("histogram_quantile(0.5, sum by (le) (rate(health_batch_events_bucket[$__rate_interval])))", "p50"),
        ("sum(rate(health_batch_events_sum[$__rate_interval])) / sum(rate(health_batch_events_count[$__rate_interval]))",
         "mean"))), 12, 8))
    p.append(L.row("Latency"))
    p.append(L.place(timeseries("Event → score latency", targets(
        ("job:health_event_to_score_seconds:p50_5m", "p50"), ("job:health_event_to_score_seconds:p95_5m", "p95"),
        ("job:health_event_to_score_seconds:p99_5m", "p99")), unit="s", thresholds=[{"color": "red", "value": 0.25}],
        description="From the input record's Kafka timestamp to its score update being published; target 250 ms"),
        12, 8))
    p.append(L.place(timeseries("Batch processing time", targets(
        ("histogram_quantile(0.5, sum by (le) (rate(health_batch_processing_seconds_bucket[$__rate_interval])))", "p50"),
        ("histogram_quantile(0.99, sum by (le) (rate(health_batch_processing_seconds_bucket[$__rate_interval])))",
         "p99")), unit="s", description="One fetched batch, from decode to published outputs"), 12, 8))
    p.append(L.row("Kafka"))
    p.append(L.place(timeseries("Consumer lag by topic", targets(
        ("sum by (topic) (health_consumer_lag)", "{{topic}}")), stacked=True,
        description="High watermark minus committed offset (alert HealthConsumerLagGrowing)"), 12, 8))
    p.append(L.place(timeseries("Dead letters / min by kind", targets(
        ('sum by (kind) (rate(health_events_total{outcome=~"dead_lettered|future"}[$__rate_interval])) * 60',
         "{{kind}}")), stacked=True, description="Records sent to the dead-letter topic (alert HealthDeadLettersRising)"),
        12, 8))
    p.append(L.place(timeseries("Rebalances", targets(
        ("sum by (instance) (increase(health_rebalances_total[$__rate_interval]))", "{{instance}}")), bars=True,
        description="Partition assignments received by each worker"), 12, 8))
    p.append(L.place(timeseries("Active partitions per worker", targets(
        ("health_active_partitions", "{{instance}}")), stacked=True), 12, 8))
    p.append(L.row("Redis read model, re-evaluation and model"))
    p.append(L.place(timeseries("Read model", targets(
        ("sum(health_read_model_backlog)", "backlog"),
        ("sum(rate(health_read_model_updates_total[$__rate_interval]))", "writes / s"),
        ("sum(rate(health_read_model_write_failures_total[$__rate_interval]))", "failures / s")),
        description="Score updates not yet in Redis, writes and failed writes (retried)"), 12, 8))
    p.append(L.place(timeseries("Re-evaluation sweeps", targets(
        ("sum by (cause) (rate(health_rescored_accounts_total[$__rate_interval]))", "accounts / s ({{cause}})"),
        ("histogram_quantile(0.95, sum by (le, cause) (rate(health_rescore_seconds_bucket[$__rate_interval])))",
         "p95 seconds ({{cause}})")),
        description="Timer sweeps rescore accounts whose windows slid; model roll-outs rescore everything"), 12, 8))
    p.append(L.place(table("Health model per worker", "max by (instance, version, fingerprint) (health_model_info)",
                           {"instance": "worker", "version": "version", "fingerprint": "fingerprint"}), 16, 6))
    p.append(L.place(stat("Models refused, 24 h", "sum(increase(health_model_load_failures_total[24h]))", decimals=0,
                          thresholds=[{"color": "orange", "value": 1}]), 8, 6))
    # the model table shows the worker: keep its instance column
    p[-2]["transformations"][0]["options"]["excludeByName"] = {"Time": True, "Value": True, "job": True}
    return dashboard("health-engine", "Engine", "The workers: throughput, latency, lag, dead letters, Redis",
                     p, ["customer-health"])


DASHBOARDS = {"customer-health.json": customer_health, "engine.json": engine}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, content in render().items():
        (OUT / name).write_text(content)
        print(f"wrote {OUT / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
