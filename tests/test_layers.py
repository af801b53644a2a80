"""Building blocks checked against independent float64 computations."""
import math

import pytest
import torch
from torch import nn

from models.common import trunc_normal_init_
from models.layers import (ATTENTION_BACKEND_ENV, Attention, CastedLinear, ConvSwiGLU, PostNormBlock, RotaryEmbedding, SwiGLU,
                           apply_rotary_pos_emb, attention, rms_norm, select_attention_backend)


def test_trunc_normal_std_and_bounds():
    torch.manual_seed(0)
    for std in (1.0, 0.02, 1 / math.sqrt(512)):
        x = trunc_normal_init_(torch.empty(1_000_000), std=std)
        assert abs(x.std().item() / std - 1) < 0.02, f"std {x.std().item()} vs requested {std}"
        assert abs(x.mean().item()) < 0.01 * std
        # Truncated at two of the *underlying* normal's std, which is larger than `std`.
        underlying = std / math.sqrt(1 - 2 * 2 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(2 / math.sqrt(2)))
        assert x.abs().max().item() <= 2 * underlying * (1 + 1e-6)
        assert x.abs().max().item() > 1.9 * underlying  # the tails do reach the cut


def test_trunc_normal_zero_std_gives_zeros():
    x = trunc_normal_init_(torch.full((10, 10), 3.0), std=0)
    assert torch.count_nonzero(x) == 0


def test_rms_norm_matches_float64():
    torch.manual_seed(0)
    x = torch.randn(4, 7, 32) * 3 + 1
    expected = x.double() / torch.sqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(rms_norm(x, 1e-5).double(), expected, rtol=1e-6, atol=1e-6)
    # bf16 input: computed in float32 and cast back, so the output dtype is preserved
    out = rms_norm(x.bfloat16(), 1e-5)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), expected, rtol=1e-2, atol=1e-2)


def test_rope_matches_float64_rotation():
    torch.manual_seed(0)
    B, S, H, D, base = 2, 9, 3, 8, 10000.0
    q, k = torch.randn(B, S, H, D), torch.randn(B, S, H, D)
    cos, sin = RotaryEmbedding(dim=D, max_position_embeddings=S, base=base)()
    q_rot, k_rot = apply_rotary_pos_emb(q, k, cos, sin)

    # Independent: rotate each pair (x_i, x_{i+D/2}) by angle pos * base^(-2i/D).
    def rotate(x):
        x = x.double()
        out = torch.empty_like(x)
        half = D // 2
        for i in range(half):
            theta = torch.arange(S, dtype=torch.float64) * base ** (-2 * i / D)
            c, s = torch.cos(theta)[None, :, None], torch.sin(theta)[None, :, None]
            out[..., i] = x[..., i] * c - x[..., i + half] * s
            out[..., i + half] = x[..., i + half] * c + x[..., i] * s
        return out

    torch.testing.assert_close(q_rot.double(), rotate(q), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(k_rot.double(), rotate(k), rtol=1e-5, atol=1e-5)
    assert not RotaryEmbedding(dim=D, max_position_embeddings=S, base=base).state_dict(), "tables must not be saved"


def test_attention_matches_float64_softmax():
    torch.manual_seed(0)
    B, S, H, D = 2, 10, 4, 16
    attn = Attention(hidden_size=H * D, head_dim=D, num_heads=H, num_key_value_heads=H)
    x = torch.randn(B, S, H * D)
    cos_sin = RotaryEmbedding(dim=D, max_position_embeddings=S, base=10000.0)()
    out = attn(cos_sin=cos_sin, hidden_states=x)

    qkv = (x.double() @ attn.qkv_proj.weight.double().T).view(B, S, 3 * H, D)
    q, k, v = qkv[:, :, :H], qkv[:, :, H:2 * H], qkv[:, :, 2 * H:]
    q, k = apply_rotary_pos_emb(q, k, cos_sin[0].double(), cos_sin[1].double())
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(D)
    ctx = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(B, S, H * D)
    expected = ctx @ attn.o_proj.weight.double().T
    torch.testing.assert_close(out.double(), expected, rtol=1e-4, atol=1e-5)


def test_attention_backend_selection(monkeypatch):
    assert select_attention_backend("cpu", torch.bfloat16, "auto") == "sdpa"
    assert select_attention_backend("cuda", torch.float32, "auto") == "sdpa"  # flash needs half precision
    with pytest.raises(ValueError, match="FlashAttention needs CUDA"):
        select_attention_backend("cpu", torch.bfloat16, "fa2")
    monkeypatch.setenv(ATTENTION_BACKEND_ENV, "magic")
    with pytest.raises(ValueError, match=f"{ATTENTION_BACKEND_ENV}='magic'"):
        attention(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))
    monkeypatch.setenv(ATTENTION_BACKEND_ENV, "sdpa")
    assert attention(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4), torch.ones(1, 2, 1, 4)).eq(1).all()


