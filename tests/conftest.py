"""Shared helpers for tests that run the real command-line programs on tiny generated data."""
import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import pytest
import torch

# Under pytest-xdist the workers share the machine's cores: one thread each, also in the commands
# they start, since OpenMP threads competing for the same cores slowed some tests tenfold.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"
# Every command a test starts imports the repository's modules, as after `pip install -e .`.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)

# A tiny HRM / TRM that trains in about a second per run on a laptop CPU.
TINY_HRM = ["arch.hidden_size=32", "arch.num_heads=2", "arch.H_layers=1", "arch.L_layers=1", "arch.H_cycles=1",
            "arch.L_cycles=1", "arch.halt_max_steps=2", "arch.forward_dtype=float32"]
TINY_TRM = ["arch.hidden_size=32", "arch.num_heads=2", "arch.L_layers=1", "arch.H_cycles=2", "arch.L_cycles=1",
            "arch.halt_max_steps=2", "arch.puzzle_emb_len=1", "arch.forward_dtype=float32"]


def random_batch(B: int = 3, S: int = 16) -> Dict[str, torch.Tensor]:
    """A seeded batch of ``B`` random rows of ``S`` tokens (vocabulary 6, 4 puzzle identifiers) for model tests."""
    g = torch.Generator().manual_seed(2)
    return {"inputs": torch.randint(0, 6, (B, S), generator=g, dtype=torch.int32),
            "labels": torch.randint(0, 6, (B, S), generator=g, dtype=torch.int32),
            "puzzle_identifiers": torch.randint(0, 4, (B,), generator=g, dtype=torch.int32)}


def subprocess_env(cuda: bool = False, **extra: str) -> Dict[str, str]:
    """The environment of a command a test starts: W&B off and, unless ``cuda``, no GPU visible.

    The CPU tests (gloo ranks among them, which would otherwise pick ``cuda:<local rank>``) thus
    run the same on a GPU machine; the CUDA tests pass ``cuda=True``.
    """
    env = dict(os.environ)
    env.update(WANDB_MODE="disabled", PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="0")
    if not cuda:
        env["CUDA_VISIBLE_DEVICES"] = ""
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run(cmd: List[str], cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None, timeout: int = 300,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run a command with W&B off; on failure show its output in the assertion."""
    proc = subprocess.run(cmd, cwd=str(cwd or REPO), env=env or subprocess_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


def pretrain(*overrides: str, cwd: Optional[Path] = None, check: bool = True, env=None, timeout: int = 300):
    return run([sys.executable, str(REPO / "pretrain.py"), *overrides], cwd=cwd, check=check, env=env, timeout=timeout)


def torchrun(*args: str, cwd: Optional[Path] = None, check: bool = True, env=None, timeout: int = 300):
    """Several processes on 2 cores: one thread each, or they slow each other down."""
    return run([sys.executable, "-m", "torch.distributed.run", *args], cwd=cwd, check=check,
               env=env or subprocess_env(OMP_NUM_THREADS="1"), timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CreatesMarker:
    """Unpickling this creates ``path``: a stand-in for any code a crafted checkpoint could run."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def malicious_checkpoint(path, marker, like_train_state: bool = False):
    """A ``torch.save`` file whose unpickling (without ``weights_only``) would create ``marker``."""
    payload: Dict[str, Any] = {"w": CreatesMarker(marker)}
    if like_train_state:
        payload.update(format="hrm-train-state-v1", world_size=1, step=3)
    torch.save(payload, str(path))
    return path


def load_weights(path) -> Dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def max_rel_diff(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(((a[k].double() - b[k].double()).abs().max() / a[k].double().abs().max().clamp_min(1e-12)).item() for k in a)


def assert_same_training(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], rtol: float, step_bound: float,
                         max_fraction: float = 1e-3) -> None:
    """Two float32 runs of the same training whose sums ran in another order (other batch splits,
    processes, compiled kernels): every element within ``rtol`` of its tensor's largest magnitude,
    except where a sign-like step (AdamATan2's first steps move a weight by ~lr whatever the size of
    its gradient; SignSGD) met a gradient within float32 rounding of zero, which either order may
    round to the other sign: at most ``max_fraction`` of a tensor's elements (a lost or doubled
    micro-batch or rank moves nearly all of them), each within ``step_bound`` (a few learning rates)."""
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k].double(), b[k].double()
        d = (x - y).abs()
        off = d > rtol * x.abs().max().clamp_min(1e-12)
        assert int(off.sum()) <= max(1, max_fraction * x.numel()), f"{k}: {int(off.sum())} of {x.numel()} elements differ by more than {rtol:g}"
        assert not off.any() or d[off].max() <= step_bound, f"{k}: {d[off].max():.3g} apart, more than {step_bound:g}"


