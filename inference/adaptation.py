"""Test-time adaptation: train on the demonstrations of the tasks being solved, then solve them.

An ARC task comes with demonstration pairs. A checkpoint that never trained on a task (a task held
out by ``dataset/build_arc_dataset.py --protocol unseen``, or a new task given to ``predict.py``)
can first learn from them, as the ARC Prize 2025 TRM entry fine-tuned the whole model on each
hidden task's demonstrations at test time. Two modes (``adapt=``):

- ``embedding``: only the puzzle-embedding rows of the adapted tasks' versions learn, by the
  sparse SignSGD update of training; every other weight stays. It is training with
  ``freeze_weights=True`` (the original's way to fit new puzzles), at ``adapt_lr`` (default: the
  run's ``puzzle_emb_lr``), at a constant rate.
- ``full``: every weight and those rows learn, with the run's optimizers (AdamATan2, or Muon with
  its AdamW branch, for the weights; SignSGD for the rows) and their settings (betas, weight
  decay). The weights learn at ``adapt_lr`` (default: the run's ``lr``), the rows at the run's
  ``puzzle_emb_lr`` scaled by the same factor; linear warm-up over the first tenth of the steps,
  then constant.

Each step is training's own optimisation step, :func:`training.state.train_batch` (one ACT
segment of a batch with its carry, the loss backward, the optimizers' steps), on ``adapt_batch``
demonstration rows drawn in reshuffled passes (``adapt_seed``). One model is adapted to all the
tasks at once. The demonstration loss and exact accuracy are measured before and after (eval
mode, every segment, as evaluation runs; on at most :data:`MEASURED_ROWS` rows). The checkpoint
file is never written; :func:`save_adapted` writes the adapted model as a new checkpoint folder.

Used by ``evaluate.py`` (:func:`adapt_evaluation`: the demonstrations of the test split's tasks) and
``predict.py`` (``Predictor.adapt``: the demonstrations of the given tasks).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterator, List, Literal, Optional, Sequence

import numpy as np
import pydantic
import torch
import yaml
from torch import nn

from dataset.arc_grid import PUZZLE_ID_SEPARATOR
from dataset.common import load_metadata
from inference.segments import act_model, run_segments
from models.losses import IGNORE_LABEL_ID
from tasks.base import Puzzle, Row
from training.build import create_optimizers
from training.config import PretrainConfig
from training.state import TrainState, check_finite, train_batch
from training.checkpointing import model_weights
from utils.safe_io import atomic_torch_save, atomic_write, atomic_write_text
from utils.dataset_metadata import metadata_files
from utils.errors import UserError
from utils.functions import validation_error_line
from utils.paths import check_output_folder
from utils.progress import progress_bar

ADAPT_MODES = ("none", "embedding", "full")
WARMUP_FRACTION = 0.1  # adapt=full: linear warm-up over this share of the steps
MEASURED_ROWS = 4096  # the before/after figures: on at most this many demonstration rows (a seeded choice)


class AdaptError(UserError):
    """A test-time adaptation that cannot be done as asked (task, model, options)."""


class AdaptSettings(pydantic.BaseModel):
    """What to adapt and how (see the module docstring); ``lr`` / ``batch`` None: the run's."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    mode: Literal["embedding", "full"]
    steps: int = pydantic.Field(ge=1)
    lr: Optional[float] = pydantic.Field(None, gt=0)
    batch: Optional[int] = pydantic.Field(None, ge=1)
    seed: int = 0


