"""What every task codec provides (see ``tasks/__init__.py``).

A codec reads puzzles written in its task's notation, makes the model's input rows from them,
turns the model's output tokens back into an answer in the same notation, says whether an
answer is valid (by the rules, not by the model), and describes a grid for pictures.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np

from tasks.views import Views
from utils.errors import UserError
from utils.progress import progress_bar


class PuzzleError(UserError):
    """A puzzle that breaks its notation or its rules; the message says what, the caller says where."""


@dataclass
class Puzzle:
    """One parsed puzzle: ``data`` is the codec's own form of it."""

    data: Any
    where: str = "puzzle"  # for messages: "puzzle=", "mazes.txt line 12", ...
    name: str = ""  # ARC: the task name
    truth: Any = None  # the expected answer when the puzzle came with one (codec's form)


@dataclass
class Row:
    """One model input made from a puzzle (ARC makes several per puzzle)."""

    inputs: np.ndarray  # [seq_len] tokens
    labels: Optional[np.ndarray] = None  # [seq_len] tokens of the truth, when known
    identifier: int = 0  # puzzle identifier fed to the model
    name: str = ""  # the identifier's name (ARC: augmented version name)


@dataclass
class RowOutput:
    """What the model said about one row: tokens and halt confidence after every ACT segment."""

    preds: np.ndarray  # [segments, seq_len]
    q_halt_logits: np.ndarray  # [segments] as the model returned them (float32)
    q_halt: np.ndarray  # [segments] sigmoid(q_halt_logits), float64 as the ARC evaluator computes it (its vote ties)
    halt_step: Optional[int]  # first segment (1-based) at which the model's own halt rule fired
    # [segments] the confidence of the halting rule the model uses: sigmoid(q_halt - q_continue) for
    # HRM, sigmoid(q_halt) with TRM's no_ACT_continue; above 0.5 exactly where the rule fires.
    halt_confidence: Optional[np.ndarray] = None

    def confidence(self) -> np.ndarray:
        return self.q_halt if self.halt_confidence is None else self.halt_confidence


@dataclass
class Cells:
    """A grid to draw: a fill colour per cell, optional text per cell, optional box lines."""

    colours: np.ndarray  # [H, W, 3] uint8
    text: Optional[List[List[str]]] = None
    text_colours: Optional[np.ndarray] = None  # [H, W, 3] uint8
    boxes: Optional[Tuple[int, int]] = None  # (rows, cols) of a box: thicker lines between boxes
    caption: List[str] = field(default_factory=list)  # lines of text instead of / under the grid


def typed(text: str, limit: int = 40) -> str:
    """A typed ``puzzle=`` value as an error names it: quoted, escapes visible, long ones cut."""
    return json.dumps(text if len(text) <= limit else text[:limit - 3] + "...", ensure_ascii=False)


