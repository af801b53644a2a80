"""Test-time scaling: many samples of every puzzle in the same batches, one answer chosen.

``samples=N`` runs each example ``N`` times as extra rows of its batch (row ``b * N + k`` is
sample ``k`` of example ``b``), so the cost is one larger forward pass per segment, never a
Python loop per sample; under torchrun the samples stay on the rank of their example. Samples
differ by

- ``sampling=augment``: the task's symmetries (``TaskCodec.views``: Sudoku relabellings and
  line swaps, the maze's 8 symmetries, ARC's trained versions, a custom task's ``--augment``);
  predictions are mapped back to the example's own frame before they are compared;
- ``sampling=noise``: Gaussian noise of std ``noise_std`` added to every recurrent latent at the
  start of each ACT segment (Probabilistic TRM's stochastic recursion), for any arch: the hook
  sits on the inner model's carry, so nothing but the latent changes;
- ``sampling=both``: views and noise.

Sample 0 is always the example itself without noise (one plain pass), so ``samples=1`` is the
plain evaluation. ``select=vote|q_halt`` picks the answer (``inference/selection.py``).
Several checkpoints (an ensemble) each run every sample and the answers are pooled. A whole split
runs through :func:`inference.evaluation.evaluate`, the one loop of plain and sampled evaluation,
whose evaluators then score the chosen answers (ARC: its vote over the dataset's versions of each
test input, as after a plain pass).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Dict, Iterator, List, Literal, Optional, Sequence

import numpy as np
import pydantic
import torch
from torch import nn

from inference.segments import RunOptions, act_model, run_segments
from inference.selection import SELECTS, choose, answer_keys
from models.act import map_carry
from tasks.base import TaskCodec
from tasks.views import Views
from utils.functions import unwrap_compiled

SAMPLINGS = ("augment", "noise", "both")
DEFAULT_NOISE_STD = 0.5
# Upper bounds of the options: a larger value is a typo far more often than an experiment. 4096
# samples of one puzzle is above every published test-time budget; the latents are normalised to
# unit scale, so noise of std 100 already drowns them (and far larger values overflow float32).
MAX_SAMPLES = 4096
MAX_NOISE_STD = 100.0


def check_sampling_values(samples: int, noise_std: float) -> None:
    """``ValueError`` (one line naming the option) unless ``samples`` is 1..MAX_SAMPLES and
    ``noise_std`` a finite number in 0..MAX_NOISE_STD."""
    if not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(f"samples={samples}: expected 1 to {MAX_SAMPLES} samples per example")
    if not (math.isfinite(noise_std) and 0 <= noise_std <= MAX_NOISE_STD):
        raise ValueError(f"noise_std={noise_std}: expected a finite standard deviation from 0 to {MAX_NOISE_STD:g} "
                         "(the latents have unit scale)")


class SamplingConfig(pydantic.BaseModel):
    """The test-time scaling options shared by ``evaluate.py``, ``predict.py`` and the analyses."""

    model_config = pydantic.ConfigDict(extra="forbid")

    samples: int = pydantic.Field(1, ge=1, description="samples per example; 1 is the plain single pass")
    sampling: Literal[SAMPLINGS] = "augment"  # type: ignore[valid-type]
    noise_std: float = pydantic.Field(DEFAULT_NOISE_STD, ge=0, description="std of the latent noise (noise, both)")
    select: Literal[SELECTS] = "vote"  # type: ignore[valid-type]
    seed: int = 0

    @pydantic.model_validator(mode="after")
    def _bounded(self):
        check_sampling_values(self.samples, self.noise_std)
        return self

    @property
    def uses_views(self) -> bool:
        return self.samples > 1 and self.sampling in ("augment", "both")

    @property
    def uses_noise(self) -> bool:
        return self.samples > 1 and self.sampling in ("noise", "both") and self.noise_std > 0


class SamplingOptions(pydantic.BaseModel):
    """The test-time scaling keys of a command line (``evaluate.py``, ``predict.py``): its config
    class inherits them, and :attr:`sampling_config` turns them into a :class:`SamplingConfig`."""

    samples: int = pydantic.Field(1, ge=1)
    sampling: Literal[SAMPLINGS] = "augment"  # type: ignore[valid-type]
    noise_std: float = pydantic.Field(DEFAULT_NOISE_STD, ge=0)
    select: Literal[SELECTS] = "vote"  # type: ignore[valid-type]
    sampling_seed: int = 0

    @pydantic.model_validator(mode="after")
    def _bounded(self):
        check_sampling_values(self.samples, self.noise_std)
        return self

    def unused_options(self, checkpoints: int = 1) -> List[str]:
        """Notes naming the sampling keys given on the command line that change nothing here
        (``noise_std=`` without noise, any of them for a single plain pass)."""
        given = self.model_fields_set & {"sampling", "noise_std", "select", "sampling_seed"}
        if self.samples == 1 and checkpoints == 1:
            return [f"note: {', '.join(k + '=' for k in sorted(given))} {'has' if len(given) == 1 else 'have'} no effect "
                    "with samples=1 (one plain pass)"] if given else []
        if "noise_std" in given and (self.samples == 1 or self.sampling == "augment"):
            return [f"note: noise_std= has no effect with {'samples=1' if self.samples == 1 else 'sampling=augment'} "
                    "(noise is added with sampling=noise or both)"]
        return []

    @property
    def sampling_config(self) -> SamplingConfig:
        return SamplingConfig(samples=self.samples, sampling=self.sampling, noise_std=self.noise_std, select=self.select,
                              seed=self.sampling_seed)


def open_codec(opened, task: Optional[str] = None) -> Optional[TaskCodec]:
    """The task codec of an opened checkpoint (``inference.checkpoint.OpenedCheckpoint``), which
    declares the task's views; None when the dataset records no task and none is given."""
    from tasks import get_codec
    task = task or opened.task
    return None if task is None else get_codec(task).for_run(opened.metadata.seq_len, opened.data_paths)


