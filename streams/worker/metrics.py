"""Prometheus metrics of a worker, on an injected registry (tests read it directly).

Names follow Prometheus conventions: base units, `_total` counters, `_seconds` durations,
and bounded label sets (event kind, outcome, alert type, cause, band, segment, input topic
partition; never an account id).

Portfolio gauges (accounts per band and segment, score points per segment) cover only the
accounts of the partitions this worker owns actively, so summing them over the workers gives
the whole customer base. They come from an `AccountIndex` kept up to date from each batch's
score updates; a refresh only adds up a few counters per partition, whatever the number of
accounts. A partition is scanned from the table once, when the worker starts owning it.
"""
from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections import defaultdict
from typing import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from schemas.events import EVENT_KINDS
from schemas.outputs import ALERT_TYPES, CAUSES, INSUFFICIENT_DATA, band_label
from streams.core.state import OUTCOMES
from streams.sinks.readmodel_sink import ReadModelMetrics
from streams.worker.control import OUTCOMES as CONTROL_OUTCOMES, REFUSALS as CONTROL_REFUSALS

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# every label value the counters can take, created at zero so rate() and increase() see the first events
EVENT_OUTCOMES = OUTCOMES + ("dead_lettered", "rerouted")  # the core's, and the worker's own


class _PartitionAccounts:
    """The scored accounts of one partition: account -> (band, segment, score), and their tallies."""

    __slots__ = ("accounts", "counts", "points", "members")

    def __init__(self) -> None:
        self.accounts: dict[str, tuple[str, str, float]] = {}
        self.counts: Tally = Tally()  # (band, segment) -> accounts
        self.points: dict[str, float] = {}  # segment -> sum of scores
        self.members: Tally = Tally()  # segment -> accounts

    def set(self, account: str, score: float | None, band: str | None, segment: str) -> str | None:
        """Record an account's current score; return its previous band (None if it had none)."""
        accounts = self.accounts
        old = accounts.get(account)
        scored = score is not None and band is not None
        if old is not None:
            old_band, old_segment, old_score = old
            if scored and old_band == band and old_segment == segment:  # the usual case: same band and segment
                accounts[account] = (band, segment, score)
                self.points[segment] += score - old_score
                return old_band
            del accounts[account]
            key = (old_band, old_segment)
            self.counts[key] -= 1
            if not self.counts[key]:
                del self.counts[key]
            self.members[old_segment] -= 1
            if self.members[old_segment]:
                self.points[old_segment] -= old_score
            else:  # no rounding drift left behind when a segment empties
                del self.members[old_segment], self.points[old_segment]
        if scored:
            accounts[account] = (band, segment, score)
            self.counts[(band, segment)] += 1
            self.members[segment] += 1
            self.points[segment] = self.points.get(segment, 0.0) + score
        return old[0] if old is not None else None


class AccountIndex:
    """Band, segment and score of every scored account of the worker's active partitions.

    Fed by the score updates of each batch (`apply`) and by a one-time scan of a partition's
    table entries when the worker starts owning it (`begin` then `load`). Updates for a
    partition that is not indexed are ignored: its scan will read the table, which is newer."""

    def __init__(self) -> None:
        self.partitions: dict[int, _PartitionAccounts] = {}

    def apply(self, scores: Mapping[str, tuple[int, float | None, str | None, str]]) -> list[tuple[str, str]]:
        """Record a batch's new scores; return the band transitions (from, to) among them."""
        transitions = []
        partitions = self.partitions
        for account, (partition, score, band, segment) in scores.items():
            part = partitions.get(partition)
            if part is None:
                continue
            before = part.set(account, score, band, segment)
            if before is not None and band is not None and before != band:
                transitions.append((before, band))
        return transitions

    def retain(self, owned: Iterable[int]) -> None:
        """Forget the partitions the worker no longer owns actively."""
        owned = set(owned)
        for partition in [p for p in self.partitions if p not in owned]:
            del self.partitions[partition]

    def missing(self, owned: Iterable[int]) -> set[int]:
        return {p for p in owned if p not in self.partitions}

    def begin(self, partitions: Iterable[int]) -> None:
        """Start indexing partitions (empty): batch updates apply to them from now on."""
        for partition in partitions:
            self.partitions.setdefault(partition, _PartitionAccounts())

    def load(self, partition: int, account: str, current: list | None, segment: str | None) -> None:
        """Record an account's stored score (the table envelope's `current` [score, band])."""
        part = self.partitions.get(partition)
        if part is None:
            return
        score, band = current if current else (None, None)
        band = band_label(score, band)
        part.set(account, score, band, segment or "default")

    def totals(self, partitions: Iterable[int] | None = None) -> tuple[Tally, dict[str, float]]:
        """Accounts per (band, segment) and score points per segment over the given indexed partitions."""
        counts: Tally = Tally()
        points: defaultdict[str, float] = defaultdict(float)
        for partition, part in self.partitions.items():
            if partitions is not None and partition not in partitions:
                continue
            counts.update(part.counts)
            for segment, value in part.points.items():
                points[segment] += value
        return counts, dict(points)

    def __len__(self) -> int:
        return sum(len(p.accounts) for p in self.partitions.values())


