"""The control topic: health models rolled out to every worker, and operators' snoozes of accounts.

Semantics (the README's "Rolling out a model"):

- The topic has one partition and is log-compacted; `health publish-model` writes each model under
  the fixed key `model`, so compaction keeps the latest one however old it is.
- The current model is the latest *valid* model message. A starting worker reads the topic up to
  its end before it consumes any event and applies only that one: it never replays history, so it
  never publishes score updates computed with a superseded model.
- After that every new model message is rolled out as it arrives. A message that is not a model
  (unknown `type`, not JSON, a model that does not build) is refused, counted by reason and logged
  once; the worker keeps the model it has.

Snoozes (`health snooze` / `unsnooze`) share the topic under the keys `snooze:<account>`: every one is
taken in offset order, all of them at start (they are small; compaction keeps the latest per account),
then each as it arrives; see streams.worker.snoozes.

Every worker reads the whole topic without a consumer group. Nothing an operator writes to the
topic can stop a worker.

Trust (HEALTH_CONTROL_SECRET): whoever can write to the topic changes every score, so a shared secret
can be required. `publish-model` then adds `"signature": "hmac-sha256:<hex>"` to the message, an
HMAC-SHA256 with the secret over `signed_bytes`: a context string naming the scheme, then the message
type, the version and the YAML text exactly as the worker uses them (the decoded strings, UTF-8),
each preceded by its length, so no byte can be moved from one field to another and a signature made
for something else (another type, a future scheme) never matches. A worker with the secret verifies
(constant-time) before it builds anything, and refuses a message without a signature (`unsigned`)
or with one that does not match (`bad_signature`), at start as while it runs. Without the secret,
signatures are not checked and unsigned messages are taken as before; workers of earlier releases
ignore the extra field, so signing can be switched on at the publisher first, then at the workers.
The signature does not stop a replay of an older message signed with the same secret (a rollback to
an earlier signed model); keep the secret, and write access to the topic, to the publisher.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from collections import deque
from dataclasses import dataclass
from typing import Awaitable, Callable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.events import LIMITS
from streams.core.model import HealthModel
from streams.core.model_loader import ModelError, model_from_yaml
from streams.text import printable

log = logging.getLogger(__name__)

MODEL_KEY = b"model"
KEEP_AT_START = 64  # control messages a starting worker looks through for the latest valid model (newest first)
MESSAGE_TYPE = "model"
SNOOZE_TYPE = "snooze"
MAX_ACCOUNT_ID_CHARS = LIMITS.id_chars  # an account id, as the input events bound it
MAX_SNOOZE_REASON_CHARS = 500
MAX_SNOOZE_BYTES = 4096  # a snooze message (judged on the event loop: bounded before it is parsed)
MAX_EPOCH = 253402300799.0  # 9999-12-31T23:59:59Z: the last time an ISO 8601 timestamp can show
# outcomes of control messages (the label of health_control_messages_total)
APPLIED, SUPERSEDED, UNKNOWN, MALFORMED, REFUSED = "applied", "superseded", "unknown_type", "malformed", "refused"
UNSIGNED, BAD_SIGNATURE = "unsigned", "bad_signature"  # refused by a worker that has HEALTH_CONTROL_SECRET
OUTCOMES = (APPLIED, SUPERSEDED, UNKNOWN, MALFORMED, REFUSED, UNSIGNED, BAD_SIGNATURE)
REFUSALS = (UNKNOWN, MALFORMED, REFUSED, UNSIGNED, BAD_SIGNATURE)
SIGNATURE_REFUSALS = (UNSIGNED, BAD_SIGNATURE)

SIGNATURE_SCHEME = "hmac-sha256"
# bound into every signature: a MAC computed with the same secret for another purpose never verifies here
SIGNING_CONTEXT = b"customer-health control message, hmac-sha256, v1\x00"
_SIGNATURE = re.compile(r"hmac-sha256:[0-9a-f]{64}")
SHORT_SECRET_BYTES = 16  # a signature on the topic lets its readers guess a shorter secret offline


@dataclass(frozen=True)
class Snooze:
    """An operator's order: no alert of `account_id` is published until `until` (None: the snooze ends)."""

    account_id: str
    until: float | None
    reason: str
    at: float  # when it was given (epoch seconds)


@dataclass(frozen=True)
class Verdict:
    """What one control message is: a model or a snooze (outcome None), or why it was refused."""

    offset: int
    model: HealthModel | None = None
    snooze: Snooze | None = None
    outcome: str | None = None  # one of REFUSALS when model is None
    reason: str = ""
    signed: bool = False  # the message carries a signature (checked only with a secret)


def _key(secret: str) -> bytes:
    # a secret from the environment that is not UTF-8 comes as lone surrogates: surrogateescape gives back
    # the operator's exact bytes (what another HMAC tool would use); surrogatepass takes any other str
    try:
        return secret.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return secret.encode("utf-8", "surrogatepass")


