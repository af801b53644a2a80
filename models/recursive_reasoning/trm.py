"""Tiny Recursive Model (TRM, arXiv 2510.04871).

One small network (``L_level``) does both jobs of HRM's two modules: it refines the latent
``z_L`` from (``z_H`` + input) ``L_cycles`` times, then updates the answer state ``z_H`` from
``z_L``. ``H_cycles - 1`` such rounds run without gradient and the last one with gradient.
With ``mlp_t`` the attention is replaced by an MLP across the sequence axis.
"""
from __future__ import annotations

from typing import Literal, Optional, Tuple

import pydantic
import torch

from models.act import ACTCarry, ACTInner, ACTModel, ACTModelConfig, InnerCarry, post_norm_block
from models.layers import CosSin, ReasoningModule


class TinyRecursiveReasoningModel_ACTV1Config(ACTModelConfig):
    L_cycles: int
    L_layers: int
    H_layers: int = 0  # unused: TRM has a single module; kept so HRM-style configs load
    pos_encodings: Literal["rope", "learned", "none"]
    mlp_t: bool = False
    # Positions prepended for the puzzle embedding; 0: ceil(puzzle_emb_ndim / hidden_size) as HRM.
    # Without a puzzle embedding (puzzle_emb_ndim=0) nothing is prepended, whatever this says.
    puzzle_emb_len: int = 16
    no_ACT_continue: bool = True  # TRM's default (ACTModelConfig: HRM's is False)

    @pydantic.model_validator(mode="after")
    def _check_trm(self):
        if self.puzzle_emb_len < 0:
            raise ValueError(f"puzzle_emb_len must be >= 0, got {self.puzzle_emb_len}")
        if self.puzzle_emb_len and self.puzzle_emb_ndim > self.puzzle_emb_len * self.hidden_size:
            raise ValueError(f"puzzle_emb_ndim ({self.puzzle_emb_ndim}) does not fit in puzzle_emb_len*hidden_size "
                             f"({self.puzzle_emb_len}*{self.hidden_size})")
        return self


TinyRecursiveReasoningModel_ACTV1InnerCarry = InnerCarry
TinyRecursiveReasoningModel_ACTV1Carry = ACTCarry


class TinyRecursiveReasoningModel_ACTV1_Inner(ACTInner):
    carry_class = InnerCarry
    output_latent = "z_H"

    @staticmethod
    def compute_puzzle_emb_len(config: TinyRecursiveReasoningModel_ACTV1Config) -> int:
        if config.puzzle_emb_ndim == 0:
            return 0
        return config.puzzle_emb_len or ACTInner.compute_puzzle_emb_len(config)

    def build_levels(self, config: TinyRecursiveReasoningModel_ACTV1Config) -> None:
        seq_len = config.seq_len + self.puzzle_emb_len
        self.L_level = ReasoningModule(layers=[post_norm_block(config, seq_len) for _ in range(config.L_layers)])

    @staticmethod
    def block_calls(config) -> Tuple[int, int]:
        # Each of H_cycles rounds: L_cycles updates of z_L and one of z_H; the last round has gradients.
        return config.H_cycles * (config.L_cycles + 1) * config.L_layers, (config.L_cycles + 1) * config.L_layers

    def reason(self, carry: InnerCarry, x: torch.Tensor, cos_sin: Optional[CosSin]) -> InnerCarry:
        z_H, z_L = carry.z_H, carry.z_L
        with torch.no_grad():
            for _ in range(self.config.H_cycles - 1):
                for _ in range(self.config.L_cycles):
                    z_L = self.L_level(z_L, z_H + x, cos_sin=cos_sin)
                z_H = self.L_level(z_H, z_L, cos_sin=cos_sin)

        # The last round is back-propagated through (all its L steps and the H step).
        for _ in range(self.config.L_cycles):
            z_L = self.L_level(z_L, z_H + x, cos_sin=cos_sin)
        z_H = self.L_level(z_H, z_L, cos_sin=cos_sin)
        return InnerCarry(z_H=z_H, z_L=z_L)


class TinyRecursiveReasoningModel_ACTV1(ACTModel):
    """TRM with ACT. With ``no_ACT_continue`` (default) a row halts in training when
    ``q_halt > 0`` and no ``q_continue`` target is learned; otherwise HRM's rule and Q target."""

    config_class = TinyRecursiveReasoningModel_ACTV1Config
    inner_class = TinyRecursiveReasoningModel_ACTV1_Inner
