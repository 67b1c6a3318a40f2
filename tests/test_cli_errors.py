"""The command line when the stack is stopped, a port is taken or a setting is wrong: one line on stderr
naming the address, the setting and the fix, exit code 2, never a traceback or an asyncio warning.

"The stack stopped" is Kafka and Redis addresses on loopback ports nobody listens on, which is what a
stopped local stack looks like: connections are refused at once, so these tests need no broker and
wait for no timeout. Each command runs as a subprocess, the way a user starts it.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.tools.cli import HealthGroup, cli
from streams.settings import DEFAULT_MODEL
from tests.harness import Worker, health_command, wait_for

# what must never reach the user: a traceback, aiokafka's unclosed clients, asyncio's pending tasks
NOISE = ("Traceback", "Unclosed", "Task was destroyed")
HINT = "ops/stack up"
EVENT = ('{"kind": "usage", "event_id": "e1", "account_id": "acct-00001", "occurred_at": "2026-01-02T10:00:00Z", '
         '"name": "login"}\n')


@contextlib.contextmanager
def unused_ports(n: int):
    """n distinct loopback ports nobody listens on: bound together (so they differ), then let go."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        ports = [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()
    yield ports


@pytest.fixture
def stopped(tmp_path):
    """Environment of a user whose stack is stopped: only HEALTH_* settings of this test (the caller's
    own, e.g. a HEALTH_MODEL, would change what is checked), Kafka and Redis on unused ports."""
    with unused_ports(3) as (kafka, redis, web):
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTH_")}
        # ResourceWarnings are hidden by default: shown, an unclosed socket or client fails these tests too
        env.update(HEALTH_KAFKA_BROKER=f"kafka://127.0.0.1:{kafka}", HEALTH_REDIS_URL=f"redis://127.0.0.1:{redis}/0",
                   HEALTH_WEB_PORT=str(web), PYTHONWARNINGS="default::ResourceWarning")
        yield {"env": env, "kafka": f"127.0.0.1:{kafka}", "redis": f"127.0.0.1:{redis}", "cwd": tmp_path}


def health(stopped, *args: str, **env: str) -> subprocess.CompletedProcess:
    # the timeout only keeps a hanging command from hanging the suite; nothing is asserted about time
    return subprocess.run(health_command() + list(args), env={**stopped["env"], **env}, cwd=stopped["cwd"],
                          capture_output=True, text=True, timeout=180)


def one_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The single stderr line of a command that exited 2, checked to hold each of `needles`."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    for noise in NOISE:
        assert noise not in output, output
    return lines[0]


def events_file(stopped) -> str:
    path = Path(stopped["cwd"]) / "events.jsonl"
    path.write_text(EVENT)  # one valid event: produce reaches the point of publishing
    return str(path)


# every command that connects: its arguments, and the service named first when the whole stack is stopped
STACK_COMMANDS = {
    "worker": (lambda s: ["worker"], "kafka"),
    "read-model": (lambda s: ["read-model"], "kafka"),
    "produce": (lambda s: ["produce", events_file(s)], "kafka"),
    "simulate": (lambda s: ["simulate", "--accounts", "5", "--days", "1"], "kafka"),
    "demo": (lambda s: ["demo", "--accounts", "5", "--duration", "1"], "kafka"),
    "show": (lambda s: ["show", "acct-00001"], "redis"),
    "publish-model": (lambda s: ["publish-model", str(DEFAULT_MODEL)], "kafka"),
    "what-if": (lambda s: ["what-if", str(DEFAULT_MODEL)], "kafka"),
    "snooze": (lambda s: ["snooze", "acct-00001", "--until", "2999-01-01", "--reason", "renewal call"], "kafka"),
    "unsnooze": (lambda s: ["unsnooze", "acct-00001"], "kafka"),
}
SETTING = {"kafka": "HEALTH_KAFKA_BROKER", "redis": "HEALTH_REDIS_URL"}


def test_every_command_is_covered():
    # a new command gets a test here, or a reason to need none (check-model never connects)
    assert set(cli.commands) == set(STACK_COMMANDS) | {"check-model"}


