"""Open a trained checkpoint into a ready model: the one way in for every inference path.

:func:`open_checkpoint` reads ``all_config.yaml`` beside a ``step_N`` (or ``best``) weights file,
the run's dataset metadata (sizes, recorded task), builds the model (:func:`inference.model.build_model`)
and loads the weights through the safe loader (``utils/checkpoint.load_weights``: nothing in the
file runs). The returned :class:`OpenedCheckpoint` is what ``evaluate.py``, ``predict.py`` and
``scripts/analyze_checkpoint.py`` work with; run it with :func:`inference.segments.run_segments`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from dataset.common import DatasetError, PuzzleDatasetMetadata, load_metadata
from inference.model import build_model
from inference.segments import act_model, trained_halt_max_steps
from utils.checkpoint import load_weights, step_of
from utils.compile import compile_model, should_compile
from utils.config import ConfigError, normalize_data_paths, read_run_yaml
from utils.functions import load_state_dict_flexible


@dataclass
class OpenedCheckpoint:
    """A checkpoint loaded for inference (eval mode); see :func:`open_checkpoint`."""

    path: str
    run_config: Dict[str, Any]  # all_config.yaml as the run wrote it
    data_paths: List[str]  # the run's training datasets
    metadata: PuzzleDatasetMetadata  # their train split (identifier counts merged), which sized the model
    task: Optional[str]  # the task dataset.json records (None for datasets of the original code)
    model: nn.Module  # the loss head (possibly compiled)
    device: torch.device
    batch_size: int

    @property
    def step(self) -> int:
        """N of a ``step_N`` file (0 for other names, e.g. ``best``)."""
        return step_of(self.path) or 0

    @property
    def act_model(self) -> nn.Module:
        return act_model(self.model)

    @property
    def halt_max_steps(self) -> int:
        """The trained number of ACT segments (the default at test time)."""
        return trained_halt_max_steps(self.model)

    @property
    def folder(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))


def read_run_config(checkpoint: str) -> Dict[str, Any]:
    """The training run's config (``all_config.yaml`` beside ``checkpoint``) as a dict."""
    if not os.path.isfile(checkpoint):
        raise ConfigError(f"checkpoint={checkpoint}: no such file (expected a step_N file of a run's checkpoint folder)")
    config_path = os.path.join(os.path.dirname(os.path.abspath(checkpoint)), "all_config.yaml")
    if not os.path.isfile(config_path):
        raise ConfigError(f"checkpoint={checkpoint}: no all_config.yaml next to it ({config_path}); "
                          "it holds the run's config, needed to rebuild the model")
    raw = read_run_yaml(config_path, "; it holds the run's config, needed to rebuild the model")
    if "arch" not in raw or not (raw.get("data_paths") or raw.get("data_path")):
        raise ConfigError(f"{config_path}: has no data_path(s) or arch; not a training run's config")
    return raw


def run_data_paths(run_config: Dict[str, Any]) -> List[str]:
    return normalize_data_paths(run_config.get("data_path"), run_config.get("data_paths"))


def dataset_metadata(data_paths: Sequence[str], split: str = "train") -> Tuple[PuzzleDatasetMetadata, Optional[str]]:
    """(``split`` metadata merged over the run's datasets as the loader merges identifier tables,
    the task recorded in dataset.json or None)."""
    metas = []
    for path in data_paths:
        try:
            metas.append(load_metadata(os.path.join(path, split)))
        except DatasetError as e:
            raise DatasetError(f"{e} (the checkpoint's dataset metadata: sizes, task, puzzle names)") from None
    meta = metas[0]
    task = next((m.task for m in metas if m.task is not None), None)
    if len(metas) > 1:  # identifier tables add up, as PuzzleDataset merges them
        meta = meta.model_copy(update={"num_puzzle_identifiers": sum(m.num_puzzle_identifiers for m in metas)})
    return meta, task


def pick_device(device: Optional[str] = None) -> torch.device:
    """``device`` (e.g. cpu, cuda:1), by default the GPU when there is one."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device={device}: not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device}: no CUDA GPU is available here")
    return dev


def open_checkpoint(path: str, device=None, batch_size: Optional[int] = None, data_paths: Optional[Sequence[str]] = None,
                    compile: Any = False) -> OpenedCheckpoint:
    """Load ``path`` (a run's weights file) into a ready model in eval mode.

    ``batch_size``: rows per forward pass (default: the run's ``global_batch_size``);
    ``data_paths``: datasets that size the model instead of the run's (same shapes);
    ``compile``: a ``compile`` setting (``auto``: on CUDA) for a model that only evaluates.
    Bad input (no such file, a file that is not a checkpoint, weights of another model) is one
    :class:`ConfigError` / ``CheckpointError`` / ``DatasetError`` line.
    """
    run_config = read_run_config(path)
    device = pick_device(device) if device is None or isinstance(device, str) else torch.device(device)
    # Read (safely) before building anything: a file that is not a checkpoint stops here.
    state_dict = load_weights(path, "checkpoint", map_location=device)
    paths = list(data_paths) if data_paths else run_data_paths(run_config)
    metadata, task = dataset_metadata(paths)
    batch_size = batch_size or int(run_config.get("global_batch_size", 1))
    model = build_model(run_config["arch"], metadata, batch_size, device)
    try:
        load_state_dict_flexible(model, state_dict, source=f"checkpoint={path}")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    model.eval()
    if compile is not False and should_compile(compile, device, None):
        model = compile_model(model)
    return OpenedCheckpoint(path=path, run_config=run_config, data_paths=paths, metadata=metadata, task=task, model=model,
                            device=device, batch_size=batch_size)
