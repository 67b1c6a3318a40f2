"""The command line without a broker: model checks, file problems reported with line numbers."""
from __future__ import annotations

from click.testing import CliRunner

from streams.cli import cli
from streams.settings import DEFAULT_MODEL


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