@pytest.mark.parametrize("command", sorted(STACK_COMMANDS))
def test_a_stopped_stack_is_one_line_with_the_address_the_setting_and_the_fix(stopped, command):
    args, service = STACK_COMMANDS[command]
    one_line(health(stopped, *args(stopped)), stopped[service], SETTING[service], HINT)


def test_a_worker_without_web_checks_the_stack_too(stopped):
    one_line(health(stopped, "worker", "--without-web"), stopped["kafka"], "HEALTH_KAFKA_BROKER", HINT)


def test_check_model_needs_no_stack(stopped):
    result = health(stopped, "check-model", str(DEFAULT_MODEL))
    assert result.returncode == 0, result.stderr
    assert "valid, version" in result.stdout and not result.stderr.strip()


def test_an_invalid_model_is_refused_before_kafka_is_looked_for(stopped, tmp_path):
    bad = tmp_path / "model.yaml"
    bad.write_text("version: x\n")
    for command in ("publish-model", "what-if"):
        result = health(stopped, command, str(bad))
        # the model's own problem (exit 1), not the stopped stack: it is the one to fix first
        assert result.returncode == 1, result.stderr
        assert "measures: missing required field" in result.stderr and "Kafka" not in result.stderr


@contextlib.contextmanager
def listening():
    """A port taken, as by a worker already running."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_taken_web_port_is_one_line_naming_the_setting(stopped):
    with listening() as port:
        line = one_line(health(stopped, "worker", HEALTH_WEB_PORT=str(port)), f"port {port}", "HEALTH_WEB_PORT",
                        "--without-web")
    assert "Errno" not in line


def test_a_taken_web_port_from_the_option_names_the_option(stopped):
    with listening() as port:
        one_line(health(stopped, "worker", "--web-port", str(port)), f"port {port}", "--web-port")


@pytest.mark.parametrize("command, variable, value", [
    ("worker", "HEALTH_KAFKA_SECURITY_PROTOCOL", "BOGUS"),
    ("produce", "HEALTH_PARTITIONS", "x"),
    ("simulate", "HEALTH_KAFKA_SESSION_TIMEOUT_SECONDS", "2"),
    ("demo", "HEALTH_KAFKA_SASL_MECHANISM", "NOPE"),  # read only with SASL: the protocol below asks for it
    ("show", "HEALTH_REDIS_URL", "http://127.0.0.1:6379"),
    ("publish-model", "HEALTH_KAFKA_BROKER", "kafka://no-port"),
    ("what-if", "HEALTH_MODEL", "/nonexistent/model.yaml"),
    ("worker", "HEALTH_WEB_PORT", "70000"),
    ("worker", "HEALTH_WEB_HOST", "192.0.2.1"),  # TEST-NET-1: no address of this machine
    ("worker", "HEALTH_READ_MODEL_SINK", "both"),
    ("read-model", "HEALTH_PARTITIONS", "x"),
])
def test_a_bad_setting_is_one_line_naming_it(stopped, command, variable, value):
    args, _ = STACK_COMMANDS[command]
    extra = {"HEALTH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"} if variable == "HEALTH_KAFKA_SASL_MECHANISM" else {}
    one_line(health(stopped, *args(stopped), **{variable: value, **extra}), variable)


class FakeRedis:
    """Answers the hand-shake and PING as Redis does, then drops the connection at the first real
    command: Redis lost after the checks passed, at a moment no test could time with a real one.
    `password_required`: answers the hand-shake as a Redis with a password does to a client without one."""

    def __init__(self, password_required: bool = False):
        self.password_required = password_required
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.commands: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            while (head := reader.readline()).startswith(b"*"):
                parts = []
                for _ in range(int(head[1:])):
                    size = int(reader.readline()[1:])
                    parts.append(reader.read(size + 2)[:-2])
                command = parts[0].upper()
                self.commands.append(command)
                if command == b"HELLO" and self.password_required:
                    conn.sendall(b"-NOAUTH HELLO must be called with the client already authenticated\r\n")
                elif command == b"HELLO":
                    conn.sendall(b"%3\r\n+server\r\n+redis\r\n+version\r\n+7.2.4\r\n+proto\r\n:3\r\n")
                elif command == b"CLIENT":
                    conn.sendall(b"+OK\r\n")
                elif command == b"PING":
                    conn.sendall(b"+PONG\r\n")
                else:
                    return  # closed: the server went away

    def close(self) -> None:
        self.sock.close()


def test_redis_lost_during_a_command_is_one_line(stopped):
    fake = FakeRedis()
    try:
        result = health(stopped, "show", "acct-00001", HEALTH_REDIS_URL=f"redis://127.0.0.1:{fake.port}/0")
    finally:
        fake.close()
    assert b"PING" in fake.commands and b"HGET" in fake.commands  # the check passed; the read failed
    one_line(result, f"127.0.0.1:{fake.port}", "HEALTH_REDIS_URL", "during the command", HINT)


def _group_raising(exc: BaseException) -> HealthGroup:
    group = HealthGroup()

    @group.command()
    def boom() -> None:
        raise exc

    return group


def test_kafka_lost_during_a_command_is_one_line():
    from aiokafka.errors import KafkaConnectionError

    # a broker that goes away after the checks raises this from any client call; the command itself
    # is a stand-in, since no real broker can be stopped between a check and the next call on cue
    result = CliRunner().invoke(_group_raising(KafkaConnectionError("Unable to bootstrap from [...]")), ["boom"],
                                env={"HEALTH_KAFKA_BROKER": "kafka://127.0.0.1:19092"})
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "127.0.0.1:19092" in lines[0] and "HEALTH_KAFKA_BROKER" in lines[0], lines
    assert "during the command" in lines[0] and HINT in lines[0]


def test_any_other_error_keeps_its_traceback():
    # only problems with the stack or the settings become one line: a bug is not dressed up as one
    result = CliRunner().invoke(_group_raising(RuntimeError("a bug")), ["boom"])
    assert isinstance(result.exception, RuntimeError) and result.exit_code == 1


@pytest.mark.broker
def test_a_worker_refuses_a_redis_that_wants_a_password(stack, stopped):
    fake = FakeRedis(password_required=True)
    try:
        result = health(stopped, "worker", HEALTH_KAFKA_BROKER=stack.broker_url,
                        HEALTH_REDIS_URL=f"redis://127.0.0.1:{fake.port}/0")
    finally:
        fake.close()
    # retrying would never cure it: refused at start, unlike a Redis that is only away
    one_line(result, f"127.0.0.1:{fake.port}", "HEALTH_REDIS_PASSWORD")


@pytest.mark.broker
def test_a_worker_starts_without_redis_and_says_so_in_one_line(stopped, worker_env, tmp_path):
    # the worker scores without Redis and its read model catches up later (README): a warning, not a refusal
    env = {**worker_env, "HEALTH_REDIS_URL": stopped["env"]["HEALTH_REDIS_URL"],
           "HEALTH_WEB_PORT": stopped["env"]["HEALTH_WEB_PORT"]}
    with Worker(env, tmp_path) as worker:
        wait_for(lambda: _live(int(env["HEALTH_WEB_PORT"])) or not worker.alive(), 90, what="the worker to serve")
        assert worker.alive(), worker.report()
    first = next(line for line in worker.log().splitlines() if line.strip())
    assert first.startswith("Warning: Redis not reachable at " + stopped["redis"]) and "HEALTH_REDIS_URL" in first
    assert "Traceback" not in worker.log()


def _live(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.broker
def test_a_second_worker_on_a_taken_port_is_one_line(stack, stopped):
    # Kafka and Redis answer, as for a second worker started beside a first one on the same port
    with listening() as port:
        one_line(health(stopped, "worker", HEALTH_KAFKA_BROKER=stack.broker_url, HEALTH_REDIS_URL=stack.redis_url,
                        HEALTH_WEB_PORT=str(port)), f"port {port}", "HEALTH_WEB_PORT")
