"""What every recursive-reasoning model shares: the config fields, the input embedding and
output heads of the inner model, the latent carry, and the adaptive-computation-time (ACT)
wrapper that decides per example when to stop thinking.

A model file (``hrm/hrm_act_v1.py``, ``recursive_reasoning/trm.py``, ...) declares its carry
(a dataclass of named latents ``z_*``), builds its reasoning modules in ``build_levels`` and
writes one ACT segment of recursion in ``reason``. Everything around that (embedding, heads,
the init buffer of each latent, reset, detaching, halting) lives here, so that code which
handles carries (resume files, evaluation, benchmarks) iterates the carry's fields instead of
naming them.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Literal, Optional, Tuple

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from models.common import trunc_normal_init_
from models.layers import CastedEmbedding, CastedLinear, CosSin, PostNormBlock, ReasoningModule, RotaryEmbedding, _find_multiple
from models.sparse_embedding import CastedSparseEmbedding
from utils.functions import validation_error_line


class ACTModelConfig(pydantic.BaseModel):
    """Fields common to every model. Unknown keys are ignored (the original's configs carry ``causal``)."""

    batch_size: int
    seq_len: int
    puzzle_emb_ndim: int = 0
    num_puzzle_identifiers: int
    vocab_size: int

    H_cycles: int

    hidden_size: int
    expansion: float
    num_heads: int
    pos_encodings: Literal["rope", "learned"]

    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0

    halt_max_steps: int
    halt_exploration_prob: float
    # TRM's simplification (arXiv 2510.04871): halt on q_halt > 0 alone and learn no q_continue,
    # whose bootstrapped target costs one more forward per training step. Off: HRM's Q-learning.
    no_ACT_continue: bool = False

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


# ---------------------------------------------------------------------------------------------
# Carries


@dataclass
class InnerCarry:
    """HRM's and TRM's latents: the answer state ``z_H`` and the reasoning state ``z_L``."""

    z_H: torch.Tensor
    z_L: torch.Tensor


@dataclass
class ACTCarry:
    inner_carry: Any  # the model's own inner-carry dataclass
    steps: torch.Tensor
    halted: torch.Tensor
    current_data: Dict[str, torch.Tensor]


def carry_fields(inner_carry) -> Dict[str, torch.Tensor]:
    """The latents of an inner carry by name, in declaration order (``{"z_H": ..., "z_L": ...}``)."""
    return {f.name: getattr(inner_carry, f.name) for f in dataclasses.fields(inner_carry)}


def init_buffer_name(latent: str) -> str:
    """Name of a latent's init buffer: ``z_H`` -> ``H_init``, ``z_L3`` -> ``L3_init`` (the originals' names)."""
    return latent[len("z_"):] + "_init"


def map_carry(fn, *carries):
    """A carry of the same class whose fields are ``fn(field of each carry...)``."""
    first = carries[0]
    return type(first)(**{f.name: fn(*(getattr(c, f.name) for c in carries)) for f in dataclasses.fields(first)})


# ---------------------------------------------------------------------------------------------
# Inner model


def post_norm_block(config, seq_len: Optional[int] = None) -> PostNormBlock:
    """One block of the shared architecture; ``seq_len`` (the full sequence length) when ``config.mlp_t``."""
    return PostNormBlock(hidden_size=config.hidden_size, num_heads=config.num_heads, expansion=config.expansion,
                         rms_norm_eps=config.rms_norm_eps, mlp_t_seq_len=seq_len if getattr(config, "mlp_t", False) else None)


class ACTInner(nn.Module):
    """Embeddings, heads, carry and the segment skeleton; a subclass adds the recursion.

    A subclass sets ``carry_class`` (a dataclass whose fields are the latents, all named
    ``z_*``) and ``output_latent`` (the latent the heads read), and implements two hooks:
    ``build_levels(config)`` creates its reasoning modules and ``reason(carry, x, cos_sin)``
    runs one ACT segment and returns the new (not yet detached) carry. It must not define
    ``__init__``: the order in which parameters are created decides which random numbers
    each weight gets for a seed, and that order (input/output layers, then the levels, then
    one init buffer per latent in field order, as in the original code) is fixed here.
    """

    carry_class: ClassVar[type] = InnerCarry
    output_latent: ClassVar[str] = "z_H"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            raise TypeError(f"{cls.__name__} defines __init__; build modules in build_levels() so that the "
                            "parameter creation order stays the one fixed by ACTInner")
        fields = [f.name for f in dataclasses.fields(cls.carry_class)]
        if not fields or any(not name.startswith("z_") for name in fields):
            raise TypeError(f"{cls.__name__}.carry_class fields must be latents named z_*, got {fields}")
        if cls.output_latent not in fields:
            raise TypeError(f"{cls.__name__}.output_latent {cls.output_latent!r} is not a field of {cls.carry_class.__name__}")

    def __init__(self, config: ACTModelConfig):
        super().__init__()
        self._build_io(config, self.compute_puzzle_emb_len(config))
        self.build_levels(config)
        self._build_carry_init()

    # ---- hooks -------------------------------------------------------------------------------

    @staticmethod
    def compute_puzzle_emb_len(config) -> int:
        """Positions prepended for the puzzle embedding: ``ceil(puzzle_emb_ndim / hidden_size)``."""
        return -(config.puzzle_emb_ndim // -config.hidden_size)

    def build_levels(self, config) -> None:
        raise NotImplementedError

    def reason(self, carry, input_embeddings: torch.Tensor, cos_sin: CosSin):
        raise NotImplementedError

    @staticmethod
    def block_calls(config) -> Tuple[int, int]:
        """``(blocks applied in one ACT segment, of which back-propagated)``, for analytic FLOPs."""
        raise NotImplementedError

    @staticmethod
    def block_extra_flops(config, batch_size: int, seq_len: int) -> int:
        """Forward FLOPs of one block beyond the projections and attention that every block has
        (URM's depthwise convolution), for analytic FLOPs; ``seq_len`` includes the puzzle positions."""
        return 0

    def repeated_modules(self) -> List[nn.Module]:
        """The modules a segment applies over and over, which ``compile=regional`` compiles: the
        reasoning modules (HRM's ``H_level`` and ``L_level``, TRM's ``L_level``) or, in a model that
        loops over its blocks itself (URM), the blocks."""
        levels = [m for m in self.modules() if isinstance(m, ReasoningModule)]
        return levels or [m for m in self.modules() if isinstance(m, PostNormBlock)]

    @staticmethod
    def init_buffer_name(latent: str) -> str:
        """State-dict name of a latent's init buffer (the original code's name for it)."""
        return init_buffer_name(latent)

    # ---- construction ------------------------------------------------------------------------

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
        for f in dataclasses.fields(self.carry_class):
            init = trunc_normal_init_(torch.empty(self.config.hidden_size), std=1).to(self.forward_dtype)
            self.register_buffer(self.init_buffer_name(f.name), init, persistent=True)
        # Q head starts at "keep going" (sigmoid(-5) ~ 0.007) so early training does not halt at once.
        with torch.no_grad():
            self.q_head.weight.zero_()
            self.q_head.bias.fill_(-5)

    # ---- one segment -------------------------------------------------------------------------

    def cos_sin(self):
        return self.rotary_emb() if hasattr(self, "rotary_emb") else None

    def _input_embeddings(self, input: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        """Token (and puzzle) embeddings of a batch, scaled; the original's name, kept for notebooks."""
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

    def heads(self, z_out: torch.Tensor) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Token logits (puzzle-embedding positions dropped) and Q logits read at position 0."""
        output = self.lm_head(z_out)[:, self.puzzle_emb_len:]
        q_logits = self.q_head(z_out[:, 0]).to(torch.float32)
        return output, (q_logits[..., 0], q_logits[..., 1])

    def forward(self, carry, batch: Dict[str, torch.Tensor]) -> Tuple[Any, torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        x = self._input_embeddings(batch["inputs"], batch["puzzle_identifiers"])
        new_carry = self.reason(carry, x, self.cos_sin())
        # The carry is detached: gradients never flow from one ACT segment into the previous one.
        return map_carry(torch.Tensor.detach, new_carry), *self.heads(getattr(new_carry, self.output_latent))

    # ---- carry -------------------------------------------------------------------------------

    def empty_carry(self, batch_size: int, device=None):
        shape = (batch_size, self.config.seq_len + self.puzzle_emb_len, self.config.hidden_size)
        return self.carry_class(**{f.name: torch.zeros(shape, dtype=self.forward_dtype, device=device)
                                   for f in dataclasses.fields(self.carry_class)})

    def reset_carry(self, reset_flag: torch.Tensor, carry):
        """Each latent back to its init buffer (broadcast) where ``reset_flag`` is true."""
        flag = reset_flag.view(-1, 1, 1)
        return self.carry_class(**{name: torch.where(flag, getattr(self, self.init_buffer_name(name)), value)
                                   for name, value in carry_fields(carry).items()})


def analytic_flops(model: "ACTModel", batch_size: int) -> Tuple[int, int]:
    """``(forward FLOPs of one ACT segment, FLOPs of one training step)`` of ``model``'s inner network.

    Matmuls (and convolutions) only, 2 per multiply-add: every block application of a segment including the
    no-grad cycles, the backward of the back-propagated part (2x its forward), and the extra
    forward of a bootstrapped Q target when the model computes one.
    """
    inner, cfg = model.inner, model.config
    S = cfg.seq_len + inner.puzzle_emb_len
    d = cfg.hidden_size
    mlp_inter = _find_multiple(round(cfg.expansion * d * 2 / 3), 256)
    tokens = batch_size * S
    block = 2 * tokens * 3 * d * mlp_inter
    if getattr(cfg, "mlp_t", False):
        inter_t = _find_multiple(round(cfg.expansion * S * 2 / 3), 256)
        block += 2 * d * batch_size * 3 * S * inter_t
    else:
        block += 2 * tokens * 4 * d * d + 2 * 2 * tokens * S * d  # qkv + o projections; QK^T and AV
    block += inner.block_extra_flops(cfg, batch_size, S)
    heads = 2 * tokens * d * (cfg.vocab_size + 2)
    calls, grad_calls = inner.block_calls(cfg)
    segment = calls * block + heads
    step = segment + 2 * (grad_calls * block + heads)
    if model.uses_q_continue() and cfg.halt_max_steps > 1:
        step += segment  # bootstrapped Q target: one more forward in no-grad
    return segment, step


# ---------------------------------------------------------------------------------------------
# ACT wrapper


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
        """Decision to stop early: the Q value of halting beats that of continuing (with
        ``no_ACT_continue``: q_halt alone is positive)."""
        if self.config.no_ACT_continue:
            return q_halt_logits > 0
        return q_halt_logits > q_continue_logits

    def halt_logit(self, q_halt_logits: torch.Tensor, q_continue_logits: torch.Tensor) -> torch.Tensor:
        """The halting rule as one logit: positive exactly where ``halt_signal`` fires, so its
        sigmoid is the confidence of the rule the model uses (reported as halt confidence)."""
        if self.config.no_ACT_continue:
            return q_halt_logits
        return q_halt_logits - q_continue_logits

    def uses_q_continue(self) -> bool:
        """Whether training bootstraps a Q target for ``q_continue`` (costs one extra forward)."""
        return not self.config.no_ACT_continue

    def halts_adaptively(self, act_inference: Optional[bool] = None) -> bool:
        """Whether rows may stop before ``halt_max_steps`` in the current mode: in training only,
        so that in evaluation every row of a batch runs the same number of segments.
        ``act_inference`` overrides the config's evaluation switch where a model has one."""
        return self.training

    @contextlib.contextmanager
    def at_depth(self, H_cycles: Optional[int] = None, L_cycles: Optional[int] = None, halt_max_steps: Optional[int] = None):
        """Run at ``H_cycles`` x ``L_cycles`` and at most ``halt_max_steps`` segments per example within
        the block (the training steps of a depth curriculum; None keeps a value), then as configured
        again. ``reason`` and ``forward`` read these config fields as plain ints, so a compiled model
        specialises on them: one graph per depth, none per step."""
        given = {"H_cycles": H_cycles, "L_cycles": L_cycles, "halt_max_steps": halt_max_steps}
        given = {name: value for name, value in given.items() if value is not None}
        configured = {name: getattr(self.config, name) for name in given}
        for name, value in given.items():
            setattr(self.config, name, value)
        try:
            yield
        finally:
            for name, value in configured.items():
                setattr(self.config, name, value)

    def forward(self, carry: ACTCarry, batch: Dict[str, torch.Tensor], halt_max_steps: Optional[int] = None,
                act_inference: Optional[bool] = None) -> Tuple[ACTCarry, Dict[str, torch.Tensor]]:
        """One ACT segment. ``halt_max_steps`` / ``act_inference`` (test-time options) override the
        config's values for this call; the config itself never changes."""
        max_steps = self.config.halt_max_steps if halt_max_steps is None else halt_max_steps
        adaptive = self.halts_adaptively(act_inference)
        # Rows that halted last segment start over on the new batch's example. In an adaptive
        # evaluation a row that already halted (steps > 0) keeps its result until the whole batch is done.
        adaptive_eval = not self.training and adaptive
        reload = carry.halted & (carry.steps == 0) if adaptive_eval else carry.halted
        new_inner_carry = self.inner.reset_carry(reload, carry.inner_carry)
        new_steps = torch.where(reload, 0, carry.steps)
        new_current_data = {k: torch.where(reload.view((-1,) + (1,) * (batch[k].ndim - 1)), batch[k], v)
                            for k, v in carry.current_data.items()}

        new_inner_carry, logits, (q_halt_logits, q_continue_logits) = self.inner(new_inner_carry, new_current_data)

        if adaptive_eval:
            finished = carry.halted & ~reload
            new_inner_carry = map_carry(lambda old, new: torch.where(finished.view(-1, 1, 1), old, new), carry.inner_carry, new_inner_carry)
            logits, (q_halt_logits, q_continue_logits) = self.inner.heads(getattr(new_inner_carry, self.inner.output_latent))
        outputs = {"logits": logits, "q_halt_logits": q_halt_logits, "q_continue_logits": q_continue_logits}

        with torch.no_grad():
            new_steps = new_steps + 1
            is_last_step = new_steps >= max_steps
            halted = is_last_step

            if adaptive and max_steps > 1:
                halted = halted | self.halt_signal(q_halt_logits, q_continue_logits)

            if self.training and adaptive and max_steps > 1:
                # Exploration: some rows get a random minimum number of segments.
                min_halt_steps = (torch.rand_like(q_halt_logits) < self.config.halt_exploration_prob) * \
                    torch.randint_like(new_steps, low=2, high=max_steps + 1)
                halted = halted & (new_steps >= min_halt_steps)

                if self.uses_q_continue():
                    # Bootstrapped target from the next segment (no replay buffer).
                    _, _, (next_q_halt_logits, next_q_continue_logits) = self.inner(new_inner_carry, new_current_data)
                    outputs["target_q_continue"] = torch.sigmoid(
                        torch.where(is_last_step, next_q_halt_logits, torch.maximum(next_q_halt_logits, next_q_continue_logits)))

            if adaptive_eval:
                new_steps = torch.where(finished, carry.steps, new_steps)
                halted = halted | finished
                outputs["actual_steps"] = new_steps

        return ACTCarry(new_inner_carry, new_steps, halted, new_current_data), outputs
