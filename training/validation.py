"""Checks run before any work: a typo or an impossible value is one line naming it, not a
traceback (or silent garbage) hours into a run.

Each function raises ``ValueError`` with one line; the callers turn it into their own error type.
"""
from __future__ import annotations

import difflib
import os
from typing import Any, Iterable, List, Mapping, Optional, Sequence

from inference.segments import SEGMENT_OUTPUTS

# What ``eval_save_outputs`` / ``evaluate.py save_outputs`` can save: the batch's fields, the
# model's outputs at evaluation time, and the per-segment records of inference/segments.py.
BATCH_OUTPUTS = ("inputs", "labels", "puzzle_identifiers")
MODEL_OUTPUTS = ("logits", "preds", "q_halt_logits", "q_continue_logits")
SAVE_OUTPUT_NAMES = BATCH_OUTPUTS + MODEL_OUTPUTS + tuple(SEGMENT_OUTPUTS)


def _did_you_mean(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def check_known_keys(raw: Mapping[str, Any], valid: Iterable[str], where: str = "config") -> None:
    """Keys of ``raw`` that are not in ``valid`` (e.g. ``+epocs=5``) are an error listing the valid names."""
    valid = sorted(valid)
    unknown = [k for k in raw if k not in valid]
    if unknown:
        hints = "".join(_did_you_mean(k, valid) for k in unknown[:1])
        raise ValueError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}{hints}; "
                         f"valid keys: {', '.join(valid)}")


def check_save_outputs(names: Sequence[str], option: Optional[str] = None) -> None:
    """Every name must be one :data:`SAVE_OUTPUT_NAMES`; ``option`` prefixes the message."""
    unknown = [n for n in names if n not in SAVE_OUTPUT_NAMES]
    if unknown:
        raise ValueError(f"{option + ': ' if option else ''}unknown output{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
                         f"{_did_you_mean(unknown[0], SAVE_OUTPUT_NAMES)}; valid names: {', '.join(SAVE_OUTPUT_NAMES)}")


def check_training_values(config: Any) -> None:
    """Ranges of the optimisation settings of a ``PretrainConfig`` (and the arch's sizes)."""
    problems: List[str] = []
    if not 0 < config.ema_rate < 1:
        problems.append(f"ema_rate must lie in (0, 1), got {config.ema_rate}")
    for name in ("lr", "puzzle_emb_lr", "lr_warmup_steps", "weight_decay", "puzzle_emb_weight_decay", "lr_min_ratio"):
        if getattr(config, name) < 0:
            problems.append(f"{name} must be >= 0, got {getattr(config, name)}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(config, name) < 1:
            problems.append(f"{name} must lie in [0, 1), got {getattr(config, name)}")
    arch = getattr(config.arch, "__pydantic_extra__", None) or {}
    for name in ("hidden_size", "num_heads", "halt_max_steps"):
        value = arch.get(name)
        if isinstance(value, (int, float)) and value <= 0:
            problems.append(f"arch.{name} must be > 0, got {value}")
    if config.checkpoint_path is not None and os.path.exists(config.checkpoint_path) and not os.path.isdir(config.checkpoint_path):
        problems.append(f"checkpoint_path={config.checkpoint_path} is a file; give a folder (it holds step_N files, "
                        "all_config.yaml and the train states)")
    if problems:
        raise ValueError("; ".join(problems))


def check_splits(train_meta: Any, test_meta: Any, test_dataset: Any, test_paths: Sequence[str]) -> None:
    """The test split must fit the model built from the train split's metadata.

    The sequence length must be equal, and the test files may use no token or identifier beyond
    the train split's (their own ``dataset.json`` may declare a larger vocabulary). The scan reads
    the memory-mapped arrays in bounded chunks.
    """
    where = os.path.join(test_paths[0], "test", "dataset.json")
    if test_meta.seq_len != train_meta.seq_len:
        raise ValueError(f"{where}: seq_len={test_meta.seq_len} but the model is built for the train split's "
                         f"seq_len={train_meta.seq_len}")
    _scan_test_files(train_meta, test_dataset)


def _scan_test_files(train_meta: Any, test_dataset: Any) -> None:
    import numpy as np

    from puzzle_dataset import chunked_min_max  # the loader's own bounded-memory scan

    for src in test_dataset._sources:
        for field, limit, what in (("inputs", train_meta.vocab_size, "vocab_size"), ("labels", train_meta.vocab_size, "vocab_size"),
                                   ("puzzle_identifiers", train_meta.num_puzzle_identifiers, "num_puzzle_identifiers")):
            _lo, hi = chunked_min_max(np.load(src.path(field), mmap_mode="r"))
            if hi >= limit:
                raise ValueError(f"{src.path(field)}: value {hi} is outside the model's {what}={limit} "
                                 f"(from the train split); the test split must use the train split's {'vocabulary' if what == 'vocab_size' else 'identifiers'}")


def split_size(test_dataset: Any) -> int:
    """Examples in the test split (0: nothing to evaluate)."""
    return sum(src.num_examples for src in test_dataset._sources)


def check_test_split_not_empty(num_examples: int, test_paths: Sequence[str], eval_interval: Optional[int]) -> Optional[str]:
    """An empty test split is an error when evaluations are requested (``eval_interval`` set);
    otherwise returns a warning line to print."""
    if num_examples:
        return None
    where = ", ".join(os.path.join(p, "test") for p in test_paths)
    if eval_interval is not None:
        raise ValueError(f"{where}: the test split is empty but eval_interval={eval_interval} asks for evaluations; "
                         "build the dataset with a test split or point data_paths_test at one")
    return f"warning: {where}: the test split is empty; the run will log no evaluation metrics"
