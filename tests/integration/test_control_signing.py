"""Signed control messages (HEALTH_CONTROL_SECRET): whoever can write to the control topic must not be
able to change every score. Unit tests of the envelope and of its verification, then a real worker with
a secret, through the real broker, taking signed models and refusing the others, at start and while
it runs."""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import subprocess
import urllib.error
import urllib.request

import orjson
import pytest

from streams.worker import control
from streams.worker.control import (APPLIED, BAD_SIGNATURE, MALFORMED, OUTCOMES, REFUSALS, UNSIGNED, ControlChannel,
                             judge, model_message, signature, signed_bytes)
from streams.core import load_model, score_all
from streams.worker.metrics import HealthMetrics
from streams.settings import DEFAULT_MODEL
from tests.harness import Worker, free_port, health_command, wait_for
from tests.integration.pipeline_helpers import NOW, clock_file, deliveries, event_log, publish, read_all
from tests.integration.test_control import control as write_control, metric_values, variant

SECRET = "3f1c0a9e-control-secret-for-tests-7d2b"
TOPIC = "health.control"


def signed_as(text: str, version: str, changes: dict, secret: str = SECRET) -> bytes:
    """A message signed for (version, text), then with `changes` applied to its fields (a tampering)."""
    message = orjson.loads(model_message(text, version, secret))
    message.update(changes)
    return orjson.dumps(message)


@pytest.fixture(scope="module")
def text() -> str:
    return DEFAULT_MODEL.read_text()


# -- the envelope ---------------------------------------------------------------------------------

def test_the_signature_is_an_hmac_sha256_over_the_documented_layout(text):
    # computed here from the layout alone: a publisher written in another language can reproduce it
    def field(value: str) -> bytes:
        data = value.encode()
        return len(data).to_bytes(8, "big") + data

    covered = control.SIGNING_CONTEXT + field("model") + field("2025.1") + field(text)
    expected = hmac.new(SECRET.encode(), covered, hashlib.sha256).hexdigest()
    assert signed_bytes("model", "2025.1", text) == covered
    assert signature(SECRET, "2025.1", text) == f"hmac-sha256:{expected}"
    message = orjson.loads(model_message(text, "2025.1", SECRET))
    assert message == {"type": "model", "version": "2025.1", "yaml": text, "signature": f"hmac-sha256:{expected}"}
    # without a secret the message is what it always was: workers of earlier releases read both
    assert orjson.loads(model_message(text, "2025.1")) == {"type": "model", "version": "2025.1", "yaml": text}


def test_no_byte_can_move_from_one_field_to_another():
    # separators could be forged by a field's content; lengths cannot
    assert signed_bytes("model", "ab", "c") != signed_bytes("model", "a", "bc")
    assert signed_bytes("model", "a\x00b", "c") != signed_bytes("model", "a", "b\x00c")
    assert signed_bytes("model", "", "x") != signed_bytes("model", "x", "")
    assert signed_bytes("model", "1\x00\x00\x00\x00\x00\x00\x00\x01x", "y") != signed_bytes("model", "1", "x")


# -- verification with a secret -------------------------------------------------------------------

def test_a_worker_with_the_secret_takes_a_model_signed_with_it(text):
    verdict = judge(7, model_message(text, "2025.1", SECRET), TOPIC, SECRET)
    assert verdict.outcome is None and verdict.model.version == "2025.1" and verdict.signed


def test_a_changed_model_text_is_refused(text):
    changed = text.replace("relationship: {weight: 15}", "relationship: {weight: 90}")
    assert changed != text and judge(0, model_message(changed, "2025.1"), TOPIC).model is not None  # it builds
    verdict = judge(0, signed_as(text, "2025.1", {"yaml": changed}), TOPIC, SECRET)
    assert (verdict.model, verdict.outcome) == (None, BAD_SIGNATURE)
    assert "signature does not match" in verdict.reason and "HEALTH_CONTROL_SECRET" in verdict.reason


def test_a_changed_version_is_refused(text):
    verdict = judge(0, signed_as(text, "2025.1", {"version": "2025.2"}), TOPIC, SECRET)
    assert (verdict.model, verdict.outcome) == (None, BAD_SIGNATURE)


