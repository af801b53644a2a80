"""ARC evaluation (``evaluators: [{name: arc@ARC}]``): pass@K by voting over augmentations.

Every augmented copy of a test puzzle yields a prediction: the copies are the task's views
(``tasks/views.py``, the test-time scaling of every task). Each prediction is cropped to its grid
(``crop_arc_grid``, as the original reads a grid out of a 30x30 output; datasets built on another
canvas record its size in ``dataset.json``), mapped back through the
view's back map (the inverse of the copy's augmentation), and counted as a vote for that grid. Candidates are ranked
by votes (ties: mean sigmoid(q_halt)); a test input counts as solved at K when the right grid is
among the top K. ``submission.json`` holds the top 2 per test input.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist

from dataset.arc_grid import DEFAULT_CANVAS, NUM_COLOURS, Canvas, arc_grid_to_np, crop_arc_grid, grid_hash, parse_aug_name
from dataset.common import PuzzleDatasetMetadata


class ARC:
    required_outputs = {"inputs", "puzzle_identifiers", "q_halt_logits", "preds"}

    def __init__(self, data_path: str, eval_metadata: PuzzleDatasetMetadata, submission_K: int = 2,
                 pass_Ks: Sequence[int] = (1, 2, 5, 10, 100, 1000), aggregated_voting: bool = True):
        self.pass_Ks = tuple(pass_Ks)
        self.submission_K = submission_K
        self.blank_identifier_id = eval_metadata.blank_identifier_id
        self.canvas = Canvas.of(eval_metadata.seq_len, eval_metadata.canvas_height, eval_metadata.canvas_width)
        self.enabled = True

        identifiers = os.path.join(data_path, "identifiers.json")
        test_puzzles = os.path.join(data_path, "test_puzzles.json")
        if not (os.path.isfile(identifiers) and os.path.isfile(test_puzzles)):
            # Not ARC data (e.g. Sudoku with the default evaluator list): say so once, then do nothing.
            print(f"ARC evaluator: {data_path} has no test_puzzles.json/identifiers.json; not ARC data, evaluator disabled")
            self.enabled = False
            return
        with open(identifiers) as f:
            self.identifier_map: List[str] = json.load(f)
        with open(test_puzzles) as f:
            self.test_puzzles: Dict[str, Any] = json.load(f)
        self.begin_eval()

    @classmethod
    def for_tasks(cls, test_puzzles: Dict[str, Any], identifier_map: List[str], blank_identifier_id: int = 0,
                  submission_K: int = 2, canvas: Canvas = DEFAULT_CANVAS) -> "ARC":
        """An evaluator over tasks held in memory (``predict.py``) instead of a dataset folder."""
        self = cls.__new__(cls)
        self.pass_Ks, self.submission_K, self.blank_identifier_id, self.enabled = (), submission_K, blank_identifier_id, True
        self.canvas = canvas
        self.identifier_map, self.test_puzzles = list(identifier_map), dict(test_puzzles)
        self.begin_eval()
        return self

    def begin_eval(self) -> None:
        """Forget the previous evaluation's votes (the original accumulated them by accident)."""
        self._local_hmap: Dict[str, np.ndarray] = {}
        self._local_preds: Dict[str, Dict[str, List[Tuple[str, float]]]] = {}

    def update_batch(self, batch: Dict[str, torch.Tensor], preds: Dict[str, torch.Tensor]) -> None:
        if not self.enabled:
            return
        identifiers = batch["puzzle_identifiers"].cpu().numpy()
        keep = identifiers != self.blank_identifier_id  # padding rows of the last batch
        inputs = batch["inputs"].cpu().numpy()[keep]
        predictions = preds["preds"].cpu().numpy()[keep]
        q = preds["q_halt_logits"].to(torch.float64).sigmoid().cpu().numpy()[keep]
        names, views = self.views_of(identifiers[keep])
        inputs, predictions = (views.back(x[:, None])[:, 0] for x in (inputs, predictions))

        for orig_name, inp, pred, q_value in zip(names, inputs, predictions, q):
            input_hash = grid_hash(crop_arc_grid(inp, self.canvas))
            grid = crop_arc_grid(pred, self.canvas)
            pred_hash = grid_hash(grid)
            self._local_hmap[pred_hash] = grid
            self._local_preds.setdefault(orig_name, {}).setdefault(input_hash, []).append((pred_hash, float(q_value)))

    def views_of(self, identifiers: np.ndarray):
        """``(task name per row, the rows' views)``: each row is one view of its task (its version's
        dihedral and colour map), whose back map brings rows to the task's own frame."""
        from tasks.views import CanvasViews  # here: the tasks package imports this module on its way in

        parsed = [parse_aug_name(self.identifier_map[i]) for i in identifiers.tolist()]
        dihedral = np.array([[t] for _, t, _ in parsed], dtype=np.int64).reshape(-1, 1)
        colours = np.array([m for _, _, m in parsed], dtype=np.int64).reshape(-1, NUM_COLOURS)
        tokens = np.concatenate([np.broadcast_to(np.arange(2), (len(parsed), 2)), colours + 2], axis=1)[:, None]
        views = CanvasViews(dihedral=dihedral, tokens=tokens, side=self.canvas.width, eos_corner=False,
                            height=self.canvas.height)
        return [name for name, _, _ in parsed], views

    def result(self, save_path: Optional[str], rank: int, world_size: int, group=None) -> Optional[Dict[str, float]]:
        if not self.enabled:
            return None
        gathered: List[Any] = [(self._local_hmap, self._local_preds)]
        if world_size > 1:
            gathered = [None] * world_size if rank == 0 else None  # type: ignore[assignment]
            dist.gather_object((self._local_hmap, self._local_preds), gathered, dst=0, group=group)
        if rank != 0:
            return None

        submission: Dict[str, List[Dict[str, Any]]] = {}
        correct = np.zeros(len(self.pass_Ks))
        for name, puzzle in self.test_puzzles.items():
            submission[name] = []
            solved = np.zeros(len(self.pass_Ks))
            for pair in puzzle["test"]:
                label_hash = grid_hash(arc_grid_to_np(pair["output"], max_shape=None))
                ranked = self.ranked(name, pair["input"], gathered)
                if not ranked:
                    print(f"Puzzle {name} has no predictions.")
                    continue
                for i, k in enumerate(self.pass_Ks):
                    solved[i] += any(h == label_hash for h, _, _ in ranked[:k])
                submission[name].append(self.attempts(ranked, gathered))
            correct += solved / len(puzzle["test"])

        if save_path is not None:
            from utils.safe_io import atomic_write_text
            os.makedirs(save_path, exist_ok=True)
            atomic_write_text(os.path.join(save_path, "submission.json"), json.dumps(submission))
        return {f"ARC/pass@{k}": float(correct[i] / max(len(self.test_puzzles), 1)) for i, k in enumerate(self.pass_Ks)}

    def task_scores(self) -> Dict[str, Dict[str, float]]:
        """Single process: ``{task: {"pass@K": share of its test inputs solved}}`` from the votes so far
        (the numbers :meth:`result` averages over tasks)."""
        scores = {}
        for name, puzzle in self.test_puzzles.items():
            solved = np.zeros(len(self.pass_Ks))
            for pair in puzzle["test"]:
                label_hash = grid_hash(arc_grid_to_np(pair["output"], max_shape=None))
                ranked = self.ranked(name, pair["input"])
                for i, k in enumerate(self.pass_Ks):
                    solved[i] += any(h == label_hash for h, _, _ in ranked[:k])
            scores[name] = {f"pass@{k}": float(solved[i] / len(puzzle["test"])) for i, k in enumerate(self.pass_Ks)}
        return scores

    def ranked(self, name: str, test_input, gathered: Optional[List[Any]] = None) -> List[Tuple[str, int, float]]:
        """Candidate grids voted for one test input of task ``name``, best first: (hash, votes, mean q).

        Ranked by votes, ties by the mean sigmoid(q_halt) of their votes. ``gathered``: the
        (grids, votes) of every rank (default: this process's).
        """
        gathered = gathered if gathered is not None else [(self._local_hmap, self._local_preds)]
        input_hash = grid_hash(arc_grid_to_np(test_input, max_shape=None))
        votes: Dict[str, List[float]] = {}  # hash -> [count, sum of q]
        for _hmap, preds in gathered:
            for h, q in preds.get(name, {}).get(input_hash, []):
                v = votes.setdefault(h, [0, 0.0])
                v[0] += 1
                v[1] += q
        ranked = sorted(votes.items(), key=lambda kv: (kv[1][0], kv[1][1] / kv[1][0]), reverse=True)
        return [(h, int(count), q_sum / count) for h, (count, q_sum) in ranked]

    def attempts(self, ranked: List[Tuple[str, int, float]], gathered: Optional[List[Any]] = None) -> Dict[str, List[List[int]]]:
        """``{"attempt_1": grid, "attempt_2": grid, ...}`` (submission.json) from :meth:`ranked` candidates."""
        gathered = gathered if gathered is not None else [(self._local_hmap, self._local_preds)]
        grids = [next(hmap[h] for hmap, _ in gathered if h in hmap) for h, _, _ in ranked[: self.submission_K]]
        while len(grids) < self.submission_K:
            grids.append(grids[0])
        return {f"attempt_{i + 1}": g.tolist() for i, g in enumerate(grids)}
