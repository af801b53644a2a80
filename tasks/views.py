"""Views of puzzles for test-time scaling: a task's symmetries as maps of encoded rows.

A view shows the model a transformed puzzle (the forward map of its input row) and brings the
model's answer back to the puzzle's own frame (the back map of the prediction row); an answer
that is right in a view is right, mapped back, in the original. Each codec declares its task's
symmetries (``TaskCodec.views``); a task without any gets no views and is sampled by noise only.

Views are drawn per puzzle from ``seed`` and the row's own tokens (a counter-based hash, no
generator state), so a puzzle gets the same views in any batch, on any rank, in ``evaluate.py``
and in ``predict.py``. View 0 of every puzzle is the puzzle itself. Both maps run on whole
batches ``[B, N, seq_len]`` at once.

Two kinds of map cover the built-in tasks:

- :class:`CellViews`: fixed layouts (Sudoku, mazes, sequences): each view moves cells by one
  permutation of positions and relabels tokens by one bijection of the vocabulary.
- :class:`CanvasViews`: grids laid top-left on a square canvas with end markers (ARC, custom
  grids): a dihedral map of the grid (its height and width may swap), re-laid top-left, and a
  bijection of the tokens. The back map first crops the prediction to its grid, as the ARC
  evaluator reads predictions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from dataset.common import dihedral_transform

# ----------------------------------------------------------------------------------------------
# Keyed randomness: splitmix64 on uint64 counters (wrapping arithmetic is intended)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser of ``x + golden``: a bijective mix of 64-bit words, element-wise."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def row_keys(inputs: np.ndarray, seed: int) -> np.ndarray:
    """One 64-bit key per row of ``inputs`` ``[B, L]`` from its tokens and ``seed``."""
    inputs = np.asarray(inputs)
    weights = splitmix64(np.arange(inputs.shape[1], dtype=np.uint64) + splitmix64(np.uint64(seed % 2 ** 64)))
    with np.errstate(over="ignore"):
        folded = ((inputs.astype(np.uint64) + np.uint64(1)) * (weights | np.uint64(1))).sum(axis=1, dtype=np.uint64)
    return splitmix64(folded ^ np.uint64(seed % 2 ** 64))


def random_words(keys: np.ndarray, num_views: int, width: int) -> np.ndarray:
    """Independent uniform 64-bit words ``[B, num_views, width]``, a pure function of the row keys."""
    counters = splitmix64(np.arange(num_views * width, dtype=np.uint64)).reshape(1, num_views, width)
    with np.errstate(over="ignore"):
        return splitmix64(keys.astype(np.uint64)[:, None, None] * _GOLDEN ^ counters)


def random_permutations(words: np.ndarray) -> np.ndarray:
    """A uniform random permutation of ``range(k)`` along the last axis of ``words`` (``[..., k]``)."""
    return np.argsort(words, axis=-1, kind="stable")


def invert_permutations(perm: np.ndarray) -> np.ndarray:
    """The inverse of every permutation along the last axis."""
    inverse = np.empty_like(perm)
    np.put_along_axis(inverse, perm, np.broadcast_to(np.arange(perm.shape[-1]), perm.shape), axis=-1)
    return inverse


# ----------------------------------------------------------------------------------------------
# The maps

class Views:
    """``num_views`` views of each of ``B`` rows: ``forward`` and ``back`` maps on token rows.

    ``identifiers`` ``[B, N]``: the puzzle identifier each view runs with (ARC versions have
    their own trained embeddings); None keeps each row's own identifier.
    """

    identifiers: Optional[np.ndarray] = None

    @property
    def shape(self):
        """``(B, N)``: rows and views per row."""
        raise NotImplementedError

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        """Input rows ``[B, L]`` -> the rows every view shows the model ``[B, N, L]``."""
        raise NotImplementedError

    def back(self, preds: np.ndarray) -> np.ndarray:
        """Predictions of every view ``[B, N, L]`` -> the same answers in each row's own frame."""
        raise NotImplementedError