def untrained_checkpoint(run_config: dict, data, folder, seed: int = 0):
    """A checkpoint folder for ``data`` with the model of ``run_config``'s arch at its initial
    weights (drawn with ``seed``): what predict.py reads, without the training (the answers are
    not judged here)."""
    import yaml

    from inference.checkpoint import dataset_metadata
    from inference.model import build_model
    from training.checkpointing import model_weights
    from utils.safe_io import atomic_torch_save
    folder.mkdir(parents=True)
    (folder / "all_config.yaml").write_text(yaml.safe_dump({**run_config, "data_path": str(data), "data_paths": [str(data)]}))
    torch.manual_seed(seed)
    model = build_model(run_config["arch"], dataset_metadata([str(data)])[0], 4, "cpu")
    atomic_torch_save(model_weights(model), str(folder / "step_1"))
    return folder / "step_1"


def build_custom(output_dir: Path, examples: List[Dict[str, Any]]) -> Path:
    """A custom task's dataset built from ``examples`` (train and test the same lines)."""
    import json
    from dataset.build_custom_dataset import CustomBuildConfig, build_custom_dataset
    output_dir.mkdir(parents=True, exist_ok=True)
    src = output_dir / "examples.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in examples))
    build_custom_dataset(CustomBuildConfig(train=str(src), test=str(src), output_dir=str(output_dir / "data")))
    return output_dir / "data"


def counting_backend():
    """A ``torch.compile`` backend that runs each graph as captured and records it: ``(backend,
    graphs)``. Dynamo's caches are reset first, so the count starts from nothing."""
    graphs: List[Any] = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    return backend, graphs


def minimal_pretrain_config(**extra):
    """A parsed pretrain config with only the required keys (LR 1e-3, 10 warm-up steps, floor 0.1)
    and ``extra``: for checks of the config and of the LR schedule that build no model."""
    from training.config import parse_config
    return parse_config({"arch": {"name": "x", "loss": {"name": "y"}}, "global_batch_size": 8, "epochs": 1, "lr": 1e-3, "lr_min_ratio": 0.1,
                         "lr_warmup_steps": 10, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "puzzle_emb_lr": 1e-2,
                         "puzzle_emb_weight_decay": 0.1, **extra})


def lr_at(config, step: int, budget_progress: float = 0.0, total_steps: int = 1000) -> float:
    """The LR (base 1e-3) that training's ``compute_lr`` gives the update making ``step`` of a
    ``total_steps`` run, with ``budget_progress`` of the time budget spent."""
    from training.state import TrainState, compute_lr
    return compute_lr(1e-3, config, TrainState(model=torch.nn.Linear(1, 1), optimizers=[], optimizer_lrs=[], carry=None, step=step,
                                               total_steps=total_steps, budget_progress=budget_progress))


def in_process_run(data, overrides: List[str], global_batch_size: int = 8, epochs_per_iter: int = 2):
    """A run as ``pretrain.py`` sets it up, in this process on the CPU: the config composed from
    ``cfg_pretrain`` and ``overrides``, the train split's loader and a fresh train state (seed 0),
    in training mode. Returns ``(config, dataset, state)``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
    from training.config import parse_config
    from training.state import init_train_state
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        cfg = compose("cfg_pretrain", overrides=[f"data_path={data}", *overrides])
    config = parse_config(OmegaConf.to_container(cfg, resolve=True))
    dataset = PuzzleDataset(PuzzleDatasetConfig(seed=0, dataset_paths=config.data_paths, global_batch_size=global_batch_size,
                                                test_set_mode=False, epochs_per_iter=epochs_per_iter, rank=0, num_replicas=1),
                            split="train")
    torch.manual_seed(0)
    state = init_train_state(config, dataset.metadata, world_size=1, device="cpu")
    state.model.train()
    return config, dataset, state


def train_in_process(data, checkpoint_path: Path, *overrides: str) -> Path:
    """Train a run with ``pretrain.launch`` in this process (W&B off): ``cfg_pretrain`` on ``data``
    with ``overrides``, saved in ``checkpoint_path``; returns its first ``step_N`` weights file."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from pretrain import launch
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        cfg = compose("cfg_pretrain", overrides=[f"data_path={data}", *overrides, f"checkpoint_path={checkpoint_path}"])
    env = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "disabled"
    try:
        launch(OmegaConf.to_container(cfg, resolve=True))
    finally:
        os.environ.pop("WANDB_MODE") if env is None else os.environ.__setitem__("WANDB_MODE", env)
    return checkpoint_path / next(f for f in os.listdir(checkpoint_path) if f.startswith("step_") and f[5:].isdigit())


