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
