"""Evaluate a saved checkpoint on its run's test split (or its train split).

    python evaluate.py checkpoint=checkpoints/<project>/<run>/step_N
    torchrun --nproc-per-node 8 evaluate.py checkpoint=.../step_N save_outputs="[inputs,preds]"
    python evaluate.py checkpoint=.../step_N halt_max_steps=32     # more thinking at test time
    python evaluate.py checkpoint=.../step_N halt_max_steps="[1,2,4,8,16]" max_examples=1000
    python evaluate.py checkpoint=.../step_N split=train puzzle_id_ablation=blank trace=true save_npy=true
    python evaluate.py checkpoint=checkpoints/<project>/<run>/best # the best weights (best_metric)

Reads ``all_config.yaml`` next to the checkpoint, rebuilds loaders and model, loads the weights
(with or without the ``_orig_mod.`` prefix of compiled models), runs the evaluation and the
configured evaluators, prints the metrics and saves outputs as ``step_N_all_preds.<rank>``
(in ``output_dir``, by default the checkpoint's folder).

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
  ``trace`` (the prediction after every segment) and ``trace_q_halt_logits``.
- ``save_npy=true`` also writes every saved key as ``step_N_all_preds.<rank>.<key>.npy`` for the
  browser page ``puzzle_visualizer.html`` (see ``utils/outputs.py``).
- ``data_path`` / ``data_paths`` evaluate on another dataset of the same shapes.
- ``act_inference=true`` (``arch=transformers_baseline``): each example stops at its own halting
  decision instead of running ``halt_max_steps`` segments; the ``steps`` metric then reports the
  mean number of segments used.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

import pydantic
import torch
import yaml

from dataset.common import DatasetError
from pretrain import PretrainConfig, TrainState, init_train_state, parse_config
from utils.build import create_dataloader, create_evaluators
from utils.checkpoint import CheckpointError, load_weights, step_of
from utils.config import ConfigError, check_batch_divisible, user_error_message
from utils.distributed import DistInfo, cleanup, init_distributed
from utils.evaluation import evaluate
from utils.functions import load_model_class, load_state_dict_flexible, unwrap_compiled, validation_error_line
from utils.outputs import export_npy
from utils.segments import SegmentOptions, puzzle_id_ablation_map
from utils.validation import check_save_outputs

DEFAULT_SAVE_OUTPUTS = ["inputs", "labels", "puzzle_identifiers", "logits", "q_halt_logits", "q_continue_logits"]
TRACE_OUTPUTS = ["steps", "trace", "trace_q_halt_logits"]


class EvalConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    checkpoint: str
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
        values = self.halt_max_steps if isinstance(self.halt_max_steps, list) else [self.halt_max_steps]
        if isinstance(self.halt_max_steps, list) and not values:
            raise ValueError("halt_max_steps: empty list; give at least one value")
        for v in values:
            if v is not None and v < 1:
                raise ValueError(f"halt_max_steps must be >= 1, got {v}")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError(f"max_examples must be a positive number of examples, got {self.max_examples}")
        return self

    @pydantic.field_validator("save_outputs")
    @classmethod
    def _known_outputs(cls, v: List[str]) -> List[str]:
        check_save_outputs(v)
        return v

    @property
    def outputs(self) -> List[str]:
        """``save_outputs`` plus what ``trace`` asks for."""
        return list(self.save_outputs) + [k for k in TRACE_OUTPUTS if self.trace and k not in self.save_outputs]


def load_run_config(eval_cfg: EvalConfig) -> PretrainConfig:
    """The training run's config, adapted for this evaluation."""
    folder = os.path.dirname(os.path.abspath(eval_cfg.checkpoint))
    if not os.path.isfile(eval_cfg.checkpoint):
        raise ConfigError(f"checkpoint={eval_cfg.checkpoint}: no such file")
    config_path = os.path.join(folder, "all_config.yaml")
    if not os.path.isfile(config_path):
        raise ConfigError(f"checkpoint={eval_cfg.checkpoint}: no all_config.yaml next to it ({config_path}); "
                          "evaluate.py needs the run's config to rebuild model and data")
    with open(config_path) as f:
        raw = yaml.safe_load(f)
    if eval_cfg.data_path is not None or eval_cfg.data_paths is not None:
        raw.update(data_path=eval_cfg.data_path, data_paths=eval_cfg.data_paths or None, data_paths_test=[])
    if isinstance(eval_cfg.halt_max_steps, int):
        raw["arch"]["halt_max_steps"] = eval_cfg.halt_max_steps
    if eval_cfg.act_inference is not None:
        try:
            fields = getattr(load_model_class(raw["arch"]["name"]), "config_class").model_fields
        except (ValueError, AttributeError):
            fields = {}
        if "act_inference" not in fields:
            raise ConfigError(f"act_inference: {raw['arch']['name']} has no adaptive halting switch for evaluation "
                              "(arch=transformers_baseline has)")
        raw["arch"]["act_inference"] = eval_cfg.act_inference
    raw.update(resume=None, load_checkpoint=None, eval_save_outputs=eval_cfg.outputs, checkpoint_path=folder)
    return parse_config(raw)


