"""Worker settings, read once from the environment (12-factor), so one image serves every deployment."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.connections import KafkaSecurity, RedisSecurity, env_secret
from streams.core import DEFAULT_MODEL_PATH

DEFAULT_MODEL = DEFAULT_MODEL_PATH  # streams/models/default.yaml
# worker: each worker runs a read model sink for its share of the score topic; separate: workers run none,
# `health read-model` processes do (the scoring workers keep their CPU for scoring)
READ_MODEL_SINKS = ("worker", "separate")


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {raw!r}") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name}: expected a number of seconds > 0, got {raw!r}")
    return value


@dataclass(frozen=True)
class Topics:
    """Kafka topic names. Every topic that carries account data is keyed by account_id."""

    usage: str
    tickets: str
    surveys: str
    accounts: str
    scores: str
    alerts: str
    deadletter: str
    control: str

    @classmethod
    def from_env(cls, prefix: str) -> "Topics":
        def name(kind: str) -> str:
            return _env(f"HEALTH_TOPIC_{kind.upper()}", f"{prefix}{kind}")

        return cls(**{kind: name(kind) for kind in cls.__dataclass_fields__})

    def inputs(self) -> dict[str, str]:
        """Input topic name -> the event kind it carries."""
        return {self.usage: "usage", self.tickets: "ticket", self.surveys: "survey", self.accounts: "account"}


@dataclass(frozen=True)
class Settings:
    app_id: str = "customer-health"
    broker: str = "kafka://127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "health"
    store: str = "memory://"
    partitions: int = 12
    model_path: Path = DEFAULT_MODEL
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    max_event_bytes: int = 65536
    reevaluate_seconds: int = 60
    # A killed worker's partitions wait this long for the group to notice; Faust's default is 60 s
    session_timeout_seconds: float = 10.0
    heartbeat_seconds: float = 3.0
    clock_file: Path | None = None
    topics: Topics = field(default_factory=lambda: Topics.from_env("health."))
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    redis_security: RedisSecurity = field(default_factory=RedisSecurity)
    # when set, workers take only control messages signed with it (streams.worker.control)
    control_secret: str | None = None
    # the worker's local table data (RocksDB files); None: Faust's default, "<app id>-data" in the cwd
    data_dir: Path | None = None
    # who writes score updates into Redis: every worker (its own sink), or `health read-model` processes
    read_model_sink: str = "worker"

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            app_id=_env("HEALTH_APP_ID", cls.app_id),
            broker=_env("HEALTH_KAFKA_BROKER", cls.broker),
            redis_url=_env("HEALTH_REDIS_URL", cls.redis_url),
            redis_prefix=_env("HEALTH_REDIS_PREFIX", cls.redis_prefix),
            store=_env("HEALTH_STORE", cls.store),
            partitions=_env_int("HEALTH_PARTITIONS", cls.partitions),
            model_path=Path(_env("HEALTH_MODEL", str(DEFAULT_MODEL))),
            web_port=_env_int("HEALTH_WEB_PORT", cls.web_port),
            web_host=_env("HEALTH_WEB_HOST", cls.web_host),
            max_event_bytes=_env_int("HEALTH_MAX_EVENT_BYTES", cls.max_event_bytes),
            reevaluate_seconds=_env_int("HEALTH_REEVALUATE_SECONDS", cls.reevaluate_seconds),
            session_timeout_seconds=_env_float("HEALTH_KAFKA_SESSION_TIMEOUT_SECONDS", cls.session_timeout_seconds),
            heartbeat_seconds=_env_float("HEALTH_KAFKA_HEARTBEAT_SECONDS", cls.heartbeat_seconds),
            clock_file=Path(os.environ["HEALTH_CLOCK_FILE"]) if os.environ.get("HEALTH_CLOCK_FILE") else None,
            topics=Topics.from_env(_env("HEALTH_TOPIC_PREFIX", "health.")),
            kafka_security=KafkaSecurity.from_env(),
            redis_security=RedisSecurity.from_env(),
            control_secret=env_secret("HEALTH_CONTROL_SECRET"),
            data_dir=Path(os.environ["HEALTH_DATA_DIR"]) if os.environ.get("HEALTH_DATA_DIR", "").strip() else None,
            read_model_sink=_env("HEALTH_READ_MODEL_SINK", cls.read_model_sink),
        )

    def __post_init__(self) -> None:
        if self.read_model_sink not in READ_MODEL_SINKS:
            raise ValueError(f"HEALTH_READ_MODEL_SINK: expected one of {', '.join(READ_MODEL_SINKS)}, "
                             f"got {self.read_model_sink!r}")
        # the broker refuses sessions under group.min.session.timeout.ms (6 s by default); a heartbeat must
        # fit several times into a session or a busy moment looks like a death
        if self.session_timeout_seconds < 6:
            raise ValueError(f"HEALTH_KAFKA_SESSION_TIMEOUT_SECONDS: expected at least 6 (the broker's minimum), "
                             f"got {self.session_timeout_seconds:g}")
        if self.heartbeat_seconds * 3 > self.session_timeout_seconds:
            raise ValueError(f"HEALTH_KAFKA_HEARTBEAT_SECONDS: expected at most a third of the session timeout "
                             f"({self.session_timeout_seconds:g} s), got {self.heartbeat_seconds:g}")

    @property
    def bootstrap_servers(self) -> str:
        """host:port list for plain aiokafka clients (Faust wants kafka://)."""
        return ",".join(url.split("://", 1)[-1] for url in self.broker.split(";"))

    def kafka_options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client: the bootstrap servers and the security settings."""
        return {"bootstrap_servers": self.bootstrap_servers, **self.kafka_security.client_options()}

    def redis_options(self) -> dict[str, Any]:
        """Keyword arguments for redis.asyncio.from_url(self.redis_url, ...)."""
        return self.redis_security.client_options(self.redis_url)
