"""Evaluate a saved checkpoint on its run's test split (or its train split).

    python evaluate.py checkpoint=checkpoints/<project>/<run>/step_N
    torchrun --nproc-per-node 8 evaluate.py checkpoint=.../step_N save_outputs="[inputs,preds]"
    python evaluate.py checkpoint=.../step_N halt_max_steps=32     # more thinking at test time
    python evaluate.py checkpoint=.../step_N halt_max_steps="[1,2,4,8,16]" max_examples=1000
    python evaluate.py checkpoint=.../step_N split=train puzzle_id_ablation=blank trace=true save_npy=true
    python evaluate.py checkpoint=checkpoints/<project>/<run>/best # the best weights (best_metric)
    python evaluate.py checkpoint=hf://sapientinc/HRM-checkpoint-sudoku-extreme data_path=data/sudoku-extreme-full

Reads ``all_config.yaml`` next to the checkpoint, rebuilds loaders and model, loads the weights
(with or without the ``_orig_mod.`` prefix of compiled models), runs the evaluation and the
configured evaluators, prints the metrics and saves outputs as ``step_N_all_preds.<rank>``
(in ``output_dir``, by default the checkpoint's folder; for ``hf://owner/name[@revision][/file]``,
a Hub checkpoint fetched into huggingface_hub's cache, ``hf_outputs/<owner>--<name>``).

Options besides ``checkpoint``:

- ``halt_max_steps`` (test-time compute): evaluation always runs every example for
  ``halt_max_steps`` ACT segments; a larger value than the model was trained with lets the
  recurrence run longer. A list runs one evaluation per value with the same loaded model and
  prints the metrics of each (outputs go to ``output_dir/halt_max_steps_<value>/``).
- ``split=train|test`` (default test); ``max_examples=N``: only the first N examples of the split
  (file order), the same examples for any number of processes. Evaluators (ARC voting) run on
  the test split only.
- ``puzzle_id_ablation=none|blank|random``: the model sees the blank identifier, or for each
  identifier a different randomly drawn one (``ablation_seed``); saved outputs and evaluators keep
  the real identifiers.
- ``save_outputs``: names of batch fields and model outputs to save; also ``steps`` (segments each
  example would use under the training-time halting rule). ``trace=true`` adds ``steps``,
  ``trace`` (the prediction after every segment), ``trace_q_halt_logits`` and ``trace_halt_confidence``
  and ``halt_confidence`` (the confidence of the model's halting rule, sigmoid(q_halt - q_continue)
  for HRM, sigmoid(q_halt) with TRM's ``no_ACT_continue``: above 0.5 exactly where it halts).
- ``save_npy=true`` also writes every saved key as ``step_N_all_preds.<rank>.<key>.npy`` for the
  browser page ``puzzle_visualizer.html`` (see ``utils/outputs.py``).
- ``data_path`` / ``data_paths``: the dataset(s) to evaluate on instead of the recorded ones (moved,
  or another dataset of the same shapes); when the recorded path is missing evaluate.py says which to give.
- ``act_inference=true`` (``arch=transformers_baseline``): each example stops at its own halting
  decision instead of running ``halt_max_steps`` segments; the ``steps`` metric then reports the
  mean number of segments used.

Test-time scaling (``inference/sampling.py``; docs/evaluation.md "Test-time scaling"):

- ``samples=N``: every example runs N times as extra rows of its batch (sample 0 the example
  itself), the answers are mapped back and one is chosen; ``sampling=augment`` (the task's
  symmetries, default), ``noise`` (Gaussian noise of std ``noise_std`` on the recurrent latent at
  every segment) or ``both``; ``select=vote`` (majority, ties by summed halting confidence) or
  ``q_halt`` (the most confident sample); ``sampling_seed`` fixes views and noise.
- ``checkpoint="[a,b,...]"``: an ensemble; every checkpoint runs every sample and the answers are
  pooled (checkpoints of one run, or runs on the same data).
- Metrics: ``exact_accuracy`` / ``accuracy`` of the chosen answer, ``pass@K`` (some sample right),
  ``agreement`` (share of samples that gave the chosen answer), ``first_sample_exact_accuracy``,
  the curve ``exact_accuracy_vote@n`` / ``exact_accuracy_q_halt@n`` over the first n samples, and
  the compute spent per example (``samples``, ``segments``, ``forward_segments`` = their product);
  the evaluators score the chosen answers (ARC: ``ARC/pass@K`` and ``submission.json`` by its vote
  over the dataset's versions of each test input); also written to ``step_N_sampling.json`` in ``output_dir``. Saved by default: the batch fields,
  ``preds`` (the chosen answers), ``q_halt_logits`` of the chosen sample, ``agreement`` and
  ``chosen_sample``; ``sample_preds`` (every sample's answer, mapped back) on request.

Test-time adaptation, ARC (``inference/adaptation.py``; docs/evaluation.md "Test-time adaptation"):

- ``adapt=embedding|full adapt_steps=N``: before evaluating, N training steps on the
  demonstrations of the evaluated tasks (a dataset built with ``--protocol unseen``: the held-out
  tasks' from ``test_puzzles.json``; otherwise the train split's rows of the test puzzles);
  ``embedding`` trains only those tasks' puzzle-embedding rows, ``full`` every weight too, with
  the run's optimizers; ``adapt_lr``, ``adapt_batch``, ``adapt_seed``. One line reports the
  demonstration loss and exact accuracy before and after; the metrics gain ``adaptation``.
- The checkpoint is never written: ``adapt_save=<new folder>`` writes the adapted model as a
  checkpoint folder (outputs then go there; otherwise to ``adapt_<mode>/`` beside the checkpoint).
"""
from __future__ import annotations

