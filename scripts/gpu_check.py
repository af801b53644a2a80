"""GPU readiness check (``make gpu-check``): run before a long job on a new machine.

    python scripts/gpu_check.py [--out gpu_check_report.md] [--peak-tflops 989]

1. the CUDA-marked tests (``pytest -m cuda``): attention backends FA3/FA2/SDPA agree in bf16,
   compiled == eager in bf16, two NCCL processes train the same weights as one (2+ GPUs);
2. ``scripts/benchmark.py`` at the paper's Sudoku configuration (global batch 768, hidden 512,
   HRM 4+4 layers, TRM 2 layers) for HRM and TRM, eager and compiled: steps/s, compile time,
   peak memory and model FLOP utilisation (MFU) against the device's dense bf16 peak.

Everything goes into one Markdown report. Without an NVIDIA GPU it says so in one line and
exits 0. Exit status 1 when a test fails or a benchmark does not run.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets; matched as
# substrings of torch.cuda.get_device_name(), most specific first.
BF16_PEAK_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("H800", 989.0), ("GH200", 989.0),
                    ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
                    ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("V100", 125.0)]


def bf16_peak(device_name: str):
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in device_name), None)


def run(cmd, log):
    """Run ``cmd`` from the repository root; its output goes to the console and into ``log``."""
    log.append(f"$ {' '.join(cmd)}")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    print(proc.stdout[-20000:], end="")
    print(proc.stderr[-5000:], end="", file=sys.stderr)
    log.append(proc.stdout.rstrip())
    if proc.returncode != 0:
        log.append(proc.stderr.rstrip()[-5000:])
    return proc.returncode


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check_report.md", help="report file (default gpu_check_report.md)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, when it is not in the built-in table")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per benchmark run")
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print("gpu-check: no NVIDIA GPU available to torch (torch.cuda.is_available() is False); nothing to check")
        return 0

    name = torch.cuda.get_device_name()
    peak = args.peak_tflops or bf16_peak(name)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"# GPU check, {started}", "",
             f"- device: {name} x{torch.cuda.device_count()}, torch {torch.__version__}, CUDA {torch.version.cuda}",
             f"- bf16 peak used for MFU: {f'{peak:g} TFLOP/s' if peak else 'unknown (pass --peak-tflops)'}", ""]

    test_log = []
    tests_rc = run([sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-q", "-rs", "tests"], test_log)
    lines += ["## CUDA tests", "", f"result: {'passed' if tests_rc == 0 else 'FAILED'}", "", "```", *test_log, "```", ""]

    bench_log, results, bench_rc = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("hrm_v1", "trm"):
            out = os.path.join(tmp, f"{arch}.json")
            rc = run([sys.executable, "scripts/benchmark.py", "--arch", arch, "--preset", "sudoku", "--compile", "both",
                      "--steps", str(args.steps), "--json", out], bench_log)
            bench_rc = bench_rc or rc
            if rc == 0:
                with open(out) as f:
                    results += json.load(f)
    lines += ["## Training throughput (Sudoku config: global batch 768, hidden 512, bf16)", "",
              "| arch | compiled | steps/s | examples/s | TFLOP/s | MFU | compile s | peak memory GiB | eval examples/s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        mfu = f"{100 * r['train_TFLOP_per_s'] / peak:.1f}%" if peak else "n/a"
        lines.append(f"| {r['arch']} | {'yes' if r['compile'] else 'no'} | {r['train_steps_per_s']} | {r['train_examples_per_s']} | "
                     f"{r['train_TFLOP_per_s']} | {mfu} | {r['compile_s']} | {r['peak_memory_GiB']} | {r['eval_examples_per_s']} |")
    lines += ["", "```", *bench_log, "```", ""]

    ok = tests_rc == 0 and bench_rc == 0
    lines.insert(1, f"\n**{'ready' if ok else 'NOT ready: see the failures below'}**")
    tmp_out = args.out + ".tmp"
    with open(tmp_out, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp_out, args.out)
    print(f"gpu-check: {'ready' if ok else 'FAILED'}; report written to {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
