"""Building blocks shared by HRM, TRM and URM: casted linear/embedding, RoPE, attention, SwiGLU
(and URM's ConvSwiGLU), RMS norm, the post-norm block and the reasoning module."""
from __future__ import annotations

import functools
import logging
import math
import os
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from models.common import trunc_normal_init_

CosSin = Tuple[torch.Tensor, torch.Tensor]

logger = logging.getLogger(__name__)

ATTENTION_BACKEND_ENV = "HRM_ATTENTION_BACKEND"
ATTENTION_BACKENDS = ("auto", "fa3", "fa2", "sdpa")


def _find_multiple(a: int, b: int) -> int:
    return -(a // -b) * b


def rms_norm(hidden_states: torch.Tensor, variance_epsilon: float) -> torch.Tensor:
    """RMS norm without a learned scale, computed in float32 and cast back."""
    input_dtype = hidden_states.dtype
    hidden_states = hidden_states.to(torch.float32)
    variance = hidden_states.square().mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + variance_epsilon)
    return hidden_states.to(input_dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """``[x1, x2] -> [-x2, x1]`` on the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotate ``q, k`` of shape ``[B, S, heads, head_dim]`` by tables of shape ``[S, head_dim]``.

    Computed in the tables' dtype (float32) for accuracy, then cast back.
    """
    orig_dtype = q.dtype
    q = q.to(cos.dtype)
    k = k.to(cos.dtype)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    q_embed = q * cos + rotate_half(q) * sin
    k_embed = k * cos + rotate_half(k) * sin
    return q_embed.to(orig_dtype), k_embed.to(orig_dtype)


class CastedLinear(nn.Module):
    """Linear layer whose float32 master weights are cast to the input's dtype in forward.

    Weight init: truncated normal with std ``1/sqrt(in_features)`` (LeCun); bias zeros.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(trunc_normal_init_(torch.empty((out_features, in_features)), std=1.0 / math.sqrt(in_features)))
        self.bias = nn.Parameter(torch.zeros((out_features,))) if bias else None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(input.dtype) if self.bias is not None else None
        return F.linear(input, self.weight.to(input.dtype), bias=bias)


class CastedEmbedding(nn.Module):
    """Embedding table kept in float32, looked up in ``cast_to``."""

    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.embedding_weight = nn.Parameter(trunc_normal_init_(torch.empty((num_embeddings, embedding_dim)), std=init_std))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.embedding(input, self.embedding_weight.to(self.cast_to))


class RotaryEmbedding(nn.Module):
    """Rotary position tables ``cos, sin`` of shape ``[max_position_embeddings, dim]``
    in the rotate-half layout (angle table concatenated with itself)."""

    def __init__(self, dim: int, max_position_embeddings: int, base: float, device=None):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))
        positions = torch.arange(max_position_embeddings, dtype=torch.float32, device=device)
        angles = torch.outer(positions, inv_freq)
        table = torch.cat((angles, angles), dim=-1)
        self.cos_cached = nn.Buffer(table.cos(), persistent=False)
        self.sin_cached = nn.Buffer(table.sin(), persistent=False)

    def forward(self) -> CosSin:
        return self.cos_cached, self.sin_cached


# ---------------------------------------------------------------------------------------------
# Attention backends. All take and return [B, S, heads, head_dim] and compute the same
# non-causal softmax attention with scale 1/sqrt(head_dim).

@functools.lru_cache(maxsize=None)
def _import_flash(backend: str):
    try:
        if backend == "fa3":
            from flash_attn_interface import flash_attn_func  # type: ignore[import-not-found]
        else:
            from flash_attn import flash_attn_func  # type: ignore[import-not-found]
        return flash_attn_func
    except Exception:  # ImportError, or a broken CUDA build that fails at import time
        return None


def _requested_backend() -> str:
    requested = os.environ.get(ATTENTION_BACKEND_ENV, "auto").strip().lower() or "auto"
    if requested not in ATTENTION_BACKENDS:
        raise ValueError(f"{ATTENTION_BACKEND_ENV}={requested!r}: expected one of {', '.join(ATTENTION_BACKENDS)}")
    return requested


@functools.lru_cache(maxsize=None)
def select_attention_backend(device_type: str, dtype: torch.dtype, requested: str = "auto") -> str:
    """Pick the attention backend for tensors on ``device_type`` with ``dtype`` and log it once.

    ``auto``: FlashAttention 3, then 2, on CUDA with half precision; otherwise torch SDPA.
    CPU always uses SDPA. A forced flash backend that cannot run is an error, not a silent fallback.
    """
    flash_ok = device_type == "cuda" and dtype in (torch.float16, torch.bfloat16)
    if requested in ("fa3", "fa2"):
        if not flash_ok:
            raise ValueError(f"{ATTENTION_BACKEND_ENV}={requested}: FlashAttention needs CUDA tensors in fp16/bf16, got {device_type} {dtype}")
        if _import_flash(requested) is None:
            package = "flash_attn_interface (FlashAttention 3)" if requested == "fa3" else "flash_attn (FlashAttention 2)"
            raise ValueError(f"{ATTENTION_BACKEND_ENV}={requested}: {package} is not importable")
        backend = requested
    elif requested == "sdpa" or not flash_ok:
        backend = "sdpa"
    else:
        backend = next((b for b in ("fa3", "fa2") if _import_flash(b) is not None), "sdpa")
    logger.info("attention backend for %s/%s: %s (set %s to override)", device_type, str(dtype).replace("torch.", ""), backend, ATTENTION_BACKEND_ENV)
    return backend


@torch._dynamo.assume_constant_result
def current_attention_backend(device_type: str, dtype: torch.dtype) -> str:
    """The backend for these tensors under the current environment.

    A constant for ``torch.compile``: evaluated once while tracing (so the choice is logged and
    the environment read eagerly) instead of being traced into the graph.
    """
    return select_attention_backend(device_type, dtype, _requested_backend())


def _flash_forward(backend: str, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, causal: bool) -> torch.Tensor:
    out = _import_flash(backend)(query, key, value, causal=causal)
    return out[0] if isinstance(out, tuple) else out  # FA3 returns (out, lse) in some versions


# FlashAttention inside torch.compile. Builds of FA3 from before its torch.compile support (and FA2
# before 2.7) call a pybind function that dynamo cannot trace: each of HRM's attention calls would
# break the graph. Under compile the call therefore goes through this custom op, which the graph
# holds as one opaque node. Its backward recomputes the forward with the package's own autograd
# (flash_attn_func is public and stable across versions, its internal backward entry points are
# not); attention is a small part of a step at these sequence lengths.

@torch.library.custom_op("hrm::flash_attention", mutates_args=())
def flash_attention_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, backend: str, causal: bool) -> torch.Tensor:
    """FlashAttention (``backend`` fa3 or fa2) on ``[B, S, heads, head_dim]`` as one torch op."""
    with torch.no_grad():
        return _flash_forward(backend, query, key, value, causal).contiguous()


@flash_attention_op.register_fake
def _(query, key, value, backend, causal):
    return query.new_empty(query.shape)


@torch.library.custom_op("hrm::flash_attention_backward", mutates_args=())
def flash_attention_backward_op(grad_out: torch.Tensor, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, backend: str,
                                causal: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of :func:`flash_attention_op` with respect to query, key and value."""
    # A custom op runs below autograd (its dispatch keys are excluded while compiled code calls
    # it); the recomputation needs them back for this scope.
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for k in (torch._C.DispatchKey.AutogradFunctionality, torch._C.DispatchKey.ADInplaceOrView):
        exclude = exclude.remove(k)
    with torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude), torch.enable_grad():
        inputs = [t.detach().requires_grad_() for t in (query, key, value)]
        out = _flash_forward(backend, *inputs, causal)
        grads = torch.autograd.grad(out, inputs, grad_out)
    return tuple(g.contiguous() for g in grads)  # type: ignore[return-value]


