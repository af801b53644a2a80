"""What a run tells its user (rank 0): the start line, the W&B run, the code and config copied
beside the checkpoints, the progress bar, the training metrics as they are read back, and the
last line naming the last checkpoint."""
from __future__ import annotations

import json
import os
from typing import Optional

from training.checkpointing import save_code_and_config
from training.config import PretrainConfig
from training.resume_state import clean_checkpoint_folder
from training.runs import RUN_END_FILE
from training.state import Run
from training.train_log import TrainMetricsLog, default_interval
from utils.compile import has_compiled_regions
from utils.functions import unwrap_compiled
from utils.progress import progress_bar
from utils.safe_io import atomic_write_text


def start_logging(run: Run, resumed: bool) -> None:
    """Rank 0: summary line, W&B run, code and config next to the checkpoints, progress bar."""
    from utils.wandb_logging import init_wandb

    config, state, info = run.config, run.state, run.info
    n_params = sum(x.numel() for x in state.model.parameters())
    compiled = "compiled" if unwrap_compiled(state.model) is not state.model else \
        "reasoning modules compiled" if has_compiled_regions(state.model) else "not compiled"
    steps = f"{run.expected_steps} steps" if run.expected_steps is not None else f"up to {state.total_steps} steps"
    print(f"{arch_label(config)}: {n_params / 1e6:.2f}M parameters, {steps}, "
          f"device {info.device} ({compiled}, compile={config.compile}), {info.world_size} process(es); checkpoints in {config.checkpoint_path}")
    if info.device.type == "cpu" and config.arch.__pydantic_extra__.get("forward_dtype", "bfloat16") == "bfloat16":
        print("note: bfloat16 matmuls are slow on most CPUs (7x slower than float32 on this project's test machine); "
              "for speed add arch.forward_dtype=float32")
    horizon = ema_horizon_note(config, run.expected_steps or state.total_steps)
    if horizon:
        print(horizon)
    run.logger = init_wandb(config.project_name, config.run_name, config.model_dump(), group=config.wandb_group)  # type: ignore[arg-type]
    if not resumed:
        run.logger.log({"num_params": n_params}, step=0)
    removed = clean_checkpoint_folder(config.checkpoint_path) if config.checkpoint_path else []
    if removed:
        print(f"Removed {len(removed)} file(s) left by an interrupted run from {config.checkpoint_path}: {', '.join(removed[:6])}"
              + (" ..." if len(removed) > 6 else ""))
    save_code_and_config(config)
    if config.checkpoint_path and os.path.isfile(os.path.join(config.checkpoint_path, RUN_END_FILE)):
        os.remove(os.path.join(config.checkpoint_path, RUN_END_FILE))  # a resumed run's end is not known yet
    interval = config.train_metrics_interval or default_interval(state.total_steps, run.readback.interval)
    run.train_log = TrainMetricsLog(config.checkpoint_path, interval, resumed_step=state.step if resumed else None)
    run.progress_bar = progress_bar(total=run.expected_steps or state.total_steps, initial=state.step, desc="train", dynamic_ncols=True)


def arch_label(config: PretrainConfig) -> str:
    """The model of the start line: its file and class (``trm_singlez (TinyRecursiveReasoningModel_ACTV1)``),
    and the MLP mixer when ``mlp_t`` replaces attention, so that variants sharing a class differ."""
    module, _, cls = config.arch.name.rpartition("@")
    extra = config.arch.__pydantic_extra__ or {}
    mixer = ", MLP mixer (mlp_t)" if getattr(config.arch, "mlp_t", extra.get("mlp_t", False)) else ""
    return f"{module.rsplit('.', 1)[-1]} ({cls}{mixer})" if module else cls


def ema_horizon_note(config: PretrainConfig, steps: int) -> Optional[str]:
    """With ``ema``, the evaluated weights average about the last 1/(1-ema_rate) steps, starting from
    the initial weights: a shorter run evaluates weights still close to its start. Says so, or None."""
    if not config.ema:
        return None
    horizon = 1 / (1 - config.ema_rate)
    if steps >= horizon:
        return None
    start_weight = config.ema_rate ** steps  # what is left of the initial weights after the run
    return (f"note: ema=True with ema_rate={config.ema_rate:g} averages over about {horizon:.0f} steps, but this run makes {steps}: "
            f"the evaluated (EMA) weights are still {start_weight:.0%} the initial ones. Lower ema_rate or use ema=False for short runs")


def log_train_metrics(run: Run) -> None:
    """The waiting steps' training metrics, read back in one transfer, to W&B and train_metrics.jsonl (rank 0)."""
    for step, metrics in run.readback.flush(run.info.rank, run.info.world_size):
        run.logger.log(metrics, step=step)
        run.train_log.add(step, metrics)
        run.progress_bar.set_postfix(loss=f"{metrics.get('train/lm_loss', float('nan')):.4f}", refresh=False)


def write_run_end(run: Run, stopped_by: Optional[str]) -> None:
    """``<checkpoint_path>/run_end.json``: how the run ended, for the run table. ``stopped_by`` is
    ``"max_train_seconds"``, ``"early_stop"`` or None (every planned step done); ``seconds`` counts
    from ``clock`` (the process start, or the job's start in a later job of a multirun)."""
    config = run.config
    if not config.checkpoint_path:
        return
    record = {"step": run.state.step, "planned_steps": run.expected_steps or run.state.total_steps, "stopped_by": stopped_by,
              "max_train_seconds": config.max_train_seconds, "seconds": round(run.budget.elapsed(), 3), "clock": run.budget.clock.origin}
    atomic_write_text(os.path.join(config.checkpoint_path, RUN_END_FILE), json.dumps(record) + "\n")


def finished_line(config: PretrainConfig, step: int) -> str:
    """The last line of a run: steps done and where its last weights are."""
    last = os.path.join(config.checkpoint_path, f"step_{step}") if config.checkpoint_path else None
    if last is None or not os.path.isfile(last):
        return f"done: {step} steps; no checkpoint written" + ("" if config.checkpoint_path else " (no checkpoint_path)")
    return f"done: {step} steps; last checkpoint {last}"