class AdaptOptions(pydantic.BaseModel):
    """The adaptation keys of a command line (``evaluate.py``, ``predict.py``): its config class
    inherits them, and :attr:`adapt_settings` turns them into :class:`AdaptSettings`. ``adapt_steps``
    alone means ``adapt=embedding`` (predict.py's earlier spelling)."""

    adapt: Optional[Literal[ADAPT_MODES]] = None  # type: ignore[valid-type]
    adapt_steps: int = pydantic.Field(0, ge=0)
    adapt_lr: Optional[float] = pydantic.Field(None, gt=0)
    adapt_batch: Optional[int] = pydantic.Field(None, ge=1)
    adapt_seed: int = 0
    adapt_save: Optional[str] = None

    @property
    def adapt_mode(self) -> str:
        return self.adapt or ("embedding" if self.adapt_steps else "none")

    @pydantic.model_validator(mode="after")
    def _adapt_consistent(self):
        mode = self.adapt_mode
        if mode != "none" and not self.adapt_steps:
            raise ValueError(f"adapt={mode}: give adapt_steps=N, the number of training steps on the demonstrations (e.g. 100)")
        if mode == "none":
            given = sorted(k for k in self.model_fields_set & {"adapt_steps", "adapt_lr", "adapt_batch", "adapt_seed", "adapt_save"}
                           if k != "adapt_steps" or self.adapt_steps)
            if given:
                raise ValueError(f"{', '.join(k + '=' for k in given)}: nothing is adapted with adapt=none; "
                                 "give adapt=embedding or adapt=full with adapt_steps=N")
        checkpoint = getattr(self, "checkpoint", None)  # of the command line that inherits these keys
        if mode != "none" and isinstance(checkpoint, list) and len(checkpoint) > 1:
            raise ValueError(f"adapt={mode}: adapts one checkpoint; give one, not an ensemble")
        if self.adapt_save is not None:
            check_new_folder(self.adapt_save, "adapt_save")
        return self

    @property
    def adapt_settings(self) -> Optional[AdaptSettings]:
        """None for ``adapt=none``."""
        if self.adapt_mode == "none":
            return None
        return AdaptSettings(mode=self.adapt_mode, steps=self.adapt_steps, lr=self.adapt_lr, batch=self.adapt_batch,  # type: ignore[arg-type]
                             seed=self.adapt_seed)


def check_new_folder(path: str, option: str) -> None:
    """``ValueError`` (one line) unless ``path`` is a folder that can be made, or an empty one."""
    check_output_folder(path, option)
    if os.path.isdir(path) and os.listdir(path):
        raise ValueError(f"{option}={path}: the folder already holds files; give a new or empty folder")


# ---------------------------------------------------------------------------------------------
# Demonstrations


@dataclass
class Demonstrations:
    """Demonstration rows to train on: the rows ``rows`` of ``inputs`` / ``labels`` (``[N, seq_len]``
    tokens, possibly memory-mapped), with their puzzle identifiers (one per used row)."""

    inputs: np.ndarray
    labels: np.ndarray
    rows: np.ndarray
    identifiers: np.ndarray
    tasks: List[str]  # the adapted tasks' names
    ignore_label_id: Optional[int]  # the dataset's label to ignore (stands for IGNORE_LABEL_ID in the loss)
    source: str  # where the rows come from, for the report

    @classmethod
    def of_rows(cls, rows: Sequence[Row], tasks: Sequence[str], ignore_label_id: Optional[int], source: str) -> "Demonstrations":
        """From codec rows (``TaskCodec.demonstration_rows``)."""
        if not rows:
            empty = np.empty((0, 0), dtype=np.int32)
            return cls(inputs=empty, labels=empty, rows=np.empty(0, np.int64), identifiers=np.empty(0, np.int64), tasks=list(tasks),
                       ignore_label_id=ignore_label_id, source=source)
        return cls(inputs=np.stack([r.inputs for r in rows]), labels=np.stack([r.labels for r in rows]),  # type: ignore[misc]
                   rows=np.arange(len(rows)), identifiers=np.array([r.identifier for r in rows], dtype=np.int64),
                   tasks=list(tasks), ignore_label_id=ignore_label_id, source=source)

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, picked: np.ndarray, device) -> Dict[str, torch.Tensor]:
        """Rows ``picked`` (positions in :attr:`rows`) as a batch, collated as the dataset loader does."""
        index = self.rows[picked]
        return collate(self.inputs[index], self.labels[index], self.identifiers[picked], self.ignore_label_id, device)

    def draws(self, batch_size: int, seed: int) -> Iterator[np.ndarray]:
        """Batches of row positions: passes over every row, each in a new seeded order, a batch
        running on into the next pass (so any number of rows fills any batch)."""
        rng = np.random.default_rng(seed)
        order = np.empty(0, dtype=np.int64)
        while True:
            while order.size < batch_size:
                order = np.concatenate([order, rng.permutation(len(self))])
            yield order[:batch_size]
            order = order[batch_size:]


