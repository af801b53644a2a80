"""One ARC benchmark run on a laptop: build, train under a wall-clock budget, evaluate each test-time method.

    python scripts/arc_benchmark.py data=1D-ARC/dataset                          # HRM's protocol, recipe arc1d_hrm
    python scripts/arc_benchmark.py data=1D-ARC/dataset protocol=unseen adapt=none,embedding,full
    python scripts/arc_benchmark.py data=my-5x5-tasks arch=trm budget_s=600 samples=8
    python scripts/arc_benchmark.py data=1D-ARC/dataset recipe=arc1d_hrm lr=2e-3   # a change to measure

1. builds the dataset if missing (not timed): ``dataset/build_arc_dataset.py --dataset-dirs <data>
   --canvas <canvas> --protocol <protocol> --num-aug <num_aug> --seed <data_seed>`` into
   ``<data_root>/arc-<folder name>-<protocol>-<canvas>-aug<num_aug>-seed<data_seed>``;
2. trains the recipe (``config/experiment/<recipe>.yaml``; default ``arc1d_<arch>``, and
   ``arc1d_<arch>_unseen`` under the unseen protocol) for ``budget_s`` seconds of wall clock
   (default: the recipe's ``max_train_seconds``), from the pretrain.py process's start to its exit,
   with a cold compile cache;
3. evaluates the last checkpoint once per method of ``adapt`` (``none``, ``embedding``, ``full``:
   evaluate.py's test-time training), with ``samples=N`` views voted per test input when asked;
4. prints one line per method,
   ``arc: <pass@2>% pass@2, <pass@1>% pass@1 on <N> test outputs (protocol <p>, adapt <a>) after
   <train_s> s of training and <adapt_s> s of adaptation``,
   and writes them to ``arc_benchmark.json`` and ``arc_benchmark.md`` in the run folder.

Options (key=value): data=FOLDER (required: ARC task files, searched recursively), protocol=hrm|unseen
(default hrm), arch=hrm|trm|urm (default hrm) or recipe=NAME, budget_s=S, reserve_s=S (default 30:
the evaluation and save after the stop), adapt=none,embedding,full (default none), adapt_steps=N
(default 100), adapt_lr=, adapt_batch= (the run's own otherwise), samples=N (default 1), select=vote|q_halt,
seed=N (training seed, default 0), data_seed=N (the builder's seed: augmentations and, under the
unseen protocol, the held-out tasks; default 42), num_aug=N (default 8), canvas=fit|HxW|30x30 (default
fit), out=DIR (default checkpoints/arc_benchmark/<date>-<protocol>), data_root=DIR (default data).
Any other key=value is a pretrain.py override (e.g. lr=2e-3, arch.hidden_size=128), passed as given.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import sys
from typing import Any, Dict, List, Literal, Optional, Sequence

import pydantic

from utils.cli import parse_key_values
from utils.commands import REPO, final_metrics, last_step, run_command, run_in_new_folder
from utils.errors import UserError

ADAPT_METHODS = ("none", "embedding", "full")
# Set by the script: an override of them would not be this benchmark's run.
OWN_PRETRAIN_KEYS = {"data_path": "data=", "data_paths": "data=", "checkpoint_path": "out=", "max_train_seconds": "budget_s=",
                     "resume": "a fresh run", "seed": "seed="}
EVALUATE_KEYS = ("adapt_steps", "adapt_lr", "adapt_batch")
COMPILE_CACHE = "compile_cache"


class BenchmarkOptions(pydantic.BaseModel):
    """The benchmark's own options; every other ``key=value`` goes to pretrain.py."""
    model_config = pydantic.ConfigDict(extra="forbid")

    data: str
    protocol: Literal["hrm", "unseen"] = "hrm"
    arch: Literal["hrm", "trm", "urm"] = "hrm"
    recipe: Optional[str] = None
    budget_s: Optional[float] = None
    reserve_s: float = 30.0
    adapt: List[Literal["none", "embedding", "full"]] = ["none"]
    adapt_steps: int = 100
    adapt_lr: Optional[float] = None
    adapt_batch: Optional[int] = None
    samples: int = 1
    select: Literal["vote", "q_halt"] = "vote"
    seed: int = 0
    data_seed: int = 42
    num_aug: int = 8
    canvas: str = "fit"
    out: Optional[str] = None
    data_root: str = os.path.join(REPO, "data")

    @pydantic.field_validator("adapt", mode="before")
    @classmethod
    def _methods(cls, v: Any) -> Any:
        if isinstance(v, str):  # adapt=none,full as typed
            v = [m.strip() for m in v.split(",") if m.strip()]
        if isinstance(v, list) and not v:
            raise ValueError("adapt: give at least one of none, embedding, full")
        return v

    @pydantic.model_validator(mode="after")
    def _check(self):
        if self.budget_s is not None and not self.budget_s > self.reserve_s >= 0:
            raise ValueError(f"budget_s ({self.budget_s:g}) must be larger than reserve_s ({self.reserve_s:g}), which must be >= 0")
        if self.num_aug < 0:
            raise ValueError(f"num_aug must be >= 0, got {self.num_aug}")
        if self.adapt_steps < 1:
            raise ValueError(f"adapt_steps must be at least 1, got {self.adapt_steps}")
        if self.samples < 1:
            raise ValueError(f"samples must be at least 1, got {self.samples}")
        if len(set(self.adapt)) != len(self.adapt):
            raise ValueError(f"adapt: {','.join(self.adapt)} names a method twice")
        return self

    @property
    def recipe_name(self) -> str:
        return self.recipe or f"arc1d_{self.arch}" + ("_unseen" if self.protocol == "unseen" else "")

    @property
    def data_dir(self) -> str:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", os.path.basename(os.path.normpath(self.data))) or "tasks"
        return os.path.join(self.data_root, f"arc-{name}-{self.protocol}-{self.canvas}-aug{self.num_aug}-seed{self.data_seed}")


