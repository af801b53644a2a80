"""Train HRM / TRM on a puzzle dataset.

    python pretrain.py data_path=data/sudoku-extreme-1k-aug-1000 epochs=20000 eval_interval=2000 ...
    torchrun --nproc-per-node 8 pretrain.py arch=trm data_paths="[data/arc1concept-aug-1000]" ...
    python pretrain.py ... resume=checkpoints/<project>/<run>      # continue an interrupted run

Config: ``config/cfg_pretrain.yaml`` and ``config/arch/*.yaml`` (Hydra overrides on the command
line). One process per rank under torchrun: NCCL on GPUs, gloo on CPUs.

This file is the Hydra entry and the loop, top to bottom: set-up (config, resume, loaders, model),
train passes, evaluation and saving after each pass (and when ``max_train_seconds`` runs out,
as at the end of a run). What each step is made of lives in
``training/``: the config schema (``config.py``), what a run builds (``build.py``), the train
state and optimisation step (``state.py``), evaluation, best checkpoint and early stopping
(``evaluation.py``), saving and resuming (``checkpointing.py``), pre-emption (``preemption.py``),
run folders (``runs.py``), the wall-clock budget (``budget.py``) and what a run prints and logs
(``reporting.py``).
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Any, Dict, Optional

import torch
import tqdm
import yaml

from inference.segments import trained_halt_max_steps
from training.budget import TimeBudget
from training.build import create_dataloader, create_evaluators
from training.checkpointing import load_resume, restore_resume_state, save_resume, save_train_state
from training.config import PretrainConfig, dist_timeout_from, load_synced_config
from training.evaluation import create_eval_loader, ema_applied, evaluate_train_state, loop_deltas, update_best, validate_splits
from training.preemption import Preempted, StopRequest, signal_name
from training.runs import apply_sweep_job, current_sweep_job
from training.metrics_readback import MetricsReadback, resolve_log_interval
from training.reporting import finished_line, log_train_metrics, start_logging, write_run_end
from training.state import Run, check_finite, init_train_state, train_batch
from training.train_log import eval_line_train, summary_line, write_metrics_line
from utils.arch_config import normalise_arch_overrides, plus_unknown_keys
from utils.clock import ProcessClock
from utils.config import user_error_message
from utils.distributed import DistInfo, RankStoppedAnswering, cleanup, init_distributed, is_peer_failure, peer_failure_error
from utils.errors import UserError
from utils.metrics import flatten_metrics


def launch(raw_config: Dict[str, Any], clock: Optional[ProcessClock] = None) -> PretrainConfig:
    """Run a whole training job from a composed config dict; returns the final config. ``clock``
    (max_train_seconds, eval/since_start_s) counts from the process start unless given."""
    clock = clock or ProcessClock()
    info = init_distributed(timeout_s=dist_timeout_from(raw_config))
    held = contextlib.ExitStack()  # the run folder's lock, held until the run ends
    try:
        return _run(raw_config, info, held, clock)
    except RuntimeError as e:
        if info.world_size > 1 and is_peer_failure(e):
            raise peer_failure_error(e, info, "while training") from None
        raise
    finally:
        held.close()
        cleanup()


def _run(raw_config: Dict[str, Any], info: DistInfo, held: contextlib.ExitStack, clock: ProcessClock) -> PretrainConfig:
    config = load_synced_config(raw_config, info, held)
    torch.random.manual_seed(config.seed + info.rank)
    resume = load_resume(config, info)
    run = set_up(config, info, resume)
    run.budget = TimeBudget(config.max_train_seconds, clock)
    run.stop = StopRequest(info.rank).install()
    stopped_by = None
    try:
        for iter_id in range(run.state.iters_done, run.total_iters):
            train_iteration(run, iter_id)
            if evaluate_and_save(run, iter_id):
                stopped_by = "early_stop"
                break
            if run.out_of_time:
                stopped_by = "max_train_seconds"
                break
    finally:
        run.stop.uninstall()
        if run.progress_bar is not None:
            if run.progress_bar.n != run.progress_bar.total:  # early stop, or a count only the draws told
                run.progress_bar.total = run.progress_bar.n
                run.progress_bar.refresh()
            run.progress_bar.close()
        if run.train_log is not None:
            run.train_log.flush()  # the steps since the last line, also when stopped early
    if info.rank == 0:
        run.logger.finish()
        write_run_end(run, stopped_by)
    # A stop signal during the evaluation and save that follow max_train_seconds: they completed,
    # and the exit status still says the run was stopped (a scheduler requeues on 128 + signal).
    signum = run.stop.agreed(info.world_size, info.cpu_group) if run.out_of_time else None
    if signum is not None:
        step = run.state.step
        raise Preempted(f"stopped by {signal_name(signum)} during the evaluation and save after max_train_seconds; both completed "
                        f"(step {step}). To continue, run the same command with "
                        f"resume={os.path.join(config.checkpoint_path or '.', f'step_{step}')}", exit_status=128 + signum)
    if info.rank == 0:
        print(finished_line(config, run.state.step))
    return config


def set_up(config: PretrainConfig, info: DistInfo, resume) -> Run:
    """Loaders (at the resumed data position), evaluators, model and optimizers, logging."""
    epochs_per_iter = config.eval_interval if config.eval_interval is not None else config.epochs
    iters_done = resume[0]["iters_done"] if resume else 0
    batches_done = resume[0]["batches_in_iter"] if resume else 0
    common = dict(global_batch_size=config.global_batch_size, rank=info.rank, world_size=info.world_size)
    train_loader, train_metadata = create_dataloader(config, "train", test_set_mode=False, epochs_per_iter=epochs_per_iter,
                                                     start_iter=iters_done, skip_batches=batches_done, **common)
    eval_loader, eval_metadata = create_eval_loader(config, info.rank, info.world_size)
    evaluators = create_evaluators(config, eval_metadata)
    validate_splits(config, train_metadata, eval_loader, eval_metadata, info.rank)

    state = init_train_state(config, train_metadata, world_size=info.world_size, device=info.device)
    loop_deltas(config, trained_halt_max_steps(state.model))  # a delta that leaves no segment fails now, not at the first evaluation
    if resume:
        restore_resume_state(state, resume[0], resume[1], info.device)
        if info.rank == 0:
            print(f"Resumed from {config.resume} at step {state.step} (pass {iters_done + 1}, batch {batches_done})")
    run = Run(config=config, info=info, state=state, train_loader=train_loader, eval_loader=eval_loader, eval_metadata=eval_metadata,
              evaluators=evaluators, epochs_per_iter=epochs_per_iter, total_iters=config.epochs // epochs_per_iter,
              last_saved=resume[0]["step"] if resume else None,
              # A mid-pass state resumed from is replaced by the next one, as in an uninterrupted run.
              interval_state_step=state.step if resume and batches_done else None, first_step=state.step,
              readback=MetricsReadback(resolve_log_interval(config.log_interval, info.device)))
    per_pass = train_loader.dataset.batches_per_pass()
    if per_pass is not None:
        run.expected_steps = min(per_pass * run.total_iters, state.total_steps)
    if info.rank == 0:
        start_logging(run, resumed=resume is not None)
    return run


def stop_if_nonfinite(run: Run) -> None:
    """A device sync point: log the waiting metrics, then stop if a loss was non-finite."""
    log_train_metrics(run)
    bad = check_finite(run.state, run.info.world_size)
    if bad is not None:
        kept = f"the last checkpoint (step {run.last_saved}) is intact" if run.last_saved is not None else "no checkpoint had been written"
        raise FloatingPointError(f"training loss became non-finite at step {bad}; stopping without saving ({kept})")


def train_iteration(run: Run, iter_id: int) -> None:
    """One pass of ``epochs_per_iter`` epochs, with interval resume states on the way; cut short
    when ``max_train_seconds`` is spent (after at least one step of this process)."""
    config, state, rank = run.config, run.state, run.info.rank
    if rank == 0:
        print(f"[Rank {rank}, World Size {run.info.world_size}]: Epoch {iter_id * run.epochs_per_iter}")
    state.model.train()
    for _set_name, batch, global_batch_size in run.train_loader:
        # Checked before the step, so a pass whose last step ends in time counts as complete.
        if state.step > run.first_step and budget_spent(run):
            stop_for_budget(run)
            break
        train_batch(config, state, batch, global_batch_size, rank=rank, world_size=run.info.world_size, log_to=run.readback)
        state.batches_in_iter += 1
        if run.readback.due(state.step):
            stop_if_nonfinite(run)
        if run.progress_bar is not None:
            run.progress_bar.update(min(state.step, state.total_steps) - run.progress_bar.n)
        saved_now = bool(config.checkpoint_interval_steps) and state.step % config.checkpoint_interval_steps == 0
        if saved_now:
            stop_if_nonfinite(run)
            save_resume(run, interval=True)
        stop_if_signalled(run, saved_now)
    else:
        state.iters_done, state.batches_in_iter = iter_id + 1, 0
        if budget_spent(run):
            stop_for_budget(run)  # then this pass's evaluation is the last
    stop_if_nonfinite(run)


def budget_spent(run: Run) -> bool:
    """Whether ``max_train_seconds`` is spent now (every rank agrees; a run that has done its
    planned steps is never cut)."""
    planned = run.expected_steps or run.state.total_steps
    if run.state.step >= planned:
        return False
    run.state.budget_progress = run.budget.spent(run.info.world_size, run.info.cpu_group)  # lr_schedule_clock=budget reads it
    return run.state.budget_progress >= 1.0


def stop_for_budget(run: Run) -> None:
    """Mark the run so that this pass's evaluation and save are its last, and say so."""
    run.out_of_time = True
    if run.info.rank == 0:
        planned = run.expected_steps or run.state.total_steps
        tqdm.tqdm.write(f"max_train_seconds={run.config.max_train_seconds:g} reached {run.budget.elapsed():.1f} s after {run.budget.clock.origin}: "
                        f"stopped after step {run.state.step} of {planned}; evaluating and saving as at the end of a run")


