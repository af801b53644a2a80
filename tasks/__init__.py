"""Task notations: one codec per task turns a puzzle typed as text into model tokens and the
model's answer tokens back into text, checks answers independently of the model, and says how
to draw a grid. ``predict.py`` and the pictures use them; a new task joins by subclassing
:class:`tasks.base.TaskCodec` and decorating the class with :func:`register`.

    from tasks import get_codec
    codec = get_codec("sudoku")(seq_len=81)
    puzzle = codec.parse("53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79")
"""
from __future__ import annotations

from tasks.base import CODECS, PuzzleError, TaskCodec, get_codec, register

# The built-in tasks register themselves on import.
from tasks import arc, custom, domino, maze, sudoku  # noqa: E402,F401

__all__ = ["CODECS", "PuzzleError", "TaskCodec", "get_codec", "register"]