def signed_bytes(kind: str, *fields: str) -> bytes:
    """What a signature covers: the context, then the type and each field (a model: its version and YAML;
    a snooze: the account, the time it ends or "", the reason) as its 8-byte length and its UTF-8 bytes.
    (Lengths, not separators: no field's content can make it read as the end of one field and the start
    of the next.)"""
    parts = [SIGNING_CONTEXT]
    for field in (kind, *fields):
        data = field.encode("utf-8")  # orjson decodes only valid UTF-8, so this cannot fail on a message
        parts += (len(data).to_bytes(8, "big"), data)
    return b"".join(parts)


def signature(secret: str, version: str, model_yaml: str) -> str:
    """The `signature` field of a model message: scheme, colon, HMAC-SHA256 in lowercase hex."""
    return _mac(secret, MESSAGE_TYPE, version, model_yaml)


def _mac(secret: str, kind: str, *fields: str) -> str:
    return f"{SIGNATURE_SCHEME}:{hmac.new(_key(secret), signed_bytes(kind, *fields), hashlib.sha256).hexdigest()}"


def snooze_fields(account_id: str, until: float | None, reason: str) -> tuple[str, str, str]:
    """The fields a snooze's signature covers (the end as repr() of the float, "" to end a snooze)."""
    return account_id, "" if until is None else repr(float(until)), reason


def snooze_message(account_id: str, until: float | None, reason: str, at: float, secret: str | None = None) -> bytes:
    """The value `health snooze` (until: a time) and `health unsnooze` (until: None) write under snooze_key."""
    message = {"type": SNOOZE_TYPE, "account_id": account_id, "until": until, "reason": reason, "at": at}
    if secret is not None:
        message["signature"] = _mac(secret, SNOOZE_TYPE, *snooze_fields(account_id, until, reason))
    return orjson.dumps(message)


SNOOZE_KEY_PREFIX = b"snooze:"


def snooze_key(account_id: str) -> bytes:
    """One key per account: compaction keeps each account's latest snooze (or its end) however old."""
    return SNOOZE_KEY_PREFIX + account_id.encode("utf-8", "surrogatepass")


def model_message(model_yaml: str, version: str, secret: str | None = None) -> bytes:
    """The value `publish-model` writes (key MODEL_KEY), signed when a secret is given."""
    message = {"type": MESSAGE_TYPE, "version": version, "yaml": model_yaml}
    if secret is not None:
        message["signature"] = signature(secret, version, model_yaml)
    return orjson.dumps(message)


def _signature_problem(message: dict, text: str, secret: str) -> tuple[str, str] | None:
    """(outcome, why) when the model message is not signed with `secret`, None when it is."""
    return _mac_problem(message, secret, "publish-model", MESSAGE_TYPE, message.get("version"), text)


def _mac_problem(message: dict, secret: str, command: str, kind: str, *fields) -> tuple[str, str] | None:
    given = message.get("signature")
    if given is None:
        return UNSIGNED, (f"not signed, and HEALTH_CONTROL_SECRET is set: publish it with `health {command}` "
                          "and the same HEALTH_CONTROL_SECRET")
    # the format is checked first (it says nothing about the secret), so compare_digest gets ASCII of one length
    if not isinstance(given, str) or not _SIGNATURE.fullmatch(given):
        return BAD_SIGNATURE, f"'signature' is not {SIGNATURE_SCHEME}:<64 lowercase hex digits>"
    if not isinstance(fields[0], str):  # a model's version (a snooze's fields are checked before)
        return BAD_SIGNATURE, "signed, but 'version' is not a string: the signature cannot cover it"
    if not hmac.compare_digest(_mac(secret, kind, *fields).encode(), given.encode()):
        return BAD_SIGNATURE, ("signature does not match: changed after signing, or signed with another "
                               "HEALTH_CONTROL_SECRET")
    return None