def collate(inputs: np.ndarray, labels: Optional[np.ndarray], identifiers: np.ndarray, ignore_label_id: Optional[int],
            device) -> Dict[str, torch.Tensor]:
    """A batch as ``puzzle_dataset.PuzzleDataset`` gives it: int32 fields, the dataset's ignored
    label as ``IGNORE_LABEL_ID`` (labels None: all ignored)."""
    labels = np.full(np.shape(inputs), IGNORE_LABEL_ID, dtype=np.int32) if labels is None else np.asarray(labels).astype(np.int32)
    if ignore_label_id is not None:
        labels[labels == ignore_label_id] = IGNORE_LABEL_ID
    fields = {"inputs": np.asarray(inputs).astype(np.int32), "labels": labels,
              "puzzle_identifiers": np.asarray(identifiers).astype(np.int32)}
    return {k: torch.from_numpy(v).to(device) for k, v in fields.items()}


def demonstration_scores(model: nn.Module, demos: Demonstrations, batch_size: int, device,
                         max_rows: int = MEASURED_ROWS) -> Dict[str, float]:
    """Mean per-row token loss (``loss``) and share of rows entirely right (``exact_accuracy``) of
    the model's answers to the demonstrations, run as evaluation runs them (eval mode, every ACT
    segment); on at most ``max_rows`` rows (a fixed choice, the same before and after)."""
    positions = np.arange(len(demos))
    if len(positions) > max_rows:
        positions = np.sort(np.random.default_rng(0).choice(len(positions), size=max_rows, replace=False))
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    with torch.inference_mode():
        for start in range(0, len(positions), batch_size):
            _, metrics, _ = run_segments(model, demos.batch(positions[start: start + batch_size], device), set())
            sums += torch.stack([metrics["lm_loss"], metrics["exact_accuracy"], metrics["count"]]).to(torch.float64)
    loss, exact, count = sums.tolist()
    return {"loss": loss / max(count, 1), "exact_accuracy": exact / max(count, 1), "rows": int(count)}


# ---------------------------------------------------------------------------------------------
# The adaptation


@dataclass
class AdaptReport:
    """What an adaptation did: its settings as run, the data, the figures before and after."""

    mode: str
    steps: int
    lr: float  # of the weights (full) or of the embedding rows (embedding)
    puzzle_emb_lr: float
    batch: int
    seed: int
    warmup_steps: int
    tasks: int
    rows: int  # demonstration rows trained on
    source: str
    before: Dict[str, float]
    after: Dict[str, float]
    seconds: float  # the optimisation steps
    measure_seconds: float  # the before/after figures
    new_rows: int = 0  # predict.py: puzzle-embedding rows made for tasks the checkpoint had none for
    extra: Dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out

    def line(self) -> str:
        """The report in one line."""
        b, a = self.before, self.after
        measured = f"{b['rows']} of {self.rows}" if b["rows"] < self.rows else f"{self.rows}"
        fresh = f", {self.new_rows} new puzzle-embedding rows" if self.new_rows else ""
        return (f"adapt={self.mode}: {self.steps} steps (lr {self.lr:g}, batch {self.batch}) on {self.rows} demonstration rows "
                f"of {self.tasks} task(s){fresh} in {self.seconds:.1f} s: demonstration loss {b['loss']:.4f} -> {a['loss']:.4f}, "
                f"exact accuracy {b['exact_accuracy']:.1%} -> {a['exact_accuracy']:.1%} (on {measured} rows)")


def adaptation_config(run_config: Dict[str, Any], settings: AdaptSettings, batch: int) -> PretrainConfig:
    """The training config of the adaptation: the run's, with the adaptation's learning rates,
    batch and schedule (constant after the warm-up), no EMA, no depth curriculum, and the weights
    frozen for ``embedding``."""
    base = {k: v for k, v in run_config.items() if k in PretrainConfig.model_fields}
    run_lr, run_emb_lr = float(base.get("lr", 0)), float(base.get("puzzle_emb_lr", 0))
    if settings.mode == "embedding":
        lr, emb_lr, warmup = run_lr, settings.lr or run_emb_lr, 0
    else:
        lr = settings.lr or run_lr
        emb_lr = run_emb_lr * lr / run_lr if run_lr > 0 else run_emb_lr
        warmup = int(round(WARMUP_FRACTION * settings.steps))
    overrides = dict(lr=lr, puzzle_emb_lr=emb_lr, lr_warmup_steps=warmup, lr_min_ratio=1.0, global_batch_size=batch,
                     gradient_accumulation_steps=1, freeze_weights=settings.mode == "embedding", ema=False, depth_schedule=None,
                     segment_loss_decay=None, load_checkpoint=None, resume=None, checkpoint_path=None, eval_interval=None,
                     best_metric=None, early_stop_patience=None, max_train_seconds=None)
    try:
        return PretrainConfig(**{**base, **overrides})
    except pydantic.ValidationError as e:
        raise AdaptError(f"adapt: the run's config does not make a training config: {validation_error_line(e)}") from None


