"""The command line: model checks, file problems reported with line numbers, the demo's output; one test
(marked broker) runs the demo and looks at its data as its printed exports say."""
from __future__ import annotations

import io
import os
import shlex
import signal
import subprocess
import threading

import pytest
from click.testing import CliRunner

from streams.tools.cli import cli
from streams.settings import DEFAULT_MODEL, Settings


def test_check_model_accepts_the_shipped_default():
    result = CliRunner().invoke(cli, ["check-model", str(DEFAULT_MODEL)])
    assert result.exit_code == 0, result.output
    assert "valid, version" in result.output and "13 components" in result.output


def test_check_model_refuses_a_bad_file_naming_each_field(tmp_path):
    bad = tmp_path / "model.yaml"
    bad.write_text("version: x\nmeasures:\n  logins: {type: event_count, events: [login], window_days: 30}\n"
                   "components:\n  logins: {measure: logins_30x, scoring: {type: linear, worst: 0, best: 10}}\n"
                   "bands:\n  - {name: Good, colour: green, min: 50}\n")
    result = CliRunner().invoke(cli, ["check-model", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}: components.logins.measure: unknown measure 'logins_30x'" in result.output
    assert "bands" in result.output and "minimum 0" in result.output


def test_publish_model_refuses_an_invalid_model_before_touching_kafka(tmp_path):
    bad = tmp_path / "model.yaml"
    bad.write_text("version: x\n")
    result = CliRunner().invoke(cli, ["publish-model", str(bad)])
    assert result.exit_code == 1 and "measures: missing required field" in result.output


def test_check_model_refuses_what_a_worker_could_not_run(tmp_path):
    from tests.core.test_model_loader import alias_bomb, compact_components_yaml

    big = tmp_path / "big.yaml"
    big.write_text(compact_components_yaml(5000))  # a worker failed to build it (RecursionError)
    result = CliRunner().invoke(cli, ["check-model", str(big)])
    assert result.exit_code == 1
    assert f"{big}: components: 5000 components; expected at most 100" in result.output
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())  # under 1 KB; it blocked a worker's loop for 21 s and took 4.9 GB
    result = CliRunner().invoke(cli, ["check-model", str(bomb)])
    assert result.exit_code == 1
    assert f"{bomb}: <yaml>: 72 aliases; expected at most 50" in result.output


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_demo_output_is_coloured_only_on_a_terminal(monkeypatch):
    from streams.tools.demo import BAND_COLOUR, Printer, band

    monkeypatch.delenv("NO_COLOR", raising=False)
    line = f"acct-00001  {band('Healthy')} -> {band('At Risk')}"
    plain, terminal = io.StringIO(), _Terminal()
    Printer(plain).line(line)
    Printer(terminal).line(line)
    assert plain.getvalue() == "acct-00001  Healthy -> At Risk\n"  # a file or a pipe: no escape codes
    assert BAND_COLOUR["Healthy"] in terminal.getvalue() and "\033[0m" in terminal.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    no_colour = _Terminal()
    Printer(no_colour).line(line)
    assert "\033" not in no_colour.getvalue()


def _health_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HEALTH_")}


