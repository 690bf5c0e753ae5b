"""Weights files mlic cannot read: each gets one sentence saying what is wrong, and no code in one runs."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from conftest import MakesAFolder, Settings

from mlic import CheckpointError
from mlic.models.weights import read_state_dict


def _save(kind: str, path: Path, marker: Path) -> Path:
    """A weights file that would create `marker` when loaded unsafely, written the way `kind` says."""
    payload = {"state_dict": {"fc.weight": torch.zeros(2, 2)}, "extra": MakesAFolder(marker)}
    if kind == "custom class":
        torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}, "args": Settings(marker)}, path)
    elif kind == "torch.save":
        torch.save(payload, path)
    elif kind == "old torch format":
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:  # pickle.dump
        path.write_bytes(pickle.dumps(payload, protocol=4))
    return path


def _error(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path, "model file")
    return str(info.value)


@pytest.mark.parametrize("kind", ["torch.save", "old torch format", "pickle.dump", "custom class"])
def test_pickled_code_is_named_as_code_and_does_not_run(tmp_path, kind):
    # the payload is real: an unsafe load runs it
    proof = _save(kind, tmp_path / "proof.pth", tmp_path / "ran-unsafe")
    if kind == "pickle.dump":
        pickle.loads(proof.read_bytes())
    else:
        torch.load(proof, weights_only=False)
    assert (tmp_path / "ran-unsafe").exists()
    message = _error(_save(kind, tmp_path / "bad.pth", tmp_path / "ran"))
    assert message.startswith(
        f"model file {tmp_path / 'bad.pth'} holds Python objects beyond tensors, that is code"
    )
    assert ("Settings" if kind == "custom class" else "os.makedirs") in message  # what it would have imported
    assert "weights_only=False" not in message
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    "content, expected",
    [
        (
            b"hello world\nthis is no model\n",
            "cannot be read: it is not a torch file (it starts with text: 'hello world')",
        ),
        (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 46000000\n",
            "cannot be read: it is a Git LFS pointer, not the weights it points to; fetch them with git lfs pull",
        ),
        (b"", "cannot be read: it is empty (0 bytes); copy or download it again"),
    ],
    ids=["text", "git lfs pointer", "empty"],
)
def test_a_file_that_is_not_torch_says_what_it_is(tmp_path, content, expected):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    assert _error(path) == f"model file {path} {expected}"


@pytest.mark.parametrize("keep", [100, 0.5, -10], ids=["100 bytes", "half", "all but 10 bytes"])
def test_a_truncated_file_says_it_is_truncated(tmp_path, keep):
    whole = tmp_path / "whole.pth"
    torch.save({"state_dict": {"w": torch.arange(1000.0)}, "model_name": "test_resnet"}, whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
    message = _error(cut)
    assert message.startswith(
        f"model file {cut} cannot be read: it is truncated, the file ends before its data does ("
    )
    assert message.endswith("bytes); copy or download it again")


def test_a_truncated_file_of_the_old_torch_format_says_so(tmp_path):
    whole = tmp_path / "whole.pth"
    torch.save({"w": torch.arange(1000.0)}, whole, _use_new_zipfile_serialization=False)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[:1000])
    assert "cannot be read: it is a torch file of the old (pre-1.6) format, truncated or damaged" in _error(
        cut
    )


def test_random_bytes_are_not_a_torch_file(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(bytes(range(256)) * 4)
    assert (
        _error(path)
        == f"model file {path} cannot be read as torch weights (not a torch file, or a damaged one)"
    )
