"""What HRM and TRM share around their recursion: the config fields, the input embedding and
output heads of the inner model, the latent carry, and the adaptive-computation-time (ACT)
wrapper that decides per example when to stop thinking.

A model file (``hrm/hrm_act_v1.py``, ``recursive_reasoning/trm.py``) subclasses these and adds
its reasoning modules and its forward recursion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Literal, Tuple

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from models.common import trunc_normal_init_
from models.layers import CastedEmbedding, CastedLinear, RotaryEmbedding
from models.sparse_embedding import CastedSparseEmbedding
from utils.functions import validation_error_line


class ACTModelConfig(pydantic.BaseModel):
    """Fields common to HRM and TRM. Unknown keys are ignored (the original's configs carry ``causal``)."""

    batch_size: int
    seq_len: int
    puzzle_emb_ndim: int = 0
    num_puzzle_identifiers: int
    vocab_size: int

    H_cycles: int
    L_cycles: int
    L_layers: int

    hidden_size: int
    expansion: float
    num_heads: int
    pos_encodings: Literal["rope", "learned"]

    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    halt_max_steps: int
    halt_exploration_prob: float

    forward_dtype: str = "bfloat16"

    @pydantic.model_validator(mode="after")
    def _check(self):
        if self.num_heads <= 0 or self.hidden_size % self.num_heads != 0:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        if self.pos_encodings == "rope" and (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"rope needs an even head dimension, got hidden_size/num_heads = {self.hidden_size // self.num_heads}")
        if not isinstance(getattr(torch, self.forward_dtype, None), torch.dtype):
            raise ValueError(f"forward_dtype {self.forward_dtype!r} is not a torch dtype (e.g. bfloat16, float32)")
        if self.halt_max_steps < 1:
            raise ValueError(f"halt_max_steps must be >= 1, got {self.halt_max_steps}")
        if self.puzzle_emb_ndim < 0:
            raise ValueError(f"puzzle_emb_ndim must be >= 0, got {self.puzzle_emb_ndim}")
        return self


def parse_model_config(config_cls, config_dict: dict, model_name: str):
    """Validate ``config_dict`` into ``config_cls``; on error raise one line naming the field."""
    try:
        return config_cls(**config_dict)
    except pydantic.ValidationError as e:
        raise ValueError(f"{model_name} config: {validation_error_line(e)}") from None


@dataclass
class InnerCarry:
    z_H: torch.Tensor
    z_L: torch.Tensor


@dataclass
class ACTCarry:
    inner_carry: InnerCarry
    steps: torch.Tensor
    halted: torch.Tensor
    current_data: Dict[str, torch.Tensor]


class ACTInner(nn.Module):
    """Embeddings, heads and carry of the inner model; subclasses add levels and ``forward``.

    Subclass ``__init__``: call ``_build_io`` first, then create the reasoning modules, then
    ``_build_carry_init`` — the order of parameter creation fixes which random numbers each
    weight gets, matching the original code for a given seed.
    """

    def _build_io(self, config: ACTModelConfig, puzzle_emb_len: int) -> None:
        self.config = config
        self.forward_dtype = getattr(torch, config.forward_dtype)
        self.embed_scale = math.sqrt(config.hidden_size)
        embed_init_std = 1.0 / self.embed_scale

        self.embed_tokens = CastedEmbedding(config.vocab_size, config.hidden_size, init_std=embed_init_std, cast_to=self.forward_dtype)
        self.lm_head = CastedLinear(config.hidden_size, config.vocab_size, bias=False)
        self.q_head = CastedLinear(config.hidden_size, 2, bias=True)

        self.puzzle_emb_len = puzzle_emb_len
        if config.puzzle_emb_ndim > 0:
            # Zero init: a new puzzle starts from "no prior".
            self.puzzle_emb = CastedSparseEmbedding(config.num_puzzle_identifiers, config.puzzle_emb_ndim,
                                                    batch_size=config.batch_size, init_std=0, cast_to=self.forward_dtype)

        total_len = config.seq_len + self.puzzle_emb_len
        if config.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(dim=config.hidden_size // config.num_heads, max_position_embeddings=total_len, base=config.rope_theta)
        elif config.pos_encodings == "learned":
            self.embed_pos = CastedEmbedding(total_len, config.hidden_size, init_std=embed_init_std, cast_to=self.forward_dtype)

    def _build_carry_init(self) -> None:
        hidden = self.config.hidden_size
        self.H_init = nn.Buffer(trunc_normal_init_(torch.empty(hidden), std=1).to(self.forward_dtype), persistent=True)
        self.L_init = nn.Buffer(trunc_normal_init_(torch.empty(hidden), std=1).to(self.forward_dtype), persistent=True)
        # Q head starts at "keep going" (sigmoid(-5) ~ 0.007) so early training does not halt at once.
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)

    def cos_sin(self):
        return self.rotary_emb() if hasattr(self, "rotary_emb") else None

    def _input_embeddings(self, input: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        embedding = self.embed_tokens(input.to(torch.int32))

        if self.config.puzzle_emb_ndim > 0:
            puzzle_embedding = self.puzzle_emb(puzzle_identifiers)
            pad_count = self.puzzle_emb_len * self.config.hidden_size - puzzle_embedding.shape[-1]
            if pad_count > 0:
                puzzle_embedding = F.pad(puzzle_embedding, (0, pad_count))
            embedding = torch.cat((puzzle_embedding.view(-1, self.puzzle_emb_len, self.config.hidden_size), embedding), dim=-2)

        if self.config.pos_encodings == "learned":
            # 1/sqrt(2) keeps the variance of the sum equal to that of each term.
            embedding = 0.707106781 * (embedding + self.embed_pos.embedding_weight.to(self.forward_dtype))

        return self.embed_scale * embedding

    def empty_carry(self, batch_size: int, device=None) -> InnerCarry:
        shape = (batch_size, self.config.seq_len + self.puzzle_emb_len, self.config.hidden_size)
        return InnerCarry(z_H=torch.zeros(shape, dtype=self.forward_dtype, device=device),
                          z_L=torch.zeros(shape, dtype=self.forward_dtype, device=device))

    def reset_carry(self, reset_flag: torch.Tensor, carry: InnerCarry) -> InnerCarry:
        flag = reset_flag.view(-1, 1, 1)
        return InnerCarry(z_H=torch.where(flag, self.H_init, carry.z_H), z_L=torch.where(flag, self.L_init, carry.z_L))

    def _heads(self, z_H: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Token logits (puzzle-embedding positions dropped) and Q logits read at position 0."""
        output = self.lm_head(z_H)[:, self.puzzle_emb_len:]
        q_logits = self.q_head(z_H[:, 0]).to(torch.float32)
        return output, (q_logits[..., 0], q_logits[..., 1])


class ACTModel(nn.Module):
    """ACT wrapper: keeps a carry per batch row, resets rows that halted, runs one segment.

    Subclasses set ``config_class``/``inner_class`` and may override the halting rule.
    """

    config_class = ACTModelConfig
    inner_class = ACTInner

    def __init__(self, config_dict: dict):
        super().__init__()
        self.config = parse_model_config(self.config_class, config_dict, type(self).__name__)
        self.inner = self.inner_class(self.config)

    @property
    def puzzle_emb(self):
        return self.inner.puzzle_emb

    def initial_carry(self, batch: Dict[str, torch.Tensor]) -> ACTCarry:
        """A carry in which every row is halted, so the first call loads the whole batch."""
        batch_size = batch["inputs"].shape[0]
        device = batch["inputs"].device
        return ACTCarry(
            inner_carry=self.inner.empty_carry(batch_size, device=device),
            steps=torch.zeros((batch_size,), dtype=torch.int32, device=device),
            halted=torch.ones((batch_size,), dtype=torch.bool, device=device),
            current_data={k: torch.empty_like(v) for k, v in batch.items()},
        )

    def halt_signal(self, q_halt_logits: torch.Tensor, q_continue_logits: torch.Tensor) -> torch.Tensor:
        """Training-time decision to stop: the Q value of halting beats that of continuing."""
        return q_halt_logits > q_continue_logits

    def uses_q_continue(self) -> bool:
        """Whether training bootstraps a Q target for ``q_continue`` (costs one extra forward)."""
        return True

    def forward(self, carry: ACTCarry, batch: Dict[str, torch.Tensor]) -> Tuple[ACTCarry, Dict[str, torch.Tensor]]:
        # Rows that halted last segment start over on the new batch's example.
        new_inner_carry = self.inner.reset_carry(carry.halted, carry.inner_carry)
        new_steps = torch.where(carry.halted, 0, carry.steps)
        new_current_data = {k: torch.where(carry.halted.view((-1,) + (1,) * (batch[k].ndim - 1)), batch[k], v)
                            for k, v in carry.current_data.items()}

        new_inner_carry, logits, (q_halt_logits, q_continue_logits) = self.inner(new_inner_carry, new_current_data)
        outputs = {"logits": logits, "q_halt_logits": q_halt_logits, "q_continue_logits": q_continue_logits}

        with torch.no_grad():
            new_steps = new_steps + 1
            is_last_step = new_steps >= self.config.halt_max_steps
            halted = is_last_step

            # In eval every row runs halt_max_steps segments, so batches stay in lockstep.
            if self.training and self.config.halt_max_steps > 1:
                halted = halted | self.halt_signal(q_halt_logits, q_continue_logits)

                # Exploration: some rows get a random minimum number of segments.
                min_halt_steps = (torch.rand_like(q_halt_logits) < self.config.halt_exploration_prob) * \
                    torch.randint_like(new_steps, low=2, high=self.config.halt_max_steps + 1)
                halted = halted & (new_steps >= min_halt_steps)

                if self.uses_q_continue():
                    # Bootstrapped target from the next segment (no replay buffer).
                    _, _, (next_q_halt_logits, next_q_continue_logits) = self.inner(new_inner_carry, new_current_data)
                    outputs["target_q_continue"] = torch.sigmoid(
                        torch.where(is_last_step, next_q_halt_logits, torch.maximum(next_q_halt_logits, next_q_continue_logits)))

        return ACTCarry(new_inner_carry, new_steps, halted, new_current_data), outputs
