"""`health read-model`: the read model sink in a process of its own.

With HEALTH_READ_MODEL_SINK=separate the workers run no sink: these processes write the score updates
into Redis instead, in the same consumer group (`<app id>-readmodel`) and with the same per-partition
markers as the workers' sinks, so a deployment switches either way without a rebuild. The scoring
workers then spend no CPU on Redis (about 47 µs per score update; BENCHMARKS.md), and the read model
scales on its own. Serves its metrics (the `health_read_model_*`
series) at http://HEALTH_WEB_HOST:<port>/metrics.
"""
from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import start_http_server

from streams.clock import supervised
from streams.settings import Settings
from streams.sinks.readmodel import ReadModel
from streams.sinks.readmodel_sink import ReadModelMetrics, ReadModelSink

log = logging.getLogger(__name__)


async def serve(settings: Settings, port: int) -> None:
    """Run the sink until SIGTERM or SIGINT (updates applied so far are committed; the rest is replayed)."""
    metrics = ReadModelMetrics()
    read_model = ReadModel.from_settings(settings)
    sink = ReadModelSink.of(settings, read_model, metrics, settings.kafka_security.client_options())
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    server, _ = start_http_server(port, addr=settings.web_host, registry=metrics.registry)
    log.info("read model sink of %s into Redis %s (metrics on %s:%d)", settings.topics.scores,
             settings.redis_prefix, settings.web_host, port)
    try:
        await supervised("the read model sink", lambda: sink.run(stopping), stopping)
    finally:
        server.shutdown()
        await read_model.close()
        log.info("read model sink stopped")
