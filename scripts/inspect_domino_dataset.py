"""Print a few domino examples and check every example of a split.

    python scripts/inspect_domino_dataset.py --data-path data/domino-opt --split train --num 5

Checks: the split is shaped like a domino dataset (seq_len 72, vocab 8, consistent index
arrays), every token is in range, every scenario decodes (consistent chain, ends match the
table, no tile twice, 1..7 tiles in hand), and every label is a legal move and the one the
dataset's policy (from ``domino.json``, or ``--policy``) picks. The first broken example is
named and the exit status is 2.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

import numpy as np

from dataset.common import DatasetError
from dataset.domino import (split_arguments, VOCAB_SIZE, DominoError, check_example, describe_move, read_policy,
                            read_split, table_str, tile_str)
from utils.errors import UserError
from utils.progress import progress_bar


def digits(tokens: np.ndarray) -> str:
    """Tokens are single digits (vocab 8), so a row reads best as one string."""
    return "".join(str(int(t)) for t in tokens)


def inspect(data_path: str, split: str, num: int, policy: Optional[str] = None) -> int:
    """Print ``num`` examples, validate all of them; returns the number checked (raises on a bad one)."""
    policy = policy or read_policy(data_path)
    data = read_split(data_path, split)
    inputs, labels = data.inputs, data.labels
    n = len(inputs)

    # Token ranges in one vectorised pass, so a bad token is reported as such, not as a rule.
    for name, arr in (("input", inputs), ("label", labels)):
        bad = np.flatnonzero(((arr < 0) | (arr >= VOCAB_SIZE)).any(axis=1))
        if len(bad):
            raise DominoError(f"{data.locate(int(bad[0]))}: {name} token out of range 0..{VOCAB_SIZE - 1}")

    print(f"{data_path} [{split}/{data.set_name}]: {n} examples, {len(data.puzzle_indices) - 1} puzzles, "
          f"{len(data.group_indices) - 1} groups, policy {policy}")
    for i in progress_bar(range(n), desc=f"checking {split}", unit="example", disable=n < 5000):
        x, y = np.asarray(inputs[i]), np.asarray(labels[i])
        try:
            scenario, move = check_example(x, y, policy)
        except DominoError as e:
            raise DominoError(f"{data.locate(i)}: {e}") from None
        if i < num:
            ends = "-" if scenario.ends is None else f"{scenario.ends[0]} {scenario.ends[1]}"
            print(f"\n{data.locate(i)}")
            print(f"  table ({len(scenario.table)}): {table_str(scenario.table)}   ends: {ends}")
            print(f"  hand  ({len(scenario.hand)}): {' '.join(tile_str(t) for t in scenario.hand)}")
            print(f"  label: {describe_move(move)}")
            print(f"  tokens: {digits(x[:56])} | {digits(x[56:70])} | {digits(x[70:])} -> {digits(y[:3])}")
    print(f"\nOK: all {n} examples of {split} decode and carry the {policy} move")
    return n


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line entry point; a broken dataset exits 2 with one `error: ...` line."""
    args = split_arguments(__doc__.split("\n\n")[0], [("--num", dict(type=int, default=3, help="examples to print"))],
                           "policy to check against (default: the one recorded in domino.json)").parse_args(argv)
    try:
        inspect(args.data_path, args.split, args.num, args.policy)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