def stop_if_signalled(run: Run, saved_now: bool) -> None:
    """After a step: if any rank got a stop signal, all save this step's resume state (unless it
    was just written) and raise :class:`Preempted` with the line saying how to go on."""
    signum = run.stop.agreed(run.info.world_size, run.info.cpu_group)
    if signum is None or run.state.step >= run.state.total_steps:
        return
    stop_if_nonfinite(run)
    if not saved_now:
        save_resume(run, interval=True)
    config, step = run.config, run.state.step
    raise Preempted(f"stopped by {signal_name(signum)} after step {step} of {run.state.total_steps}; resume state saved in "
                    f"{config.checkpoint_path}. To continue, run the same command with "
                    f"resume={os.path.join(config.checkpoint_path or '.', f'step_{step}')}", exit_status=128 + signum)


def evaluate_and_save(run: Run, iter_id: int) -> bool:
    """After a pass: evaluate (EMA weights when ``ema``), track the best, write ``step_N`` and the
    resume state. Returns True when training stops early (``early_stop_patience``)."""
    config, state, rank = run.config, run.state, run.info.rank
    is_last = iter_id == run.total_iters - 1 or run.out_of_time
    stop_early = False
    if iter_id >= (config.min_eval_interval or 0):
        state.model.eval()
        with ema_applied(state):
            stop_early = evaluate_now(run, is_last)
            if rank == 0 and (config.checkpoint_every_eval or is_last or stop_early):
                save_train_state(config, state)
    elif is_last and rank == 0:  # no evaluation yet (min_eval_interval), but the run's weights are saved
        with ema_applied(state):
            save_train_state(config, state)
    if config.checkpoint_every_eval or is_last or config.checkpoint_interval_steps or stop_early:
        save_resume(run, interval=False)
    if stop_early and rank == 0:
        best = state.best
        assert best is not None
        tqdm.tqdm.write(f"early stop at step {state.step}: {best.metric} did not improve for {best.evals_since_best} evaluation(s); "
                        f"best {best.value} at step {best.step}"
                        + (f", weights in {os.path.join(config.checkpoint_path, 'best')}" if config.checkpoint_path else ""))
    return stop_early


