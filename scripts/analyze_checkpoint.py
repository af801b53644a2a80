"""The analyses papers report about a checkpoint, in one command: a report.md with PNG figures.

    python scripts/analyze_checkpoint.py checkpoint=checkpoints/<project>/<run>/step_N out=analysis/
    python scripts/analyze_checkpoint.py checkpoint=... out=... max_examples=2000 halt_max_steps="[1,2,4,8,16,32]"
    python scripts/analyze_checkpoint.py outputs=checkpoints/<project>/<run>/step_N_all_preds.0 out=analysis/
    python scripts/analyze_checkpoint.py checkpoint=hf://<owner>/<name> data_path=data/<its dataset> out=analysis/

With ``outputs=`` it reads outputs a run saved (``eval_save_outputs``, even ``[preds]`` alone)
instead of a checkpoint: their rows are joined with the run's test split (named by the
``all_config.yaml`` beside them) and the report holds what needs no model: test exact accuracy,
memorisation against the train split, the task's breakdown, and halting when it was saved.
``checkpoint`` may be an ``hf://owner/name[@revision][/file]`` URI (fetched into huggingface_hub's
cache); ``data_path`` / ``data_paths`` give its dataset when it is not at the path the run recorded.

It loads the checkpoint once (as ``evaluate.py`` does) and runs the evaluations it needs, each
saving its outputs under ``<out>/evals/<name>/`` (an evaluation whose folder already holds the
outputs of the same settings is read instead of rerun, unless ``reuse=false``):

- ``test``: the test split with a trace of every segment (also written as ``.npy`` for
  ``puzzle_visualizer.html``); ``train``: the first ``train_max_examples`` train examples;
- ``blank`` / ``random``: the test split with the puzzle identifiers hidden (puzzle_id_ablation);
- ``halt_<K>``: the test split with ``halt_max_steps=K`` for the test-time compute curve;
- ``samples_<N>``: the test split with ``N`` samples per example (``samples=``, default 16;
  ``sampling=augment|noise|both``, ``noise_std=``, ``sampling_seed=``; 1 skips it) for the
  test-time scaling curve: exact accuracy against the number of samples (1, 2, 4, 8, 16, N) for
  the majority vote and for the most confident sample (``inference/sampling.py``).

The report covers train vs test exact accuracy and memorisation (test predictions that are
training answers), halting (segments used under the training-time halting rule, accuracy per
segment count, accuracy after every segment, a reliability diagram of the halt confidence
of the model's halting rule, sigmoid(q_halt - q_continue) for HRM or sigmoid(q_halt) with TRM's
``no_ACT_continue``, against exact correctness with its expected calibration error), test-time compute,
the identifier ablation, and a breakdown the dataset's task allows (Sudoku: blanks; maze: path
length; domino: table length; ARC: pass@1 / pass@2 per task by voting, as ``evaluators/arc.py``).
Runs in one process, on the GPU when there is one. Numbers are exact accuracies (every labelled
cell right) over the evaluated examples; ``results.json`` holds all of them.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np
import pydantic

from inference import analysis as A
from inference.sampling import check_sampling_values
from inference.segments import check_halt_max_steps
from utils.cli import run_config_cli
from utils.config import ConfigError, normalize_data_paths
from utils.hub import is_hub_uri
from utils.outputs import load_outputs, output_files
from utils.paths import check_output_folder, make_folder, remove_if_empty
from utils.progress import progress_bar
from utils.safe_io import atomic_write, atomic_write_text

TEST_OUTPUTS = ["inputs", "labels", "puzzle_identifiers", "preds", "q_halt_logits", "halt_confidence", "steps", "trace",
                "trace_q_halt_logits", "trace_halt_confidence"]
SMALL_OUTPUTS = ["labels", "preds"]
TRACE_LIMIT_BYTES = 1 << 30  # the trace is held in memory while evaluating


class AnalyzeConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    checkpoint: Optional[str] = None
    outputs: Optional[str] = None             # instead of checkpoint: a run's saved step_N_all_preds.<rank>
    out: str
    max_examples: Optional[int] = None        # first N test examples (default: all)
    train_max_examples: Optional[int] = None  # first N train examples (default: as many as test examples)
    halt_max_steps: Optional[List[int]] = None  # default: 1, 2, 4, ... up to 2x the trained value, and the trained value
    bins: int = 10
    ablation_seed: int = 0
    reuse: bool = True
    samples: int = 16
    sampling: str = "augment"
    noise_std: float = 0.5
    sampling_seed: int = 0
    data_path: Optional[str] = None        # the run's dataset, when not at its recorded path
    data_paths: Optional[List[str]] = None

    @pydantic.model_validator(mode="after")
    def _check(self):
        if (self.checkpoint is None) == (self.outputs is None):
            raise ValueError("give checkpoint=<run>/step_N (evaluate it) or outputs=<run>/step_N_all_preds.0 (read saved outputs), one of them")
        for name in ("max_examples", "train_max_examples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number of examples, got {getattr(self, name)}")
        if self.halt_max_steps is not None and not self.halt_max_steps:
            raise ValueError("halt_max_steps: empty list; give at least one value")
        for v in self.halt_max_steps or []:
            check_halt_max_steps(v)
        check_sampling_values(self.samples, self.noise_std)  # before any work, as evaluate.py checks them
        if self.bins < 1:
            raise ValueError(f"bins must be >= 1, got {self.bins}")
        return self


def default_halt_values(trained: int) -> List[int]:
    values, v = [], 1
    while v <= 2 * trained:
        values.append(v)
        v *= 2
    return sorted(set(values) | {trained})


# ---------------------------------------------------------------------------------------------
# Evaluations


def run_evaluations(cfg: AnalyzeConfig, ev, trained: int) -> Dict[str, Dict[str, Any]]:
    """Run (or reuse) every evaluation; returns ``{name: {"settings", "seconds", "folder"}}``."""
    test_count = ev.loader("test", cfg.max_examples)[0].dataset.num_examples
    train_cap = cfg.train_max_examples or test_count
    test_outputs = TEST_OUTPUTS
    trace_bytes = test_count * trained * ev.metadata.seq_len * 4
    if trace_bytes > TRACE_LIMIT_BYTES:
        test_outputs = [k for k in TEST_OUTPUTS if not k.startswith("trace")]
        print(f"note: no per-segment trace ({test_count} test examples would need {trace_bytes / 2 ** 30:.1f} GiB); "
              "give max_examples= for one")
    plan = [("test", dict(split="test", max_examples=cfg.max_examples, save_outputs=test_outputs, save_npy=True)),
            ("train", dict(split="train", max_examples=train_cap, save_outputs=SMALL_OUTPUTS + ["q_halt_logits"])),
            ("blank", dict(split="test", max_examples=cfg.max_examples, puzzle_id_ablation="blank", save_outputs=SMALL_OUTPUTS)),
            ("random", dict(split="test", max_examples=cfg.max_examples, puzzle_id_ablation="random",
                            ablation_seed=cfg.ablation_seed, save_outputs=SMALL_OUTPUTS))]
    for v in cfg.halt_max_steps or default_halt_values(trained):
        if v != trained:
            plan.append((f"halt_{v}", dict(split="test", max_examples=cfg.max_examples, halt_max_steps=v, save_outputs=SMALL_OUTPUTS)))

    scaling = scaling_config(cfg, ev)
    if scaling is not None:
        plan.append((f"samples_{cfg.samples}", dict(split="test", max_examples=cfg.max_examples, save_outputs=SMALL_OUTPUTS,
                                                    sampling=scaling)))

    done = {}
    bar = progress_bar(plan, desc="analyses", dynamic_ncols=True)
    for name, kwargs in bar:
        bar.set_postfix_str(name)
        folder = os.path.join(cfg.out, "evals", name)
        settings = dict(kwargs, checkpoint=checkpoint_name(cfg.checkpoint), halt_max_steps=kwargs.get("halt_max_steps", trained))
        settings.pop("save_npy", None)
        sampling = settings.pop("sampling", None)
        if sampling is not None:
            settings["sampling"] = sampling.model_dump()
        record = os.path.join(folder, "evaluation.json")
        if cfg.reuse and os.path.isfile(record) and output_files(folder, ev.opened.step):
            with open(record) as f:
                saved = json.load(f)
            if saved.get("settings") == settings:
                done[name] = dict(saved, folder=folder, reused=True)
                continue
        start = time.time()
        entry = {"settings": settings}
        metrics = ev.run(output_dir=folder, use_evaluators=False, **kwargs)  # ARC voting is done per task below
        if sampling is not None:
            entry["metrics"] = next(iter(metrics.values()))
        entry["seconds"] = time.time() - start
        atomic_write_text(record, json.dumps(entry, indent=1))
        done[name] = dict(entry, folder=folder, reused=False)
    return done


def scaling_config(cfg: AnalyzeConfig, ev):
    """The sampling of the test-time scaling curve, or None where it does not apply (samples=1,
    or a task without symmetries under sampling=augment)."""
    from inference.sampling import SamplingConfig, check_views, open_codec
    if cfg.samples <= 1:
        return None
    config = SamplingConfig(samples=cfg.samples, sampling=cfg.sampling, noise_std=cfg.noise_std, seed=cfg.sampling_seed)
    codec = open_codec(ev.opened)
    try:
        check_views(codec, config)
    except ValueError as e:
        print(f"note: no test-time scaling curve ({e})")
        return None
    return config


# ---------------------------------------------------------------------------------------------
# Numbers


def read_split_labels(data_paths: List[str], split: str) -> np.ndarray:
    """Every label row of ``split`` (all sets, all folders), ignored positions as -100."""
    rows = []
    for path in data_paths:
        with open(os.path.join(path, split, "dataset.json")) as f:
            meta = json.load(f)
        for s in meta["sets"]:
            labels = np.load(os.path.join(path, split, f"{s}__labels.npy"), mmap_mode="r").astype(np.int64)
            if meta.get("ignore_label_id") is not None:
                labels[labels == meta["ignore_label_id"]] = A.IGNORE_LABEL_ID
            rows.append(labels)
    return np.concatenate(rows) if rows else np.zeros((0, 0), np.int64)


def compute_results(cfg: AnalyzeConfig, ev, evals: Dict[str, Dict[str, Any]], trained: int) -> Dict[str, Any]:
    step = ev.opened.step
    outs = {name: load_outputs(e["folder"], step) for name, e in evals.items()}
    acc = {name: float(A.exact_correct(o["preds"], o["labels"]).mean()) if len(o["labels"]) else float("nan")
           for name, o in outs.items()}
    test = outs["test"]
    correct = A.exact_correct(test["preds"], test["labels"])
    res: Dict[str, Any] = {"checkpoint": checkpoint_name(cfg.checkpoint), "step": step, "trained_halt_max_steps": trained,
                           "examples": {"test": int(len(correct)), "train": int(len(outs["train"]["labels"]))},
                           "exact_accuracy": {"test": acc["test"], "train": acc["train"]}}

    data_paths = ev.data_paths
    test_paths = ev.test_paths
    res["memorisation"] = A.memorisation(test["preds"], test["labels"], read_split_labels(data_paths, "train"))

    # The confidence of the rule the model halts by (outputs saved before it was recorded: sigmoid(q_halt)).
    conf = test["halt_confidence"].astype(np.float64) if "halt_confidence" in test else A.sigmoid(test["q_halt_logits"])
    rel = A.reliability(conf, correct, bins=cfg.bins)
    res["reliability"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in rel.items()}
    res["reliability"]["mean_confidence"] = float(conf.mean()) if len(conf) else float("nan")
    steps = test["steps"]
    res["halting"] = {"mean_steps": float(steps.mean()) if len(steps) else float("nan"),
                      "histogram": {int(k): int(n) for k, n in zip(*np.unique(steps, return_counts=True))},
                      "accuracy_by_steps": [(int(k), n, a) for k, n, a in A.accuracy_by(steps, correct)]}
    if "trace" in test:
        halting = A.halting_accuracy(test["trace"], test["labels"], steps)
        res["halting"]["accuracy_after_segment"] = halting["per_segment"].tolist()
        res["halting"]["accuracy_at_halt"] = halting["at_halt"]

    curve = {trained: acc["test"]}
    curve.update({int(n.split("_")[1]): a for n, a in acc.items() if n.startswith("halt_")})
    res["test_time_compute"] = {str(k): curve[k] for k in sorted(curve)}
    res["puzzle_id_ablation"] = {"real": acc["test"], "blank": acc["blank"], "random": acc["random"],
                                 "num_puzzle_identifiers": int(ev.metadata.num_puzzle_identifiers)}

    scaled = [e for name, e in evals.items() if name.startswith("samples_")]
    if scaled:
        m, settings = scaled[0]["metrics"], scaled[0]["settings"]["sampling"]
        sizes = sorted({int(k.rsplit("@", 1)[1]) for k in m if k.startswith("exact_accuracy_vote@")})
        res["test_time_scaling"] = {"sampling": settings["sampling"], "noise_std": settings["noise_std"], "seed": settings["seed"],
                                    "samples": sizes, "segments": m["segments"],
                                    "vote": [m[f"exact_accuracy_vote@{n}"] for n in sizes],
                                    "q_halt": [m[f"exact_accuracy_q_halt@{n}"] for n in sizes],
                                    f"pass@{sizes[-1]}": m[f"pass@{sizes[-1]}"], "agreement": m["agreement"]}

    with open(os.path.join(test_paths[0], "test", "dataset.json")) as f:
        meta = json.load(f)
    has_arc = os.path.isfile(os.path.join(test_paths[0], "test_puzzles.json"))
    task = A.detect_task(meta, test_paths[0], has_arc)
    res["task"] = task
    names = None
    if os.path.isfile(os.path.join(test_paths[0], "identifiers.json")):
        with open(os.path.join(test_paths[0], "identifiers.json")) as f:
            names = json.load(f)
    keys = A.breakdown_keys(task, test["inputs"], test["labels"], test["puzzle_identifiers"], names)
    if keys is not None:
        what, k = keys
        res["breakdown"] = {"by": what, "rows": [(str(key) if task == "arc" else int(key), n, a) for key, n, a in A.accuracy_by(k, correct)]}
    if task == "arc" and has_arc:
        evaluated = {str(k) for k, _, _ in res.get("breakdown", {}).get("rows", [])}
        scores = arc_task_scores(test_paths[0], ev.loader("test", None)[1], test)
        res["arc_tasks"] = {k: v for k, v in scores.items() if k in evaluated}
        res["arc_pass"] = {k: float(np.mean([v[k] for v in res["arc_tasks"].values()])) if res["arc_tasks"] else float("nan")
                           for k in ("pass@1", "pass@2")}
    return res


def arc_task_scores(data_path: str, metadata, test: Dict[str, np.ndarray]) -> Dict[str, Dict[str, float]]:
    """pass@1 / pass@2 per ARC task by voting over augmentations (evaluators/arc.py)."""
    import torch

    from evaluators.arc import ARC
    arc = ARC(data_path=data_path, eval_metadata=metadata, pass_Ks=(1, 2))
    for start in range(0, len(test["preds"]), 4096):
        sl = slice(start, start + 4096)
        arc.update_batch({k: torch.from_numpy(test[k][sl]) for k in ("inputs", "puzzle_identifiers")},
                         {k: torch.from_numpy(test[k][sl]) for k in ("preds", "q_halt_logits")})
    return arc.task_scores()


# ---------------------------------------------------------------------------------------------
# Figures and report


def figures(res: Dict[str, Any], out: str, made: Optional[List[str]] = None) -> List[str]:
    """The analysis's pictures into ``out``; returns their names (also appended to ``made`` as
    each is written, for a caller to remove after a failure)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = [] if made is None else made

    def save(fig, name):
        fig.tight_layout()
        try:  # under a temporary name, renamed when complete: a full disk leaves no truncated picture
            atomic_write(os.path.join(out, name), lambda tmp: fig.savefig(tmp, format="png", dpi=90))
        finally:
            plt.close(fig)
        made.append(name)

    fig, axes = plt.subplots(1, 2, figsize=(7.5, 3))
    hist = res["halting"]["histogram"]
    axes[0].bar(list(hist), list(hist.values()), color="#4c72b0")
    axes[0].set(xlabel="segments used (halting rule)", ylabel="test examples", title="Segments used")
    by = res["halting"]["accuracy_by_steps"]
    axes[1].bar([k for k, _, _ in by], [a for _, _, a in by], color="#55a868", label="examples halting after t segments")
    after = res["halting"].get("accuracy_after_segment", [])
    axes[1].plot(range(1, len(after) + 1), after, "k.-", label="all examples, prediction after segment t")
    axes[1].set(xlabel="segments t", ylabel="exact accuracy", ylim=(0, 1.02), title="Accuracy per segment count")
    axes[1].legend(fontsize=6, loc="lower right")
    last = max([res["trained_halt_max_steps"], len(after)] + list(hist))
    for ax in axes:
        ax.set_xticks(range(1, last + 1))
    save(fig, "halting.png")

    rel = res["reliability"]
    # Accuracy per bin above, the examples per bin below: a bin of 3 examples must not look like one of 900.
    fig, (ax, hist_ax) = plt.subplots(2, 1, figsize=(3.8, 4.8), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    edges = np.array(rel["edges"])
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    accs = np.array([np.nan if a is None else a for a in rel["accuracy"]], dtype=float)
    ax.bar(centers, np.nan_to_num(accs), width=width, edgecolor="k", color="#8172b2", alpha=.8, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    confs = np.array([np.nan if c is None else c for c in rel["confidence"]], dtype=float)
    ax.plot(confs, accs, "o", color="#333", ms=3, label="bin mean confidence")
    ax.set(ylabel="exact accuracy", xlim=(0, 1), ylim=(0, 1), title=f"Reliability (ECE {rel['ece']:.3f})")
    ax.legend(fontsize=7, loc="upper left")
    counts = np.array(rel["count"])
    bars = hist_ax.bar(centers, counts, width=width, edgecolor="k", color="#bbbbbb")
    hist_ax.bar_label(bars, labels=[str(int(n)) if n else "" for n in counts], fontsize=6)
    hist_ax.set(xlabel="halt confidence (the model's halting rule)", ylabel="examples", ylim=(0, max(1, counts.max(initial=0)) * 1.3))
    save(fig, "reliability.png")

    curve = res["test_time_compute"]
    fig, ax = plt.subplots(figsize=(4.2, 3))
    xs = [int(k) for k in curve]
    ax.plot(xs, list(curve.values()), "o-", color="#c44e52")
    ax.axvline(res["trained_halt_max_steps"], color="grey", ls=":", label=f"trained ({res['trained_halt_max_steps']})")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="halt_max_steps at test time", ylabel="exact accuracy", ylim=(0, 1.02), title="Test-time compute")
    ax.legend(fontsize=7)
    save(fig, "test_time_compute.png")

    if "test_time_scaling" in res:
        tts = res["test_time_scaling"]
        fig, ax = plt.subplots(figsize=(4.2, 3))
        ax.plot(tts["samples"], tts["vote"], "o-", color="#4c72b0", label="majority vote")
        ax.plot(tts["samples"], tts["q_halt"], "s--", color="#dd8452", label="most confident (q_halt)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(tts["samples"], [str(n) for n in tts["samples"]])
        ax.set(xlabel=f"samples per puzzle ({tts['sampling']})", ylabel="exact accuracy", ylim=(0, 1.02), title="Test-time scaling")
        ax.legend(fontsize=7, loc="lower right")
        save(fig, "test_time_scaling.png")

    abl = res["puzzle_id_ablation"]
    fig, ax = plt.subplots(figsize=(5.6, 3))
    labels = ["train", "test", "test, blank id", "test, random id"]
    values = [res["exact_accuracy"]["train"], abl["real"], abl["blank"], abl["random"]]
    bars = ax.bar(labels, values, color=["#4c72b0", "#55a868", "#dd8452", "#c44e52"])
    ax.bar_label(bars, labels=[pct(v) for v in values], fontsize=8)
    ax.set(ylabel="exact accuracy", ylim=(0, 1.05), title="Train vs test; puzzle-identifier ablation")
    ax.tick_params(axis="x", labelsize=8)
    save(fig, "accuracy.png")

    if "breakdown" in res and res["task"] != "arc":
        rows = res["breakdown"]["rows"]
        fig, ax = plt.subplots(figsize=(4.8, 3))
        ax.bar([str(k) for k, _, _ in rows], [a for _, _, a in rows], color="#64b5cd")
        ax.set(xlabel=res["breakdown"]["by"], ylabel="exact accuracy", ylim=(0, 1.02), title="Accuracy by difficulty")
        ax.tick_params(axis="x", labelsize=7)
        save(fig, "breakdown.png")
    return made


def pct(x: Optional[float]) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.1f}%"


def report_markdown(res: Dict[str, Any], made: List[str], evals: Dict[str, Dict[str, Any]]) -> str:
    mem, rel, halt, abl = res["memorisation"], res["reliability"], res["halting"], res["puzzle_id_ablation"]
    lines = [f"# Analysis of `{res['checkpoint']}`", "",
             f"Step {res['step']}, trained with halt_max_steps={res['trained_halt_max_steps']}; task: {res['task']}. "
             f"{res['examples']['test']} test and {res['examples']['train']} train examples evaluated (exact accuracy: every labelled cell right).",
             "", "## Train vs test, memorisation", "",
             "| | value |", "|---|---|",
             f"| train exact accuracy | {pct(res['exact_accuracy']['train'])} |",
             f"| test exact accuracy | {pct(res['exact_accuracy']['test'])} |",
             f"| test answers (labels) that are train answers | {pct(mem['test_labels_in_train'])} |",
             f"| test predictions that are train answers (memorisation rate) | {pct(mem['preds_in_train'])} "
             f"(baseline {pct(mem.get('baseline'))}{', uninformative' if mem.get('uninformative') else ''}) |",
             f"| wrong test predictions that are train answers | {pct(mem['wrong_preds_in_train'])} of {mem['wrong']} |",
             "", "The baseline is the rate of a model that memorises nothing at this accuracy: the right test "
             "predictions whose answer is also a train answer. " + (
                 f"Here the train answers cover {pct(mem['test_labels_in_train'])} of the test answers, so a right answer is a "
                 "train answer anyway and the memorisation rate says nothing: look at the wrong predictions instead."
                 if mem.get("uninformative") else "A rate well above the baseline means wrong answers copied from training."),
             "", "## Puzzle-identifier ablation", "",
             "| identifiers the model sees | test exact accuracy |", "|---|---|",
             f"| real | {pct(abl['real'])} |", f"| blank | {pct(abl['blank'])} |", f"| random other | {pct(abl['random'])} |", "",
             f"The model's table holds {abl['num_puzzle_identifiers']} identifier(s)"
             + (" (only the blank one: this dataset gives every puzzle the blank identifier, so the ablation changes nothing)."
                if abl["num_puzzle_identifiers"] <= 1 else "."),
             "", "![accuracy](accuracy.png)" if "accuracy.png" in made else "",
             "", "## Halting", "",
             "Evaluation runs every example for halt_max_steps segments; *segments used* is where the training-time "
             "halting rule (halt signal of the Q head) would have stopped it.", "",
             f"Mean segments used: {halt['mean_steps']:.2f}. Exact accuracy if every example stops where it halts: "
             f"{pct(halt.get('accuracy_at_halt'))} (after all segments: {pct(res['exact_accuracy']['test'])}).", "",
             "| segments used | examples | exact accuracy |", "|---|---|---|",
             *[f"| {k} | {n} | {pct(a)} |" for k, n, a in halt["accuracy_by_steps"]], "",
             "Exact accuracy after each segment: " + (", ".join(f"{t + 1}: {pct(a)}" for t, a in enumerate(halt["accuracy_after_segment"]))
                                                      if "accuracy_after_segment" in halt else "not traced (give max_examples=)") + ".",
             "", "![halting](halting.png)", "",
             f"Reliability of the halt confidence (of the model's halting rule: sigmoid(q_halt - q_continue) for HRM, "
             f"sigmoid(q_halt) with TRM's no_ACT_continue) as a predictor of exact correctness: "
             f"**ECE {rel['ece']:.4f}** (mean confidence {pct(rel['mean_confidence'])}, accuracy {pct(res['exact_accuracy']['test'])}).", "",
             "| confidence bin | examples | mean confidence | exact accuracy |", "|---|---|---|---|"]
    for i, n in enumerate(rel["count"]):
        if n:
            lines.append(f"| {rel['edges'][i]:.1f}–{rel['edges'][i + 1]:.1f} | {n} | {pct(rel['confidence'][i])} | {pct(rel['accuracy'][i])} |")
    lines += ["", "![reliability](reliability.png)", "", "## Test-time compute", "",
              "| halt_max_steps | test exact accuracy |", "|---|---|",
              *[f"| {k}{' (trained)' if int(k) == res['trained_halt_max_steps'] else ''} | {pct(a)} |" for k, a in res["test_time_compute"].items()],
              "", "![test-time compute](test_time_compute.png)"]
    if "test_time_scaling" in res:
        tts = res["test_time_scaling"]
        n = tts["samples"][-1]
        lines += ["", "## Test-time scaling", "",
                  f"Samples per puzzle from sampling={tts['sampling']}" + (f" (noise_std={tts['noise_std']})" if tts["sampling"] != "augment" else "")
                  + f", seed {tts['seed']}; sample 1 is the puzzle itself. One answer per puzzle: the majority of the mapped-back "
                  f"answers (ties: summed halting confidence) or the single most confident sample. pass@{n} (some sample right): "
                  f"{pct(tts[f'pass@{n}'])}; mean agreement with the vote: {pct(tts['agreement'])}.", "",
                  "| samples | ACT segments per puzzle | exact accuracy, vote | exact accuracy, q_halt |", "|---|---|---|---|",
                  *[f"| {k} | {k * tts['segments']} | {pct(v)} | {pct(q)} |" for k, v, q in zip(tts["samples"], tts["vote"], tts["q_halt"])],
                  "", "![test-time scaling](test_time_scaling.png)"]
    if "breakdown" in res:
        rows = res["breakdown"]["rows"]
        lines += ["", f"## By {res['breakdown']['by']}", ""]
        if res["task"] == "arc":
            scores = res.get("arc_tasks", {})
            if "arc_pass" in res:
                lines += [f"Over the {len(scores)} tasks evaluated, by voting over augmentations: pass@1 {pct(res['arc_pass']['pass@1'])}, "
                          f"pass@2 {pct(res['arc_pass']['pass@2'])}.", ""]
            lines += ["| task | test examples (all augmentations) | exact accuracy | pass@1 | pass@2 |", "|---|---|---|---|---|"]
            lines += [f"| {k} | {n} | {pct(a)} | {pct(scores.get(k, {}).get('pass@1'))} | {pct(scores.get(k, {}).get('pass@2'))} |"
                      for k, n, a in rows]
        else:
            lines += [f"| {res['breakdown']['by']} | examples | exact accuracy |", "|---|---|---|",
                      *[f"| {k} | {n} | {pct(a)} |" for k, n, a in rows], "", "![breakdown](breakdown.png)"]
    lines += ["", "## Evaluations", "", "| name | settings | seconds |", "|---|---|---|"]
    for name, e in evals.items():
        s = {k: v for k, v in e["settings"].items() if k not in ("checkpoint", "save_outputs")}
        lines.append(f"| {name} | {', '.join(f'{k}={v}' for k, v in s.items())} | "
                     f"{'reused' if e.get('reused') else format(e['seconds'], '.1f')} |")
    return "\n".join(lines) + "\n"


def memorisation_line(mem: Dict[str, Any]) -> str:
    """The memorisation rate with its baseline, flagged when the train answers cover the test answers."""
    line = (f"memorisation: {pct(mem['preds_in_train'])} of test predictions are train answers "
            f"(baseline {pct(mem['baseline'])}: the right ones whose answer is a train answer); "
            f"{pct(mem['wrong_preds_in_train'])} of the {mem['wrong']} wrong ones are")
    if mem["uninformative"]:
        line += (f"; uninformative here: {pct(mem['test_labels_in_train'])} of test answers are train answers, "
                 "so only the wrong predictions tell")
    else:
        line += f"; test answers in train: {pct(mem['test_labels_in_train'])}"
    return line


def summary_lines(res: Dict[str, Any]) -> List[str]:
    mem, abl = res["memorisation"], res["puzzle_id_ablation"]
    curve = ", ".join(f"{k}: {pct(a)}" for k, a in res["test_time_compute"].items())
    return [f"exact accuracy: train {pct(res['exact_accuracy']['train'])}, test {pct(res['exact_accuracy']['test'])} "
            f"({res['examples']['test']} test examples)",
            memorisation_line(mem),
            f"halting: mean {res['halting']['mean_steps']:.2f} segments used, accuracy at halt {pct(res['halting'].get('accuracy_at_halt'))}, "
            f"ECE {res['reliability']['ece']:.4f}",
            f"test-time compute (halt_max_steps: accuracy): {curve}",
            f"identifier ablation: real {pct(abl['real'])}, blank {pct(abl['blank'])}, random {pct(abl['random'])}"] + (
            ["test-time scaling (samples: vote / q_halt): " + ", ".join(
                f"{k}: {pct(v)} / {pct(q)}" for k, v, q in zip(res["test_time_scaling"]["samples"], res["test_time_scaling"]["vote"],
                                                                res["test_time_scaling"]["q_halt"]))] if "test_time_scaling" in res else [])


def check_out_folder(out: str) -> None:
    """``out=`` checked before any work: a config error (one line) when nothing can be written there."""
    try:
        check_output_folder(out, "out")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def checkpoint_name(checkpoint: str) -> str:
    """The checkpoint as results name it: an absolute path, or the ``hf://`` URI as given."""
    return checkpoint if is_hub_uri(checkpoint) else os.path.abspath(checkpoint)


def analyze(cfg: AnalyzeConfig) -> Dict[str, Any]:
    """Run everything; returns the results (also written to ``<out>/results.json``)."""
    from inference.evaluation import load_evaluation
    from utils.distributed import cleanup, init_distributed

    start = time.time()
    check_out_folder(cfg.out)
    info = init_distributed()
    if info.world_size > 1:
        raise ConfigError("analyze_checkpoint.py runs in one process; start it with python, not torchrun")
    made_top, pictures = "", []
    try:
        ev = load_evaluation(cfg.checkpoint, info, data_paths=normalize_data_paths(cfg.data_path, cfg.data_paths) or None)
        made_top = make_folder(cfg.out)  # only once the checkpoint opened
        trained = ev.default_halt_max_steps
        evals = run_evaluations(cfg, ev, trained)
        res = compute_results(cfg, ev, evals, trained)
        made = figures(res, cfg.out, pictures)
        res["seconds"] = time.time() - start
        atomic_write_text(os.path.join(cfg.out, "results.json"), json.dumps(res, indent=1))
        atomic_write_text(os.path.join(cfg.out, "report.md"), report_markdown(res, made, evals))
    except BaseException:
        for name in pictures:  # a failed analysis leaves no report's pictures without the report
            with contextlib.suppress(OSError):
                os.remove(os.path.join(cfg.out, name))
        remove_if_empty(cfg.out, made_top)  # evaluations already written stay: a rerun reuses them
        raise
    finally:
        cleanup()
    print(f"\nAnalysis of {cfg.checkpoint} ({res['seconds']:.0f} s): {os.path.join(cfg.out, 'report.md')}")
    for line in summary_lines(res):
        print("  " + line)
    return res


# ---------------------------------------------------------------------------------------------
# Saved outputs of a run, without the model


def joined_outputs(path: str) -> Dict[str, Any]:
    """The outputs of ``path`` (``<run>/step_N_all_preds.<rank>``; every rank of that step is read)
    in test-split order, joined with the run's test split for the fields they lack. Returns
    ``{"outputs": {key: array}, "config": run config, "step": N}``."""
    import re

    import yaml

    from puzzle_dataset import test_pass_rows
    from utils.outputs import join_ranks, load_rank_files

    match = re.match(r"^step_(\d+)_all_preds\.\d+$", os.path.basename(path))
    if not match:
        raise ConfigError(f"outputs={path}: expected a step_N_all_preds.<rank> file that training or evaluate.py saved")
    folder, step = os.path.dirname(path) or ".", int(match.group(1))
    files = output_files(folder, step)
    if not os.path.isfile(path) or not files:
        raise ConfigError(f"outputs={path}: no such file")
    config_path = os.path.join(folder, "all_config.yaml")
    if not os.path.isfile(config_path):
        raise ConfigError(f"outputs={path}: no all_config.yaml beside it, so the run's test split is unknown; "
                          "read outputs in their run's folder")
    with open(config_path) as f:
        config = yaml.safe_load(f) or {}
    data_paths = config.get("data_paths_test") or config.get("data_paths") or [config.get("data_path")]
    batch = int(config.get("eval_global_batch_size") or config["global_batch_size"])
    parts = load_rank_files(files)
    rows = sum(len(next(iter(p.values()))) for p in parts if p)
    examples, positions = test_pass_rows(data_paths, batch, len(files))
    if rows < len(next(iter(examples.values()))):  # a shortened evaluation (max_examples): its first rows
        examples, positions = test_pass_rows(data_paths, batch, len(files), max_examples=rows)
    try:
        out = join_ranks(parts, positions, examples, names=files)
    except ValueError as e:
        raise ConfigError(f"outputs={path}: {e}") from None
    if "preds" not in out and "logits" in out:
        out["preds"] = out["logits"].argmax(-1)
    if "preds" not in out:
        raise ConfigError(f"outputs={path}: holds no preds or logits ({', '.join(sorted(parts[0]))}); save them with eval_save_outputs=[preds]")
    return {"outputs": out, "config": config, "step": step, "data_paths_test": data_paths}


def analyze_outputs(cfg: AnalyzeConfig) -> Dict[str, Any]:
    """The report of ``cfg.outputs`` (see the module docstring); written to ``cfg.out``."""
    start = time.time()
    check_out_folder(cfg.out)
    joined = joined_outputs(cfg.outputs)  # type: ignore[arg-type]
    test, config = joined["outputs"], joined["config"]
    correct = A.exact_correct(test["preds"], test["labels"])
    train_paths = config.get("data_paths") or [config.get("data_path")]
    res: Dict[str, Any] = {"outputs": os.path.abspath(cfg.outputs), "step": joined["step"],  # type: ignore[arg-type]
                           "examples": {"test": int(len(correct))},
                           "exact_accuracy": {"test": float(correct.mean()) if len(correct) else float("nan")},
                           "memorisation": A.memorisation(test["preds"], test["labels"], read_split_labels(train_paths, "train"))}
    test_path = joined["data_paths_test"][0]
    with open(os.path.join(test_path, "test", "dataset.json")) as f:
        meta = json.load(f)
    task = A.detect_task(meta, test_path, os.path.isfile(os.path.join(test_path, "test_puzzles.json")))
    res["task"] = task
    keys = A.breakdown_keys(task, test["inputs"], test["labels"], test["puzzle_identifiers"])
    if keys is not None:
        res["breakdown"] = {"by": keys[0], "rows": [(int(k), n, a) for k, n, a in A.accuracy_by(keys[1], correct)]}
    if "steps" in test:
        res["halting"] = {"mean_steps": float(test["steps"].mean()),
                          "accuracy_by_steps": [(int(k), n, a) for k, n, a in A.accuracy_by(test["steps"], correct)]}
    mem = res["memorisation"]
    lines = [f"# Saved outputs `{res['outputs']}`", "",
             f"Step {res['step']}; task: {task}. {res['examples']['test']} test examples (the run's test split, "
             f"{', '.join(joined['data_paths_test'])}), exact accuracy: every labelled cell right.", "",
             "| | value |", "|---|---|",
             f"| test exact accuracy | {pct(res['exact_accuracy']['test'])} |",
             f"| test answers (labels) that are train answers | {pct(mem['test_labels_in_train'])} |",
             f"| test predictions that are train answers (memorisation rate) | {pct(mem['preds_in_train'])} "
             f"(baseline {pct(mem['baseline'])}{', uninformative' if mem['uninformative'] else ''}) |",
             f"| wrong test predictions that are train answers | {pct(mem['wrong_preds_in_train'])} of {mem['wrong']} |"]
    if "breakdown" in res:
        lines += ["", f"| {res['breakdown']['by']} | examples | exact accuracy |", "|---|---|---|",
                  *[f"| {k} | {n} | {pct(a)} |" for k, n, a in res["breakdown"]["rows"]]]
    if "halting" in res:
        lines += ["", "| segments used | examples | exact accuracy |", "|---|---|---|",
                  *[f"| {k} | {n} | {pct(a)} |" for k, n, a in res["halting"]["accuracy_by_steps"]]]
    res["seconds"] = time.time() - start
    atomic_write_text(os.path.join(cfg.out, "results.json"), json.dumps(res, indent=1))  # makes out (nothing failed)
    atomic_write_text(os.path.join(cfg.out, "report.md"), "\n".join(lines) + "\n")
    print(f"\nSaved outputs {cfg.outputs}: {os.path.join(cfg.out, 'report.md')}")
    print(f"  test exact accuracy {pct(res['exact_accuracy']['test'])} ({res['examples']['test']} examples)")
    print("  " + memorisation_line(mem))
    return res


def main(argv=None) -> None:
    run_config_cli(AnalyzeConfig, lambda cfg: analyze(cfg) if cfg.checkpoint is not None else analyze_outputs(cfg), argv,
                   doc=__doc__)


if __name__ == "__main__":
    main()