def judge(offset: int, value: bytes | None, topic: str, secret: str | None = None) -> Verdict:
    """Decode, verify (with a secret) and build one control message; never raises."""
    source = f"{topic} message at offset {offset}"
    try:
        message = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError as err:
        return Verdict(offset, outcome=MALFORMED, reason=f"{source}: not JSON ({err})")
    if not isinstance(message, dict):
        return Verdict(offset, outcome=MALFORMED, reason=f"{source}: expected a JSON object")
    kind = message.get("type")
    if kind == SNOOZE_TYPE:
        return _judge_snooze(offset, message, source, secret)
    if kind != MESSAGE_TYPE:
        return Verdict(offset, outcome=UNKNOWN, reason=f"{source}: unknown type {printable(repr(kind), 80)} "
                                                      f"(expected {MESSAGE_TYPE!r} or {SNOOZE_TYPE!r})")
    text = message.get("yaml")
    if not isinstance(text, str):
        return Verdict(offset, outcome=MALFORMED, reason=f"{source}: expected the model's YAML text in 'yaml'")
    signed = "signature" in message
    if secret is not None:  # before the build: an unsigned model costs no build, however large
        try:
            problem = _signature_problem(message, text, secret)
        except Exception as err:  # noqa: BLE001 - an operator's message must not stop a worker
            problem = BAD_SIGNATURE, f"cannot check the signature ({type(err).__name__})"
        if problem is not None:
            outcome, why = problem
            version = message.get("version")
            named = f" (version {printable(repr(version), 80)})" if isinstance(version, str) else ""
            return Verdict(offset, outcome=outcome, reason=f"{source}{named}: {why}", signed=signed)
    try:
        return Verdict(offset, model=model_from_yaml(text, source), signed=signed)
    except ModelError as err:
        return Verdict(offset, outcome=REFUSED, reason=printable(str(err), 2000))
    except Exception as err:  # noqa: BLE001 - an operator's message must not stop a worker
        return Verdict(offset, outcome=REFUSED, reason=f"{source}: cannot build the model: "
                                                       f"{type(err).__name__}: {printable(str(err), 300)}")


def _judge_snooze(offset: int, message: dict, source: str, secret: str | None) -> Verdict:
    account, until, reason, at = (message.get(k) for k in ("account_id", "until", "reason", "at"))
    if not isinstance(account, str) or not 0 < len(account) <= MAX_ACCOUNT_ID_CHARS:
        return Verdict(offset, outcome=MALFORMED, reason=f"{source}: a snooze needs 'account_id', a text of 1 to "
                                                         f"{MAX_ACCOUNT_ID_CHARS} characters")
    if until is not None and (isinstance(until, bool) or not isinstance(until, (int, float))
                              or not 0 <= until <= MAX_EPOCH):
        return Verdict(offset, outcome=MALFORMED, reason=f"{source}: a snooze's 'until' is epoch seconds up to the "
                                                         f"year 9999, or null")
    if not isinstance(reason, str) or len(reason) > MAX_SNOOZE_REASON_CHARS:
        return Verdict(offset, outcome=MALFORMED, reason=f"{source}: a snooze's 'reason' is a text of at most "
                                                         f"{MAX_SNOOZE_REASON_CHARS} characters")
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not 0 <= at <= MAX_EPOCH:
        at = 0.0
    signed = "signature" in message
    if secret is not None:
        try:
            problem = _mac_problem(message, secret, "snooze", SNOOZE_TYPE, *snooze_fields(account, until, reason))
        except Exception as err:  # noqa: BLE001 - an operator's message must not stop a worker
            problem = BAD_SIGNATURE, f"cannot check the signature ({type(err).__name__})"
        if problem is not None:
            outcome, why = problem
            return Verdict(offset, outcome=outcome, signed=signed,
                           reason=f"{source} (snooze of {printable(account, 80)!r}): {why}")
    return Verdict(offset, snooze=Snooze(account, None if until is None else float(until), reason, float(at)),
                   signed=signed)


def _not_a_stray_snooze(verdict: Verdict) -> Verdict:
    """A snooze is taken only under its account's snooze key (where compaction keeps the latest and every worker
    takes all of them at start); one under another key is refused, alike at start and while running."""
    if verdict.snooze is None:
        return verdict
    return Verdict(verdict.offset, outcome=UNKNOWN, signed=verdict.signed,
                   reason=f"a snooze of {printable(verdict.snooze.account_id, 80)!r} not under its key "
                          f"snooze:<account> (publish it with `health snooze`)")


