"""From fetched input records to table writes and output records, without Faust or Kafka.

One call per fetched batch: decode every record (bad ones become dead letters), group the
events by account, fold each account's events into its state with one call to the core, and
say what to write (one table value per account) and what to publish (score updates, alerts,
dead letters, records to re-route to their account's partition). The agent around it only
moves bytes.

Nothing a producer sends may stop the worker: a record that fails anywhere (decode, fold,
encode, an output the broker would refuse) becomes a dead letter with the reason, and the rest
of the batch goes on. An account's events are folded together, and added to the batch's result
only once nothing can fail; when something does, that account's events are folded one at a time
(see `_fold_each`), so the care costs only the accounts that need it.

The table value is an envelope around the core's account state: the per-account score
sequence number and the outbox, the outputs of the last write. Outputs are published only
after the state that produced them is durably in the changelog; if the worker dies between
the two, the replayed events are duplicates of that state, and a batch with duplicates
re-publishes the outbox: every output is published at least once, always with the same
content and id.
"""
from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import orjson
from aiokafka.partitioner import murmur2

from schemas import outputs
from schemas.events import InvalidEvent, decode_event
from streams.worker.snoozes import Snoozes
from streams.core.engine import (AccountUpdate, ScoreSnapshot, apply_events, floor_pending, last_score,
                                 needs_reevaluation, reevaluate, score_snapshot, snapshot_score)
from streams.core.model import HealthModel
from streams.text import printable
from streams.worker.envelope import Envelope, ScoreMeta, load_envelope

MAX_SCORE_EVENT_IDS = 3  # per score update (alerts carry up to MAX_ALERT_EVENT_IDS); kept in the table value, which must stay small
MAX_CHANGES = 3  # components in a score update's explanation, the largest changes first
# The broker refuses records over 1 MiB (message.max.bytes). A table value or output past this is
# refused here, with a dead letter for the events that would have made it, long before that.
MAX_RECORD_BYTES = 768 * 1024
# accounts remembered for a prompt silence floor after a batch of history (about 100 bytes each); the
# timer's sweep finds any beyond
MAX_PENDING_FLOORS = 100_000

log = logging.getLogger(__name__)


class StateTooLarge(ValueError):
    """An account's table value, or one of its outputs, would exceed MAX_RECORD_BYTES."""


def partition_for(account_id: str, partitions: int) -> int:
    """Kafka's default (murmur2) partitioner: where producers keyed by account_id put an account."""
    return (murmur2(account_id.encode()) & 0x7FFFFFFF) % partitions


@dataclass(slots=True)
class Output:
    topic: str
    partition: int
    key: bytes
    value: bytes


@dataclass(slots=True)
class BatchResult:
    """What one batch asks the worker to do, in this order: write, then publish."""

    writes: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # account -> (partition, envelope)
    outputs: list[Output] = field(default_factory=list)  # scores and alerts, after the writes are durable
    dead_letters: list[Output] = field(default_factory=list)
    reroutes: list[Output] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)  # (kind, outcome) -> events
    score_causes: Counter = field(default_factory=Counter)  # cause -> score updates
    alerts: Counter = field(default_factory=Counter)  # alert type -> count
    alerts_held_back: int = 0  # alerts not raised: the events behind them are history (a replay, a backfill)
    alerts_snoozed: int = 0  # alerts not published: their account is snoozed
    source_timestamps_ms: list[int] = field(default_factory=list)  # of the records behind each score update
    scores: dict[str, tuple[int, float | None, str | None, str]] = field(default_factory=dict)
    # account -> (partition, score, band, segment) of its new score, for the band and segment gauges
    failures: int = 0  # accounts whose processing raised (their events dead-lettered; see process)


@dataclass(frozen=True, slots=True)
class OutputTopics:
    scores: str
    alerts: str
    deadletter: str


