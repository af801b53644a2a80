"""Hierarchical Reasoning Model with adaptive computation time (HRM, arXiv 2506.21734).

Two recurrent modules at two speeds: the low-level module ``L_level`` updates ``z_L``
``L_cycles`` times per high-level step, the high-level module ``H_level`` updates ``z_H`` once
per cycle from the result. Only the last L and H updates of a segment get gradients (the
"1-step gradient"); the carry is detached between segments. An ACT Q-head on ``z_H[:, 0]``
learns when to stop.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from models.act import ACTCarry, ACTInner, ACTModel, ACTModelConfig, InnerCarry, post_norm_block
from models.layers import CosSin, ReasoningModule


class HierarchicalReasoningModel_ACTV1Config(ACTModelConfig):
    L_cycles: int
    H_layers: int
    L_layers: int
    mlp_t: bool = False  # in the TRM repository's config of this model; an MLP across the sequence instead of attention


# Original class names, kept for people's notebooks and pickled objects.
HierarchicalReasoningModel_ACTV1InnerCarry = InnerCarry
HierarchicalReasoningModel_ACTV1Carry = ACTCarry


class HierarchicalReasoningModel_ACTV1_Inner(ACTInner):
    carry_class = InnerCarry
    output_latent = "z_H"

    def build_levels(self, config: HierarchicalReasoningModel_ACTV1Config) -> None:
        seq_len = config.seq_len + self.puzzle_emb_len
        self.H_level = ReasoningModule(layers=[post_norm_block(config, seq_len) for _ in range(config.H_layers)])
        self.L_level = ReasoningModule(layers=[post_norm_block(config, seq_len) for _ in range(config.L_layers)])

    @staticmethod
    def block_calls(config) -> Tuple[int, int]:
        return (config.H_cycles * config.L_cycles * config.L_layers + config.H_cycles * config.H_layers,
                config.L_layers + config.H_layers)

    def reason(self, carry: InnerCarry, x: torch.Tensor, cos_sin: Optional[CosSin]) -> InnerCarry:
        H_cycles, L_cycles = self.config.H_cycles, self.config.L_cycles
        with torch.no_grad():
            z_H, z_L = carry.z_H, carry.z_L
            for h in range(H_cycles):
                for l in range(L_cycles):
                    if not (h == H_cycles - 1 and l == L_cycles - 1):
                        z_L = self.L_level(z_L, z_H + x, cos_sin=cos_sin)
                if h != H_cycles - 1:
                    z_H = self.H_level(z_H, z_L, cos_sin=cos_sin)

        # 1-step gradient: the final L and H updates are the only ones back-propagated through.
        z_L = self.L_level(z_L, z_H + x, cos_sin=cos_sin)
        z_H = self.H_level(z_H, z_L, cos_sin=cos_sin)
        return InnerCarry(z_H=z_H, z_L=z_L)


class HierarchicalReasoningModel_ACTV1(ACTModel):
    """HRM with ACT. ``forward(carry, batch) -> (new_carry, outputs)``; see :class:`models.act.ACTModel`."""

    config_class = HierarchicalReasoningModel_ACTV1Config
    inner_class = HierarchicalReasoningModel_ACTV1_Inner
