"""Answering puzzles with a trained checkpoint: the library behind ``predict.py``.

    from inference.predictor import load_predictor
    p = load_predictor("checkpoints/<project>/<run>/step_N")     # or hf://owner/name, or [a, b]
    p.predict([".2.4..1..3..4.1."])                              # one result dict per puzzle
    p.predict(puzzles, samples=16, trace=True)                   # test-time scaling, per-segment answers

:func:`load_predictor` rebuilds the model from a checkpoint (its dataset's metadata, or the weights
and ``task=`` alone); :class:`Predictor` reads puzzles in the task's notation (``tasks/``), runs
each for ``halt_max_steps`` ACT segments as ``evaluate.py`` does (so answers equal its
predictions), with samples and ensembles through ``inference/sampling.py``, adapts the model to
ARC tasks by training on their demonstrations (``inference/adaptation.py``), and draws the
reasoning steps.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import pydantic
import torch

from dataset.common import DatasetError
from inference.adaptation import AdaptReport, AdaptSettings, Demonstrations, adapt_model, collate, save_adapted
from inference.checkpoint import OpenedCheckpoint, dataset_metadata, open_checkpoint, read_run_config, run_data_paths
from inference.sampling import SamplingConfig, check_views, ensemble_mismatch, run_samples
from inference.segments import RunOptions
from models.losses import IGNORE_LABEL_ID
from tasks import CODECS, get_codec
from tasks.base import Puzzle, Row, RowOutput, TaskCodec
from utils.errors import UserError
from utils.functions import validation_error_line
from utils.progress import progress_bar


class PredictError(UserError):
    """A request the predictor cannot answer (an option, an ensemble, a task). Its other user
    errors are those of what it reads (``PuzzleError``, ``ConfigError``, ``CheckpointError``): catch
    :class:`utils.errors.UserError` for all of them."""


class Predictor:
    """A checkpoint ready to answer puzzles of its task. Build it with :func:`load_predictor`."""

    def __init__(self, opened: OpenedCheckpoint, task: str, ensemble: Sequence[OpenedCheckpoint] = ()):
        self.opened, self.task = opened, task
        self.ensemble = list(ensemble)  # further checkpoints whose samples are pooled with this one's
        self.checkpoint, self.config, self.metadata = opened.path, opened.run_config, opened.metadata
        self.model, self.device, self.batch_size = opened.model, opened.device, opened.batch_size
        self.codec: TaskCodec = get_codec(task).for_run(opened.metadata.seq_len, opened.data_paths)
        self.halt_max_steps: int = opened.halt_max_steps
        self.last_run: List[tuple] = []  # (puzzle, rows, outputs, sampling facts) of the last predict call, for pictures
        self.last_adaptation: Optional[AdaptReport] = None  # of the last adapt call (adapt_save writes it)

    @property
    def act_model(self):
        return self.model.model

    # ---- reading puzzles
    def read(self, text: str, source: Optional[str] = None) -> List[Puzzle]:
        """Puzzles from text in the task's notation (``source``: the file it came from, for messages)."""
        return self.codec.read(text, source)

    def _as_puzzles(self, puzzles: Sequence[Union[str, Puzzle]]) -> List[Puzzle]:
        out: List[Puzzle] = []
        for i, p in enumerate(puzzles):
            if isinstance(p, Puzzle):
                out.append(p)
                continue
            for q in self.read(p):
                q.where = f"puzzle {i + 1}"  # typed puzzles are numbered as given (files name their lines)
                out.append(q)
        return out

    # ---- running the model
    def _batch(self, rows: Sequence[Row]) -> Dict[str, torch.Tensor]:
        labels = np.stack([r.labels if r.labels is not None else np.full(len(r.inputs), IGNORE_LABEL_ID) for r in rows])
        return collate(np.stack([r.inputs for r in rows]), labels, np.array([r.identifier for r in rows]),
                       self.metadata.ignore_label_id, self.device)

    def run_rows(self, rows: Sequence[Row], halt_max_steps: Optional[int] = None, sampling: Optional[SamplingConfig] = None,
                 progress: bool = True):
        """Every row for ``halt_max_steps`` ACT segments (evaluate.py's rule), batched, with
        ``sampling.samples`` samples through every checkpoint (``inference/sampling.py``; default
        one sample, the plain pass). ``(outputs, facts)``: the chosen sample's per-segment outputs
        (mapped back to the puzzle's frame) and per row its ``agreement``, ``samples`` and ``chosen_sample``."""
        sampling = sampling or SamplingConfig()
        options = RunOptions(halt_max_steps=halt_max_steps or self.halt_max_steps, steps=True, trace=True)
        models = [self.model] + [o.model for o in self.ensemble]
        per_pass = max(1, self.batch_size // sampling.samples)
        generator = torch.Generator(device=self.device).manual_seed(sampling.seed)
        outputs: List[RowOutput] = []
        facts: List[Dict[str, Any]] = []
        for m in models:
            m.eval()
        starts = range(0, len(rows), per_pass)
        total = sampling.samples * len(models)
        bar = progress_bar(starts, desc="predict" if total == 1 else f"predict x{total}", unit="batch", delay=3,
                           disable=not progress or None, leave=False)
        with torch.inference_mode():
            for start in bar:
                got = run_samples(models, self._batch(rows[start: start + per_pass]), self.codec, sampling, options, generator,
                                  max_rows=self.batch_size)
                chosen, agreement = got.choose(sampling.select)
                q_halt = torch.from_numpy(got.trace_q_halt_logits).to(torch.float64).sigmoid().numpy()
                for i, k in enumerate(chosen.tolist()):
                    outputs.append(RowOutput(preds=got.trace[i, k], q_halt_logits=got.trace_q_halt_logits[i, k], q_halt=q_halt[i, k],
                                             halt_step=int(got.steps[i, k]) if got.halt_fired[i, k] else None,
                                             halt_confidence=got.trace_halt_confidence[i, k]))
                    facts.append({"agreement": round(float(agreement[i]), 6), "samples": int(got.answers.shape[1]),
                                  "chosen_sample": int(k)})
        return outputs, facts

    def adapt(self, puzzles: Sequence[Union[str, Puzzle]], steps: int, lr: Optional[float] = None,
              num_aug: Optional[int] = None, seed: int = 0, progress: bool = True, mode: str = "embedding",
              batch: Optional[int] = None, option: Optional[str] = None, save: Optional[str] = None) -> Dict[str, Any]:
        """Adapt the model to the ARC tasks among ``puzzles`` (``inference/adaptation.py``): ``steps``
        training steps on their augmented demonstration pairs, ``mode`` ``embedding`` (only the
        tasks' puzzle-embedding rows learn: the sparse SignSGD update, at the run's
        ``puzzle_emb_lr`` unless ``lr`` is given) or ``full`` (every weight too, with the run's
        optimizers). Every given task is adapted. A task the checkpoint has no identifiers for
        first gets the builder's augmented versions (``num_aug``), one new identifier each
        (initialised, as ``load_checkpoint`` does for new puzzles, to the mean of the trained
        rows), which the puzzles keep for :meth:`predict`. Returns the report
        (:class:`inference.adaptation.AdaptReport` as a dict: ``loss_before`` / ``loss_after`` and
        the exact accuracies among its keys). ``option`` names the command-line option in errors.
        ``save``: a new folder to write the adapted model to as a checkpoint (key ``saved``: its
        weights file); only for tasks among the checkpoint's puzzles, whose identifiers its dataset holds.
        """
        try:
            settings = AdaptSettings(mode=mode, steps=steps, lr=lr, batch=batch, seed=seed)
        except pydantic.ValidationError as e:
            raise PredictError(validation_error_line(e)) from None
        option = option or f"adapt={mode}"
        if not self.codec.adaptable:
            raise PredictError(f"{option}: only for ARC checkpoints (this one: {self.task})")
        inner = self.act_model.inner
        has_rows = getattr(inner.config, "puzzle_emb_ndim", 0) > 0
        if mode == "embedding" and not has_rows:
            raise PredictError(f"{option}: this model has no puzzle embedding (puzzle_emb_ndim=0); nothing to adapt")
        parsed = self._as_puzzles(puzzles)
        unseen = [p.name for p in self.codec.unseen_puzzles(parsed)]  # type: ignore[attr-defined]
        if save is not None and unseen:
            raise PredictError(f"adapt_save={save}: task {unseen[0]!r} is not among the checkpoint's puzzles; the rows made for it "
                               "have no identifiers in the checkpoint's dataset, so the adapted model cannot be saved with it")
        new_rows = 0
        if has_rows:
            emb = inner.puzzle_emb
            start = emb.weights.shape[0]
            for p in self.codec.unseen_puzzles(parsed):  # type: ignore[attr-defined]
                names = self.codec.planned_versions(p, self.codec.default_num_aug() if num_aug is None else num_aug)  # type: ignore[attr-defined]
                p.data.versions = [(n, start + new_rows + i) for i, n in enumerate(names)]
                new_rows += len(names)
            with torch.no_grad():
                fresh = emb.weights.mean(0, keepdim=True).expand(new_rows, -1)
                emb.weights = torch.cat([emb.weights, fresh]).contiguous()
        self.codec.prepare(parsed, "error" if has_rows else "blank", num_aug, self.metadata.blank_identifier_id)
        rows = [r for p in parsed for r in self.codec.demonstration_rows(p, seed=seed)]  # type: ignore[attr-defined]
        demos = Demonstrations.of_rows(rows, [p.name for p in parsed], self.metadata.ignore_label_id, "the given tasks")
        report = adapt_model(self.model, self.config, demos, settings, self.batch_size, progress=progress)
        report.new_rows = new_rows
        report.extra = {"loss_before": report.before["loss"], "loss_after": report.after["loss"],
                        "exact_accuracy_before": report.before["exact_accuracy"], "exact_accuracy_after": report.after["exact_accuracy"]}
        self.last_adaptation = report
        if save is not None:
            own = self.opened.sized_by == "dataset" and [os.path.abspath(p) for p in self.opened.data_paths] != \
                [os.path.abspath(p) for p in run_data_paths(self.config)]
            report.extra["saved"] = save_adapted(save, self.opened, report, self.opened.data_paths if own else None)
        return report.as_dict()

    # ---- the whole job
    def predict(self, puzzles: Sequence[Union[str, Puzzle]], halt_max_steps: Optional[int] = None, trace: bool = False,
                unseen: str = "error", num_aug: Optional[int] = None, progress: bool = True, samples: int = 1,
                sampling: str = "augment", noise_std: float = SamplingConfig.model_fields["noise_std"].default,
                select: str = "vote", sampling_seed: int = 0) -> List[Dict[str, Any]]:
        """Answer ``puzzles`` (text in the task's notation, or parsed :class:`Puzzle`); one result dict each.

        Every puzzle runs ``halt_max_steps`` segments (default: the trained value), as evaluate.py
        runs test examples, so answers equal evaluate.py's predictions. Result keys: ``answer``,
        ``steps`` (segment at which the model's own halt rule first fired, else all of them),
        ``halted`` (whether it fired), ``halt_confidence`` (sigmoid(q_halt) at the last segment),
        ``valid`` (the rules' verdict for Sudoku, maze and domino; None for ARC), ``correct``
        when the puzzle came with its truth, ``trace`` (per segment) when asked.

        ``samples=N`` (and an ensemble): each puzzle is answered N times (``sampling``: the task's
        symmetries, latent noise of ``noise_std`` or both; sample 0 the puzzle itself) and one answer
        is chosen (``select``: ``vote`` or ``q_halt``); results gain ``agreement`` (share of samples
        that gave it), ``samples`` and ``chosen_sample``, whose steps the trace and pictures show
        (mapped back to the puzzle's frame). ARC: every version of a test input is answered so and
        the chosen answers are voted on as without samples; ``agreement`` is then the mean over
        the versions and ``chosen_sample`` a list, one per version.
        """
        try:
            config = SamplingConfig(samples=samples, sampling=sampling, noise_std=noise_std, select=select, seed=sampling_seed)
        except pydantic.ValidationError as e:
            raise PredictError(validation_error_line(e)) from None
        scaled = config.samples > 1 or bool(self.ensemble)
        if scaled:
            try:
                check_views(self.codec, config)
            except ValueError as e:
                raise PredictError(str(e)) from None
        parsed = self._as_puzzles(puzzles)
        self.codec.prepare(parsed, unseen, num_aug, self.metadata.blank_identifier_id)
        rows_of = [self.codec.rows(p) for p in parsed]
        flat = [r for rows in rows_of for r in rows]
        outputs, facts = self.run_rows(flat, halt_max_steps, config, progress=progress)
        if not scaled:
            facts = []  # one plain pass: nothing was chosen
        results, k = [], 0
        self.last_run = []
        for p, rows in zip(parsed, rows_of):
            outs = outputs[k: k + len(rows)]
            row_facts = facts[k: k + len(rows)]
            k += len(rows)
            result = {"puzzle": p.where, **self.codec.result(p, rows, outs, trace)}
            if row_facts:
                result.update(puzzle_facts(row_facts))
            results.append(result)
            self.last_run.append((p, rows, outs, row_facts or None))
        return results

    def picture_panels(self, trace: bool = True):
        """Panels of the last :meth:`predict` call: per puzzle the input, the segments (or the answer), the truth."""
        from tasks.pictures import Panel

        lines = []
        for p, rows, outs, row_facts in self.last_run:
            for row, out in self.codec.picture_rows(p, rows, outs):
                title = "input"
                sampled = None if row_facts is None else row_facts[next(i for i, r in enumerate(rows) if r is row)]
                if sampled is not None:  # the steps shown are the chosen sample's, mapped back to the puzzle
                    title = f"input; steps of sample {sampled['chosen_sample'] + 1}/{sampled['samples']}\n({sampled['agreement']:.0%} agree)"
                panels = [Panel(title, self.codec.cells(p, row.inputs, is_input=True))]
                segments = range(len(out.q_halt)) if trace else [len(out.q_halt) - 1]
                for s in segments:
                    last = " = answer" if s == len(out.q_halt) - 1 else ""
                    panels.append(Panel(f"step {s + 1}{last}\nhalt {out.confidence()[s]:.2f}", self.codec.cells(p, out.preds[s], is_input=False)))
                if row.labels is not None:
                    panels.append(Panel("truth", self.codec.cells(p, row.labels, is_input=False)))
                lines.append(panels)
        return lines


def puzzle_facts(row_facts: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The sampling facts of a puzzle's result: its row's; for a puzzle of several rows (ARC: one per
    version of each test input) the mean ``agreement`` and the ``chosen_sample`` of every row."""
    if len(row_facts) == 1:
        return dict(row_facts[0])
    return {"agreement": round(float(np.mean([f["agreement"] for f in row_facts])), 6), "samples": row_facts[0]["samples"],
            "chosen_sample": [f["chosen_sample"] for f in row_facts]}


def load_predictor(checkpoint: Union[str, Sequence[str]], task: Optional[str] = None, device: Optional[str] = None,
                   batch_size: Optional[int] = None, seq_len: Optional[int] = None,
                   data_path: Optional[str] = None) -> Predictor:
    """Rebuild the model of ``checkpoint`` (a ``step_N`` file, or ``hf://owner/name[@rev][/file]``)
    for answering puzzles.

    ``task`` is needed only when the checkpoint's dataset does not record it (datasets built by
    the original code) or no dataset metadata is at hand; a task that contradicts the recorded one
    is an error. ``seq_len``: the sequence length, for a checkpoint without dataset metadata whose
    task does not fix it. ``data_path``: the dataset folder, when not at the recorded path. A list
    of checkpoints is an ensemble (runs on the same data): every one answers every sample.
    """
    if not isinstance(checkpoint, str):
        paths = list(checkpoint)
        if not paths:
            raise PredictError("checkpoint: empty list; give at least one checkpoint")
        first = load_predictor(paths[0], task, device, batch_size, seq_len, data_path)
        for path in paths[1:]:
            other = load_predictor(path, first.task, device, batch_size, seq_len, data_path)
            problem = ensemble_mismatch(first.opened, first.codec, other.opened, other.codec)
            if problem:
                raise PredictError(problem)
            first.ensemble.append(other.opened)
        return first
    if task is not None and task not in CODECS:
        raise PredictError(f"task={task}: unknown task; known tasks: {', '.join(sorted(CODECS))}")
    opened = open_checkpoint(checkpoint, device=device, batch_size=batch_size, data_paths=[data_path] if data_path else None,
                             standalone=True, task=task, seq_len=seq_len)
    if seq_len is not None and opened.metadata.seq_len != seq_len:
        raise PredictError(f"seq_len={seq_len}: this checkpoint's dataset metadata says {opened.metadata.seq_len}")
    dataset_json = os.path.join(opened.data_paths[0], "train", "dataset.json")
    recorded = opened.task
    if recorded is not None and task is not None and task != recorded:
        raise PredictError(f"task={task}: this checkpoint was trained on {recorded} puzzles ({dataset_json})")
    task = task or recorded
    if task is None:
        raise PredictError(f"{dataset_json} does not record its task (built by an older builder); say which with "
                           f"task={'|'.join(sorted(CODECS))}")
    if task not in CODECS:
        raise PredictError(f"dataset.json records task {task!r}, which predict.py has no notation for (known: {', '.join(sorted(CODECS))})")
    # The codec of the run's data: an ARC dataset's canvas (hence its sequence length) is in its dataset.json.
    problem = get_codec(task).for_run(opened.metadata.seq_len, opened.data_paths).check_shapes(opened.metadata.seq_len,
                                                                                                opened.metadata.vocab_size)
    if problem:
        raise PredictError(f"task={task}: does not fit this checkpoint: {problem}")
    return Predictor(opened, task)


def describe(result: Dict[str, Any]) -> str:
    """A few readable lines for one result."""
    answer = result["answer"]
    attempts = isinstance(answer, list) and bool(answer) and all(isinstance(a, dict) for a in answer)
    if attempts:  # ARC: attempts per test input
        shown = "\n".join(f"  test {i + 1}: " + "  ".join(f"{k}={json.dumps(v)}" for k, v in a.items()) for i, a in enumerate(answer))
    elif not isinstance(answer, str):  # a custom task's token list or grid, in its file's JSON notation
        shown = "  " + json.dumps(answer)
    elif "\n" in answer:
        shown = "\n".join("  " + line for line in answer.splitlines())
    else:
        shown = "  " + answer
    halted = f"halted by itself at segment {result['steps']}" if result["halted"] else "did not halt by itself"
    facts = [f"{result['segments_run']} segments ({halted})", f"halt confidence {result['halt_confidence']:.3f}"]
    if "agreement" in result:
        facts.append(f"{result['agreement']:.0%} of {result['samples']} samples agree")
    if result.get("valid") is not None:
        facts.append("valid" if result["valid"] else f"NOT valid: {result.get('problem')}")
    if "correct" in result:
        facts.append("matches the truth" if result["correct"] else "differs from the truth")
    lines = [f"{result['puzzle']}: " + ", ".join(facts), shown]
    raw = result.get("raw_answer")
    if raw is not None and raw != answer:  # the model wrote over what the puzzle gives (kept in the answer)
        raw_shown = json.dumps(raw) if not isinstance(raw, str) else raw if "\n" not in raw else "(grid) " + raw.replace("\n", "/")
        lines.append(f"  the model's own output, which overwrote given cells (raw_answer, what evaluate.py scores): {raw_shown}")
    for entry in result.get("trace", []) if not attempts else []:
        changed = "" if entry["changed"] is None else f", {entry['changed']} changed"
        step_answer = entry["answer"] if isinstance(entry["answer"], str) else json.dumps(entry["answer"])
        lines.append(f"    segment {entry['step']}: halt {entry['halt_confidence']:.3f}{changed}: {step_answer if chr(10) not in step_answer else '(grid)'}")
    return "\n".join(lines)


def read_puzzle_file(path: str) -> str:
    """The text of ``puzzle_file``: UTF-8, a byte-order mark (Windows editors write one) dropped."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise PredictError(f"puzzle_file={path}: cannot read ({e.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise PredictError(f"puzzle_file={path}: not UTF-8 text (byte {e.start} is 0x{data[e.start]:02x}); "
                           "expected puzzles written as text") from None


def check_adaptable(checkpoint: Union[str, Sequence[str]], task: Optional[str], option: str) -> None:
    """Adaptation (``option``, e.g. ``adapt=full``) only for a task whose puzzles carry
    demonstrations (ARC), known from the checkpoint's config and dataset metadata before the model
    loads (a checkpoint that is not a local file is checked once it is opened)."""
    first = checkpoint if isinstance(checkpoint, str) else checkpoint[0]
    if task is None and not os.path.isfile(first):
        return
    try:
        task = task or dataset_metadata(run_data_paths(read_run_config(first)))[1]
    except DatasetError:
        return  # no dataset at the recorded path: the checkpoint may stand alone; checked once it is opened
    if task in CODECS and not get_codec(task).adaptable:
        raise PredictError(f"{option}: only for ARC checkpoints (this one: {task})")