class HealthProcessor:
    def __init__(self, model: HealthModel, topics: OutputTopics, input_kinds: dict[str, str], partitions: int,
                 max_event_bytes: int = 65536, snoozes: Snoozes | None = None):
        self.model = model
        self.snoozes = snoozes if snoozes is not None else Snoozes()  # operators' snoozes: alerts not published
        # set by the worker while it catches up on a backlog (at start, after taking partitions over): every
        # evaluation is then history, its alerts held back, and silence floors wait for the end of it (see
        # Pipeline.check_caught_up)
        self.catching_up = False
        # accounts whose silence floor waits (a batch of history), oldest first, for Pipeline.settle_floors
        self.pending_floors: dict[str, None] = {}
        self.topics = topics
        self.input_kinds = input_kinds  # input topic -> event kind
        self.partitions = partitions
        self.max_event_bytes = max_event_bytes

    # ------------------------------------------------------------------ events
    def process(self, batches: Iterable[tuple[str, int, list[Any]]], load: Callable[[str], bytes | None],
                now: float) -> BatchResult:
        """batches: (topic, partition, aiokafka records); load: account -> stored envelope or None.
        Never raises for what a record holds: a failing record is dead-lettered with the reason."""
        result = BatchResult()
        by_account: dict[str, list] = {}  # account -> [home partition, [(event, record, topic)], newest timestamp]
        for topic, partition, records in batches:
            kind = self.input_kinds[topic]
            for record in records:
                try:
                    if record.value is None:  # a tombstone: nothing to decode, but it must not stop the worker
                        raise InvalidEvent("", "a JSON object", "message: expected a JSON object, got a null value")
                    event = decode_event(record.value, kind, max_bytes=self.max_event_bytes)
                except InvalidEvent as err:
                    result.outcomes[(kind, "dead_lettered")] += 1
                    result.dead_letters.append(self._dead_letter(topic, partition, record, str(err), err.field, now))
                    continue
                except Exception as err:  # noqa: BLE001 - a decoder bug must not stop the worker either
                    result.outcomes[(kind, "dead_lettered")] += 1
                    result.dead_letters.append(self._dead_letter(topic, partition, record, _failure(err), None, now))
                    continue
                entry = by_account.get(event.account_id)
                if entry is None:  # its home partition, once per account and batch (murmur2 is not free)
                    entry = by_account[event.account_id] = [partition_for(event.account_id, self.partitions), [], 0]
                if entry[0] != partition:  # keyed by something else: send it to its account's partition
                    result.outcomes[(kind, "rerouted")] += 1
                    result.reroutes.append(Output(topic, entry[0], event.account_id.encode(), record.value))
                    continue
                entry[1].append((event, record, topic))
                if record.timestamp > entry[2]:
                    entry[2] = record.timestamp
        for account_id, (partition, items, newest_ts) in by_account.items():
            if not items:
                continue
            stored = load(account_id)
            try:  # _fold changes `result` only once nothing can fail any more
                self._fold(account_id, partition, stored, items, newest_ts, now, result)
            except Exception:  # noqa: BLE001 - find the records that fail; the rest is scored
                self._fold_each(account_id, partition, stored, items, now, result)
        return result

    def _fold(self, account_id: str, partition: int, stored: bytes | None, items: list, newest_ts: int,
              now: float, result: BatchResult) -> None:
        """One account's events of the batch into its state, its table write and its outputs. Either all of
        that is added to `result`, or (when it raises) none of it."""
        envelope = load_envelope(stored)
        stored_score = score_snapshot(envelope.state)
        events = [e for e, _, _ in items]
        update = apply_events(envelope.state, account_id, events, self.model, now, historic=self.catching_up)
        replayed = []
        if update.outcomes.get("duplicate"):  # maybe a replay after a crash: the outbox may be unsent
            replayed = self._outbox(envelope, account_id, partition, stored_score)
        letters = []
        where = {id(e): (r, t) for e, r, t in items} if update.rejected else None  # event -> its record
        for event, reason in update.rejected:
            if reason == "future":
                record, topic = where[id(event)]
                letters.append(self._dead_letter(
                    topic, partition, record,
                    f"occurred_at: expected a time at most {self.model.state.max_future_skew_seconds:g}s "
                    f"ahead of the worker's clock, got {outputs.iso(event.occurred_at)}", "occurred_at", now))
            elif reason == "over_limit":
                record, topic = where[id(event)]
                letters.append(self._dead_letter(
                    topic, partition, record, f"over a state limit of account {printable(account_id)!s}: "
                    f"{update.state.limit_reason(event)}", None, now))
        settled = self._settle(envelope, update, account_id, partition, "events", now, newest_ts)
        if not self.catching_up and floor_pending(update.state) and len(self.pending_floors) < MAX_PENDING_FLOORS:
            self.pending_floors[account_id] = None  # beyond the bound, the timer's sweep finds it
        # nothing below raises
        outcomes = result.outcomes
        for event, outcome in zip(events, update.event_outcomes):
            outcomes[(event.kind, outcome)] += 1
        result.outputs += replayed
        result.dead_letters += letters
        if settled is not None:
            settled.record(result)

    def _fold_each(self, account_id: str, partition: int, stored: bytes | None, items: list,
                   now: float, result: BatchResult) -> None:
        """An account whose events fail together: fold them one at a time, each onto the state the ones
        before it left; one that fails is dead-lettered with the reason and the rest go on. Once the
        state is at its size limit, the account's remaining events of the batch are refused as well
        (each further trial would decode and encode the whole state for nothing). Each fold is added
        to `result` (the account's last one holds its table write)."""
        current = stored
        full: StateTooLarge | None = None
        bad = 0
        for item in items:
            event, record, topic = item
            err: BaseException | None = full
            if err is None:
                try:
                    self._fold(account_id, partition, current, [item], record.timestamp, now, result)
                except Exception as failure:  # noqa: BLE001
                    err = failure
                    if isinstance(failure, StateTooLarge):
                        full = failure
            if err is None:
                if account_id in result.writes:
                    current = result.writes[account_id][1]
                continue
            bad += 1
            result.outcomes[(event.kind, "over_limit" if isinstance(err, StateTooLarge) else "dead_lettered")] += 1
            result.dead_letters.append(self._dead_letter(topic, partition, record, _failure(err), None, now))
        result.failures += 1
        log.warning("account %s: %d of %d events dead-lettered (%s)", printable(account_id, 80), bad, len(items),
                    _failure(full) if full else "the first failure is in its dead letter")

    # ------------------------------------------------------------------ timer / rollout
    def reevaluate(self, account_id: str, partition: int, stored: bytes, now: float, cause: str,
                   result: BatchResult, historic: bool = False, computed_at: float | None = None) -> bool:
        """Rescore a stored account if its windows slid, the model changed or its silence floor is pending;
        False if it was not due. `historic`: the sweep that ends a catch-up (its moves page nobody).
        `computed_at`: the time its score update says it was computed (default `now`, the evaluation's)."""
        try:
            envelope = load_envelope(stored)
            if envelope.state is None or not needs_reevaluation(envelope.state, self.model, now,
                                                                pending_floor=not self.catching_up):
                return False
            update = reevaluate(envelope.state, account_id, self.model, now, historic=historic or self.catching_up)
            settled = self._settle(envelope, update, account_id, partition, cause, now, None, computed_at)
        except Exception as err:  # noqa: BLE001 - one account's failure must not stop the sweep
            result.failures += 1
            log.warning("account %s not rescored (%s): %s", printable(account_id, 80), cause, _failure(err))
            return False
        if settled is not None:
            settled.record(result)
        return True

    # ------------------------------------------------------------------ helpers
    def _settle(self, envelope: "Envelope", update: AccountUpdate, account_id: str,
                partition: int, cause: str, now: float, newest_ts: int | None, computed_at: float | None = None
                ) -> "_Settled | None":
        """Turn a core update into the envelope to write and the outputs to publish after it (None: nothing
        to write)."""
        alerts, snoozed = update.alerts, 0
        if alerts and self.snoozes.active(account_id, now) is not None:
            alerts, snoozed = (), len(alerts)  # the alert state moved on: nothing is raised after the snooze
        if not update.state_changed and update.score is None and not alerts:
            return None
        envelope.state = update.state
        envelope.published = False
        if update.score is not None:
            envelope.seq += 1
            envelope.previous = envelope.current
            envelope.current = [update.score.score, update.score.band]
            changes = update.changes[:MAX_CHANGES]
            envelope.meta = ScoreMeta(
                int((now if computed_at is None else computed_at) * 1000), cause, update.latest_event_time, newest_ts,
                list(update.applied_ids[-MAX_SCORE_EVENT_IDS:]),
                [[c.component, c.score_before, c.score_after, c.contribution_before, c.contribution_after]
                 for c in changes])
            envelope.published = True
        envelope.alerts = [outputs.alert_event(a.to_dict()) for a in alerts]
        value = envelope.dump()
        if len(value) > MAX_RECORD_BYTES:
            raise StateTooLarge(f"the account's state would be {len(value):,} bytes, over the limit of "
                                f"{MAX_RECORD_BYTES:,} (MAX_RECORD_BYTES)")
        return _Settled(account_id, partition, value, self._outbox(envelope, account_id, partition, score=update.score),
                        cause, update.score, newest_ts, alerts, update.held_back, snoozed)

    def _outbox(self, envelope: "Envelope", account_id: str, partition: int, snapshot: ScoreSnapshot | None = None,
                score=None) -> list[Output]:
        """The outputs of the envelope's last write: its score update (if it changed the score) and alerts.
        `snapshot`: the stored score, when the state has been folded further since that write."""
        key = account_id.encode()
        out = []
        if envelope.published:
            record = score_record(envelope, account_id, self.model, snapshot, score)
            out.append(Output(self.topics.scores, partition, key, _bounded(orjson.dumps(record))))
        for alert in envelope.alerts:
            out.append(Output(self.topics.alerts, partition, key, _bounded(orjson.dumps(alert))))
        return out

    def _dead_letter(self, topic: str, partition: int, record, reason: str, field_path: str | None,
                     now: float) -> Output:
        letter = outputs.dead_letter(topic=topic, partition=partition, offset=record.offset, key=record.key,
                                     raw=record.value or b"", reason=reason, field=field_path, at=now)
        key = record.key or b""
        if len(key) > outputs.DEAD_LETTER_KEY_CHARS:  # the letter is bounded, and so is its Kafka key
            key = hashlib.sha256(key).hexdigest().encode()
        return Output(self.topics.deadletter, partition, key, orjson.dumps(letter))


