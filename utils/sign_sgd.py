"""SignSGD with decoupled weight decay for the sparse puzzle embedding
(``models.sparse_embedding.CastedSparseEmbedding``), as in the original HRM code: only the rows of
the global batch move, by ``-lr * sign(gradient summed per row)``, after ``w *= 1 - lr * wd``.
"""
from typing import Union

import torch
import torch.distributed as dist
from torch.optim.optimizer import Optimizer, ParamsT


class CastedSparseEmbeddingSignSGD_Distributed(Optimizer):
    """SignSGD with decoupled weight decay on the rows of a :class:`CastedSparseEmbedding`.

    ``params`` is ``embedding.buffers()`` (``weights``, ``local_weights``, ``local_ids``). With
    several ranks the local gradients and ids are all-gathered; gradients of the same id are
    summed before taking the sign; rows absent from the global batch are untouched (no decay).
    With gradient accumulation, :meth:`accumulate` keeps each micro-batch's rows until the step.
    """

    def __init__(self, params: ParamsT, world_size: int, lr: Union[float, torch.Tensor] = 1e-3, weight_decay: float = 1e-2):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, world_size=world_size))
        # Gradient accumulation: (gradients, ids) of the earlier micro-batches of this step, per
        # param group. Empty at every step boundary, so never part of the saved state.
        self._pending: dict = {}

    @staticmethod
    def _buffers(group):
        local_weights = local_ids = weights = None
        for p in group["params"]:
            if p.requires_grad:
                local_weights = p
            elif p.ndim == 1:
                local_ids = p
            elif p.ndim == 2:
                weights = p
        if local_weights is None or local_ids is None or weights is None:
            raise ValueError("CastedSparseEmbeddingSignSGD_Distributed expects the buffers of a CastedSparseEmbedding (weights, local_weights, local_ids)")
        return local_weights, local_ids, weights

    @torch.no_grad()
    def accumulate(self) -> None:
        """Set this micro-batch's row gradients and ids aside for the next :meth:`step`.

        The next forward overwrites ``local_weights``/``local_ids`` with other rows, so with
        gradient accumulation the trainer calls this after every micro-batch but the last; the
        step then sees the rows of all micro-batches (a row used twice gets the sum of both).
        """
        for i, group in enumerate(self.param_groups):
            local_weights, local_ids, _ = self._buffers(group)
            if local_weights.grad is not None:
                self._pending.setdefault(i, []).append((local_weights.grad.clone(), local_ids.clone()))
                local_weights.grad = None

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for i, group in enumerate(self.param_groups):
            local_weights, local_ids, weights = self._buffers(group)
            grads_and_ids = self._pending.pop(i, [])
            if local_weights.grad is not None:
                grads_and_ids.append((local_weights.grad, local_ids))
            if not grads_and_ids:
                continue
            if len(grads_and_ids) == 1:
                grad, ids = grads_and_ids[0]
            else:
                grad, ids = torch.cat([g for g, _ in grads_and_ids]), torch.cat([ids for _, ids in grads_and_ids])
            _sparse_emb_signsgd_dist(grad, ids, weights, lr=group["lr"], weight_decay=group["weight_decay"], world_size=group["world_size"])


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
    grad = sum_rows_by_id(all_weights_grad, inverse, grad_ids.shape[0])

    rows = weights[grad_ids]
    rows.mul_(1.0 - lr * weight_decay).add_(torch.sign(grad), alpha=-lr)
    weights[grad_ids] = rows


def sum_rows_by_id(values: torch.Tensor, inverse: torch.Tensor, num_ids: int) -> torch.Tensor:
    """``out[i] = sum of values[j] with inverse[j] == i``, the same bits on every run and device.

    The order of the additions is fixed by construction, not left to a kernel: the rows are
    sorted by id (stably, so each id keeps its rows in batch order), then each id's rows are added
    as a pairwise tree, ``((v0 + v1) + (v2 + v3)) + ...``: level ``l`` adds the row ``2**l``
    further down into every row whose rank within its id is a multiple of ``2**(l+1)``. Every
    level is one elementwise add, which rounds alike on a CPU and a GPU at any thread count; no
    atomics, so a sum near zero cannot change sign from run to run and a resumed run repeats the
    uninterrupted one. For ids with at most three rows (the original's batches of distinct
    puzzles) this is the row-order sum of the original's ``scatter_add_``, bit for bit.
    """
    n, dim = values.shape
    out = torch.zeros((num_ids, dim), dtype=values.dtype, device=values.device)
    if n == 0:
        return out
    order = torch.argsort(inverse, stable=True)
    sorted_ids = inverse[order]
    tree = values[order]
    counts = torch.bincount(inverse, minlength=num_ids)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n, device=values.device) - starts[sorted_ids]
    rows_left = counts[sorted_ids] - rank  # rows of the same id from this one to the end of its run
    for level in range(max(n - 1, 0).bit_length()):  # enough levels for an id holding all n rows
        step = 1 << level
        takes = (rank % (2 * step) == 0) & (rows_left > step)
        below = torch.cat([tree[step:], tree.new_zeros((min(step, n), dim))])  # row p + step
        tree = torch.where(takes.unsqueeze(-1), tree + below, tree)
    # Each id's sum sits in the first row of its run; ids without rows stay 0 (no sync on the device).
    return torch.where((counts > 0).unsqueeze(-1), tree[starts.clamp_max(n - 1)], out)