@dataclass
class CellViews(Views):
    """Views that move cells (``positions``) and relabel tokens (``tokens``), one of each per view.

    Cell ``i`` of a view shows cell ``positions[b, v, i]`` of the row; token ``t`` is shown as
    ``tokens[b, v, t]``. Both are permutations, so the back map is their inverse.
    """

    positions: np.ndarray  # [B, N, L]
    tokens: np.ndarray  # [B, N, V]
    identifiers: Optional[np.ndarray] = None

    @property
    def shape(self):
        return self.positions.shape[:2]

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        inputs = np.asarray(inputs)
        moved = np.take_along_axis(np.broadcast_to(inputs[:, None, :], self.positions.shape), self.positions, axis=2)
        return np.take_along_axis(self.tokens, moved.astype(np.int64), axis=2).astype(inputs.dtype)

    def back(self, preds: np.ndarray) -> np.ndarray:
        preds = np.asarray(preds)
        relabelled = np.take_along_axis(invert_permutations(self.tokens), preds.astype(np.int64), axis=2)
        return np.take_along_axis(relabelled, invert_permutations(self.positions), axis=2).astype(preds.dtype)


def identity_cells(batch: int, num_views: int, seq_len: int, vocab_size: int) -> CellViews:
    """``num_views`` copies of every row, unchanged (the starting point of the codecs' views)."""
    return CellViews(positions=np.broadcast_to(np.arange(seq_len), (batch, num_views, seq_len)).copy(),
                     tokens=np.broadcast_to(np.arange(vocab_size), (batch, num_views, vocab_size)).copy())


# Dihedral maps of an h x w grid, as inverse formulas: view cell (R, C) shows grid cell (r, c) with
# r = R or C (swap), then flipped to h-1-r (flip_r); c likewise with w. Ids as dihedral_transform.
DIHEDRAL_SWAP = np.array([0, 1, 0, 1, 0, 0, 1, 1], dtype=bool)
DIHEDRAL_FLIP_R = np.array([0, 0, 1, 1, 0, 1, 0, 1], dtype=bool)
DIHEDRAL_FLIP_C = np.array([0, 1, 1, 0, 1, 0, 0, 1], dtype=bool)
DIHEDRAL_INVERSE = np.array([0, 3, 2, 1, 4, 5, 6, 7])


def _compose_table() -> np.ndarray:
    """``DIHEDRAL_COMPOSE[a, b]``: the id of applying ``b`` first, then ``a``."""
    grid = np.arange(6).reshape(2, 3)
    forms = [dihedral_transform(grid, t) for t in range(8)]
    table = np.zeros((8, 8), dtype=np.int64)
    for a in range(8):
        for b in range(8):
            both = dihedral_transform(forms[b], a)
            table[a, b] = next(t for t in range(8) if forms[t].shape == both.shape and (forms[t] == both).all())
    return table


DIHEDRAL_COMPOSE = _compose_table()


def dihedral_positions(n: int) -> np.ndarray:
    """``[8, n*n]``: cell ``i`` of an n x n grid under dihedral map ``t`` shows cell ``[t, i]``."""
    cells = np.arange(n * n).reshape(n, n)
    return np.stack([np.ascontiguousarray(dihedral_transform(cells, t)).ravel() for t in range(8)])


def crop_shapes(rows: np.ndarray, side: int, first_real: int = 2, height: Optional[int] = None) -> np.ndarray:
    """``[M, 2]`` height and width of the grid on each row's canvas, as ``crop_arc_grid`` reads it.

    The canvas is ``height`` (default ``side``) rows of ``side`` cells. The grid is the largest
    top-left rectangle of task tokens (``>= first_real``); the first on ties.
    """
    height = side if height is None else height
    canvas = np.asarray(rows)[:, :height * side].reshape(-1, height, side)
    real = canvas >= first_real
    run = np.where(real.all(axis=2), side, np.argmax(~real, axis=2))  # first non-task token of each line
    width = np.minimum.accumulate(run, axis=1)
    area = width * np.arange(1, height + 1)
    best = np.argmax(area, axis=1)
    found = area[np.arange(len(best)), best] > 0
    return np.stack([np.where(found, best + 1, 0), np.where(found, width[np.arange(len(best)), best], 0)], axis=1)


