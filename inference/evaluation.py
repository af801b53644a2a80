"""A model on a whole test split: metrics per set, evaluator results, saved outputs.

Used by ``evaluate.py``, ``scripts/analyze_checkpoint.py`` and the evaluation during training.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from dataset.common import PuzzleDatasetMetadata
from evaluators import build_evaluators
from inference.checkpoint import OpenedCheckpoint, dataset_missing_error, open_checkpoint, read_run_config, run_data_paths
from inference.model import has_act_inference
from inference.sampling import Samples, SamplingConfig, check_views, ensemble_mismatch, open_codec, run_samples
from inference.segments import RunOptions, puzzle_id_ablation_map, run_segments
from inference.selection import curve_sizes, scaling_sums
from puzzle_dataset import PuzzleDatasetConfig, create_loader
from tasks.base import TaskCodec
from utils.safe_io import atomic_torch_save, atomic_write_text
from utils.config import ConfigError, check_batch_divisible
from utils.distributed import DistInfo
from utils.hub import local_checkpoint
from utils.metrics import reduce_metrics, stack_metrics, to_device
from utils.outputs import export_npy
from utils.progress import progress_bar


def evaluate(model: nn.Module, eval_loader, eval_metadata: PuzzleDatasetMetadata, evaluators: Sequence[Any] = (),
             save_outputs: Sequence[str] = (), output_dir: Optional[str] = None, step: int = 0, rank: int = 0, world_size: int = 1,
             cpu_group=None, options: Optional[RunOptions] = None, sampling: Optional[SamplingConfig] = None,
             ensemble: Sequence[nn.Module] = (), codec: Optional[TaskCodec] = None,
             max_rows: Optional[int] = None) -> Optional[Dict[str, Any]]:
    """Run the test split; returns ``{set: {metric: mean}}`` plus evaluator results on rank 0.

    Each test batch starts from a fresh carry and runs until every row halted (in eval mode
    that is exactly ``halt_max_steps`` segments, unless the model halts adaptively in evaluation;
    the ``steps`` metric is the mean number of segments used); see :func:`inference.segments.run_segments`
    for the ``steps`` / ``trace`` outputs and ``options`` (by default what ``save_outputs`` asks
    for). The batch fields and outputs named in ``save_outputs`` go to
    ``<output_dir>/step_<step>_all_preds.<rank>``, evaluator results beside it.

    Test-time scaling is the same pass with more rows: with ``sampling`` (samples per example,
    ``codec`` giving the task's views) and an ``ensemble`` (further models whose samples are pooled)
    every example is answered many times and one answer chosen (``inference/sampling.py``); the metrics
    are then those of :func:`inference.selection.scaling_sums` with the compute spent
    (``samples``, ``segments``, ``forward_segments``), the outputs those of
    :func:`sampled_outputs`, and ``max_rows`` bounds the rows of one forward pass. The evaluators
    then score the chosen answers (ARC: its vote over the dataset's versions of each test input).
    """
    reduced_metrics: Optional[Dict[str, Any]] = None
    models = [model, *ensemble]
    with torch.inference_mode():
        return_keys = set(save_outputs)
        if options is None:
            options = RunOptions.from_outputs(return_keys)
        for evaluator in evaluators:
            evaluator.begin_eval()
            return_keys.update(evaluator.required_outputs)

        set_ids = {k: idx for idx, k in enumerate(eval_metadata.sets)}
        score = _SampledPass(models, sampling, codec, options, max_rows) if sampling else _PlainPass(model, return_keys, options)
        metric_keys, metric_values, saved = _eval_batches(score, models[0], eval_loader, set_ids, evaluators, list(save_outputs),
                                                          rank=rank)
        if output_dir is not None and saved:
            # Keys in sorted order: the file's bytes do not depend on this process's string hashing.
            atomic_torch_save({k: torch.cat(saved[k], dim=0) for k in sorted(saved)}, os.path.join(output_dir, f"step_{step}_all_preds.{rank}"))
        del saved

        if metric_values is not None:
            rows = reduce_metrics(metric_keys, metric_values, rank, world_size)
            if rows is not None:
                compute = score.compute() if sampling else {}
                reduced_metrics = {set_name: {**rows[set_id], **compute} for set_name, set_id in set_ids.items()}

        for evaluator in evaluators:
            save_path = None
            if output_dir is not None:
                save_path = os.path.join(output_dir, f"evaluator_{evaluator.__class__.__name__}_step_{step}")
            metrics = evaluator.result(save_path, rank=rank, world_size=world_size, group=cpu_group)
            if rank == 0 and metrics is not None:
                reduced_metrics = {**(reduced_metrics or {}), **metrics}
    return reduced_metrics


class _PlainPass:
    """One pass of ``model`` per batch: the loss head's metric sums and the model's outputs."""

    desc = "eval"

    def __init__(self, model: nn.Module, return_keys: set, options: RunOptions):
        self.model, self.return_keys, self.options = model, return_keys, options

    def __call__(self, batch: Dict[str, torch.Tensor]):
        _, metrics, preds = run_segments(self.model, batch, self.return_keys, self.options)
        return metrics, {**batch, **preds}


class _SampledPass:
    """Every sample of every model per batch: the test-time scaling sums and the chosen answers."""

    def __init__(self, models: Sequence[nn.Module], config: SamplingConfig, codec: Optional[TaskCodec], options: RunOptions,
                 max_rows: Optional[int]):
        device = next(iter(models[0].parameters())).device
        self.models, self.config, self.codec, self.options, self.max_rows = models, config, codec, options, max_rows
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.total_samples = config.samples * len(models)
        self.curve = curve_sizes(self.total_samples)
        self.desc = f"eval x{self.total_samples}"
        self.segments = 0

    def __call__(self, batch: Dict[str, torch.Tensor]):
        result = run_samples(self.models, batch, self.codec, self.config, self.options, self.generator,
                             max_rows=self.max_rows or len(batch["inputs"]))
        self.segments = result.segments
        sums = scaling_sums(result.answers, result.q_halt, batch["labels"].cpu().numpy(), self.config.select, self.curve)
        return ({k: torch.tensor(v, dtype=torch.float64) for k, v in sums.items()},
                {**batch, **sampled_outputs(result, self.config.select)})

    def compute(self) -> Dict[str, int]:
        """The compute spent per example: samples x segments ACT segments."""
        return {"samples": self.total_samples, "segments": self.segments, "forward_segments": self.total_samples * self.segments}


# Outputs a sampled evaluation can save besides the batch's (see sampled_outputs).
SAMPLING_OUTPUTS = ("agreement", "chosen_sample", "sample_preds")


def sampled_outputs(result: Samples, select: str) -> Dict[str, torch.Tensor]:
    """The outputs a sampled evaluation can save: ``preds`` (the chosen answers), ``agreement``,
    ``chosen_sample``, ``q_halt_logits`` of the chosen sample and ``sample_preds`` ``[B, K, L]``."""
    chosen, agreement = result.choose(select)
    rows = np.arange(len(chosen))
    fields = {"preds": result.answers[rows, chosen], "agreement": agreement, "chosen_sample": chosen,
              "q_halt_logits": result.q_halt_logits[rows, chosen], "sample_preds": result.answers}
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in fields.items()}


def _eval_batches(score, model: nn.Module, eval_loader, set_ids: Dict[str, int], evaluators: Sequence[Any],
                  save_outputs: List[str], rank: int):
    """Every test batch through ``score``: per-set metric sums ``[sets, metrics]`` (None without
    batches), their keys, and the outputs named in ``save_outputs`` (on the CPU), without the
    rows that pad the last batch of a set."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    saved: Dict[str, List[torch.Tensor]] = {}
    metric_keys: List[str] = []
    metric_values = None
    batches = progress_bar(eval_loader, desc=score.desc, leave=False, dynamic_ncols=True) if rank == 0 else eval_loader
    for set_name, batch, global_batch_size in batches:
        batch = to_device(batch, device)
        metrics, outputs = score(batch)

        # This rank holds rows [rank * local, (rank + 1) * local) of the global batch; of a set's
        # last batch only the first `global_batch_size` rows are examples, the rest padding.
        local = batch["puzzle_identifiers"].shape[0]
        real = min(local, max(0, global_batch_size - rank * local))
        for k in save_outputs:
            if k in outputs:
                saved.setdefault(k, []).append(outputs[k][:real].cpu())
        for evaluator in evaluators:
            evaluator.update_batch(batch, outputs)

        if metric_values is None:
            metric_keys = sorted(metrics.keys())
            metric_values = torch.zeros((len(set_ids), len(metric_keys)), dtype=torch.float64, device=device)
        metric_values[set_ids[set_name]] += stack_metrics(metrics, metric_keys).to(device)
    return metric_keys, metric_values, saved


@dataclass
class Evaluation:
    """A checkpoint opened once and evaluated as often as needed (splits, subsets, ablations,
    ``halt_max_steps`` values) on its run's datasets; loaders and evaluators are made on first
    use and kept. Build it with :func:`load_evaluation`."""

    opened: OpenedCheckpoint
    info: DistInfo
    data_paths: List[str]  # train split folders
    test_paths: List[str]
    act_inference: Optional[bool] = None
    _loaders: Dict[Tuple[str, Optional[int]], Any] = field(default_factory=dict)
    _evaluators: Optional[List[Any]] = None

    @property
    def model(self) -> nn.Module:
        return self.opened.model

    @property
    def metadata(self) -> PuzzleDatasetMetadata:
        """The train split's metadata, which sized the model."""
        return self.opened.metadata

    @property
    def default_halt_max_steps(self) -> int:
        return self.opened.halt_max_steps

    def loader(self, split: str, max_examples: Optional[int]):
        """``(loader, metadata)`` of the first ``max_examples`` examples of ``split`` (all for None)."""
        key = (split, max_examples)
        if key not in self._loaders:
            paths = self.test_paths if split == "test" else self.data_paths
            config = PuzzleDatasetConfig(seed=self.opened.run_config.get("seed", 0), dataset_paths=paths, rank=self.info.rank,
                                         num_replicas=self.info.world_size, global_batch_size=int(self.opened.run_config["global_batch_size"]),
                                         test_set_mode=True, epochs_per_iter=1, max_examples=max_examples)
            self._loaders[key] = create_loader(config, split)
        return self._loaders[key]

    def evaluators(self) -> List[Any]:
        if self._evaluators is None:
            self._evaluators = build_evaluators(self.opened.run_config.get("evaluators") or [], self.test_paths,
                                                self.loader("test", None)[1])
        return self._evaluators

    def run(self, split: str = "test", max_examples: Optional[int] = None, puzzle_id_ablation: str = "none",
            ablation_seed: int = 0, halt_max_steps: Optional[int] = None, save_outputs: Sequence[str] = (),
            output_dir: Optional[str] = None, save_npy: bool = False, use_evaluators: bool = True,
            sampling: Optional[SamplingConfig] = None, ensemble: Sequence["Evaluation"] = ()) -> Optional[Dict[str, Any]]:
        """One evaluation; returns rank 0's metrics (None on other ranks). Outputs go to
        ``output_dir`` (default: the checkpoint's folder). Evaluators run on the test split only,
        and not at all with ``use_evaluators=False``.

        Test-time scaling (``evaluate.py samples=N`` and ``checkpoint=[...]``): with ``sampling``
        of more than one sample, or an ``ensemble`` of further evaluations, every example is
        answered by every sample of every checkpoint and one answer chosen (see :func:`evaluate`),
        which the evaluators score; the metrics are also written to ``step_N_sampling.json``
        beside the outputs (``preds``: the chosen answers).
        """
        scaled = sampling is not None and (sampling.samples > 1 or bool(ensemble))
        codec = self.scaling_codec(sampling, ensemble) if scaled else None
        output_dir = output_dir or self.opened.folder
        loader, metadata = self.loader(split, max_examples)
        identifier_map = puzzle_id_ablation_map(puzzle_id_ablation, self.metadata.num_puzzle_identifiers,
                                                self.metadata.blank_identifier_id, ablation_seed)
        if scaled:
            options = RunOptions(halt_max_steps=halt_max_steps, act_inference=self.act_inference, identifier_map=identifier_map)
            os.makedirs(output_dir, exist_ok=True)
        else:
            options = RunOptions.from_outputs(save_outputs, halt_max_steps=halt_max_steps, act_inference=self.act_inference,
                                              identifier_map=identifier_map)
        for ev in (self, *ensemble):
            ev.model.eval()
        evaluators = self.evaluators() if split == "test" and use_evaluators else []
        metrics = evaluate(self.model, loader, metadata, evaluators, save_outputs=list(save_outputs), output_dir=output_dir,
                           step=self.opened.step, rank=self.info.rank, world_size=self.info.world_size, cpu_group=self.info.cpu_group,
                           options=options, sampling=sampling if scaled else None, ensemble=[ev.model for ev in ensemble],
                           codec=codec, max_rows=int(self.opened.run_config["global_batch_size"]) // self.info.world_size)
        saved = os.path.join(output_dir, f"step_{self.opened.step}_all_preds.{self.info.rank}")
        if save_npy and save_outputs and os.path.isfile(saved):
            export_npy(saved)
        if scaled and self.info.rank == 0 and metrics is not None:
            assert sampling is not None
            settings = {**sampling.model_dump(), "checkpoints": [os.path.abspath(ev.opened.path) for ev in (self, *ensemble)],
                        "split": split, "max_examples": max_examples, "halt_max_steps": halt_max_steps or self.default_halt_max_steps}
            atomic_write_text(os.path.join(output_dir, f"step_{self.opened.step}_sampling.json"),
                              json.dumps({"settings": settings, "metrics": metrics}, indent=1))
        return metrics

    def scaling_codec(self, sampling: SamplingConfig, ensemble: Sequence["Evaluation"] = ()) -> Optional[TaskCodec]:
        """The task codec whose views the samples use; ``ConfigError`` (one line) for an ensemble
        of runs on other data, or for views of a task that declares none."""
        codec = open_codec(self.opened)
        for ev in ensemble:
            problem = ensemble_mismatch(self.opened, codec, ev.opened, open_codec(ev.opened))
            if problem:
                raise ConfigError(problem)
        try:
            check_views(codec, sampling)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return codec


def load_evaluation(checkpoint: str, info: DistInfo, data_paths: Optional[Sequence[str]] = None,
                    act_inference: Optional[bool] = None) -> Evaluation:
    """Open ``checkpoint`` for :meth:`Evaluation.run` on this rank: on its run's datasets, or on
    ``data_paths`` (same shapes; then also their test splits); ``act_inference`` switches the
    adaptive halting of evaluation (models that have it). ``checkpoint`` may be an ``hf://`` URI."""
    checkpoint = local_checkpoint(checkpoint)
    run_config = read_run_config(checkpoint)
    missing = [p for p in run_data_paths(run_config) if not os.path.isfile(os.path.join(p, "train", "dataset.json"))]
    if not data_paths and missing:
        raise dataset_missing_error(run_config, missing[0], "evaluation reads the dataset itself:")
    if act_inference is not None and not has_act_inference(run_config["arch"]):
        raise ConfigError(f"act_inference: {run_config['arch']['name']} has no adaptive halting switch for evaluation "
                          "(arch=transformers_baseline has)")
    check_batch_divisible(int(run_config["global_batch_size"]), info.world_size)
    opened = open_checkpoint(checkpoint, device=info.device, data_paths=data_paths, compile=run_config.get("compile", "auto"),
                             batch_size=int(run_config["global_batch_size"]) // info.world_size)
    test_paths = list(data_paths) if data_paths else (run_config.get("data_paths_test") or opened.data_paths)
    return Evaluation(opened=opened, info=info, data_paths=opened.data_paths, test_paths=test_paths, act_inference=act_inference)
