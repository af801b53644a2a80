"""scripts/benchmark.py: its analytic FLOP formulas agree with torch's FlopCounterMode on a small
config of every architecture in config/arch (within 5%)."""
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from scripts.benchmark import arch_config, arch_names, build_model, model_flops

# Small enough for a CPU, with no-grad cycles (H_cycles, L_cycles > 1) so every term of the formula counts.
SMALL = dict(hidden_size=64, num_heads=2, H_cycles=2, L_cycles=2, halt_max_steps=2)  # URM reads halt_max_steps as its loops
BATCH = 2


def grouped_conv_backward_flop(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation, transposed, output_padding, groups,
                               output_mask, out_shape=None, **kwargs) -> int:
    """Backward of a (non-transposed) convolution, counting its groups: torch's own formula ignores
    them and counts URM's depthwise convolution (groups = channels) as a dense one, 256x too much."""
    per_output = 2 * math.prod(w_shape[1:])  # multiply-adds per output element: in_channels/groups * kernel
    return math.prod(grad_out_shape) * per_output * (int(output_mask[0]) + int(output_mask[1]))


def counted_flops(fn) -> int:
    # The math SDPA kernel runs as matmuls the counter sees (the CPU flash kernel is not counted).
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: grouped_conv_backward_flop})
    with sdpa_kernel(SDPBackend.MATH), counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("arch", arch_names())
def test_flop_formulas_match_the_flop_counter(arch):
    cfg = arch_config(arch, **SMALL, **{k: 1 for k in ("H_layers", "L_layers", "num_layers") if arch_config(arch).get(k, 0) > 0})
    torch.manual_seed(0)
    model, batch = build_model(cfg, BATCH, "cpu", "float32")
    segment, step = model_flops(cfg, BATCH)

    def train_step():
        _, loss, _, _, _ = model(carry=model.initial_carry(batch), batch=batch, return_keys=[])
        loss.backward()

    def eval_segment():
        with torch.inference_mode():
            model(carry=model.initial_carry(batch), batch=batch, return_keys=[])

    model.train()
    assert counted_flops(train_step) == pytest.approx(step, rel=0.05)
    model.eval()
    assert counted_flops(eval_segment) == pytest.approx(segment, rel=0.05)