def canvas_map(rows: np.ndarray, shapes: np.ndarray, dihedral: np.ndarray, tokens: np.ndarray, side: int,
               eos_corner: bool, pad: int = 0, eos: int = 1, height: Optional[int] = None) -> np.ndarray:
    """Rows ``[M, L]`` holding an ``h x w`` grid top-left on a ``side``-wide canvas -> the grid under
    ``dihedral[m]`` and ``tokens[m]`` laid out top-left again, with end markers after the last
    column and below the last row (and in the corner between them when ``eos_corner``).

    The canvas has ``height`` rows (default ``side``; a non-square canvas takes only the maps that
    keep a grid's orientation). Cells past the canvas (``L > height*side``) are kept as they are.
    """
    rows = np.asarray(rows)
    height = side if height is None else height
    m = rows.shape[0]
    h, w = shapes[:, 0:1, None], shapes[:, 1:2, None]
    swap, flip_r, flip_c = (table[dihedral][:, None, None] for table in (DIHEDRAL_SWAP, DIHEDRAL_FLIP_R, DIHEDRAL_FLIP_C))
    out_h, out_w = np.where(swap, w, h), np.where(swap, h, w)
    big_r, big_c = np.arange(height)[None, :, None], np.arange(side)[None, None, :]
    r = np.where(swap, big_c, big_r)
    c = np.where(swap, big_r, big_c)
    r = np.where(flip_r, h - 1 - r, r)
    c = np.where(flip_c, w - 1 - c, c)
    inside = (big_r < out_h) & (big_c < out_w)
    source = np.where(inside, r * side + c, 0).reshape(m, height * side)
    values = np.take_along_axis(rows[:, :height * side].astype(np.int64), source, axis=1)
    values = np.take_along_axis(tokens, values, axis=1).reshape(m, height, side)
    marker = ((big_r < out_h) & (big_c == out_w)) | ((big_r == out_h) & (big_c < out_w + int(eos_corner)))
    canvas = np.where(inside, values, np.where(marker, eos, pad))
    out = rows.copy()
    out[:, :height * side] = canvas.reshape(m, height * side)
    return out


@dataclass
class CanvasViews(Views):
    """Views of grids on a canvas: dihedral map ``dihedral[b, v]`` and token bijection ``tokens[b, v]``."""

    dihedral: np.ndarray  # [B, N] ids as dataset.common.dihedral_transform
    tokens: np.ndarray  # [B, N, V]
    side: int  # canvas width (ARC 30)
    eos_corner: bool  # an end marker in the corner below-right of the grid (custom grids) or not (ARC)
    first_real: int = 2  # tokens below this are PAD / end markers
    identifiers: Optional[np.ndarray] = None
    height: Optional[int] = None  # canvas rows when not square (ARC datasets on a fitted canvas)

    @property
    def shape(self):
        return self.dihedral.shape

    def _map(self, rows: np.ndarray, dihedral: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        flat = rows.reshape(-1, rows.shape[-1])
        shapes = crop_shapes(flat, self.side, self.first_real, self.height)
        mapped = canvas_map(flat, shapes, dihedral.reshape(-1), tokens.reshape(-1, tokens.shape[-1]), self.side,
                            self.eos_corner, height=self.height)
        return mapped.reshape(rows.shape)

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        inputs = np.asarray(inputs)
        b, n = self.shape
        return self._map(np.broadcast_to(inputs[:, None, :], (b, n, inputs.shape[-1])), self.dihedral, self.tokens)

    def back(self, preds: np.ndarray) -> np.ndarray:
        return self._map(np.asarray(preds), DIHEDRAL_INVERSE[self.dihedral], invert_permutations(self.tokens))


def distinct_choices(keys: np.ndarray, num_views: int, group_size: int) -> np.ndarray:
    """``[B, num_views]`` elements of a group of ``group_size``: view 0 the identity (0), views 1..
    a random order of the other elements per row, cycling when more views than elements are asked."""
    order = 1 + random_permutations(random_words(keys, 1, group_size - 1)[:, 0])  # [B, group_size - 1]
    cycle = np.concatenate([np.zeros((len(keys), 1), dtype=order.dtype), order], axis=1)
    return cycle[:, np.arange(num_views) % group_size]


__all__ = ["CanvasViews", "CellViews", "DIHEDRAL_COMPOSE", "DIHEDRAL_INVERSE", "Views", "canvas_map", "crop_shapes",
           "dihedral_positions", "distinct_choices", "identity_cells", "invert_permutations", "random_permutations",
           "random_words", "row_keys", "splitmix64"]
