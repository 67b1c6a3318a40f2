"""Checks run before a command or a worker starts: each problem becomes one line naming the address, the
setting and the fix, instead of a traceback (or a worker retrying forever against a wrong password)."""
from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from typing import Callable

from streams.connections import redis_address
from streams.settings import Settings

START_HINT = "start the local stack with `ops/stack up`"
SETTING_HINT = "fix that variable (README, \"Settings\")"


class NotReachable(Exception):
    """A service that cannot be used as configured; str() is the one line to print."""


class BadSetting(NotReachable):
    """A setting that cannot work as given (not a number, an unknown protocol, a port out of range); the
    line names the variable."""


_CERT_ALERTS = ("BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "UNKNOWN_CA", "CERTIFICATE_UNKNOWN")
_NAME_MISMATCH = (62, 64)  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


def _chain(exc: BaseException):
    """The exception and what caused it: aiokafka wraps TLS and socket errors in KafkaConnectionError."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _found(exc: BaseException, kind: type) -> BaseException | None:
    return next((e for e in _chain(exc) if isinstance(e, kind)), None)


def _cert_alert(exc: BaseException) -> ssl.SSLError | None:
    """The TLS alert of a server that refused the client's certificate (or its absence), if that failed."""
    error = _found(exc, ssl.SSLError)
    reason = (getattr(error, "reason", None) or "") if error else ""
    return error if any(alert in reason for alert in _CERT_ALERTS) else None


def _reason(exc: BaseException) -> str:
    for e in _chain(exc):
        if isinstance(e, ssl.SSLError) and e.reason:
            return e.reason
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _kafka_listener(host: str, port: int, timeout: float) -> str | None:
    """What the listener at host:port speaks, learnt by asking as each kind of client would: PLAINTEXT,
    SASL_PLAINTEXT, SSL, SASL_SSL or MTLS (TLS that wants a client certificate); None if nothing answered
    within `timeout` (all questions together)."""
    from aiokafka.conn import create_conn
    from aiokafka.errors import IllegalSaslStateError
    from aiokafka.protocol.admin import SaslHandShakeRequest

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    unverified = ssl.create_default_context()
    unverified.check_hostname, unverified.verify_mode = False, ssl.CERT_NONE  # what it speaks, not who it is
    for tls in (False, True):
        # the plaintext question gets half: a TLS port may keep it waiting, and the TLS question must still fit
        limit = max(0.1, (deadline - loop.time()) / (1 if tls else 2))
        try:
            conn = await asyncio.wait_for(create_conn(host, port, security_protocol="SSL" if tls else "PLAINTEXT",
                                                      ssl_context=unverified if tls else None,
                                                      request_timeout_ms=int(limit * 1000)), limit)
        except Exception as exc:  # noqa: BLE001 - any failure only means "not this kind"
            if tls and _cert_alert(exc):
                return "MTLS"
            continue
        try:
            # a SASL listener answers the handshake; any other says it is in the wrong state for one
            response = await asyncio.wait_for(conn.send(SaslHandShakeRequest("PLAIN")),
                                              max(0.1, deadline - loop.time()))
        except Exception:  # noqa: BLE001
            return None
        finally:
            conn.close()
        sasl = response.error_code != IllegalSaslStateError.errno
        return ("SASL_" if sasl else "") + ("SSL" if tls else "PLAINTEXT")
    return None


async def check_kafka(settings: Settings, timeout: float = 10.0) -> None:
    """Connect to each bootstrap server with the configured security and ask for metadata, until one answers.
    A server that cannot be reached is skipped; one that answers but refuses the settings (an untrusted
    certificate, a wrong password, another security protocol than its listener's, a missing client
    certificate) ends the check with the setting to change. Bounded: at most `timeout` per server, twice that
    for one that accepts the connection but fails the exchange (then asked which protocol it speaks)."""
    from aiokafka.conn import create_conn
    import aiokafka.errors as errors
    from aiokafka.protocol.metadata import MetadataRequest

    security = settings.kafka_security
    options = security.client_options()  # ConnectionSettingError: a TLS file that does not load
    loop = asyncio.get_running_loop()
    problems = []
    for address in settings.bootstrap_servers.split(","):
        host, _, port_text = address.rpartition(":")
        host, port = host.strip("[]"), int(port_text)  # ValueError: not host:port, for the caller to name
        deadline = loop.time() + timeout

        def left() -> float:
            return max(0.1, deadline - loop.time())

        # plain TCP first: what does not accept a connection is unreachable, whatever the security settings
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), left())
            writer.close()
        except (OSError, asyncio.TimeoutError) as exc:
            problems.append(f"{address} ({_reason(exc)})")
            continue
        try:
            conn = await asyncio.wait_for(create_conn(host, port, request_timeout_ms=int(left() * 1000),
                                                      **options), left())
            try:
                # a listener that wants SASL answers ApiVersions to anyone, and drops a client that asks more
                await asyncio.wait_for(conn.send(MetadataRequest([])), left())
            finally:
                conn.close()
            return
        except Exception as exc:  # noqa: BLE001 - classified below; the unknown rest as a protocol mismatch
            failure = exc
        where = f"Kafka at {address}"
        if (bad := _found(failure, ssl.SSLCertVerificationError)) is not None:
            if bad.verify_code in _NAME_MISMATCH:
                raise NotReachable(f"{where}: its TLS certificate is not valid for {host} ({bad.verify_message}); "
                                   f"put a name the certificate holds in HEALTH_KAFKA_BROKER, or set "
                                   f"HEALTH_KAFKA_SSL_CHECK_HOSTNAME=false") from None
            trusted = f" (HEALTH_KAFKA_SSL_CA_FILE={security.ca_file} did not sign it)" if security.ca_file else ""
            raise NotReachable(f"{where}: its TLS certificate is not trusted ({bad.verify_message}){trusted}; "
                               f"set HEALTH_KAFKA_SSL_CA_FILE to the CA that signed it") from None
        if isinstance(failure, errors.SaslAuthenticationFailed):
            raise NotReachable(f"{where} refused the {security.sasl_mechanism} credentials of "
                               f"HEALTH_KAFKA_SASL_USERNAME={security.username}: check HEALTH_KAFKA_SASL_PASSWORD "
                               f"(or _FILE), and that the user exists for {security.sasl_mechanism}") from None
        if isinstance(failure, errors.UnsupportedSaslMechanismError):
            offered = str(failure).rpartition("Enabled mechanisms are: ")[2]
            raise NotReachable(f"{where} does not offer SASL mechanism {security.sasl_mechanism} (it offers "
                               f"{offered}): set HEALTH_KAFKA_SASL_MECHANISM to one of them") from None
        if (alert := _cert_alert(failure)) is not None:
            if security.cert_file is None:
                # a SASL client may simply have been pointed at the broker's mTLS listener
                other = (f", or point HEALTH_KAFKA_BROKER at its {security.protocol} listener if this is its mTLS "
                         f"one" if security.sasl else "")
                raise NotReachable(f"{where} requires a client certificate (mutual TLS; it answered "
                                   f"{alert.reason}): set HEALTH_KAFKA_SSL_CERT_FILE and HEALTH_KAFKA_SSL_KEY_FILE "
                                   f"to one signed by a CA it trusts{other}") from None
            raise NotReachable(f"{where} refused the client certificate HEALTH_KAFKA_SSL_CERT_FILE="
                               f"{security.cert_file} ({alert.reason}): use one signed by a CA it trusts") from None
        configured, listener = security.protocol, await _kafka_listener(host, port, timeout)
        extra = {"MTLS": " with HEALTH_KAFKA_SSL_CERT_FILE and HEALTH_KAFKA_SSL_KEY_FILE (it requires a client "
                         "certificate)",
                 "SASL_SSL": " with HEALTH_KAFKA_SASL_USERNAME and HEALTH_KAFKA_SASL_PASSWORD",
                 "SASL_PLAINTEXT": " with HEALTH_KAFKA_SASL_USERNAME and HEALTH_KAFKA_SASL_PASSWORD"}.get(listener, "")
        listener = "SSL" if listener == "MTLS" else listener
        if listener not in (None, configured):
            article = "an" if listener == "SSL" else "a"
            raise NotReachable(f"{where} is {article} {listener} listener but HEALTH_KAFKA_SECURITY_PROTOCOL is "
                               f"{configured}: set it to {listener}{extra}, or point HEALTH_KAFKA_BROKER at the "
                               f"broker's {configured} listener") from None
        detail = (f"no answer within {timeout:g} s" if _found(failure, asyncio.TimeoutError) else
                  _reason(failure))
        raise NotReachable(f"{where} accepted the connection but not the {configured} exchange "
                           f"({detail}): check that HEALTH_KAFKA_SECURITY_PROTOCOL matches the listener "
                           f"on that port") from None
    raise NotReachable(f"Kafka not reachable at {', '.join(problems)} (HEALTH_KAFKA_BROKER={settings.broker}); "
                       f"{START_HINT}, or point HEALTH_KAFKA_BROKER at a running broker")