@contextlib.contextmanager
def training_mode(model: nn.Module, mode: str, batch: int):
    """The model ready for training steps of ``batch`` rows (the embedding's per-batch rows resized),
    its weights frozen for ``embedding``; as it was afterwards (eval mode)."""
    inner = act_model(model).inner  # type: ignore[union-attr]
    emb = getattr(inner, "puzzle_emb", None) if getattr(inner.config, "puzzle_emb_ndim", 0) > 0 else None
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    kept = (emb.local_weights, emb.local_ids) if emb is not None else None
    try:
        if emb is not None:  # sized by the run's batch; the adaptation's may differ
            emb.local_weights = torch.zeros(batch, emb.weights.shape[1], device=emb.weights.device, requires_grad=True)
            emb.local_ids = torch.zeros(batch, dtype=torch.int32, device=emb.weights.device)
        if mode == "embedding":
            model.requires_grad_(False)  # as training with freeze_weights: the rows (a buffer with its own gradient) learn
        model.train()
        yield
    finally:
        model.eval()
        for n, p in model.named_parameters():
            p.requires_grad_(requires_grad[n])
        if kept is not None:
            emb.local_weights, emb.local_ids = kept


def adapt_model(model: nn.Module, run_config: Dict[str, Any], demos: Demonstrations, settings: AdaptSettings, batch_size: int,
                progress: bool = True) -> AdaptReport:
    """Adapt ``model`` (a loss head, changed in place) to ``demos``: ``settings.steps`` training
    steps (:func:`training.state.train_batch`) with the run's optimizers (``run_config``: its
    ``all_config.yaml``). ``batch_size``: rows per forward pass of the before/after figures and
    the default ``settings.batch``."""
    if not len(demos):
        raise AdaptError(f"adapt={settings.mode}: the tasks to adapt have no demonstration rows ({demos.source})")
    if settings.mode == "embedding" and getattr(act_model(model).config, "puzzle_emb_ndim", 0) <= 0:  # type: ignore[union-attr]
        raise AdaptError("adapt=embedding: this model has no puzzle embedding (puzzle_emb_ndim=0); nothing to adapt "
                         "(adapt=full fine-tunes its weights)")
    device = next(iter(model.parameters())).device
    batch = settings.batch or batch_size
    config = adaptation_config(run_config, settings, batch)
    start = time.perf_counter()
    before = demonstration_scores(model, demos, batch_size, device)
    measured = time.perf_counter() - start
    start = time.perf_counter()
    with training_mode(model, settings.mode, batch):
        optimizers, lrs = create_optimizers(config, model, world_size=1, total_steps=settings.steps)
        state = TrainState(model=model, optimizers=optimizers, optimizer_lrs=lrs, carry=None, step=0, total_steps=settings.steps)
        draws = demos.draws(batch, settings.seed)
        torch.manual_seed(settings.seed)  # the ACT exploration of training steps draws from it
        for _ in progress_bar(range(settings.steps), desc=f"adapt {settings.mode}", unit="step", delay=3,
                              disable=not progress or None, leave=False):
            train_batch(config, state, demos.batch(next(draws), device), batch, rank=0, world_size=1, log=False)
        bad = check_finite(state, 1)
    seconds = time.perf_counter() - start
    if bad is not None:
        raise AdaptError(f"adapt={settings.mode}: the demonstration loss became non-finite at step {bad}; "
                         f"give a smaller adapt_lr (this one: {config.lr if settings.mode == 'full' else config.puzzle_emb_lr:g})")
    start = time.perf_counter()
    after = demonstration_scores(model, demos, batch_size, device)
    measured += time.perf_counter() - start
    return AdaptReport(mode=settings.mode, steps=settings.steps, lr=config.lr if settings.mode == "full" else config.puzzle_emb_lr,
                       puzzle_emb_lr=config.puzzle_emb_lr, batch=batch, seed=settings.seed, warmup_steps=config.lr_warmup_steps,
                       tasks=len(demos.tasks), rows=len(demos), source=demos.source, before=before, after=after,
                       seconds=round(seconds, 3), measure_seconds=round(measured, 3))


