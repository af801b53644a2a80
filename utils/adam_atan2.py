"""AdamATan2: Adam with ``atan2(m, sqrt(v))`` in place of ``m / (sqrt(v) + eps)``.

Per parameter, at step ``t``::

    p *= 1 - lr * weight_decay
    m  = lerp(m, g,  1 - beta1)
    v  = lerp(v, g², 1 - beta2)
    p -= lr / (1 - beta1^t) * atan2(m, sqrt(v) / sqrt(1 - beta2^t))

atan2 is bounded and scale-invariant, so there is no epsilon to tune. The CUDA kernel of the
``adam-atan2`` package is used when it imports and the parameters are on CUDA; otherwise a
built-in implementation with the same state layout (``step``, ``exp_avg``, ``exp_avg_sq``).

``compiled=True`` (CPU): bias correction, atan2 and the parameter update run as one
``torch.compile`` kernel per parameter instead of four passes, with bit for bit the same numbers
as the foreach path (tests/test_adam_atan2.py); the moment updates and the square root stay eager
(see below). Speed: docs/performance.md "Performance".
"""
from __future__ import annotations

import functools
import math
from typing import List, Tuple

import torch
from torch.optim.optimizer import Optimizer, ParamsT

@functools.lru_cache(maxsize=None)
def _cuda_backend():
    try:
        import adam_atan2_backend  # type: ignore[import-not-found]
        return adam_atan2_backend
    except Exception:
        return None


class AdamATan2(Optimizer):
    def __init__(self, params: ParamsT, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), weight_decay: float = 1e-2,
                 compiled: bool = False):
        if not 0.0 <= lr:
            raise ValueError(f"AdamATan2: invalid learning rate {lr} (must be >= 0; the schedule may start at 0)")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"AdamATan2: invalid betas {betas} (each in [0, 1))")
        if not 0.0 <= weight_decay:
            raise ValueError(f"AdamATan2: invalid weight_decay {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))
        self.compiled = compiled

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamATan2 does not support sparse gradients")
                state = self.state[p]
                # Like torch.optim.Adam: the step count lives on the CPU (no device sync to read
                # it), except for the CUDA kernel, which reads it on the device. A state loaded
                # with map_location=<the GPU> (resume) is moved back once.
                step_device = p.device if p.is_cuda and _cuda_backend() is not None else torch.device("cpu")
                if len(state) == 0:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=step_device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                elif state["step"].device != step_device:
                    state["step"] = state["step"].to(step_device)
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])

            if params:
                beta1, beta2 = group["betas"]
                adam_atan2(params, grads, exp_avgs, exp_avg_sqs, steps,
                           lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], compiled=self.compiled)
        return loss


def adam_atan2(params: List[torch.Tensor], grads: List[torch.Tensor], exp_avgs: List[torch.Tensor], exp_avg_sqs: List[torch.Tensor],
               steps: List[torch.Tensor], lr: float, beta1: float, beta2: float, weight_decay: float, compiled: bool = False) -> None:
    """Functional update of a list of parameters (the step counters are incremented here).

    ``compiled``: fused ``torch.compile`` kernels for CPU tensors (same results, fewer passes).
    """
    backend = _cuda_backend()
    if backend is not None and params[0].is_cuda and all(s.is_cuda for s in steps):
        torch._foreach_add_(steps, 1)
        backend.adam_atan2_cuda_impl_(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, weight_decay)
        return

    # Bias corrections depend on the step, which is normally the same for every parameter.
    by_step = {}
    for i, s in enumerate(steps):
        s.add_(1)
        by_step.setdefault(float(s), []).append(i)

    for t, idx in by_step.items():
        step_size = lr / (1 - beta1 ** t)
        inv_bias_correction2_sqrt = 1 / math.sqrt(1 - beta2 ** t)
        p, g, m, v = ([xs[i] for i in idx] for xs in (params, grads, exp_avgs, exp_avg_sqs))
        if compiled and not p[0].is_cuda:
            _compiled_update(p, g, m, v, lr, beta1, beta2, weight_decay, inv_bias_correction2_sqrt, step_size)
            continue

        denom = _decay_and_moments(p, g, m, v, lr, beta1, beta2, weight_decay)
        torch._foreach_mul_(denom, inv_bias_correction2_sqrt)
        for m_i, d_i in zip(m, denom):  # torch has no foreach atan2: one (parallel) kernel per tensor
            torch.atan2(m_i, d_i, out=d_i)
        torch._foreach_add_(p, denom, alpha=-step_size)


def _decay_and_moments(p: List[torch.Tensor], g: List[torch.Tensor], m: List[torch.Tensor], v: List[torch.Tensor],
                       lr: float, beta1: float, beta2: float, weight_decay: float) -> List[torch.Tensor]:
    """Decoupled weight decay and both moment updates, in place; returns ``sqrt(v)`` (new tensors).

    Shared by the eager and the compiled paths: these stay eager foreach ops in both (see the
    note on the compiled update below).
    """
    if weight_decay != 0:
        torch._foreach_mul_(p, 1 - lr * weight_decay)
    torch._foreach_lerp_(m, g, 1 - beta1)
    torch._foreach_mul_(v, beta2)
    torch._foreach_addcmul_(v, g, g, value=1 - beta2)
    return torch._foreach_sqrt(v)


# ---------------------------------------------------------------------------------------------
# Compiled CPU update: the same operations on the same values, with the last three (bias
# correction, atan2, update) fused into one pass per parameter. The other steps stay eager foreach
# ops because compiled code would round them differently in the last bit (torch's CPU lerp and
# addcmul use fused multiply-adds, its sqrt is MKL's). The update ``p + (-step_size) * atan2`` is
# compiled with floating-point contraction so that, like torch's eager ``add_(alpha=)``, it is one
# fused multiply-add. Scalars are computed in Python as in the eager path and travel as 0-d
# float32 tensors (the eager ops round them to float32 too), so a new learning rate or step is a
# new value, not a new graph.


# Parameters whose size is a multiple of this (the widest CPU vector, AVX-512 floats) are fused.
VECTOR_ALIGNMENT = 16


def _atan2_step(p, m, denom, inv_bias_correction2_sqrt, neg_step_size):
    p.add_(neg_step_size * torch.atan2(m, denom.mul_(inv_bias_correction2_sqrt)))


@functools.lru_cache(maxsize=None)
def _compiled_step():
    return torch.compile(_atan2_step, dynamic=True, fullgraph=True, options={"cpp.enable_floating_point_contract_flag": "fast"})


def _compiled_update(p, g, m, v, lr: float, beta1: float, beta2: float, weight_decay: float,
                     inv_bias_correction2_sqrt: float, step_size: float) -> None:
    step = _compiled_step()
    inv_bc2, neg_step_size = torch.tensor([inv_bias_correction2_sqrt, -step_size]).unbind()
    denom = _decay_and_moments(p, g, m, v, lr, beta1, beta2, weight_decay)
    for p_i, m_i, d_i in zip(p, m, denom):
        if p_i.numel() % VECTOR_ALIGNMENT == 0:
            step(p_i.detach(), m_i, d_i, inv_bc2, neg_step_size)
        else:  # eager handles a ragged tail with scalar code, which rounds differently from the compiled masked loads
            torch.atan2(m_i, d_i.mul_(inv_bias_correction2_sqrt), out=d_i)
            p_i.add_(d_i, alpha=-step_size)
