"""Redis as a production cluster runs it: an ACL user with a password, TLS with a private CA. A real
worker scores into it; the preflight check turns each way of getting the settings wrong into one line
naming the setting; the read model takes credentials from the URL or from the settings.

The server is a private redis-server (tests/secure_redis.py): the shared stack's Redis has no password,
no ACL and no TLS, so without it none of this would run against a real server."""
from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import orjson
import pytest

from streams.connections import ConnectionSettingError, RedisSecurity
from streams.core import load_model, score_all
from streams.preflight import NotReachable, check_redis
from streams.sinks.readmodel import ReadModel
from streams.settings import DEFAULT_MODEL, Settings
from tests.harness import Worker, free_port, wait_for
from tests.integration.pipeline_helpers import NOW, clock_file, deliveries, event_log, publish
from tests.secure_redis import (LIMITED_USER, PASSWORD, USER, mutual_tls_redis,  # noqa: F401 (fixtures)
                                 secure_redis)

pytestmark = pytest.mark.broker


def ready(port: int) -> tuple[int, dict] | None:
    """(status, body) of /health/ready, None while the web server does not answer."""
    try:
        response = urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=5)
        return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, orjson.loads(err.read())
    except OSError:
        return None


# -- a real worker ---------------------------------------------------------------------------------

def test_a_worker_scores_into_a_redis_with_an_acl_user_a_password_file_and_tls(
        stack, worker_env, unique, tmp_path, secure_redis, redis_client):
    password_file = tmp_path / "redis-password"
    password_file.write_text(PASSWORD + "\n")  # as an orchestrator mounts it: the newline is not the password
    events = event_log(accounts=15, days=10, seed=51)
    twin = {a: s for a, s in score_all(events, load_model(DEFAULT_MODEL), NOW).items() if s.score is not None}
    publish(stack.bootstrap, unique, deliveries(events, seed=52))
    port = free_port()
    env = {**worker_env, "HEALTH_CLOCK_FILE": str(clock_file(tmp_path)), "HEALTH_WEB_PORT": str(port),
           "HEALTH_REDIS_URL": secure_redis.url(), "HEALTH_REDIS_USERNAME": USER,
           "HEALTH_REDIS_PASSWORD_FILE": str(password_file), "HEALTH_REDIS_CA_FILE": str(secure_redis.certs.ca)}
    with secure_redis.client() as client, Worker(env, tmp_path) as worker:
        def in_redis() -> dict[str, float] | None:
            scores = {a: client.hget(f"{unique}:account:{a}", "score") for a in twin}
            done = all(v is not None for v in scores.values())
            return {a: float(v) for a, v in scores.items()} if done or not worker.alive() else None

        stored = wait_for(in_redis, 120, what="every account's score in the secured Redis")
        assert worker.alive()
        assert stored == {a: s.score for a, s in twin.items()}
        assert len(client.zrange(f"{unique}:ranking", 0, -1)) == len(twin)
        status, body = wait_for(lambda: (r := ready(port)) and r[0] == 200 and r, 60, what="/health/ready 200")
        assert body["status"] == "ready" and body["redis"] is True
    # the worker wrote only to the secured Redis, and its ACL held everything it needed
    assert not list(redis_client.scan_iter(f"{unique}:*", count=1000))
    assert secure_redis.denied() == []
    log = worker.log()
    assert "Traceback" not in log and "read model sink stopped" not in log
    assert "Redis read model unavailable" not in log
    assert PASSWORD not in log


# -- the preflight check ----------------------------------------------------------------------------

def settings_for(url: str, **security) -> Settings:
    return Settings(redis_url=url, redis_security=RedisSecurity(**security))


def refusal(settings: Settings, timeout: float = 5.0) -> str:
    with pytest.raises(NotReachable) as raised:
        asyncio.run(check_redis(settings, timeout))
    message = str(raised.value)
    assert "\n" not in message and message.isprintable()  # one line
    return message


def test_the_preflight_check_passes_with_the_right_settings(secure_redis):
    asyncio.run(check_redis(settings_for(secure_redis.url(), username=USER, password=PASSWORD,
                                         ca_file=secure_redis.certs.ca)))