# ---------------------------------------------------------------------------------------------
# evaluate.py: the test split's tasks


def one_set(split_dir: str) -> str:
    """The name of the split's one set of examples (ARC builders write ``all``)."""
    sets = load_metadata(split_dir).sets
    if len(sets) != 1:
        raise AdaptError(f"{split_dir}: adaptation reads a split of one set of examples, this one has {len(sets)} ({', '.join(sets)})")
    return sets[0]


def test_split_identifiers(test_dir: str, max_examples: Optional[int]) -> np.ndarray:
    """Sorted puzzle identifiers of the examples evaluated (the first ``max_examples`` in file order)."""
    set_name = one_set(test_dir)
    puzzle_ids = np.load(os.path.join(test_dir, f"{set_name}__puzzle_identifiers.npy"))
    if max_examples is not None:
        starts = np.load(os.path.join(test_dir, f"{set_name}__puzzle_indices.npy"))[:-1]
        puzzle_ids = puzzle_ids[starts < max_examples]
    return np.unique(puzzle_ids)


def train_split_demonstrations(data_path: str, identifiers: np.ndarray) -> Demonstrations:
    """The train split's rows of the puzzles ``identifiers`` (their augmented versions' demonstrations
    as they were trained on), read from the memory-mapped arrays."""
    split = os.path.join(data_path, "train")
    set_name = one_set(split)
    load = lambda field, **kw: np.load(os.path.join(split, f"{set_name}__{field}.npy"), **kw)  # noqa: E731
    puzzle_ids, starts = load("puzzle_identifiers"), load("puzzle_indices")
    puzzles = np.flatnonzero(np.isin(puzzle_ids, identifiers))
    counts = starts[puzzles + 1] - starts[puzzles]
    rows = np.concatenate([np.arange(starts[p], starts[p + 1]) for p in puzzles]) if len(puzzles) else np.empty(0, np.int64)
    names = _read_json(os.path.join(data_path, "identifiers.json"), "the puzzle names")
    tasks = sorted({names[i].split(PUZZLE_ID_SEPARATOR)[0] for i in puzzle_ids[puzzles].tolist()})
    return Demonstrations(inputs=load("inputs", mmap_mode="r"), labels=load("labels", mmap_mode="r"), rows=rows,
                          identifiers=np.repeat(puzzle_ids[puzzles], counts), tasks=tasks,
                          ignore_label_id=load_metadata(split).ignore_label_id, source=f"{split} (the demonstrations trained on)")


def held_out_demonstrations(codec, data_path: str, identifiers: np.ndarray, seed: int) -> Demonstrations:
    """The demonstrations of held-out tasks (``--protocol unseen``), which no split holds: read from
    the dataset's ``test_puzzles.json`` and encoded in the dataset's own versions of each task
    (names and identifiers from ``identifiers.json``), translated as the builder translates
    demonstrations (``seed``)."""
    path = os.path.join(data_path, "test_puzzles.json")
    raw_tasks = _read_json(path, "the held-out tasks' demonstrations")
    names = _read_json(os.path.join(data_path, "identifiers.json"), "the puzzle names")
    versions: Dict[str, List[tuple]] = {}
    for i in identifiers.tolist():
        versions.setdefault(names[i].split(PUZZLE_ID_SEPARATOR)[0], []).append((names[i], i))
    rows: List[Row] = []
    for task, task_versions in versions.items():
        if task not in raw_tasks:
            raise AdaptError(f"{path}: has no task {task!r}, whose test examples are evaluated; it holds the held-out "
                             "tasks' demonstrations (rebuild the dataset)")
        puzzle: Puzzle = codec.parse_task(raw_tasks[task], task)
        puzzle.where = f"{path} task {task}"
        puzzle.data.versions = task_versions
        rows += codec.demonstration_rows(puzzle, seed=seed)
    meta = load_metadata(os.path.join(data_path, "test"))
    return Demonstrations.of_rows(rows, sorted(versions), meta.ignore_label_id, f"{path} (held-out tasks)")


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise AdaptError(f"{path}: cannot read {what}, which adaptation needs ({getattr(e, 'strerror', None) or e})") from None