@dataclass
class Evaluation:
    """A checkpoint loaded once and evaluated as often as needed (splits, subsets, ablations,
    ``halt_max_steps`` values); loaders and evaluators are made on first use and kept."""

    config: PretrainConfig
    info: DistInfo
    train_state: TrainState
    train_metadata: Any
    checkpoint: str
    _loaders: Dict[Tuple[str, Optional[int]], Any] = field(default_factory=dict)
    _evaluators: Optional[List[Any]] = None

    @property
    def default_halt_max_steps(self) -> int:
        return int(self.config.arch.__pydantic_extra__["halt_max_steps"])  # type: ignore[index]

    def loader(self, split: str, max_examples: Optional[int]):
        key = (split, max_examples)
        if key not in self._loaders:
            self._loaders[key] = create_dataloader(self.config, split, test_set_mode=True, epochs_per_iter=1,
                                                   global_batch_size=self.config.global_batch_size, rank=self.info.rank,
                                                   world_size=self.info.world_size, max_examples=max_examples)
        return self._loaders[key]

    def evaluators(self) -> List[Any]:
        if self._evaluators is None:
            self._evaluators = create_evaluators(self.config, self.loader("test", None)[1])
        return self._evaluators

    def run(self, split: str = "test", max_examples: Optional[int] = None, puzzle_id_ablation: str = "none",
            ablation_seed: int = 0, halt_max_steps: Optional[int] = None, save_outputs: Optional[List[str]] = None,
            output_dir: Optional[str] = None, save_npy: bool = False, use_evaluators: bool = True) -> Optional[Dict[str, Any]]:
        """One evaluation; returns rank 0's metrics (None on other ranks). Evaluators run on the test
        split only, and not at all with ``use_evaluators=False``."""
        model = self.train_state.model
        set_halt_max_steps(model, halt_max_steps or self.default_halt_max_steps)
        outputs = list(self.config.eval_save_outputs if save_outputs is None else save_outputs)
        config = self.config.model_copy(update=dict(eval_save_outputs=outputs,
                                                    checkpoint_path=output_dir or os.path.dirname(os.path.abspath(self.checkpoint))))
        loader, metadata = self.loader(split, max_examples)
        identifier_map = puzzle_id_ablation_map(puzzle_id_ablation, self.train_metadata.num_puzzle_identifiers,
                                                self.train_metadata.blank_identifier_id, ablation_seed)
        model.eval()
        metrics = evaluate(config, self.train_state, loader, metadata, self.evaluators() if split == "test" and use_evaluators else [],
                           rank=self.info.rank, world_size=self.info.world_size, cpu_group=self.info.cpu_group,
                           segment_options=SegmentOptions.from_outputs(outputs, identifier_map))
        saved = os.path.join(config.checkpoint_path, f"step_{self.train_state.step}_all_preds.{self.info.rank}")  # type: ignore[arg-type]
        if save_npy and outputs and os.path.isfile(saved):
            export_npy(saved)
        return metrics


