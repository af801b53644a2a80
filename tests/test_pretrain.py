"""pretrain.py: config composition, schedule, checkpoint contents, and every user mistake
producing one clear line."""
import math
import os
import shlex

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from conftest import REPO, TINY_HRM, TINY_TRM, load_weights, malicious_checkpoint, pretrain, torchrun
from training.config import ConfigError, parse_config
from training.evaluation import loop_deltas, with_loop_delta
from utils.schedule import cosine_schedule_with_warmup_lr_lambda

# Command lines of the original projects, verbatim: the HRM README (sapientinc/HRM), the TRM README
# (SamsungSAILLab/TinyRecursiveModels), and TRM runs written the same way (6x6 Sudoku, a test split).
ORIGINAL_PRETRAIN_LINES = [
    'OMP_NUM_THREADS=8 python pretrain.py data_path=data/sudoku-extreme-1k-aug-1000 epochs=20000 eval_interval=2000 global_batch_size=384 lr=7e-5 puzzle_emb_lr=7e-5 weight_decay=1.0 puzzle_emb_weight_decay=1.0',
    'OMP_NUM_THREADS=8 torchrun --nproc-per-node 8 pretrain.py data_path=data/sudoku-extreme-1k-aug-1000 epochs=20000 eval_interval=2000 lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0',
    'python pretrain.py arch=trm data_paths="[data/sudoku-extreme-1k-aug-1000]" data_paths_test="[data/sudoku-extreme-1k-aug-1000]" evaluators="[]" epochs=50000 eval_interval=5000 lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0 arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=6 +run_name=x checkpoint_path="checkpoints/x" ema=True',
    'python pretrain.py arch=trm data_paths="[data/sudoku-6x6]" data_paths_test="[data/sudoku-6x6]" evaluators="[]" arch.puzzle_emb_ndim=0 arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=6 global_batch_size=256 epochs=20000 eval_interval=2000 lr=1e-4 lr_warmup_steps=2000 lr_min_ratio=0.5 weight_decay=0.1 puzzle_emb_lr=0 +run_name=y checkpoint_path="checkpoints/y" eval_save_outputs="[preds]"',
    'python pretrain.py arch=trm data_paths="[data/sudoku-extreme-1k-aug-1000]" evaluators="[]" arch.mlp_t=True arch.pos_encodings=none arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=6 +run_name=z ema=True',
    'torchrun --nproc-per-node 4 --rdzv_backend=c10d --rdzv_endpoint=localhost:0 --nnodes=1 pretrain.py arch=trm data_paths="[data/arc1concept-aug-1000]" arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=4 +run_name=a ema=True',
]


def split_command(line: str):
    """``(env, launcher args, script, overrides)`` of an original command line."""
    words = shlex.split(line)
    env = {}
    while "=" in words[0] and not words[0].startswith("-"):
        k, v = words.pop(0).split("=", 1)
        env[k] = v
    script_at = next(i for i, w in enumerate(words) if w.endswith(".py"))
    return env, words[:script_at], words[script_at], words[script_at + 1:]


