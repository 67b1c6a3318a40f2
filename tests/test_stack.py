"""ops/stack: idempotent up, down leaves nothing behind, clear failures for a taken port or a missing java."""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.harness import STACK, free_ports


def run_stack(command: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(STACK), command], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=timeout)


def isolated_env(tmp_path: Path) -> dict[str, str]:
    # one block: Kafka's port, its SASL_SSL and SSL listeners (+2, +3, ops/stack's defaults), the controller, Redis
    start = free_ports(6)
    return {"HEALTH_STACK_DIR": str(tmp_path / "stack"), "HEALTH_KAFKA_PORT": str(start),
            "HEALTH_KAFKA_CONTROLLER_PORT": str(start + 4), "HEALTH_REDIS_PORT": str(start + 5),
            "HEALTH_KAFKA_HEAP": "384m"}


def test_taken_port_fails_fast_and_names_it(tmp_path):
    env = isolated_env(tmp_path)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        env["HEALTH_KAFKA_PORT"] = str(squatter.getsockname()[1])
        result = run_stack("up", env, timeout=30)
    assert result.returncode != 0
    assert f"port {env['HEALTH_KAFKA_PORT']} (for kafka) is already taken" in result.stderr
    assert "HEALTH_KAFKA_PORT" in result.stderr


def test_missing_java_fails_fast_and_says_what_to_install(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in ("/usr/local/bin", "/usr/bin"):
        for tool in Path(directory).iterdir():
            target = bin_dir / tool.name
            if tool.name != "java" and not target.exists():
                target.symlink_to(tool)
    result = run_stack("up", {**isolated_env(tmp_path), "PATH": str(bin_dir)}, timeout=30)
    assert result.returncode != 0
    assert "'java' is not installed" in result.stderr and "JDK" in result.stderr


@pytest.mark.broker
def test_up_twice_is_harmless_and_down_leaves_no_process(tmp_path, stack):
    # `stack` first: the shared cache then holds the Kafka jars, so this isolated stack does not download
    env = isolated_env(tmp_path)
    try:
        first = run_stack("up", env)
        assert first.returncode == 0, first.stdout + first.stderr
        pids = {name: int((tmp_path / "stack" / f"{name}.pid").read_text()) for name in ("kafka", "redis")}

        second = run_stack("up", env)
        assert second.returncode == 0, second.stderr
        assert "kafka already running" in second.stdout and "redis already running" in second.stdout
        assert run_stack("status", env).returncode == 0
    finally:
        down = run_stack("down", env)
    assert down.returncode == 0, down.stderr
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists(), f"{name} (pid {pid}) still running after down"
    for port in (env["HEALTH_KAFKA_PORT"], env["HEALTH_REDIS_PORT"]):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", int(port))) != 0, f"port {port} still answers after down"
    assert run_stack("status", env).returncode != 0