def set_halt_max_steps(model: torch.nn.Module, value: int) -> None:
    """Segments per evaluation batch from now on; the model reads it from its config every segment."""
    unwrap_compiled(model).model.config.halt_max_steps = int(value)  # type: ignore[union-attr]


def load_evaluation(eval_cfg: EvalConfig, info: DistInfo) -> Evaluation:
    """Config, model and weights of ``eval_cfg.checkpoint``, ready for :meth:`Evaluation.run`."""
    config = load_run_config(eval_cfg)
    # Read (safely) before building anything: a file that is not a checkpoint stops here.
    state_dict = load_weights(eval_cfg.checkpoint, "checkpoint", map_location=info.device)
    check_batch_divisible(config.global_batch_size, info.world_size)
    train_loader, train_metadata = create_dataloader(config, "train", test_set_mode=False, epochs_per_iter=1,
                                                     global_batch_size=config.global_batch_size, rank=info.rank, world_size=info.world_size)
    del train_loader  # only its metadata sizes the model (vocab, puzzle identifiers)

    train_state = init_train_state(config, train_metadata, world_size=info.world_size, device=info.device, evaluate_only=True)
    try:
        load_state_dict_flexible(train_state.model, state_dict, source=f"checkpoint={eval_cfg.checkpoint}")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    train_state.step = step_of(eval_cfg.checkpoint) or 0
    return Evaluation(config=config, info=info, train_state=train_state, train_metadata=train_metadata, checkpoint=eval_cfg.checkpoint)


def run(eval_cfg: EvalConfig):
    """Evaluate as ``eval_cfg`` says; returns the metrics (a dict per value for a list of ``halt_max_steps``)."""
    info = init_distributed()
    try:
        ev = load_evaluation(eval_cfg, info)
        values = eval_cfg.halt_max_steps if isinstance(eval_cfg.halt_max_steps, list) else [ev.default_halt_max_steps]
        base_dir = eval_cfg.output_dir or os.path.dirname(os.path.abspath(eval_cfg.checkpoint))
        results = {}
        for value in values:
            if info.rank == 0:
                print(f"Evaluating {eval_cfg.checkpoint} on {eval_cfg.split}"
                      f"{'' if eval_cfg.max_examples is None else f' (first {eval_cfg.max_examples} examples)'} "
                      f"(halt_max_steps={value}{', adaptive halting' if ev.config.arch.__pydantic_extra__.get('act_inference') else ''}, "
                      f"puzzle_id_ablation={eval_cfg.puzzle_id_ablation}, "
                      f"{info.world_size} process(es), device {info.device})")
            out_dir = os.path.join(base_dir, f"halt_max_steps_{value}") if isinstance(eval_cfg.halt_max_steps, list) else base_dir
            results[value] = ev.run(split=eval_cfg.split, max_examples=eval_cfg.max_examples, puzzle_id_ablation=eval_cfg.puzzle_id_ablation,
                                    ablation_seed=eval_cfg.ablation_seed, halt_max_steps=value, save_outputs=eval_cfg.outputs,
                                    output_dir=out_dir, save_npy=eval_cfg.save_npy)
        metrics = results if isinstance(eval_cfg.halt_max_steps, list) else results[values[0]]
        if info.rank == 0 and metrics is not None:
            printable = {f"halt_max_steps={k}": v for k, v in metrics.items()} if isinstance(eval_cfg.halt_max_steps, list) else metrics
            print(json.dumps(printable, indent=2))
        return metrics
    finally:
        cleanup()


def main(argv=None) -> None:
    from omegaconf import OmegaConf

    try:
        raw = OmegaConf.to_container(OmegaConf.from_cli(list(sys.argv[1:] if argv is None else argv)), resolve=True)
        try:
            eval_cfg = EvalConfig(**raw)  # type: ignore[arg-type]
        except pydantic.ValidationError as e:
            raise ConfigError(validation_error_line(e)) from None
        run(eval_cfg)
    except (ConfigError, DatasetError, CheckpointError) as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {user_error_message(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