def parse_options(argv: Sequence[str]) -> tuple:
    """``(BenchmarkOptions, pretrain.py overrides)`` from ``key=value`` arguments."""
    from training.config import check_pretrain_override
    from utils.functions import validation_error_line

    own, overrides = {}, []
    parsed = parse_key_values(argv, literal=("data", "out", "data_root", "recipe", "canvas"))
    for arg in argv:
        key = arg.partition("=")[0].strip().lstrip("+")
        if key in BenchmarkOptions.model_fields:
            own[key] = parsed[key]
            continue
        check_pretrain_override(key, OWN_PRETRAIN_KEYS, "benchmark", f"one of {', '.join(BenchmarkOptions.model_fields)}",
                                "lr=2e-3, arch.hidden_size=128")
        overrides.append(arg)
    if "data" not in own:
        raise UserError("data=<folder of ARC task files> is required (e.g. data=1D-ARC/dataset)")
    if "recipe" in own and "arch" in own:
        raise UserError("give arch= or recipe=, not both (a recipe names its model)")
    try:
        opts = BenchmarkOptions(**own)
    except pydantic.ValidationError as e:
        raise UserError(validation_error_line(e)) from None
    if not os.path.isdir(opts.data):
        raise UserError(f"data={opts.data}: no such folder (give a folder of ARC task files, e.g. a clone of 1D-ARC)")
    recipe = os.path.join(REPO, "config", "experiment", f"{opts.recipe_name}.yaml")
    if not os.path.isfile(recipe):
        known = sorted(f[:-5] for f in os.listdir(os.path.dirname(recipe)) if f.startswith("arc") and f.endswith(".yaml"))
        raise UserError(f"recipe={opts.recipe_name}: no config/experiment/{opts.recipe_name}.yaml (ARC recipes: {', '.join(known)})")
    if opts.budget_s is None:
        import yaml
        with open(recipe) as f:
            seconds = (yaml.safe_load(f) or {}).get("max_train_seconds")
        if not seconds:
            raise UserError(f"recipe={opts.recipe_name} sets no max_train_seconds; give budget_s=")
        opts.budget_s = float(seconds) + opts.reserve_s
    if opts.out is None:
        opts.out = os.path.join(REPO, "checkpoints", "arc_benchmark", f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{opts.protocol}")
    if os.path.exists(opts.out):
        raise UserError(f"out={opts.out} already exists; give a new folder (a benchmark run starts from nothing)")
    return opts, overrides


def check_data(opts: BenchmarkOptions) -> bool:
    """Whether the dataset is built already (False: build it)."""
    if not os.path.exists(opts.data_dir):
        return False
    if not all(os.path.isfile(os.path.join(opts.data_dir, s, "dataset.json")) for s in ("train", "test")):
        raise UserError(f"{opts.data_dir} exists but is not a built dataset; remove it to rebuild")
    return True


def test_outputs(data_dir: str) -> int:
    """How many test outputs the evaluation scores: the test pairs of the evaluated tasks."""
    with open(os.path.join(data_dir, "test_puzzles.json")) as f:
        puzzles = json.load(f)
    return sum(len(p["test"]) for p in puzzles.values())


def per_subset(data: str, submission_path: str) -> Dict[str, Dict[str, float]]:
    """pass@1 and pass@2 per folder of task files (1D-ARC: per category), from ``submission.json``
    and the task files' own test outputs; tasks the submission lacks (not evaluated) are left out."""
    with open(submission_path) as f:
        submission = json.load(f)
    counts: Dict[str, List[int]] = {}
    for root, _, files in os.walk(data):
        for name in sorted(files):
            stem = name[:-5] if name.endswith(".json") else None
            if stem not in submission:
                continue
            with open(os.path.join(root, name)) as f:
                tests = json.load(f).get("test", [])
            subset = os.path.relpath(root, data)
            tally = counts.setdefault(subset, [0, 0, 0])
            for attempts, pair in zip(submission[stem], tests):
                first = attempts.get("attempt_1") == pair["output"]
                tally[0] += 1
                tally[1] += first
                tally[2] += first or attempts.get("attempt_2") == pair["output"]
    return {k: {"test_outputs": n, "pass@1": a / n, "pass@2": b / n} for k, (n, a, b) in sorted(counts.items()) if n}


def result_line(r: Dict[str, Any]) -> str:
    return (f"arc: {100 * r['pass@2']:.1f}% pass@2, {100 * r['pass@1']:.1f}% pass@1 on {r['test_outputs']} test outputs "
            f"(protocol {r['protocol']}, adapt {r['adapt']}) after {r['train_s']:.0f} s of training and "
            f"{r['adapt_s']:.0f} s of adaptation")


def write_results(out: str, results: List[Dict[str, Any]]) -> None:
    """``arc_benchmark.json`` (every figure) and ``arc_benchmark.md`` (a table) in ``out``."""
    rows = [f"| {r['recipe']} | {r['protocol']} | {r['adapt']} | {r['samples']} | {100 * r['pass@1']:.1f}% | {100 * r['pass@2']:.1f}% "
            f"| {r['train_s'] / 60:.1f} | {r['adapt_s'] / 60:.1f} |" for r in results]
    lines = ["| recipe | protocol | adapt | samples | pass@1 | pass@2 | training (min) | adaptation (min) |",
             "|---|---|---|---|---|---|---|---|", *rows, ""]
    subsets = sorted({k for r in results for k in r.get("per_subset", {})})
    if len(subsets) > 1:  # folders of task files, e.g. 1D-ARC's 18 categories: pass@2 per method
        lines += ["| task folder | " + " | ".join(f"pass@2, adapt {r['adapt']}" for r in results) + " |",
                  "|---|" + "---|" * len(results)]
        lines += [f"| {k} | " + " | ".join(f"{100 * r['per_subset'][k]['pass@2']:.0f}%" if k in r.get("per_subset", {}) else "-"
                                           for r in results) + " |" for k in subsets]
        lines.append("")
    table = "\n".join(lines)
    for name, text in (("arc_benchmark.json", json.dumps(results, indent=1)), ("arc_benchmark.md", table)):
        path = os.path.join(out, name)
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)


