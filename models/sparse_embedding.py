"""Per-puzzle embedding trained sparsely with SignSGD.

Only the rows used by the current batch receive a gradient, so the table is a buffer (AdamATan2
never sees it) and the batch's rows are copied into a small ``local_weights`` tensor that does
require grad. The optimizer then writes the update back into those rows only.
"""
from typing import Union

import torch
import torch.distributed as dist
from torch import nn
from torch.optim.optimizer import Optimizer, ParamsT

from models.common import trunc_normal_init_


class CastedSparseEmbedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, batch_size: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.weights = nn.Buffer(trunc_normal_init_(torch.empty((num_embeddings, embedding_dim)), std=init_std), persistent=True)
        # Rows of the current batch (with gradient) and their ids; rebuilt every step, not saved.
        self.local_weights = nn.Buffer(torch.zeros(batch_size, embedding_dim, requires_grad=True), persistent=False)
        self.local_ids = nn.Buffer(torch.zeros(batch_size, dtype=torch.int32), persistent=False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.weights[inputs].to(self.cast_to)
        with torch.no_grad():
            self.local_weights.copy_(self.weights[inputs])
            self.local_ids.copy_(inputs)
        return self.local_weights.to(self.cast_to)


class CastedSparseEmbeddingSignSGD_Distributed(Optimizer):
    """SignSGD with decoupled weight decay on the rows of a :class:`CastedSparseEmbedding`.

    ``params`` is ``embedding.buffers()`` (``weights``, ``local_weights``, ``local_ids``). With
    several ranks the local gradients and ids are all-gathered; gradients of the same id are
    summed before taking the sign; rows absent from the global batch are untouched (no decay).
    """

    def __init__(self, params: ParamsT, world_size: int, lr: Union[float, torch.Tensor] = 1e-3, weight_decay: float = 1e-2):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, world_size=world_size))

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            local_weights_grad = local_ids = weights = None
            for p in group["params"]:
                if p.requires_grad:
                    local_weights_grad = p.grad
                elif p.ndim == 1:
                    local_ids = p
                elif p.ndim == 2:
                    weights = p
            if local_ids is None or weights is None:
                raise ValueError("CastedSparseEmbeddingSignSGD_Distributed expects the buffers of a CastedSparseEmbedding (weights, local_weights, local_ids)")
            if local_weights_grad is not None:
                _sparse_emb_signsgd_dist(local_weights_grad, local_ids, weights, lr=group["lr"], weight_decay=group["weight_decay"], world_size=group["world_size"])


def _sparse_emb_signsgd_dist(local_weights_grad: torch.Tensor, local_ids: torch.Tensor, weights: torch.Tensor,
                             lr: float, weight_decay: float, world_size: int) -> None:
    N, D = local_weights_grad.shape
    all_weights_grad, all_ids = local_weights_grad, local_ids
    if world_size > 1:
        all_weights_grad = torch.empty((world_size * N, D), dtype=local_weights_grad.dtype, device=local_weights_grad.device)
        all_ids = torch.empty(world_size * N, dtype=local_ids.dtype, device=local_ids.device)
        dist.all_gather_into_tensor(all_weights_grad, local_weights_grad)
        dist.all_gather_into_tensor(all_ids, local_ids)

    grad_ids, inverse = all_ids.unique(return_inverse=True)
    grad = torch.zeros((grad_ids.shape[0], D), dtype=all_weights_grad.dtype, device=all_weights_grad.device)
    grad.scatter_add_(0, inverse.unsqueeze(-1).expand(-1, D), all_weights_grad)

    rows = weights[grad_ids]
    rows.mul_(1.0 - lr * weight_decay).add_(torch.sign(grad), alpha=-lr)
    weights[grad_ids] = rows