async def check_redis(settings: Settings, timeout: float = 5.0) -> None:
    """PING Redis as the worker would (credentials, TLS); each way that fails becomes one line naming the
    setting to change. Bounded by `timeout`: a wrong scheme or port ends as an error, never a hang."""
    from urllib.parse import urlsplit

    import redis.asyncio as aioredis
    import redis.exceptions as errors

    from streams.text import printable

    def root_cause(exc: BaseException) -> BaseException:
        """The first exception of the chain (redis-py wraps socket and TLS errors in its own)."""
        seen = {id(exc)}
        while (inner := exc.__cause__ or exc.__context__) is not None and id(inner) not in seen:
            seen.add(id(inner))
            exc = inner
        return exc

    address = redis_address(settings.redis_url)
    options = settings.redis_options()  # ConnectionSettingError (names the setting) for the caller to print
    parts = urlsplit(settings.redis_url)
    tls = parts.scheme.lower() == "rediss"
    credentials = bool(options.get("password") or parts.password)
    client = aioredis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                               **options)
    try:
        await client.ping()
    except errors.AuthenticationError:  # (a ConnectionError: caught first)
        if not credentials:
            raise NotReachable(f"Redis at {address} requires a password: set HEALTH_REDIS_PASSWORD (or "
                               f"HEALTH_REDIS_PASSWORD_FILE, and HEALTH_REDIS_USERNAME for an ACL user)") from None
        raise NotReachable(f"Redis at {address} refused the credentials: check HEALTH_REDIS_PASSWORD "
                           f"(and HEALTH_REDIS_USERNAME, or the ones in HEALTH_REDIS_URL)") from None
    except errors.NoPermissionError as exc:
        raise NotReachable(f"Redis at {address}: the user of HEALTH_REDIS_USERNAME may not run PING "
                           f"({printable(str(exc), 200)}); grant it +ping and the read model's commands") from None
    except errors.TimeoutError:
        hint = ("if that port serves plain TCP, use redis:// in HEALTH_REDIS_URL" if tls else
                "check the host and port of HEALTH_REDIS_URL")
        raise NotReachable(f"Redis at {address} did not answer within {timeout:g} s: {hint}") from None
    except (errors.ConnectionError, OSError) as exc:
        cause = root_cause(exc)
        if isinstance(cause, ssl.SSLCertVerificationError):
            if cause.verify_code in (62, 64):  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
                raise NotReachable(f"Redis at {address}: its TLS certificate does not name that host "
                                   f"({cause.verify_message}); put a name the certificate holds in "
                                   f"HEALTH_REDIS_URL") from None
            raise NotReachable(f"Redis at {address}: its TLS certificate is not trusted ({cause.verify_message}); "
                               f"set HEALTH_REDIS_CA_FILE to the CA that signed it") from None
        dropped = isinstance(cause, (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError))
        alert = (cause.reason or "") if isinstance(cause, ssl.SSLError) else ""
        refused_cert = any(name in alert for name in ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA",
                                                      "CERTIFICATE_UNKNOWN"))
        if tls and (dropped or refused_cert):
            # a server that wants a client certificate (and has none, or not one it trusts) sends that alert
            # under TLS 1.3 after the handshake, or only resets the connection: either may reach the client
            mine = settings.redis_security.cert_file
            fix = (f"it may not accept the certificate of HEALTH_REDIS_CERT_FILE ({mine}): use one its CA signed"
                   if mine else "if it requires a client certificate, set HEALTH_REDIS_CERT_FILE and "
                                "HEALTH_REDIS_KEY_FILE")
            raise NotReachable(f"Redis at {address} closed the TLS connection{f' ({alert})' if alert else ''}: "
                               f"{fix}") from None
        if isinstance(cause, ssl.SSLError):
            raise NotReachable(f"Redis at {address}: the TLS handshake failed ({cause.reason or cause}); check "
                               f"that the port of HEALTH_REDIS_URL serves TLS, or use redis://") from None
        if not tls and (dropped or "closed by server" in str(exc)):
            # a TLS port drops a client that speaks plain RESP at once: the likeliest reason for a reset
            raise NotReachable(f"Redis at {address} closed the connection at once: if it serves TLS, use "
                               f"rediss:// in HEALTH_REDIS_URL (and HEALTH_REDIS_CA_FILE)") from None
        raise NotReachable(f"Redis not reachable at {address} ({printable(str(exc), 200)}) (HEALTH_REDIS_URL); "
                           f"{START_HINT}, or point HEALTH_REDIS_URL at a running Redis") from None
    finally:
        await client.aclose()