class ControlChannel:
    """Reads the control topic: `load` once at start (latest valid model), then `follow`."""

    def __init__(self, bootstrap: str, topic: str, *, client_options: dict | None = None,
                 on_outcome: Callable[[str, bool], None] = lambda outcome, live: None, secret: str | None = None,
                 on_snooze: Callable[[Snooze, bool], Awaitable[None]] | None = None):
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_options = client_options or {}
        self.on_outcome = on_outcome
        self.on_snooze = on_snooze  # every snooze in offset order: all of them at start (live False), then each
        self.secret = secret or None  # None: signatures are not checked (an empty secret would sign nothing)
        self._told_unchecked = False
        self.position: int | None = None  # the next offset to read after load()
        self.dropped = 0  # messages older than the last KEEP_AT_START at start: not judged
        self.snoozes_refused = 0  # messages under a snooze key that were not snoozes (counted by outcome too)

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                **self.client_options)

    async def load(self, timeout: float = 60.0) -> HealthModel | None:
        """The latest valid model on the topic up to its current end (None if there is none). The records
        are read first (`timeout` bounds that), then judged newest first until a valid model is found,
        off the event loop: a topic crowded with large models costs one build, not one per message."""
        if self.secret is not None and len(_key(self.secret)) < SHORT_SECRET_BYTES:
            log.warning("HEALTH_CONTROL_SECRET is %d bytes: whoever reads %s can guess it from a signature; "
                        "use 32 random bytes (`openssl rand -hex 32`)", len(_key(self.secret)), self.topic)
        records = await self._read_to_end(timeout)
        latest: Verdict | None = None
        refused: list[Verdict] = []
        for position, (offset, value) in enumerate(reversed(records)):
            verdict = _not_a_stray_snooze(await asyncio.to_thread(judge, offset, value, self.topic, self.secret))
            if verdict.model is not None:
                latest = verdict
                for _ in range(len(records) - position - 1 + self.dropped):
                    self.on_outcome(SUPERSEDED, False)
                break
            refused.append(verdict)
            self.on_outcome(verdict.outcome, False)
        where = "after the model in use" if latest is not None else "on the topic"
        others = [v for v in refused if v.outcome not in SIGNATURE_REFUSALS]
        untrusted = [v for v in refused if v.outcome in SIGNATURE_REFUSALS]
        if others:
            log.warning("control topic %s: %d message(s) %s refused; the newest: %s",
                        self.topic, len(others), where, others[0].reason)
        if untrusted:  # said apart: a model published before the secret was set is refused, not lost silently
            log.warning("control topic %s: %d model message(s) %s refused, not signed with HEALTH_CONTROL_SECRET; "
                        "the newest: %s", self.topic, len(untrusted), where, untrusted[0].reason)
        if latest is None:
            if records:
                trusted = "signed, valid" if self.secret is not None else "valid"
                log.warning("control topic %s: no %s model among its last %d messages; using HEALTH_MODEL",
                            self.topic, trusted, len(records))
            return None
        self.on_outcome(APPLIED, False)
        self._tell_unchecked(latest)
        log.info("control topic %s: applying model %s (offset %d%s; the topic ends at %d)", self.topic,
                 printable(latest.model.version, 80), latest.offset,
                 ", signature verified" if self.secret is not None else "", self.position)
        return latest.model

    async def _snooze(self, offset: int, value: bytes | None, live: bool) -> None:
        if value is not None and len(value) > MAX_SNOOZE_BYTES:
            verdict = Verdict(offset, outcome=MALFORMED, reason=f"{self.topic} message at offset {offset}: "
                                                                f"{len(value):,} bytes under a snooze key (a snooze "
                                                                f"is at most {MAX_SNOOZE_BYTES:,})")
        else:
            verdict = judge(offset, value, self.topic, self.secret)  # small: judged on the loop
        if verdict.snooze is None:
            if verdict.model is not None:  # a model under a snooze key: not the model key, not in force
                verdict = Verdict(offset, outcome=UNKNOWN, reason=f"{self.topic} message at offset {offset}: a "
                                                                  f"model under a snooze key")
            self.on_outcome(verdict.outcome, live)
            self.snoozes_refused += 1
            if self.snoozes_refused & (self.snoozes_refused - 1) == 0:  # 1st, 2nd, 4th...: a flood logs little
                log.error("control message refused (%d snooze messages refused so far): %s", self.snoozes_refused,
                          verdict.reason)
            return
        await self._apply_snooze(verdict, live)

    async def _apply_snooze(self, verdict: Verdict, live: bool) -> None:
        self.on_outcome(APPLIED, live)
        self._tell_unchecked(verdict)
        if self.on_snooze is not None:
            await self.on_snooze(verdict.snooze, live)

    def _tell_unchecked(self, verdict: Verdict) -> None:
        """Once: signed models arrive but this worker has no secret, so anyone can still change its model."""
        if verdict.signed and self.secret is None and not self._told_unchecked:
            self._told_unchecked = True
            log.warning("control topic %s: models are signed but HEALTH_CONTROL_SECRET is not set here: their "
                        "signatures are not checked; set it to the publisher's secret", self.topic)

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
                    if record.key is not None and record.key.startswith(SNOOZE_KEY_PREFIX):
                        await self._snooze(record.offset, record.value, live=False)  # every one, in order
                        continue
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
                    if record.key is not None and record.key.startswith(SNOOZE_KEY_PREFIX):
                        await self._snooze(record.offset, record.value, live=True)
                        continue
                    verdict = _not_a_stray_snooze(
                        await asyncio.to_thread(judge, record.offset, record.value, self.topic, self.secret))
                    if verdict.model is None:
                        self.on_outcome(verdict.outcome, True)
                        log.error("control message refused, keeping the current model: %s", verdict.reason)
                        continue
                    self.on_outcome(APPLIED, True)
                    self._tell_unchecked(verdict)
                    await roll_out(verdict.model)
        finally:
            await consumer.stop()