def test_a_signature_is_not_taken_for_other_fields(text):
    # the version's and the text's bytes swapped, or shifted from one into the other, under the same signature
    version = "2025.1"
    for fields in ({"version": text, "yaml": version}, {"version": version + text[:1], "yaml": text[1:]},
                   {"version": "", "yaml": version + text}):
        verdict = judge(0, signed_as(text, version, fields), TOPIC, SECRET)
        assert verdict.outcome == BAD_SIGNATURE, fields


def test_a_message_signed_with_another_secret_is_refused(text):
    verdict = judge(0, model_message(text, "2025.1", "another-secret-of-the-same-length-xx"), TOPIC, SECRET)
    assert (verdict.model, verdict.outcome) == (None, BAD_SIGNATURE)


def test_an_unsigned_message_is_refused_before_its_model_is_built(text, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("an unsigned model was built")

    monkeypatch.setattr(control, "model_from_yaml", no_build)
    for value in (model_message(text, "2025.1"), orjson.dumps({"type": "model", "version": "v", "yaml": text,
                                                               "signature": None})):
        verdict = judge(3, value, TOPIC, SECRET)
        assert (verdict.model, verdict.outcome) == (None, UNSIGNED)
        assert verdict.reason.startswith(f"{TOPIC} message at offset 3")
        assert "not signed" in verdict.reason and "HEALTH_CONTROL_SECRET" in verdict.reason


@pytest.mark.parametrize("given", [
    42, "", [], {"mac": "00"}, "hmac-sha256:", "hmac-sha256:" + "A" * 64, "hmac-sha256:" + "0" * 63,
    "hmac-sha256:" + "0" * 65, "sha1:" + "0" * 40, "hmac-sha256:" + "\u00e9" * 64, "hmac-sha256:" + "0" * 64 + "\n",
    "x" * 1_000_000,
])
def test_a_malformed_signature_is_refused_and_never_raises(text, given):
    message = orjson.loads(model_message(text, "2025.1"))
    message["signature"] = given
    verdict = judge(0, orjson.dumps(message), TOPIC, SECRET)
    assert (verdict.model, verdict.outcome) == (None, BAD_SIGNATURE)
    assert verdict.reason.isprintable() and len(verdict.reason) < 400


def test_a_signed_message_whose_version_is_not_a_string_is_refused(text):
    message = orjson.loads(model_message(text, "2025.1", SECRET))
    message["version"] = 20251
    assert judge(0, orjson.dumps(message), TOPIC, SECRET).outcome == BAD_SIGNATURE


def test_the_reason_of_a_refusal_is_printable_and_bounded(text):
    hostile = "\x1b[31m\n" * 10_000
    verdict = judge(0, model_message(text, hostile), TOPIC, SECRET)
    assert verdict.outcome == UNSIGNED
    assert "\x1b" not in verdict.reason and "\n" not in verdict.reason and len(verdict.reason) < 400


def test_the_signatures_are_compared_in_constant_time(text, monkeypatch):
    calls = []
    original = hmac.compare_digest

    def compare_digest(a, b):
        calls.append((a, b))
        return original(a, b)

    monkeypatch.setattr(control.hmac, "compare_digest", compare_digest)
    assert judge(0, model_message(text, "2025.1", SECRET), TOPIC, SECRET).model is not None
    assert calls == [(signature(SECRET, "2025.1", text).encode(),) * 2]


# -- without a secret: as before ------------------------------------------------------------------

def test_without_a_secret_unsigned_and_signed_messages_are_both_taken(text):
    unsigned = judge(0, model_message(text, "2025.1"), TOPIC)
    assert unsigned.model is not None and not unsigned.signed
    # signatures are not checked (the worker has nothing to check them with), whatever they hold
    for value in (model_message(text, "2025.1", SECRET), signed_as(text, "2025.1", {"signature": "garbage"})):
        verdict = judge(0, value, TOPIC)
        assert verdict.model is not None and verdict.signed


def test_other_refusals_keep_their_outcomes_with_a_secret():
    assert judge(0, b"\xff", TOPIC, SECRET).outcome == MALFORMED
    assert judge(0, b'{"type": "pause", "signature": "x"}', TOPIC, SECRET).outcome == control.UNKNOWN


# -- the outcomes: one list, every one a metric label ---------------------------------------------

def test_the_new_outcomes_are_refusals_and_metric_labels_from_the_start():
    assert {UNSIGNED, BAD_SIGNATURE} <= set(REFUSALS) <= set(OUTCOMES)
    metrics = HealthMetrics()
    body = metrics.exposition()[0].decode()
    for outcome in (UNSIGNED, BAD_SIGNATURE):
        assert f'health_control_messages_total{{outcome="{outcome}"}} 0.0' in body
        assert outcome in metrics.control_messages._documentation
    metrics.on_control_message(UNSIGNED, live=False)  # read back at start: counted, no new alert
    metrics.on_control_message(BAD_SIGNATURE, live=True)  # while running: a refused model
    body = metrics.exposition()[0].decode()
    assert 'health_control_messages_total{outcome="unsigned"} 1.0' in body
    assert 'health_control_messages_total{outcome="bad_signature"} 1.0' in body
    assert "health_model_load_failures_total 1.0" in body


# -- at start: ControlChannel.load ----------------------------------------------------------------

def channel_over(records: list[tuple[int, bytes]], secret: str | None) -> tuple[ControlChannel, list]:
    """A channel whose topic holds `records` (offset, value), and the outcomes it reports."""
    outcomes: list[tuple[str, bool]] = []
    channel = ControlChannel("unused:9092", TOPIC, secret=secret, on_outcome=lambda o, live: outcomes.append(o))

    async def read_to_end(timeout: float):
        channel.position = records[-1][0] + 1 if records else 0
        return list(records)

    channel._read_to_end = read_to_end
    return channel, outcomes


def test_at_start_an_unsigned_model_from_before_the_secret_is_refused_and_said_so(text, caplog):
    newer = text.replace('version: "2025.1"', 'version: "unsigned-later"')
    channel, outcomes = channel_over([(0, model_message(newer, "unsigned-later"))], SECRET)
    with caplog.at_level(logging.WARNING, logger="streams.worker.control"):
        assert asyncio.run(channel.load()) is None  # the worker keeps HEALTH_MODEL's
    assert outcomes == [UNSIGNED]
    logged = caplog.text
    assert "1 model message(s) on the topic refused, not signed with HEALTH_CONTROL_SECRET" in logged
    assert "no signed, valid model among its last 1 messages; using HEALTH_MODEL" in logged


def test_at_start_the_newest_signed_model_wins_over_newer_unsigned_ones(text):
    newer = text.replace('version: "2025.1"', 'version: "unsigned-later"')
    channel, outcomes = channel_over([(0, model_message(text, "2025.1", SECRET)),
                                      (1, model_message(newer, "unsigned-later")),
                                      (2, model_message(newer, "unsigned-later", "wrong-secret-wrong-secret"))],
                                     SECRET)
    assert asyncio.run(channel.load()).version == "2025.1"
    assert outcomes == [BAD_SIGNATURE, UNSIGNED, APPLIED]


def test_at_start_without_a_secret_an_unsigned_model_is_applied_as_before(text):
    channel, outcomes = channel_over([(0, model_message(text, "2025.1"))], None)
    assert asyncio.run(channel.load()).version == "2025.1" and outcomes == [APPLIED]


def test_a_short_secret_and_unchecked_signatures_are_warned_about(text, caplog):
    channel, _ = channel_over([(0, model_message(text, "2025.1", "short"))], "short")
    with caplog.at_level(logging.WARNING, logger="streams.worker.control"):
        assert asyncio.run(channel.load()) is not None
    assert "HEALTH_CONTROL_SECRET is 5 bytes" in caplog.text
    caplog.clear()
    channel, _ = channel_over([(0, model_message(text, "2025.1", SECRET))], None)
    with caplog.at_level(logging.WARNING, logger="streams.worker.control"):
        assert asyncio.run(channel.load()) is not None
    assert "signatures are not checked; set it to the publisher's secret" in caplog.text


# -- a real worker through the broker -------------------------------------------------------------

def ready(port: int) -> dict | None:
    try:
        return orjson.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5).read())
    except (OSError, urllib.error.HTTPError):
        return None


