"""Evaluate a saved checkpoint on its run's test split.

    python evaluate.py checkpoint=checkpoints/<project>/<run>/step_N
    torchrun --nproc-per-node 8 evaluate.py checkpoint=.../step_N save_outputs="[inputs,preds]"
    python evaluate.py checkpoint=.../step_N halt_max_steps=32     # more thinking at test time

Reads ``all_config.yaml`` next to the checkpoint, rebuilds loaders and model, loads the weights
(with or without the ``_orig_mod.`` prefix of compiled models), runs the evaluation and the
configured evaluators, prints the metrics and saves outputs as ``step_N_all_preds.<rank>``.

``halt_max_steps`` (test-time compute): evaluation always runs every example for
``halt_max_steps`` ACT segments; a larger value than the model was trained with lets the
recurrence run longer. ``data_path`` / ``data_paths`` evaluate on another dataset of the same
shapes.
"""
from __future__ import annotations

import json
import os
import sys
from typing import List, Optional

import pydantic
import torch
import yaml

from dataset.common import DatasetError
from pretrain import PretrainConfig, init_train_state, parse_config
from utils.build import create_dataloader, create_evaluators
from utils.checkpoint import step_of
from utils.config import ConfigError, check_batch_divisible, user_error_message
from utils.distributed import cleanup, init_distributed
from utils.evaluation import evaluate
from utils.functions import load_state_dict_flexible, validation_error_line

DEFAULT_SAVE_OUTPUTS = ["inputs", "labels", "puzzle_identifiers", "logits", "q_halt_logits", "q_continue_logits"]


class EvalConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    checkpoint: str
    save_outputs: List[str] = DEFAULT_SAVE_OUTPUTS
    halt_max_steps: Optional[int] = None
    data_path: Optional[str] = None
    data_paths: Optional[List[str]] = None


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
    if eval_cfg.halt_max_steps is not None:
        if eval_cfg.halt_max_steps < 1:
            raise ConfigError(f"halt_max_steps must be >= 1, got {eval_cfg.halt_max_steps}")
        raw["arch"]["halt_max_steps"] = eval_cfg.halt_max_steps
    raw.update(resume=None, load_checkpoint=None, eval_save_outputs=eval_cfg.save_outputs, checkpoint_path=folder)
    return parse_config(raw)


def run(eval_cfg: EvalConfig):
    info = init_distributed()
    try:
        config = load_run_config(eval_cfg)
        check_batch_divisible(config.global_batch_size, info.world_size)
        train_loader, train_metadata = create_dataloader(config, "train", test_set_mode=False, epochs_per_iter=1,
                                                         global_batch_size=config.global_batch_size, rank=info.rank, world_size=info.world_size)
        eval_loader, eval_metadata = create_dataloader(config, "test", test_set_mode=True, epochs_per_iter=1,
                                                       global_batch_size=config.global_batch_size, rank=info.rank, world_size=info.world_size)
        del train_loader  # only its metadata sizes the model (vocab, puzzle identifiers)
        evaluators = create_evaluators(config, eval_metadata)

        train_state = init_train_state(config, train_metadata, world_size=info.world_size, device=info.device)
        state_dict = torch.load(eval_cfg.checkpoint, map_location=info.device, weights_only=True)
        try:
            load_state_dict_flexible(train_state.model, state_dict, source=f"checkpoint={eval_cfg.checkpoint}")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        train_state.step = step_of(eval_cfg.checkpoint) or 0

        if info.rank == 0:
            print(f"Evaluating {eval_cfg.checkpoint} (halt_max_steps={config.arch.__pydantic_extra__['halt_max_steps']}, "
                  f"{info.world_size} process(es), device {info.device})")
        train_state.model.eval()
        metrics = evaluate(config, train_state, eval_loader, eval_metadata, evaluators, rank=info.rank, world_size=info.world_size,
                           cpu_group=info.cpu_group)
        if info.rank == 0 and metrics is not None:
            print(json.dumps(metrics, indent=2))
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
    except (ConfigError, DatasetError) as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {user_error_message(e)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
