"""Evaluators: task metrics computed over a whole test split besides the per-example ones
(``evaluators/arc.py``: ARC pass@K by voting over augmentations). Named in a run's config as
``evaluators: [{name: arc@ARC, ...}]``."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from utils.config import ConfigError
from utils.functions import load_model_class


def build_evaluators(configs: Sequence[Dict[str, Any]], data_paths: Sequence[str], eval_metadata) -> List[Any]:
    """One evaluator per config (``{name, **options}``) and test dataset folder."""
    evaluators = []
    for cfg in configs:
        options = {k: v for k, v in cfg.items() if k != "name"}
        try:
            cls = load_model_class(cfg["name"], "evaluators.")
        except ValueError as e:
            raise ConfigError(f"evaluators: {e}") from None
        for data_path in data_paths:
            evaluators.append(cls(data_path=data_path, eval_metadata=eval_metadata, **options))
    return evaluators
