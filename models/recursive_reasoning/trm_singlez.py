"""TRM with a single latent (the TRM paper's "one feature" ablation).

There is no separate answer state: one latent ``z_L`` is refined ``L_cycles`` times from itself
plus the input, then once more from itself alone, and the heads read it. Rounds, gradient split
and halting are TRM's (``H_cycles - 1`` rounds without gradient, the last one with).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from models.act import ACTCarry
from models.layers import CosSin
from models.recursive_reasoning.trm import (TinyRecursiveReasoningModel_ACTV1 as _TRM,
                                            TinyRecursiveReasoningModel_ACTV1_Inner as _TRMInner,
                                            TinyRecursiveReasoningModel_ACTV1Config)

__all__ = ["TinyRecursiveReasoningModel_ACTV1", "TinyRecursiveReasoningModel_ACTV1Config", "TinyRecursiveReasoningModel_ACTV1InnerCarry"]


@dataclass
class TinyRecursiveReasoningModel_ACTV1InnerCarry:
    z_L: torch.Tensor


TinyRecursiveReasoningModel_ACTV1Carry = ACTCarry


class TinyRecursiveReasoningModel_ACTV1_Inner(_TRMInner):
    carry_class = TinyRecursiveReasoningModel_ACTV1InnerCarry
    output_latent = "z_L"

    def reason(self, carry, x: torch.Tensor, cos_sin: Optional[CosSin]):
        z_L = carry.z_L
        with torch.no_grad():
            for _ in range(self.config.H_cycles - 1):
                for _ in range(self.config.L_cycles):
                    z_L = self.L_level(z_L, x, cos_sin=cos_sin)
                z_L = self.L_level(z_L, cos_sin=cos_sin)

        for _ in range(self.config.L_cycles):
            z_L = self.L_level(z_L, x, cos_sin=cos_sin)
        z_L = self.L_level(z_L, cos_sin=cos_sin)
        return TinyRecursiveReasoningModel_ACTV1InnerCarry(z_L=z_L)


class TinyRecursiveReasoningModel_ACTV1(_TRM):
    """Single-latent TRM with TRM's ACT rule."""

    inner_class = TinyRecursiveReasoningModel_ACTV1_Inner