class TaskCodec:
    """Base class: override ``parse``, ``encode``, ``format_tokens``, ``answer``; the rest has defaults.

    ``seq_len`` is the checkpoint's sequence length (None when unknown: anything well formed goes);
    ``data_path`` the dataset the checkpoint was trained on (ARC identifiers, domino policy).
    """

    name: ClassVar[str] = ""
    # True where the codec checks answers by the rules (reported as "valid"); else "valid" is None.
    checks_answers: ClassVar[bool] = False
    # True where a puzzle fixes cells of its answer (Sudoku clues; maze walls, start and goal): the
    # result's ``answer`` keeps them whatever the model wrote there (``keep_clues``), and
    # ``raw_answer`` is the model's own output, the prediction evaluate.py scores.
    keeps_clues: ClassVar[bool] = False

    # True where puzzles have per-task puzzle-embedding rows that predict.py can fit for unseen
    # tasks (``adapt_steps``); such a codec provides ``unseen_puzzles``, ``planned_versions``
    # and ``demonstration_rows``.
    adaptable: ClassVar[bool] = False

    def __init__(self, seq_len: Optional[int] = None, data_path: Optional[str] = None):
        self.seq_len = seq_len
        self.data_path = data_path

    @classmethod
    def for_run(cls, seq_len: int, data_paths: Sequence[str]) -> "TaskCodec":
        """The codec for a checkpoint trained on ``data_paths`` with sequences of ``seq_len``."""
        return cls(seq_len=seq_len, data_path=data_paths[0])

    # ---- hooks around a prediction (defaults: nothing task-specific)
    def prepare(self, puzzles: Sequence[Puzzle], unseen: str, num_aug: Optional[int], blank_id: int) -> None:
        """Before rows are made: give ``puzzles`` their puzzle identifiers (``unseen``: what to do
        with a puzzle the checkpoint has no identifier for). Raises :class:`PuzzleError`."""

    def default_num_aug(self) -> int:
        """Augmented versions per puzzle in the checkpoint's training data."""
        return 0

    def submission(self, results: Sequence[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        """The task's submission file built from ``results`` (None: the task has none)."""
        return None

    # ---- reading puzzles
    def split_text(self, text: str) -> List[Tuple[int, str]]:
        """A file's puzzles with the line number each starts on. Default: one per non-empty line."""
        return [(i + 1, line) for i, line in enumerate(text.splitlines()) if line.strip()]

    def parse(self, text: str, name: str = "") -> Puzzle:
        """One puzzle from its text; raise :class:`PuzzleError` saying what is wrong."""
        raise NotImplementedError

    def read(self, text: str, source: Optional[str] = None) -> List[Puzzle]:
        """Every puzzle of ``text`` (a file's contents when ``source`` names it, else one puzzle).

        Errors become one :class:`PuzzleError` naming the puzzle: ``<source> line <n>: ...``.
        """
        if source is None:
            chunks = [(0, text)]
        else:
            chunks = self.split_text(text)
            if not chunks:
                raise PuzzleError(f"{source}: holds no puzzle")
        puzzles = []
        if source is not None:  # a large file takes minutes (every puzzle is checked): show how far it got
            chunks = progress_bar(chunks, desc=f"read {os.path.basename(source)}", unit="puzzle", delay=3, leave=False)
        for line, chunk in chunks:
            where = f"puzzle={typed(chunk)}" if source is None else f"{source} line {line}"
            try:
                puzzle = self.parse(chunk)
            except PuzzleError as e:
                raise PuzzleError(f"{where}: {e}") from None
            puzzle.where = where
            puzzles.append(puzzle)
        return puzzles

    # ---- tokens both ways
    def encode(self, data: Any) -> np.ndarray:
        """Input tokens ``[seq_len]`` of a parsed puzzle."""
        raise NotImplementedError

    def format_tokens(self, tokens: np.ndarray) -> str:
        """The puzzle notation of input tokens (``parse(format_tokens(t))`` encodes to ``t``)."""
        raise NotImplementedError

    def rows(self, puzzle: Puzzle) -> List[Row]:
        """The model inputs of a puzzle. Default: one row, with the truth's tokens as labels."""
        labels = None if puzzle.truth is None else self.encode_answer(puzzle.truth)
        return [Row(inputs=self.encode(puzzle.data), labels=labels)]

    def encode_answer(self, truth: Any) -> np.ndarray:
        """Label tokens of a known answer (codec's form)."""
        raise NotImplementedError

    # ---- answers
    def answer(self, puzzle: Puzzle, tokens: np.ndarray) -> Any:
        """The answer in the task's notation (JSON-serialisable) from output tokens."""
        raise NotImplementedError

    def problem(self, puzzle: Puzzle, tokens: np.ndarray) -> Optional[str]:
        """Why the answer in ``tokens`` is not a valid solution of ``puzzle``, or None."""
        return None

    def keep_clues(self, puzzle: Puzzle, tokens: np.ndarray) -> np.ndarray:
        """Output tokens with the cells ``puzzle`` gives put back (see ``keeps_clues``; default: as they are)."""
        return tokens

    def result(self, puzzle: Puzzle, rows: Sequence[Row], outputs: Sequence[RowOutput], trace: bool) -> Dict[str, Any]:
        """The result entry of one puzzle: answer (and raw_answer), segments, halt confidence,
        validity and correctness of ``answer`` (and trace)."""
        (out,) = outputs
        raw = out.preds[-1]
        final = self.keep_clues(puzzle, raw)
        result: Dict[str, Any] = {"answer": self.answer(puzzle, final)}
        if self.keeps_clues:
            result["raw_answer"] = self.answer(puzzle, raw)
        result.update(halt_fields(out))
        if self.checks_answers:
            problem = self.problem(puzzle, final)
            result["valid"] = problem is None
            if problem is not None:
                result["problem"] = problem
        else:
            result["valid"] = None
        if puzzle.truth is not None:
            result["correct"] = bool(np.array_equal(self.answer(puzzle, final), self.answer(puzzle, rows[0].labels)))
        if trace:
            result["trace"] = trace_entries(out, lambda tokens: self.answer(puzzle, self.keep_clues(puzzle, tokens)),
                                            lambda a, b: self.changed_cells(self.keep_clues(puzzle, a), self.keep_clues(puzzle, b)))
            if self.keeps_clues:
                for entry, tokens in zip(result["trace"], out.preds):
                    entry["raw_answer"] = self.answer(puzzle, tokens)
        return result

    def changed_cells(self, before: np.ndarray, after: np.ndarray) -> int:
        """How many cells differ between two answers (for traces)."""
        return int(np.count_nonzero(before != after))

    def check_shapes(self, seq_len: int, vocab_size: int) -> Optional[str]:
        """Why a checkpoint with these sizes cannot be this task's model, or None."""
        return None

    @classmethod
    def standalone_seq_len(cls, vocab_size: int) -> Optional[int]:
        """The sequence length of this task's checkpoint with ``vocab_size`` tokens when its dataset
        is not at hand (None: it cannot be told; ``predict.py`` then asks for ``seq_len=``)."""
        return None

    # ---- pictures
    def cells(self, puzzle: Puzzle, tokens: np.ndarray, is_input: bool) -> Cells:
        """How to draw ``tokens`` (the input when ``is_input``, else an answer) of ``puzzle``."""
        raise NotImplementedError

    def picture_rows(self, puzzle: Puzzle, rows: Sequence[Row], outputs: Sequence[RowOutput]):
        """``(row, output)`` pairs shown in pictures: default all (ARC: the unaugmented ones)."""
        return list(zip(rows, outputs))

    # ---- test-time views
    @property
    def views_missing(self) -> Optional[str]:
        """Why :meth:`views` gives no views for this task, or None when it does."""
        if type(self).views is TaskCodec.views:
            return f"the {self.name} task declares no symmetries to draw views from"
        return None

    def views(self, inputs: np.ndarray, num_views: int, seed: int = 0,
              identifiers: Optional[np.ndarray] = None) -> Optional[Views]:
        """``num_views`` views of every input row ``[B, seq_len]`` from the task's symmetries
        (see ``tasks/views.py``): view 0 the row itself, the others drawn from ``seed`` and the
        row's tokens. ``identifiers`` ``[B]``: the rows' puzzle identifiers (ARC versions).
        None when the task declares no symmetry (its samples then differ by noise only).
        """
        return None


def halt_fields(out: RowOutput) -> Dict[str, Any]:
    """ACT facts of one row: segments run, the model's own halting, halt confidence at the end."""
    segments = len(out.q_halt)
    return {"steps": out.halt_step if out.halt_step is not None else segments, "segments_run": segments,
            "halted": out.halt_step is not None, "halt_confidence": round(float(out.confidence()[-1]), 6)}


def trace_entries(out: RowOutput, answer_of, changed) -> List[Dict[str, Any]]:
    """Per ACT segment: the answer, how many cells changed since the previous one, halt confidence."""
    entries = []
    confidence = out.confidence()
    for s in range(len(out.q_halt)):
        entries.append({"step": s + 1, "answer": answer_of(out.preds[s]),
                        "changed": None if s == 0 else changed(out.preds[s - 1], out.preds[s]),
                        "halt_confidence": round(float(confidence[s]), 6)})
    return entries


# ---- the registry of tasks (filled as the codec modules are imported by ``tasks/__init__.py``)
CODECS: Dict[str, Type[TaskCodec]] = {}


def register(cls: Type[TaskCodec]) -> Type[TaskCodec]:
    """Class decorator: make ``cls`` the codec of the task named ``cls.name``."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__}: a codec needs a task name (class attribute `name`)")
    CODECS[cls.name] = cls
    return cls


def get_codec(task: str) -> Type[TaskCodec]:
    """The codec class of ``task``; a ``ValueError`` lists the known tasks otherwise."""
    if task not in CODECS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(sorted(CODECS))}")
    return CODECS[task]
