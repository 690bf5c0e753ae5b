"""export.py and train.py --validate/--test on a tiny trained experiment."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import REPO, assert_user_error, train_from_file

from mlic.data.images import ImageTransform, read_rgb
from mlic.deploy.export import FILES, TOLERANCE, ExportError, export_experiment, run_exported
from mlic.experiment.checkpoints import load_model_file

CONFIG = """
from mlic import Config, Data, Model, Stage, env_path

config = Config(
    experiment_name="export_tiny",
    data=Data(root=env_path("ROOT_PATH"), img_size=(32, 40), batch_size=8, num_workers=0),
    model=Model(name="test_resnet", pretrained=False),
    stages=[Stage("full", epochs=2, lr=3e-3)],
    trainer=dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False),
    seed=0,
)
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny experiment (non-square 32×40 input) trained from a config file, as a user would."""
    folder = tmp_path_factory.mktemp("export")
    train_from_file(folder, CONFIG)
    return folder


@pytest.fixture
def root_path(trained: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ROOT_PATH", str(trained / "data"))
    monkeypatch.chdir(trained)
    return trained / "experiments" / "export_tiny"


def _test_images(trained: Path, n: int = 5) -> tuple[torch.Tensor, np.ndarray]:
    """Resized uint8 test images (not the ones the export was checked on) and the eager probabilities."""
    mf = load_model_file(trained / "experiments" / "export_tiny" / "model.best.pth")
    transform = mf.prep.transform()
    paths = sorted((trained / "data" / "Images").glob("*.jpg"))[-n:]
    images = [read_rgb(str(p)) for p in paths]
    uint8 = torch.from_numpy(np.stack([transform.resized(i) for i in images]))
    with torch.no_grad():
        eager = torch.sigmoid(mf.model(torch.stack([transform(i) for i in images]))).numpy()
    return uint8, eager


def test_every_format_round_trips_and_matches_eager(root_path, trained):
    written = export_experiment(root_path)
    assert set(written) == {"torchscript", "export", "onnx"}
    uint8, eager = _test_images(trained)
    assert uint8.shape == (5, 32, 40, 3) and uint8.dtype == torch.uint8
    for fmt, path in written.items():
        assert path == root_path / FILES[fmt] and path.is_file()
        got = run_exported(fmt, path, uint8)
        assert got.shape == eager.shape
        assert np.abs(got - eager).max() <= TOLERANCE[fmt], fmt
    meta = json.loads((root_path / "export.json").read_text())
    assert meta["input"] == {
        "dtype": "uint8",
        "layout": "NHWC",
        "channels": "RGB",
        "height": 32,
        "width": 40,
        "resize_interpolation": "bilinear",
        "resize_antialias": True,
    }
    assert meta["thresholds"] == json.loads((root_path / "thresholds.json").read_text())
    assert {e["weights"] for e in meta["files"].values()} == {"model.best.pth"}
    assert not list(root_path.glob(".*"))  # no temporary or side files (ONNX weights are inside)


def test_onnx_file_works_alone_in_another_folder(root_path, trained, tmp_path):
    export_experiment(root_path, formats=["onnx"])
    alone = tmp_path / "deploy" / "model.onnx"
    alone.parent.mkdir()
    alone.write_bytes((root_path / "model.onnx").read_bytes())
    uint8, eager = _test_images(trained)
    assert np.abs(run_exported("onnx", alone, uint8) - eager).max() <= TOLERANCE["onnx"]


def test_torchscript_runs_in_a_process_that_does_not_import_mlic(root_path, trained, tmp_path):
    export_experiment(root_path, formats=["torchscript"])
    uint8, eager = _test_images(trained)
    torch.save(uint8, tmp_path / "images.pt")
    script = (
        "import sys, torch\n"
        f"model = torch.jit.load({str(root_path / 'model.ts')!r})\n"
        f"images = torch.load({str(tmp_path / 'images.pt')!r})\n"
        f"torch.save(model(images), {str(tmp_path / 'probs.pt')!r})\n"
        "assert not any(m == 'mlic' or m.startswith('mlic.') for m in sys.modules), 'mlic was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    probs = torch.load(tmp_path / "probs.pt").detach().numpy()
    assert np.abs(probs - eager).max() <= 1e-5


def test_a_failed_check_deletes_the_file_and_says_by_how_much(root_path, monkeypatch):
    (root_path / "model.ts").unlink(missing_ok=True)
    monkeypatch.setitem(TOLERANCE, "torchscript", -1.0)  # nothing can pass
    with pytest.raises(
        ExportError, match=r"TorchScript export differs from the eager model by .* on \d+ images"
    ):
        export_experiment(root_path, formats=["torchscript"])
    assert not (root_path / "model.ts").exists()
    assert not list(root_path.glob(".*.tmp"))


def test_without_onnx_installed_all_formats_skip_onnx_and_onnx_alone_is_an_error(root_path, monkeypatch):
    import mlic.deploy.export

    monkeypatch.setattr(mlic.deploy.export, "onnx_available", lambda: False)
    (root_path / "model.onnx").unlink(missing_ok=True)
    written = export_experiment(root_path, formats=["torchscript", "onnx"])
    assert set(written) == {"torchscript"} and not (root_path / "model.onnx").exists()
    with pytest.raises(mlic.deploy.export.ConfigError, match=r"pip install -e '\.\[onnx\]'"):
        export_experiment(root_path, formats=["onnx"])


def test_export_of_another_model_file_and_check_images_from_a_folder(root_path, trained):
    written = export_experiment(root_path, "model.last.pth", ["export"], images=trained / "data" / "Images")
    assert json.loads((root_path / "export.json").read_text())["weights"] == "model.last.pth"
    uint8, _ = _test_images(trained)
    mf = load_model_file(root_path / "model.last.pth")
    transform = ImageTransform(mf.prep.img_size, mf.prep.mean, mf.prep.std)
    with torch.no_grad():
        eager = torch.sigmoid(mf.model((uint8.permute(0, 3, 1, 2).float() - 127.5) / 127.5)).numpy()
    assert transform.mean.tolist() == [127.5] * 3  # test_resnet normalises with mean = std = 0.5
    assert np.abs(run_exported("export", written["export"], uint8) - eager).max() <= 1e-5


def test_export_cli_without_root_path_asks_for_it_or_images(trained):
    env = {k: v for k, v in os.environ.items() if k != "ROOT_PATH"}
    result = subprocess.run(
        [sys.executable, str(REPO / "export.py"), "experiments/export_tiny", "--format", "torchscript"],
        cwd=trained,
        env=env,
        capture_output=True,
        text=True,
    )
    message = assert_user_error(result)
    assert "ROOT_PATH" in message and "--images DIR" in message


def _table_row(text: str, split: str) -> list[str]:
    for line in text.splitlines():
        cells = line.strip("| ").replace("|", " ").split()
        if cells and cells[0] == split:
            return cells[1:]
    raise AssertionError(f"no {split} row in:\n{text}")


def test_train_test_flag_prints_the_numbers_of_report_md(trained):
    env = {**os.environ, "ROOT_PATH": str(trained / "data")}
    result = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "config.py", "--test"],
        cwd=trained,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    report = (trained / "experiments" / "export_tiny" / "report.md").read_text()
    assert _table_row(result.stdout, "test") == _table_row(report, "test")
    assert len(_table_row(result.stdout, "test")) == 7  # loss, map, auc, f1 micro/macro, both tuned


def test_validate_with_weights_and_wrong_flag_combinations(root_path, capsys):
    sys.path.insert(0, str(REPO))
    try:
        import train
    finally:
        sys.path.remove(str(REPO))
    assert train.main(["config.py", "--validate", "--weights", "model.last.pth"]) == 0
    out = capsys.readouterr().out
    assert "model.last.pth on valid" in out and len(_table_row(out, "valid")) == 7
    assert train.main(["config.py", "--test", "--validate"]) == 2
    assert "one of --lr-find, --resume, --validate and --test" in capsys.readouterr().err
    assert train.main(["config.py", "--weights", "model.last.pth"]) == 2
    assert "--weights goes with --validate or --test" in capsys.readouterr().err
    assert train.main(["config.py", "--test", "--weights", "nothing.pth"]) == 2
    assert "model file nothing.pth is not in experiments/export_tiny" in capsys.readouterr().err


def test_one_check_image_still_gives_a_free_batch_size(root_path, trained, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    first = sorted((trained / "data" / "Images").glob("*.jpg"))[0]
    (one / first.name).write_bytes(first.read_bytes())
    written = export_experiment(root_path, formats=["export"], images=one)
    uint8, eager = _test_images(trained, n=4)
    assert np.abs(run_exported("export", written["export"], uint8) - eager).max() <= 1e-5


def test_export_json_describes_what_was_written_when_a_later_format_fails(root_path, monkeypatch):
    export_experiment(root_path, formats=["torchscript"])
    monkeypatch.setitem(TOLERANCE, "export", -1.0)
    with pytest.raises(ExportError, match="torch.export export differs"):
        export_experiment(root_path, "model.last.pth", ["torchscript", "export"])
    files = json.loads((root_path / "export.json").read_text())["files"]
    assert files["model.ts"]["weights"] == "model.last.pth"


# kill -9 the export once the last format's file is written, before it is checked and moved into place
KILL_AT = """
import os, signal, mlic.deploy.export as export
_run_exported = export.run_exported
def _kill_at(fmt, path, images):
    if fmt == {fmt!r}:
        os.kill(os.getpid(), signal.SIGKILL)
    return _run_exported(fmt, path, images)
