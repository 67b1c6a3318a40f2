"""The worker and the preflight check against the local broker's secure listeners (ops/stack): SASL_SSL
with SCRAM-SHA-512 and the stack's CA, and SSL with a client certificate (mTLS); and each way a
production cluster's security settings can be wrong, named in one line within a bounded time."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import time

import orjson
import pytest

from schemas.outputs import iso
from streams.connections import KafkaSecurity
from streams.preflight import NotReachable, check_kafka
from streams.settings import Settings
from tests.harness import Worker, wait_for
from tests.secure import SecureListeners, client_options, consume, make_ca, make_leaf, produce, run

pytestmark = pytest.mark.broker

CHECK_TIMEOUT = 5.0  # check_kafka's own bound; `run` fails the test if the check does not end by itself


@pytest.fixture(scope="session")
def secure(stack) -> SecureListeners:
    listeners = SecureListeners.of(stack)
    problem = listeners.missing()
    if problem:
        pytest.fail(problem)  # not a skip: a skip would hide that the secure paths went untested
    return listeners


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory):
    """A CA that signed nothing of the stack's."""
    return make_ca(tmp_path_factory.mktemp("other-ca"), "other-ca")


@contextlib.contextmanager
def unused_port():
    """A loopback port that refuses connections: bound, not listening, so nothing else takes it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def refusal(port: int, security: KafkaSecurity) -> str:
    """The one line check_kafka refuses these settings with (fails the test if it accepts them)."""
    settings = Settings(broker=f"kafka://127.0.0.1:{port}", kafka_security=security)
    with pytest.raises(NotReachable) as refused:
        run(check_kafka(settings, timeout=CHECK_TIMEOUT), bound=4 * CHECK_TIMEOUT)
    line = str(refused.value)
    assert "\n" not in line and f"127.0.0.1:{port}" in line, line
    return line


@pytest.mark.parametrize("listener", ["sasl_ssl-scram-sha-512", "ssl-mtls"])
def test_worker_scores_through_a_secure_listener(listener, secure, stack, worker_env, unique, redis_client,
                                                 tmp_path):
    if listener == "ssl-mtls":
        port, env, security = secure.ssl_port, secure.mtls_env(), secure.mtls_security()
    else:
        port, env, security = secure.sasl_ssl_port, secure.sasl_env("SCRAM-SHA-512"), secure.sasl_security()
    options = client_options(port, security)
    event = {"event_id": "e-1", "account_id": "acme", "occurred_at": iso(time.time() - 3600), "name": "login",
             "user_id": "u-1"}
    run(produce(options, f"{unique}.usage", [(b"acme", event)]))

    with Worker({**worker_env, **env}, tmp_path, "--without-web") as worker:
        raw = wait_for(lambda: redis_client.hget(f"{unique}:account:acme", "record") or not worker.alive(), 90,
                       what="the worker to write acme's score to Redis")
        assert worker.alive(), worker.report()
        record = orjson.loads(raw)
        assert record["account_id"] == "acme" and record["event_ids"] == ["e-1"], record
        scores = run(consume(options, f"{unique}.scores", until=lambda values: len(values) >= 1), bound=90)
        # at least once: a rebalance under load may publish the same update again, never another one
        assert {(s["account_id"], s["seq"], s["score"]) for s in scores} == {("acme", 1, record["score"])}, scores
        log = worker.log()  # read before the stop: what matters is how the clients connected, not the goodbye
    # every client of the worker went through the secure listener: one left on PLAINTEXT is dropped by it,
    # which aiokafka logs as "Unable connect to ... KafkaConnectionError"
    assert "Unable connect to" not in log and "KafkaConnectionError" not in log, log[-3000:]
    if listener.startswith("sasl_ssl"):
        assert "Authenticated as health via SCRAM-SHA-512" in log, log[-3000:]


def test_the_stacks_own_settings_pass_the_check(secure):
    for port, security in [(secure.sasl_ssl_port, secure.sasl_security("SCRAM-SHA-512")),
                           (secure.sasl_ssl_port, secure.sasl_security("SCRAM-SHA-256")),
                           (secure.sasl_ssl_port, secure.sasl_security("PLAIN")),
                           (secure.ssl_port, secure.mtls_security())]:
        settings = Settings(broker=f"kafka://127.0.0.1:{port}", kafka_security=security)
        run(check_kafka(settings, timeout=CHECK_TIMEOUT), bound=4 * CHECK_TIMEOUT)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_wrong_password_names_the_credentials(secure, mechanism):
    line = refusal(secure.sasl_ssl_port, secure.sasl_security(mechanism, password="not-" + secure.password))
    assert "HEALTH_KAFKA_SASL_USERNAME" in line and "HEALTH_KAFKA_SASL_PASSWORD" in line, line


def test_untrusted_ca_names_the_ca_file(secure, other_ca):
    line = refusal(secure.sasl_ssl_port, secure.sasl_security(ca_file=other_ca[0]))
    assert "not trusted" in line and "HEALTH_KAFKA_SSL_CA_FILE" in line, line


def test_system_trust_store_does_not_trust_the_stack_either(secure):
    line = refusal(secure.ssl_port, secure.mtls_security(ca_file=None))
    assert "HEALTH_KAFKA_SSL_CA_FILE" in line, line


def test_mtls_without_a_client_certificate_names_the_certificate_setting(secure):
    line = refusal(secure.ssl_port, secure.mtls_security(cert_file=None, key_file=None))
    assert "requires a client certificate" in line and "HEALTH_KAFKA_SSL_CERT_FILE" in line, line


def test_sasl_client_on_the_mtls_listener_names_the_certificate_and_the_other_listener(secure):
    line = refusal(secure.ssl_port, secure.sasl_security())
    assert "requires a client certificate" in line and "HEALTH_KAFKA_SSL_CERT_FILE" in line, line
    assert "SASL_SSL listener" in line and "HEALTH_KAFKA_BROKER" in line, line


def test_client_certificate_from_another_ca_is_refused_by_name(secure, other_ca, tmp_path):
    cert, key = make_leaf(tmp_path, "stranger", other_ca, "DNS:stranger")
    line = refusal(secure.ssl_port, secure.mtls_security(cert_file=cert, key_file=key))
    assert f"HEALTH_KAFKA_SSL_CERT_FILE={cert}" in line, line


@pytest.mark.parametrize("case", ["plaintext->sasl_ssl", "plaintext->ssl", "ssl->plaintext", "sasl_ssl->plaintext",
                                  "ssl->sasl_ssl", "sasl_ssl->ssl"])
def test_wrong_protocol_names_the_protocol_and_the_listeners(case, secure, stack):
    configured, actual = case.upper().split("->")
    port = {"PLAINTEXT": stack.kafka_port, "SASL_SSL": secure.sasl_ssl_port, "SSL": secure.ssl_port}[actual]
    # with the client certificate: what the SSL listener then refuses is the SASL exchange itself
    security = {"PLAINTEXT": KafkaSecurity(), "SSL": secure.mtls_security(),
                "SASL_SSL": secure.sasl_security(cert_file=secure.client_cert, key_file=secure.client_key)}[configured]
    line = refusal(port, security)
    assert f"is a {actual} listener" in line or f"is an {actual} listener" in line, line
    assert f"HEALTH_KAFKA_SECURITY_PROTOCOL is {configured}" in line, line


def test_certificate_for_another_name_names_the_hostname_setting(other_ca, tmp_path):
    """The stack's certificate is valid for every address it listens on, so a server with one for another
    name stands in for a broker reached by an address its certificate does not list."""
    cert, key = make_leaf(tmp_path, "elsewhere", other_ca, "DNS:elsewhere.invalid")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def check() -> str:
        server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        try:
            settings = Settings(broker=f"kafka://127.0.0.1:{port}",
                                kafka_security=KafkaSecurity(protocol="SSL", ca_file=other_ca[0]))
            with pytest.raises(NotReachable) as refused:
                await check_kafka(settings, timeout=CHECK_TIMEOUT)
            return str(refused.value)
        finally:
            server.close()

    line = run(check(), bound=4 * CHECK_TIMEOUT)
    assert "\n" not in line and "not valid for 127.0.0.1" in line, line
    assert "HEALTH_KAFKA_SSL_CHECK_HOSTNAME" in line and "HEALTH_KAFKA_BROKER" in line, line


def test_unreachable_keeps_the_start_hint(secure):
    with unused_port() as port:
        line = refusal(port, secure.sasl_security())
    assert line.startswith("Kafka not reachable at") and "ops/stack up" in line, line


def test_worker_with_a_wrong_password_exits_at_once_naming_the_setting(secure, worker_env, tmp_path):
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-" + secure.password + "\n")
    env = {**worker_env, **secure.sasl_env(), "HEALTH_KAFKA_SASL_PASSWORD_FILE": str(wrong)}
    worker = Worker(env, tmp_path, "--without-web").start()
    try:
        code = worker.proc.wait(60)  # a bound, not a measure: a worker retrying for ever fails here
    except subprocess.TimeoutExpired:
        worker.kill()
        pytest.fail(f"`health worker` with a wrong password still ran after 60 s:\n{worker.report()}")
    lines = [line for line in worker.log().splitlines() if line.strip()]
    assert code == 2, worker.report()
    assert len(lines) == 1, worker.report()
    assert f"127.0.0.1:{secure.sasl_ssl_port}" in lines[0] and "HEALTH_KAFKA_SASL_PASSWORD" in lines[0], lines[0]
