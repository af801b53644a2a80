"""config/experiment: every named recipe composes to exactly the config of its source command line
(the HRM and TRM READMEs' command lines and URM's training scripts, copied here
independently of the yaml files), documents what it needs, and the CPU-sized
demo recipe trains."""
import copy
import functools
import os
import shlex
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO, pretrain, run
from scripts.experiments import HEADER_FIELDS, experiments

SUDOKU = "data_path=data/sudoku-extreme-1k-aug-1000 epochs=20000 eval_interval=2000"
TRM_SUDOKU = ('arch=trm data_paths="[data/sudoku-extreme-1k-aug-1000]" evaluators="[]" epochs=50000 eval_interval=5000 '
              'lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0')
# Recipe -> the overrides of its source command line (names and folders left out).
RECIPES = {
    "hrm_sudoku_extreme_1k": f"{SUDOKU} lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0",
    "hrm_sudoku_extreme_1k_1gpu": f"{SUDOKU} global_batch_size=384 lr=7e-5 puzzle_emb_lr=7e-5 weight_decay=1.0 puzzle_emb_weight_decay=1.0",
    "hrm_maze_hard": "data_path=data/maze-30x30-hard-1k epochs=20000 eval_interval=2000 lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0",
    "hrm_arc1": "",
    "hrm_arc2": "data_path=data/arc-2-aug-1000",
    "trm_sudoku_extreme_mlp": f"{TRM_SUDOKU} arch.mlp_t=True arch.pos_encodings=none arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=6 ema=True",
    "trm_sudoku_extreme_att": f"{TRM_SUDOKU} arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=6 ema=True",
    "trm_maze_hard": ('arch=trm data_paths="[data/maze-30x30-hard-1k]" evaluators="[]" epochs=50000 eval_interval=5000 lr=1e-4 '
                      'puzzle_emb_lr=1e-4 weight_decay=1.0 puzzle_emb_weight_decay=1.0 arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=4 ema=True'),
    "trm_arc1": 'arch=trm data_paths="[data/arc1concept-aug-1000]" arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=4 ema=True',
    "trm_arc2": 'arch=trm data_paths="[data/arc2concept-aug-1000]" arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=4 ema=True',
    "trm_sudoku_6x6_memorisation": ('arch=trm data_paths="[data/sudoku-6x6]" data_paths_test="[data/sudoku-6x6]" evaluators="[]" '
                                    'arch.puzzle_emb_ndim=0 arch.L_layers=2 arch.H_cycles=3 arch.L_cycles=6 global_batch_size=256 '
                                    'epochs=20000 eval_interval=2000 lr=1e-4 lr_warmup_steps=2000 lr_min_ratio=0.5 weight_decay=0.1 '
                                    'puzzle_emb_lr=0 eval_save_outputs="[preds]"'),
    "urm_arc1": ("arch=urm data_path=data/arc1concept-aug-1000 arch.loops=16 arch.H_cycles=2 arch.L_cycles=6 arch.num_layers=4 "
                 "epochs=200000 eval_interval=2000 puzzle_emb_lr=1e-2 weight_decay=0.1 ema=True"),
    # URM's scripts/URM_arcagi2.sh: the ARC-AGI-1 recipe with optimizer=muon (its use_muon=True), and puzzle_emb_lr=1e-4 as the script says.
    "urm_arc2": ("arch=urm data_path=data/arc2concept-aug-1000 arch.loops=16 arch.H_cycles=2 arch.L_cycles=6 arch.num_layers=4 "
                 "epochs=200000 eval_interval=2000 puzzle_emb_lr=1e-4 weight_decay=0.1 optimizer=muon ema=True"),
    "urm_sudoku_extreme": ("arch=urm data_path=data/sudoku-extreme-1k-aug-1000 arch.loops=16 arch.H_cycles=2 arch.L_cycles=6 "
                           "arch.num_layers=4 epochs=50000 eval_interval=2000 lr=1e-4 puzzle_emb_lr=1e-4 weight_decay=1.0 "
                           "puzzle_emb_weight_decay=1.0 global_batch_size=128 ema=True"),
    # This project's 1D-ARC recipes (scripts/arc_benchmark.py), the same training under both protocols.
    **{f"arc1d_{arch}{proto}": (f"{pre}data_path=data/arc-dataset-{p}-1x94-aug8-seed42 epochs=190 eval_interval=190 global_batch_size=64 "
                                "lr=2e-3 puzzle_emb_lr=1e-1 lr_warmup_steps=50 lr_min_ratio=0.1 weight_decay=0.1 optimizer=muon ema=True "
                                "ema_rate=0.995 eval_max_examples=512 eval_global_batch_size=512 checkpoint_every_eval=False log_interval=50 "
                                f"compile=regional max_train_seconds=1770 arch.hidden_size=64 arch.num_heads=2 {depth} +arch.forward_dtype=float32")
       for proto, p in (("", "hrm"), ("_unseen", "unseen"))
       for arch, pre, depth in (
           ("hrm", "", "arch.H_layers=2 arch.L_layers=2 arch.H_cycles=1 arch.L_cycles=2 arch.halt_max_steps=1 arch.no_ACT_continue=true"),
           ("trm", "arch=trm ", "arch.L_layers=2 arch.H_cycles=1 arch.L_cycles=2 arch.halt_max_steps=1 arch.no_ACT_continue=true"),
           ("urm", "arch=urm ", "arch.num_layers=2 arch.H_cycles=1 arch.L_cycles=2 arch.loops=1"))},
    "demo": ('data_path=demo_run/data/sudoku-4x4 evaluators="[]" epochs=8 eval_interval=4 global_batch_size=256 lr=2e-3 '
             'puzzle_emb_lr=1e-2 lr_warmup_steps=30 weight_decay=0.1 arch.hidden_size=64 arch.num_heads=2 arch.H_layers=2 '
             'arch.L_layers=2 arch.H_cycles=2 arch.L_cycles=2 arch.halt_max_steps=4 +arch.forward_dtype=float32'),
    "speedrun_sudoku6x6": ('data_path=data/sudoku-6x6-speedrun evaluators="[]" epochs=24 eval_interval=2 global_batch_size=64 lr=1.5e-3 '
                           'puzzle_emb_lr=1e-2 lr_warmup_steps=50 lr_min_ratio=0.1 weight_decay=0.1 optimizer=muon ema=True ema_rate=0.995 '
                           'eval_max_examples=200 eval_global_batch_size=200 checkpoint_every_eval=False log_interval=50 compile=True '
                           'max_train_seconds=585 arch.hidden_size=64 arch.num_heads=2 arch.H_layers=2 arch.L_layers=2 arch.H_cycles=2 '
                           'arch.L_cycles=2 arch.halt_max_steps=8 arch.no_ACT_continue=true +arch.forward_dtype=float32'),
    "speedrun_sudoku6x6_5min": ('data_path=data/sudoku-6x6-speedrun evaluators="[]" epochs=10 eval_interval=2 global_batch_size=64 lr=3e-3 '
                                'puzzle_emb_lr=1e-2 lr_warmup_steps=50 lr_min_ratio=0.1 weight_decay=0.1 '
                                '"depth_schedule=[{until: 0.15, halt_max_steps: 2}, {until: 0.35, halt_max_steps: 4}]" optimizer=muon '
                                'muon_momentum=0.9 ema=True ema_rate=0.995 '
                                'eval_max_examples=200 eval_global_batch_size=200 checkpoint_every_eval=False log_interval=50 compile=regional '
                                'max_train_seconds=292 arch.hidden_size=64 arch.num_heads=2 arch.H_layers=2 arch.L_layers=2 arch.H_cycles=2 '
                                'arch.L_cycles=2 arch.halt_max_steps=6 arch.no_ACT_continue=true +arch.forward_dtype=float32'),
}

