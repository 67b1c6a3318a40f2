"""docker-compose.yml stays valid: Debian's docker-compose checks it without a Docker engine."""
from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.harness import ROOT


def test_compose_file_is_valid():
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is not installed: run ops/install (Debian package docker-compose)")
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_compose_wires_workers_prometheus_and_grafana():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "worker", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:3.9")
    assert "healthcheck" in services["kafka"]
    targets = yaml.safe_load((ROOT / "ops/prometheus/prometheus.yml").read_text())["scrape_configs"][0]
    assert targets["static_configs"][0]["targets"] == ["worker:6066"]
    for mount in services["grafana"]["volumes"]:
        assert (ROOT / mount.split(":")[0]).exists(), mount


def test_only_grafana_is_published_and_the_override_example_binds_to_loopback():
    """Kafka, Redis (no password), Prometheus and the worker's API stay inside the compose network by
    default; the example override publishes them on 127.0.0.1 only, and still passes `config`."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"grafana"}, published
    assert services["grafana"]["ports"] == ["3000:3000"]
    example = ROOT / "docker-compose.override.yml.example"
    override = yaml.safe_load(example.read_text())["services"]
    assert set(override) == {"kafka", "redis", "worker", "prometheus"}
    for name, service in override.items():
        for port in service["ports"]:
            assert port.startswith("127.0.0.1:"), (name, port)
    if not shutil.which("docker-compose"):
        pytest.fail("docker-compose is not installed: run ops/install (Debian package docker-compose)")
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "-f", str(example),
                             "config", "-q"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_compose_worker_keeps_its_table_on_a_volume():
    """rocksdb:// needs the bindings in the image (the Dockerfile installs the extra) and a data directory
    that outlives the container (a named volume, writable by the image's user)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    worker = compose["services"]["worker"]
    assert worker["environment"]["HEALTH_STORE"] == "rocksdb://"
    data_dir = worker["environment"]["HEALTH_DATA_DIR"]
    volume, _, target = worker["volumes"][0].partition(":")
    assert target == data_dir and volume in compose["volumes"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'pip install --no-cache-dir ".[rocksdb]"' in dockerfile
    assert f"ENV HEALTH_DATA_DIR={data_dir}" in dockerfile and "chown nobody" in dockerfile
