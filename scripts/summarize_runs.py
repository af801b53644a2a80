"""One table of every training run under a folder, and their evaluation curves side by side.

    python scripts/summarize_runs.py checkpoints/my-sweep
    python scripts/summarize_runs.py checkpoints --metrics all/exact_accuracy all/accuracy --out reports/
    python scripts/summarize_runs.py checkpoints --metrics all     # every metric logged

A run is a folder holding ``all_config.yaml`` (what ``pretrain.py`` writes). For each run the table
gives its settings that differ from the defaults (``config/cfg_pretrain.yaml`` with the run's
arch), the steps done (with the planned steps when ``max_train_seconds`` or early stopping ended the
run before them), the best and the last value of each evaluation metric with their steps
(from ``eval_metrics.jsonl``; best is the minimum for losses and times, the maximum otherwise), and the wall
time from the first to the last file the training wrote (files added later do not count). Run
folders reached through symbolic links count. Training curves: ``scripts/plot_runs.py``. By default the table shows the main metrics (exact accuracy,
token accuracy and loss of each set, pass@1 / pass@2 of an evaluator); ``--metrics all`` shows every
one. It writes ``runs_summary.md``, ``runs_summary.csv`` and
``runs_curves.png`` (matplotlib) to ``--out`` (default: the folder) and prints the markdown.
A run folder that cannot be read (broken ``all_config.yaml`` or ``eval_metrics.jsonl``) is
skipped with a one-line warning. Offline: nothing needs W&B.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import yaml

from training.runs import RUN_END_FILE
from utils.cli import ArgumentParser
from utils.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO, "config")
# Names that say where a run writes, not how it trains: never "overrides".
NAMING_KEYS = {"checkpoint_path", "run_name", "project_name", "resume", "data_path"}
STEP_FILE = re.compile(r"^step_(\d+)$")
# The files pretrain.py writes into a run folder (the wall time spans them).
OWN_FILE = re.compile(r"^(all_config\.yaml|(eval|train)_metrics\.jsonl|run_end\.json|best(\.json)?"
                      r"|step_\d+(\.train_state(\.rank\d+)?\.pt)?)$")
# Shown by default: what a results table reports (other metrics with --metrics all or by name).
MAIN_METRICS = ("exact_accuracy", "accuracy", "lm_loss", "pass@1", "pass@2")
LOWER_IS_BETTER = ("loss", "seconds", "time")


class SummaryError(UserError):
    """A problem with the folder given, reported as one line."""


@dataclass
class Run:
    path: str
    config: Dict[str, Any]
    overrides: Dict[str, Any] = field(default_factory=dict)
    steps_done: int = 0
    wall_seconds: float = 0.0
    curves: Dict[str, List[Tuple[int, float]]] = field(default_factory=dict)  # metric -> [(step, value)]
    planned_steps: Optional[int] = None  # from run_end.json: the run finished (or was stopped) ...
    stopped_by: Optional[str] = None  # ... by "max_train_seconds" or "early_stop"; None: all its steps done


def flatten(d: Dict[str, Any], prefix: str = "", sep: str = ".") -> Dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: Dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{sep}{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key, sep))
        else:
            out[key] = v
    return out


def lower_is_better(metric: str) -> bool:
    """Losses and durations: their best value is the minimum."""
    name = metric.rsplit("/", 1)[-1]
    return any(word in name for word in LOWER_IS_BETTER)


def main_metrics(available: Sequence[str]) -> List[str]:
    """The metrics of ``available`` shown by default (every one when none of them is a main metric)."""
    chosen = [m for m in available if m.rsplit("/", 1)[-1] in MAIN_METRICS]
    return chosen or list(available)


def find_runs(folder: str) -> List[str]:
    """Every folder under ``folder`` (itself included) holding ``all_config.yaml``, sorted. Symbolic
    links to folders are followed (a folder of links to runs kept elsewhere), each real folder once."""
    if not os.path.isdir(folder):
        raise SummaryError(f"{folder}: no such folder")
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree, or two links to one run
            dirs[:] = []
            continue
        seen.add(real)
        if "all_config.yaml" in files:
            found.append(root)
    return sorted(found)


def run_duration(path: str) -> float:
    """Seconds from the first to the last file the training run itself wrote in ``path``; files
    written there later (predictions of evaluate.py, tables of this script) do not count."""
    times = [os.path.getmtime(os.path.join(path, n)) for n in os.listdir(path)
             if OWN_FILE.match(n) and os.path.isfile(os.path.join(path, n))]
    return max(times) - min(times) if times else 0.0


def default_config(arch_name: Optional[str], cache: Dict[Optional[str], Dict[str, Any]]) -> Dict[str, Any]:
    """The flattened default config for the arch whose ``name`` is ``arch_name`` ({} if none matches)."""
    if arch_name in cache:
        return cache[arch_name]
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from training.config import parse_config

    result: Dict[str, Any] = {}
    arch_dir = os.path.join(CONFIG_DIR, "arch")
    for fname in sorted(os.listdir(arch_dir)):
        with open(os.path.join(arch_dir, fname)) as f:
            if (yaml.safe_load(f) or {}).get("name") == arch_name:
                with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
                    cfg = compose("cfg_pretrain", overrides=[f"arch={fname[:-len('.yaml')]}"])
                result = flatten(parse_config(OmegaConf.to_container(cfg, resolve=True)).model_dump())  # type: ignore[arg-type]
                break
    cache[arch_name] = result
    return result


def metric_lines(path: str, what: str) -> Iterator[Tuple[int, Dict[str, Any]]]:
    """The lines of a run's metrics file (``eval_metrics.jsonl``, ``train_metrics.jsonl``) as
    ``(step, the line's other fields)``; none when the file is missing. ``what`` names a line in errors."""
    if not os.path.isfile(path):
        return
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                step = int(entry.pop("step"))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise SummaryError(f"{path}:{n}: not {what} (expected JSON with a 'step')") from None
            yield step, entry


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def choose_metrics(requested: Optional[Sequence[str]], available: List[str], default: List[str]) -> List[str]:
    """``--metrics``: the metrics asked for (``all``: every one logged), each logged by some run;
    ``default`` when none are asked for."""
    if requested is not None and list(requested) == ["all"]:
        return available
    if not requested:
        return default
    unknown = [m for m in requested if m not in available]
    if unknown:
        raise SummaryError(f"--metrics: {', '.join(unknown)} not logged by any run; available: {', '.join(available) or 'none'}")
    return list(requested)


def read_eval_curves(path: str) -> Dict[str, List[Tuple[int, float]]]:
    """``eval_metrics.jsonl`` as metric -> [(step, value)] (metric names as logged: ``all/exact_accuracy``)."""
    curves: Dict[str, List[Tuple[int, float]]] = {}
    for step, entry in metric_lines(path, "an evaluation line"):
        for name, value in flatten(entry, sep="/").items():
            if is_number(value):
                curves.setdefault(name, []).append((step, float(value)))
    return curves


def load_run(path: str, defaults_cache: Dict[Optional[str], Dict[str, Any]]) -> Run:
    cfg_path = os.path.join(path, "all_config.yaml")
    try:
        with open(cfg_path) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise SummaryError(f"{cfg_path}: not readable as YAML ({e.__class__.__name__})") from None
    if not isinstance(config, dict):
        raise SummaryError(f"{cfg_path}: expected a mapping of config keys")
    run = Run(path=path, config=config)
    flat = flatten(config)
    defaults = default_config(flat.get("arch.name"), defaults_cache)
    run.overrides = {k: v for k, v in flat.items()
                     if k not in NAMING_KEYS and k in defaults and defaults[k] != v}
    run.overrides.update({k: v for k, v in flat.items() if k not in NAMING_KEYS and defaults and k not in defaults})
    files = [os.path.join(path, n) for n in os.listdir(path)]
    steps = [int(m.group(1)) for m in (STEP_FILE.match(os.path.basename(p)) for p in files) if m]
    run.curves = read_eval_curves(os.path.join(path, "eval_metrics.jsonl"))
    logged_steps = [s for points in run.curves.values() for s, _ in points]
    run.steps_done = max(steps + logged_steps, default=0)
    run.wall_seconds = run_duration(path)
    read_run_end(run)
    return run


def read_run_end(run: Run) -> None:
    """How the run ended (``run_end.json``, written when training ends; absent while it runs or
    after a crash): planned steps and what stopped it early."""
    path = os.path.join(run.path, RUN_END_FILE)
    try:
        with open(path) as f:
            end = json.load(f)
        run.planned_steps, run.stopped_by = int(end["planned_steps"]), end.get("stopped_by")
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError):
        raise SummaryError(f"{path}: not a run-end record (expected JSON with 'planned_steps')") from None


