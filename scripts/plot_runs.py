"""Learning curves of several runs on one figure: training (``train_metrics.jsonl``) and test
(``eval_metrics.jsonl``) side by side, offline.

    python scripts/plot_runs.py checkpoints/lr-sweep                  # every run under the folder
    python scripts/plot_runs.py checkpoints/a checkpoints/b --smooth 0.9 --out curves.png
    python scripts/plot_runs.py checkpoints/lr-sweep --metrics exact_accuracy lm_loss q_halt_accuracy

One panel per metric (default: ``exact_accuracy``, ``accuracy``, ``lm_loss``), one colour per run:
the training curve as a line (``train/<metric>``, smoothed), the test curve of each evaluated set
as dots joined by a dashed line (``<set>/<metric>``). ``--smooth S`` is an exponential moving
average with weight S on the past (0: none; default 0.6), debiased so that the first points are not
pulled towards 0; the raw training values are drawn faintly behind. Training lines where no row
halted hold no value (``null``) and are skipped, not drawn as 0. ``--log-x`` / ``--log-y`` set log
axes. Writes a PNG (default ``runs_curves_train_test.png`` in the first folder given). Runs are
found as ``summarize_runs.py`` finds them (folders holding ``all_config.yaml``, symbolic links
followed).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from scripts.summarize_runs import SummaryError, choose_metrics, find_runs, is_number, metric_lines, read_eval_curves, write_atomic
from utils.cli import ArgumentParser

DEFAULT_METRICS = ("exact_accuracy", "accuracy", "lm_loss")
Curve = List[Tuple[int, float]]


def read_train_curves(path: str) -> Dict[str, Curve]:
    """``train_metrics.jsonl`` as metric -> [(step, value)], names without ``train/``; null values skipped."""
    curves: Dict[str, Curve] = {}
    for step, entry in metric_lines(path, "a training-metrics line"):
        for name, value in entry.items():
            if name.startswith("train/") and is_number(value):
                curves.setdefault(name[len("train/"):], []).append((step, float(value)))
    return curves


def smooth(values: Sequence[float], weight: float) -> List[float]:
    """Exponential moving average with ``weight`` on the past, debiased (the first value is itself)."""
    out, avg, norm = [], 0.0, 0.0
    for v in values:
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(avg / norm)
    return out


def test_curves(eval_curves: Dict[str, Curve], metric: str) -> Dict[str, Curve]:
    """set name -> curve of ``<set>/<metric>`` (the ``train`` entry of each line is the training side, left out)."""
    return {name.split("/")[0]: points for name, points in eval_curves.items()
            if name.count("/") == 1 and name.endswith("/" + metric) and not name.startswith(("train/", "eval/"))}


def plot(runs: Dict[str, Tuple[Dict[str, Curve], Dict[str, Curve]]], metrics: Sequence[str], path: str, weight: float,
         log_x: bool = False, log_y: bool = False) -> None:
    """``runs``: label -> (training curves, evaluation curves). One panel per metric."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(metrics))
    nrows = -(-len(metrics) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.8 * nrows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes.flat, metrics):
        for i, (label, (train, evals)) in enumerate(runs.items()):
            colour = colours[i % len(colours)]
            points = sorted(train.get(metric, []))
            if points:
                steps, values = [s for s, _ in points], [v for _, v in points]
                if weight > 0:
                    ax.plot(steps, values, color=colour, alpha=0.2, linewidth=0.8)
                ax.plot(steps, smooth(values, weight) if weight > 0 else values, color=colour, linewidth=1.4, label=f"{label} train")
            for set_name, test in sorted(test_curves(evals, metric).items()):
                test = sorted(test)
                ax.plot([s for s, _ in test], [v for _, v in test], color=colour, linestyle="--", marker="o", markersize=4,
                        label=f"{label} test {set_name}")
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if log_x:
            ax.set_xscale("log")
        if log_y:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    rows_of_legend = -(-len(labels) // 4) if handles else 0
    fig.tight_layout(rect=(0, min(0.4, 0.045 * rows_of_legend / nrows), 1, 1))
    write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def collect(folders: Sequence[str]) -> Dict[str, Tuple[Dict[str, Curve], Dict[str, Curve]]]:
    """label -> (training curves, evaluation curves) of every run under ``folders`` (labels: paths
    relative to the folder given, or the folder's name when it is a run itself)."""
    runs: Dict[str, Tuple[Dict[str, Curve], Dict[str, Curve]]] = {}
    for folder in folders:
        paths = find_runs(folder)
        if not paths:
            raise SummaryError(f"{folder}: no runs found (no all_config.yaml under it)")
        for path in paths:
            rel = os.path.relpath(path, folder)
            label = os.path.basename(os.path.abspath(folder)) if rel == "." else rel
            if label in runs:
                label = path
            runs[label] = (read_train_curves(os.path.join(path, "train_metrics.jsonl")),
                           read_eval_curves(os.path.join(path, "eval_metrics.jsonl")))
    return runs


def plot_runs(folders: Sequence[str], metrics: Optional[Sequence[str]] = None, out: Optional[str] = None,
              weight: float = 0.6, log_x: bool = False, log_y: bool = False) -> Tuple[str, List[str]]:
    """Write the figure; returns (its path, the metrics drawn)."""
    if not 0 <= weight < 1:
        raise SummaryError(f"--smooth {weight}: expected a weight in [0, 1) (0: no smoothing)")
    runs = collect(folders)
    available = sorted({m for train, _ in runs.values() for m in train}
                       | {n.split("/", 1)[1] for _, evals in runs.values() for n in evals if n.count("/") == 1 and not n.startswith(("train/", "eval/"))})
    chosen = choose_metrics(metrics, available, [m for m in DEFAULT_METRICS if m in available])
    if not chosen:
        raise SummaryError(f"{', '.join(folders)}: no training or evaluation metrics logged yet")
    out = out or os.path.join(folders[0], "runs_curves_train_test.png")
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    plot(runs, chosen, out, weight, log_x, log_y)
    return out, chosen


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="run folders, or folders of runs (searched recursively for all_config.yaml)")
    p.add_argument("--metrics", nargs="+", default=None,
                   help="metric names without set or train/ prefix (default: exact_accuracy accuracy lm_loss)")
    p.add_argument("--smooth", type=float, default=0.6, help="moving-average weight on the past for training curves, in [0, 1) (default 0.6)")
    p.add_argument("--out", default=None, help="the PNG to write (default: <first folder>/runs_curves_train_test.png)")
    p.add_argument("--log-x", action="store_true", help="logarithmic step axis")
    p.add_argument("--log-y", action="store_true", help="logarithmic value axis")
    args = p.parse_args(argv)
    try:
        path, chosen = plot_runs(args.folders, args.metrics, args.out, args.smooth, args.log_x, args.log_y)
    except (SummaryError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"written: {path} ({', '.join(chosen)})")


if __name__ == "__main__":
    main()
