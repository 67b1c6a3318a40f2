"""How every client reaches Kafka and Redis: one set of security settings for the worker, the sinks and the CLI.

A production cluster wants SASL and TLS (managed Kafka offerings always do); the local stack is
PLAINTEXT. Secrets may come from files, as orchestrators mount them. Every problem is refused at start
with the setting's name, never discovered as a hang at the first connection.
"""
from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class ConnectionSettingError(ValueError):
    """A connection setting that cannot work; the message names the setting."""


def env_str(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def env_bool(name: str, default: bool) -> bool:
    raw = (env_str(name) or "").lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConnectionSettingError(f"{name}: expected true or false, got {raw!r}")


def env_secret(name: str) -> str | None:
    """NAME, or the content of the file NAME_FILE (trailing newline dropped); both set is an error."""
    value, path = os.environ.get(name) or None, env_str(f"{name}_FILE")
    if value is not None and path is not None:
        raise ConnectionSettingError(f"{name} and {name}_FILE are both set: keep one")
    if path is None:
        return value
    try:
        return Path(path).read_text().rstrip("\r\n") or None
    except OSError as exc:
        raise ConnectionSettingError(f"{name}_FILE: cannot read {path} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConnectionSettingError(f"{name}_FILE: {path} is not UTF-8 text (a secret file holds the secret "
                                     f"as text, e.g. base64 or hex)") from None


def _env_file(name: str) -> Path | None:
    raw = env_str(name)
    if raw is None:
        return None
    path = Path(raw)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ConnectionSettingError(f"{name}: {raw} is not a readable file")
    return path


@dataclass(frozen=True)
class KafkaSecurity:
    """Security of every Kafka connection: protocol, SASL credentials, TLS trust and client certificate."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password: str | None = None
    check_hostname: bool = True

    @classmethod
    def from_env(cls) -> "KafkaSecurity":
        protocol = (env_str("HEALTH_KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper()
        mechanism = (env_str("HEALTH_KAFKA_SASL_MECHANISM") or "PLAIN").upper()
        return cls(protocol=protocol, sasl_mechanism=mechanism,
                   username=env_str("HEALTH_KAFKA_SASL_USERNAME"),
                   password=env_secret("HEALTH_KAFKA_SASL_PASSWORD"),
                   ca_file=_env_file("HEALTH_KAFKA_SSL_CA_FILE"),
                   cert_file=_env_file("HEALTH_KAFKA_SSL_CERT_FILE"),
                   key_file=_env_file("HEALTH_KAFKA_SSL_KEY_FILE"),
                   key_password=env_secret("HEALTH_KAFKA_SSL_KEY_PASSWORD"),
                   check_hostname=env_bool("HEALTH_KAFKA_SSL_CHECK_HOSTNAME", True))

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConnectionSettingError(f"HEALTH_KAFKA_SECURITY_PROTOCOL: expected one of {', '.join(PROTOCOLS)}, "
                                         f"got {self.protocol!r}")
        if self.sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ConnectionSettingError(f"HEALTH_KAFKA_SASL_MECHANISM: expected one of "
                                             f"{', '.join(SASL_MECHANISMS)}, got {self.sasl_mechanism!r}")
            if not self.username:
                raise ConnectionSettingError(f"HEALTH_KAFKA_SASL_USERNAME: required with {self.protocol}")
            if not self.password:
                raise ConnectionSettingError(f"HEALTH_KAFKA_SASL_PASSWORD (or HEALTH_KAFKA_SASL_PASSWORD_FILE): "
                                             f"required with {self.protocol}")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConnectionSettingError("HEALTH_KAFKA_SSL_CERT_FILE and HEALTH_KAFKA_SSL_KEY_FILE: set both "
                                         "(a client certificate needs its key) or neither")
        if not self.tls and (self.ca_file or self.cert_file):
            raise ConnectionSettingError(f"HEALTH_KAFKA_SSL_CA_FILE / _CERT_FILE are set but "
                                         f"HEALTH_KAFKA_SECURITY_PROTOCOL is {self.protocol}: use SSL or SASL_SSL")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (the system's trust store unless a CA file is set), or None without TLS."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (ssl.SSLError, OSError) as exc:
            raise ConnectionSettingError(f"HEALTH_KAFKA_SSL_CA_FILE: {self.ca_file} holds no usable "
                                         f"certificate ({exc})") from None
        context.check_hostname = self.check_hostname
        if self.cert_file:
            asked = []

            def key_password() -> str:
                # without a callback OpenSSL would prompt on the terminal for an encrypted key's passphrase
                asked.append(True)
                return self.key_password or ""

            try:
                context.load_cert_chain(str(self.cert_file), str(self.key_file), key_password)
            except (ssl.SSLError, OSError) as exc:
                if asked:
                    which = "is wrong" if self.key_password else "is needed: the key is encrypted"
                    raise ConnectionSettingError(f"HEALTH_KAFKA_SSL_KEY_PASSWORD (or _FILE) {which} "
                                                 f"({self.key_file})") from None
                raise ConnectionSettingError(f"HEALTH_KAFKA_SSL_CERT_FILE / HEALTH_KAFKA_SSL_KEY_FILE: cannot "
                                             f"load the client certificate ({exc})") from None
        return context

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for every aiokafka client (producer, consumer, admin, low-level client)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.tls:
            options["ssl_context"] = self.ssl_context()
        if self.sasl:
            options.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                           sasl_plain_password=self.password)
        return options

    def faust_credentials(self):
        """The same security as Faust's `broker_credentials`, or None for PLAINTEXT."""
        from faust.auth import SASLCredentials, SSLCredentials

        if self.sasl:
            return SASLCredentials(username=self.username, password=self.password,
                                   ssl_context=self.ssl_context(), mechanism=self.sasl_mechanism)
        if self.tls:
            return SSLCredentials(self.ssl_context())
        return None


@dataclass(frozen=True)
class RedisSecurity:
    """Credentials and TLS for Redis beyond what the URL says (an ACL user and password, a CA to trust)."""

    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def from_env(cls) -> "RedisSecurity":
        return cls(username=env_str("HEALTH_REDIS_USERNAME"), password=env_secret("HEALTH_REDIS_PASSWORD"),
                   ca_file=_env_file("HEALTH_REDIS_CA_FILE"), cert_file=_env_file("HEALTH_REDIS_CERT_FILE"),
                   key_file=_env_file("HEALTH_REDIS_KEY_FILE"))

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ConnectionSettingError("HEALTH_REDIS_CERT_FILE and HEALTH_REDIS_KEY_FILE: set both or neither")
        # a user name needs a password, but the password may be in HEALTH_REDIS_URL: checked in client_options

    def client_options(self, url: str) -> dict[str, Any]:
        """Keyword arguments for redis.asyncio.from_url(url, ...). Credentials may be in the URL or in these
        settings. redis-py lets the URL's override the keyword arguments without a word, so one given in
        both, differently, is refused rather than silently ignored."""
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(url)
        tls = parts.scheme.lower() == "rediss"  # redis-py reads the scheme case-insensitively too
        if not tls and (self.ca_file or self.cert_file):
            raise ConnectionSettingError("HEALTH_REDIS_CA_FILE / _CERT_FILE are set but HEALTH_REDIS_URL is not "
                                         "rediss://: TLS needs the rediss:// scheme")
        url_user = unquote(parts.username) if parts.username else None
        url_password = unquote(parts.password) if parts.password else None
        if self.username and url_user and self.username != url_user:
            raise ConnectionSettingError("HEALTH_REDIS_USERNAME and the user name in HEALTH_REDIS_URL differ: "
                                         "keep one")
        if self.password and url_password and self.password != url_password:
            raise ConnectionSettingError("HEALTH_REDIS_PASSWORD (or _FILE) and the password in HEALTH_REDIS_URL "
                                         "differ: keep one")
        if (self.username or url_user) and not (self.password or url_password):
            raise ConnectionSettingError("HEALTH_REDIS_PASSWORD (or HEALTH_REDIS_PASSWORD_FILE, or a password in "
                                         "HEALTH_REDIS_URL): required with a Redis user name")
        if tls:
            self._check_tls_files()
        options: dict[str, Any] = {}
        if self.username:
            options["username"] = self.username
        if self.password:
            options["password"] = self.password
        if tls:
            options["ssl_cert_reqs"] = "required"
            if self.ca_file:
                options["ssl_ca_certs"] = str(self.ca_file)
            if self.cert_file:
                options.update(ssl_certfile=str(self.cert_file), ssl_keyfile=str(self.key_file))
        return options

    def _check_tls_files(self) -> None:
        """Load the CA and the client certificate once, now: redis-py loads them only when it connects, so a
        wrong file would fail every connection (and the sink retry for ever) instead of the start."""
        context = ssl.create_default_context()
        if self.ca_file:
            try:
                context.load_verify_locations(cafile=str(self.ca_file))
            except (ssl.SSLError, OSError) as exc:
                raise ConnectionSettingError(f"HEALTH_REDIS_CA_FILE: {self.ca_file} holds no usable certificate "
                                             f"({exc})") from None
        if self.cert_file:
            try:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
            except (ssl.SSLError, OSError) as exc:
                raise ConnectionSettingError(f"HEALTH_REDIS_CERT_FILE / HEALTH_REDIS_KEY_FILE: cannot load the "
                                             f"client certificate ({exc})") from None


def redis_address(url: str) -> str:
    """host:port of a Redis URL without its credentials, for messages and logs."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"


async def start_client(client) -> None:
    """Start an aiokafka client, closing it if the start fails: a client left half-started warns
    "Unclosed ..." at exit, after the one-line error the user should see last."""
    try:
        await client.start()
    except BaseException:
        await (client.close() if hasattr(client, "close") else client.stop())
        raise