def steps_cell(run: Run) -> str:
    """``steps`` of the table: marked when the run stopped before its planned steps, so that a run cut
    short by its time budget is not read as a finished one."""
    if run.stopped_by == "max_train_seconds":
        return f"{run.steps_done} of {run.planned_steps}, stopped by max_train_seconds"
    if run.stopped_by == "early_stop":
        return f"{run.steps_done} of {run.planned_steps}, early stop"
    return str(run.steps_done)


def best_and_last(points: Sequence[Tuple[int, float]], metric: str) -> Tuple[Tuple[int, float], Tuple[int, float]]:
    """((best step, best value), (last step, last value)); ties go to the earliest step."""
    ordered = sorted(points)
    pick = min if lower_is_better(metric) else max
    best_value = pick(v for _, v in ordered)
    best = next((s, v) for s, v in ordered if v == best_value)
    return best, ordered[-1]


def format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def format_duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def shared_overrides(runs: Sequence[Run]) -> Dict[str, Any]:
    """Overrides every run has with the same value (shown once above the table when there are several runs)."""
    if len(runs) < 2:
        return {}
    first = runs[0].overrides
    return {k: v for k, v in first.items() if all(k in r.overrides and r.overrides[k] == v for r in runs[1:])}


def format_overrides(overrides: Dict[str, Any]) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in sorted(overrides.items()))


