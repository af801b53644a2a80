"""Training and evaluation throughput of HRM / TRM / URM at the Sudoku shapes.

    python scripts/benchmark.py                      # HRM and TRM; GPU if present, else a reduced CPU run
    python scripts/benchmark.py --arch hrm --batch 768 --steps 30 --compile both
    python scripts/benchmark.py --arch all           # every config/arch/*.yaml
    python scripts/benchmark.py --device cpu --preset sudoku --batch 16 --dtype float32
    python scripts/benchmark.py --compile both       # eager vs compiled; CPU: at the demo config
    python scripts/benchmark.py --arch hrm --grad-accum 1,2,4,8    # the same global batch in K micro-batches
    python scripts/benchmark.py --arch urm --optimizer muon        # URM with its Muon optimizer

Presets: ``sudoku`` (default on GPU) is the paper's Sudoku configuration: global batch 768, the
arch yaml as is (hidden 512, HRM 4+4 layers), 9x9 Sudoku shapes, bf16. ``demo`` (default on CPU)
is ``make demo``'s: batch 256, hidden 64, 2 heads, 2+2 layers, 2x2 cycles, 4 ACT segments, 4x4
Sudoku shapes (seq_len 16, vocab 6), float32. ``speedrun`` is the CPU speedrun's shapes (docs/performance.md
"Speedrun"): the demo's model with 8 ACT segments and ``no_ACT_continue``, batch 64, 6x6 Sudoku
(seq_len 36, vocab 8); add ``--optimizer muon`` for the recipe's optimizer.

``--compile both`` times each arch eager and compiled (as ``pretrain.py compile=true`` does it:
the model, and on a CPU the AdamATan2 update when that pays for a run of ``--run-steps``) and
prints per arch the steady-state steps/s, the compile time (train and eval graphs: the extra
time of the first steps) and the break-even run length, then ``compile speedup: X.XX`` (the
geometric mean over the archs of compiled / eager steps/s).

Measures, on random Sudoku-shaped batches of the preset (one puzzle identifier):
training steps/s and examples/s (forward + backward + both optimizers, ACT carry kept), model
FLOPs per training step computed analytically, achieved TFLOP/s, peak memory, and evaluation
examples/s (every example runs halt_max_steps segments).

FLOPs count matmuls only (2 per multiply-add): every segment's forward recursion including the
no-grad cycles, the backward of the 1-step-gradient part (2x its forward), and the extra forward
that computes HRM's Q target; each model file states how many blocks a segment applies
(tests/test_benchmark.py checks the count against torch's FlopCounterMode).
Models: config/arch/<name>.yaml as composed for training (``hrm`` is the TRM repository's name for
hrm_v1: same model and numbers), global batch 768.

``--grad-accum K1,K2,...`` runs pretrain.py's own training step (``train_batch``) with
``gradient_accumulation_steps=K`` at the same global batch, each K in a fresh process, and reports
steps/s, examples/s and peak memory: CUDA peak allocated on a GPU, peak process RSS on a CPU.
"""
import argparse
import glob
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import torch
from omegaconf import OmegaConf

from inference.model import build_model as build_arch_model
from models.act import analytic_flops
from utils.sign_sgd import CastedSparseEmbeddingSignSGD_Distributed
from utils.adam_atan2 import AdamATan2
from utils.cli import ArgumentParser
from utils.muon import Muon, muon_param_groups
from utils.compile import compile_model as compile_model_fn
from utils.compile import should_compile_optimizer
from utils.functions import load_model_class

SEQ_LEN, VOCAB = 81, 11
ARCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config", "arch")


def arch_names():
    """The architectures in ``config/arch`` (file names without ``.yaml``)."""
    return sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(ARCH_DIR, "*.yaml")))