import json
import os
from typing import List, Literal, Optional, Union

import pydantic

from inference.adaptation import AdaptOptions, adapt_evaluation, save_adapted
from inference.evaluation import SAMPLING_OUTPUTS, load_evaluation
from inference.sampling import SamplingOptions
from inference.segments import check_halt_max_steps
from training.validation import check_save_outputs
from utils.cli import run_config_cli
from utils.config import ConfigError, normalize_data_paths
from utils.distributed import cleanup, init_distributed
from utils.hub import is_hub_uri, output_folder
from utils.paths import check_output_folder

DEFAULT_SAVE_OUTPUTS = ["inputs", "labels", "puzzle_identifiers", "logits", "q_halt_logits", "q_continue_logits"]
TRACE_OUTPUTS = ["steps", "trace", "trace_q_halt_logits", "trace_halt_confidence", "halt_confidence"]
# Saved by default with samples= (logits are not kept per sample): the chosen answer and how it was chosen.
SAMPLED_SAVE_OUTPUTS = ["inputs", "labels", "puzzle_identifiers", "preds", "q_halt_logits", "agreement", "chosen_sample"]


class EvalConfig(SamplingOptions, AdaptOptions):
    model_config = pydantic.ConfigDict(extra="forbid")

    checkpoint: Union[str, List[str]]
    save_outputs: List[str] = DEFAULT_SAVE_OUTPUTS
    halt_max_steps: Optional[Union[int, List[int]]] = None
    act_inference: Optional[bool] = None
    data_path: Optional[str] = None
    data_paths: Optional[List[str]] = None
    split: Literal["train", "test"] = "test"
    max_examples: Optional[int] = None
    puzzle_id_ablation: Literal["none", "blank", "random"] = "none"
    ablation_seed: int = 0
    trace: bool = False
    output_dir: Optional[str] = None
    save_npy: bool = False

    @pydantic.model_validator(mode="after")
    def _check(self):
        if isinstance(self.checkpoint, list) and not self.checkpoint:
            raise ValueError("checkpoint: empty list; give at least one checkpoint")
        values = self.halt_max_steps if isinstance(self.halt_max_steps, list) else [self.halt_max_steps]
        if isinstance(self.halt_max_steps, list) and not values:
            raise ValueError("halt_max_steps: empty list; give at least one value")
        for v in values:
            check_halt_max_steps(v)
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples must be a positive number of examples, got {self.max_examples}")
        if self.adapt_mode != "none" and self.split != "test":
            raise ValueError(f"adapt={self.adapt_mode}: adapts to the test split's tasks and evaluates them; use split=test")
        return self

    @pydantic.field_validator("save_outputs")
    @classmethod
    def _known_outputs(cls, v: List[str]) -> List[str]:
        check_save_outputs([k for k in v if k not in SAMPLING_OUTPUTS])
        return v

    @property
    def checkpoints(self) -> List[str]:
        return self.checkpoint if isinstance(self.checkpoint, list) else [self.checkpoint]

    @property
    def sampled(self) -> bool:
        """Test-time scaling: several samples or several checkpoints."""
        return self.samples > 1 or len(self.checkpoints) > 1

    @property
    def outputs(self) -> List[str]:
        """``save_outputs`` plus what ``trace`` asks for."""
        return list(self.save_outputs) + [k for k in TRACE_OUTPUTS if self.trace and k not in self.save_outputs]

    def output_dir_for(self, base_dir: str, value) -> str:
        """Where the outputs of one ``halt_max_steps`` value go (a subfolder per value of a list)."""
        return os.path.join(base_dir, f"halt_max_steps_{value}") if isinstance(self.halt_max_steps, list) else base_dir

    def report(self, results: dict, rank: int):
        """The metrics to return, printed on rank 0: a dict per value for a list of ``halt_max_steps``."""
        metrics = results if isinstance(self.halt_max_steps, list) else next(iter(results.values()))
        if rank == 0 and metrics is not None:
            printable = {f"halt_max_steps={k}": v for k, v in metrics.items()} if isinstance(self.halt_max_steps, list) else metrics
            print(json.dumps(printable, indent=2))
        return metrics


