"""The model of a run config, built in one place: the ``arch`` section and the dataset's sizes
give the model in its loss head. Training (``training/build.py``) and every inference path
(``inference/checkpoint.py``) build through :func:`build_model`."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from dataset.common import PuzzleDatasetMetadata
from utils.arch_config import check_arch_keys
from utils.config import ConfigError
from utils.functions import load_model_class


def model_classes(arch: Mapping[str, Any], check_keys: bool = True):
    """``(model class, loss head class)`` named by ``arch``; unknown names (or keys, with
    ``check_keys``): ConfigError."""
    try:
        model_cls = load_model_class(arch["name"])
        loss_head_cls = load_model_class(arch["loss"]["name"])
        if check_keys and hasattr(model_cls, "config_class"):
            check_arch_keys(model_keys(arch), model_cls.config_class, arch["name"])
    except ValueError as e:
        raise ConfigError(f"arch: {e}") from None
    return model_cls, loss_head_cls


def model_keys(arch: Mapping[str, Any]) -> dict:
    """The model's own settings in ``arch`` (everything but ``name`` and ``loss``)."""
    return {k: v for k, v in arch.items() if k not in ("name", "loss")}


def build_model(arch: Mapping[str, Any], metadata: PuzzleDatasetMetadata, batch_size: int, device,
                check_keys: bool = True) -> nn.Module:
    """The loss head around the model ``arch`` names (``{name, loss: {name, ...}, **settings}``),
    sized by the dataset ``metadata`` (its ``vocab_size``, ``seq_len``, ``num_puzzle_identifiers``); ``batch_size`` rows per forward pass (the size of the
    puzzle embedding's training buffer). Built on ``device`` with fresh initial weights (this
    draws from the global torch RNG exactly as the original did). ``check_keys=False`` lets keys
    the model has no field for pass (benchmarks sweeping one setting over every arch)."""
    model_cls, loss_head_cls = model_classes(arch, check_keys)
    model_cfg = dict(**model_keys(arch), batch_size=batch_size, vocab_size=metadata.vocab_size, seq_len=metadata.seq_len,
                     num_puzzle_identifiers=metadata.num_puzzle_identifiers)
    loss_cfg = {k: v for k, v in arch["loss"].items() if k != "name"}
    with torch.device(device):
        try:
            model: nn.Module = model_cls(model_cfg)
            return loss_head_cls(model, **loss_cfg)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"arch: {e}") from None


def has_act_inference(arch: Mapping[str, Any]) -> bool:
    """Whether the model of ``arch`` has the adaptive-halting switch for evaluation (``act_inference``)."""
    try:
        return "act_inference" in load_model_class(arch["name"]).config_class.model_fields
    except (ValueError, AttributeError):
        return False
