"""TRM with six low-level latents (the TRM paper's "more features" ablation).

Besides the answer state ``z_H`` there are six latents ``z_L1..z_L6``; cycle step ``i`` rewrites
latent ``i`` from the sum of all six (plus ``z_H`` and the input), and ``z_H`` is then updated
from that sum. Needs ``L_cycles <= 6``. Rounds, gradient split and halting are TRM's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pydantic
import torch

from models.act import ACTCarry, carry_fields
from models.layers import CosSin
from models.recursive_reasoning.trm import (TinyRecursiveReasoningModel_ACTV1 as _TRM,
                                            TinyRecursiveReasoningModel_ACTV1_Inner as _TRMInner,
                                            TinyRecursiveReasoningModel_ACTV1Config as _TRMConfig)

NUM_L_LATENTS = 6


class TinyRecursiveReasoningModel_ACTV1Config(_TRMConfig):
    @pydantic.model_validator(mode="after")
    def _check_hier6(self):
        if not 1 <= self.L_cycles <= NUM_L_LATENTS:
            raise ValueError(f"L_cycles must be between 1 and {NUM_L_LATENTS} (one latent per cycle step), got {self.L_cycles}")
        return self


@dataclass
class TinyRecursiveReasoningModel_ACTV1InnerCarry:
    z_H: torch.Tensor
    z_L1: torch.Tensor
    z_L2: torch.Tensor
    z_L3: torch.Tensor
    z_L4: torch.Tensor
    z_L5: torch.Tensor
    z_L6: torch.Tensor


TinyRecursiveReasoningModel_ACTV1Carry = ACTCarry


class TinyRecursiveReasoningModel_ACTV1_Inner(_TRMInner):
    carry_class = TinyRecursiveReasoningModel_ACTV1InnerCarry
    output_latent = "z_H"

    def reason(self, carry, x: torch.Tensor, cos_sin: Optional[CosSin]):
        z_H = carry.z_H
        z_L = [v for k, v in carry_fields(carry).items() if k != "z_H"]

        def one_round():
            nonlocal z_H
            for i in range(self.config.L_cycles):
                z_L[i] = self.L_level(sum(z_L), z_H + x, cos_sin=cos_sin)
            z_H = self.L_level(z_H, sum(z_L), cos_sin=cos_sin)

        with torch.no_grad():
            for _ in range(self.config.H_cycles - 1):
                one_round()
        one_round()
        return TinyRecursiveReasoningModel_ACTV1InnerCarry(z_H, *z_L)


class TinyRecursiveReasoningModel_ACTV1(_TRM):
    """TRM with six low-level latents and TRM's ACT rule."""

    config_class = TinyRecursiveReasoningModel_ACTV1Config
    inner_class = TinyRecursiveReasoningModel_ACTV1_Inner