def ensemble_mismatch(first, first_codec: Optional[TaskCodec], other, other_codec: Optional[TaskCodec]) -> Optional[str]:
    """Why the opened checkpoint ``other`` cannot be pooled with ``first`` (another task, sequence
    length, canvas or vocabulary: its tokens would mean other things; other puzzle identifiers: an
    ARC version's identifier would pick another version's embedding), or None."""
    def vocab(codec):
        return getattr(codec, "vocab", None)

    def canvas(opened):
        return getattr(opened.metadata, "canvas_height", None), getattr(opened.metadata, "canvas_width", None)

    shape = (first.metadata.seq_len, first.metadata.vocab_size)
    names = _identifier_names(first.data_paths), _identifier_names(other.data_paths)
    if (other.metadata.seq_len, other.metadata.vocab_size) != shape:
        found = f"seq_len {other.metadata.seq_len} and vocab {other.metadata.vocab_size}, but {first.path} has {shape[0]} and {shape[1]}"
    elif canvas(other) != canvas(first):
        found = f"its grids lie on a {_canvas_text(canvas(other))} canvas, but those of {first.path} on {_canvas_text(canvas(first))}"
    elif other.task != first.task:
        found = f"trained on {other.task or 'an unrecorded task'} puzzles, but {first.path} on {first.task or 'an unrecorded task'}"
    elif vocab(other_codec) != vocab(first_codec):
        found = f"its dataset's tokens differ from those of {first.path}"
    elif None not in names and names[0] != names[1]:
        found = f"its dataset's puzzle identifiers (identifiers.json) name other puzzles than those of {first.path}"
    else:
        return None
    return f"checkpoint={other.path}: {found}; an ensemble needs runs on the same data"


def _canvas_text(canvas) -> str:
    return "30x30" if None in canvas else f"{canvas[0]}x{canvas[1]}"


def _identifier_names(data_paths: Sequence[str]) -> Optional[List[List[str]]]:
    """The puzzle name of every identifier, per dataset (``identifiers.json``); None when a dataset
    has no such file at hand (a checkpoint that stands alone)."""
    names = []
    for path in data_paths:
        file = os.path.join(path, "identifiers.json")
        if not os.path.isfile(file):
            return None
        with open(file) as f:
            names.append(json.load(f))
    return names


def check_views(codec: Optional[TaskCodec], config: SamplingConfig) -> None:
    """A clear error when ``sampling`` asks for views of a task that declares no symmetry."""
    if config.uses_views and codec is None:
        raise ValueError(f"sampling={config.sampling}: the dataset does not record its task, whose symmetries the views "
                         "come from; use sampling=noise")
    if config.uses_views and codec is not None and codec.views_missing:
        raise ValueError(f"sampling={config.sampling}: {codec.views_missing}; "
                         "use sampling=noise (with noise_std=)")