async def scan_partitions(index: AccountIndex, data, partitions: set[int], n: int,
                          interrupted: Callable[[], bool], chunk: int = 500) -> bool:
    """Index the stored score of every account of `partitions` from the table's data (account -> envelope
    bytes), yielding to the event loop every `chunk` keys; False (and nothing indexed) if interrupted."""
    from streams.core.engine import last_segment
    from streams.worker.envelope import load_envelope
    from streams.worker.processor import partition_for

    index.begin(partitions)  # batch updates apply from now on: the table is never older than them
    keys = list(data.keys())
    for start in range(0, len(keys), chunk):
        for key in keys[start:start + chunk]:
            account = key.decode()
            partition = partition_for(account, n)
            if partition in partitions:
                envelope = load_envelope(data.get(key))
                index.load(partition, account, envelope.current, last_segment(envelope.state))
        await asyncio.sleep(0)
        if interrupted():
            index.retain(set(index.partitions) - partitions)
            return False
    return True


def consumer_lag(consumer, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    """High watermark minus committed offset (else the read position) per assigned partition of `topics`,
    from a Faust consumer."""
    from streams.worker.batching import consumer_position, partition_lags

    return {(tp.topic, tp.partition): max(0, lag) for tp, lag in
            partition_lags(consumer, topics, lambda tp: consumer_position(consumer, tp)).items()}


class HealthMetrics(ReadModelMetrics):
    def __init__(self, registry: CollectorRegistry | None = None):
        super().__init__(registry)
        r = self.registry
        self.events = Counter("health_events_total", "Input events by kind and outcome "
                              "(applied, duplicate, late, expired, future, over_limit, dead_lettered, rerouted)",
                              ["kind", "outcome"], registry=r)
        self.account_failures = Counter("health_account_failures_total",
                                        "Accounts whose processing failed (events: their failing events were "
                                        "dead-lettered; timer, model: not rescored this time), by path",
                                        ["path"], registry=r)
        self.commit_failures = Counter("health_commit_failures_total",
                                       "Batches whose table writes or outputs Kafka did not take (processed again)",
                                       registry=r)
        self.control_messages = Counter("health_control_messages_total",
                                        f"Control topic messages by outcome ({', '.join(CONTROL_OUTCOMES)})",
                                        ["outcome"], registry=r)
        self.score_updates = Counter("health_score_updates_total", "Score updates published, by cause",
                                     ["cause"], registry=r)
        self.alerts = Counter("health_alerts_total", "Alerts published, by type", ["type"], registry=r)
        self.alerts_snoozed = Counter("health_alerts_snoozed_total",
                                      "Alerts not published because an operator snoozed the account", registry=r)
        self.snoozed_accounts = Gauge("health_snoozed_accounts", "Accounts snoozed now (every worker knows all)",
                                      registry=r)
        self.alerts_held_back = Counter("health_alerts_held_back_total",
                                        "Alerts not published because the events behind them are older than the "
                                        "model's alerts.history_horizon_hours (a replay, a backfill)", registry=r)
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
        self.model_errors = Counter("health_model_load_failures_total", "Health model files or messages refused",
                                    registry=r)
        self.model_info = Info("health_model", "The health model in use", registry=r)
        # portfolio: per worker over its active partitions, so sums over workers are the totals
        self.accounts = Gauge("health_accounts", "Scored accounts by band and segment, on this worker's active "
                              "partitions (sum over workers: the whole base)", ["band", "segment"], registry=r)
        self.segment_points = Gauge("health_segment_score_points",
                                    "Sum of the current global scores (points) by segment, on this worker's active "
                                    "partitions; mean score = sum of this / sum of health_accounts, by segment",
                                    ["segment"], registry=r)
        self.band_min_score = Gauge("health_band_min_score", "Lowest global score (points) of each band of the "
                                    "model in use; the band with the smallest is the lowest band",
                                    ["band"], registry=r)
        self.band_transitions = Counter("health_band_transitions_total",
                                        "Score updates that moved an account from one band to another",
                                        ["from_band", "to_band"], registry=r)
        # consumer
        self.consumer_lag = Gauge("health_consumer_lag", "Input records not yet committed (high watermark minus "
                                  "committed offset), per input topic partition this worker owns",
                                  ["topic", "partition"], registry=r)
        self.rebalances = Counter("health_rebalances_total", "Partition assignments this worker received",
                                  registry=r)
        self.active_partitions = Gauge("health_active_partitions",
                                       "Table partitions this worker owns actively", registry=r)
        self.gauges_refreshed = Gauge("health_gauges_refreshed_timestamp_seconds",
                                      "When the portfolio and lag gauges were last refreshed (Unix time)",
                                      registry=r)
        self.index = AccountIndex()
        self.bands: tuple[str, ...] = ()  # of the model in use: exported at zero too
        self.segments: tuple[str, ...] = ()
        self._portfolio_labels: set[tuple[str, ...]] = set()
        self._segment_labels: set[str] = set()
        self._lag_labels: set[tuple[str, str]] = set()
        for kind in EVENT_KINDS:
            for outcome in EVENT_OUTCOMES:
                self.events.labels(kind, outcome)
        for alert_type in ALERT_TYPES:
            self.alerts.labels(alert_type)
        for cause in CAUSES:
            self.score_updates.labels(cause)
        for path in ("events", *CAUSES[1:]):
            self.account_failures.labels(path)
        for outcome in CONTROL_OUTCOMES:
            self.control_messages.labels(outcome)

    def on_batch(self, result, seconds: float, now: float, path: str = "events") -> None:
        if result.failures:
            self.account_failures.labels(path).inc(result.failures)
        for (kind, outcome), n in result.outcomes.items():
            self.events.labels(kind, outcome).inc(n)
        for alert_type, n in result.alerts.items():
            self.alerts.labels(alert_type).inc(n)
        if result.alerts_held_back:
            self.alerts_held_back.inc(result.alerts_held_back)
        if result.alerts_snoozed:
            self.alerts_snoozed.inc(result.alerts_snoozed)
        if result.outcomes:
            self.batch_seconds.observe(seconds)
            self.batch_events.observe(sum(result.outcomes.values()))
        for ts_ms in result.source_timestamps_ms:
            self.latency.observe(max(0.0, now - ts_ms / 1000.0))
        for cause, n in result.score_causes.items():
            self.score_updates.labels(cause).inc(n)
        if result.scores:
            for before, after in self.index.apply(result.scores):
                self.band_transitions.labels(before, after).inc()

    def on_commit_failure(self) -> None:
        self.commit_failures.inc()

    def on_control_message(self, outcome: str, live: bool) -> None:
        """`live`: published while the worker ran (not read back from the topic's history at start)."""
        self.control_messages.labels(outcome).inc()
        if live and outcome in CONTROL_REFUSALS:
            self.model_errors.inc()

    def on_rescore(self, cause: str, accounts: int, seconds: float) -> None:
        self.rescore_runs.labels(cause).inc()
        self.rescore_seconds.labels(cause).observe(seconds)
        self.rescored_accounts.labels(cause).inc(accounts)

    def on_model(self, model) -> None:
        """The worker uses `model` (a streams.core HealthModel) from now on."""
        self.model_info.info({"version": model.version, "fingerprint": model.fingerprint})
        for band in set(self.bands) - {b.name for b in model.bands}:
            self.band_min_score.remove(band)
        self.bands = tuple(b.name for b in model.bands)
        for band in model.bands:
            self.band_min_score.labels(band.name).set(band.min)
        self.segments = (*(s.name for s in model.segments), model.default.name)

    def on_assigned(self, active: set[int]) -> None:
        """A rebalance gave this worker `active` partitions: drop the others from the portfolio gauges."""
        self.rebalances.inc()
        self.index.retain(active)
        self.active_partitions.set(len(active))
        self.publish_portfolio()

    def publish_portfolio(self) -> None:
        """Set the portfolio gauges from the index; the model's bands (and insufficient_data) x segments are
        exported even at zero."""
        counts, points = self.index.totals()
        segments = set(self.segments) | set(points) | {s for _, s in counts}
        labels = {(b, s) for b in (*self.bands, INSUFFICIENT_DATA) for s in segments} | set(counts)
        for key in labels:
            self.accounts.labels(*key).set(counts.get(key, 0))
        for key in self._portfolio_labels - labels:
            self.accounts.remove(*key)
        self._portfolio_labels = labels
        for segment in segments:
            self.segment_points.labels(segment).set(points.get(segment, 0.0))
        for segment in self._segment_labels - segments:
            self.segment_points.remove(segment)
        self._segment_labels = segments

    def publish_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Set the consumer lag of each (topic, partition) given; drop the series of the others."""
        labels = set()
        for (topic, partition), lag in lags.items():
            key = (topic, str(partition))
            self.consumer_lag.labels(*key).set(lag)
            labels.add(key)
        for key in self._lag_labels - labels:
            self.consumer_lag.remove(*key)
        self._lag_labels = labels