def test_the_demo_exports_point_the_other_commands_at_its_data(tmp_path, monkeypatch):
    from streams.tools.demo import demo_settings, exports

    for name in [k for k in os.environ if k.startswith("HEALTH_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HEALTH_KAFKA_BROKER", "kafka://127.0.0.1:19092")  # not the defaults: they must be exported
    monkeypatch.setenv("HEALTH_REDIS_URL", "redis://127.0.0.1:16379/0")
    demo = demo_settings(Settings.from_env(), "20260101-000000")
    clock = tmp_path / "a dir" / "clock"  # a path the shell must get quoted
    lines = exports(demo, "20260101-000000", clock)
    # the lines as a user pastes them into another terminal, whose environment has no HEALTH_* settings
    shell = subprocess.run(["bash", "-c", "\n".join(lines) + "\nenv -0"], env=_health_env(), capture_output=True,
                           check=True)
    exported = dict(item.split("=", 1) for item in shell.stdout.decode().split("\0") if item.startswith("HEALTH_"))
    for name in [k for k in os.environ if k.startswith("HEALTH_")]:
        monkeypatch.delenv(name)
    for name, value in exported.items():
        monkeypatch.setenv(name, value)
    seen = Settings.from_env()
    assert (seen.app_id, seen.redis_prefix, seen.topics, seen.broker, seen.redis_url, seen.clock_file) == \
        (demo.app_id, demo.redis_prefix, demo.topics, demo.broker, demo.redis_url, clock)


def test_the_demo_exports_never_print_a_redis_password(tmp_path, monkeypatch):
    from streams.tools.demo import demo_settings, exports

    monkeypatch.setenv("HEALTH_REDIS_URL", "redis://user:s3cret@127.0.0.1:6379/0")
    lines = exports(demo_settings(Settings.from_env(), "x"), "x", tmp_path / "clock")
    assert not any("s3cret" in line for line in lines)
    assert any("HEALTH_REDIS_URL" in line and line.startswith("#") for line in lines)


@pytest.mark.broker
def test_the_readme_commands_see_the_demo_data_with_its_exports(stack, tmp_path):
    from tests.harness import health_command, wait_for

    env = {**_health_env(), "HEALTH_KAFKA_BROKER": stack.broker_url, "HEALTH_REDIS_URL": stack.redis_url}
    demo = subprocess.Popen(health_command() + ["demo", "--accounts", "10", "--history-days", "3"], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(demo.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("HEALTH_CLOCK_FILE" in line for line in output) or demo.poll() is not None, 60,
                 what="the demo's exports")
        exported = dict(shlex.split(line.strip())[1].split("=", 1) for line in output
                        if line.strip().startswith("export "))
        assert {"HEALTH_TOPIC_PREFIX", "HEALTH_APP_ID", "HEALTH_REDIS_PREFIX"} <= set(exported), output
        another_terminal = {**env, **exported}

        def shown():
            result = subprocess.run(health_command() + ["show", "acct-00001"], env=another_terminal,
                                    capture_output=True, text=True)
            return result if result.returncode == 0 else None

        # the worker starts and scores the history first; until then show finds no score (exit 1)
        assert wait_for(shown, 120, interval=2, what="`health show` to find the demo's account").stdout.startswith(
            "acct-00001: ")
        preview = subprocess.run(health_command() + ["what-if", str(DEFAULT_MODEL)], env=another_terminal,
                                 capture_output=True, text=True)
        assert preview.returncode == 0, preview.stderr
        # compared with the model the demo's worker runs: its file, as nothing is on the control topic
        assert preview.stdout.startswith("model in force: 2025.1 (from HEALTH_MODEL "), preview.stdout
        assert "\n10 accounts; 2025.1 -> 2025.1\n" in preview.stdout, preview.stdout
    finally:
        demo.send_signal(signal.SIGTERM)  # the demo stops its worker and cleans up, as on Ctrl-C
        demo.wait(60)
        reader.join(10)
    text = "".join(output)
    assert demo.returncode == 0, text
    assert "\033" not in text  # a pipe: no colour
    for noise in ("Traceback", "Unclosed", "Task was destroyed", "Got error produce response"):
        assert noise not in text, text


def test_the_demo_says_what_moved_or_what_stands():
    from streams.tools.demo import _changes

    assert _changes([{"component": "csat", "change": -12.5, "contribution_after": 3.0}]) == "csat -12.5"
    # nothing changed since the alert's reference (a trend judged on a later day): the points, not +0.0
    assert _changes([{"component": "usage_trend", "change": 0.0, "contribution_after": 7.3}]) == "usage_trend 7.3 pts"
