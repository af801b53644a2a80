"""Print and check examples of any built dataset, by the task its ``dataset.json`` records.

    python scripts/inspect_dataset.py --data-path data/maze-30x30-hard-1k --split test --num 2
    python scripts/inspect_dataset.py --data-path data/arc1concept-aug-1000 --num 2
    python scripts/inspect_dataset.py --data-path data/my-task --num 5        # a custom task
    python scripts/inspect_dataset.py --data-path data/maze-30x30-hard-1k --task maze   # no task recorded

Sudoku and domino datasets go to ``inspect_sudoku_dataset.py`` / ``inspect_domino_dataset.py``.
Every example of the split is checked; the first bad one is named and the exit status is 2:

- maze: the label is the maze with a shortest S-G path marked (walls, S and G kept, ``o`` only on
  open cells, as many as a shortest path needs, connecting S to G);
- ARC: tokens within the vocabulary (PAD 0, end marker 1, colours 2..11) and every label a non-empty
  grid on the 30x30 canvas; grids are printed as rows of colours 0..9;
- custom: tokens within the dataset's vocabulary and every input a well-formed row (its value laid
  out again gives the same row); inputs and outputs are printed in the notation of the task's file.
"""
from __future__ import annotations

import json
import math
import os
from typing import Callable, Optional, Sequence

import numpy as np

from dataset.common import DatasetError, load_metadata, run_cli
from utils.cli import ArgumentParser
from utils.progress import progress_bar

TASKS = ("sudoku", "maze", "arc", "domino", "custom")


def recorded_task(data_path: str, split: str) -> Optional[str]:
    with open(os.path.join(data_path, split, "dataset.json")) as f:
        return json.load(f).get("task")


def load_split(data_path: str, split: str):
    """(metadata, [(set name, inputs, labels path, labels)]) of a split, memory-mapped."""
    split_dir = os.path.join(data_path, split)
    meta = load_metadata(split_dir)
    sets = []
    for set_name in meta.sets:
        paths = [os.path.join(split_dir, f"{set_name}__{k}.npy") for k in ("inputs", "labels")]
        for path in paths:
            if not os.path.isfile(path):
                raise DatasetError(f"{path}: missing")
        inputs, labels = (np.load(p, mmap_mode="r") for p in paths)
        if inputs.shape != labels.shape or inputs.ndim != 2 or inputs.shape[1] != meta.seq_len:
            raise DatasetError(f"{paths[1]}: shape {labels.shape} does not match inputs {inputs.shape} and seq_len {meta.seq_len}")
        bad = np.flatnonzero(((inputs >= meta.vocab_size) | (labels >= meta.vocab_size)).any(axis=1)) if len(inputs) else []
        if len(bad):
            raise DatasetError(f"{paths[1]}: example {bad[0]}: a token at or above vocab_size {meta.vocab_size}")
        sets.append((set_name, inputs, paths[1], labels))
    return meta, sets


def check_all(split: str, sets, num: int, show: Callable, problem: Callable) -> int:
    """Print ``num`` examples per set and check every one; returns how many were checked."""
    checked = 0
    for set_name, inputs, labels_path, labels in sets:
        for i in range(min(num, len(inputs))):
            print(f"[{split}/{set_name}] example {i}")
            show(np.asarray(inputs[i]), np.asarray(labels[i]))
            print()
        for i in progress_bar(range(len(inputs)), desc=f"check {set_name}", disable=len(inputs) < 5000, leave=False):
            why = problem(np.asarray(inputs[i]).astype(np.int64), np.asarray(labels[i]).astype(np.int64))
            if why:
                raise DatasetError(f"{labels_path}: example {i}: {why}")
        checked += len(inputs)
    return checked


def inspect_maze(data_path: str, split: str, num: int) -> int:
    from tasks.maze import MazeCodec, path_problem
    meta, sets = load_split(data_path, split)
    if math.isqrt(meta.seq_len) ** 2 != meta.seq_len:
        raise DatasetError(f"{os.path.join(data_path, split, 'dataset.json')}: seq_len {meta.seq_len} is not a square maze")
    codec = MazeCodec()

    def show(x, y):
        for a, b in zip(codec.format_tokens(x).splitlines(), codec.format_tokens(y).splitlines()):
            print(f"  {a}   {b}")

    checked = check_all(split, sets, num, show, path_problem)
    print(f"checked {checked} examples of {split}: every label marks a shortest path from S to G")
    return checked


