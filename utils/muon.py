"""Muon as URM trains with it (``optimizer=muon``): momentum, then an approximate orthogonalisation
of each 2-D update by Newton–Schulz iterations, with an AdamW branch for the other parameters.

Param groups say ``use_muon: True`` (2-D weights) or ``False`` (biases, convolutions, anything
not 2-D). One step of a Muon group, per parameter ``p`` with gradient ``g``::

    buf = momentum * buf + g                        # state "muon_buffer"
    u   = g + momentum * buf  (nesterov)  or  buf   # in bfloat16
    X   = newton_schulz(u)                          # ~ U V^T of u's SVD, in float32
    p  *= 1 - lr * weight_decay
    p  -= lr * sqrt(max(rows, cols)) * matched_adamw_rms * X

``sqrt(max(rows, cols)) * matched_adamw_rms`` scales the orthogonalised update to the RMS an AdamW
update would have, so Muon groups can share AdamW's learning rate and schedule. The AdamW
branch is AdamW with its bias corrections folded into the step size (states ``adamw_exp_avg``,
``adamw_exp_avg_sq``; one step counter per group). The coefficients of the Newton–Schulz steps
are URM's (``torch.optim.Muon`` uses other ones and another scaling: it is not this optimizer).
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Tuple

import torch
from torch.optim.optimizer import Optimizer, ParamsT

# (a, b, c) of each Newton–Schulz step X <- a X + (b A + c A^2) X with A = X X^T; the last
# triple is reused for steps past the eighth.
NS_COEFFICIENTS = (
    (7.2086, -15.5131, 9.0178),
    (3.9623, -2.5813, 0.4542),
    (3.9466, -2.5765, 0.4544),
    (3.8991, -2.5671, 0.4566),
    (3.7186, -2.5308, 0.4653),
    (3.1390, -2.3073, 0.4733),
    (2.1715, -1.5246, 0.3885),
    (1.8648, -1.2224, 0.3577),
)


def newton_schulz(update: torch.Tensor, steps: int) -> torch.Tensor:
    """An approximately orthogonal matrix with the singular vectors of ``update``, in float32.

    ``update`` is one matrix or a stack of same-shape matrices (``[k, rows, cols]``, each
    orthogonalised on its own: one batched matmul per step instead of ``k``). Computed on the wide
    orientation (rows <= columns) so that ``X X^T`` is the small Gram matrix.
    """
    X = update.to(torch.float32)
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT
    X = X / X.norm(dim=(-2, -1), keepdim=True).clamp_min(1e-7)  # singular values <= 1, where the iteration converges
    for i in range(steps):
        a, b, c = NS_COEFFICIENTS[min(i, len(NS_COEFFICIENTS) - 1)]
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    return X.mT if tall else X


class Muon(Optimizer):
    def __init__(self, params: ParamsT, lr: float = 2e-2, weight_decay: float = 0.1, matched_adamw_rms: float = 0.2,
                 momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5,
                 adamw_betas: Tuple[float, float] = (0.95, 0.95), adamw_eps: float = 1e-8):
        if not 0.0 <= lr:
            raise ValueError(f"Muon: invalid learning rate {lr} (must be >= 0; the schedule may start at 0)")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Muon: invalid weight_decay {weight_decay}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"Muon: invalid momentum {momentum} (in [0, 1))")
        if not (0.0 <= adamw_betas[0] < 1.0 and 0.0 <= adamw_betas[1] < 1.0):
            raise ValueError(f"Muon: invalid adamw_betas {adamw_betas} (each in [0, 1))")
        if ns_steps < 1:
            raise ValueError(f"Muon: ns_steps must be >= 1, got {ns_steps}")
        defaults = dict(lr=lr, weight_decay=weight_decay, matched_adamw_rms=matched_adamw_rms, momentum=momentum, nesterov=nesterov,
                        ns_steps=ns_steps, adamw_betas=tuple(adamw_betas), adamw_eps=adamw_eps, use_muon=False)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["use_muon"]:
                bad = [tuple(p.shape) for p in group["params"] if p.ndim != 2]
                if bad:
                    raise ValueError(f"Muon: a use_muon group holds parameters that are not 2-D: {bad}")
            else:
                group.setdefault("step", 0)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _muon_step(self, group) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        lr, momentum = group["lr"], group["momentum"]
        grads = [p.grad for p in params]
        bufs = []
        for p, g in zip(params, grads):
            state = self.state[p]
            if "muon_buffer" not in state:
                state["muon_buffer"] = torch.zeros_like(g)
            bufs.append(state["muon_buffer"])
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads)
        updates = torch._foreach_add(grads, bufs, alpha=momentum) if group["nesterov"] else bufs
        # Same-shape weights (one per layer) are orthogonalised together: a small model has many
        # tiny matrices, where per-call overhead, not arithmetic, is the cost of a step.
        by_shape = {}
        for i, p in enumerate(params):
            by_shape.setdefault((tuple(p.shape), p.dtype, p.device), []).append(i)
        if group["weight_decay"] != 0:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        for (shape, dtype, _), idx in by_shape.items():
            X = newton_schulz(torch.stack([updates[i] for i in idx]).to(torch.bfloat16), group["ns_steps"]).to(dtype)
            torch._foreach_add_([params[i] for i in idx], list(X.unbind(0)),
                                alpha=-lr * math.sqrt(max(shape)) * group["matched_adamw_rms"])

    def _adamw_step(self, group) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        beta1, beta2 = group["adamw_betas"]
        lr, eps = group["lr"], group["adamw_eps"]
        group["step"] += 1
        t = group["step"]
        for p in params:
            g = p.grad
            state = self.state[p]
            if "adamw_exp_avg" not in state:
                state["adamw_exp_avg"] = torch.zeros_like(g)
                state["adamw_exp_avg_sq"] = torch.zeros_like(g)
            m, v = state["adamw_exp_avg"], state["adamw_exp_avg_sq"]
            m.lerp_(g, 1 - beta1)
            v.lerp_(g.square(), 1 - beta2)
            u = m / (eps + v.sqrt())
            scale = (1 - beta1 ** t) / math.sqrt(1 - beta2 ** t)
            p.mul_(1 - lr * group["weight_decay"])
            p.add_(u, alpha=-lr / scale)


def muon_param_groups(params, hidden: Optional[Iterable[torch.Tensor]] = None) -> list:
    """URM's grouping (``use_muon=True``): every 2-D parameter under Muon, every other one (biases,
    convolution kernels) under the AdamW branch. With ``hidden``, only the 2-D parameters among
    those (the hidden layers' weights) go to Muon, and the rest (embeddings, output heads) to the
    AdamW branch, as Muon's author advises. Empty groups are left out."""
    params = [p for p in params if p.requires_grad]
    keep = None if hidden is None else {id(p) for p in hidden}

    def orthogonalised(p: torch.Tensor) -> bool:
        return p.ndim == 2 and (keep is None or id(p) in keep)

    groups = [dict(params=[p for p in params if orthogonalised(p)], use_muon=True),
              dict(params=[p for p in params if not orthogonalised(p)], use_muon=False)]
    return [g for g in groups if g["params"]]