def arch_config(arch, **overrides):
    """``config/arch/<arch>.yaml`` composed as for training (interpolations resolved after ``overrides``)."""
    cfg = OmegaConf.merge(OmegaConf.load(os.path.join(ARCH_DIR, f"{arch}.yaml")), overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def build_model(cfg, batch_size, device, dtype, seq_len=SEQ_LEN, vocab=VOCAB):
    """The model in its loss head for Sudoku-shaped batches, and one random batch on ``device``."""
    sizes = SimpleNamespace(seq_len=seq_len, vocab_size=vocab, num_puzzle_identifiers=1)
    model = build_arch_model(dict(cfg, forward_dtype=dtype), sizes, batch_size, device, check_keys=False)
    gen = torch.Generator().manual_seed(0)
    batch = {"inputs": torch.randint(1, vocab, (batch_size, seq_len), generator=gen, dtype=torch.int32),
             "labels": torch.randint(2, vocab, (batch_size, seq_len), generator=gen, dtype=torch.int32),
             "puzzle_identifiers": torch.zeros(batch_size, dtype=torch.int32)}
    return model, {k: v.to(device) for k, v in batch.items()}


def model_flops(cfg, batch, seq_len=SEQ_LEN, vocab=VOCAB):
    """``(forward FLOPs of one ACT segment, FLOPs of one training step)``: the model's own analytic
    count (``models.act.analytic_flops``, from its ``block_calls``), built without memory on the meta device."""
    model_cfg = {k: v for k, v in cfg.items() if k not in ("name", "loss")}
    model_cfg.update(batch_size=batch, seq_len=seq_len, vocab_size=vocab, num_puzzle_identifiers=1)
    with torch.device("meta"):
        model = load_model_class(cfg["name"])(model_cfg)
    return analytic_flops(model, batch)


def peak_memory(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB -> GiB (process RSS)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


# make demo's model (scripts/demo.py DEMO_ARCH); only keys an arch yaml has are applied (URM: loops, num_layers).
DEMO_OVERRIDES = dict(hidden_size=64, num_heads=2, H_layers=2, L_layers=2, num_layers=2, H_cycles=2, L_cycles=2, halt_max_steps=4, loops=4)
PRESETS = {"sudoku": dict(batch=768, seq_len=SEQ_LEN, vocab=VOCAB, dtype="bfloat16", overrides={}),
           "demo": dict(batch=256, seq_len=16, vocab=6, dtype="float32", overrides=DEMO_OVERRIDES),
           # The CPU speedrun's (config/experiment/speedrun_sudoku6x6.yaml): 6x6 Sudoku, batch 64, 8 ACT segments.
           "speedrun": dict(batch=64, seq_len=36, vocab=8, dtype="float32",
                            overrides=dict(DEMO_OVERRIDES, halt_max_steps=8, no_ACT_continue=True))}


def preset_config(arch, args):
    base = arch_config(arch)
    # no_ACT_continue is a field of every model's config, though only TRM's yaml names it.
    overrides = {k: v for k, v in args.overrides.items()
                 if (k in base or k == "no_ACT_continue") and not (k == "H_layers" and base.get(k) == 0)}
    if args.hidden:
        overrides["hidden_size"] = args.hidden
    return arch_config(arch, **overrides)


def bench(arch, args, device, compile_model):
    cfg = preset_config(arch, args)
    torch.manual_seed(0)
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model, batch = build_model(cfg, args.batch, device, args.dtype, seq_len=args.seq_len, vocab=args.vocab)
    n_params = sum(p.numel() for p in model.parameters())
    compile_optimizer = should_compile_optimizer(compile_model, device, n_params, args.run_steps)
    if args.optimizer == "muon":
        weights_optimizer = Muon(muon_param_groups(model.parameters()), lr=1e-4, weight_decay=0.1, adamw_betas=(0.9, 0.95))
        compile_optimizer = False
    else:
        weights_optimizer = AdamATan2(model.parameters(), lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95), compiled=compile_optimizer)
    optimizers = [CastedSparseEmbeddingSignSGD_Distributed(model.model.puzzle_emb.buffers(), world_size=1, lr=1e-4, weight_decay=0.1),
                  weights_optimizer]
    runner = compile_model_fn(model) if compile_model else model
    graphs_before = torch._dynamo.utils.counters["stats"]["unique_graphs"]

    def train_step(carry):
        carry, loss, _, _, _ = runner(carry=carry, batch=batch, return_keys=[])
        ((1 / args.batch) * loss).backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad()
        return carry

    model.train()
    carry = model.initial_carry(batch)
    t_compile = time.perf_counter()
    for _ in range(args.warmup):
        carry = train_step(carry)
    sync(device)
    warmup_s = time.perf_counter() - t_compile
    t0 = time.perf_counter()
    for _ in range(args.steps):
        carry = train_step(carry)
    sync(device)
    train_s = (time.perf_counter() - t0) / args.steps

    model.eval()
    segments = model.model.config.halt_max_steps  # URM's arch config calls it loops
    with torch.inference_mode():
        def eval_batch():
            c = model.initial_carry(batch)
            for _ in range(segments):
                c, *_ = runner(carry=c, batch=batch, return_keys=["preds"])
        t0 = time.perf_counter()
        eval_batch()
        sync(device)
        first_eval_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.eval_batches):
            eval_batch()
        sync(device)
        eval_s = (time.perf_counter() - t0) / args.eval_batches

    segment, step = model_flops(cfg, args.batch, seq_len=args.seq_len, vocab=args.vocab)
    # Compilation happens in the first train step(s) and the first eval batch: their extra time.
    compile_s = max(0.0, warmup_s - args.warmup * train_s) + max(0.0, first_eval_s - eval_s)
    return {
        "arch": arch, "device": str(device), "dtype": args.dtype, "compile": compile_model, "optimizer": args.optimizer,
        "optimizer_compiled": compile_optimizer,
        "preset": args.preset, "batch": args.batch, "hidden": cfg["hidden_size"], "params_M": round(n_params / 1e6, 2),
        "warmup_s": round(warmup_s, 1), "compile_s": round(compile_s, 1) if compile_model else 0.0,
        "graphs": torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs_before,
        "train_steps_per_s": round(1 / train_s, 3), "train_examples_per_s": round(args.batch / train_s, 1),
        "train_GFLOP_per_step": round(step / 1e9, 1), "train_TFLOP_per_s": round(step / train_s / 1e12, 3),
        "eval_examples_per_s": round(args.batch / eval_s, 1),
        "eval_TFLOP_per_s": round(segment * segments / eval_s / 1e12, 3),
        "peak_memory_GiB": round(peak_memory(device), 2),
    }