def evaluation_demonstrations(evaluation, max_examples: Optional[int], seed: int, option: str = "adapt") -> Demonstrations:
    """The demonstrations of the tasks whose test examples ``evaluation`` (an
    ``inference.evaluation.Evaluation``) evaluates: for a dataset built with ``--protocol unseen``
    the held-out tasks' (:func:`held_out_demonstrations`), otherwise the train split's rows of the
    same puzzle identifiers (:func:`train_split_demonstrations`). ``option`` names the command-line
    option in errors."""
    from inference.sampling import open_codec

    opened = evaluation.opened
    if opened.task != "arc":
        raise AdaptError(f"{option}: test-time adaptation trains on the demonstrations of the evaluated tasks, which only ARC "
                         f"datasets carry (this checkpoint's task: {opened.task or 'not recorded'})")
    data_paths = [os.path.abspath(p) for p in evaluation.data_paths]
    if len(data_paths) != 1 or [os.path.abspath(p) for p in evaluation.test_paths] != data_paths:
        raise AdaptError(f"{option}: needs a run on one ARC dataset evaluated on its own test split "
                         f"(this one trains on {', '.join(evaluation.data_paths)} and tests on {', '.join(evaluation.test_paths)})")
    data_path = data_paths[0]
    test_dir = os.path.join(data_path, "test")
    identifiers = test_split_identifiers(test_dir, max_examples)
    if load_metadata(test_dir).protocol == "unseen":
        return held_out_demonstrations(open_codec(opened), data_path, identifiers, seed)
    return train_split_demonstrations(data_path, identifiers)


def adapt_evaluation(evaluation, settings: AdaptSettings, max_examples: Optional[int] = None, progress: bool = True) -> AdaptReport:
    """Adapt the model of ``evaluation`` (in place) to the demonstrations of the tasks it evaluates."""
    option = f"adapt={settings.mode}"
    if evaluation.info.world_size > 1:
        raise AdaptError(f"{option}: test-time adaptation runs in one process; evaluate without torchrun")
    demos = evaluation_demonstrations(evaluation, max_examples, settings.seed, option)
    opened = evaluation.opened
    return adapt_model(opened.model, opened.run_config, demos, settings, opened.batch_size, progress=progress)


# ---------------------------------------------------------------------------------------------
# Saving


def save_adapted(folder: str, opened, report: AdaptReport, data_paths: Optional[Sequence[str]] = None) -> str:
    """Write the adapted model of ``opened`` (an ``OpenedCheckpoint``) as a new checkpoint folder:
    the weights under the checkpoint's own file name, ``all_config.yaml`` (the run's, with
    ``data_paths`` when given: the datasets it was evaluated on), the datasets' metadata
    (``dataset/``) and ``adaptation.json`` (the report and the source checkpoint). Written in a
    temporary folder, then renamed into place; returns the weights' path."""
    try:
        check_new_folder(folder, "adapt_save")
    except ValueError as e:
        raise AdaptError(str(e)) from None
    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    run_config = dict(opened.run_config)
    if data_paths:
        run_config.update(data_path=data_paths[0] if len(data_paths) == 1 else None, data_paths=list(data_paths))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(folder)}.tmp-", dir=parent)
    try:
        name = os.path.basename(opened.path)
        atomic_torch_save(model_weights(opened.model), os.path.join(tmp, name))
        atomic_write_text(os.path.join(tmp, "all_config.yaml"), yaml.dump(run_config))
        for rel, src in metadata_files(list(data_paths or opened.data_paths)).items():
            atomic_write(os.path.join(tmp, *rel.split("/")), lambda t, s=src: shutil.copyfile(s, t), size_hint=os.path.getsize(src))
        atomic_write_text(os.path.join(tmp, "adaptation.json"),
                          json.dumps({"checkpoint": os.path.abspath(opened.path), **report.as_dict()}, indent=1))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private; the checkpoint folder is a normal one
        if os.path.isdir(folder):
            os.rmdir(folder)  # empty (checked above): the complete folder takes its place
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return os.path.join(folder, name)