@contextlib.contextmanager
def latent_noise(model: nn.Module, std: float, noisy_rows: torch.Tensor, generator: torch.Generator) -> Iterator[None]:
    """Add ``N(0, std^2)`` to every latent of the carry the inner model starts each ACT segment from
    (after halted rows were reset), on rows where ``noisy_rows`` ``[B]`` is true.

    A forward pre-hook on the inner model, so it works for every arch (the inner carry is a
    dataclass of latents) and touches nothing but the latent.
    """
    inner = act_model(model).inner
    scale = noisy_rows.to(torch.float32).view(-1, 1, 1) * std

    def add_noise(_module, args):
        carry, *rest = args
        noisy = map_carry(lambda z: z + (torch.randn(z.shape, generator=generator, device=z.device, dtype=torch.float32)
                                         * scale).to(z.dtype), carry)
        return (noisy, *rest)

    handle = inner.register_forward_pre_hook(add_noise)
    try:
        yield
    finally:
        handle.remove()


@dataclass
class Samples:
    """What every sample of a batch of ``B`` examples answered (``K`` = checkpoints x samples)."""

    answers: np.ndarray  # [B, K, L] predictions mapped back to each example's own frame
    q_halt: np.ndarray  # [B, K] sigmoid(q_halt logit) of the last segment, float64
    q_halt_logits: np.ndarray  # [B, K] float32
    segments: int  # ACT segments each sample ran
    view_inputs: np.ndarray  # [B, K, L] what each sample showed the model
    trace: Optional[np.ndarray] = None  # [B, K, T, L] answer after every segment, mapped back
    trace_q_halt_logits: Optional[np.ndarray] = None  # [B, K, T]
    trace_halt_confidence: Optional[np.ndarray] = None  # [B, K, T] confidence of the model's halting rule
    steps: Optional[np.ndarray] = None  # [B, K] segment at which the halt rule first fired (else T)
    halt_fired: Optional[np.ndarray] = None  # [B, K]

    def choose(self, select: str):
        """``(chosen sample [B], agreement [B])``, see :func:`inference.selection.choose`."""
        return choose(answer_keys(self.answers), self.q_halt, select)


def expand(batch: Dict[str, torch.Tensor], views: Optional[Views], samples: int) -> Dict[str, torch.Tensor]:
    """Every row ``samples`` times in a row (``b * samples + k``), shown through ``views`` when given."""
    out = {k: v.repeat_interleave(samples, dim=0) for k, v in batch.items()}
    if views is not None:
        inputs = batch["inputs"]
        shown = views.forward(inputs.cpu().numpy()).reshape(-1, inputs.shape[-1])
        out["inputs"] = torch.from_numpy(shown).to(inputs.device, inputs.dtype)
        if views.identifiers is not None:
            ids = batch["puzzle_identifiers"]
            out["puzzle_identifiers"] = torch.from_numpy(views.identifiers.reshape(-1)).to(ids.device, ids.dtype)
    return out


def draw_views(codec: Optional[TaskCodec], batch: Dict[str, torch.Tensor], config: SamplingConfig) -> Optional[Views]:
    """The views of a batch's examples (None when the samples differ by noise only)."""
    if not config.uses_views or codec is None:
        return None
    return codec.views(batch["inputs"].cpu().numpy(), config.samples, seed=config.seed,
                       identifiers=batch["puzzle_identifiers"].cpu().numpy())