def bench_grad_accum(arch, args, device, compile_model, k):
    """Training throughput and peak memory of pretrain.py's ``train_batch`` with K micro-batches."""
    from dataset.common import PuzzleDatasetMetadata
    from training.config import PretrainConfig
    from training.state import init_train_state, train_batch

    cfg = preset_config(arch, args)
    cfg["forward_dtype"] = args.dtype
    steps = args.warmup + args.steps
    config = PretrainConfig(arch=cfg, data_path="unused", global_batch_size=args.batch, epochs=1, lr=1e-4, lr_min_ratio=1.0,
                            lr_warmup_steps=0, weight_decay=0.1, beta1=0.9, beta2=0.95, puzzle_emb_lr=1e-2, puzzle_emb_weight_decay=0.1,
                            gradient_accumulation_steps=k, compile=compile_model, optimizer=args.optimizer)
    metadata = PuzzleDatasetMetadata(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=args.vocab, seq_len=args.seq_len,
                                     num_puzzle_identifiers=1, total_groups=args.batch * (steps + 1), mean_puzzle_examples=1.0, sets=["all"])
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    state = init_train_state(config, metadata, world_size=1, device=device)
    _, batch = build_model(cfg, args.batch, "cpu", args.dtype, seq_len=args.seq_len, vocab=args.vocab)  # only its random batch (train_batch moves it to the device)
    state.model.train()
    for _ in range(args.warmup):
        train_batch(config, state, batch, args.batch, rank=0, world_size=1, log=False)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        train_batch(config, state, batch, args.batch, rank=0, world_size=1, log=False)
    sync(device)
    step_s = (time.perf_counter() - t0) / args.steps
    return {"arch": arch, "device": str(device), "preset": args.preset, "dtype": args.dtype, "compile": compile_model, "hidden": cfg["hidden_size"],
            "global_batch": args.batch, "grad_accum": k, "micro_batch": args.batch // k,
            "train_steps_per_s": round(1 / step_s, 3), "train_examples_per_s": round(args.batch / step_s, 1),
            "peak_memory_GiB": round(peak_memory(device), 3)}


