"""The value codec of custom tasks: how an input or output in a file's notation becomes token ids and back.

A value is a string (one token per character), a list of tokens (strings or integers) or a 2-D
list (a grid). Tokens: PAD 0, end marker 1, then the task's vocabulary. Sequences and lists are
laid out from position 0 followed by an end marker; grids row-major on a square canvas with an
end marker after the last column and below the last row, as ARC grids are. Used by
``dataset/build_custom_dataset.py`` (the command line) and by ``tasks/custom.py`` (reading
puzzles and writing answers in the notation of the examples file).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from dataset.common import DatasetError

PAD_ID, EOS_ID, FIRST_TOKEN_ID = 0, 1, 2
SPECIAL_TOKENS = ["<pad>", "<eos>"]


def permute_tokens(option: str) -> List[str]:
    """Tokens of ``permute=<tokens>``: comma-separated when there is a comma, else one per character."""
    spec = option[len("permute="):]
    return [t for t in spec.split(",") if t] if "," in spec else list(spec)


@dataclass
class Value:
    """One input or output: its kind, its tokens (``[L]`` or ``[H, W]`` array of str) and whether they were ints."""

    kind: str
    tokens: np.ndarray
    ints: bool


def _token(x: Any, where: str) -> Tuple[str, bool]:
    if isinstance(x, bool) or not isinstance(x, (str, int)):
        raise DatasetError(f"{where}: tokens must be strings or integers, got {json.dumps(x)[:40]}")
    if isinstance(x, str) and not x:
        raise DatasetError(f"{where}: empty string token")
    return str(x), isinstance(x, int)


def parse_value(value: Any, where: str) -> Value:
    """A string, list of tokens or 2-D list -> :class:`Value`; :class:`DatasetError` naming ``where`` otherwise."""
    if isinstance(value, str):
        if not value:
            raise DatasetError(f"{where}: is empty")
        return Value("string", np.array(list(value), dtype=object), False)
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{where}: expected a string, a list of tokens or a grid (list of rows), "
                           f"got {json.dumps(value)[:40]}")
    if all(isinstance(row, list) for row in value):
        width = len(value[0])
        if width == 0 or any(len(row) != width for row in value):
            raise DatasetError(f"{where}: grid rows must be non-empty and of equal length "
                               f"(lengths {[len(row) for row in value][:8]})")
        cells = [_token(x, where) for row in value for x in row]
        return Value("grid", np.array([c for c, _ in cells], dtype=object).reshape(len(value), width),
                     all(i for _, i in cells))
    if any(isinstance(x, list) for x in value):
        raise DatasetError(f"{where}: mixes tokens and rows (a grid is a list of lists)")
    cells = [_token(x, where) for x in value]
    return Value("list", np.array([c for c, _ in cells], dtype=object), all(i for _, i in cells))


def as_int(token: str) -> Optional[int]:
    """The integer a token spells in ASCII digits (``"-3"``, ``"10"``), else None."""
    digits = token[1:] if token.startswith("-") else token
    return int(token) if digits.isascii() and digits.isdigit() else None


def lay_out(ids: np.ndarray, seq_len: int, grid_size: Optional[int]) -> np.ndarray:
    """Token ids ``[L]`` or ``[H, W]`` -> one ``[seq_len]`` row: PAD around, end markers after sequences and grids."""
    row = np.full(seq_len, PAD_ID, dtype=np.int32)
    if ids.ndim == 1:
        row[:ids.size] = ids
        if ids.size < seq_len:
            row[ids.size] = EOS_ID
        return row
    h, w = ids.shape
    canvas = row[:grid_size * grid_size].reshape(grid_size, grid_size)  # a view: writes land in row
    canvas[:h, :w] = ids
    if w < grid_size:
        canvas[:h, w] = EOS_ID
    if h < grid_size:
        canvas[h, :min(w + 1, grid_size)] = EOS_ID
    return row


def read_back(row: np.ndarray, kind: str, grid_size: Optional[int]) -> np.ndarray:
    """Token ids of a value from a laid-out row (the inverse of :func:`lay_out`; model outputs cropped the same way).

    A sequence ends at the first PAD or end marker; a grid is the largest top-left rectangle of
    task tokens on the canvas (as ARC predictions are cropped).
    """
    row = np.asarray(row)
    if kind != "grid":
        stop = np.flatnonzero(row < FIRST_TOKEN_ID)
        return row[:stop[0] if stop.size else row.size]
    canvas = row[:grid_size * grid_size].reshape(grid_size, grid_size)
    real = canvas >= FIRST_TOKEN_ID
    run = np.where(real.all(axis=1), grid_size, np.argmin(real, axis=1))
    width = np.minimum.accumulate(run)
    area = np.arange(1, grid_size + 1) * width
    best = int(np.argmax(area))
    return canvas[:best + 1, :width[best]] if area[best] else canvas[:0, :0]


def to_value(ids: np.ndarray, kind: str, ints: bool, vocab: Sequence[str]) -> Any:
    """Token ids -> the notation of the file: a string, a list of tokens, or a list of rows."""
    tokens = [vocab[i] if 0 <= i < len(vocab) else "?" for i in np.asarray(ids).ravel().tolist()]
    if ints:
        tokens = [t if as_int(t) is None else as_int(t) for t in tokens]
    if kind == "string":
        return "".join(tokens)
    if kind == "list":
        return tokens
    width = ids.shape[1] if ids.ndim == 2 and ids.size else 0
    return [tokens[r * width:(r + 1) * width] for r in range(ids.shape[0])] if width else []
