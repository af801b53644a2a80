"""Hierarchical Reasoning Model with adaptive computation time (HRM, arXiv 2506.21734).

Two recurrent modules at two speeds: the low-level module ``L_level`` updates ``z_L``
``L_cycles`` times per high-level step, the high-level module ``H_level`` updates ``z_H`` once
per cycle from the result. Only the last L and H updates of a segment get gradients (the
"1-step gradient"); the carry is detached between segments. An ACT Q-head on ``z_H[:, 0]``
learns when to stop.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from models.act import ACTCarry, ACTInner, ACTModel, ACTModelConfig, InnerCarry
from models.layers import PostNormBlock, ReasoningModule


class HierarchicalReasoningModel_ACTV1Config(ACTModelConfig):
    H_layers: int


# Original class names, kept for people's notebooks and pickled objects.
HierarchicalReasoningModel_ACTV1InnerCarry = InnerCarry
HierarchicalReasoningModel_ACTV1Carry = ACTCarry


def _block(config: HierarchicalReasoningModel_ACTV1Config) -> PostNormBlock:
    return PostNormBlock(hidden_size=config.hidden_size, num_heads=config.num_heads, expansion=config.expansion, rms_norm_eps=config.rms_norm_eps)


class HierarchicalReasoningModel_ACTV1_Inner(ACTInner):
    def __init__(self, config: HierarchicalReasoningModel_ACTV1Config):
        super().__init__()
        self._build_io(config, puzzle_emb_len=-(config.puzzle_emb_ndim // -config.hidden_size))  # ceil
        self.H_level = ReasoningModule(layers=[_block(config) for _ in range(config.H_layers)])
        self.L_level = ReasoningModule(layers=[_block(config) for _ in range(config.L_layers)])
        self._build_carry_init()

    def forward(self, carry: InnerCarry, batch: Dict[str, torch.Tensor]) -> Tuple[InnerCarry, torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        cos_sin = self.cos_sin()
        input_embeddings = self._input_embeddings(batch["inputs"], batch["puzzle_identifiers"])
        H_cycles, L_cycles = self.config.H_cycles, self.config.L_cycles

        with torch.no_grad():
            z_H, z_L = carry.z_H, carry.z_L
            for h in range(H_cycles):
                for l in range(L_cycles):
                    if not (h == H_cycles - 1 and l == L_cycles - 1):
                        z_L = self.L_level(z_L, z_H + input_embeddings, cos_sin=cos_sin)
                if h != H_cycles - 1:
                    z_H = self.H_level(z_H, z_L, cos_sin=cos_sin)

        # 1-step gradient: the final L and H updates are the only ones back-propagated through.
        z_L = self.L_level(z_L, z_H + input_embeddings, cos_sin=cos_sin)
        z_H = self.H_level(z_H, z_L, cos_sin=cos_sin)

        new_carry = InnerCarry(z_H=z_H.detach(), z_L=z_L.detach())
        return new_carry, *self._heads(z_H)


class HierarchicalReasoningModel_ACTV1(ACTModel):
    """HRM with ACT. ``forward(carry, batch) -> (new_carry, outputs)``; see :class:`models.act.ACTModel`."""

    config_class = HierarchicalReasoningModel_ACTV1Config
    inner_class = HierarchicalReasoningModel_ACTV1_Inner
