"""Time one AdamATan2 step against torch.optim.AdamW on the HRM Sudoku model's parameters.

    python scripts/benchmark_optim.py [--device cpu|cuda] [--repeats 10]

The parameters are those of HRM at the Sudoku shapes (hidden 512, 4+4 layers, 8 heads,
vocab 11, seq_len 81, ~27M parameters). On CPU AdamATan2 (foreach, and ``compiled=True``: its
atan2 update fused by torch.compile, same numbers) is compared with ``AdamW(foreach=True)``, on
CUDA with ``AdamW(fused=True)``. Prints milliseconds per step (median of ``--repeats``, after
warm-up steps that include compilation) and the ratios.
"""
import argparse
import os
import statistics
import time


import torch

from models.hrm.hrm_act_v1 import HierarchicalReasoningModel_ACTV1
from utils.adam_atan2 import AdamATan2
from utils.cli import ArgumentParser

HRM_SUDOKU = dict(batch_size=768, seq_len=81, puzzle_emb_ndim=512, num_puzzle_identifiers=1, vocab_size=11,
                  H_cycles=2, L_cycles=2, H_layers=4, L_layers=4, hidden_size=512, expansion=4, num_heads=8,
                  pos_encodings="rope", halt_max_steps=16, halt_exploration_prob=0.1, forward_dtype="bfloat16")


def time_optimizer(make_opt, params, repeats, device):
    opt = make_opt(params)
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt.step()  # state allocation and warm-up (compilation for the compiled variant)
    opt.step()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = HierarchicalReasoningModel_ACTV1(HRM_SUDOKU).to(args.device)
    params = [p for p in model.parameters()]
    n = sum(p.numel() for p in params)
    print(f"device {args.device}, {len(params)} tensors, {n / 1e6:.1f}M parameters, torch {torch.__version__}, threads {torch.get_num_threads()}")

    kw = dict(lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    candidates = {
        "AdamATan2": lambda ps: AdamATan2(ps, **kw),
        "AdamW(foreach=True)": lambda ps: torch.optim.AdamW(ps, foreach=True, **kw),
    }
    if args.device == "cuda":
        candidates["AdamW(fused=True)"] = lambda ps: torch.optim.AdamW(ps, fused=True, **kw)
    else:
        candidates["AdamATan2(compiled)"] = lambda ps: AdamATan2(ps, compiled=True, **kw)

    results = {}
    for name, make in candidates.items():
        copies = [p.detach().clone().requires_grad_(True) for p in params]
        results[name] = time_optimizer(make, copies, args.repeats, args.device)
        print(f"{name:22s} {results[name]:8.2f} ms/step")
    base = "AdamW(fused=True)" if args.device == "cuda" else "AdamW(foreach=True)"
    for name in ("AdamATan2", "AdamATan2(compiled)"):
        if name in results:
            print(f"{name} / {base}: {results[name] / results[base]:.2f}x")


if __name__ == "__main__":
    main()