def _stand_in_flash(q, k, v, causal=False):
    """flash_attn_func's signature and layout, computed by SDPA: a stand-in for FlashAttention on a CPU."""
    return torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                            is_causal=causal).transpose(1, 2)


def test_flash_attention_is_one_graph_node_under_compile(monkeypatch):
    """Under torch.compile a FlashAttention backend goes through the hrm::flash_attention custom op:
    one graph with forward and backward equal to the eager call (an opaque FA build would break it)."""
    import models.layers as layers
    from torch._dynamo.testing import CompileCounterWithBackend

    monkeypatch.setattr(layers, "_import_flash", lambda backend: _stand_in_flash)
    monkeypatch.setattr(layers, "current_attention_backend", lambda device_type, dtype: "fa2")
    torch.manual_seed(0)
    qkv = [torch.randn(2, 9, 3, 8, requires_grad=True) for _ in range(3)]
    torch.library.opcheck(layers.flash_attention_op, (*qkv, "fa2", False))

    def two_layers(q, k, v):
        return attention(attention(q, k, v), k, v, causal=True).square().sum()

    expected = two_layers(*qkv)
    expected_grads = torch.autograd.grad(expected, qkv)
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    got = torch.compile(two_layers, backend=counter, fullgraph=True)(*qkv)
    got_grads = torch.autograd.grad(got, qkv)
    assert counter.frame_count == 1
    assert str(counter.graphs[0].code).count("hrm.flash_attention") == 2
    torch.testing.assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e)


def test_swiglu_width_and_function():
    mlp = SwiGLU(hidden_size=512, expansion=4)
    # round(4 * 512 * 2/3) = 1365 -> next multiple of 256 = 1536
    assert tuple(mlp.gate_up_proj.weight.shape) == (2 * 1536, 512)
    assert tuple(mlp.down_proj.weight.shape) == (512, 1536)
    x = torch.randn(3, 512)
    gate, up = (x.double() @ mlp.gate_up_proj.weight.double().T).chunk(2, -1)
    expected = (gate * torch.sigmoid(gate) * up) @ mlp.down_proj.weight.double().T
    torch.testing.assert_close(mlp(x).double(), expected, rtol=1e-4, atol=1e-5)


def test_conv_swiglu_convolution_is_drawn_in_float32_then_cast_to_bfloat16():
    """URM's ConvSwiGLU builds its depthwise convolution in float32 and casts it to bfloat16: the
    same seed gives the same bfloat16 weights, and the weights drawn after it are unchanged."""
    inter = 1536  # SwiGLU's width at hidden 512, expansion 4

    def draw(conv_dtype):
        torch.manual_seed(3)
        gate_up = CastedLinear(512, 2 * inter, bias=False)
        conv = nn.Conv1d(inter, inter, kernel_size=2, padding=1, groups=inter, dtype=conv_dtype)
        return gate_up, conv, CastedLinear(inter, 512, bias=False)

    torch.manual_seed(3)
    mlp = ConvSwiGLU(hidden_size=512, expansion=4)
    gate_up, conv, down = draw(torch.float32)
    assert mlp.dwconv.weight.dtype == mlp.dwconv.bias.dtype == torch.bfloat16
    assert torch.equal(mlp.dwconv.weight, conv.weight.to(torch.bfloat16)) and torch.equal(mlp.dwconv.bias, conv.bias.to(torch.bfloat16))
    assert torch.equal(mlp.gate_up_proj.weight, gate_up.weight) and torch.equal(mlp.down_proj.weight, down.weight)
    # Drawn directly in bfloat16, some of the 3072 values round the other way: the check above tells the two apart.
    _, direct, _ = draw(torch.bfloat16)
    assert not torch.equal(direct.weight, mlp.dwconv.weight)


def test_casted_linear_init_and_cast():
    torch.manual_seed(0)
    lin = CastedLinear(1024, 256, bias=True)
    assert abs(lin.weight.std().item() * math.sqrt(1024) - 1) < 0.02  # LeCun std 1/sqrt(in)
    assert torch.count_nonzero(lin.bias) == 0
    assert lin.weight.dtype == torch.float32
    assert lin(torch.randn(2, 1024, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_mlp_t_block_mixes_along_sequence():
    torch.manual_seed(0)
    S, D = 12, 32
    block = PostNormBlock(hidden_size=D, num_heads=4, expansion=2, rms_norm_eps=1e-5, mlp_t_seq_len=S)
    assert not hasattr(block, "self_attn") and tuple(block.mlp_t.gate_up_proj.weight.shape)[1] == S
    x = torch.randn(2, S, D)
    y = block(cos_sin=None, hidden_states=x)
    assert y.shape == x.shape
    # Changing one token changes the outputs at other positions (mixing across the sequence).
    x2 = x.clone()
    x2[:, 0] += 1
    assert not torch.allclose(block(cos_sin=None, hidden_states=x2)[:, 5], y[:, 5])
