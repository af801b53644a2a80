"""Build a maze shortest-path dataset: from the original CSVs (local folder or Hugging Face) or generated.

    python dataset/build_maze_dataset.py --output-dir data/maze-30x30-hard-1k
    python dataset/build_maze_dataset.py --source-repo path/to/folder_with_train_and_test_csv --aug
    python dataset/build_maze_dataset.py --generate 1000 --size 30 --output-dir data/maze-30x30-gen

Cells use the original charset ``"# SGo"`` (wall, open, start, goal, path) mapped to tokens
1..5, PAD 0, vocabulary 6, ``seq_len = size * size``. The label is the input with the cells
of the shortest path from S to G (endpoints excluded) marked ``o``. With ``--aug`` every train
maze appears in its 8 dihedral forms, which together form one group.
"""
from __future__ import annotations

import math
import os
import time
from typing import Optional, Sequence, Tuple

import numpy as np
import pydantic

from dataset.common import (DatasetError, PuzzleCSV, atomic_output_dir, check_output_dir, dihedral_transform,
                            parse_config, resolve_source_csv, run_cli, save_identifiers, save_split, subsample_rows)
from dataset.maze import CHAR_TO_TOKEN, CHARSET, MIN_MAZE_SIZE, OPEN, PATH, generate_mazes


class MazeBuildConfig(pydantic.BaseModel):
    """Options of the builder; the first four are the original's."""

    source_repo: str = pydantic.Field("sapientinc/maze-30x30-hard-1k", description=(
        "Hugging Face dataset repo, or a local folder holding train.csv and test.csv"))
    output_dir: str = pydantic.Field("data/maze-30x30-hard-1k", description="dataset folder to write")
    subsample_size: Optional[int] = pydantic.Field(None, ge=0, description="keep this many train mazes")
    aug: bool = pydantic.Field(False, description="add the 8 dihedral forms of every train maze")
    seed: int = pydantic.Field(0, description="seed of subsampling and generation")
    generate: Optional[int] = pydantic.Field(None, ge=1, json_schema_extra={"metavar": "N"}, description=(
        "generate N train mazes offline"))
    generate_test: Optional[int] = pydantic.Field(None, ge=0, json_schema_extra={"metavar": "M"}, description=(
        "generated test mazes (default N // 10)"))
    size: int = pydantic.Field(30, ge=MIN_MAZE_SIZE, description="grid side for --generate")


# ----------------------------------------------------------------------------------------------
# Reading the original CSVs