def evaluate_now(run: Run, is_last: bool) -> bool:
    """Evaluate the model as it is (in eval mode, EMA weights applied), log and print the metrics,
    and track the best checkpoint. Returns True when training stops early."""
    config, state, rank = run.config, run.state, run.info.rank
    # The final evaluation covers the whole test split when asked; best/early stop then skip it,
    # as it is not comparable with the subset evaluations before it.
    full = is_last and config.eval_full_at_end and config.eval_max_examples is not None
    loader = create_eval_loader(config, rank, run.info.world_size, full=True)[0] if full else run.eval_loader
    since_start, started = run.budget.elapsed(), time.perf_counter()
    metrics = evaluate_train_state(config, state, loader, run.eval_metadata, run.evaluators, run.info)
    if rank == 0 and metrics is not None:
        metrics["eval/seconds"] = round(time.perf_counter() - started, 3)
        metrics["eval/since_start_s"] = round(since_start, 3)  # when training reached this step (time-to-accuracy)
        run.logger.log(flatten_metrics(metrics), step=state.step)
        # The file also holds the train side (mean since the last evaluation): train vs test in one line.
        train = run.train_log.at_evaluation()
        write_metrics_line(config.checkpoint_path, state.step, {**metrics, **eval_line_train(train)})
        tqdm.tqdm.write(f"step {state.step}: " + json.dumps(metrics))
        tqdm.tqdm.write(summary_line(state.step, train, metrics))
    return state.best is not None and not full and update_best(config, state, metrics, run.info)