def table_rows(runs: Sequence[Run], root: str, metrics: Sequence[str]) -> Tuple[List[str], List[List[str]], List[Dict[str, Any]]]:
    """Markdown header and rows (overrides that all runs share left out), and one CSV record per run
    (with all its overrides)."""
    shared = shared_overrides(runs)
    header = ["run", "overrides", "steps", "wall time"] + [f"{m} best (step) / last (step)" for m in metrics]
    rows, records = [], []
    for run in runs:
        name = os.path.relpath(run.path, root)
        own = format_overrides({k: v for k, v in run.overrides.items() if k not in shared}) or "(defaults)"
        row = [name, own, steps_cell(run), format_duration(run.wall_seconds)]
        record: Dict[str, Any] = {"run": name, "overrides": format_overrides(run.overrides), "steps": run.steps_done,
                                  "planned_steps": run.planned_steps if run.planned_steps is not None else "",
                                  "stopped_by": run.stopped_by or "", "wall_seconds": round(run.wall_seconds, 1)}
        for m in metrics:
            points = run.curves.get(m)
            if not points:
                row.append("–")
                record.update({f"{m} best": "", f"{m} best_step": "", f"{m} last": "", f"{m} last_step": ""})
                continue
            (bs, bv), (ls, lv) = best_and_last(points, m)
            row.append(f"{bv:.4g} ({bs}) / {lv:.4g} ({ls})")
            record.update({f"{m} best": bv, f"{m} best_step": bs, f"{m} last": lv, f"{m} last_step": ls})
        rows.append(row)
        records.append(record)
    return header, rows, records


def markdown(header: List[str], rows: List[List[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_curves(runs: Sequence[Run], root: str, metrics: Sequence[str], path: str) -> None:
    """One panel per metric, one line per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, max(1, len(metrics)))
    nrows = max(1, -(-len(metrics) // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        for run in runs:
            points = sorted(run.curves.get(metric, []))
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3,
                        label=os.path.relpath(run.path, root))
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def write_atomic(path: str, write) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def summarize(folder: str, metrics: Optional[Sequence[str]] = None, out: Optional[str] = None) -> str:
    """Write the table (markdown, CSV) and the curves of every run under ``folder``; return the markdown."""
    from utils.progress import progress_bar

    paths = find_runs(folder)
    if not paths:
        raise SummaryError(f"{folder}: no runs found (no all_config.yaml under it)")
    cache: Dict[Optional[str], Dict[str, Any]] = {}
    runs = []
    for path in progress_bar(paths, desc="runs", disable=len(paths) < 20):
        try:
            runs.append(load_run(path, cache))
        except (SummaryError, OSError, ValueError) as e:  # one broken run folder does not hide the others
            print(f"warning: skipped a run: {e}", file=sys.stderr)
    if not runs:
        raise SummaryError(f"{folder}: none of the {len(paths)} run folder(s) under it could be read (see the warnings above)")
    available = sorted({m for r in runs for m in r.curves})
    chosen = choose_metrics(metrics, available, main_metrics(available))
    header, rows, records = table_rows(runs, folder, chosen)
    text = markdown(header, rows)
    shared = shared_overrides(runs)
    if shared:
        text = f"All {len(runs)} runs: {format_overrides(shared)}\n\n" + text

    out = out or folder
    os.makedirs(out, exist_ok=True)
    write_atomic(os.path.join(out, "runs_summary.md"), lambda f: f.write(text.encode()))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    write_atomic(os.path.join(out, "runs_summary.csv"), lambda f: f.write(buf.getvalue().encode()))
    if chosen:
        plot_curves(runs, folder, chosen, os.path.join(out, "runs_curves.png"))
    return text


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="a folder of runs (searched recursively for all_config.yaml)")
    p.add_argument("--metrics", nargs="+", default=None, help="evaluation metrics to show, or 'all' "
                   "(default: exact_accuracy, accuracy and lm_loss of each set, and evaluators' pass@1 / pass@2)")
    p.add_argument("--out", default=None, help="where to write runs_summary.{md,csv} and runs_curves.png (default: the folder)")
    args = p.parse_args(argv)
    try:
        text = summarize(args.folder, args.metrics, args.out)
    except (UserError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(text)
    print(f"written: {os.path.join(args.out or args.folder, 'runs_summary.md')}, runs_summary.csv, runs_curves.png")


if __name__ == "__main__":
    main()
