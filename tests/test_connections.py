"""streams.connections: the security settings read from the environment, each refusal naming its setting,
secrets from files, and what every Kafka client and Faust are given."""
from __future__ import annotations

import os
import ssl
import subprocess
from pathlib import Path

import pytest

from streams.connections import ConnectionSettingError, KafkaSecurity, RedisSecurity
from streams.settings import Settings
from tests.secure import make_ca, make_leaf

PASSWORD = "pw with spaces"  # a secret is taken as it is: inner spaces kept


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No security setting of the shell that runs the tests (`eval "$(ops/stack env --secure)"`) leaks in."""
    for name in list(os.environ):
        if name.startswith(("HEALTH_KAFKA_", "HEALTH_REDIS_")):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """A CA and a client certificate signed by it, as files; and a key encrypted with `secret`."""
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory, "ca")
    cert, key = make_leaf(directory, "client", ca, "DNS:client")
    encrypted = directory / "client-encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
                   check=True, capture_output=True)
    not_pem = directory / "not-a-certificate.txt"
    not_pem.write_text("hello\n")
    return {"ca": ca[0], "ca_key": ca[1], "cert": cert, "key": key, "encrypted_key": encrypted, "not_pem": not_pem}


def refused(match: str, build=KafkaSecurity.from_env) -> str:
    with pytest.raises(ConnectionSettingError, match=match) as error:
        build()
    assert "\n" not in str(error.value)
    return str(error.value)


# ---------------------------------------------------------------- Kafka: what is read


def test_default_is_plaintext_with_nothing_else():
    security = KafkaSecurity.from_env()
    assert (security.protocol, security.tls, security.sasl) == ("PLAINTEXT", False, False)
    assert security.client_options() == {"security_protocol": "PLAINTEXT"}
    assert security.ssl_context() is None and security.faust_credentials() is None


def test_protocol_and_mechanism_are_read_case_insensitively(monkeypatch):
    monkeypatch.setenv("HEALTH_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext")
    monkeypatch.setenv("HEALTH_KAFKA_SASL_MECHANISM", "scram-sha-256")
    monkeypatch.setenv("HEALTH_KAFKA_SASL_USERNAME", "health")
    monkeypatch.setenv("HEALTH_KAFKA_SASL_PASSWORD", PASSWORD)
    security = KafkaSecurity.from_env()
    assert (security.protocol, security.sasl_mechanism, security.username, security.password) == \
        ("SASL_PLAINTEXT", "SCRAM-SHA-256", "health", PASSWORD)


def test_password_from_a_file_drops_only_the_trailing_newline(monkeypatch, tmp_path):
    secret = tmp_path / "password"
    secret.write_text(f"  {PASSWORD}\n")
    monkeypatch.setenv("HEALTH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("HEALTH_KAFKA_SASL_USERNAME", "health")
    monkeypatch.setenv("HEALTH_KAFKA_SASL_PASSWORD_FILE", str(secret))
    assert KafkaSecurity.from_env().password == f"  {PASSWORD}"


def test_key_password_from_a_file(monkeypatch, tmp_path, pki):
    secret = tmp_path / "key-password"
    secret.write_text("secret\n")
    monkeypatch.setenv("HEALTH_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("HEALTH_KAFKA_SSL_CERT_FILE", str(pki["cert"]))
    monkeypatch.setenv("HEALTH_KAFKA_SSL_KEY_FILE", str(pki["encrypted_key"]))
    monkeypatch.setenv("HEALTH_KAFKA_SSL_KEY_PASSWORD_FILE", str(secret))
    security = KafkaSecurity.from_env()
    assert security.key_password == "secret"
    assert isinstance(security.ssl_context(), ssl.SSLContext)


def test_check_hostname_is_a_boolean_setting(monkeypatch):
    monkeypatch.setenv("HEALTH_KAFKA_SSL_CHECK_HOSTNAME", "false")
    assert KafkaSecurity.from_env().check_hostname is False
    monkeypatch.setenv("HEALTH_KAFKA_SSL_CHECK_HOSTNAME", "maybe")
    refused("^HEALTH_KAFKA_SSL_CHECK_HOSTNAME: expected true or false")


# ---------------------------------------------------------------- Kafka: each refusal names its setting


@pytest.mark.parametrize("env, setting", [
    ({"HEALTH_KAFKA_SECURITY_PROTOCOL": "TLS"}, "HEALTH_KAFKA_SECURITY_PROTOCOL"),
    ({"HEALTH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "HEALTH_KAFKA_SASL_MECHANISM": "GSSAPI",
      "HEALTH_KAFKA_SASL_USERNAME": "u", "HEALTH_KAFKA_SASL_PASSWORD": "p"}, "HEALTH_KAFKA_SASL_MECHANISM"),
    ({"HEALTH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "HEALTH_KAFKA_SASL_PASSWORD": "p"},
     "HEALTH_KAFKA_SASL_USERNAME"),
    ({"HEALTH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "HEALTH_KAFKA_SASL_USERNAME": "u"},
     "HEALTH_KAFKA_SASL_PASSWORD"),
])
def test_unusable_kafka_settings_are_refused_by_name(monkeypatch, env, setting):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert refused(setting).startswith(setting)


@pytest.mark.parametrize("name", ["HEALTH_KAFKA_SASL_PASSWORD", "HEALTH_KAFKA_SSL_KEY_PASSWORD"])
def test_a_secret_given_both_directly_and_as_a_file_is_refused(monkeypatch, tmp_path, name):
    (tmp_path / "secret").write_text("secret-in-the-file")
    monkeypatch.setenv(name, "secret-in-the-variable")
    monkeypatch.setenv(f"{name}_FILE", str(tmp_path / "secret"))
    line = refused(f"^{name} and {name}_FILE are both set")
    assert "secret-in" not in line  # a refusal is logged: it never repeats a secret


def test_an_unreadable_secret_file_is_refused_by_name(monkeypatch, tmp_path):
    monkeypatch.setenv("HEALTH_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "absent"))
    assert str(tmp_path / "absent") in refused("^HEALTH_KAFKA_SASL_PASSWORD_FILE: cannot read")


@pytest.mark.parametrize("name", ["HEALTH_KAFKA_SSL_CA_FILE", "HEALTH_KAFKA_SSL_CERT_FILE",
                                  "HEALTH_KAFKA_SSL_KEY_FILE"])
def test_a_missing_tls_file_is_refused_by_name(monkeypatch, tmp_path, name):
    monkeypatch.setenv("HEALTH_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv(name, str(tmp_path / "absent.pem"))
    refused(f"^{name}: .*absent.pem is not a readable file")


def test_a_certificate_needs_its_key_and_the_reverse(pki):
    for files in ({"cert_file": pki["cert"]}, {"key_file": pki["key"]}):
        refused("HEALTH_KAFKA_SSL_CERT_FILE and HEALTH_KAFKA_SSL_KEY_FILE: set both",
                lambda: KafkaSecurity(protocol="SSL", **files))


def test_tls_files_without_a_tls_protocol_are_refused(pki):
    line = refused("HEALTH_KAFKA_SSL_CA_FILE", lambda: KafkaSecurity(protocol="SASL_PLAINTEXT", username="u",
                                                                    password="p", ca_file=pki["ca"]))
    assert "HEALTH_KAFKA_SECURITY_PROTOCOL is SASL_PLAINTEXT" in line


def test_a_ca_file_without_a_certificate_is_refused_when_the_context_is_made(pki):
    security = KafkaSecurity(protocol="SSL", ca_file=pki["not_pem"])
    refused("^HEALTH_KAFKA_SSL_CA_FILE: .* holds no usable certificate", security.client_options)


def test_a_key_that_does_not_match_the_certificate_is_refused(pki):
    security = KafkaSecurity(protocol="SSL", cert_file=pki["cert"], key_file=pki["ca_key"])
    refused("^HEALTH_KAFKA_SSL_CERT_FILE / HEALTH_KAFKA_SSL_KEY_FILE: cannot load", security.ssl_context)


@pytest.mark.parametrize("password, says", [(None, "is needed"), ("wrong", "is wrong")])
def test_an_encrypted_key_without_its_password_is_refused_not_prompted_for(pki, password, says):
    security = KafkaSecurity(protocol="SSL", cert_file=pki["cert"], key_file=pki["encrypted_key"],
                             key_password=password)
    # OpenSSL's own prompt would read the terminal: a worker started in one would wait there for ever
    refused(f"^HEALTH_KAFKA_SSL_KEY_PASSWORD \\(or _FILE\\) {says}", security.ssl_context)


# ---------------------------------------------------------------- Kafka: what the clients are given


def test_sasl_ssl_options_for_aiokafka(pki):
    security = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", username="health",
                             password=PASSWORD, ca_file=pki["ca"])
    options = security.client_options()
    context = options.pop("ssl_context")
    assert options == {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                       "sasl_plain_username": "health", "sasl_plain_password": PASSWORD}
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [ca["subject"] for ca in context.get_ca_certs()] == [((("commonName", "ca"),),)]  # that CA only


def test_sasl_plaintext_has_no_tls_context():
    options = KafkaSecurity(protocol="SASL_PLAINTEXT", username="u", password="p").client_options()
    assert options == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                       "sasl_plain_username": "u", "sasl_plain_password": "p"}


def test_ssl_with_a_client_certificate_and_no_hostname_check(pki):
    security = KafkaSecurity(protocol="SSL", ca_file=pki["ca"], cert_file=pki["cert"], key_file=pki["key"],
                             check_hostname=False)
    options = security.client_options()
    assert set(options) == {"security_protocol", "ssl_context"} and options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED  # the chain still counts


def test_settings_give_every_client_the_bootstrap_servers_and_the_security(monkeypatch):
    monkeypatch.setenv("HEALTH_KAFKA_BROKER", "kafka://a:9094;kafka://b:9094")
    monkeypatch.setenv("HEALTH_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("HEALTH_KAFKA_SASL_USERNAME", "u")
    monkeypatch.setenv("HEALTH_KAFKA_SASL_PASSWORD", "p")
    options = Settings.from_env().kafka_options()
    assert options["bootstrap_servers"] == "a:9094,b:9094" and options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_plain_username"] == "u"


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT", "SSL"])
def test_faust_credentials_amount_to_the_same_client_options(pki, protocol):
    from faust.auth import SASLCredentials, SSLCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    sasl = dict(sasl_mechanism="SCRAM-SHA-256", username="u", password="p") if "SASL" in protocol else {}
    tls = dict(ca_file=pki["ca"]) if protocol.endswith("SSL") else {}
    security = KafkaSecurity(protocol=protocol, **sasl, **tls)
    credentials = security.faust_credentials()
    assert isinstance(credentials, SASLCredentials if sasl else SSLCredentials)
    faust_options = dict(credentials_to_aiokafka_auth(credentials))
    ours = security.client_options()
    faust_context, our_context = faust_options.pop("ssl_context", None), ours.pop("ssl_context", None)
    assert faust_options == ours
    assert (faust_context is None) == (our_context is None)
    if faust_context is not None:
        assert faust_context.verify_mode == ssl.CERT_REQUIRED and faust_context.get_ca_certs()


# ---------------------------------------------------------------- Redis


def test_redis_settings_from_env_with_the_password_in_a_file(monkeypatch, tmp_path):
    secret = tmp_path / "redis-password"
    secret.write_text(f"{PASSWORD}\n")
    monkeypatch.setenv("HEALTH_REDIS_USERNAME", "health")
    monkeypatch.setenv("HEALTH_REDIS_PASSWORD_FILE", str(secret))
    security = RedisSecurity.from_env()
    assert (security.username, security.password) == ("health", PASSWORD)
    assert security.client_options("redis://127.0.0.1:6379/0") == {"username": "health", "password": PASSWORD}


def test_redis_password_both_directly_and_as_a_file_is_refused(monkeypatch, tmp_path):
    (tmp_path / "p").write_text("b")
    monkeypatch.setenv("HEALTH_REDIS_PASSWORD", "a")
    monkeypatch.setenv("HEALTH_REDIS_PASSWORD_FILE", str(tmp_path / "p"))
    refused("HEALTH_REDIS_PASSWORD and HEALTH_REDIS_PASSWORD_FILE are both set", RedisSecurity.from_env)


def test_redis_user_without_a_password_is_refused_by_name():
    refused("HEALTH_REDIS_PASSWORD", lambda: RedisSecurity(username="health").client_options("redis://h:6379/0"))


def test_redis_certificate_needs_its_key(pki):
    refused("HEALTH_REDIS_CERT_FILE and HEALTH_REDIS_KEY_FILE", lambda: RedisSecurity(cert_file=pki["cert"]))


def test_redis_tls_files_need_the_rediss_scheme(pki):
    line = refused("HEALTH_REDIS_CA_FILE", lambda: RedisSecurity(ca_file=pki["ca"]).client_options("redis://h/0"))
    assert "rediss://" in line and "HEALTH_REDIS_URL" in line


def test_redis_tls_options(pki):
    security = RedisSecurity(ca_file=pki["ca"], cert_file=pki["cert"], key_file=pki["key"])
    assert security.client_options("rediss://h:6380/0") == {
        "ssl_cert_reqs": "required", "ssl_ca_certs": str(pki["ca"]),
        "ssl_certfile": str(pki["cert"]), "ssl_keyfile": str(pki["key"])}