def read_maze_csv(path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(questions, answers, line_numbers)``: ``[N, n*n]`` character codes, validated.

    Every row must be a square grid of the same size as the first, use only ``"# SGo"``, and
    its answer must equal the question except for path cells ``o`` placed on open cells.
    """
    table = PuzzleCSV(path)
    if len(table) == 0:
        raise DatasetError(f"{path}: no mazes after the header line")
    table.check_nonempty("question", "answer")
    cells = int(table.lengths("question")[0])
    n = math.isqrt(cells)
    if n * n != cells:
        raise DatasetError(f"{path}: line {table.line_numbers[0]}: question has {cells} characters, not a square grid")
    table.check_width("question", cells)
    table.check_width("answer", cells)
    rows = np.arange(len(table))
    q = table.fixed_width("question", rows, cells)
    a = table.fixed_width("answer", rows, cells)
    checks = [
        (np.any(CHAR_TO_TOKEN[q] == 0, axis=1) | np.any(CHAR_TO_TOKEN[a] == 0, axis=1),
         f"character outside the maze charset {CHARSET!r}"),
        (np.any((a != q) & ~((a == PATH) & (q == OPEN)), axis=1),
         "answer differs from the question outside path cells ('o' on open cells)"),
    ]
    for bad, what in checks:
        if bad.any():
            raise DatasetError(f"{path}: line {table.line_numbers[np.argmax(bad)]}: {what}")
    return q, a, table.line_numbers


def describe_lengths(lengths: np.ndarray) -> str:
    """One-line summary of a path-length distribution (min, quartiles, max, mean)."""
    q = np.percentile(lengths, [0, 25, 50, 75, 100]).astype(int)
    return (f"path length (steps S->G): min {q[0]}, 25% {q[1]}, median {q[2]}, 75% {q[3]}, max {q[4]}, "
            f"mean {lengths.mean():.1f}")


# ----------------------------------------------------------------------------------------------
# Dataset writing

def write_split(output_dir: str, split: str, questions: np.ndarray, answers: np.ndarray, aug: bool) -> None:
    """Write one split; with ``aug`` each maze's 8 dihedral forms form its group (one puzzle each)."""
    num, cells = questions.shape
    n = math.isqrt(cells)
    forms = 8 if aug else 1
    grids_q = questions.reshape(num, n, n)
    grids_a = answers.reshape(num, n, n)
    # [num, forms, n, n]: form t of maze i lands at row i * forms + t, as the original loop order.
    inputs = np.stack([dihedral_transform(grids_q, t) for t in range(forms)], axis=1).reshape(num * forms, cells)
    labels = np.stack([dihedral_transform(grids_a, t) for t in range(forms)], axis=1).reshape(num * forms, cells)
    save_split(os.path.join(output_dir, split), CHAR_TO_TOKEN[inputs], CHAR_TO_TOKEN[labels], group_size=forms,
               vocab_size=len(CHARSET) + 1, task="maze")


def build_maze_dataset(config: MazeBuildConfig) -> None:
    """Build ``config.output_dir`` (written to a temporary folder, moved into place when complete)."""
    local = config.generate is None and os.path.isdir(config.source_repo)
    check_output_dir(config.output_dir, [("--source-repo", config.source_repo)] if local else [])
    rng = np.random.default_rng(config.seed)
    splits = {}
    if config.generate is not None:
        num_test = config.generate_test if config.generate_test is not None else max(1, config.generate // 10)
        q, a, lengths = generate_mazes(config.generate + num_test, config.size, rng,
                                       desc=f"generate {config.size}x{config.size}")
        print(f"generated {q.shape[0]} mazes; {describe_lengths(lengths)}")
        splits["train"] = (q[:config.generate], a[:config.generate])
        splits["test"] = (q[config.generate:], a[config.generate:])
    else:
        n = None
        for split in ("train", "test"):
            path = resolve_source_csv(config.source_repo, split)
            q, a, _ = read_maze_csv(path)
            if n is not None and q.shape[1] != n:
                raise DatasetError(f"{path}: grids of {q.shape[1]} cells, but train.csv has {n}")
            n = q.shape[1]
            splits[split] = (q, a)
            print(f"{split}: read {q.shape[0]} mazes from {path}")
    keep = subsample_rows(splits["train"][0].shape[0], config.subsample_size, rng)
    splits["train"] = (splits["train"][0][keep], splits["train"][1][keep])

    forms = {split: 8 if config.aug and split == "train" else 1 for split in splits}
    # inputs and labels (one byte per cell) and three int32 index entries per example
    needed = sum(q.shape[0] * forms[split] * (2 * q.shape[1] + 12) for split, (q, _) in splits.items())
    with atomic_output_dir(config.output_dir, needed_bytes=needed) as tmp:
        for split, (q, a) in splits.items():
            t0 = time.perf_counter()
            write_split(tmp, split, q, a, aug=forms[split] > 1)
            print(f"{split}: {q.shape[0]} mazes written in {time.perf_counter() - t0:.1f}s")
        save_identifiers(tmp, ["<blank>"])
    print(f"wrote {config.output_dir}")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Build the dataset the command line asks for (one option per field of :class:`MazeBuildConfig`)."""
    build_maze_dataset(parse_config(MazeBuildConfig, argv, description=__doc__))


if __name__ == "__main__":
    run_cli(main)