# ---- what the command line runs before a command (streams.tools.cli) ----

def one_line(text: object, limit: int = 600) -> str:
    """`text` on one line, escaped (messages quote addresses and values from the environment)."""
    from streams.text import printable

    return printable(" ".join(str(text).split()), limit)


def load_settings() -> Settings:
    """Settings.from_env(); a value that cannot work is raised as BadSetting, its line naming the variable."""
    try:
        return Settings.from_env()
    except ValueError as exc:  # ConnectionSettingError is one: every message starts with the variable's name
        raise BadSetting(f"{one_line(exc)}; {SETTING_HINT}") from None


def check_port(host: str, port: int, setting: str = "HEALTH_WEB_PORT") -> None:
    """Bind host:port as the worker's web server will (SO_REUSEADDR, every address `host` resolves to),
    then let it go: a port already taken is one line naming `setting`, not Faust's traceback at start."""
    if not 0 <= port <= 65535:
        raise BadSetting(f"{setting}={port}: expected a port number from 1 to 65535; {SETTING_HINT}")
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise BadSetting(f"HEALTH_WEB_HOST={host}: not an address to listen on ({one_line(exc)}); "
                         f"{SETTING_HINT}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio's create_server binds each family on its own
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise NotReachable(
                        f"port {port} on {host} is already in use, by another worker? ({setting}={port}): "
                        f"stop what listens there, give this worker a free port (--web-port or HEALTH_WEB_PORT), "
                        f"or run it --without-web") from None
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise BadSetting(f"HEALTH_WEB_HOST={host}: not an address of this machine; "
                                     f"{SETTING_HINT}") from None
                if exc.errno == errno.EACCES:
                    raise BadSetting(f"{setting}={port}: this user may not listen on port {port} on {host} "
                                     f"(ports below 1024 need privileges): choose a port above 1023") from None
                raise NotReachable(f"cannot listen on {host}:{port} ({setting}): "
                                   f"{exc.strerror or one_line(exc)}") from None


def ready(settings: Settings | None = None, *, kafka: bool = False, redis: bool = False, web: bool = False,
          web_port: int | None = None, redis_optional: bool = False,
          warn: Callable[[str], None] | None = None) -> Settings:
    """The settings (`settings`, or read now), once everything a command needs is usable: the settings
    parse, the web port is free (`web`: the worker's web server; `web_port` overrides HEALTH_WEB_PORT, as
    --web-port does), Kafka and Redis answer. Otherwise NotReachable (or BadSetting) with the one line to
    print. Cheap checks first, so a bad setting never waits for a connection timeout; Kafka before Redis,
    and only the first problem: `ops/stack up` starts both.

    `redis_optional` (the worker: it scores without Redis and its read model catches up when Redis
    answers): a Redis that nothing listens for is `warn(line)`, not an error; one that answers but
    refuses the settings (a password, TLS, the URL) is still an error, since retrying cannot cure it."""
    settings = settings or load_settings()
    if web:
        check_port(settings.web_host, settings.web_port if web_port is None else web_port,
                   "HEALTH_WEB_PORT" if web_port is None else "--web-port")
    if kafka or redis:
        run_isolated(_check_services(settings, kafka, redis, warn if redis_optional else None))
    return settings


async def _check_services(settings: Settings, kafka: bool, redis: bool,
                          warn: Callable[[str], None] | None) -> None:
    from streams.connections import ConnectionSettingError

    if kafka:
        try:
            await check_kafka(settings)
        except ConnectionSettingError as exc:  # a TLS file that does not load
            raise BadSetting(f"{one_line(exc)}; {SETTING_HINT}") from None
        except ValueError:  # a bootstrap server that is not host:port
            raise BadSetting(f"HEALTH_KAFKA_BROKER={one_line(settings.broker)}: expected kafka://host:port "
                             f"(several separated by ';'); {SETTING_HINT}") from None
    if redis:
        if warn is not None and (why := await _nothing_listens(settings.redis_url)) is not None:
            warn(f"Redis not reachable at {redis_address(settings.redis_url)} ({why}) (HEALTH_REDIS_URL): "
                 f"scoring goes on without it and the read model catches up once it answers; {START_HINT}")
            return
        try:
            await check_redis(settings)
        except ConnectionSettingError as exc:
            raise BadSetting(f"{one_line(exc)}; {SETTING_HINT}") from None
        except ValueError as exc:  # redis-py's own refusal of the URL; its message never repeats the URL
            raise BadSetting(f"HEALTH_REDIS_URL: {one_line(exc)}; {SETTING_HINT}") from None


async def _nothing_listens(url: str, timeout: float = 5.0) -> str | None:
    """Why no connection to the Redis of `url` opens (refused, no answer), or None when one opens: then
    check_redis says whether that server takes the settings."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        if parts.scheme.lower() == "unix":
            opening = asyncio.open_unix_connection(parts.path)
        else:
            opening = asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 6379)
        _, writer = await asyncio.wait_for(opening, timeout)
    except asyncio.TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or one_line(exc)
    except ValueError:  # a port that is no number: check_redis refuses the URL with redis-py's reason
        return None
    writer.close()
    return None


def run_isolated(coro):
    """Run `coro` as asyncio.run does (what the clients leave behind is cancelled and awaited: no task is
    destroyed pending), on a loop of its own: given a loop factory, the runner leaves the thread's current
    loop alone, where asyncio.run would clear it, and the worker builds its Faust app (which takes the
    current loop) after these checks."""
    with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
        return runner.run(coro)


def lost_connection(exc: BaseException, settings: Settings | None) -> str | None:
    """The one line for a connection that failed during a command (the broker or Redis stopped after the
    checks passed), or None when `exc` is no such failure (a bug keeps its traceback)."""
    import aiokafka.errors as kafka_errors
    import redis.exceptions as redis_errors

    name, text = type(exc).__name__, str(exc)
    # aiokafka's messages start with the error's name, redis-py's and the built-in ones do not
    detail = one_line(text if text.startswith(name) else f"{name}: {text}" if text else name, 300)
    again = f"`ops/stack status` says whether it still runs; {START_HINT}"
    if isinstance(exc, (kafka_errors.KafkaConnectionError, kafka_errors.NoBrokersAvailable,
                        kafka_errors.NodeNotReadyError, kafka_errors.KafkaTimeoutError,
                        kafka_errors.RequestTimedOutError)):
        where = (f"Kafka at {settings.bootstrap_servers} (HEALTH_KAFKA_BROKER={settings.broker})" if settings
                 else "Kafka (HEALTH_KAFKA_BROKER)")
        return f"{where} failed during the command ({detail}); {again}"
    if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError)):
        where = (f"Redis at {redis_address(settings.redis_url)} (HEALTH_REDIS_URL)" if settings
                 else "Redis (HEALTH_REDIS_URL)")
        return f"{where} failed during the command ({detail}); {again}"
    if isinstance(exc, ConnectionError):  # the built-in one (refused, reset, broken pipe): either service
        where = (f"Kafka at {settings.bootstrap_servers} (HEALTH_KAFKA_BROKER) or Redis at "
                 f"{redis_address(settings.redis_url)} (HEALTH_REDIS_URL)" if settings else
                 "Kafka (HEALTH_KAFKA_BROKER) or Redis (HEALTH_REDIS_URL)")
        return f"a connection to {where} failed during the command ({detail}); {again}"
    return None
