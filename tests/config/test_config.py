"""Config mistakes stop with one sentence naming the file, line or field; `--set` overrides edit the config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import assert_nothing_trained, assert_user_error, start_cli_cases

from mlic import ConfigError, load_config
from mlic.config.loading import config_copy_text

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parents[1] / "fixtures" / "configs"


def fixture_config(name: str) -> Path:
    return FIXTURES / f"{name}.py"


def line_of(path: Path, text: str) -> int:
    """The 1-based line of `path` that contains `text`."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def config_error(path: Path, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


# ---------------------------------------------------------------------------------- the config file


def test_valid_fixture_config_loads():
    config = load_config(fixture_config("tiny"))
    assert config.experiment_name == "tiny"
    assert [s.name for s in config.resolved_stages()] == ["head", "full"]


def test_missing_config_file_is_named():
    message = config_error(Path("no_such_config.py"))
    assert "no_such_config.py" in message
    assert "does not exist" in message


def test_a_mistyped_config_path_names_the_nearest_config_file():
    message = config_error(REPO / "configs" / "tran_full.py")
    assert message.endswith(f"does not exist (did you mean {REPO / 'configs' / 'train_full.py'}?)")


def test_syntax_error_names_file_and_line():
    path = fixture_config("syntax_error")
    message = config_error(path)
    assert message.startswith(f"{path}:{line_of(path, 'if config.epochs')}: syntax error")
    assert "expected ':'" in message


def test_config_without_config_variable_says_to_define_it():
    message = config_error(fixture_config("no_config"))
    assert "no_config.py" in message
    assert "does not define `config`" in message


def test_config_that_is_not_a_config_names_its_type():
    message = config_error(fixture_config("config_not_a_config"))
    assert "config_not_a_config.py" in message
    assert "mlic.Config" in message
    assert "dict" in message


def test_unknown_data_field_suggests_closest_name():
    path = fixture_config("unknown_data_field")
    message = config_error(path)
    assert f"{path}:{line_of(path, 'batchsize=')}" in message
    assert "Data() has no field 'batchsize'" in message
    assert "did you mean 'batch_size'?" in message


def test_mistyped_field_names_field_expected_type_and_value():
    message = config_error(fixture_config("mistyped_field"))
    assert "mistyped_field.py" in message
    assert "'data.batch_size'" in message
    assert "must be int" in message
    assert "'32'" in message


def test_threshold_outside_zero_one_is_rejected():
    message = config_error(fixture_config("threshold_out_of_range"))
    assert "'threshold'" in message
    assert "1.5" in message


def test_unknown_monitor_lists_the_known_metrics():
    message = config_error(fixture_config("unknown_monitor"))
    assert "'monitor'" in message
    assert "'valid/accuracy'" in message
    assert "valid/map" in message


def test_empty_stages_are_rejected():
    message = config_error(fixture_config("empty_stages"))
    assert "empty_stages.py" in message
    assert "'stages' is empty" in message


def test_duplicate_stage_names_are_rejected():
    message = config_error(fixture_config("duplicate_stage_names"))
    assert "'warmup'" in message
    assert "unique" in message


def test_trainer_setting_an_owned_key_is_rejected_when_loading():
    message = config_error(fixture_config("trainer_owned_key"))
    assert "'max_epochs'" in message
    assert "Stage(epochs=...)" in message


def test_misspelled_trainer_argument_suggests_closest_name():
    message = config_error(fixture_config("trainer_typo"))
    assert "'acelerator'" in message
    assert "did you mean 'accelerator'?" in message


def test_unset_root_path_in_configs_base_says_how_to_set_it(monkeypatch):
    monkeypatch.delenv("ROOT_PATH", raising=False)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.delitem(sys.modules, "configs.base", raising=False)
    path = fixture_config("root_path_from_base")
    message = config_error(path)
    assert f"{path}:{line_of(path, 'from configs.base import')}" in message
    assert "ROOT_PATH is not set" in message
    assert "ROOT_PATH=/path/to/data python train.py" in message


def test_unset_root_path_via_env_path_names_the_config_line(monkeypatch):
    monkeypatch.delenv("ROOT_PATH", raising=False)
    path = fixture_config("root_path_env")
    message = config_error(path)
    assert f"{path}:{line_of(path, 'env_path(')}" in message
    assert "ROOT_PATH is not set" in message


def test_root_path_set_is_used_as_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("ROOT_PATH", str(tmp_path / "posters"))
    assert load_config(fixture_config("root_path_env")).data.root == str(tmp_path / "posters")


def test_exception_inside_config_reports_file_and_line():
    path = fixture_config("raises_inside")
    message = config_error(path)
    assert message.startswith(f"{path}:{line_of(path, 'raises KeyError')}: ")
    assert "KeyError" in message
    assert "'medium'" in message


# --------------------------------------------------------------------------------------- overrides


def test_set_changes_a_data_field():
    config = load_config(fixture_config("tiny"), ["data.batch_size=16"])
    assert config.data.batch_size == 16


def test_set_reaches_a_stage_by_index():
    config = load_config(fixture_config("tiny"), ["stages.0.epochs=3"])
    assert [s.epochs for s in config.stages] == [3, 2]


def test_set_reaches_a_stage_by_bracket_index():
    config = load_config(fixture_config("tiny"), ["stages[1].epochs=5"])
    assert [s.epochs for s in config.stages] == [1, 5]


def test_set_reaches_a_stage_by_name():
    config = load_config(fixture_config("tiny"), ["stages.full.epochs=3"])
    assert [s.epochs for s in config.stages] == [1, 3]


def test_set_unknown_stage_lists_the_stages():
    message = config_error(fixture_config("tiny"), ["stages.finetune.epochs=3"])
    assert "'finetune'" in message
    assert "head, full" in message


