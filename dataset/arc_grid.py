"""ARC grids as the builder writes them and the evaluator reads them back.

Encoding: colours 0..9 become tokens 2..11 on a canvas (30x30 as the original, or one fitted to a
benchmark's grids, recorded in ``dataset.json``), PAD 0, EOS 1. An augmented
task (dihedral transform ``t`` and colour map ``m``) is named ``<name>|||t<t>|||<m digits>``;
:func:`aug_names` writes that format and :func:`parse_aug_name` reads it, nowhere else.
Used by ``dataset/build_arc_dataset.py`` and ``evaluators/arc.py``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from dataset.common import DatasetError, inverse_dihedral_transform

ARC_MAX_GRID_SIZE = 30
SEQ_LEN = ARC_MAX_GRID_SIZE * ARC_MAX_GRID_SIZE
NUM_COLOURS = 10
PAD_TOKEN, EOS_TOKEN, COLOUR_OFFSET = 0, 1, 2
VOCAB_SIZE = COLOUR_OFFSET + NUM_COLOURS  # PAD, EOS and the colours
PUZZLE_ID_SEPARATOR = "|||"
# Dihedral maps (``dataset.common.dihedral_transform`` ids) that keep a grid's height and width.
NON_TRANSPOSING = (0, 2, 4, 5)


@dataclass(frozen=True)
class Canvas:
    """The ``height x width`` canvas every grid is drawn on (flattened row by row into the sequence).

    The original's is 30x30. A non-square canvas only admits the dihedral maps that keep a grid's
    orientation (:data:`NON_TRANSPOSING`): a transposed grid would not fit it.
    """

    height: int = ARC_MAX_GRID_SIZE
    width: int = ARC_MAX_GRID_SIZE

    @property
    def seq_len(self) -> int:
        return self.height * self.width

    @property
    def square(self) -> bool:
        return self.height == self.width

    @property
    def transforms(self) -> Tuple[int, ...]:
        """The dihedral maps augmentations may use on this canvas."""
        return tuple(range(8)) if self.square else NON_TRANSPOSING

    def __str__(self) -> str:
        return f"{self.height}x{self.width}"

    @classmethod
    def of(cls, seq_len: int, height: Optional[int] = None, width: Optional[int] = None) -> "Canvas":
        """The canvas a dataset records (``canvas_height``/``canvas_width`` in ``dataset.json``);
        datasets without them are the original's 30x30."""
        if height is None or width is None:
            return cls()
        if height * width != seq_len:
            raise DatasetError(f"canvas {height}x{width} does not match seq_len {seq_len}")
        return cls(height, width)


DEFAULT_CANVAS = Canvas()


def arc_grid_to_np(grid, where: str = "grid", max_shape: Optional[Tuple[int, int]] = (ARC_MAX_GRID_SIZE, ARC_MAX_GRID_SIZE)) -> np.ndarray:
    """ARC JSON grid (list of rows) -> uint8 array, with a clear error naming ``where`` if invalid.

    ``max_shape``: the largest ``(height, width)`` accepted (None: any size).
    """
    try:
        arr = np.array(grid)
    except ValueError:
        raise DatasetError(f"{where}: rows of different lengths") from None
    if arr.ndim != 2 or arr.size == 0:
        raise DatasetError(f"{where}: not a non-empty rectangular grid (shape {arr.shape})")
    if max_shape is not None and (arr.shape[0] > max_shape[0] or arr.shape[1] > max_shape[1]):
        raise DatasetError(f"{where}: grid is {arr.shape[0]}x{arr.shape[1]}, larger than "
                           f"{max_shape[0]}x{max_shape[1]}")
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > NUM_COLOURS - 1:
        raise DatasetError(f"{where}: colours must be integers 0..{NUM_COLOURS - 1}")
    return arr.astype(np.uint8)


def grid_hash(grid: np.ndarray) -> str:
    """SHA-256 of a 2-D grid's shape and bytes (as uint8), equal to the original's ``grid_hash``."""
    grid = np.asarray(grid)
    if grid.ndim != 2:
        raise ValueError(f"grid_hash expects a 2-D grid, got shape {grid.shape}")
    buffer = [int(x).to_bytes(1, byteorder="big") for x in grid.shape]
    buffer.append(np.ascontiguousarray(grid, dtype=np.uint8).tobytes())
    return hashlib.sha256(b"".join(buffer)).hexdigest()


def aug_names(name: str, trans_ids: Sequence[int], maps: np.ndarray) -> List[str]:
    """Names of augmented versions of task ``name``: ``<name>|||t<trans_id>|||<colour map digits>`` each.

    ``maps`` is ``[K, 10]`` (colour ``c`` becomes ``maps[k, c]``); all maps are turned into digit
    strings in one numpy conversion, since a builder names up to a million versions.
    """
    maps = np.asarray(maps)
    if maps.shape[0] == 0:
        return []
    digits = (maps + ord("0")).astype(np.uint8).view(f"S{maps.shape[1]}").ravel().astype(str).tolist()
    head = f"{name}{PUZZLE_ID_SEPARATOR}t"
    return [f"{head}{int(t)}{PUZZLE_ID_SEPARATOR}{d}" for t, d in zip(trans_ids, digits)]


def aug_name(name: str, trans_id: int, mapping: np.ndarray) -> str:
    """Name of one augmented task (see :func:`aug_names`)."""
    return aug_names(name, [trans_id], np.asarray(mapping)[None])[0]


def parse_aug_name(name: str) -> Tuple[str, int, np.ndarray]:
    """``(original task name, transform id, colour map)``; a plain name gives ``(name, 0, identity)``."""
    if PUZZLE_ID_SEPARATOR not in name:
        return name, 0, np.arange(NUM_COLOURS, dtype=np.uint8)
    parts = name.split(PUZZLE_ID_SEPARATOR)
    trans, perm = parts[-2:]
    return parts[0], int(trans[1:]), np.array([int(ch) for ch in perm], dtype=np.uint8)  # trans is "t<id>"


def inverse_aug(name: str) -> Tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """``(original task name, function mapping an augmented grid back to the original frame)``."""
    if PUZZLE_ID_SEPARATOR not in name:
        return name, lambda x: x
    base, trans_id, mapping = parse_aug_name(name)
    inv_perm = np.argsort(mapping).astype(np.uint8)

    def _map_grid(grid: np.ndarray) -> np.ndarray:
        return inv_perm[inverse_dihedral_transform(grid, trans_id)]

    return base, _map_grid


def crop_arc_grid(seq: np.ndarray, canvas: Canvas = DEFAULT_CANVAS) -> np.ndarray:
    """Cut a predicted token canvas (30x30 by default) to the largest top-left rectangle of colour tokens.

    Same result as the original evaluator's ``_crop`` scan: the usable width shrinks to each
    row's run of colour tokens (2..11) from the left, and the rectangle of largest area wins
    (the first one on ties). Returns colours 0..9 as uint8 (possibly an empty grid).
    """
    grid = np.asarray(seq).reshape(canvas.height, canvas.width)
    is_colour = (grid >= COLOUR_OFFSET) & (grid < COLOUR_OFFSET + NUM_COLOURS)
    run = np.where(is_colour.all(axis=1), canvas.width, np.argmin(is_colour, axis=1))
    width = np.minimum.accumulate(run)
    area = np.arange(1, canvas.height + 1) * width
    best = int(np.argmax(area))
    if area[best] == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    return (grid[: best + 1, : width[best]] - COLOUR_OFFSET).astype(np.uint8)
