"""What a training or evaluation run builds from its config: data loaders, the model in its loss
head (initial weights, equal on every rank), the optimizers and the evaluators."""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from dataset.common import PuzzleDatasetMetadata
from inference.model import build_model
from utils.sign_sgd import CastedSparseEmbeddingSignSGD_Distributed
from evaluators import build_evaluators
from puzzle_dataset import PuzzleDatasetConfig, create_loader
from training.config import PretrainConfig
from training.preemption import ignore_stop_signals
from utils.adam_atan2 import AdamATan2
from utils.muon import Muon, muon_param_groups
from utils.compile import (compile_model, compile_regions, has_compiled_regions, should_compile, should_compile_optimizer,
                           should_compile_regions)
from utils.config import ConfigError
from utils.functions import load_state_dict_flexible, strip_compile_prefix, unwrap_compiled
from utils.hub import local_checkpoint
from utils.safe_io import load_weights

def create_dataloader(config: PretrainConfig, split: str, rank: int, world_size: int, **kwargs):
    """A DataLoader over ``PuzzleDataset`` (one persistent worker, which leaves stop signals to
    the training process) and the split's metadata. With ``urm_train_loop``, rank 0's train
    passes follow the order after URM's batch-counting pass, which only its rank 0 makes."""
    paths = config.data_paths_test if (split == "test" and config.data_paths_test) else config.data_paths
    if config.urm_train_loop and rank == 0 and not kwargs.get("test_set_mode", False):
        kwargs["unused_pass_before_each"] = True
    return create_loader(PuzzleDatasetConfig(seed=config.seed, dataset_paths=paths, rank=rank, num_replicas=world_size, **kwargs),
                         split, worker_init_fn=ignore_stop_signals)


def create_model(config: PretrainConfig, train_metadata: PuzzleDatasetMetadata, world_size: int, device=None,
                 total_steps: Optional[int] = None) -> nn.Module:
    """The model in its loss head, with initial weights (``load_checkpoint``), equal on every rank;
    compiled when ``config.compile`` says so for a run of ``total_steps`` (None: evaluation only),
    see utils/compile.py."""
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch_size = config.global_batch_size // (world_size * config.gradient_accumulation_steps)  # one micro-batch
    arch = config.arch.model_dump()
    if config.segment_loss_decay is not None:  # a training option, given to the loss head
        arch["loss"] = {**arch["loss"], "segment_loss_decay": config.segment_loss_decay}
    model = build_model(arch, train_metadata, batch_size, device)
    with torch.device(device):
        load_checkpoint(model, config)
        if config.freeze_weights:
            model.requires_grad_(False)  # only the puzzle embedding (a buffer with its own grad) trains
        if world_size > 1:
            with torch.no_grad():
                for tensor in list(model.parameters()) + list(model.buffers()):
                    dist.broadcast(tensor, src=0)
    if should_compile(config.compile, device, total_steps):
        model = compile_model(model)
    elif should_compile_regions(config.compile, device, total_steps):
        compile_regions(model.model.inner.repeated_modules())  # type: ignore[union-attr, operator]
    return model


def create_optimizers(config: PretrainConfig, model: nn.Module, world_size: int = 1,
                      total_steps: Optional[int] = None) -> Tuple[List[torch.optim.Optimizer], List[float]]:
    """The optimizers and their base learning rates, in the original's order: sign-SGD for the
    puzzle embedding (when the model has one), then for the weights (unless frozen) AdamATan2 or,
    with ``optimizer=muon``, URM's Muon (2-D weights orthogonalised, the rest by its AdamW branch;
    ``weight_decay``, ``beta1``/``beta2`` for that branch). With a compiled model (whole or regions), AdamATan2 also
    fuses its update where that pays for ``total_steps`` steps."""
    inner = unwrap_compiled(model)
    has_puzzle_emb = getattr(inner.model.config, "puzzle_emb_ndim", 0) > 0
    device = next(iter(model.parameters()), torch.empty(0)).device
    model_compiled = inner is not model or has_compiled_regions(model)
    compiled = should_compile_optimizer(model_compiled, device, sum(p.numel() for p in model.parameters()), total_steps)

    def weights_optimizer():
        if config.optimizer == "muon":
            hidden = ([p for m in inner.model.inner.repeated_modules() for p in m.parameters()]  # type: ignore[union-attr, operator]
                      if config.muon_params == "hidden_layers" else None)
            return Muon(muon_param_groups(model.parameters(), hidden), lr=0, weight_decay=config.weight_decay,
                        momentum=config.muon_momentum, adamw_betas=(config.beta1, config.beta2))
        return AdamATan2(model.parameters(), lr=0, weight_decay=config.weight_decay, betas=(config.beta1, config.beta2), compiled=compiled)

    signsgd = lambda: CastedSparseEmbeddingSignSGD_Distributed(inner.model.puzzle_emb.buffers(), lr=0,  # noqa: E731
                                                               weight_decay=config.puzzle_emb_weight_decay, world_size=world_size)
    if not has_puzzle_emb:
        if config.freeze_weights:
            raise ConfigError("freeze_weights=True trains only the puzzle embedding, but arch.puzzle_emb_ndim is 0")
        return [weights_optimizer()], [config.lr]
    if config.freeze_weights:
        return [signsgd()], [config.puzzle_emb_lr]
    return [signsgd(), weights_optimizer()], [config.puzzle_emb_lr, config.lr]


def load_checkpoint(model: nn.Module, config: PretrainConfig) -> None:
    """Initial weights from ``config.load_checkpoint``; a puzzle-embedding table of another
    shape is replaced by the mean of its rows (new puzzles start from the average)."""
    if config.load_checkpoint is None:
        return
    print(f"Loading checkpoint {config.load_checkpoint}")
    # An hf:// checkpoint is fetched into huggingface_hub's cache (once; every rank finds it there).
    path = local_checkpoint(config.load_checkpoint, "load_checkpoint")
    state_dict = strip_compile_prefix(load_weights(path, "load_checkpoint"))
    name = "model.inner.puzzle_emb.weights"
    expected = model.state_dict().get(name)
    # Another number of puzzles (same embedding width) is reset; another width is a model of another size.
    if expected is not None and name in state_dict and state_dict[name].shape != expected.shape \
            and state_dict[name].shape[1:] == expected.shape[1:]:
        print(f"Resetting puzzle embedding as shape is different. Found {tuple(state_dict[name].shape)}, Expected {tuple(expected.shape)}")
        state_dict[name] = state_dict[name].mean(dim=0, keepdim=True).expand(expected.shape).contiguous()
    try:
        load_state_dict_flexible(model, state_dict, source=f"load_checkpoint={config.load_checkpoint}")
    except ValueError as e:
        raise ConfigError(str(e)) from None


def create_evaluators(config: PretrainConfig, eval_metadata: PuzzleDatasetMetadata) -> List[Any]:
    return build_evaluators([c.model_dump() for c in config.evaluators], config.data_paths_test or config.data_paths, eval_metadata)
