"""The README's demo (`make demo`): offline, from a fresh clone, in a few minutes on a laptop CPU.

1. generates 4x4 Sudoku puzzles with a unique solution (test puzzles never appear in training),
2. trains HRM on them with `pretrain.py` (progress bars; the GPU when there is one),
3. evaluates the final checkpoint with `evaluate.py`,
4. prints a few held-out puzzles with the model's answer next to the truth,
5. solves with `predict.py` a held-out puzzle the model gets right after changing its answer over
   the ACT segments, and draws its reasoning steps; then, labelled as such, one it gets wrong.

Everything goes to ./demo_run. The commands it runs are printed so you can run them yourself.
A rerun trains into a new checkpoint folder beside the last one (``hrm-sudoku-4x4-2``, ...): the
demo deletes nothing. One demo at a time per folder (a second one is refused).
"""
import argparse
import os
import shlex
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch

from training.runs import RunFolderLock
from utils.cli import ArgumentParser
from utils.outputs import load_outputs

# Chosen to reach >= 90% exact accuracy on the held-out puzzles in a few minutes on 2 CPU cores.
# Training runs eager (compile=false): the demo must run on machines without the C++ compiler that
# torch.compile needs on a CPU (compiling the reasoning modules would save about a minute of its
# training, and compiling the whole model costs more than it saves; docs/performance.md "Compiling on a CPU").
DEMO_ARCH = ["arch.hidden_size=64", "arch.num_heads=2", "arch.H_layers=2", "arch.L_layers=2", "arch.H_cycles=2",
             "arch.L_cycles=2", "arch.halt_max_steps=4", "arch.forward_dtype=float32"]


def run(cmd, env=None):
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    result = subprocess.run(cmd, cwd=REPO, env=env)
    if result.returncode != 0:
        sys.exit(f"demo: command failed with exit code {result.returncode}")


def next_run_folder(base: str) -> str:
    """``base``, or when it exists ``base-2``, ``base-3``, ...: the first name not taken."""
    folder, n = base, 1
    while os.path.lexists(folder):
        n += 1
        folder = f"{base}-{n}"
    return folder


def show_grid_rows(grid: np.ndarray, n: int):
    return [" ".join("." if v == 0 else str(v) for v in grid[r * n:(r + 1) * n]) for r in range(n)]


def main():
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(REPO, "demo_run"), help="working folder (default ./demo_run)")
    parser.add_argument("--train", type=int, default=20000, help="generated training puzzles")
    parser.add_argument("--test", type=int, default=1000, help="generated held-out puzzles")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--show", type=int, default=4, help="test puzzles to print")
    parser.add_argument("--quick", action="store_true", help="half the training (4 epochs): about 70%% instead of 95%% solved")
    args = parser.parse_args()
    args.epochs = 4 if args.quick else args.epochs
    # Checked before any work: a bad value would otherwise fail minutes later, in a sub-command.
    for name, least in (("train", 1), ("test", 1), ("epochs", 2), ("show", 0)):
        if getattr(args, name) < least:
            parser.error(f"--{name} must be at least {least}, got {getattr(args, name)}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out}: a file is in the way; give a folder")

    # Held for the whole demo: a second demo into the same folder would build the same data and
    # pick the same new checkpoint folder.
    lock = RunFolderLock(args.out, option="--out")
    try:
        warning = lock.acquire()
    except ValueError as e:
        print(f"demo: {e}", file=sys.stderr)
        sys.exit(2)
    if warning:
        print(warning)
    try:
        demo(args)
    finally:
        lock.release()