# What a recipe sets beyond its source command line: the URM recipes follow URM's training loop
# (its LR timing and rank 0's data order), which running the URM code's command implies.
ADDED = {name: "urm_train_loop=True" for name in ("urm_arc1", "urm_arc2", "urm_sudoku_extreme")}


@functools.lru_cache(maxsize=None)
def _composed(overrides):
    with initialize_config_dir(config_dir=str(REPO / "config"), version_base=None):
        return OmegaConf.to_container(compose("cfg_pretrain", overrides=list(overrides)), resolve=True)


def composed(overrides):
    return copy.deepcopy(_composed(tuple(overrides)))


def source_overrides(line: str):
    """Shell words of a command line, as Hydra overrides (a key set on the command line that the
    arch yaml already has needs no '+'; an arch key it lacks gets one, as pretrain.py adds it)."""
    words = shlex.split(line)
    base = composed([w for w in words if w.startswith("arch=")])
    out = []
    for w in words:
        key = w.lstrip("+").split("=", 1)[0]
        section, _, leaf = key.partition(".")
        exists = (section == "arch" and leaf in base["arch"]) or key in base
        out.append(w.lstrip("+") if exists else ("+" + w.lstrip("+") if section == "arch" else w))
    return out


def test_every_recipe_has_an_experiment_and_back():
    assert set(experiments()) == set(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_experiment_equals_its_source_command_line_and_documents_it(name):
    """Composes key by key to the source's config; the header names source, dataset command,
    hardware and result, and records the same source command."""
    added = ADDED.get(name, "")
    expected = composed(source_overrides(f"{RECIPES[name]} {added}"))
    assert composed([f"+experiment={name}"]) == expected
    header = experiments()[name]
    assert set(HEADER_FIELDS) <= set(header), f"{name}: header lacks {set(HEADER_FIELDS) - set(header)}"
    # the recorded source command holds the same overrides as the source
    recorded = [w for w in shlex.split(header["command"]) if "=" in w and not w.startswith("-") and not w.isupper()
                and w.split("=")[0] != "OMP_NUM_THREADS"]
    assert composed(source_overrides(f"{shlex.join(recorded)} {added}")) == expected
    assert header["dataset"].startswith("python ") and "--output-dir" in header["dataset"]
    assert f"+experiment={name}" in header["launch"]


def test_experiment_stays_overridable():
    cfg = composed(["+experiment=trm_maze_hard", "lr=3e-4", "arch.L_cycles=2"])
    assert cfg["lr"] == 3e-4 and cfg["arch"]["L_cycles"] == 2 and cfg["arch"]["name"].startswith("recursive_reasoning.trm@")


@pytest.mark.slow
def test_list_and_show_experiments():
    out = run([sys.executable, str(REPO / "scripts" / "experiments.py")]).stdout
    assert all(name in out for name in RECIPES)
    out = run([sys.executable, str(REPO / "scripts" / "experiments.py"), "trm_arc2"]).stdout
    assert "--output-dir data/arc2concept-aug-1000" in out and "+experiment=trm_arc2" in out and "7.8%" in out
    proc = run([sys.executable, str(REPO / "scripts" / "experiments.py"), "trm_arc3"], check=False)
    assert proc.returncode == 2 and "no experiment 'trm_arc3'" in proc.stderr


@pytest.mark.slow
def test_demo_experiment_trains(sudoku4, tmp_path):
    """The CPU-sized recipe trains end to end (on the small fixture set, shortened)."""
    ck = tmp_path / "demo"
    pretrain("+experiment=demo", f"data_path={sudoku4}", "epochs=2", "eval_interval=1", "global_batch_size=16",
             "arch.hidden_size=32", f"checkpoint_path={ck}", "+run_name=d")
    saved = (ck / "all_config.yaml").read_text()
    assert "halt_max_steps: 4" in saved and "lr: 0.002" in saved and sorted(os.listdir(ck)).count("step_6") == 1


# Keys a documented line may add to a recipe's: how the run is named or split, not how it trains.
DOC_ADDITIONS = {"run_name", "checkpoint_path", "project_name", "gradient_accumulation_steps", "best_metric",
                 "eval_max_examples", "eval_full_at_end"}


def doc_command_lines():
    """``(file, line)`` of every ``pretrain.py`` command in a code block of the README and docs/*.md
    (backslash continuations joined, comments dropped)."""
    out = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        in_block, pending = False, ""
        for raw in path.read_text().splitlines():
            if raw.lstrip().startswith("```"):
                in_block, pending = not in_block, ""
                continue
            if not in_block:
                continue
            text = pending + raw.split(" #", 1)[0].strip()
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            if "pretrain.py" in text and "=" in text:
                out.append((path.name, text))
    return out


def overrides_of(line: str):
    """A command line's overrides as {key: value}; ``data_path=X`` and ``data_paths=[X]`` both become
    ``data`` (the originals' default when neither is given)."""
    words = shlex.split(line)
    words = words[next(i for i, w in enumerate(words) if w.endswith("pretrain.py")) + 1:]
    kv = dict(w.lstrip("+").split("=", 1) for w in words if "=" in w)
    if "data_paths" in kv:
        kv["data"] = kv.pop("data_paths").strip("[]")
    kv["data"] = kv.pop("data_path", kv.get("data", "data/arc-aug-1000"))
    kv.setdefault("arch", "hrm_v1")
    return kv


def test_documented_recipe_lines_are_the_originals():
    """A documented training line on a recipe's data set, not through ``+experiment=``, is presented
    as the original's: it must hold every override of a recipe of the same data and arch, with the same
    values, adding only naming, accumulation or evaluation-subset keys."""
    # The originals' recipes (this project's own, such as the demo's, are varied on purpose in the docs).
    recipes = {name: overrides_of(h["command"]) for name, h in experiments().items()
               if "pretrain.py" in h["command"] and not h["source"].startswith("this project")}
    recipe_data = {kv["data"] for kv in recipes.values()}
    checked = 0
    for file, line in doc_command_lines():
        if "+experiment=" in line or "<" in line:
            continue
        kv = overrides_of(line)
        if kv["data"] not in recipe_data:
            continue
        candidates = {n: r for n, r in recipes.items() if r["data"] == kv["data"] and r["arch"] == kv["arch"]}
        assert candidates, f"{file}: {line}\nno recipe trains {kv['arch']} on {kv['data']}"
        matches = [n for n, r in candidates.items()
                   if all(kv.get(k) == v for k, v in r.items()) and set(kv) - set(r) <= DOC_ADDITIONS]
        diffs = {n: sorted({k for k in set(r) | set(kv) if kv.get(k) != r.get(k)} - DOC_ADDITIONS) for n, r in candidates.items()}
        assert matches, f"{file}: {line}\nis not a recipe's line; keys that differ: {diffs}"
        checked += 1
    assert checked >= 8  # the README's "Training" and "Training on one GPU" lines