@flash_attention_backward_op.register_fake
def _(grad_out, query, key, value, backend, causal):
    return query.new_empty(query.shape), key.new_empty(key.shape), value.new_empty(value.shape)


def _flash_setup_context(ctx, inputs, output):
    query, key, value, ctx.backend, ctx.causal = inputs
    ctx.save_for_backward(query, key, value)


def _flash_backward(ctx, grad_out):
    grads = flash_attention_backward_op(grad_out, *ctx.saved_tensors, ctx.backend, ctx.causal)
    return (*grads, None, None)


flash_attention_op.register_autograd(_flash_backward, setup_context=_flash_setup_context)


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, causal: bool = False) -> torch.Tensor:
    """Scaled dot-product attention on ``[B, S, heads, head_dim]`` tensors through the selected backend.

    FlashAttention runs directly when eager and through the ``hrm::flash_attention`` custom op under
    ``torch.compile`` (one graph whatever the FlashAttention build).
    """
    backend = current_attention_backend(query.device.type, query.dtype)
    if backend == "sdpa":
        out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), is_causal=causal)
        return out.transpose(1, 2)
    if torch.compiler.is_compiling():
        return flash_attention_op(query, key, value, backend, causal)
    return _flash_forward(backend, query, key, value, causal)


class Attention(nn.Module):
    """Multi-head attention with one fused ``qkv_proj`` (split q | k | v on the head axis)."""

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_key_value_heads: int, causal: bool = False):
        super().__init__()
        self.hidden_size = hidden_size
        self.head_dim = head_dim
        self.output_size = head_dim * num_heads
        self.num_heads = num_heads
        self.num_key_value_heads = num_key_value_heads
        self.causal = causal
        if num_key_value_heads != num_heads:
            raise ValueError(f"num_key_value_heads ({num_key_value_heads}) must equal num_heads ({num_heads}): no grouped-query attention")

        self.qkv_proj = CastedLinear(hidden_size, (num_heads + 2 * num_key_value_heads) * head_dim, bias=False)
        self.o_proj = CastedLinear(self.output_size, hidden_size, bias=False)

    def forward(self, cos_sin: Optional[CosSin], hidden_states: torch.Tensor) -> torch.Tensor:
        batch_size, seq_len, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(batch_size, seq_len, self.num_heads + 2 * self.num_key_value_heads, self.head_dim)
        query, key, value = qkv.split((self.num_heads, self.num_key_value_heads, self.num_key_value_heads), dim=2)
        if cos_sin is not None:
            query, key = apply_rotary_pos_emb(query, key, *cos_sin)
        attn_output = attention(query, key, value, causal=self.causal)
        return self.o_proj(attn_output.reshape(batch_size, seq_len, self.output_size))


