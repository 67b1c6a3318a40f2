"""The Faust application, built by a factory so tests and tools make their own."""
from __future__ import annotations

import os

from streams.worker.batching import HealthApp
from streams.clock import Clock, clock_from
from streams.worker.metrics import HealthMetrics
from streams.settings import Settings

ROCKSDB_EXTRA = "rocksdb"  # pyproject.toml's optional extra that installs the bindings (rocksdict)


def create_app(settings: Settings | None = None, *, metrics: HealthMetrics | None = None,
               clock: Clock | None = None, faust_views: bool | None = None) -> HealthApp:
    """faust_views: serve Faust's own web views (/, /router, /table, /graph, statistics) beside the read
    API; off unless HEALTH_WEB_FAUST_VIEWS=1 (for debugging: they show table data and cluster layout)."""
    settings = settings or Settings.from_env()
    require_store_bindings(settings.store)
    app = HealthApp(
        settings.app_id,
        broker=settings.broker,
        store=settings.store,
        # local table files (RocksDB) in a directory of their own per app id, as Faust's default
        # ("<app id>-data" in the working directory) is: two deployments never share a table's files
        **({"datadir": str(settings.data_dir / settings.app_id)} if settings.data_dir else {}),
        topic_partitions=settings.partitions,
        # raw bytes end to end: the core decodes with orjson once; Faust's codecs would decode twice
        key_serializer="raw",
        value_serializer="raw",
        web_port=settings.web_port,
        web_host=settings.web_host,
        producer_linger_ms=1,
        # a batch's table writes and outputs go out as one record batch per partition (see
        # streams.sinks.kafka_batches); aiokafka's 16 KiB default would hold four account states
        producer_max_batch_size=512 * 1024,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=settings.heartbeat_seconds,
        broker_credentials=settings.kafka_security.faust_credentials(),
    )
    app.faust_views = os.environ.get("HEALTH_WEB_FAUST_VIEWS", "").strip() == "1" if faust_views is None \
        else faust_views
    if settings.data_dir:
        # Faust creates only the last level of its data directory
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    from streams.worker import pipeline

    app.health = pipeline.register(app, settings, metrics or HealthMetrics(), clock or clock_from(settings.clock_file))
    return app


def require_store_bindings(store: str) -> None:
    """rocksdb:// without the bindings would fail only when the table first opens, inside Faust's start-up,
    with a hint at packages the project does not pin: refuse at once, naming the setting and the extra."""
    if not store.split("://", 1)[0].lower() == "rocksdb":
        return
    try:
        import rocksdict  # noqa: F401 - faust-streaming 0.15.3 uses it for rocksdb:// when it imports
    except ImportError as err:
        message = (f"HEALTH_STORE={store} needs the RocksDB bindings of the project's {ROCKSDB_EXTRA!r} extra "
                   f"(pip install 'customer-health[{ROCKSDB_EXTRA}]', which installs rocksdict); "
                   f"they do not import here ({err}). Install the extra, or set HEALTH_STORE=memory://")
        raise SystemExit(message) from None  # before logging is set up: the message goes to stderr as is