def test_the_preflight_check_names_the_password_when_it_is_wrong(secure_redis):
    address = f"127.0.0.1:{secure_redis.tls_port}"
    message = refusal(settings_for(secure_redis.url(), username=USER, password="wrong",
                                   ca_file=secure_redis.certs.ca))
    assert message.startswith(f"Redis at {address} refused the credentials") and "HEALTH_REDIS_PASSWORD" in message
    message = refusal(settings_for(secure_redis.url(), ca_file=secure_redis.certs.ca))
    assert message.startswith(f"Redis at {address} requires a password") and "HEALTH_REDIS_PASSWORD" in message


def test_the_preflight_check_names_the_ca_when_the_certificate_is_not_trusted(secure_redis):
    message = refusal(settings_for(secure_redis.url(), username=USER, password=PASSWORD,
                                   ca_file=secure_redis.certs.other_ca))
    assert message.startswith(f"Redis at 127.0.0.1:{secure_redis.tls_port}: its TLS certificate is not trusted")
    assert "HEALTH_REDIS_CA_FILE" in message


def test_the_preflight_check_says_use_rediss_for_plain_redis_against_the_tls_port(secure_redis):
    # the TLS port drops a client that speaks plain RESP: refused as that, not left to the timeout
    message = refusal(settings_for(secure_redis.url(tls=False, port=secure_redis.tls_port), username=USER,
                                   password=PASSWORD), timeout=30)
    assert message.startswith(f"Redis at 127.0.0.1:{secure_redis.tls_port} closed the connection at once")
    assert "rediss://" in message and "HEALTH_REDIS_URL" in message


def test_the_preflight_check_says_use_redis_for_tls_against_a_plain_port(secure_redis):
    # a plain port waits for a command line that a TLS hello never ends: only the timeout can tell
    message = refusal(settings_for(secure_redis.url(port=secure_redis.port), username=USER, password=PASSWORD,
                                   ca_file=secure_redis.certs.ca), timeout=1)
    assert message.startswith(f"Redis at 127.0.0.1:{secure_redis.port} did not answer within 1 s")
    assert "redis://" in message and "HEALTH_REDIS_URL" in message


def test_the_preflight_check_names_the_url_when_nothing_listens():
    port = free_port()
    message = refusal(settings_for(f"rediss://127.0.0.1:{port}/0"))
    assert message.startswith(f"Redis not reachable at 127.0.0.1:{port}") and "HEALTH_REDIS_URL" in message


def test_the_preflight_check_names_the_user_that_may_not_ping(secure_redis):
    message = refusal(settings_for(secure_redis.url(), username=LIMITED_USER, password=PASSWORD,
                                   ca_file=secure_redis.certs.ca))
    assert "HEALTH_REDIS_USERNAME may not run PING" in message


def test_a_ca_file_that_holds_no_certificate_is_refused_before_connecting(secure_redis, tmp_path):
    # redis-py would load it at each connection, failing them all: refused once, naming the setting
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConnectionSettingError, match=f"^HEALTH_REDIS_CA_FILE: {junk} holds no usable certificate"):
        asyncio.run(check_redis(settings_for(secure_redis.url(), username=USER, password=PASSWORD, ca_file=junk)))


# -- credentials from the URL, from the settings, or both -------------------------------------------

def round_trip(settings: Settings, account: str) -> dict | None:
    """Apply one score update through ReadModel.from_settings and read it back the same way."""
    update = {"account_id": account, "seq": 1, "score": 61.5, "band": "watch", "computed_at_ms": 1}

    async def run():
        read_model = ReadModel.from_settings(settings)
        try:
            await read_model.apply([(update, orjson.dumps(update))])
            return await read_model.account(account)
        finally:
            await read_model.close()

    return asyncio.run(run())


@pytest.mark.parametrize("case", ["url", "settings", "user-in-url", "same-in-both", "plain-port-url",
                                  "upper-case-scheme"])
