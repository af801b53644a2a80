"""Tasks built with ``dataset/build_custom_dataset.py``: puzzles in the notation of the examples file.

A puzzle is written as the file's inputs are: a string (``5038``), a JSON list of tokens
(``["a", "b"]``, ``[3, 1, 2]``) or a JSON grid (``[[1, 0], [0, 1]]``); a whole JSONL line
``{"input": ..., "output": ..., "puzzle": ...}`` works too (the output is the truth, a known
``puzzle`` name its trained identifier), so the builder's own test file can be a puzzle file.
The answer has the shape of the file's outputs, decoded with the vocabulary stored in
``dataset.json``. Answers are not checked by any rule (the task's rules are unknown here).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from dataset.common import DatasetError
from dataset.custom import FIRST_TOKEN_ID, lay_out, parse_value, permute_tokens, read_back, to_value
from tasks.base import Cells, Puzzle, PuzzleError, Row, TaskCodec, register
from tasks.views import (CanvasViews, CellViews, Views, distinct_choices, identity_cells, random_permutations, random_words,
                         row_keys, splitmix64)
from utils import json_text

TOKEN_FILL, MARKER_FILL = (236, 239, 244), (255, 255, 255)
TEXT_COLOUR = (20, 24, 33)


def read_custom_layout(data_path: str) -> Dict[str, Any]:
    """``vocab``, ``custom`` (shapes) and ``seq_len`` from ``<data_path>/train/dataset.json``."""
    path = os.path.join(data_path, "train", "dataset.json")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise PuzzleError(f"{path}: cannot read the custom task's vocabulary ({e})") from None
    if "vocab" not in meta or "custom" not in meta:
        raise PuzzleError(f"{path}: no 'vocab' and 'custom' entries; rebuild it with dataset/build_custom_dataset.py")
    return meta


@register
class CustomCodec(TaskCodec):
    name = "custom"

    def __init__(self, seq_len: Optional[int] = None, data_path: Optional[str] = None):
        super().__init__(seq_len, data_path)
        self.vocab: Optional[list] = None
        self.augment: List[str] = []
        if data_path is None:
            return  # only check_shapes works without the dataset (it has nothing to check then)
        meta = read_custom_layout(data_path)
        self.vocab = list(meta["vocab"])
        self.layout = dict(meta["custom"])
        # The symmetries the dataset was built with (--augment); datasets built before it was recorded have none.
        self.augment = list(meta.get("augment") or [])
        self.seq_len = seq_len or int(meta["seq_len"])
        self.token_id = {t: i for i, t in enumerate(self.vocab) if i >= FIRST_TOKEN_ID}
        self.identifier_of: Dict[str, int] = {}
        names_path = os.path.join(data_path, "identifiers.json")
        if os.path.isfile(names_path):
            with open(names_path) as f:
                self.identifier_of = {n: i for i, n in enumerate(json.load(f)) if i > 0}

    # ---- reading
    def _value(self, raw: Any, what: str) -> np.ndarray:
        """Token ids of an input or output in the file's notation (shape, vocabulary and size checked)."""
        kind = self.layout[what]
        try:
            value = parse_value(raw, what)
        except DatasetError as e:
            raise PuzzleError(str(e)) from None
        if value.kind != kind:
            raise PuzzleError(f"{what} is a {value.kind}; this task's {what}s are {kind}s")
        unknown = [t for t in value.tokens.ravel().tolist() if t not in self.token_id]
        if unknown:
            raise PuzzleError(f"{what} token {unknown[0]!r} is not in the vocabulary "
                              f"({' '.join(self.vocab[FIRST_TOKEN_ID:][:20])})")
        grid = self.layout.get("grid_size")
        if kind == "grid" and max(value.tokens.shape) > grid:
            raise PuzzleError(f"{what} grid is {value.tokens.shape[0]}x{value.tokens.shape[1]}; this task's canvas is "
                              f"{grid}x{grid}")
        if kind != "grid" and value.tokens.size > self.seq_len:
            raise PuzzleError(f"{what} has {value.tokens.size} tokens; this checkpoint's seq_len is {self.seq_len}")
        return np.vectorize(self.token_id.__getitem__, otypes=[np.int32])(value.tokens)

    def parse(self, text: str, name: str = "") -> Puzzle:
        if self.vocab is None:
            raise PuzzleError("a custom task needs its dataset folder (its dataset.json holds the vocabulary)")
        raw: Any = text
        try:
            raw = json_text.loads(text)
        except json.JSONDecodeError as e:
            if self.layout["input"] != "string":
                raise PuzzleError(f"not valid JSON ({e.msg}); this task's inputs are {self.layout['input']}s "
                                  "written as JSON (or a line {\"input\": ..., \"output\": ...})") from None
        if self.layout["input"] == "string" and not isinstance(raw, (str, dict)):
            raw = text.strip()  # e.g. 0123 parses as a JSON number: the string is meant
        puzzle_name, truth = "", None
        if isinstance(raw, dict):
            if "input" not in raw:
                raise PuzzleError("an object needs an \"input\" (and optionally \"output\", \"puzzle\")")
            if raw.get("output") is not None:
                truth = self._value(raw["output"], "output")
            puzzle_name = "" if raw.get("puzzle") is None else str(raw["puzzle"])
            raw = raw["input"]
        return Puzzle(data=self._value(raw, "input"), name=puzzle_name, truth=truth)

    # ---- tokens
    def encode(self, data: np.ndarray) -> np.ndarray:
        return lay_out(data, self.seq_len, self.layout.get("grid_size"))

    def encode_answer(self, truth: np.ndarray) -> np.ndarray:
        return lay_out(truth, self.seq_len, self.layout.get("grid_size"))

    def rows(self, puzzle: Puzzle):
        labels = None if puzzle.truth is None else self.encode_answer(puzzle.truth)
        identifier = self.identifier_of.get(puzzle.name, 0)  # an unknown name runs with the blank identifier
        return [Row(inputs=self.encode(puzzle.data), labels=labels, identifier=identifier, name=puzzle.name)]

    def _notation(self, tokens: np.ndarray, what: str) -> Any:
        kind = self.layout[what]
        return to_value(read_back(tokens, kind, self.layout.get("grid_size")), kind, self.layout[f"{what}_ints"],
                        self.vocab)

    def format_tokens(self, tokens: np.ndarray) -> str:
        value = self._notation(tokens, "input")
        return value if isinstance(value, str) and not value.lstrip().startswith(("[", "{", '"')) else json.dumps(value)

    def answer(self, puzzle: Puzzle, tokens: np.ndarray) -> Any:
        return self._notation(tokens, "output")

    def check_shapes(self, seq_len: int, vocab_size: int) -> Optional[str]:
        if self.vocab is not None and vocab_size != len(self.vocab):
            return f"the dataset's vocabulary has {len(self.vocab)} tokens, this model {vocab_size}"
        return None

    # ---- test-time views
    @property
    def views_missing(self) -> Optional[str]:
        if not self.augment:
            return "this custom task's dataset was built without --augment: it records no symmetries to draw views from"
        return None

    def views(self, inputs: np.ndarray, num_views: int, seed: int = 0,
              identifiers: Optional[np.ndarray] = None) -> Optional[Views]:
        """The ``--augment`` the dataset was built with: the 8 symmetries of the grid canvas
        (``dihedral``; views 1..7 the other seven in a random order, then cycling) and/or a random
        bijection of the ``permute=`` tokens per view. None when it was built without one."""
        if not self.augment:
            return None
        inputs = np.asarray(inputs)
        batch, seq_len = inputs.shape
        keys = row_keys(inputs, seed)
        views = identity_cells(batch, num_views, seq_len, len(self.vocab))
        tokens = views.tokens
        for option in self.augment:
            if option.startswith("permute="):
                ids = np.array([self.token_id[t] for t in permute_tokens(option)])
                order = random_permutations(random_words(splitmix64(keys), num_views, ids.size))
                order[:, 0] = np.arange(ids.size)
                tokens[..., ids] = ids[order]
        if "dihedral" in self.augment:
            return CanvasViews(dihedral=distinct_choices(keys, num_views, 8), tokens=tokens,
                               side=self.layout["grid_size"], eos_corner=True, first_real=FIRST_TOKEN_ID)
        return CellViews(positions=views.positions, tokens=tokens)

    # ---- pictures
    def cells(self, puzzle: Puzzle, tokens: np.ndarray, is_input: bool) -> Cells:
        kind = self.layout["input" if is_input else "output"]
        ids = read_back(tokens, kind, self.layout.get("grid_size"))
        grid = ids if ids.ndim == 2 else ids[None, :]
        if grid.size == 0:
            grid = np.zeros((1, 1), dtype=np.int64)
        text = [[self.vocab[i] if FIRST_TOKEN_ID <= i < len(self.vocab) else "" for i in row.tolist()] for row in grid]
        colours = np.where((grid >= FIRST_TOKEN_ID)[..., None], TOKEN_FILL, MARKER_FILL).astype(np.uint8)
        ink = np.broadcast_to(np.array(TEXT_COLOUR, dtype=np.uint8), colours.shape).copy()
        return Cells(colours=colours, text=text, text_colours=ink)
