"""The control topic: health models rolled out to every worker.

Semantics (the README's "Rolling out a model"):

- The topic has one partition and is log-compacted; `health publish-model` writes each model under
  the fixed key `model`, so compaction keeps the latest one however old it is.
- The current model is the latest *valid* model message. A starting worker reads the topic up to
  its end before it consumes any event and applies only that one: it never replays history, so it
  never publishes score updates computed with a superseded model.
- After that every new model message is rolled out as it arrives. A message that is not a model
  (unknown `type`, not JSON, a model that does not build) is refused, counted by reason and logged
  once; the worker keeps the model it has.

Every worker reads the whole topic without a consumer group. Nothing an operator writes to the
topic can stop a worker.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.core.model import HealthModel
from streams.core.model_loader import ModelError, model_from_yaml
from streams.text import printable

log = logging.getLogger(__name__)

MODEL_KEY = b"model"
KEEP_AT_START = 64  # control messages a starting worker looks through for the latest valid model (newest first)
MESSAGE_TYPE = "model"
# outcomes of control messages (the label of health_control_messages_total)
APPLIED, SUPERSEDED, UNKNOWN, MALFORMED, REFUSED = "applied", "superseded", "unknown_type", "malformed", "refused"
OUTCOMES = (APPLIED, SUPERSEDED, UNKNOWN, MALFORMED, REFUSED)
REFUSALS = (UNKNOWN, MALFORMED, REFUSED)


@dataclass(frozen=True)
class Verdict:
    """What one control message is: a model (outcome None) or why it was refused."""

    offset: int
    model: HealthModel | None = None
    outcome: str | None = None  # UNKNOWN, MALFORMED, REFUSED when model is None
    reason: str = ""


def model_message(model_yaml: str, version: str) -> bytes:
    """The value `publish-model` writes (key MODEL_KEY)."""
    return orjson.dumps({"type": MESSAGE_TYPE, "version": version, "yaml": model_yaml})


def judge(offset: int, value: bytes | None, topic: str) -> Verdict:
    """Decode and build one control message; never raises."""
    source = f"{topic} message at offset {offset}"
    try:
        message = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError as err:
        return Verdict(offset, outcome=MALFORMED, reason=f"{source}: not JSON ({err})")
    if not isinstance(message, dict):
        return Verdict(offset, outcome=MALFORMED, reason=f"{source}: expected a JSON object")
    kind = message.get("type")
    if kind != MESSAGE_TYPE:
        return Verdict(offset, outcome=UNKNOWN, reason=f"{source}: unknown type {printable(repr(kind), 80)} "
                                                      f"(expected {MESSAGE_TYPE!r})")
    text = message.get("yaml")
    if not isinstance(text, str):
        return Verdict(offset, outcome=MALFORMED, reason=f"{source}: expected the model's YAML text in 'yaml'")
    try:
        return Verdict(offset, model=model_from_yaml(text, source))
    except ModelError as err:
        return Verdict(offset, outcome=REFUSED, reason=printable(str(err), 2000))
    except Exception as err:  # noqa: BLE001 - an operator's message must not stop a worker
        return Verdict(offset, outcome=REFUSED, reason=f"{source}: cannot build the model: "
                                                       f"{type(err).__name__}: {printable(str(err), 300)}")


class ControlChannel:
    """Reads the control topic: `load` once at start (latest valid model), then `follow`."""

    def __init__(self, bootstrap: str, topic: str, *, client_options: dict | None = None,
                 on_outcome: Callable[[str, bool], None] = lambda outcome, live: None):
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_options = client_options or {}
        self.on_outcome = on_outcome
        self.position: int | None = None  # the next offset to read after load()
        self.dropped = 0  # messages older than the last KEEP_AT_START at start: not judged

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                **self.client_options)

    async def load(self, timeout: float = 60.0) -> HealthModel | None:
        """The latest valid model on the topic up to its current end (None if there is none). The records
        are read first (`timeout` bounds that), then judged newest first until a valid model is found,
        off the event loop: a topic crowded with large models costs one build, not one per message."""
        records = await self._read_to_end(timeout)
        latest: Verdict | None = None
        refused: list[Verdict] = []
        for position, (offset, value) in enumerate(reversed(records)):
            verdict = await asyncio.to_thread(judge, offset, value, self.topic)
            if verdict.model is not None:
                latest = verdict
                for _ in range(len(records) - position - 1 + self.dropped):
                    self.on_outcome(SUPERSEDED, False)
                break
            refused.append(verdict)
            self.on_outcome(verdict.outcome, False)
        if refused:
            log.warning("control topic %s: %d message(s) after the model in use refused; the newest: %s",
                        self.topic, len(refused), refused[0].reason)
        if latest is None:
            if records:
                log.warning("control topic %s: no valid model among its last %d messages; using HEALTH_MODEL",
                            self.topic, len(records))
            return None
        self.on_outcome(APPLIED, False)
        log.info("control topic %s: applying model %s (offset %d; the topic ends at %d)", self.topic,
                 printable(latest.model.version, 80), latest.offset, self.position)
        return latest.model

    async def _read_to_end(self, timeout: float) -> list[tuple[int, bytes | None]]:
        """(offset, value) of the last KEEP_AT_START records up to the topic's end at the call
        (older ones are only counted, in `dropped`: a newer valid model supersedes them anyway)."""
        consumer = self._consumer()
        await consumer.start()
        tp = TopicPartition(self.topic, 0)
        kept: deque[tuple[int, bytes | None]] = deque(maxlen=KEEP_AT_START)
        self.dropped = 0
        try:
            consumer.assign([tp])
            begin = (await consumer.beginning_offsets([tp]))[tp]
            end = (await consumer.end_offsets([tp]))[tp]
            consumer.seek(tp, begin)  # (seek_to_beginning then position() gave the end here)
            deadline = asyncio.get_running_loop().time() + timeout
            following = begin
            while following < end:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"reading the control topic {self.topic} to offset {end} took over {timeout:g}s")
                batch = await consumer.getmany(tp, timeout_ms=500)
                records = batch.get(tp, ())
                if not records and await consumer.position(tp) >= end:
                    break  # compaction left a gap before the end
                for record in records:
                    following = record.offset + 1
                    if record.offset >= end:
                        break
                    if len(kept) == KEEP_AT_START:
                        self.dropped += 1
                    kept.append((record.offset, record.value))
            self.position = end
        finally:
            await consumer.stop()
        return list(kept)

    async def follow(self, stopping: asyncio.Event, roll_out: Callable[[HealthModel], Awaitable[None]]) -> None:
        """Roll out every model published after load(); refuse (count, log once) everything else."""
        consumer = self._consumer()
        await consumer.start()
        tp = TopicPartition(self.topic, 0)
        try:
            consumer.assign([tp])
            if self.position is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, self.position)
            while not stopping.is_set():
                batch = await consumer.getmany(tp, timeout_ms=500)
                for record in batch.get(tp, ()):
                    self.position = record.offset + 1  # a restarted reader goes on from here
                    # a model at the limits takes about a second to build: not on the event loop
                    verdict = await asyncio.to_thread(judge, record.offset, record.value, self.topic)
                    if verdict.model is None:
                        self.on_outcome(verdict.outcome, True)
                        log.error("control message refused, keeping the current model: %s", verdict.reason)
                        continue
                    self.on_outcome(APPLIED, True)
                    await roll_out(verdict.model)
        finally:
            await consumer.stop()
