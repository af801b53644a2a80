"""Training metrics read back in batches (training/metrics_readback.py): every step is logged with the
same values as a read-back per step; the default batch is one step on a CPU, 20 on CUDA."""
import torch
from conftest import TINY_HRM, in_process_run
from training.state import train_batch
from training.metrics_readback import CUDA_LOG_INTERVAL, MetricsReadback, resolve_log_interval


def test_default_interval_per_device():
    assert resolve_log_interval(None, torch.device("cpu")) == 1
    assert resolve_log_interval(None, torch.device("cuda", 0)) == CUDA_LOG_INTERVAL > 1
    assert resolve_log_interval(7, torch.device("cuda")) == 7


def _steps(data, log_to=None, flush_every=None):
    config, dataset, state = in_process_run(data, ["epochs=2", "eval_interval=2", "global_batch_size=8", "evaluators=[]", "lr=3e-3",
                                                   "lr_warmup_steps=2", *TINY_HRM])
    logged = []
    for _, batch, gbs in dataset:
        metrics = train_batch(config, state, batch, gbs, rank=0, world_size=1, log_to=log_to)
        if log_to is None:
            logged.append((state.step, metrics))
        elif log_to.due(state.step):
            logged += log_to.flush(rank=0, world_size=1)
    return logged + (log_to.flush(rank=0, world_size=1) if log_to is not None else [])


def test_batched_read_back_logs_every_step_with_the_same_values(sudoku4):
    per_step = _steps(sudoku4)
    batched = _steps(sudoku4, log_to=MetricsReadback(interval=5))
    assert len(per_step) == 12 and [s for s, _ in batched] == list(range(1, 13))
    assert batched == per_step
    assert {"train/lm_loss", "train/exact_accuracy", "train/lr", "train/count"} <= set(batched[0][1])
