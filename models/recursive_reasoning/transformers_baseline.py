"""A plain transformer with ACT: the baseline of the TRM paper's ablations.

``H_layers`` post-norm blocks applied once per ACT segment to ``z_H + input``; no inner
recursion, no 1-step gradient (the whole segment is back-propagated), no Q target.
``act_enabled`` switches adaptive halting in training, ``act_inference`` in evaluation (a row
then stops at its first ``q_halt > q_continue`` and ``actual_steps`` reports its segments).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from models.act import ACTCarry, ACTInner, ACTModel, ACTModelConfig, post_norm_block
from models.layers import CosSin, ReasoningModule


class Model_ACTV2Config(ACTModelConfig):
    H_layers: int
    act_enabled: bool = True  # adaptive halting in training
    act_inference: bool = False  # adaptive halting in evaluation


@dataclass
class Model_ACTV2InnerCarry:
    z_H: torch.Tensor


Model_ACTV2Carry = ACTCarry


class Model_ACTV2_Inner(ACTInner):
    carry_class = Model_ACTV2InnerCarry
    output_latent = "z_H"

    def build_levels(self, config: Model_ACTV2Config) -> None:
        self.H_level = ReasoningModule(layers=[post_norm_block(config) for _ in range(config.H_layers)])

    @staticmethod
    def block_calls(config) -> Tuple[int, int]:
        return config.H_layers, config.H_layers

    def reason(self, carry: Model_ACTV2InnerCarry, x: torch.Tensor, cos_sin: Optional[CosSin]) -> Model_ACTV2InnerCarry:
        return Model_ACTV2InnerCarry(z_H=self.H_level(carry.z_H, x, cos_sin=cos_sin))


class Model_ACTV2(ACTModel):
    """Transformer baseline with ACT; halting rule of HRM, no bootstrapped Q target."""

    config_class = Model_ACTV2Config
    inner_class = Model_ACTV2_Inner

    def uses_q_continue(self) -> bool:
        return False

    def halts_adaptively(self, act_inference: Optional[bool] = None) -> bool:
        in_eval = self.config.act_inference if act_inference is None else act_inference
        return self.config.act_enabled and (self.training or in_eval)
