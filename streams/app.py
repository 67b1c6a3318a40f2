"""The Faust application, built by a factory so tests and tools make their own."""
from __future__ import annotations

from streams.batching import HealthApp
from streams.clock import Clock, clock_from
from streams.metrics import HealthMetrics
from streams.settings import Settings


def create_app(settings: Settings | None = None, *, metrics: HealthMetrics | None = None,
               clock: Clock | None = None) -> HealthApp:
    settings = settings or Settings.from_env()
    app = HealthApp(
        settings.app_id,
        broker=settings.broker,
        store=settings.store,
        topic_partitions=settings.partitions,
        # raw bytes end to end: the core decodes with orjson once; Faust's codecs would decode twice
        key_serializer="raw",
        value_serializer="raw",
        web_port=settings.web_port,
        web_host=settings.web_host,
        producer_linger_ms=1,
        # a batch's table writes and outputs go out as one record batch per partition (see
        # streams.kafka_batches); aiokafka's 16 KiB default would hold four account states
        producer_max_batch_size=512 * 1024,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=settings.heartbeat_seconds,
        broker_credentials=settings.kafka_security.faust_credentials(),
    )
    from streams import pipeline

    app.health = pipeline.register(app, settings, metrics or HealthMetrics(), clock or clock_from(settings.clock_file))
    return app
