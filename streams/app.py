"""The Faust application, built by a factory so tests and tools make their own."""
from __future__ import annotations

import faust

from streams.settings import Settings


def create_app(settings: Settings | None = None) -> faust.App:
    settings = settings or Settings.from_env()
    app = faust.App(
        settings.app_id,
        broker=settings.broker,
        store=settings.store,
        topic_partitions=settings.partitions,
        # raw bytes end to end: orjson decodes in the core's hot path, Faust's codecs would decode twice
        key_serializer="raw",
        value_serializer="raw",
        web_port=settings.web_port,
        web_host="127.0.0.1",
        producer_linger_ms=5,
        # opentracing absent: keep Faust from waiting on it (see faust-streaming 0.15.3 pin)
        consumer_auto_offset_reset="earliest",
    )
    app.health_settings = settings  # read by agents, web views and the CLI
    from streams import pipeline  # registers topics, agents and timers on this app

    pipeline.register(app, settings)
    return app