def main() -> None:
    import hydra
    from omegaconf import OmegaConf

    @hydra.main(config_path="config", config_name="cfg_pretrain", version_base=None)
    def _entry(hydra_config):
        raw = OmegaConf.to_container(hydra_config, resolve=True)
        job = current_sweep_job(sys.argv[1:])
        if job is not None:  # each job of a multirun writes to its own folder
            raw = apply_sweep_job(raw, job)  # type: ignore[arg-type]
            print(f"sweep job {job.num}: checkpoints in {raw.get('checkpoint_path') or 'the folder of run ' + repr(raw.get('run_name'))}")
        # Hydra runs a multirun's jobs one after another in this process: a later job's clock starts with it.
        clock = ProcessClock(from_now=job is not None and job.num > 0)
        try:
            launch(raw, clock)  # type: ignore[arg-type]
        except (UserError, FloatingPointError) as e:
            if int(os.environ.get("RANK", "0")) == 0:
                print(f"error: {user_error_message(e)}", file=sys.stderr)
            sys.exit(2)
        except Preempted as e:
            if int(os.environ.get("RANK", "0")) == 0:
                print(str(e), file=sys.stderr, flush=True)
            sys.exit(e.exit_status)
        except RankStoppedAnswering as e:
            if e.report:
                print(f"error: {e}", file=sys.stderr, flush=True)
            sys.stdout.flush()
            # After a failed collective, the process group's finalisers can block for seconds: skip them.
            os._exit(1)

    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "config", "cfg_pretrain.yaml")) as f:
        known = [k for k in yaml.safe_load(f) if k != "defaults"] + ["arch"]
    sys.argv = [sys.argv[0], *plus_unknown_keys(normalise_arch_overrides(sys.argv[1:]), known)]
    _entry()


if __name__ == "__main__":
    main()
