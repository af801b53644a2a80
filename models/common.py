"""Initialisers shared by every model."""
import math

import torch


def trunc_normal_init_(tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0) -> torch.Tensor:
    """Fill ``tensor`` in place with a normal truncated to ``[lower*std, upper*std]``.

    JAX/Flax convention: the standard deviation *after* truncation equals ``std``.
    (``torch.nn.init.trunc_normal_`` gives a smaller one because it skips that correction.)
    Sampled by the inverse CDF: ``u ~ U(erf(lower/√2), erf(upper/√2))``, ``x = √2·erfinv(u)``.
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()

        sqrt2 = math.sqrt(2.0)
        erf_lo, erf_hi = math.erf(lower / sqrt2), math.erf(upper / sqrt2)
        mass = (erf_hi - erf_lo) / 2  # probability of [lower, upper] under N(0, 1)

        # Variance of N(0, 1) truncated to [lower, upper]; divide it out so the result has `std`.
        pdf_lo = math.exp(-0.5 * lower ** 2) / math.sqrt(2 * math.pi)
        pdf_hi = math.exp(-0.5 * upper ** 2) / math.sqrt(2 * math.pi)
        truncated_var = 1 - (upper * pdf_hi - lower * pdf_lo) / mass - ((pdf_hi - pdf_lo) / mass) ** 2
        scaled_std = std / math.sqrt(truncated_var)

        tensor.uniform_(erf_lo, erf_hi)
        tensor.erfinv_()
        tensor.mul_(sqrt2 * scaled_std)
        tensor.clip_(lower * scaled_std, upper * scaled_std)
    return tensor