def compose_config(overrides):
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        cfg = compose("cfg_pretrain", overrides=overrides)
    from omegaconf import OmegaConf
    return parse_config(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.parametrize("line", ORIGINAL_PRETRAIN_LINES, ids=range(len(ORIGINAL_PRETRAIN_LINES)))
def test_original_command_lines_compose_into_valid_configs(line):
    _, _, script, overrides = split_command(line)
    assert script == "pretrain.py"
    config = compose_config(overrides)
    kv = dict(o.lstrip("+").split("=", 1) for o in overrides)
    assert config.arch.name.endswith("TinyRecursiveReasoningModel_ACTV1" if kv.get("arch") == "trm" else "HierarchicalReasoningModel_ACTV1")
    expected_paths = yaml.safe_load(kv.get("data_paths", "null")) or [kv["data_path"]]
    assert config.data_paths == expected_paths and config.data_path == expected_paths[0]
    assert config.epochs == int(kv.get("epochs", 100000)) and config.eval_interval == int(kv.get("eval_interval", 10000))
    assert config.lr == float(kv.get("lr", 1e-4))
    assert config.run_name == kv.get("run_name") and config.project_name is None
    if "arch.L_cycles" in kv:
        assert config.arch.L_cycles == int(kv["arch.L_cycles"])  # type: ignore[attr-defined]
    if "evaluators" in kv:
        assert config.evaluators == []
    if "eval_save_outputs" in kv:
        assert config.eval_save_outputs == ["preds"]
    if "arch.mlp_t" in kv:
        assert config.arch.mlp_t is True and config.arch.pos_encodings == "none"  # type: ignore[attr-defined]
    assert config.arch.puzzle_emb_ndim == (0 if "arch.puzzle_emb_ndim" in kv else 512)  # type: ignore[attr-defined]


def test_original_defaults():
    config = compose_config([])
    assert (config.global_batch_size, config.epochs, config.eval_interval, config.checkpoint_every_eval) == (768, 100000, 10000, True)
    assert (config.lr, config.lr_min_ratio, config.lr_warmup_steps, config.beta1, config.beta2) == (1e-4, 1.0, 2000, 0.9, 0.95)
    assert (config.weight_decay, config.puzzle_emb_weight_decay, config.puzzle_emb_lr, config.seed) == (0.1, 0.1, 1e-2, 0)
    assert config.data_paths == ["data/arc-aug-1000"] and config.evaluators[0].name == "arc@ARC"
    arch = config.arch.model_dump()
    assert {k: arch[k] for k in ("H_cycles", "L_cycles", "H_layers", "L_layers", "hidden_size", "num_heads", "expansion",
                                 "puzzle_emb_ndim", "pos_encodings", "halt_max_steps", "halt_exploration_prob")} == dict(
        H_cycles=2, L_cycles=2, H_layers=4, L_layers=4, hidden_size=512, num_heads=8, expansion=4, puzzle_emb_ndim=512,
        pos_encodings="rope", halt_max_steps=16, halt_exploration_prob=0.1)
    assert arch["loss"]["loss_type"] == "stablemax_cross_entropy"
    trm = compose_config(["arch=trm"]).arch.model_dump()
    assert (trm["H_cycles"], trm["L_cycles"], trm["H_layers"], trm["L_layers"], trm["mlp_t"], trm["puzzle_emb_len"],
            trm["no_ACT_continue"]) == (3, 6, 0, 2, False, 16, True)


def test_urm_defaults_optimizer_and_loop_deltas():
    config = compose_config(["arch=urm"])
    assert (config.optimizer, config.loop_deltas, config.urm_train_loop) == ("adam_atan2", [], False)
    assert compose_config(["+experiment=urm_sudoku_extreme"]).urm_train_loop is True
    arch = config.arch.model_dump()
    assert {k: arch[k] for k in ("loops", "num_layers", "H_cycles", "L_cycles", "hidden_size", "num_heads", "expansion",
                                 "puzzle_emb_ndim", "pos_encodings", "halt_exploration_prob")} == dict(
        loops=16, num_layers=8, H_cycles=4, L_cycles=3, hidden_size=512, num_heads=8, expansion=4, puzzle_emb_ndim=512,
        pos_encodings="rope", halt_exploration_prob=0.1)
    config = compose_config(["arch=urm", "optimizer=muon", "loop_deltas=[0,8,-15,8]"])
    assert config.optimizer == "muon"
    assert loop_deltas(config, 16) == [-15, 8]
    with pytest.raises(ConfigError, match=r"loop_deltas=\[0, 8, -15, 8\]: the model runs 15 segments .* \[-15\] would leave fewer than one"):
        loop_deltas(config, 15)
    assert with_loop_delta({"all": {"exact_accuracy": 0.5}, "ARC/pass@1": 0.25}, 8) == \
        {"all@loops+8": {"exact_accuracy": 0.5}, "ARC@loops+8/pass@1": 0.25}
    assert list(with_loop_delta({"all": {}}, -2)) == ["all@loops-2"]


def test_lr_schedule_warmup_then_cosine_to_min_ratio():
    f = lambda s: cosine_schedule_with_warmup_lr_lambda(s, base_lr=1.0, num_warmup_steps=10, num_training_steps=110, min_ratio=0.2)  # noqa: E731
    assert f(0) == 0 and f(5) == pytest.approx(0.5) and f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(110) == pytest.approx(0.2)


@pytest.mark.parametrize("overrides, message", [
    (["epochs=10", "eval_interval=3"], "eval_interval (3) must be a positive divisor of epochs (10)"),
    (["data_path=a", "data_paths=[b]"], "data_path=a and data_paths=['b'] disagree"),
    (["global_batch_size=0"], "global_batch_size must be positive"),
    (["optimizer=adamw"], "optimizer: Input should be 'adam_atan2' or 'muon'"),
])
def test_bad_configs_are_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        compose_config(overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def _tiny(data, *extra):
    return [f"data_path={data}", "epochs=2", "eval_interval=1", "global_batch_size=8", "evaluators=[]", "lr_warmup_steps=1",
            *TINY_HRM, *extra]


@pytest.mark.slow
def test_checkpoint_folder_contents(sudoku4, tmp_path):
    ck = tmp_path / "ck"
    proc = pretrain(*_tiny(sudoku4, f"checkpoint_path={ck}", "+run_name=t", "eval_save_outputs=[inputs,preds]"), cwd=tmp_path)
    files = set(os.listdir(ck))
    # One puzzle per group and pass: 48 groups x 2 epochs / 8 = 12 steps; a checkpoint per evaluation (every epoch)
    assert {"all_config.yaml", "hrm_act_v1.py", "losses.py", "step_6", "step_12", "step_12_all_preds.0"} <= files
    weights = load_weights(ck / "step_12")
    assert not any(k.startswith("_orig_mod.") for k in weights) and "model.inner.puzzle_emb.weights" in weights
    preds = torch.load(ck / "step_12_all_preds.0", weights_only=True)
    assert set(preds) == {"inputs", "preds"} and preds["inputs"].shape == (16, 16)
    saved = yaml.safe_load((ck / "all_config.yaml").read_text())
    assert saved["run_name"] == "t" and saved["data_paths"] == [str(sudoku4)] and saved["arch"]["hidden_size"] == 32
    assert "Sudoku-4x4 ACT-torch" == saved["project_name"]
    assert "ARC evaluator" not in proc.stdout


@pytest.mark.slow
def test_default_names_and_checkpoint_path(sudoku4, tmp_path):
    pretrain(*_tiny(sudoku4, "epochs=1", "eval_interval=1"), cwd=tmp_path)
    (project,) = os.listdir(tmp_path / "checkpoints")
    (run_name,) = os.listdir(tmp_path / "checkpoints" / project)
    assert project == "Sudoku-4x4 ACT-torch"
    assert run_name.startswith("HierarchicalReasoningModel_ACTV1 ") and len(run_name.split(" ")[1].split("-")) >= 2


@pytest.mark.slow
def test_arc_evaluator_switches_itself_off_on_sudoku(sudoku4, tmp_path):
    proc = pretrain(*[o for o in _tiny(sudoku4, "epochs=1", "eval_interval=1", f"checkpoint_path={tmp_path / 'c'}") if o != "evaluators=[]"])
    assert proc.stdout.count("evaluator disabled") == 1


@pytest.mark.slow
def test_trm_with_mlp_t_and_ema_runs(sudoku4, tmp_path):
    pretrain("arch=trm", f"data_paths=[{sudoku4}]", "epochs=1", "eval_interval=1", "global_batch_size=8", "evaluators=[]",
             *TINY_TRM, "arch.mlp_t=True", "arch.pos_encodings=none", "ema=True", f"checkpoint_path={tmp_path / 'c'}")
    assert (tmp_path / "c" / "step_6").exists()


@pytest.mark.slow
def test_load_checkpoint_resets_puzzle_embedding_of_other_shape(sudoku4, tmp_path):
    ck = tmp_path / "c"
    pretrain(*_tiny(sudoku4, "epochs=1", "eval_interval=1", f"checkpoint_path={ck}", "arch.puzzle_emb_ndim=32"))
    state = load_weights(ck / "step_6")
    # A table of another shape: every row of the new table becomes the mean of the old rows.
    state["model.inner.puzzle_emb.weights"] = torch.randn(5, 32)
    torch.save(state, tmp_path / "other")
    ck2 = tmp_path / "c2"
    proc = pretrain(*_tiny(sudoku4, "epochs=1", "eval_interval=1", f"checkpoint_path={ck2}", f"load_checkpoint={tmp_path / 'other'}",
                           "freeze_weights=True", "puzzle_emb_lr=0"))
    assert "Resetting puzzle embedding" in proc.stdout
    after = load_weights(ck2 / "step_6")
    expected = state["model.inner.puzzle_emb.weights"].mean(0, keepdim=True).expand(1, 32)
    torch.testing.assert_close(after["model.inner.puzzle_emb.weights"], expected)
    # freeze_weights: every other weight is exactly the loaded one
    for k, v in state.items():
        if k != "model.inner.puzzle_emb.weights":
            assert torch.equal(after[k], v), k


@pytest.mark.slow
def test_nonfinite_loss_stops_and_keeps_last_checkpoint(sudoku4, tmp_path):
    ck = tmp_path / "c"
    # SignSGD with this lr moves the puzzle embedding to +-1e38 after step 1: step 2's loss is not finite.
    proc = pretrain(*_tiny(sudoku4, f"checkpoint_path={ck}", "puzzle_emb_lr=1e38", "checkpoint_interval_steps=1"), check=False)
    assert proc.returncode == 2
    assert "error: training loss became non-finite at step 2" in proc.stderr
    assert "last checkpoint (step 1) is intact" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(f for f in os.listdir(ck) if "train_state" in f) == ["step_1.train_state.pt", "step_1.train_state.rank0.pt"]


@pytest.mark.slow
@pytest.mark.parametrize("overrides, message", [
    (["data_path=/nonexistent/folder"], "/nonexistent/folder/train/dataset.json: missing"),
    (["arch.name=hrm.hrm_act_v1@NoSuchModel"], "arch: model identifier 'hrm.hrm_act_v1@NoSuchModel'"),
    (["arch.num_heads=3"], "num_heads (3) must divide hidden_size (32)"),
    (["epochs=3", "eval_interval=2"], "eval_interval (2) must be a positive divisor of epochs (3)"),
    (["data_paths=[/elsewhere]"], "disagree"),
    (["load_checkpoint=/nonexistent/step_1"], "load_checkpoint=/nonexistent/step_1: no such file"),
    (["arch.hiden_size=64"], "arch.hiden_size: unknown key for hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1; did you mean hidden_size?"),
])
def test_cli_bad_input_is_one_line(sudoku4, tmp_path, overrides, message):
    proc = pretrain(*_tiny(sudoku4, f"checkpoint_path={tmp_path / 'c'}"), *overrides, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.slow
def test_unknown_arch_group_names_it(sudoku4):
    proc = pretrain(*_tiny(sudoku4), "arch=nope", check=False)
    assert proc.returncode != 0 and "arch/nope" in proc.stderr


@pytest.mark.slow
def test_global_batch_not_divisible_by_processes(sudoku4, tmp_path):
    proc = torchrun("--nproc-per-node", "3", str(REPO / "pretrain.py"), *_tiny(sudoku4, f"checkpoint_path={tmp_path / 'c'}"), check=False)
    assert proc.returncode != 0
    assert "global_batch_size (8) is not divisible by the number of processes (3)" in proc.stderr


@pytest.mark.slow
def test_bad_token_found_in_the_loader_worker_is_one_line(sudoku4, tmp_path):
    import shutil

    import numpy as np
    data = tmp_path / "bad"
    shutil.copytree(sudoku4, data)
    inputs = np.load(data / "train" / "all__inputs.npy")
    inputs[3, 5] = 99
    np.save(data / "train" / "all__inputs.npy", inputs)
    proc = pretrain(*_tiny(data, f"checkpoint_path={tmp_path / 'c'}"), check=False)
    assert proc.returncode == 2
    assert f"error: {data}/train/all__inputs.npy: tokens must lie in [0, vocab_size=6); got 1 .. 99" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- files that are not what they claim; in-process: they fail before any training ----

def _trained_raw(trained_hrm, tmp_path, **changes):
    ck, _ = trained_hrm
    raw = yaml.safe_load((ck / "all_config.yaml").read_text())
    raw.update(checkpoint_path=str(tmp_path / "out"), **changes)
    return raw


def test_malicious_train_state_on_resume_runs_nothing(trained_hrm, tmp_path):
    from pretrain import launch
    ck, _ = trained_hrm
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "all_config.yaml").write_text((ck / "all_config.yaml").read_text())
    marker = tmp_path / "pwned"
    malicious_checkpoint(folder / "step_3.train_state.pt", marker, like_train_state=True)
    malicious_checkpoint(folder / "step_3.train_state.rank0.pt", marker)
    with pytest.raises(ConfigError) as e:
        launch(_trained_raw(trained_hrm, tmp_path, resume=str(folder)))
    assert str(e.value).startswith(f"resume={folder}/step_3.train_state.pt: refused to load") and "\n" not in str(e.value)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_malicious_load_checkpoint_and_one_of_another_size(trained_hrm, tmp_path):
    from pretrain import launch
    from utils.safe_io import CheckpointError
    ck, _ = trained_hrm
    marker = tmp_path / "pwned"
    with pytest.raises(CheckpointError, match=f"^load_checkpoint={tmp_path}/bad: refused to load"):
        launch(_trained_raw(trained_hrm, tmp_path, load_checkpoint=str(malicious_checkpoint(tmp_path / "bad", marker))))
    assert not marker.exists()
    raw = _trained_raw(trained_hrm, tmp_path, load_checkpoint=str(ck / "step_12"))
    raw["arch"].update(hidden_size=64, puzzle_emb_ndim=64)
    with pytest.raises(ConfigError) as e:
        launch(raw)
    assert str(e.value).startswith(f"load_checkpoint={ck}/step_12 does not fit the model: ") and "shape mismatch" in str(e.value)


@pytest.mark.slow  # mounts a tmpfs
def test_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(trained_hrm, small_tmpfs):
    import shutil

    from pretrain import launch
    from utils.safe_io import CheckpointError
    ck, _ = trained_hrm
    kept = ["all_config.yaml", "step_6", "step_6.train_state.pt", "step_6.train_state.rank0.pt"]
    for name in kept:
        shutil.copy(ck / name, small_tmpfs / name)
    free = shutil.disk_usage(small_tmpfs).free
    (small_tmpfs / "filler").write_bytes(b"\0" * (free - 160 * 1024))  # room for the sources, not for step_12
    raw = yaml.safe_load((ck / "all_config.yaml").read_text())
    raw.update(checkpoint_path=str(small_tmpfs), resume=f"{small_tmpfs}/step_6")
    with pytest.raises(CheckpointError) as e:
        launch(raw)
    assert str(e.value) == f"no space left on device (needed about 1 MB in {small_tmpfs})"
    for name in kept[1:]:  # the checkpoint to resume from, byte for byte (all_config.yaml is rewritten)
        assert (small_tmpfs / name).read_bytes() == (ck / name).read_bytes(), name
    assert not [n for n in os.listdir(small_tmpfs) if n.endswith(".tmp")]