def demo(args: argparse.Namespace) -> None:
    start = time.time()
    data = os.path.join(args.out, "data", "sudoku-4x4")
    # pretrain.py never writes into another run's folder: a rerun trains beside the previous one
    ckpt = next_run_folder(os.path.join(args.out, "checkpoints", "hrm-sudoku-4x4"))
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "disabled")  # the demo needs no account; unset to log
    if "OMP_NUM_THREADS" not in env:  # torch takes every core; on a busy machine fewer threads ran 4x faster
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = str(max(1, min(cores, cores - round(os.getloadavg()[0]))))
        print(f"torch threads: {env['OMP_NUM_THREADS']} ({cores} cores, load {os.getloadavg()[0]:.1f}; set OMP_NUM_THREADS to choose)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"HRM demo on {device}: 4x4 Sudoku, {args.train} training and {args.test} held-out puzzles")

    if not os.path.isdir(data):
        run([sys.executable, "dataset/build_sudoku_dataset.py", "--generate", str(args.train), "--generate-test", str(args.test),
             "--grid", "4", "--output-dir", data], env)

    print(f"training into {ckpt}")
    run([sys.executable, "pretrain.py", f"data_path={data}", "evaluators=[]", f"epochs={args.epochs}", f"eval_interval={args.epochs // 2}",
         "global_batch_size=256", "lr=2e-3", "puzzle_emb_lr=1e-2", "lr_warmup_steps=30", "weight_decay=0.1",
         *DEMO_ARCH, "compile=false", f"checkpoint_path={ckpt}", "+run_name=demo"], env)

    steps = sorted(int(f.split("_")[1]) for f in os.listdir(ckpt) if f.startswith("step_") and f.split("_")[1].isdigit())
    checkpoint = os.path.join(ckpt, f"step_{steps[-1]}")
    run([sys.executable, "evaluate.py", f"checkpoint={checkpoint}", "save_outputs=[inputs,labels,preds]", "trace=true"], env)

    outputs = load_outputs(ckpt, steps[-1])
    inputs, labels, preds, trace = (outputs[k] for k in ("inputs", "labels", "preds", "trace"))
    exact = (preds == labels).all(1)
    n = int(round(inputs.shape[1] ** 0.5))
    print(f"\nHeld-out puzzles solved exactly: {exact.sum()}/{len(exact)} = {exact.mean():.1%}  "
          f"(total time {time.time() - start:.0f}s)\n")
    # tokens: 1 = blank, d + 1 = digit d; shown as digits with '.' for blanks
    for i in np.linspace(0, len(exact) - 1, args.show).astype(int):
        puzzle, answer, truth = (np.where(x == 1, 0, x - 1) if x is inputs[i] else x - 1 for x in (inputs[i], preds[i], labels[i]))
        print(f"test puzzle {i}: {'solved' if exact[i] else 'WRONG'}")
        print(f"  {'puzzle':<{2 * n}}   {'model':<{2 * n}}   truth")
        for a, b, c in zip(show_grid_rows(puzzle, n), show_grid_rows(answer, n), show_grid_rows(truth, n)):
            print(f"  {a}   {b}   {c}")
        print()
    # Puzzles through predict.py, typed in the Sudoku notation with their solution after a comma:
    # a solved one whose answer changes over the segments (the reasoning the picture is about),
    # then, labelled, the first one the model gets wrong.
    changes = (trace[:, 1:] != trace[:, :-1]).any(-1).sum(1)  # segments that changed the answer
    solved = np.flatnonzero(exact)
    shown = []
    if len(solved):
        i = int(solved[np.argmax(changes[solved])])
        shown.append((i, "predict_trace.png", f"solved, its answer changed in {changes[i]} of the {trace.shape[1] - 1} later segments"))
    if (~exact).any():
        shown.append((int(np.flatnonzero(~exact)[0]), "predict_trace_wrong.png", "a puzzle the model got WRONG"))
    for i, name, what in shown:
        text = "".join("." if t == 1 else str(t - 1) for t in inputs[i]) + "," + "".join(str(t - 1) for t in labels[i])
        picture = os.path.join(args.out, name)
        print(f"\nTest puzzle {i}: {what}")
        run([sys.executable, "predict.py", f"checkpoint={checkpoint}", f"puzzle={text}", "task=sudoku", "trace=true",
             f"picture={picture}"], env)
        print(f"Picture of each reasoning step of test puzzle {i} ({what}): {picture}")
    print(f"Checkpoint: {checkpoint}\nEvaluate it again with: python evaluate.py checkpoint={shlex.quote(checkpoint)}")
    print(f"Solve your own puzzle:    python predict.py checkpoint={shlex.quote(checkpoint)} task=sudoku puzzle=1...2...3...4...")


if __name__ == "__main__":
    main()
