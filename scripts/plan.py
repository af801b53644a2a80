"""What a recipe costs before renting a GPU: steps, FLOPs, memory per GPU and hours on common GPUs.

    python scripts/plan.py trm_sudoku_extreme_mlp                 # a named recipe (config/experiment)
    python scripts/plan.py trm_sudoku_extreme_mlp --gpus 4 --mfu 0.2
    python scripts/plan.py hrm_sudoku_extreme_1k gradient_accumulation_steps=4 arch.hidden_size=256   # any override

Every number is an ESTIMATE from a model of the run, not a measurement on a GPU:

- steps: ``epochs * total_groups * mean_puzzle_examples / global_batch_size`` (the schedule's count,
  as pretrain.py computes it), from the dataset's ``train/dataset.json`` when it is built, else from
  the known sizes of the recipes' Sudoku and maze sets (ARC sets must be built first).
- FLOPs: the model's analytic count per training step (matmuls, 2 per multiply-add, as
  ``scripts/benchmark.py`` reports it) times the steps; evaluations are added when the test split is
  built (every example runs ``halt_max_steps`` segments).
- memory per GPU: parameters, gradients and optimizer states in float32 (AdamATan2: 2 states; Muon:
  1 for 2-D weights, 2 for the rest), the EMA copy, buffers (the puzzle-embedding table), the ACT
  carry, and the activations autograd keeps for the backward of one micro-batch (counted exactly by
  running the model's forward on PyTorch's ``meta`` device, which allocates nothing) times 1.25 for
  the forward's other tensors (measured on a CPU: 1.12-1.32x). Not counted:
  the CUDA context and kernels' workspaces (about 0.5-1 GiB) and allocator fragmentation. The
  activation count is checked against measured CPU peaks (tests/test_plan.py).
- hours: total FLOPs / (GPUs x the vendor's dense BF16 tensor peak x MFU). MFU (the fraction of the
  peak the run achieves) is ``--mfu`` (default 0.1: these models are small — hidden 512, short
  sequences — so kernels are short and launch-bound; measure yours with ``scripts/benchmark.py``
  on the rented GPU and rerun with ``--mfu``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from utils.arch_config import configured_segments
from utils.cli import ArgumentParser
from utils.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 2 ** 30
# Vendors' published dense BF16 tensor-core peaks (TFLOP/s, without sparsity) and memory (GB, 10^9 bytes, as sold).
GPUS = {
    "A100 80GB (SXM)": (312.0, 80),
    "H100 (SXM)": (989.4, 80),
    "H200 (SXM)": (989.4, 141),
    "L40S": (362.1, 48),
    "RTX 4090": (165.2, 24),
}
# A margin over the tensors autograd saves, for the forward's temporaries and an allocator's slack:
# the saved bytes alone match the measured live peak of a CPU step (tests/test_plan.py) within 5% for
# TRM, HRM and URM, while the resident peak under glibc's default allocator reached 1.1-1.6x them.
ACTIVATION_PEAK_FACTOR = 1.25
# Sizes of the recipes' datasets as their builders write them (train split), for planning before building.
KNOWN_TRAIN_SETS = {
    "sudoku-extreme-1k-aug-1000": dict(total_groups=1000, mean_puzzle_examples=1.0, seq_len=81, vocab_size=11, num_puzzle_identifiers=1),
    "maze-30x30-hard-1k": dict(total_groups=1000, mean_puzzle_examples=1.0, seq_len=900, vocab_size=6, num_puzzle_identifiers=1),
}


class PlanError(UserError):
    """A problem with the recipe or overrides given, reported as one line."""


@dataclass
class Memory:
    """Bytes per GPU, by kind."""
    parameters: int
    gradients: int
    optimizer: int
    ema: int
    buffers: int
    carry: int
    activations: int

    @property
    def total(self) -> int:
        return sum(vars(self).values())


def compose_recipe(name: Optional[str], overrides: Sequence[str]) -> Dict[str, Any]:
    """The config ``pretrain.py +experiment=<name> <overrides>`` trains with (as a plain dict)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from utils.arch_config import normalise_arch_overrides

    args = ([f"+experiment={name}"] if name else []) + normalise_arch_overrides(list(overrides))
    try:
        with initialize_config_dir(config_dir=os.path.join(REPO, "config"), version_base=None):
            cfg = compose("cfg_pretrain", overrides=args)
    except HydraException as e:
        raise PlanError(f"{' '.join(args)}: {str(e).splitlines()[0]}") from None
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def train_set_sizes(data_path: str) -> Tuple[Dict[str, Any], Optional[int], str]:
    """(train metadata, test examples or None, where they came from)."""
    meta_path = os.path.join(data_path, "train", "dataset.json")
    if os.path.isfile(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        test_examples = None
        test_path = os.path.join(data_path, "test", "dataset.json")
        if os.path.isfile(test_path):
            with open(test_path) as f:
                test = json.load(f)
            test_examples = round(test["total_groups"] * test["mean_puzzle_examples"])
        return meta, test_examples, meta_path
    known = KNOWN_TRAIN_SETS.get(os.path.basename(os.path.normpath(data_path)))
    if known is None:
        raise PlanError(f"{meta_path}: missing; build the dataset first (python scripts/experiments.py <recipe> prints the command) "
                        "so that its size is known")
    return dict(known), None, f"the builder's known size of {os.path.basename(os.path.normpath(data_path))} (not built here)"


def arch_of(config: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in config["arch"].items()}


def meta_model(arch: Dict[str, Any], meta: Dict[str, Any], batch: int):
    """The model in its loss head on the ``meta`` device (shapes only, no memory), and a batch."""
    from inference.model import build_model

    sizes = SimpleNamespace(seq_len=meta["seq_len"], vocab_size=meta["vocab_size"], num_puzzle_identifiers=meta["num_puzzle_identifiers"])
    with torch.device("meta"):
        model = build_model(dict(arch), sizes, batch, "meta", check_keys=False)
        batch_tensors = {"inputs": torch.ones(batch, meta["seq_len"], dtype=torch.int32),
                         "labels": torch.ones(batch, meta["seq_len"], dtype=torch.int32),
                         "puzzle_identifiers": torch.zeros(batch, dtype=torch.int32)}
    return model, batch_tensors


def saved_activation_bytes(model, batch: Dict[str, torch.Tensor]) -> Tuple[int, int]:
    """(bytes autograd keeps for the backward of one training segment, bytes of the ACT carry),
    counted on the model's forward: every tensor saved for backward, once per tensor."""
    seen: Dict[int, int] = {}
    kept = []

    def pack(t: torch.Tensor):
        if id(t) not in seen:
            seen[id(t)] = t.numel() * t.element_size()
            kept.append(t)  # keeps ids unique while counting
        return t

    model.train()
    carry = model.initial_carry(batch)
    carry_bytes = sum(t.numel() * t.element_size() for t in _tensors(carry))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(carry=carry, batch=batch, return_keys=[])
    # Parameters (and their casts kept by the graph) are counted under parameters, not activations.
    params = {id(p) for p in model.parameters()}
    return sum(v for k, v in seen.items() if k not in params), carry_bytes


def _tensors(obj) -> List[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    if hasattr(obj, "__dict__"):
        return [t for v in vars(obj).values() for t in _tensors(v)]
    return []


def memory_model(arch: Dict[str, Any], meta: Dict[str, Any], micro_batch: int, optimizer: str, ema: bool) -> Memory:
    """Bytes one GPU holds at the peak of a training step with ``micro_batch`` rows per forward."""
    model, batch = meta_model(arch, meta, micro_batch)
    params = [p for p in model.parameters()]
    n = sum(p.numel() for p in params)
    if optimizer == "muon":
        states = sum(p.numel() * (1 if p.ndim == 2 else 2) for p in params)
    else:
        states = 2 * n
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    activations, carry = saved_activation_bytes(model, batch)
    return Memory(parameters=4 * n, gradients=4 * n, optimizer=4 * states, ema=4 * n if ema else 0, buffers=buffers,
                  carry=carry, activations=int(ACTIVATION_PEAK_FACTOR * activations))


def plan(name: Optional[str], overrides: Sequence[str], gpus: int = 1, mfu: float = 0.1) -> Dict[str, Any]:
    """Every estimate for a recipe, as a dict (what :func:`report` prints)."""
    from scripts.benchmark import model_flops
    from training.config import parse_config
    from utils.config import ConfigError

    if gpus < 1:
        raise PlanError(f"--gpus {gpus}: expected at least 1")
    if not 0 < mfu <= 1:
        raise PlanError(f"--mfu {mfu}: expected a fraction in (0, 1]")
    raw = compose_recipe(name, overrides)
    try:
        config = parse_config(raw)
    except (ConfigError, ValueError) as e:
        raise PlanError(str(e).splitlines()[0]) from None
    meta, test_examples, sizes_from = train_set_sizes(config.data_paths[0])
    if len(config.data_paths) > 1:
        raise PlanError("data_paths: several training sets; plan one at a time")
    steps = int(config.epochs * meta["total_groups"] * meta["mean_puzzle_examples"] / config.global_batch_size)
    arch = arch_of(raw)
    arch_cfg = {k: v for k, v in arch.items()}
    segment, step_flops = model_flops(arch_cfg, config.global_batch_size, seq_len=meta["seq_len"], vocab=meta["vocab_size"])
    train_flops = steps * step_flops
    evaluations = config.epochs // config.eval_interval if config.eval_interval else 1
    halt_max_steps = configured_segments(arch)
    eval_flops = None
    if test_examples is not None and config.evaluators is not None:
        per_example = segment / config.global_batch_size
        examples = min(test_examples, config.eval_max_examples or test_examples)
        eval_flops = int(evaluations * examples * halt_max_steps * per_example)
    accumulation = config.gradient_accumulation_steps
    if config.global_batch_size % (gpus * accumulation):
        raise PlanError(f"global_batch_size={config.global_batch_size} does not split into {gpus} GPU(s) x "
                        f"gradient_accumulation_steps={accumulation}")
    micro = config.global_batch_size // (gpus * accumulation)
    memory = memory_model(arch, meta, micro, config.optimizer, config.ema)
    total_flops = train_flops + (eval_flops or 0)
    hours = {gpu: total_flops / (gpus * peak * 1e12 * mfu) / 3600 for gpu, (peak, _) in GPUS.items()}
    return dict(recipe=name or "(overrides only)", arch=raw["arch"]["name"], data_path=config.data_paths[0], sizes_from=sizes_from,
                train_groups=meta["total_groups"], epochs=config.epochs, global_batch=config.global_batch_size, steps=steps,
                step_flops=step_flops, train_flops=train_flops, eval_flops=eval_flops, evaluations=evaluations,
                test_examples=test_examples, total_flops=total_flops, gpus=gpus, accumulation=accumulation, micro_batch=micro,
                memory=memory, mfu=mfu, hours=hours, forward_dtype=arch.get("forward_dtype", "bfloat16"))


def _flops(x: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
        if x >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} FLOP"


def report(p: Dict[str, Any]) -> str:
    """The plan as text, every figure labelled an estimate."""
    m: Memory = p["memory"]
    lines = [f"ESTIMATES for {p['recipe']} ({p['arch'].split('@')[-1]}, {p['arch'].split('@')[0]}), not measurements on a GPU",
             f"  data:        {p['data_path']}: {p['train_groups']} training groups ({p['sizes_from']})",
             f"  steps:       {p['steps']:,} ({p['epochs']:,} epochs at global batch {p['global_batch']})",
             f"  FLOPs:       {_flops(p['step_flops'])} per step, {_flops(p['train_flops'])} training"
             + (f" + {_flops(p['eval_flops'])} for {p['evaluations']} evaluation(s) of {p['test_examples']:,} test examples"
                if p["eval_flops"] is not None else " (evaluations not counted: test split not built here)"),
             f"  memory/GPU:  {m.total / GIB:.2f} GiB at micro-batch {p['micro_batch']} ({p['gpus']} GPU(s) x "
             f"gradient_accumulation_steps={p['accumulation']}, forward in {p['forward_dtype']}):",
             f"               parameters {m.parameters / GIB:.3f}, gradients {m.gradients / GIB:.3f}, optimizer {m.optimizer / GIB:.3f}, "
             f"EMA {m.ema / GIB:.3f}, buffers (puzzle embeddings) {m.buffers / GIB:.3f}, ACT carry {m.carry / GIB:.3f}, "
             f"activations {m.activations / GIB:.2f} GiB (autograd's saved tensors x {ACTIVATION_PEAK_FACTOR:g})",
             "               (plus the CUDA context and workspaces, about 0.5-1 GiB)",
             f"  time at MFU {p['mfu']:g} (vendors' dense BF16 peaks) on {p['gpus']} GPU(s):"]
    for gpu, hours in p["hours"].items():
        peak, capacity = GPUS[gpu]
        fits = m.total + GIB <= capacity * 1e9  # with a GiB for the CUDA context
        advice = "" if fits else f"; does not fit {capacity} GB: raise gradient_accumulation_steps"
        lines.append(f"    {gpu:<18} {peak:>6.0f} TFLOP/s  {hours:8.1f} h{advice}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    from scripts.experiments import experiment_names

    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="a named recipe (python scripts/experiments.py lists them)")
    p.add_argument("overrides", nargs="*", help="pretrain.py overrides applied after the recipe (key=value)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs sharing the global batch (default 1)")
    p.add_argument("--mfu", type=float, default=0.1, help="fraction of the GPU's peak the run achieves (default 0.1)")
    args = p.parse_args(argv)
    if args.recipe not in experiment_names():
        print(f"error: no recipe {args.recipe!r}; known: {', '.join(experiment_names())}", file=sys.stderr)
        sys.exit(2)
    try:
        print(report(plan(args.recipe, args.overrides, args.gpus, args.mfu)))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