def _bounded(value: bytes) -> bytes:
    if len(value) > MAX_RECORD_BYTES:
        raise StateTooLarge(f"an output record would be {len(value):,} bytes, over the limit of "
                            f"{MAX_RECORD_BYTES:,} (MAX_RECORD_BYTES)")
    return value


def _failure(err: BaseException) -> str:
    """A dead letter's reason for an unexpected failure: what failed, one line."""
    if isinstance(err, StateTooLarge):
        return str(err)
    return f"could not process the event: {type(err).__name__}: {printable(str(err), 300)}"


@dataclass(slots=True)
class _Settled:
    """One account's table write and outputs, built and checked, to be added to a batch's result."""

    account_id: str
    partition: int
    value: bytes
    outputs: list[Output]
    cause: str
    score: Any  # the new AccountScore, or None when the score did not change
    newest_ts: int | None
    alerts: tuple
    held_back: int = 0
    snoozed: int = 0

    def record(self, result: BatchResult) -> None:
        score = self.score
        if score is not None:
            result.score_causes[self.cause] += 1
            result.scores[self.account_id] = (self.partition, score.score, outputs.band_label(score.score, score.band),
                                              score.segment)
            if self.newest_ts is not None:
                result.source_timestamps_ms.append(self.newest_ts)
        for alert in self.alerts:
            result.alerts[alert.type] += 1
        result.alerts_held_back += self.held_back
        result.alerts_snoozed += self.snoozed
        result.writes[self.account_id] = (self.partition, self.value)
        result.outputs += self.outputs


def score_record(envelope: "Envelope", account_id: str, model: HealthModel, snapshot: ScoreSnapshot | None = None,
                 score=None) -> dict:
    """The score update of the envelope's last published score, rebuilt from the stored state (or
    `snapshot`, its score before the state was folded further), so a re-publication after a crash has
    exactly the content of the first."""
    if score is None:  # rebuilt from the stored score: the same as the core returned when it was new
        score = (snapshot_score(snapshot, account_id, model) if snapshot is not None
                 else last_score(envelope.state, account_id, model))
    meta = envelope.meta
    previous = envelope.previous
    return outputs.score_update(
        account_id=account_id, seq=envelope.seq, score=score.to_dict(),
        previous={"score": previous[0], "band": previous[1]} if previous else None,
        changes=[{"component": n, "score_before": sb, "score_after": sa, "contribution_before": cb,
                  "contribution_after": ca, "change": round(ca - cb, 4)} for n, sb, sa, cb, ca in meta.changes],
        cause=meta.cause, computed_at=meta.computed_at_ms / 1000.0, event_time=meta.event_time,
        source_timestamp_ms=meta.source_timestamp_ms, event_ids=meta.event_ids)