def build_sudoku(output_dir: Path, grid: int, n_train: int, n_test: int, num_aug: int = 0, seed: int = 0) -> Path:
    from dataset.build_sudoku_dataset import SudokuBuildConfig, build_sudoku_dataset
    build_sudoku_dataset(SudokuBuildConfig(generate=n_train, generate_test=n_test, grid=grid, num_aug=num_aug,
                                           seed=seed, output_dir=str(output_dir)))
    return output_dir


# ---- the original builders' outputs (../shared/reference/datasets) ----------------------------

REFERENCE_DATASETS = REFERENCE / "datasets"
needs_reference_datasets = pytest.mark.skipif(not REFERENCE_DATASETS.is_dir(),
                                              reason="../shared/reference/datasets not present (fixtures of the original code)")


def load_split(path, split) -> Dict[str, Any]:
    import numpy as np
    from dataset.common import DATASET_FIELDS
    return {f: np.load(os.path.join(path, split, f"all__{f}.npy")) for f in DATASET_FIELDS}


def reference_csv_source(tmp_path: Path, name: str) -> Path:
    """A folder holding the reference raw CSVs of ``name`` (sudoku, maze) as train.csv / test.csv."""
    import shutil
    src = tmp_path / "src"
    src.mkdir()
    for split in ("train", "test"):
        shutil.copy(REFERENCE_DATASETS / "raw" / f"{name}_{split}.csv", src / f"{split}.csv")
    return src


def assert_same_as_reference(out: Path, name: str) -> None:
    """``out`` holds the arrays (values) and dataset.json fields the original builder wrote for ``name``."""
    import json

    import numpy as np
    for split in ("train", "test"):
        ours, ref = load_split(out, split), load_split(REFERENCE_DATASETS / name, split)
        for f, expected in ref.items():
            np.testing.assert_array_equal(ours[f], expected, err_msg=f"{split} {f}")
        ours_meta = json.loads((out / split / "dataset.json").read_text())
        ref_meta = json.loads((REFERENCE_DATASETS / name / split / "dataset.json").read_text())
        assert {k: ours_meta[k] for k in ref_meta} == ref_meta
    assert json.loads((out / "identifiers.json").read_text()) == ["<blank>"]


@pytest.fixture(scope="session")
def sudoku4(tmp_path_factory) -> Path:
    """48 generated 4x4 puzzles (+16 test), 1 augmentation each: 48 groups, 96 puzzles."""
    return build_sudoku(tmp_path_factory.mktemp("data") / "sudoku-4x4", grid=4, n_train=48, n_test=16, num_aug=1)


@pytest.fixture(scope="session")
def trained_hrm(sudoku4, tmp_path_factory):
    """A tiny HRM trained for 12 steps on ``sudoku4`` (EMA on, evaluated every 6 steps), shared by the
    tests that need a real checkpoint: returns (checkpoint folder, {step: logged "all" eval metrics})."""
    import json
    ck = tmp_path_factory.mktemp("trained_hrm") / "ck"
    pretrain(f"data_path={sudoku4}", "epochs=2", "eval_interval=1", "global_batch_size=8", "evaluators=[]", "lr=3e-3",
             "lr_warmup_steps=1", *TINY_HRM, "arch.halt_max_steps=3", "ema=True", f"checkpoint_path={ck}", "+run_name=e")
    logged = {line["step"]: line["all"] for line in map(json.loads, (ck / "eval_metrics.jsonl").read_text().splitlines())}
    return ck, logged


# ---- tiny ARC task folders of our own, on fitted canvases -------------------------------------

