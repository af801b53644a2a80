"""Universal Reasoning Model (URM, UbiquantAI/URM, arXiv 2512.14693).

One shared stack of ``num_layers`` post-norm blocks is applied in loops to a single latent
``z_hidden`` (URM's ``current_hidden``): each of ``L_cycles`` inner loops adds the input
embedding and runs every block in order, and ``H_cycles`` such rounds make one ACT segment.
The first ``H_cycles - 1`` rounds run without gradient and the last with (truncated
backpropagation through loops). The channel MLP is a ConvSwiGLU (a SwiGLU with a short
depthwise convolution over the sequence). Halting as TRM's: ``q_halt > 0``, no Q target.

URM calls the number of ACT segments ``loops``; ``halt_max_steps``, the name the other models
and the tools (``evaluate.py halt_max_steps=...``) use, is the same number.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Tuple

import pydantic
import torch
from torch import nn

from models.act import ACTCarry, ACTInner, ACTModel, ACTModelConfig
from models.layers import ConvSwiGLU, CosSin, PostNormBlock


class URMConfig(ACTModelConfig):
    loops: int  # ACT segments
    halt_max_steps: int = 0  # always equal to loops (filled from it, or given instead of it)
    num_layers: int
    L_cycles: int
    pos_encodings: Literal["rope"] = "rope"  # URM always uses rotary positions
    halt_exploration_prob: float = 0.1  # URM's code fixes 0.1

    @pydantic.model_validator(mode="before")
    @classmethod
    def _segments(cls, data):
        # halt_max_steps, when given, is the framework-wide knob for the same number and wins
        # (evaluate.py and the benchmarks set it on any model's config).
        if isinstance(data, dict):
            if data.get("halt_max_steps"):
                data = {**data, "loops": data["halt_max_steps"]}
            elif "loops" in data:
                data = {**data, "halt_max_steps": data["loops"]}
        return data

    @pydantic.model_validator(mode="after")
    def _check_urm(self):
        if self.num_layers < 1 or self.L_cycles < 1 or self.H_cycles < 1:
            raise ValueError(f"num_layers, H_cycles and L_cycles must be >= 1, got {self.num_layers}, {self.H_cycles}, {self.L_cycles}")
        return self

    def __setattr__(self, name, value):
        # One number under two names: setting either sets both.
        if name in ("loops", "halt_max_steps"):
            super().__setattr__("loops", value)
            name = "halt_max_steps"
        super().__setattr__(name, value)


@dataclass
class URMInnerCarry:
    z_hidden: torch.Tensor  # URM's current_hidden


URMCarry = ACTCarry


class URM_Inner(ACTInner):
    carry_class = URMInnerCarry
    output_latent = "z_hidden"

    @staticmethod
    def init_buffer_name(latent: str) -> str:
        return "init_hidden"

    def build_levels(self, config: URMConfig) -> None:
        self.layers = nn.ModuleList([PostNormBlock(hidden_size=config.hidden_size, num_heads=config.num_heads, expansion=config.expansion,
                                                   rms_norm_eps=config.rms_norm_eps, mlp_class=ConvSwiGLU)
                                     for _ in range(config.num_layers)])

    @staticmethod
    def block_calls(config) -> Tuple[int, int]:
        per_round = config.L_cycles * config.num_layers
        return config.H_cycles * per_round, per_round

    @staticmethod
    def block_extra_flops(config, batch_size: int, seq_len: int) -> int:
        return ConvSwiGLU.conv_flops(config.hidden_size, config.expansion, batch_size, seq_len)

    def _round(self, h: torch.Tensor, x: torch.Tensor, cos_sin: Optional[CosSin]) -> torch.Tensor:
        for _ in range(self.config.L_cycles):
            h = h + x
            for layer in self.layers:
                h = layer(cos_sin=cos_sin, hidden_states=h)
        return h

    def reason(self, carry: URMInnerCarry, x: torch.Tensor, cos_sin: Optional[CosSin]) -> URMInnerCarry:
        h = carry.z_hidden
        with torch.no_grad():
            for _ in range(self.config.H_cycles - 1):
                h = self._round(h, x, cos_sin)
        # Only the last round is back-propagated through.
        return URMInnerCarry(z_hidden=self._round(h, x, cos_sin))


class URM(ACTModel):
    """URM with ACT: a row halts in training when ``q_halt > 0`` (or after ``loops`` segments);
    no ``q_continue`` target is learned."""

    config_class = URMConfig
    inner_class = URM_Inner

    def halt_signal(self, q_halt_logits: torch.Tensor, q_continue_logits: torch.Tensor) -> torch.Tensor:
        return q_halt_logits > 0

    def halt_logit(self, q_halt_logits: torch.Tensor, q_continue_logits: torch.Tensor) -> torch.Tensor:
        return q_halt_logits

    def uses_q_continue(self) -> bool:
        return False