def test_set_unknown_key_suggests_closest_name():
    message = config_error(fixture_config("tiny"), ["data.batchsize=16"])
    assert "data.batchsize" in message
    assert "did you mean 'batch_size'?" in message


def test_set_without_value_shows_the_form():
    message = config_error(fixture_config("tiny"), ["data.batch_size"])
    assert "key=value" in message


def test_set_wrong_type_is_rejected():
    message = config_error(fixture_config("tiny"), ["data.batch_size=sixteen"])
    assert "'data.batch_size' must be int" in message
    assert "'sixteen'" in message


def test_saved_config_copy_reproduces_the_overrides(tmp_path):
    overrides = ["data.batch_size=16", "stages.full.epochs=3", "stages[0].lr=0.01", "model.drop_rate=0.2"]
    config = load_config(fixture_config("tiny"), overrides)
    copy = tmp_path / "experiments" / "tiny" / "config.py"
    copy.parent.mkdir(parents=True)
    copy.write_text(config_copy_text(config))

    again = load_config(copy)
    assert again.data.batch_size == 16
    assert [(s.name, s.epochs, s.lr) for s in again.stages] == [("head", 1, 0.01), ("full", 3, None)]
    assert again.model.drop_rate == 0.2
    assert again.data == config.data
    assert again.stages == config.stages


# ------------------------------------------------------------------------------------ command line
# Each `python train.py` spends ~6 s importing torch and Lightning before it can fail, so the cases
# below are all started at once by the `cli` fixture (they share the CPU cores) and each test checks
# its own.


def _cli_syntax_error(folder: Path) -> list[str]:
    return [str(fixture_config("syntax_error"))]


def _cli_unknown_field(folder: Path) -> list[str]:
    return [str(fixture_config("unknown_data_field"))]


def _cli_unset_root_path(folder: Path) -> list[str]:
    # A config beside the user that imports configs/base.py, which lies beside train.py.
    (folder / "root_path_from_base.py").write_text(fixture_config("root_path_from_base").read_text())
    return ["root_path_from_base.py"]


def _cli_debug(folder: Path) -> list[str]:
    return [str(fixture_config("unknown_data_field")), "--debug"]


CLI_CASES = {
    "syntax_error": _cli_syntax_error,
    "unknown_field": _cli_unknown_field,
    "unset_root_path": _cli_unset_root_path,
    "debug": _cli_debug,
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """`cli(name)` → (folder, CompletedProcess) of `python train.py ARGS` run in that case's folder."""
    yield from start_cli_cases(CLI_CASES, tmp_path_factory)


def test_cli_syntax_error_exits_2_without_traceback(cli):
    folder, result = cli("syntax_error")
    stderr = assert_user_error(result)
    assert "syntax_error.py:6: syntax error" in stderr
    assert_nothing_trained(folder, "broken")


def test_cli_unknown_field_exits_2_with_hint(cli):
    folder, result = cli("unknown_field")
    stderr = assert_user_error(result)
    assert "unknown_data_field.py:" in stderr
    assert "did you mean 'batch_size'?" in stderr
    assert_nothing_trained(folder, "typo")


def test_cli_unset_root_path_exits_2_naming_the_variable(cli):
    folder, result = cli("unset_root_path")
    stderr = assert_user_error(result)
    assert "root_path_from_base.py:" in stderr
    assert "ROOT_PATH is not set" in stderr
    assert_nothing_trained(folder, "from_base")


def test_cli_debug_shows_the_traceback(cli):
    _, result = cli("debug")
    assert result.returncode != 0
    assert "Traceback" in result.stderr
    assert "ConfigError" in result.stderr
    assert "did you mean 'batch_size'?" in result.stderr


def test_set_reaches_dict_fields_and_optimizer_keywords(tmp_path):
    from mlic.config.schema import apply_override

    config = load_config(FIXTURES / "tiny.py")
    apply_override(config, "trainer.precision=bf16-mixed")
    apply_override(config, "optimizer.lr=0.01")
    apply_override(config, "model.kwargs.drop_path_rate=0.1")
    assert config.trainer["precision"] == "bf16-mixed"
    assert config.optimizer.keywords["lr"] == 0.01
    assert config.model.kwargs == {"drop_path_rate": 0.1}


def test_saved_copy_is_read_at_load_time_so_rerunning_it_in_place_works(tmp_path):
    copy = tmp_path / "experiments" / "tiny" / "config.py"
    copy.parent.mkdir(parents=True)
    copy.write_text((FIXTURES / "tiny.py").read_text())
    config = load_config(copy)
    copy.parent.rename(tmp_path / "moved_aside")  # what a rerun does before writing the new copy
    assert 'experiment_name="tiny"' in config_copy_text(config)


def _lr_finder_config(tmp_path: Path, finder: str) -> Path:
    path = tmp_path / "lrf.py"
    path.write_text(
        "from mlic import Config, Data, LRFinder\n"
        f"config = Config(experiment_name='x', data=Data(root='.'), lr_finder={finder})\n"
    )
    return path


def test_the_old_smoothing_field_says_what_replaced_it(tmp_path):
    message = config_error(_lr_finder_config(tmp_path, "LRFinder(smoothing=0.98)"))
    assert "LRFinder() has no field 'smoothing'" in message
    assert "set window, its width in decades of LR" in message


@pytest.mark.parametrize("window", ["-0.1", "9.0", "float('inf')"])
def test_a_smoothing_window_outside_the_sweep_is_rejected(tmp_path, window):
    message = config_error(_lr_finder_config(tmp_path, f"LRFinder(window={window})"))
    assert "'lr_finder.window'" in message
    assert "between 0 and the sweep's 8 decades" in message