def default_output_dir(checkpoint: str) -> str:
    """The checkpoint's folder; for an ``hf://`` checkpoint ``hf_outputs/<owner>--<name>`` (never the Hub cache)."""
    return output_folder(checkpoint) if is_hub_uri(checkpoint) else os.path.dirname(os.path.abspath(checkpoint))


def run(eval_cfg: EvalConfig):
    """Evaluate as ``eval_cfg`` says; returns the metrics (a dict per value for a list of ``halt_max_steps``)."""
    # Before loading anything: also the default folder (a colleague's read-only run is a common case).
    folder = eval_cfg.output_dir or default_output_dir(eval_cfg.checkpoints[0])
    if eval_cfg.adapt_mode != "none" and eval_cfg.output_dir is None:  # an adapted model's outputs never replace the checkpoint's own
        folder = eval_cfg.adapt_save or os.path.join(folder, f"adapt_{eval_cfg.adapt_mode}")
    try:
        if eval_cfg.output_dir is not None or is_hub_uri(eval_cfg.checkpoints[0]) or os.path.isdir(folder):
            check_output_folder(folder, "output_dir")  # (a checkpoint in no folder is named by the loading)
    except ValueError as e:
        if eval_cfg.output_dir is not None:
            raise ConfigError(str(e)) from None
        reason = str(e).removeprefix(f"output_dir={folder}: ")
        raise ConfigError(f"checkpoint={eval_cfg.checkpoints[0]}: the outputs go to {folder} by default, but {reason}; "
                          "give output_dir=<a folder you can write>") from None
    info = init_distributed()
    if info.rank == 0:
        for note in eval_cfg.unused_options(len(eval_cfg.checkpoints)):
            print(note)
    try:
        data_paths = normalize_data_paths(eval_cfg.data_path, eval_cfg.data_paths) or None
        first, *ensemble = [load_evaluation(c, info, data_paths=data_paths, act_inference=eval_cfg.act_inference)
                            for c in eval_cfg.checkpoints]
        adaptive = first.act_inference if first.act_inference is not None else first.opened.run_config["arch"].get("act_inference")
        adaptation = adapt(eval_cfg, first, data_paths, info.rank) if eval_cfg.adapt_settings else None
        values = eval_cfg.halt_max_steps if isinstance(eval_cfg.halt_max_steps, list) else [eval_cfg.halt_max_steps]
        save_outputs = eval_cfg.outputs
        if eval_cfg.sampled and "save_outputs" not in eval_cfg.model_fields_set:
            save_outputs = SAMPLED_SAVE_OUTPUTS
        results = {}
        for value in values:
            if info.rank == 0 and not eval_cfg.sampled:
                print(f"Evaluating {eval_cfg.checkpoint} on {eval_cfg.split}"
                      f"{'' if eval_cfg.max_examples is None else f' (first {eval_cfg.max_examples} examples)'} "
                      f"(halt_max_steps={value or first.default_halt_max_steps}{', adaptive halting' if adaptive else ''}, "
                      f"puzzle_id_ablation={eval_cfg.puzzle_id_ablation}, "
                      f"{info.world_size} process(es), device {info.device})")
            results[value] = first.run(split=eval_cfg.split, max_examples=eval_cfg.max_examples,
                                       puzzle_id_ablation=eval_cfg.puzzle_id_ablation, ablation_seed=eval_cfg.ablation_seed,
                                       halt_max_steps=value or first.default_halt_max_steps,
                                       save_outputs=save_outputs, output_dir=eval_cfg.output_dir_for(folder, value),
                                       save_npy=eval_cfg.save_npy, sampling=eval_cfg.sampling_config, ensemble=ensemble)
            if adaptation is not None and results[value] is not None:
                results[value]["adaptation"] = adaptation
        return eval_cfg.report(results, info.rank)
    finally:
        cleanup()


def adapt(eval_cfg: EvalConfig, evaluation, data_paths, rank: int) -> dict:
    """Test-time adaptation of the loaded model to the evaluated tasks (``inference/adaptation.py``),
    its line printed; with ``adapt_save`` the adapted model is written as a new checkpoint folder.
    Returns the report for the metrics."""
    report = adapt_evaluation(evaluation, eval_cfg.adapt_settings, max_examples=eval_cfg.max_examples, progress=rank == 0)
    saved = save_adapted(eval_cfg.adapt_save, evaluation.opened, report, data_paths) if eval_cfg.adapt_save else None
    if rank == 0:
        print(report.line() + (f"; saved as {saved}" if saved else ""))
    return {**report.as_dict(), **({"saved": saved} if saved else {})}


def main(argv=None) -> None:
    run_config_cli(EvalConfig, run, argv, doc=__doc__)


if __name__ == "__main__":
    main()
