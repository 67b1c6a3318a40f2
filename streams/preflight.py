"""Checks run before a command or a worker starts: each problem becomes one line naming the address, the
setting and the fix, instead of a traceback (or a worker retrying forever against a wrong password)."""
from __future__ import annotations

import asyncio
import ssl

from streams.connections import redis_address
from streams.settings import Settings

START_HINT = "start the local stack with `ops/stack up`"


class NotReachable(Exception):
    """A service that cannot be used as configured; str() is the one line to print."""


async def check_kafka(settings: Settings, timeout: float = 10.0) -> None:
    """Connect to each bootstrap server with the configured security until one answers."""
    from aiokafka.conn import create_conn
    import aiokafka.errors as errors

    security = settings.kafka_security
    options = security.client_options()
    options.pop("security_protocol")
    problems = []
    for address in settings.bootstrap_servers.split(","):
        host, _, port = address.rpartition(":")
        try:
            conn = await asyncio.wait_for(
                create_conn(host, int(port), security_protocol=security.protocol,
                            request_timeout_ms=int(timeout * 1000), **options), timeout)
        except ssl.SSLCertVerificationError as exc:
            raise NotReachable(f"Kafka at {address}: its TLS certificate is not trusted ({exc.verify_message}); "
                               f"set HEALTH_KAFKA_SSL_CA_FILE to the CA that signed it") from None
        except errors.KafkaError as exc:
            if "auth" in type(exc).__name__.lower() or "sasl" in type(exc).__name__.lower():
                raise NotReachable(f"Kafka at {address} refused the credentials of HEALTH_KAFKA_SASL_USERNAME "
                                   f"({security.sasl_mechanism}): check HEALTH_KAFKA_SASL_PASSWORD") from None
            problems.append(f"{address} ({type(exc).__name__}: {exc})")
            continue
        except (OSError, asyncio.TimeoutError) as exc:
            problems.append(f"{address} ({exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__})")
            continue
        conn.close()
        return
    raise NotReachable(f"Kafka not reachable at {', '.join(problems)} (HEALTH_KAFKA_BROKER={settings.broker}); "
                       f"{START_HINT}, or point HEALTH_KAFKA_BROKER at a running broker")


async def check_redis(settings: Settings, timeout: float = 5.0) -> None:
    import redis.asyncio as aioredis
    import redis.exceptions as errors

    address = redis_address(settings.redis_url)
    client = aioredis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout,
                               **settings.redis_options())
    try:
        await client.ping()
    except errors.AuthenticationError:
        raise NotReachable(f"Redis at {address} refused the credentials: check HEALTH_REDIS_PASSWORD "
                           f"(and HEALTH_REDIS_USERNAME, or the ones in HEALTH_REDIS_URL)") from None
    except (errors.ConnectionError, errors.TimeoutError, OSError) as exc:
        raise NotReachable(f"Redis not reachable at {address} ({exc}) (HEALTH_REDIS_URL); {START_HINT}, "
                           f"or point HEALTH_REDIS_URL at a running Redis") from None
    finally:
        await client.aclose()