def inspect_arc(data_path: str, split: str, num: int) -> int:
    from dataset.arc_grid import Canvas, crop_arc_grid
    meta, sets = load_split(data_path, split)
    where = os.path.join(data_path, split, "dataset.json")
    try:  # the canvas the dataset records (30x30 when it records none)
        canvas = Canvas.of(meta.seq_len, getattr(meta, "canvas_height", None), getattr(meta, "canvas_width", None))
    except DatasetError as e:
        raise DatasetError(f"{where}: {e}") from None
    if meta.seq_len != canvas.seq_len:
        raise DatasetError(f"{where}: seq_len {meta.seq_len}; ARC rows are {canvas} = {canvas.seq_len} (no canvas_height/canvas_width recorded)")

    def show(x, y):
        for title, grid in (("input", crop_arc_grid(x, canvas)), ("output", crop_arc_grid(y, canvas))):
            print(f"  {title} {grid.shape[0]}x{grid.shape[1] if grid.ndim == 2 else 0}:")
            for row in grid:
                print("    " + "".join(str(v) for v in row))

    def problem(x, y):
        return None if crop_arc_grid(y, canvas).size else "the label holds no grid (no colour token at the canvas' top left)"

    checked = check_all(split, sets, num, show, problem)
    print(f"checked {checked} examples of {split}: tokens within the vocabulary, every label a grid")
    return checked


def inspect_custom(data_path: str, split: str, num: int) -> int:
    from tasks.base import PuzzleError
    from tasks.custom import CustomCodec
    meta, sets = load_split(data_path, split)
    codec = CustomCodec(seq_len=meta.seq_len, data_path=data_path)
    if codec.vocab is None:
        raise DatasetError(f"{os.path.join(data_path, split, 'dataset.json')}: no vocab; not a custom task's dataset")

    def show(x, y):
        print(f"  input:  {codec.format_tokens(x)}")
        print(f"  output: {json.dumps(codec.answer(None, y), ensure_ascii=False)}")  # type: ignore[arg-type]

    def problem(x, y):
        try:
            value = codec._value(codec._notation(x, "input"), "input")
        except PuzzleError as e:
            return f"the input row is not a laid-out value ({e})"
        return None if np.array_equal(codec.encode(value), x) else "the input row is not a laid-out value (tokens after its end)"

    checked = check_all(split, sets, num, show, problem)
    print(f"checked {checked} examples of {split}: tokens within the vocabulary, every input well formed")
    return checked


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-path", "--data_path", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--num", type=int, default=3, help="examples to print")
    p.add_argument("--task", choices=TASKS, default=None, help="for datasets that record no task (the original builders')")
    args = p.parse_args(argv)
    meta_path = os.path.join(args.data_path, args.split, "dataset.json")
    if not os.path.isfile(meta_path):
        raise DatasetError(f"{meta_path}: missing; give a built dataset folder and a split")
    task = args.task or recorded_task(args.data_path, args.split)
    if task is None:
        raise DatasetError(f"{meta_path}: records no task (an original builder's dataset): give --task {{{','.join(TASKS)}}}")
    if task not in TASKS:
        raise DatasetError(f"{meta_path}: task {task!r}: no inspector (known: {', '.join(TASKS)})")
    if task == "sudoku":
        from scripts.inspect_sudoku_dataset import inspect
        inspect(args.data_path, args.split, args.num)
    elif task == "domino":
        from scripts.inspect_domino_dataset import inspect as inspect_domino
        inspect_domino(args.data_path, args.split, args.num)
    else:
        {"maze": inspect_maze, "arc": inspect_arc, "custom": inspect_custom}[task](args.data_path, args.split, args.num)


if __name__ == "__main__":
    run_cli(main)