@pytest.mark.broker
def test_a_worker_with_a_secret_takes_signed_models_and_refuses_the_others(stack, worker_env, unique, tmp_path):
    secret_file = tmp_path / "control-secret"
    secret_file.write_text(SECRET + "\n")  # as an orchestrator mounts it: the trailing newline is not the secret
    file_version = load_model(DEFAULT_MODEL).version
    # on the topic before the secret was set: unsigned, so a worker with the secret must start without it
    before_text, _ = variant("pre-1", 40)
    write_control(stack, unique, model_message(before_text, "pre-1"))
    events = event_log(accounts=20, days=15, seed=41)
    accounts = {a for a, s in score_all(events, load_model(DEFAULT_MODEL), NOW).items() if s.score is not None}
    publish(stack.bootstrap, unique, deliveries(events, seed=42))
    port = free_port()
    env = {**worker_env, "HEALTH_CLOCK_FILE": str(clock_file(tmp_path)), "HEALTH_WEB_PORT": str(port),
           "HEALTH_CONTROL_SECRET_FILE": str(secret_file)}

    def latest_versions() -> dict[str, str]:
        return {r["account_id"]: r["model_version"] for r in read_all(stack.bootstrap, f"{unique}.scores")}

    def all_under(version: str):
        return lambda: not worker.alive() or (set(latest_versions()) == accounts
                                              and set(latest_versions().values()) == {version})

    with Worker(env, tmp_path) as worker:
        wait_for(all_under(file_version), 120, what=f"every account scored under the file's model {file_version}")
        assert worker.alive()
        outcomes = metric_values(port, "health_control_messages_total")
        assert outcomes['{outcome="unsigned"}'] == 1 and outcomes['{outcome="applied"}'] == 0
        assert metric_values(port, "health_model_load_failures_total")[""] == 0  # history: counted, not alerted

        # signed by `health publish-model`, as an operator rolls a model out (the secret in the environment)
        signed_text, _ = variant("sig-2", 30)
        (tmp_path / "sig-2.yaml").write_text(signed_text)
        published = subprocess.run(health_command() + ["publish-model", str(tmp_path / "sig-2.yaml")],
                                   env={**os.environ, **worker_env, "HEALTH_CONTROL_SECRET": SECRET},
                                   capture_output=True, text=True, timeout=120)
        assert published.returncode == 0, published.stderr
        assert "model sig-2 published" in published.stdout and "signed" in published.stdout
        wait_for(all_under("sig-2"), 90, what="every account rescored under the signed sig-2")

        # then an unsigned model, one signed with another secret, sig-2's signature on a changed text, and a
        # signed one last: the topic is read in order, so once sig-5 is in use the three were judged
        unsigned_text, _ = variant("uns-3", 5)
        other_text, _ = variant("bad-4", 5)
        tampered_text, _ = variant("tam-6", 5)
        final_text, _ = variant("sig-5", 10)
        write_control(stack, unique, model_message(unsigned_text, "uns-3"),
                model_message(other_text, "bad-4", "another-secret-another-secret-xx"),
                signed_as(signed_text, "sig-2", {"yaml": tampered_text}),
                model_message(final_text, "sig-5", SECRET))
        wait_for(all_under("sig-5"), 90, what="every account rescored under the signed sig-5")
        assert worker.alive()
        outcomes = metric_values(port, "health_control_messages_total")
        assert outcomes['{outcome="unsigned"}'] == 2 and outcomes['{outcome="bad_signature"}'] == 2
        assert outcomes['{outcome="applied"}'] == 2
        assert metric_values(port, "health_model_load_failures_total")[""] == 3
        status = wait_for(lambda: ready(port), 60, what="/health/ready to answer 200")
        assert status["status"] == "ready" and status["model_version"] == "sig-5"
    # no score was ever computed under a model that was not signed with the secret
    published_versions = {r["model_version"] for r in read_all(stack.bootstrap, f"{unique}.scores")}
    assert published_versions == {file_version, "sig-2", "sig-5"}
    log = worker.log()
    assert "Traceback" not in log
    assert "1 model message(s) on the topic refused, not signed with HEALTH_CONTROL_SECRET" in log
    assert "using HEALTH_MODEL" in log
    assert log.count("control message refused") == 3
    assert SECRET not in log
