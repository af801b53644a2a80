"""Draw one domino example in ASCII: the table, its open ends, the hand and the target move.

    python scripts/visualize_domino_play.py --data-path data/domino-opt --split train --index 0

In the hand, `*` marks a tile that can be played and `>>` the tile the label says to play.
Each legal move is listed with what the dataset's policy sees in it (for max-chain: how many
more tiles the player could then play alone).
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional, Sequence

import numpy as np

from dataset.common import DatasetError
from dataset.domino import (split_arguments, FIRST, LEFT, WHERE_NAMES, DominoError, Move, Scenario, check_example,
                            legal_moves, move_scores, read_policy, read_split, tile_str)
from utils.errors import UserError

TILES_PER_ROW = 12


def draw(scenario: Scenario, target: Move, policy: Optional[str]) -> List[str]:
    """Lines of the drawing of ``scenario`` with ``target`` (the labelled move) marked."""
    lines = []
    table = [tile_str(t) for t in scenario.table]
    lines.append(f"Table ({len(table)} tile{'s' if len(table) != 1 else ''}):")
    if not table:
        lines.append("    (empty: any tile may open)")
    for start in range(0, len(table), TILES_PER_ROW):
        lines.append("    " + "".join(table[start:start + TILES_PER_ROW]))
    if scenario.ends is None:
        lines.append("Ends: none yet")
    else:
        left, right = scenario.ends
        left_text, right_text = f"left end {left}", f"right end {right}"
        # Point at the two open halves: the first pip of the first row, the last pip of the last.
        right_col = len(lines[-1]) - 2
        if len(table) <= TILES_PER_ROW and right_col - len(right_text) > 5 + len(left_text):
            lines.append(" " * 5 + "^" + " " * (right_col - 6) + "^")
            lines.append(" " * 5 + left_text.ljust(right_col - 4 - len(right_text)) + right_text)
        else:
            lines.append(f"Ends: {left_text}, {right_text}")

    moves = legal_moves(scenario.ends, scenario.hand)
    scores = {move: key for key, move in move_scores(scenario, policy)} if policy else {}
    lines.append("")
    lines.append(f"Hand ({len(scenario.hand)} tile{'s' if len(scenario.hand) != 1 else ''}):   "
                 "* playable   >> target")
    for tile in scenario.hand:
        sides = [m for m in moves if m[:2] == tile]
        mark = ">>" if tile == target[:2] else " *" if sides else "  "
        where = ", ".join(WHERE_NAMES[m[2]] + ("" if not scores or policy != "max-chain"
                                                else f" (then {-scores[m][0]} more)") for m in sides)
        lines.append(f"  {mark} {tile_str(tile)}  " + (f"plays at: {where}" if where else "cannot play"))
    lines.append("")
    side = {LEFT: "at the LEFT end", FIRST: "to open the table"}.get(target[2], "at the RIGHT end")
    lines.append(f"Target: play {tile_str(target[:2])} {side}" + (f"   (policy: {policy})" if policy else ""))
    return lines


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line entry point; a bad path, index or example exits 2 with one `error: ...` line."""
    args = split_arguments(__doc__.split("\n\n")[0], [("--index", dict(type=int, default=0, help="example number in the split"))],
                           "policy whose view of each move is shown (default: the one in domino.json)").parse_args(argv)
    try:
        data = read_split(args.data_path, args.split)
        if not 0 <= args.index < len(data.inputs):
            raise DatasetError(f"--index {args.index}: {args.split} has examples 0..{len(data.inputs) - 1}")
        policy = args.policy or read_policy(args.data_path)
        try:
            # Draw only what is valid: a broken example is reported, not half-drawn.
            scenario, move = check_example(np.asarray(data.inputs[args.index]),
                                           np.asarray(data.labels[args.index]), policy)
        except DominoError as e:
            raise DominoError(f"{data.locate(args.index)}: {e}") from None
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{data.locate(args.index)} of {args.data_path}\n")
    print("\n".join(draw(scenario, move, policy)))


if __name__ == "__main__":
    main()