def run_samples(models: Sequence[nn.Module], batch: Dict[str, torch.Tensor], codec: Optional[TaskCodec],
                config: SamplingConfig, options: Optional[RunOptions] = None,
                generator: Optional[torch.Generator] = None, max_rows: Optional[int] = None) -> Samples:
    """Run every sample of the examples in ``batch`` through every model of ``models``.

    ``options`` as :func:`inference.segments.run_segments` (``trace`` / ``steps`` come back per
    sample, mapped back); ``generator`` draws the latent noise (default: seeded by ``config.seed``);
    ``max_rows``: at most this many rows (examples x samples) per forward pass: whole examples
    while an example's samples fit, else one example at a time, its samples over several passes.
    """
    options = options or RunOptions()
    n, rows = config.samples, batch["inputs"].shape[0]
    budget = max(1, max_rows or rows * n)
    if generator is None and config.uses_noise:
        generator = torch.Generator(device=batch["inputs"].device).manual_seed(config.seed)
    per_pass = max(1, budget // n)
    if per_pass < rows:
        parts = [run_samples(models, {k: v[start:start + per_pass] for k, v in batch.items()}, codec, config, options,
                             generator, max_rows=budget) for start in range(0, rows, per_pass)]
        pooled = {f.name: (np.concatenate([getattr(p, f.name) for p in parts]) if isinstance(getattr(parts[0], f.name), np.ndarray)
                           else getattr(parts[0], f.name)) for f in dataclasses.fields(Samples)}
        return Samples(**pooled)
    views = draw_views(codec, batch, config)
    blocks = [(start, min(n, start + budget)) for start in range(0, n, budget)]
    parts: Dict[str, List[np.ndarray]] = {}
    segments = 0
    for model in models:
        passes = blocks
        if len(blocks) > 1:  # one example whose samples take several passes
            from utils.progress import progress_bar
            passes = progress_bar(blocks, desc=f"samples ({budget} per pass)", unit="pass", delay=3, leave=False, disable=None)
        got = [_run_block(model, batch, views, start, stop, config, options, generator) for start, stop in passes]
        for key in got[0][0]:
            parts.setdefault(key, []).append(np.concatenate([g[0][key] for g in got], axis=1))
        segments = got[0][1]
    pooled = {k: np.concatenate(v, axis=1) for k, v in parts.items()}
    return Samples(segments=segments, **pooled)


def _run_block(model: nn.Module, batch: Dict[str, torch.Tensor], views: Optional[Views], first: int, stop: int,
               config: SamplingConfig, options: RunOptions, generator: Optional[torch.Generator]):
    """Samples ``first..stop-1`` of every example of ``batch`` through ``model`` in one pass:
    ``({field of Samples: [B, stop - first, ...]}, segments run)``."""
    n, rows, length = stop - first, batch["inputs"].shape[0], batch["inputs"].shape[-1]
    shown = None if views is None else (views if (first, stop) == (0, config.samples) else _view_columns(views, first, stop))
    expanded = expand(batch, shown, n)
    view_inputs = expanded["inputs"].cpu().numpy().reshape(rows, n, length)
    noise = contextlib.nullcontext()
    if config.uses_noise:
        model = unwrap_compiled(model)  # the hook goes on the plain module
        device = expanded["inputs"].device
        noisy_rows = (torch.arange(rows * n, device=device) % n + first) != 0  # sample 0 stays the plain pass
        noise = latent_noise(model, config.noise_std, noisy_rows, generator)  # type: ignore[arg-type]
    with noise:
        _, _, out = run_segments(model, expanded, {"preds", "q_halt_logits"}, options)
    preds = out["preds"].cpu().numpy().reshape(rows, n, length)
    logits = out["q_halt_logits"].to(torch.float32)
    got = {"answers": shown.back(preds) if shown is not None else preds,
           "q_halt_logits": logits.cpu().numpy().reshape(rows, n),
           "q_halt": logits.to(torch.float64).sigmoid().cpu().numpy().reshape(rows, n),
           "view_inputs": view_inputs}
    segments = 0
    if options.trace:
        trace = out["trace"].cpu().numpy()
        t = trace.shape[1]
        trace = trace.reshape(rows, n, t, length).transpose(0, 2, 1, 3).reshape(rows * t, n, length)
        if shown is not None:  # the same view for every segment of a sample
            trace = _repeat_views(shown, t).back(trace)
        got["trace"] = trace.reshape(rows, t, n, length).transpose(0, 2, 1, 3)
        got["trace_q_halt_logits"] = out["trace_q_halt_logits"].cpu().numpy().reshape(rows, n, t)
        got["trace_halt_confidence"] = out["trace_halt_confidence"].cpu().numpy().reshape(rows, n, t)
        segments = t
    if options.steps:
        got["steps"] = out["steps"].cpu().numpy().reshape(rows, n)
        got["halt_fired"] = out["halt_fired"].cpu().numpy().reshape(rows, n)
    return got, segments or _segments_run(model, options)


def _segments_run(model: nn.Module, options: RunOptions) -> int:
    return int(options.halt_max_steps or act_model(model).config.halt_max_steps)


def _view_columns(views: Views, first: int, stop: int) -> Views:
    """Views ``first..stop-1`` of every row of ``views`` (the fields shaped ``[B, N, ...]``)."""
    rows, n = views.shape
    fields = {}
    for f in dataclasses.fields(views):
        value = getattr(views, f.name)
        sliced = isinstance(value, np.ndarray) and value.ndim >= 2 and value.shape[:2] == (rows, n)
        fields[f.name] = value[:, first:stop] if sliced else value
    return type(views)(**fields)


def _repeat_views(views: Views, times: int) -> Views:
    """``views`` with each row repeated ``times`` times (row-major), to map back a trace."""
    fields = {}
    for f in dataclasses.fields(views):
        value = getattr(views, f.name)
        fields[f.name] = np.repeat(value, times, axis=0) if isinstance(value, np.ndarray) else value
    return type(views)(**fields)


__all__ = ["DEFAULT_NOISE_STD", "MAX_NOISE_STD", "MAX_SAMPLES", "check_sampling_values", "ensemble_mismatch", "SAMPLINGS", "SamplingConfig", "Samples", "check_views", "draw_views",
           "expand", "latent_noise", "open_codec", "run_samples"]
