"""The local stack's secure Kafka listeners (ops/stack): where they are, the TLS material and password it
generated, settings for each, and produce/consume through them."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.connections import KafkaSecurity
from tests.harness import ROOT, Stack

USER = "health"  # the SCRAM and PLAIN user ops/stack creates


def _open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass(frozen=True)
class SecureListeners:
    tls_dir: Path
    sasl_ssl_port: int
    ssl_port: int

    @classmethod
    def of(cls, stack: Stack) -> "SecureListeners":
        """The running stack's, with the defaults of ops/stack (ports after HEALTH_KAFKA_PORT)."""
        stack_dir = Path(os.environ.get("HEALTH_STACK_DIR") or ROOT / ".stack")
        return cls(stack_dir / "tls", int(os.environ.get("HEALTH_KAFKA_SASL_SSL_PORT") or stack.kafka_port + 2),
                   int(os.environ.get("HEALTH_KAFKA_SSL_PORT") or stack.kafka_port + 3))

    def missing(self) -> str | None:
        """Why these listeners cannot be used, or None."""
        files = [self.ca, self.client_cert, self.client_key, self.password_file]
        absent = [str(f) for f in files if not f.is_file()]
        closed = [str(p) for p in (self.sasl_ssl_port, self.ssl_port) if not _open(p)]
        if not absent and not closed:
            return None
        return (f"the running stack has no secure Kafka listeners (closed ports: {', '.join(closed) or 'none'}; "
                f"missing files: {', '.join(absent) or 'none'}); it predates them: restart it with "
                f"`ops/stack down && ops/stack up` (its data is kept)")

    @property
    def ca(self) -> Path:
        return self.tls_dir / "ca.crt"

    @property
    def client_cert(self) -> Path:
        return self.tls_dir / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.tls_dir / "client.key"

    @property
    def password_file(self) -> Path:
        return self.tls_dir / "health.password"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def sasl_env(self, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """Worker settings for the SASL_SSL listener; the password from its file, as an orchestrator mounts it."""
        return {"HEALTH_KAFKA_BROKER": f"kafka://127.0.0.1:{self.sasl_ssl_port}",
                "HEALTH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "HEALTH_KAFKA_SASL_MECHANISM": mechanism,
                "HEALTH_KAFKA_SASL_USERNAME": USER, "HEALTH_KAFKA_SASL_PASSWORD_FILE": str(self.password_file),
                "HEALTH_KAFKA_SSL_CA_FILE": str(self.ca)}

    def mtls_env(self) -> dict[str, str]:
        """Worker settings for the SSL listener, with the client certificate."""
        return {"HEALTH_KAFKA_BROKER": f"kafka://127.0.0.1:{self.ssl_port}",
                "HEALTH_KAFKA_SECURITY_PROTOCOL": "SSL", "HEALTH_KAFKA_SSL_CA_FILE": str(self.ca),
                "HEALTH_KAFKA_SSL_CERT_FILE": str(self.client_cert),
                "HEALTH_KAFKA_SSL_KEY_FILE": str(self.client_key)}

    def sasl_security(self, mechanism: str = "SCRAM-SHA-512", **changes) -> KafkaSecurity:
        return KafkaSecurity(**{"protocol": "SASL_SSL", "sasl_mechanism": mechanism, "username": USER,
                                "password": self.password, "ca_file": self.ca, **changes})

    def mtls_security(self, **changes) -> KafkaSecurity:
        return KafkaSecurity(**{"protocol": "SSL", "ca_file": self.ca, "cert_file": self.client_cert,
                                "key_file": self.client_key, **changes})


def client_options(port: int, security: KafkaSecurity) -> dict:
    return {"bootstrap_servers": f"127.0.0.1:{port}", **security.client_options()}


async def produce(options: dict, topic: str, records: list[tuple[bytes, dict]]) -> None:
    producer = AIOKafkaProducer(**options, linger_ms=5)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, orjson.dumps(value), key=key)
    finally:
        await producer.stop()


async def consume(options: dict, topic: str, until, timeout: float = 60.0) -> list[dict]:
    """Read `topic` from the beginning until until(values) is true; return the decoded values."""
    consumer = AIOKafkaConsumer(topic, **options, auto_offset_reset="earliest", group_id=None,
                                enable_auto_commit=False)
    await consumer.start()
    values: list[dict] = []
    try:
        deadline = time.monotonic() + timeout
        while not until(values):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s reading {topic}: got {len(values)} records")
            batch = await consumer.getmany(timeout_ms=500)
            values += [orjson.loads(r.value) for part in batch.values() for r in part]
    finally:
        await consumer.stop()
    return values


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A throwaway CA (certificate, key) in `directory`: one the broker's certificate does not come from."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign"], check=True, capture_output=True)
    return cert, key


def make_leaf(directory: Path, name: str, ca: tuple[Path, Path], san: str) -> tuple[Path, Path]:
    """A server certificate (certificate, key) signed by `ca`, valid for the names in `san`."""
    cert, key, csr, ext = (directory / f"{name}.{suffix}" for suffix in ("crt", "key", "csr", "ext"))
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256", "-keyout", str(key),
                    "-out", str(csr), "-subj", f"/CN={name}"], check=True, capture_output=True)
    ext.write_text(f"basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName={san}\n")
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
                    "-CAcreateserial", "-sha256", "-days", "2", "-extfile", str(ext), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def run(coroutine, bound: float = 60.0):
    """Run a coroutine to its end, or fail after `bound` seconds instead of hanging the suite."""
    return asyncio.run(asyncio.wait_for(coroutine, bound))
