"""Evaluation during training: the test split (or its first ``eval_max_examples``) through the
inference engine (``inference/evaluation.py``) with the EMA weights when ``ema``, the best
checkpoint (``best_metric``) and early stopping (``early_stop_patience``)."""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Dict, List, Optional, Sequence

from dataset.common import DatasetError, PuzzleDatasetMetadata
from inference.evaluation import evaluate
from inference.segments import RunOptions, trained_halt_max_steps
from training import validation
from training.best_checkpoint import save_best
from training.build import create_dataloader
from training.checkpointing import model_weights
from training.config import PretrainConfig, eval_batch_size
from training.state import TrainState
from utils.config import ConfigError
from utils.distributed import DistInfo, broadcast_object
from utils.metrics import flatten_metrics


def evaluate_train_state(config: PretrainConfig, state: TrainState, eval_loader, eval_metadata: PuzzleDatasetMetadata,
                         evaluators: Sequence[Any], info: DistInfo) -> Optional[Dict[str, Any]]:
    """The model of ``state`` on ``eval_loader``; outputs named in ``eval_save_outputs`` go beside the
    checkpoints as ``step_N_all_preds.<rank>``. Returns rank 0's metrics.

    Each nonzero ``loop_deltas`` entry d adds an evaluation with ``halt_max_steps + d`` segments
    (URM's loops + d; evaluators included, nothing saved), its metrics named ``<set>@loops+d/...``
    (``all@loops+8/exact_accuracy``, ``ARC@loops+8/pass@1``)."""
    common = dict(rank=info.rank, world_size=info.world_size, cpu_group=info.cpu_group)
    metrics = evaluate(state.model, eval_loader, eval_metadata, evaluators, save_outputs=config.eval_save_outputs,
                       output_dir=config.checkpoint_path, step=state.step, **common)
    loops = trained_halt_max_steps(state.model)
    for delta in loop_deltas(config, loops):
        extra = evaluate(state.model, eval_loader, eval_metadata, evaluators, step=state.step,
                         options=RunOptions(halt_max_steps=loops + delta), **common)
        if metrics is not None and extra is not None:
            metrics.update(with_loop_delta(extra, delta))
    return metrics


def loop_deltas(config: PretrainConfig, loops: int) -> List[int]:
    """The distinct nonzero ``loop_deltas``; each must leave at least one segment (ConfigError)."""
    deltas = sorted(set(d for d in config.loop_deltas if d != 0))
    too_few = [d for d in deltas if loops + d < 1]
    if too_few:
        raise ConfigError(f"loop_deltas={config.loop_deltas}: the model runs {loops} segments (arch.loops / arch.halt_max_steps), "
                          f"so {too_few} would leave fewer than one")
    return deltas


def with_loop_delta(metrics: Dict[str, Any], delta: int) -> Dict[str, Any]:
    """Metric names of an evaluation at ``loops + delta``: ``all`` -> ``all@loops+2``, ``ARC/pass@1`` -> ``ARC@loops+2/pass@1``."""
    tag = f"@loops{delta:+d}"
    out = {}
    for name, value in metrics.items():
        head, sep, tail = name.partition("/")
        out[f"{head}{tag}{sep}{tail}"] = value
    return out


def create_eval_loader(config: PretrainConfig, rank: int, world_size: int, full: bool = False):
    """The test split as evaluated during training: its first ``eval_max_examples`` examples (all
    when ``full`` or unset), in batches of ``eval_global_batch_size``."""
    return create_dataloader(config, "test", test_set_mode=True, epochs_per_iter=1, global_batch_size=eval_batch_size(config),
                             rank=rank, world_size=world_size, max_examples=None if full else config.eval_max_examples)


def validate_splits(config: PretrainConfig, train_metadata: PuzzleDatasetMetadata, eval_loader, eval_metadata: PuzzleDatasetMetadata,
                    rank: int) -> None:
    """Before the first step: the test split fits the model built from the train split, and is
    not empty when evaluations are asked for."""
    test_paths = config.data_paths_test or config.data_paths
    try:
        warning = validation.check_test_split_not_empty(validation.split_size(eval_loader.dataset), test_paths, config.eval_interval)
        validation.check_splits(train_metadata, eval_metadata, eval_loader.dataset, test_paths)
    except DatasetError:
        raise
    except ValueError as e:
        raise DatasetError(str(e)) from None
    if warning and rank == 0:
        print(warning, file=sys.stderr)


def update_best(config: PretrainConfig, train_state: TrainState, metrics: Optional[Dict[str, Any]], info: DistInfo) -> bool:
    """Rank 0 records an evaluation in ``train_state.best`` and writes ``best`` when it improved
    (call with the evaluated weights in place); returns, on every rank, whether to stop early."""
    tracker = train_state.best
    assert tracker is not None
    payload: Any = None
    if info.rank == 0:
        try:
            if tracker.update(train_state.step, flatten_metrics(metrics or {})) and config.checkpoint_path is not None:
                save_best(config.checkpoint_path, model_weights(train_state.model), tracker)
            payload = tracker.state_dict()
        except ValueError as e:
            payload = ConfigError(str(e))
    payload = broadcast_object(payload, info)
    if isinstance(payload, Exception):
        raise payload
    tracker.load_state_dict(payload)
    return tracker.should_stop


def ema_applied(state: TrainState):
    """Context in which the model holds its EMA weights (when ``ema``), to evaluate and save them."""
    return state.ema.applied(state.model) if state.ema is not None else contextlib.nullcontext()
