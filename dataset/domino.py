"""Dominoes: the position encoding, the rules and the two move policies (docs/datasets.md, "Dominoes task").

Shared by the dataset builder, the inspector and the ASCII visualizer, so that all three
agree on what a scenario is and which move is the right one.

A scenario is a position in a two-player block game with a double-six set: the chain on the
table (left to right, every tile oriented so touching halves match), the hand of the player
to move, and the two open ends. As a length-72 sequence (pip value ``v`` stored as ``v + 1``,
0 = empty):

    0..55   the table, 2 tokens per tile, oriented left -> right (empty slots 0, 0)
    56..69  the hand, 2 tokens per tile, canonical (a <= b), empty slots 0, 0 (the builder
            writes the tiles sorted; readers do not rely on it)
    70, 71  left end + 1, right end + 1 (0, 0 while the table is empty)

The label sequence holds the move in positions 0..2 (``a + 1``, ``b + 1``, where) and 0
(the ignore id) elsewhere; ``where`` is 1 = left end, 2 = right end, 3 = first tile on an
empty table.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dataset.common import DATASET_FIELDS, DatasetError, load_metadata
from utils.cli import ArgumentParser
from utils.errors import UserError

MAX_PIP = 6
NUM_TILES = 28                  # double-six set
HAND_MAX = 7
SEQ_LEN = 72
VOCAB_SIZE = 8                  # 0 = empty, pips 0..6 as 1..7
TABLE_START, TABLE_END = 0, 56  # 28 tile slots: the table can never hold more than the set
HAND_START, HAND_END = 56, 70   # 7 tile slots
LEFT_POS, RIGHT_POS = 70, 71

LEFT, RIGHT, FIRST = 1, 2, 3
WHERE_NAMES = {LEFT: "left end", RIGHT: "right end", FIRST: "empty table"}
POLICIES = ("max-chain", "heaviest")
POLICY_FILE = "domino.json"     # written by the builder next to the splits: {"policy": ..., options}

Tile = Tuple[int, int]
Move = Tuple[int, int, int]     # (a, b, where) with a <= b


class DominoError(UserError):
    """An encoded scenario or label breaks the rules; the message says which rule."""


def full_set() -> List[Tile]:
    """The 28 tiles of a double-six set, canonical (a <= b), in lexicographic order."""
    return [(a, b) for a in range(MAX_PIP + 1) for b in range(a, MAX_PIP + 1)]


@dataclass(frozen=True)
class Scenario:
    """A position: ``table`` is the oriented chain (left to right), ``hand`` canonical tiles."""

    table: Tuple[Tile, ...]
    hand: Tuple[Tile, ...]

    @property
    def ends(self) -> Optional[Tuple[int, int]]:
        """(left, right) open ends, or None while the table is empty."""
        if not self.table:
            return None
        return self.table[0][0], self.table[-1][1]


def canonical(tile: Sequence[int]) -> Tile:
    """The tile written with its smaller half first."""
    a, b = int(tile[0]), int(tile[1])
    return (a, b) if a <= b else (b, a)


# --------------------------------------------------------------------------------------------
# Rules


def legal_moves(ends: Optional[Tuple[int, int]], hand: Sequence[Tile]) -> List[Move]:
    """Every legal move, as (a, b, where). A tile that fits both ends gives two moves."""
    if ends is None:
        return [(a, b, FIRST) for a, b in hand]
    left, right = ends
    moves: List[Move] = []
    for a, b in hand:
        if left in (a, b):
            moves.append((a, b, LEFT))
        if right in (a, b):
            moves.append((a, b, RIGHT))
    return moves


def ends_after(ends: Optional[Tuple[int, int]], move: Move) -> Tuple[int, int]:
    """Open ends once ``move`` is played (the tile's matching half is hidden against the chain)."""
    a, b, where = move
    if where == FIRST:
        return a, b
    left, right = ends  # type: ignore[misc]
    if where == LEFT:
        return (b if a == left else a), right
    return left, (b if a == right else a)


def play(scenario: Scenario, move: Move) -> Scenario:
    """The scenario after the player puts ``move`` on the table (tile leaves the hand)."""
    a, b, where = move
    hand = list(scenario.hand)
    hand.remove((a, b))
    if where == FIRST:
        table = ((a, b),)
    elif where == LEFT:
        left = scenario.table[0][0]
        table = ((b, a) if a == left else (a, b),) + scenario.table
    else:
        right = scenario.table[-1][1]
        table = scenario.table + ((a, b) if a == right else (b, a),)
    return Scenario(table=table, hand=tuple(hand))


# --------------------------------------------------------------------------------------------
# Policies


def longest_run(ends: Tuple[int, int], hand: Sequence[Tile]) -> int:
    """Most tiles of ``hand`` the player could go on playing alone from ``ends``.

    Exhaustive search over the order and side of every play, memoised on
    (left end, right end, set of tiles left), which is all the future depends on.
    """
    tiles = list(hand)
    memo: Dict[Tuple[int, int, int], int] = {}

    def best(left: int, right: int, mask: int) -> int:
        key = (left, right, mask)
        if key in memo:
            return memo[key]
        remaining = bin(mask).count("1")
        result = 0
        for i, (a, b) in enumerate(tiles):
            if not mask >> i & 1:
                continue
            rest = mask & ~(1 << i)
            for end, other in ((left, right), (right, left)):
                if end == a or end == b:
                    new_end = b if end == a else a
                    result = max(result, 1 + best(new_end, other, rest))
            if result == remaining:  # every tile placed: nothing can beat it
                break
        memo[key] = result
        return result

    return best(ends[0], ends[1], (1 << len(tiles)) - 1)


def move_scores(scenario: Scenario, policy: str) -> List[Tuple[Tuple[int, ...], Move]]:
    """(sort key, move) for every legal move; the policy picks the smallest key."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    scored = []
    for move in legal_moves(scenario.ends, scenario.hand):
        a, b, where = move
        tie_break = (-(a + b), where, a, b)  # heavier, then left before right, then smaller tile
        if policy == "max-chain":
            rest = list(scenario.hand)
            rest.remove((a, b))
            key = (-longest_run(ends_after(scenario.ends, move), rest),) + tie_break
        else:
            key = tie_break
        scored.append((key, move))
    return scored


def choose_move(scenario: Scenario, policy: str = "max-chain") -> Move:
    """The move ``policy`` plays in ``scenario`` (which must have a legal move).

    ``max-chain``: the move after which the player could keep playing the most further tiles
    from the hand alone; ties by larger pip sum, then left before right, then smaller tile.
    ``heaviest``: larger pip sum, then left before right, then smaller tile.
    """
    scored = move_scores(scenario, policy)
    if not scored:
        raise DominoError("no legal move in this scenario")
    return min(scored)[1]


# --------------------------------------------------------------------------------------------
# Encoding


def encode(scenario: Scenario) -> np.ndarray:
    """The length-72 input sequence (uint8) of a scenario; the hand is written sorted."""
    if len(scenario.table) > NUM_TILES or not 1 <= len(scenario.hand) <= HAND_MAX:
        raise DominoError(f"table of {len(scenario.table)} tiles / hand of {len(scenario.hand)} tiles does not fit")
    seq = np.zeros(SEQ_LEN, dtype=np.uint8)
    if scenario.table:
        seq[TABLE_START:TABLE_START + 2 * len(scenario.table)] = np.array(scenario.table).ravel() + 1
        left, right = scenario.ends  # type: ignore[misc]
        seq[LEFT_POS], seq[RIGHT_POS] = left + 1, right + 1
    hand = sorted(canonical(t) for t in scenario.hand)
    seq[HAND_START:HAND_START + 2 * len(hand)] = np.array(hand).ravel() + 1
    return seq


def encode_label(move: Move) -> np.ndarray:
    """The length-72 label sequence (uint8): a+1, b+1, where, then the ignore id 0."""
    seq = np.zeros(SEQ_LEN, dtype=np.uint8)
    seq[0], seq[1], seq[2] = move[0] + 1, move[1] + 1, move[2]
    return seq


def _tiles(tokens: np.ndarray, what: str) -> List[Tile]:
    """Read tile slots (pairs of tokens): filled slots first, then only empty ones."""
    pairs = tokens.reshape(-1, 2)
    filled = (pairs != 0).any(axis=1)
    count = int(filled.sum())
    if (pairs[:count] == 0).any() or filled[count:].any():
        raise DominoError(f"{what}: tiles must fill slots from the start, both halves set, then only empty slots")
    return [(int(x) - 1, int(y) - 1) for x, y in pairs[:count]]


def decode(inputs: np.ndarray) -> Scenario:
    """Parse and validate one input sequence; raise :class:`DominoError` naming the broken rule."""
    seq = np.asarray(inputs)
    if seq.shape != (SEQ_LEN,):
        raise DominoError(f"input has shape {seq.shape}, expected ({SEQ_LEN},)")
    if seq.min() < 0 or seq.max() >= VOCAB_SIZE:
        raise DominoError(f"input token out of range 0..{VOCAB_SIZE - 1} (min {seq.min()}, max {seq.max()})")
    table = _tiles(seq[TABLE_START:TABLE_END], "table")
    hand = _tiles(seq[HAND_START:HAND_END], "hand")
    for i in range(len(table) - 1):
        if table[i][1] != table[i + 1][0]:
            raise DominoError(f"table tiles {i} {table[i]} and {i + 1} {table[i + 1]} do not match")
    if not hand:
        raise DominoError("the hand is empty")
    if any(a > b for a, b in hand):
        raise DominoError("hand tiles must be written with a <= b")
    all_tiles = [canonical(t) for t in table] + hand
    if len(set(all_tiles)) != len(all_tiles):
        raise DominoError("a tile appears twice on the table and in the hand")
    ends = (int(seq[LEFT_POS]), int(seq[RIGHT_POS]))
    expected = (table[0][0] + 1, table[-1][1] + 1) if table else (0, 0)
    if ends != expected:
        raise DominoError(f"end tokens {ends} do not match the table (expected {expected})")
    return Scenario(table=tuple(table), hand=tuple(hand))


def decode_label(labels: np.ndarray) -> Move:
    """Parse one label sequence into (a, b, where); positions 3.. must be the ignore id 0."""
    seq = np.asarray(labels)
    if seq.shape != (SEQ_LEN,):
        raise DominoError(f"label has shape {seq.shape}, expected ({SEQ_LEN},)")
    if (seq[3:] != 0).any():
        raise DominoError("label positions 3..71 must be 0")
    a, b, where = int(seq[0]) - 1, int(seq[1]) - 1, int(seq[2])
    if not (0 <= a <= b <= MAX_PIP) or where not in WHERE_NAMES:
        raise DominoError(f"label ({seq[0]}, {seq[1]}, {seq[2]}) is not a move (a+1 <= b+1 in 1..7, where in 1..3)")
    return a, b, where


def check_example(inputs: np.ndarray, labels: np.ndarray, policy: Optional[str]) -> Tuple[Scenario, Move]:
    """Validate one example: it decodes, the label is legal, and (if given) the policy's choice."""
    scenario = decode(inputs)
    move = decode_label(labels)
    legal = legal_moves(scenario.ends, scenario.hand)
    if not legal:
        raise DominoError("the scenario has no legal move")
    if (move[0], move[1]) not in scenario.hand:
        raise DominoError(f"label tile {move[:2]} is not in the hand")
    if move not in legal:
        raise DominoError(f"label tile {move[:2]} cannot be played at the {WHERE_NAMES[move[2]]}")
    if policy is not None:
        chosen = choose_move(scenario, policy)
        if chosen != move:
            raise DominoError(f"label {describe_move(move)} is not the {policy} choice {describe_move(chosen)}")
    return scenario, move


def relabel(scenario: Scenario, perm: Sequence[int]) -> Scenario:
    """Rename every pip ``v`` to ``perm[v]`` (a bijection of 0..6); the chain stays consistent."""
    table = tuple((perm[l], perm[r]) for l, r in scenario.table)
    hand = tuple(sorted(canonical((perm[a], perm[b])) for a, b in scenario.hand))
    return Scenario(table=table, hand=hand)


def describe_move(move: Move) -> str:
    """'[a|b] at the left end' and the like, for messages."""
    a, b, where = move
    return f"[{a}|{b}] at the {WHERE_NAMES[where]}"


# --------------------------------------------------------------------------------------------
# Reading a built dataset and drawing tiles (inspector and visualizer)


@dataclass
class DominoSplit:
    """One split of a domino dataset on disk (the arrays of its first set)."""

    name: str
    set_name: str
    inputs: np.ndarray
    labels: np.ndarray
    puzzle_indices: np.ndarray
    group_indices: np.ndarray
    puzzle_identifiers: np.ndarray
    num_puzzle_identifiers: int

    def locate(self, index: int) -> str:
        """'train example 5 (puzzle 5, group 2)': where an example sits, for messages."""
        puzzle = int(np.searchsorted(self.puzzle_indices, index, side="right")) - 1
        group = int(np.searchsorted(self.group_indices, puzzle, side="right")) - 1
        return f"{self.name} example {index} (puzzle {puzzle}, group {group})"


def read_split(data_path: str, split: str) -> DominoSplit:
    """Load ``data_path/split`` and check its shape as a domino dataset; raise DatasetError if not."""
    split_dir = os.path.join(data_path, split)
    if not os.path.isdir(split_dir):
        raise DatasetError(f"{split_dir}: no such split folder")
    meta = load_metadata(split_dir)
    if meta.seq_len != SEQ_LEN or meta.vocab_size != VOCAB_SIZE:
        raise DatasetError(f"{split_dir}: seq_len {meta.seq_len} / vocab {meta.vocab_size}, "
                           f"a domino dataset has {SEQ_LEN} / {VOCAB_SIZE}")
    set_name = meta.sets[0]
    arrays = {}
    for field in DATASET_FIELDS:
        path = os.path.join(split_dir, f"{set_name}__{field}.npy")
        try:
            arrays[field] = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DatasetError(f"{path}: not a readable .npy array, truncated or damaged? ({e})") from None
        if arrays[field].dtype.kind not in "iu":
            raise DatasetError(f"{path}: integer array expected, found {arrays[field].dtype}")
    inputs, labels = arrays["inputs"], arrays["labels"]
    if inputs.ndim != 2 or inputs.shape[1] != SEQ_LEN or labels.shape != inputs.shape:
        raise DatasetError(f"{split_dir}: inputs {inputs.shape} and labels {labels.shape} must both be [N, {SEQ_LEN}]")
    pi, gi = np.asarray(arrays["puzzle_indices"]), np.asarray(arrays["group_indices"])
    if pi.ndim != 1 or len(pi) < 1 or pi[0] != 0 or pi[-1] != len(inputs) or (np.diff(pi) < 0).any():
        raise DatasetError(f"{split_dir}: puzzle_indices must rise from 0 to the number of examples {len(inputs)}")
    if gi.ndim != 1 or len(gi) < 1 or gi[0] != 0 or gi[-1] != len(pi) - 1 or (np.diff(gi) < 0).any():
        raise DatasetError(f"{split_dir}: group_indices must rise from 0 to the number of puzzles {len(pi) - 1}")
    ids = np.asarray(arrays["puzzle_identifiers"])
    if ids.shape != (len(pi) - 1,) or (len(ids) and (ids.min() < 0 or ids.max() >= meta.num_puzzle_identifiers)):
        raise DatasetError(f"{split_dir}: puzzle_identifiers must hold one id in 0..{meta.num_puzzle_identifiers - 1} per puzzle")
    return DominoSplit(split, set_name, inputs, labels, pi, gi, ids, meta.num_puzzle_identifiers)


def read_policy(data_path: str) -> str:
    """The policy a dataset was built with (from its ``domino.json``)."""
    path = os.path.join(data_path, POLICY_FILE)
    try:
        with open(path) as f:
            policy = json.load(f)["policy"]
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing; not a domino dataset built by build_domino_dataset.py "
                           "(pass --policy to say which policy made the labels)") from None
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DatasetError(f"{path}: not a valid policy file (needs {{\"policy\": ...}})") from None
    if policy not in POLICIES:
        raise DatasetError(f"{path}: unknown policy {policy!r}")
    return policy


def tile_str(tile: Sequence[int]) -> str:
    """'[a|b]'."""
    return f"[{tile[0]}|{tile[1]}]"


def table_str(table: Sequence[Tile]) -> str:
    """The chain as '[a|b][b|c]...', or '(empty)'."""
    return "".join(tile_str(t) for t in table) if table else "(empty)"


def split_arguments(description: str, extra: Sequence[Tuple[str, dict]], policy_help: str):
    """The command line of the domino dataset scripts: ``--data-path``, ``--split``, the script's
    own options ``extra`` (flag, ``add_argument`` keywords) and ``--policy``."""
    parser = ArgumentParser(description=description)
    parser.add_argument("--data-path", "--data_path", required=True)
    parser.add_argument("--split", default="train")
    for flag, kwargs in extra:
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--policy", choices=POLICIES, default=None, help=policy_help)
    return parser
