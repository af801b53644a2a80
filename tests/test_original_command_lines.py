"""Every training/evaluation command line of the original projects (their READMEs) runs to completion on CPU, as typed,
with only sizes shrunk: the same keys, tiny epochs/batch/model appended (later overrides win),
generated data in place of the downloads, and 2 processes where the line asks for 4 or 8."""
import glob
import json
import os
import sys

import pytest

from conftest import REFERENCE, REPO, TINY_HRM, TINY_TRM, build_sudoku, run, subprocess_env
from test_pretrain import ORIGINAL_PRETRAIN_LINES, split_command

ORIGINAL_EVALUATE_LINE = "OMP_NUM_THREADS=8 torchrun --nproc-per-node 8 evaluate.py checkpoint=checkpoints/<project>/<run>/step_N"
SHRINK = ["epochs=2", "eval_interval=1", "global_batch_size=8", "lr_warmup_steps=1"]


def write_tiny_kaggle_arc(prefix: str, concept_dir):
    """A few ConceptARC tasks as the 'training' and 'evaluation' subsets of a Kaggle-layout prefix."""
    with open(concept_dir / "arc-agi_concept_challenges.json") as f:
        challenges = json.load(f)
    with open(concept_dir / "arc-agi_concept_solutions.json") as f:
        solutions = json.load(f)
    names = sorted(challenges)[:5]
    for subset, picked in (("training", names[:3]), ("evaluation", names[3:])):
        with open(f"{prefix}_{subset}_challenges.json", "w") as f:
            json.dump({n: challenges[n] for n in picked}, f)
        with open(f"{prefix}_{subset}_solutions.json", "w") as f:
            json.dump({n: solutions[n] for n in picked}, f)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working folder whose data/ holds small stand-ins for the datasets those command lines name."""
    work = tmp_path_factory.mktemp("command-lines")
    data = work / "data"
    build_sudoku(data / "sudoku-extreme-1k-aug-1000", grid=9, n_train=24, n_test=8, num_aug=2)
    build_sudoku(data / "sudoku-6x6", grid=6, n_train=24, n_test=8, num_aug=2)
    concept = REFERENCE / "arc_kaggle"
    if concept.is_dir():
        (work / "kaggle").mkdir()
        write_tiny_kaggle_arc(str(work / "kaggle" / "arc-agi"), concept)
        run([sys.executable, "-m", "dataset.build_arc_dataset", "--input-file-prefix", str(work / "kaggle" / "arc-agi"),
             "--output-dir", str(data / "arc1concept-aug-1000"), "--subsets", "training", "evaluation",
             "--test-set-name", "evaluation", "--num-aug", "1"])
    return work


def shortened(line: str):
    env_vars, launcher, script, overrides = split_command(line)
    env = subprocess_env(**{k: "1" for k in env_vars})  # OMP_NUM_THREADS=8 -> 1 on this 2-core machine
    if launcher and launcher[0] == "torchrun":
        launcher = [sys.executable, "-m", "torch.distributed.run", *launcher[1:]]
        at = launcher.index("--nproc-per-node") + 1
        launcher[at] = "2"
        env["OMP_NUM_THREADS"] = "1"
    else:
        launcher = [sys.executable]
    return env, launcher, script, overrides


def run_pretrain_line(workdir, index: int):
    """Original training command line ``index``, shortened, run in ``workdir``."""
    env, launcher, script, overrides = shortened(ORIGINAL_PRETRAIN_LINES[index])
    tiny = TINY_TRM if "arch=trm" in overrides else TINY_HRM
    if "arch.puzzle_emb_ndim=0" in overrides:
        tiny = [t for t in tiny if "puzzle_emb" not in t]
    extra = [] if any(o.startswith("+run_name=") for o in overrides) else [f"+run_name=line{index}"]
    return run([*launcher, str(REPO / script), *overrides, *SHRINK, *tiny, *extra], cwd=workdir, env=env)


def line0_checkpoints(workdir):
    """The ``step_N`` weights the first training command line saved in ``workdir``."""
    found = sorted(glob.glob(str(workdir / "checkpoints" / "*ACT-torch" / "line0" / "step_*")))
    return [c for c in found if os.path.basename(c).split("_")[1].isdigit()]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(ORIGINAL_PRETRAIN_LINES)))
def test_original_pretrain_line_runs(workdir, index):
    line = ORIGINAL_PRETRAIN_LINES[index]
    if "arc1concept" in line and not (workdir / "data" / "arc1concept-aug-1000").is_dir():
        pytest.skip(f"ConceptARC fixture not found in {REFERENCE / 'arc_kaggle'}")
    proc = run_pretrain_line(workdir, index)

    saved = sorted(glob.glob(str(workdir / "checkpoints" / "**" / "step_*"), recursive=True))
    assert saved, proc.stdout[-2000:]
    if "arc1concept" in line:
        # the ARC evaluator ran: pass@K metrics were computed and submission.json written
        assert "ARC/pass@1" in proc.stdout
        assert glob.glob(str(workdir / "checkpoints" / "**" / "submission.json"), recursive=True)
    if 'eval_save_outputs="[preds]"' in line:
        assert os.path.exists(workdir / "checkpoints" / "y" / "step_6_all_preds.0")


@pytest.mark.slow
def test_original_evaluate_line_runs(workdir):
    checkpoints = line0_checkpoints(workdir)
    if not checkpoints:  # the first training line ran in another test process (pytest -n), or not yet
        run_pretrain_line(workdir, 0)
        checkpoints = line0_checkpoints(workdir)
    env, launcher, script, overrides = shortened(ORIGINAL_EVALUATE_LINE)
    overrides = [f"checkpoint={checkpoints[-1]}"]
    out = run([*launcher, str(REPO / script), *overrides], cwd=workdir, env=env).stdout
    assert '"exact_accuracy"' in out
    step = os.path.basename(checkpoints[-1])
    assert os.path.exists(f"{checkpoints[-1]}_all_preds.0") and os.path.exists(f"{checkpoints[-1]}_all_preds.1"), step
