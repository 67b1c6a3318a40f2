"""Helpers for tests against the real local stack: unique names, a worker subprocess, produce/consume."""
from __future__ import annotations

import asyncio
import os
import random
import re
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "ops" / "stack"


@dataclass(frozen=True)
class Stack:
    kafka_port: int
    redis_port: int

    @classmethod
    def from_env(cls) -> "Stack":
        return cls(int(os.environ.get("HEALTH_KAFKA_PORT", 9092)), int(os.environ.get("HEALTH_REDIS_PORT", 6379)))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def broker_url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def answers(self) -> bool:
        """True when the stack's status says both Kafka and Redis answer."""
        return subprocess.run([str(STACK), "status"], capture_output=True).returncode == 0


def unique_name(label: str) -> str:
    """A topic/group/key prefix no other test (or earlier run) uses."""
    slug = re.sub(r"[^a-zA-Z0-9]+", "-", label).strip("-")[:40]
    return f"t-{slug}-{uuid.uuid4().hex[:8]}"


# Below the kernel's ephemeral range (32768-60999 by default): a port handed out by bind(0) is one an
# outgoing connection may take before the server binds it (the stack's Kafka once lost its SSL port so)
_PORTS = range(20000, 32000)


def free_ports(n: int) -> int:
    """The first of `n` consecutive loopback ports nothing listens on now, outside the ephemeral range."""
    rng = random.Random()
    while True:
        start = rng.randrange(_PORTS.start, _PORTS.stop - n)
        sockets = []
        try:
            for port in range(start, start + n):
                sockets.append(socket.socket())
                sockets[-1].bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()


def free_port() -> int:
    return free_ports(1)


def health_command() -> list[str]:
    """The `health` console script of the running interpreter's environment: the way a user starts it."""
    script = Path(sys.executable).with_name("health")
    return [str(script)] if script.exists() else [sys.executable, "-m", "streams"]


class Worker:
    """A worker subprocess started as a user would; its log is kept and shown when a test fails."""

    def __init__(self, env: dict[str, str], workdir: Path, *args: str, name: str = "worker",
                 command: str = "worker"):
        self.log_path = workdir / f"{name}.log"
        self.env = {**os.environ, **env}
        self.args = [command, *args]
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Worker":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(health_command() + self.args, env=self.env, cwd=self.workdir,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def alive(self) -> bool:
        return bool(self.proc) and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def report(self, tail: int = 2000) -> str:
        """What a failure message needs: the first error of the log with what led to it (a crash's own
        traceback comes long before the shutdown lines that end the log), then the log's end."""
        text = self.log()
        first = min((i for i in (text.find("Traceback"), text.find("] [ERROR] "), text.find("] [CRITICAL] "))
                     if i >= 0), default=-1)
        if first < 0 or first >= len(text) - tail:
            return text[-tail:]
        return f"{text[max(0, first - 1500):first + 3000]}\n[...]\n{text[-tail:]}"

    def __enter__(self) -> "Worker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for(predicate, timeout: float, interval: float = 0.2, what: str = "condition"):
    """Poll until predicate() is truthy; return its value or raise AssertionError naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def create_topics(bootstrap: str, names: list[str], partitions: int = 12, config: dict | None = None) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(n, partitions, 1, topic_configs=config or {}) for n in names if n not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete every topic whose name starts with `prefix` (a test's own): a kept local stack would
    otherwise gather thousands of partitions, each an open file of the broker's, until it stops."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | dict]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key, value=value if isinstance(value, bytes) else orjson.dumps(value))
                   for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def consume(bootstrap: str, topic: str, until, timeout: float = 60.0) -> list:
    """Read `topic` from the beginning until until(records) is true; return the aiokafka records."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=None, enable_auto_commit=False)
    await consumer.start()
    records: list = []
    try:
        deadline = time.monotonic() + timeout
        while not until(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s reading {topic}: got {len(records)} records")
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records
