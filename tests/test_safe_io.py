"""Crash-safe writes and safe loading (utils/safe_io.py)."""
import os

import pytest
import torch

from conftest import malicious_checkpoint
from utils.safe_io import CheckpointError, atomic_torch_save, atomic_write_text, load_weights


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "step_1"
    atomic_torch_save({"w": torch.ones(2)}, str(path))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_torch_save({"w": Unpicklable()}, str(path))
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["step_1"]


def test_safe_load_refuses_code_and_names_the_file(tmp_path):
    marker = tmp_path / "pwned"
    path = malicious_checkpoint(tmp_path / "step_3", marker)
    with pytest.raises(CheckpointError, match=rf"^load_checkpoint={path}: refused to load: the file holds Python objects"):
        load_weights(str(path), "load_checkpoint")
    (tmp_path / "random").write_bytes(os.urandom(3000))
    with pytest.raises(CheckpointError, match=rf"^checkpoint={tmp_path / 'random'}: not a checkpoint"):
        load_weights(str(tmp_path / "random"), "checkpoint")
    torch.save([torch.ones(1)], str(tmp_path / "list"))
    with pytest.raises(CheckpointError, match="not a model checkpoint"):
        load_weights(str(tmp_path / "list"), "checkpoint")
    assert not marker.exists()


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_torch_save({"w": torch.ones(2)}, str(tmp_path / "step_1"))
        atomic_write_text(str(tmp_path / "all_config.yaml"), "a: 1\n")
    finally:
        os.umask(old)
    assert {oct(os.stat(tmp_path / n).st_mode & 0o777) for n in ("step_1", "all_config.yaml")} == {"0o644"}


@pytest.mark.slow  # mounts a tmpfs
def test_full_disk_is_one_line_and_keeps_the_old_file(small_tmpfs):
    path = small_tmpfs / "step_1"
    atomic_torch_save({"w": torch.ones(1000)}, str(path))
    with pytest.raises(CheckpointError) as e:
        atomic_torch_save({"w": torch.ones(2_000_000)}, str(path))  # 8 MB
    assert str(e.value) == f"no space left on device (needed about 8 MB in {small_tmpfs})"
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(1000))
    assert os.listdir(small_tmpfs) == ["step_1"]


def test_load_weights_reads_safetensors_whatever_the_name(tmp_path):
    from safetensors.torch import save_file

    weights = {"model.inner.lm_head.weight": torch.randn(6, 4), "model.inner.q_head.bias": torch.tensor([-5.0, -5.0])}
    save_file(weights, str(tmp_path / "model.safetensors"))
    (tmp_path / "step_3").write_bytes((tmp_path / "model.safetensors").read_bytes())  # a safetensors file named as a step
    for name in ("model.safetensors", "step_3"):
        loaded = load_weights(str(tmp_path / name), "checkpoint")
        assert loaded.keys() == weights.keys() and all(torch.equal(loaded[k], v) for k, v in weights.items())
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "model.safetensors").read_bytes()[:60])
    with pytest.raises(CheckpointError, match=r"cut.safetensors: the safetensors file is truncated"):
        load_weights(str(tmp_path / "cut.safetensors"), "checkpoint")


def test_atomic_write_replaces_only_regular_files(tmp_path):
    """A device is written in place, never replaced by a regular file; a link is written through."""
    atomic_write_text("/dev/null", "nothing")
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")
    (tmp_path / "target.json").write_text("old")
    os.symlink(tmp_path / "target.json", tmp_path / "link.json")
    atomic_write_text(str(tmp_path / "link.json"), "new")
    assert os.path.islink(tmp_path / "link.json") and (tmp_path / "target.json").read_text() == "new"
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError):
        atomic_write_text(str(tmp_path / "folder"), "x")
    assert sorted(os.listdir(tmp_path)) == ["folder", "link.json", "target.json"]