def benchmark(opts: BenchmarkOptions, overrides: List[str], have_data: bool) -> List[Dict[str, Any]]:
    """Build if missing, train, evaluate each method; the result of each method."""
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "disabled")  # no account needed; unset to log
    if not have_data:
        run_command([sys.executable, "dataset/build_arc_dataset.py", "--dataset-dirs", opts.data, "--canvas", opts.canvas,
                     "--protocol", opts.protocol, "--num-aug", str(opts.num_aug), "--seed", str(opts.data_seed),
                     "--output-dir", opts.data_dir], env, "building the dataset", prefix="arc_benchmark")

    assert opts.budget_s is not None and opts.out is not None
    compile_cache = os.path.join(opts.out, COMPILE_CACHE)
    try:  # a cold compile cache, as on a fresh machine (the folder goes when training ends)
        train_s, _ = run_command(
            [sys.executable, "pretrain.py", f"+experiment={opts.recipe_name}", f"data_path={opts.data_dir}",
             f"checkpoint_path={opts.out}", f"max_train_seconds={opts.budget_s - opts.reserve_s:g}", f"seed={opts.seed}",
             "+run_name=arc_benchmark", *overrides],
            dict(env, TORCHINDUCTOR_CACHE_DIR=compile_cache), "pretrain.py", prefix="arc_benchmark")
    finally:
        shutil.rmtree(compile_cache, ignore_errors=True)
    checkpoint = os.path.join(opts.out, f"step_{last_step(opts.out)}")

    results = []
    for method in opts.adapt:
        folder = os.path.join(opts.out, f"eval-adapt-{method}" + (f"-samples{opts.samples}" if opts.samples > 1 else ""))
        cmd = [sys.executable, "evaluate.py", f"checkpoint={checkpoint}", f"output_dir={folder}", "save_outputs=[]"]
        if method != "none":
            cmd.append(f"adapt={method}")
            cmd += [f"{k}={getattr(opts, k)}" for k in EVALUATE_KEYS if getattr(opts, k) is not None]  # adapt_steps always
        if opts.samples > 1:
            cmd += [f"samples={opts.samples}", f"select={opts.select}"]
        eval_s, output = run_command(cmd, env, f"evaluate.py ({method})", capture=True, prefix="arc_benchmark")
        metrics = final_metrics(output)
        if "ARC/pass@2" not in metrics:
            sys.exit(f"arc_benchmark: evaluate.py reported no ARC pass@K (is {opts.data_dir} an ARC dataset?)")
        adaptation = metrics.get("adaptation") or {}
        submission = os.path.join(folder, f"evaluator_ARC_step_{last_step(opts.out)}", "submission.json")
        results.append({"recipe": opts.recipe_name, "protocol": opts.protocol, "adapt": method, "samples": opts.samples,
                        "pass@1": float(metrics["ARC/pass@1"]), "pass@2": float(metrics["ARC/pass@2"]),
                        "test_outputs": test_outputs(opts.data_dir), "train_s": train_s,
                        "adapt_s": float(adaptation.get("seconds", 0.0)), "eval_s": eval_s, "checkpoint": checkpoint,
                        "dataset": opts.data_dir, "seed": opts.seed, "overrides": overrides, "adaptation": adaptation,
                        "per_subset": per_subset(opts.data, submission) if os.path.isfile(submission) else {}})
        write_results(opts.out, results)
    return results


def main(argv: Optional[Sequence[str]] = None) -> None:
    def prepare(args: List[str]):
        opts, overrides = parse_options(args)
        return (opts, overrides, check_data(opts)), opts.out

    results = run_in_new_folder(argv, __doc__, prepare, lambda prepared: benchmark(*prepared), "a benchmark run starts from nothing")
    if results is not None:
        print()
        for r in results:
            print(result_line(r))


if __name__ == "__main__":
    main()