def run_grad_accum(args, arch, compile_model):
    """One fresh process per K, so that each peak (RSS on CPU) belongs to that K alone."""
    results = []
    for k in args.grad_accum:
        if k < 1 or args.batch % k:
            raise SystemExit(f"error: --grad-accum {k} does not divide the global batch --batch {args.batch}")
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "r.json")
            cmd = [sys.executable, os.path.abspath(__file__), "--one-grad-accum", str(k), "--arch", arch, "--device", args.device,
                   "--preset", args.preset,
                   "--batch", str(args.batch), "--dtype", args.dtype, "--steps", str(args.steps), "--warmup", str(args.warmup),
                   "--compile", "on" if compile_model else "off", "--optimizer", args.optimizer, "--json", out] + (["--hidden", str(args.hidden)] if args.hidden else [])
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            with open(out) as f:
                r = json.load(f)[0]
        print(json.dumps(r), flush=True)
        results.append(r)
    print("\n| K | micro-batch | steps/s | examples/s | peak memory (GiB) |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['grad_accum']} | {r['micro_batch']} | {r['train_steps_per_s']} | {r['train_examples_per_s']} | {r['peak_memory_GiB']} |")
    return results


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["both", "all"] + arch_names(), default="both",
                        help="a config/arch name; both: hrm_v1 and trm; all: every config/arch/*.yaml")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="sudoku (default on GPU), demo (default on CPU) or speedrun (6x6, the CPU speedrun's model)")
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: the preset's, 768 or 256)")
    parser.add_argument("--hidden", type=int, default=None, help="hidden size (default 512, the Sudoku config)")
    parser.add_argument("--dtype", default=None, help="forward dtype (default: the preset's; bfloat16 is slow on most CPUs)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps (default 20 on GPU, 3 on CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3 on GPU, 1 on CPU)")
    parser.add_argument("--eval-batches", type=int, default=None)
    parser.add_argument("--optimizer", choices=["adam_atan2", "muon"], default="adam_atan2",
                        help="the weights' optimizer, as pretrain.py optimizer=... (muon: URM's)")
    parser.add_argument("--compile", choices=["auto", "on", "off", "both"], default="auto", help="auto: on for CUDA, off on CPU; both: eager and compiled")
    parser.add_argument("--run-steps", type=int, default=625, help="run length assumed when deciding to compile the optimizer (default: the demo's 625)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--grad-accum", type=lambda v: [int(x) for x in v.split(",")], default=None,
                        help="comma-separated micro-batch counts K (e.g. 1,2,4,8): pretrain.py's training step at the same global batch")
    parser.add_argument("--one-grad-accum", type=int, default=None, help=argparse.SUPPRESS)  # one K, in this process
    args = parser.parse_args()

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.preset = args.preset or ("sudoku" if gpu else "demo")
    preset = PRESETS[args.preset]
    args.batch = args.batch or preset["batch"]
    args.dtype = args.dtype or preset["dtype"]
    args.seq_len, args.vocab, args.overrides = preset["seq_len"], preset["vocab"], preset["overrides"]
    small = args.preset in ("demo", "speedrun")
    args.steps = args.steps or (20 if gpu or small else 3)
    args.eval_batches = args.eval_batches or (5 if gpu or small else 1)
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu or small else 1)
    modes = {"auto": [gpu], "on": [True], "off": [False], "both": [False, True]}[args.compile]
    print(f"torch {torch.__version__}, device {device}" + (f" ({torch.cuda.get_device_name()})" if gpu else f", {torch.get_num_threads()} threads"))

    results = []
    archs = {"both": ["hrm_v1", "trm"], "all": arch_names()}.get(args.arch, [args.arch])
    for arch in archs:
        for compile_model in modes:
            if args.one_grad_accum is not None:
                results.append(bench_grad_accum(arch, args, device, compile_model, args.one_grad_accum))
            elif args.grad_accum is not None:
                results.extend(run_grad_accum(args, arch, compile_model))
            else:
                r = bench(arch, args, device, compile_model)
                results.append(r)
                print(json.dumps(r))
    if len(modes) == 2 and args.grad_accum is None and args.one_grad_accum is None:
        print_compile_summary(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


def print_compile_summary(results):
    """Per arch: eager and compiled steps/s, compile time, break-even; then the overall speedup."""
    speedups = []
    for eager, compiled in zip(results[::2], results[1::2]):
        e, c = eager["train_steps_per_s"], compiled["train_steps_per_s"]
        saved_per_step = 1 / e - 1 / c
        break_even = f"{compiled['compile_s'] / saved_per_step:.0f} steps" if saved_per_step > 0 else "never"
        speedups.append(c / e)
        print(f"{eager['arch']}: eager {e:.2f} steps/s, compiled {c:.2f} steps/s ({c / e:.2f}x), "
              f"compile {compiled['compile_s']:.0f} s ({compiled['graphs']} graphs), break-even {break_even}")
    print(f"compile speedup: {math.prod(speedups) ** (1 / len(speedups)):.2f}")


if __name__ == "__main__":
    main()