export.run_exported = _kill_at
"""


def test_a_killed_export_leaves_hidden_tmp_files_that_the_next_export_removes(root_path, trained):
    from mlic.deploy.export import onnx_available

    formats = ["torchscript", "export", "onnx"] if onnx_available() else ["torchscript", "export"]
    code = KILL_AT.format(fmt=formats[-1]) + (
        f"import runpy, sys\nsys.argv = ['export.py', 'experiments/export_tiny', '--images', 'data/Images']\n"
        f"runpy.run_path({str(REPO / 'export.py')!r}, run_name='__main__')\n"
    )
    killed = subprocess.run([sys.executable, "-c", code], cwd=trained, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    left = sorted(p.name for p in root_path.iterdir() if p.name.startswith("."))
    # `.<name>.<random>.tmp`, as every other file mlic writes: the finished formats and the one cut short
    assert [name.split(".")[1:3] for name in left] == sorted(FILES[f].split(".") for f in formats)
    assert all(re.fullmatch(r"\.model\.(ts|pt2|onnx)\.\w{8}\.tmp", name) for name in left), left
    export_experiment(root_path, formats=["torchscript"], images=trained / "data" / "Images")
    assert not [p.name for p in root_path.iterdir() if p.name.startswith(".")]


def _model_file(path: Path, model_name: str, classes: list[str], like: Path) -> Path:
    """A mlic model file of `model_name` for `classes`, its preprocessing copied from the model file `like`."""
    saved = torch.load(like, weights_only=True)
    model = timm.create_model(model_name, pretrained=False, num_classes=len(classes))
    torch.save(
        {**saved, "state_dict": model.state_dict(), "model_name": model_name, "classes": classes}, path
    )
    return path


def _train_main(*argv: str) -> int:
    sys.path.insert(0, str(REPO))
    try:
        import train
    finally:
        sys.path.remove(str(REPO))
    return train.main(list(argv))


def test_test_with_weights_of_another_architecture_warns_once_and_evaluates_them(
    root_path, tmp_path, capsys, caplog
):
    classes = json.loads((root_path / "classes.json").read_text())
    other = _model_file(tmp_path / "other.pth", "test_efficientnet", classes, root_path / "model.best.pth")
    caplog.set_level("WARNING", logger="mlic")
    assert _train_main("config.py", "--test", "--weights", str(other)) == 0
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{other} was trained as 'test_efficientnet', not as the config's 'test_resnet': evaluating it as "
        f"'test_efficientnet'"
    ]
    assert f"{other} on test" in capsys.readouterr().out
    caplog.clear()
    assert _train_main("config.py", "--test", "--weights", "model.last.pth") == 0  # the config's own
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_test_with_weights_of_other_classes_is_one_sentence(root_path, tmp_path, capsys):
    other = _model_file(tmp_path / "other.pth", "test_resnet", ["x", "y", "z"], root_path / "model.best.pth")
    assert _train_main("config.py", "--test", "--weights", str(other)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {other} was trained on the classes x, y, z, but ") and err.count("\n") == 1
    assert "use the data it was trained on, or weights trained on these classes" in err
