"""Whether the worker can reach Kafka: for readiness, and for one log line per outage.

Faust's consumer and producer retry on their own while the broker is away; what they do not do is
say so in a way an operator or an orchestrator can act on. Every `interval` seconds this asks the
cluster for its metadata with a client of its own; `reachable` is False from the first failed
request until one succeeds, and each change is logged once.
"""
from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.client import AIOKafkaClient

from streams.clock import idle

log = logging.getLogger(__name__)


class BrokerWatch:
    def __init__(self, bootstrap: str, topic: str, interval: float = 2.0, timeout: float = 5.0,
                 client_options: dict | None = None):
        self.bootstrap = bootstrap
        self.topic = topic  # the metadata asked for: one topic's, not the whole cluster's
        self.interval = interval
        self.timeout = timeout
        self.client_options = client_options or {}
        self.reachable = True  # until a check says otherwise: the worker has just connected to start
        self.down_since: float | None = None

    async def check(self, client: AIOKafkaClient) -> bool:
        try:
            return bool(await asyncio.wait_for(client.force_metadata_update(), self.timeout))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - any failure to get metadata means not reachable
            return False

    def _record(self, ok: bool) -> None:
        if ok and not self.reachable:
            log.warning("Kafka at %s reachable again after %.0f s", self.bootstrap, time.monotonic() - self.down_since)
            self.down_since = None
        elif not ok and self.reachable:
            self.down_since = time.monotonic()
            log.error("Kafka at %s unreachable; the worker retries and reports not ready until it is back",
                      self.bootstrap)
        self.reachable = ok

    async def run(self, stopping: asyncio.Event) -> None:
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=int(self.timeout * 1000),
                                **self.client_options)
        try:
            while not stopping.is_set():
                try:
                    await client.bootstrap()
                    await asyncio.wait_for(client.set_topics([self.topic]), self.timeout)
                    break
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001
                    self._record(False)
                    await idle(stopping, self.interval)
            while not stopping.is_set():
                self._record(await self.check(client))
                await idle(stopping, self.interval)
        finally:
            await client.close()