def test_the_read_model_takes_credentials_from_the_url_or_the_settings(secure_redis, unique, case):
    ca = secure_redis.certs.ca
    settings = {
        "url": settings_for(secure_redis.url(credentials=True), ca_file=ca),
        "settings": settings_for(secure_redis.url(), username=USER, password=PASSWORD, ca_file=ca),
        "user-in-url": settings_for(secure_redis.url().replace("://", f"://{USER}@"), password=PASSWORD, ca_file=ca),
        "same-in-both": settings_for(secure_redis.url(credentials=True), username=USER, password=PASSWORD,
                                     ca_file=ca),
        "plain-port-url": settings_for(secure_redis.url(tls=False, credentials=True)),
        "upper-case-scheme": settings_for(secure_redis.url(credentials=True).replace("rediss", "REDISS"), ca_file=ca),
    }[case]
    settings = Settings(redis_url=settings.redis_url, redis_prefix=unique, redis_security=settings.redis_security)
    assert round_trip(settings, "acct-1")["score"] == 61.5
    with secure_redis.client() as client:  # written where and as the worker user expects
        assert client.hget(f"{unique}:account:acct-1", "band") == "watch"


def test_credentials_that_differ_between_the_url_and_the_settings_are_refused(secure_redis):
    url = secure_redis.url(credentials=True)
    with pytest.raises(ConnectionSettingError, match="HEALTH_REDIS_PASSWORD .* and the password in HEALTH_REDIS_URL"):
        settings_for(url, password="another", ca_file=secure_redis.certs.ca).redis_options()
    with pytest.raises(ConnectionSettingError, match="HEALTH_REDIS_USERNAME and the user name in HEALTH_REDIS_URL"):
        settings_for(url, username="someone-else", password=PASSWORD, ca_file=secure_redis.certs.ca).redis_options()


def test_a_user_name_needs_a_password_from_the_settings_or_the_url(secure_redis, monkeypatch):
    with pytest.raises(ConnectionSettingError, match="HEALTH_REDIS_PASSWORD .*required with a Redis user name"):
        settings_for(secure_redis.url(), username=USER, ca_file=secure_redis.certs.ca).redis_options()
    # the password in the URL, the user in the environment: a working combination, taken at start
    for name in ("HEALTH_REDIS_PASSWORD", "HEALTH_REDIS_PASSWORD_FILE", "HEALTH_REDIS_CERT_FILE",
                 "HEALTH_REDIS_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HEALTH_REDIS_URL", secure_redis.url(credentials=True).replace(f"{USER}:", ":"))
    monkeypatch.setenv("HEALTH_REDIS_USERNAME", USER)
    monkeypatch.setenv("HEALTH_REDIS_CA_FILE", str(secure_redis.certs.ca))
    asyncio.run(check_redis(Settings.from_env()))


# -- a Redis that also wants a client certificate ---------------------------------------------------

def test_a_client_certificate_from_the_settings_is_shown_to_a_redis_that_requires_one(mutual_tls_redis, unique):
    certs = mutual_tls_redis.certs
    with_cert = Settings(redis_url=mutual_tls_redis.url(), redis_prefix=unique, redis_security=RedisSecurity(
        username=USER, password=PASSWORD, ca_file=certs.ca, cert_file=certs.client_cert, key_file=certs.client_key))
    asyncio.run(check_redis(with_cert))
    assert round_trip(with_cert, "acct-1")["band"] == "watch"
    message = refusal(settings_for(mutual_tls_redis.url(), username=USER, password=PASSWORD, ca_file=certs.ca))
    assert message.startswith(f"Redis at 127.0.0.1:{mutual_tls_redis.tls_port} closed the TLS connection")
    assert "HEALTH_REDIS_CERT_FILE and HEALTH_REDIS_KEY_FILE" in message


def test_a_client_certificate_that_does_not_match_its_key_is_refused_before_connecting(secure_redis):
    certs = secure_redis.certs
    with pytest.raises(ConnectionSettingError, match="^HEALTH_REDIS_CERT_FILE / HEALTH_REDIS_KEY_FILE: cannot load"):
        settings_for(secure_redis.url(), ca_file=certs.ca, cert_file=certs.client_cert,
                     key_file=certs.server_key).redis_options()