class SwiGLU(nn.Module):
    """Gated MLP: ``down(silu(gate) * up)``; width ``round(expansion*hidden*2/3)`` rounded up to 256."""

    def __init__(self, hidden_size: int, expansion: float):
        super().__init__()
        inter = _find_multiple(round(expansion * hidden_size * 2 / 3), 256)
        self.gate_up_proj = CastedLinear(hidden_size, inter * 2, bias=False)
        self.down_proj = CastedLinear(inter, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class ConvSwiGLU(nn.Module):
    """URM's gated MLP: ``down(silu(dwconv(silu(gate) * up)))``, SwiGLU's width.

    ``dwconv`` is a depthwise convolution over the sequence (kernel 2, padding 1, the first
    ``seq_len`` outputs kept, so position ``i`` mixes ``i - 1`` and ``i``). As in URM's code its
    weights are stored and run in bfloat16 whatever the forward dtype, so the down projection
    runs in bfloat16 too and the block adds a bfloat16 result to its residual. They are drawn in
    float32 and then rounded to bfloat16, as URM's ``models/layers.py`` builds them: drawing
    directly in bfloat16 rounds some values differently, so a seed would give other weights.
    """

    kernel_size = 2

    def __init__(self, hidden_size: int, expansion: float):
        super().__init__()
        inter = _find_multiple(round(expansion * hidden_size * 2 / 3), 256)
        self.gate_up_proj = CastedLinear(hidden_size, inter * 2, bias=False)
        self.dwconv = nn.Conv1d(inter, inter, kernel_size=self.kernel_size, padding=self.kernel_size - 1, groups=inter,
                                bias=True, dtype=torch.float32).to(dtype=torch.bfloat16)
        self.down_proj = CastedLinear(inter, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        seq_len = x.shape[1]
        h = (F.silu(gate) * up).transpose(1, 2).to(self.dwconv.weight.dtype)  # [B, inter, S]
        h = F.silu(self.dwconv(h)[..., :seq_len])
        return self.down_proj(h.transpose(1, 2))

    @classmethod
    def conv_flops(cls, hidden_size: int, expansion: float, batch_size: int, seq_len: int) -> int:
        """Forward FLOPs of the convolution (2 per multiply-add, over the ``seq_len + 1`` padded outputs)."""
        inter = _find_multiple(round(expansion * hidden_size * 2 / 3), 256)
        return 2 * batch_size * inter * (seq_len + cls.kernel_size - 1) * cls.kernel_size


class PostNormBlock(nn.Module):
    """``x = rms_norm(x + mix(x)); x = rms_norm(x + mlp(x))``.

    The sequence mixer is self-attention (``self_attn``), or, with ``mlp_t_seq_len`` set (TRM's
    ``mlp_t``), a SwiGLU across the sequence axis (``mlp_t``): the tokens of a channel are mixed
    and the norm runs over the sequence axis, as in the original. ``mlp_class`` builds the channel
    MLP (``SwiGLU``; URM's ``ConvSwiGLU``).
    """

    def __init__(self, hidden_size: int, num_heads: int, expansion: float, rms_norm_eps: float, mlp_t_seq_len: Optional[int] = None,
                 mlp_class: type = SwiGLU):
        super().__init__()
        if mlp_t_seq_len is not None:
            self.mlp_t = SwiGLU(hidden_size=mlp_t_seq_len, expansion=expansion)
        else:
            self.self_attn = Attention(hidden_size=hidden_size, head_dim=hidden_size // num_heads, num_heads=num_heads, num_key_value_heads=num_heads, causal=False)
        self.mlp = mlp_class(hidden_size=hidden_size, expansion=expansion)
        self.norm_eps = rms_norm_eps

    def forward(self, cos_sin: Optional[CosSin], hidden_states: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "mlp_t"):
            hidden_states = hidden_states.transpose(1, 2)
            hidden_states = rms_norm(hidden_states + self.mlp_t(hidden_states), variance_epsilon=self.norm_eps)
            hidden_states = hidden_states.transpose(1, 2)
        else:
            hidden_states = rms_norm(hidden_states + self.self_attn(cos_sin=cos_sin, hidden_states=hidden_states), variance_epsilon=self.norm_eps)
        return rms_norm(hidden_states + self.mlp(hidden_states), variance_epsilon=self.norm_eps)


class ReasoningModule(nn.Module):
    """A stack of blocks applied to ``hidden_states + input_injection`` (or to ``hidden_states`` alone)."""

    def __init__(self, layers: List[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, hidden_states: torch.Tensor, input_injection: Optional[torch.Tensor] = None,
                cos_sin: Optional[CosSin] = None) -> torch.Tensor:
        if input_injection is not None:
            hidden_states = hidden_states + input_injection
        for layer in self.layers:
            hidden_states = layer(cos_sin=cos_sin, hidden_states=hidden_states)
        return hidden_states
