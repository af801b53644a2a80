"""Domino positions as ``scripts/inspect_domino_dataset.py`` prints them, one per line:

    table: [0|3][3|4][4|0] hand: [0|6] [3|6]

The table chain runs left to right (``(empty)`` before the first move); the open ends follow
from it (an ``ends: 0 0`` part, as the inspector prints, is checked against the chain). The
answer is the move: the tile and where it goes, ``[0|6] left`` / ``right`` / ``first`` (first
tile on an empty table). An illegal answer is reported as such. The rules, the encoding and the
dataset's policy (the truth, from ``domino.json``) come from ``dataset/domino.py``.
"""
from __future__ import annotations

import os
import re
from typing import Optional

import numpy as np

from dataset.common import DatasetError
from dataset.domino import (FIRST, HAND_MAX, LEFT, MAX_PIP, NUM_TILES, POLICY_FILE, RIGHT, SEQ_LEN, VOCAB_SIZE, DominoError,
                            Scenario, choose_move, decode, encode, encode_label, legal_moves, read_policy, table_str, tile_str)
from tasks.base import Cells, Puzzle, PuzzleError, TaskCodec, register

WHERE_WORDS = {LEFT: "left", RIGHT: "right", FIRST: "first"}
_LINE = re.compile(r"^\s*table\s*(?:\(\d+\))?\s*:(?P<table>.*?)(?:ends\s*:(?P<ends>.*?))?hand\s*(?:\(\d+\))?\s*:(?P<hand>.*)$",
                   re.IGNORECASE)
_TILE = re.compile(r"\[\s*(\d+)\s*\|\s*(\d+)\s*\]")


def _tiles(text: str, what: str):
    tiles = [(int(a), int(b)) for a, b in _TILE.findall(text)]
    rest = _TILE.sub("", text).strip()
    if rest and not (what == "table" and rest == "(empty)" and not tiles):
        raise PuzzleError(f"{what}: unexpected text {rest!r}; tiles are written [a|b] with pips 0..{MAX_PIP}")
    for a, b in tiles:
        if a > MAX_PIP or b > MAX_PIP:
            raise PuzzleError(f"{what}: tile [{a}|{b}] has a pip outside 0..{MAX_PIP}")
    return tiles


def format_move(tokens: np.ndarray) -> str:
    """``[a|b] left`` from the first three answer tokens (``a+1, b+1, where``), or what they hold."""
    a, b, where = (int(t) for t in tokens[:3])
    if 1 <= a <= MAX_PIP + 1 and 1 <= b <= MAX_PIP + 1 and where in WHERE_WORDS:
        return f"{tile_str((a - 1, b - 1))} {WHERE_WORDS[where]}"
    return f"not a move (tokens {a} {b} {where})"


@register
class DominoCodec(TaskCodec):
    name = "domino"
    checks_answers = True

    def __init__(self, seq_len: Optional[int] = None, data_path: Optional[str] = None):
        super().__init__(seq_len, data_path)
        self.policy = None
        if data_path is not None and os.path.isfile(os.path.join(data_path, POLICY_FILE)):
            try:
                self.policy = read_policy(data_path)
            except DatasetError:
                self.policy = None

    def parse(self, text: str, name: str = "") -> Puzzle:
        m = _LINE.match(text.strip())
        if not m:
            raise PuzzleError("expected 'table: [a|b][b|c]... hand: [x|y] [u|v] ...' (table '(empty)' before the first move)")
        table, hand = _tiles(m["table"], "table"), _tiles(m["hand"], "hand")
        if not 1 <= len(hand) <= HAND_MAX:
            raise PuzzleError(f"hand holds {len(hand)} tiles; it must hold 1..{HAND_MAX}")
        if len(table) > NUM_TILES:
            raise PuzzleError(f"table holds {len(table)} tiles, more than the {NUM_TILES} of a set")
        scenario = Scenario(table=tuple(table), hand=tuple(hand))
        try:
            tokens = encode(scenario)
            scenario = decode(tokens)  # the rules: matching chain, no tile twice
        except DominoError as e:
            raise PuzzleError(str(e)) from None
        if m["ends"] is not None and m["ends"].strip() not in ("", "-"):
            given = tuple(int(x) for x in re.findall(r"\d+", m["ends"]))
            if given != scenario.ends:
                raise PuzzleError(f"ends {' '.join(map(str, given))} do not match the table (its ends are "
                                  f"{'-' if scenario.ends is None else ' '.join(map(str, scenario.ends))})")
        if not legal_moves(scenario.ends, scenario.hand):
            raise PuzzleError("no tile of the hand can be played (the player passes)")
        truth = choose_move(scenario, self.policy) if self.policy else None
        return Puzzle(data=scenario, truth=truth)

    def check_shapes(self, seq_len: int, vocab_size: int) -> Optional[str]:
        if seq_len != SEQ_LEN or vocab_size != VOCAB_SIZE:
            return f"a domino model has seq_len {SEQ_LEN} and vocab {VOCAB_SIZE}, this one {seq_len} and {vocab_size}"
        return None

    def encode(self, data: Scenario) -> np.ndarray:
        return encode(data).astype(np.int32)

    def encode_answer(self, truth) -> np.ndarray:
        return encode_label(truth).astype(np.int32)

    def format_tokens(self, tokens: np.ndarray) -> str:
        try:
            scenario = decode(np.asarray(tokens))
        except DominoError as e:
            raise PuzzleError(str(e)) from None
        return f"table: {table_str(scenario.table)} hand: {' '.join(tile_str(t) for t in scenario.hand)}"

    def answer(self, puzzle: Puzzle, tokens: np.ndarray) -> str:
        return format_move(tokens)

    def problem(self, puzzle: Puzzle, tokens: np.ndarray) -> Optional[str]:
        a, b, where = (int(t) for t in tokens[:3])
        scenario = puzzle.data
        if format_move(tokens).startswith("not a move"):
            return "illegal: the answer is not a move"
        tile = (min(a, b) - 1, max(a, b) - 1)
        if tile not in scenario.hand:
            return f"illegal: {tile_str(tile)} is not in the hand"
        if (tile[0], tile[1], where) not in legal_moves(scenario.ends, scenario.hand):
            return f"illegal: {tile_str(tile)} cannot be played {WHERE_WORDS[where]}"
        return None

    def changed_cells(self, before: np.ndarray, after: np.ndarray) -> int:
        return int(np.count_nonzero(before[:3] != after[:3]))

    def cells(self, puzzle: Puzzle, tokens: np.ndarray, is_input: bool) -> Cells:
        scenario = puzzle.data
        lines = [f"table: {table_str(scenario.table)}", f"hand:  {' '.join(tile_str(t) for t in scenario.hand)}"]
        if not is_input:
            problem = self.problem(puzzle, tokens)
            lines = [f"move:  {format_move(tokens)}", "legal" if problem is None else problem]
        return Cells(colours=np.zeros((0, 0, 3), dtype=np.uint8), caption=lines)