def arc_task_folder(folder: Path, kind: str, seed: int = 0) -> Path:
    """ARC task files written here: ``2d``: three tasks of 5x5 grids (one makes 3x5 outputs, so that
    transposing maps change shapes), canvas 6x6 when fitted; ``1d``: three tasks of 1xN grids
    (N = 8, 10, 12), canvas 2x13. Each task has three demonstrations and one or two test pairs."""
    import json

    import numpy as np
    rng = np.random.default_rng(seed)
    rules = {"2d": {"flip": np.fliplr, "recolour": lambda g: np.where(g > 0, g % 9 + 1, 0), "top": lambda g: g[:3]},
             "1d": {"flip": np.fliplr, "recolour": lambda g: np.where(g > 0, g % 9 + 1, 0), "shift": lambda g: np.roll(g, 1, axis=1)}}[kind]
    for k, (name, rule) in enumerate(rules.items()):
        shape = (5, 5) if kind == "2d" else (1, 8 + 2 * k)
        pairs = []
        for _ in range(4 + (k == 0)):
            grid = rng.integers(0, 10, size=shape) * (rng.random(shape) < 0.6)
            pairs.append({"input": grid.tolist(), "output": rule(grid).tolist()})
        (folder / f"{kind}_{name}.json").parent.mkdir(parents=True, exist_ok=True)
        (folder / f"{kind}_{name}.json").write_text(json.dumps({"train": pairs[:3], "test": pairs[3:]}))
    return folder


def arc_run_config(data: Path) -> Dict[str, Any]:
    """A tiny HRM's run config for an ARC dataset (the ARC evaluator on), composed as pretrain.py composes it."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        cfg = compose("cfg_pretrain", overrides=[f"data_path={data}", "global_batch_size=8", *TINY_HRM])
    return OmegaConf.to_container(cfg, resolve=True)


def build_arc(folder: Path, out: Path, num_aug: int = 3) -> Path:
    """``folder``'s tasks built on a fitted canvas, HRM's protocol (every task's test pairs evaluated)."""
    from dataset.build_arc_dataset import ARCBuildConfig, build_arc_dataset
    build_arc_dataset(ARCBuildConfig(dataset_dirs=[str(folder)], output_dir=str(out), num_aug=num_aug, canvas="fit",
                                     protocol="hrm"))
    return out


@pytest.fixture(scope="session")
def arc_tiny(tmp_path_factory):
    """``{"2d": (data, checkpoint), "1d": (data, checkpoint)}``: the tasks of :func:`arc_task_folder`
    built with 3 augmentations each and an untrained tiny HRM checkpoint per dataset."""
    root = tmp_path_factory.mktemp("arc_tiny")
    result = {}
    for kind in ("2d", "1d"):
        data = build_arc(arc_task_folder(root / "raw" / kind, kind), root / "data" / kind)
        result[kind] = (data, untrained_checkpoint(arc_run_config(data), data, root / "ck" / kind))
    return result


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 4 MB tmpfs to fill (mounting needs root; skipped with the reason otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("mount -t tmpfs failed (no CAP_SYS_ADMIN in this container)")
    yield mnt
    # A worker process of the run may still be exiting and keep the mount busy for a moment.
    for _ in range(10):
        proc = subprocess.run(["umount", str(mnt)], capture_output=True, text=True)
        if proc.returncode == 0 or "busy" not in proc.stderr:
            break
        time.sleep(0.5)
    else:
        proc = subprocess.run(["umount", "--lazy", str(mnt)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ---- a Hugging Face cache laid out by hand (hf:// checkpoints, offline) ----------------------

HF_TEST_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lay_out_hf_cache(cache: Path, repo_id: str, files: Dict[str, Union[Path, bytes]], revision: str = "main",
                     commit: str = HF_TEST_COMMIT) -> Path:
    """A model repository in a huggingface_hub cache as a download leaves it: contents in
    ``blobs/<hash>``, ``snapshots/<commit>/<file>`` links to them, ``refs/<revision>`` naming the
    commit. ``files``: path in the repository -> bytes or a file (a folder: all its files). Returns the snapshot."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / commit
    expanded: Dict[str, Union[Path, bytes]] = {}
    for rel, content in files.items():
        if isinstance(content, Path) and content.is_dir():
            expanded.update({f"{rel}/{p.relative_to(content).as_posix()}".lstrip("/"): p for p in content.rglob("*") if p.is_file()})
        else:
            expanded[rel] = content
    for rel, content in expanded.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / revision).write_text(commit)
    return snapshot


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache with HF_HUB_OFFLINE=1 and no token, for this process (huggingface_hub's
    constants) and for the commands it starts (the environment)."""
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    for name, value in (("HF_HOME", home), ("HF_HUB_CACHE", cache), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    return cache
