"""GPU readiness check (``make gpu-check``): one call on a new GPU machine, one report.

    python scripts/gpu_check.py [--out gpu_check_report.md] [--bundle .gpu_bundle] [--budget-s 480]

Steps, each with its own time limit and a PASS / FAIL / SKIP line, the report rewritten after each
one (a run killed half-way leaves everything before it):

1. ``--bundle DIR`` (a machine without network, ``make gpu-bundle`` made it): install its wheels
   with no index into ``DIR/site``; its reference fixtures stand in for ``../shared/reference``.
2. environment: device, torch and CUDA, the attention backend eager and under ``torch.compile``
   (FlashAttention runs through the ``hrm::flash_attention`` custom op there), the AdamATan2 kernel
   or the built-in fallback.
3. the CUDA tests (``pytest -m cuda`` on the files that hold them), in the background during
   step 4: attention backends agree in bf16, forward and backward, eager and compiled; compiled
   equals eager; the reference fixtures replayed on CUDA; deterministic sparse-embedding sums;
   AdamATan2's step count placement; NCCL with 2+ GPUs.
4. ``pretrain.py`` under ``torchrun --nproc-per-node 1`` on generated 9x9 Sudoku: bf16, compiled,
   EMA, evaluation, checkpoints; then the same run stopped by SIGTERM and continued with
   ``resume=``, compared with the uninterrupted one; ``evaluate.py`` and ``predict.py`` on its
   checkpoint.
5. ``scripts/benchmark.py`` at the paper's Sudoku configuration (global batch 768, hidden 512,
   bf16), HRM and TRM, eager then compiled: steps/s, peak memory, MFU, compile time; compiled
   runs must be two graphs (train, eval), the eval graph being the only recompilation.

Exit status 0 when every step that ran passed, 1 otherwise. Without an NVIDIA GPU it says so and
exits 0; with a GPU that torch cannot use (a CPU build of torch) it exits 1 with one line.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) from the vendors' data sheets; matched as
# substrings of torch.cuda.get_device_name(), most specific first.
BF16_PEAK_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("H800", 989.0), ("GH200", 989.0),
                    ("B200", 2250.0), ("A100", 312.0), ("A800", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0),
                    ("A10G", 70.0), ("A10", 125.0), ("RTX 4090", 165.0), ("RTX 3090", 71.0), ("V100", 125.0)]

# The files that hold the CUDA-marked tests: collecting only these keeps a missing dev-only
# package (selenium, ...) from failing the collection.
CUDA_TEST_FILES = ["tests/test_cuda.py", "tests/test_reference_fixtures.py"]

# The training run of step 4: a small HRM on 9x9 Sudoku (seq_len 81), so that compiling takes
# seconds, with every feature of a real run on.
TRAIN_ARGS = ["arch=hrm_v1", "arch.hidden_size=128", "arch.num_heads=2", "arch.H_layers=1", "arch.L_layers=1", "arch.H_cycles=2",
              "arch.L_cycles=1", "arch.halt_max_steps=4", "arch.forward_dtype=bfloat16", "global_batch_size=64", "epochs=6",
              "eval_interval=3", "lr=1e-3", "lr_warmup_steps=4", "ema=true", "compile=true", "evaluators=[]", "checkpoint_interval_steps=8"]
TRAIN_PUZZLES, TEST_PUZZLES = 384, 64  # 6 steps per epoch at batch 64: 36 steps
# The resumed run against the uninterrupted one: relative L2 distance of all weights. Not bit-exact on
# a GPU (bf16, order-dependent kernels such as the attention backward, and ACT halting decisions
# that such noise can flip); a wrong data position or RNG state moves the weights much further.
RESUME_TOLERANCE = 0.1


def bf16_peak(device_name: str) -> Optional[float]:
    return next((peak for key, peak in BF16_PEAK_TFLOPS if key in device_name), None)


def nvidia_smi_gpus() -> List[str]:
    """The GPUs ``nvidia-smi -L`` lists (empty without the tool or a driver)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        proc = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("GPU ")] if proc.returncode == 0 else []


def cuda_problem(gpus: List[str]) -> Optional[str]:
    """One line when the machine has an NVIDIA GPU that this torch cannot use, else None."""
    try:
        import torch
    except ImportError:
        return f"gpu-check: error: torch is not importable by {sys.executable}; run it with the Python that has torch"
    if not gpus or torch.cuda.is_available():
        return None
    why = "it is a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}, torch.cuda.is_available() is False"
    return (f"gpu-check: error: nvidia-smi lists {len(gpus)} GPU(s) ({gpus[0]}) but torch {torch.__version__} cannot use them "
            f"({why}); install a CUDA build of torch (docs/gpu-check.md)")


# ---------------------------------------------------------------------------------------------
# The report: rewritten after every step


class Report:
    def __init__(self, path: str, log_path: str, budget_s: float):
        self.path, self.log_path = path, log_path
        self.started = time.monotonic()
        self.deadline = self.started + budget_s
        self.header: List[str] = [f"# GPU check, {time.strftime('%Y-%m-%d %H:%M:%S')}", ""]
        self.results: List[Tuple[str, str, float, str]] = []  # (status, name, seconds, one-line summary)
        self.sections: List[str] = []
        with open(self.log_path, "w") as f:
            f.write(f"gpu-check log, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")

    def log(self, text: str) -> None:
        with open(self.log_path, "a") as f:
            f.write(text.rstrip() + "\n")

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def failed(self) -> bool:
        return any(status == "FAIL" for status, *_ in self.results)

    def write(self, running: Optional[str] = None) -> None:
        done = f"{len(self.results)} step(s) done in {time.monotonic() - self.started:.0f} s"
        if running:
            state = f"**in progress** ({done}; now: {running})"
        else:
            state = f"**{'NOT ready: see the FAIL lines' if self.failed() else 'ready'}** ({done})"
        lines = [*self.header, state, "", "| result | step | seconds | summary |", "|---|---|---|---|"]
        lines += [f"| {status} | {name} | {secs:.0f} | {summary} |" for status, name, secs, summary in self.results]
        text = "\n".join(lines + [""] + self.sections) + "\n"
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.path)

    def step(self, name: str, fn: Callable[[float], Tuple[bool, str]], timeout_s: float, min_s: float = 20) -> bool:
        """Run ``fn(time limit)`` -> ``(passed, summary)``; record and print PASS / FAIL / SKIP."""
        limit = min(timeout_s, self.left_s())
        if limit < min_s:
            self._record("SKIP", name, 0.0, f"out of the time budget ({max(self.left_s(), 0):.0f} s left)")
            return False
        self.write(running=name)
        self.log(f"\n===== {name} (limit {limit:.0f} s)")
        started = time.monotonic()
        try:
            passed, summary = fn(limit)
        except StepTimeout as e:
            passed, summary = False, f"timed out after {limit:.0f} s: {e}"
        except Exception as e:  # a check's own failure is a FAIL line, never a lost report
            passed, summary = False, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        self._record("PASS" if passed else "FAIL", name, time.monotonic() - started, summary)
        return passed

    def _record(self, status: str, name: str, secs: float, summary: str) -> None:
        summary = summary.replace("|", "/").replace("\n", " ")
        self.results.append((status, name, secs, summary))
        print(f"{status} {name} ({secs:.0f} s): {summary}", flush=True)
        self.log(f"{status} {name} ({secs:.0f} s): {summary}")
        self.write()


class StepTimeout(Exception):
    pass


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it. torchrun starts its workers in sessions of their
    own, so killing the launcher's process group would leave them running (and holding our pipes)."""
    children: dict = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def run(cmd: List[str], report: Report, timeout_s: float, env: Optional[dict] = None, cwd: str = REPO) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group, killed whole at ``timeout_s``; output into the log."""
    report.log("$ " + " ".join(cmd))
    proc = subprocess.Popen(cmd, cwd=cwd, env=env or os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:  # something still holds the pipes: give up on the output
            out, err = "", ""
        report.log(out[-20000:] + "\n" + err[-20000:])
        raise StepTimeout(" ".join(cmd[1:4]))
    report.log(out[-20000:] + ("\n--- stderr\n" + err[-20000:] if err.strip() else ""))
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


class Background:
    """A command started now and joined later as a step (its output in files: no pipe to fill)."""

    def __init__(self, cmd: List[str], report: Report, folder: str, name: str = "bg", env: Optional[dict] = None):
        self.cmd, self.report, self.started = cmd, report, time.monotonic()
        self.out_path, self.err_path = os.path.join(folder, f"{name}.out"), os.path.join(folder, f"{name}.err")
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env or os.environ.copy(), stdout=out, stderr=err, text=True,
                                         start_new_session=True)

    def join(self, limit_s: float) -> subprocess.CompletedProcess:
        """Wait until ``limit_s`` seconds after the start; kill the process group then."""
        try:
            self.proc.wait(timeout=max(1.0, self.started + limit_s - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_tree(self.proc.pid)
            self.proc.wait()
        out, err = open(self.out_path).read(), open(self.err_path).read()
        self.report.log("$ " + " ".join(self.cmd) + f"   (started {time.monotonic() - self.started:.0f} s ago)\n" + out[-20000:]
                        + ("\n--- stderr\n" + err[-20000:] if err.strip() else ""))
        if self.proc.returncode == -signal.SIGKILL:
            raise StepTimeout(" ".join(self.cmd[1:4]))
        return subprocess.CompletedProcess(self.cmd, self.proc.returncode, out, err)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


# ---------------------------------------------------------------------------------------------
# The steps


def install_step(bundle: str, report: Report):
    def step(limit):
        sys.path.insert(0, REPO)
        from scripts.gpu_bundle import install_bundle
        site = os.path.join(bundle, "site")
        wheels = install_bundle(bundle, site)
        sys.path.insert(0, site)
        os.environ["PYTHONPATH"] = os.pathsep.join([site, REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        reference = os.path.join(bundle, "reference")
        if os.path.isdir(reference) and not os.path.isdir(os.path.join(REPO, "..", "shared", "reference")):
            os.environ["HRM_REFERENCE_DIR"] = os.path.abspath(reference)
        return True, f"{len(wheels)} wheels into {site}" + (", reference fixtures from the bundle" if "HRM_REFERENCE_DIR" in os.environ else "")
    return step


def environment_step(report: Report, peak: Optional[float]):
    def step(limit):
        import torch

        from models.layers import _import_flash, select_attention_backend
        from utils.adam_atan2 import _cuda_backend
        name = torch.cuda.get_device_name()
        eager = select_attention_backend("cuda", torch.bfloat16, os.environ.get("HRM_ATTENTION_BACKEND", "auto").strip().lower() or "auto")
        compiled = "hrm::flash_attention custom op" if eager != "sdpa" else "sdpa"
        flash = ", ".join(f"{b} {'importable' if _import_flash(b) is not None else 'not installed'}" for b in ("fa3", "fa2"))
        optimizer = "adam_atan2 CUDA kernel" if _cuda_backend() is not None else "built-in fallback (foreach ops)"
        lines = [f"- device: {name} x{torch.cuda.device_count()}, {torch.cuda.get_device_properties(0).total_memory / 2 ** 30:.0f} GiB; "
                 f"torch {torch.__version__}, CUDA {torch.version.cuda}, Python {sys.version.split()[0]}",
                 f"- attention backend (bf16): eager {eager}; under torch.compile {compiled} ({flash})",
                 f"- AdamATan2: {optimizer}",
                 f"- bf16 peak used for MFU: {f'{peak:g} TFLOP/s' if peak else 'unknown (pass --peak-tflops)'}"]
        report.header += lines + [""]
        return True, f"{name}; attention {eager} (compiled: {compiled}); AdamATan2 {optimizer}"
    return step


CUDA_TESTS_CMD = [sys.executable, "-m", "pytest", "-m", "cuda", "-p", "no:cacheprovider", "-q", "-rs", "-o", "addopts=", *CUDA_TEST_FILES]
CUDA_TESTS_LIMIT_S = 300


def cuda_tests_step(report: Report, tests: Background):
    def step(limit):
        proc = tests.join(CUDA_TESTS_LIMIT_S)
        summary = last_line(proc.stdout)
        report.sections += ["## CUDA tests", "", "```", *proc.stdout.strip().splitlines()[-40:], "```", ""]
        # Every test skipped (torch without CUDA in that process) is no check: at least one must pass.
        return proc.returncode == 0 and re.search(r"\b\d+ passed", summary) is not None, summary
    return step


def dataset_step(report: Report, data: str):
    def step(limit):
        proc = run([sys.executable, "dataset/build_sudoku_dataset.py", "--generate", str(TRAIN_PUZZLES), "--generate-test", str(TEST_PUZZLES),
                    "--grid", "9", "--output-dir", data], report, limit)
        return proc.returncode == 0, f"{TRAIN_PUZZLES} + {TEST_PUZZLES} generated 9x9 puzzles" if proc.returncode == 0 else last_line(proc.stderr)
    return step


def torchrun_cmd(data: str, ck: str, *extra: str) -> List[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "pretrain.py", f"data_path={data}", *TRAIN_ARGS,
            f"checkpoint_path={ck}", "+run_name=gpu-check", *extra]


def train_env() -> dict:
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "4"}


def final_step(ck: str) -> Optional[int]:
    steps = [int(m.group(1)) for f in os.listdir(ck) if (m := re.fullmatch(r"step_(\d+)", f))] if os.path.isdir(ck) else []
    return max(steps) if steps else None


def pretrain_step(report: Report, data: str, ck: str):
    def step(limit):
        started = time.monotonic()
        proc = run(torchrun_cmd(data, ck), report, limit, env=train_env())
        if proc.returncode != 0:
            return False, f"exit {proc.returncode}: {last_line(proc.stderr)}"
        final = final_step(ck)
        evals = [json.loads(line) for line in open(os.path.join(ck, "eval_metrics.jsonl"))] if os.path.exists(os.path.join(ck, "eval_metrics.jsonl")) else []
        if final is None or len(evals) != 2:
            return False, f"expected step_N weights and 2 evaluations, found step {final} and {len(evals)} evaluation(s)"
        accuracy = evals[-1].get("all", {}).get("accuracy")
        return True, f"{final} steps in {time.monotonic() - started:.0f} s (compile included); last eval accuracy {accuracy}"
    return step


def resume_step(report: Report, data: str, ck_full: str, ck: str):
    def step(limit):
        import torch
        deadline = time.monotonic() + limit
        report.log("(the next command gets SIGTERM once a resume state exists)")
        first = Background(torchrun_cmd(data, ck, "checkpoint_interval_steps=4"), report, os.path.dirname(ck), name="sigterm",
                           env=train_env())
        while first.proc.poll() is None and not any(f.endswith(".train_state.pt") for f in (os.listdir(ck) if os.path.isdir(ck) else [])):
            if time.monotonic() > deadline:
                kill_tree(first.proc.pid)
                raise StepTimeout("no resume state appeared")
            time.sleep(0.2)
        first.proc.send_signal(signal.SIGTERM)  # what SLURM / Kubernetes send to the launcher
        stopped_run = first.join(deadline - first.started)
        stopped = re.search(r"stopped by SIGTERM after step (\d+) of (\d+)", stopped_run.stderr)
        if stopped is None:
            return False, f"no 'stopped by SIGTERM' line (exit {stopped_run.returncode}): {last_line(stopped_run.stderr)}"
        at = int(stopped.group(1))
        resume_cmd = torchrun_cmd(data, ck, "checkpoint_interval_steps=4", f"resume={ck}/step_{at}")
        resumed = run(resume_cmd, report, max(5.0, deadline - time.monotonic()), env=train_env())
        if resumed.returncode == 2 and "is in use by another run" in resumed.stderr:  # a data-loader child of the stopped run lingering
            time.sleep(5)
            resumed = run(resume_cmd, report, max(5.0, deadline - time.monotonic()), env=train_env())
        if resumed.returncode != 0:
            return False, f"resume from step {at}: exit {resumed.returncode}: {last_line(resumed.stderr)}"
        final = final_step(ck)
        full = final_step(ck_full)
        if final is None or final != full:
            return False, f"resumed run ended at step {final}, the uninterrupted one at {full}"
        a = torch.load(os.path.join(ck_full, f"step_{full}"), map_location="cpu", weights_only=True)
        b = torch.load(os.path.join(ck, f"step_{final}"), map_location="cpu", weights_only=True)
        flat_a, flat_b = (torch.cat([w[k].double().flatten() for k in sorted(a)]) for w in (a, b))
        l2 = ((flat_a - flat_b).norm() / flat_a.norm()).item()
        worst = max(((a[k].double() - b[k].double()).abs().max() / a[k].double().abs().max().clamp_min(1e-12)).item() for k in a)
        return l2 < RESUME_TOLERANCE, (f"SIGTERM after step {at}, resumed to step {final}; final weights vs the uninterrupted run: "
                                       f"relative L2 distance {l2:.2e} (bound {RESUME_TOLERANCE:g}), worst tensor max relative difference "
                                       f"{worst:.2e}; 0 would be bit-exact")
    return step


def evaluate_step(report: Report, ck: str):
    def step(limit):
        final = final_step(ck)
        if final is None:
            return False, "no checkpoint from the training step"
        proc = run([sys.executable, "evaluate.py", f"checkpoint={ck}/step_{final}"], report, limit, env=train_env())
        if proc.returncode != 0:
            return False, f"exit {proc.returncode}: {last_line(proc.stderr)}"
        found = re.search(r'"exact_accuracy":\s*([-0-9.e]+)', proc.stdout)
        return found is not None, f"step_{final}: exact_accuracy {found.group(1)}" if found else "no exact_accuracy in its output"
    return step


def predict_step(report: Report, ck: str, data: str):
    def step(limit):
        import numpy as np
        final = final_step(ck)
        if final is None:
            return False, "no checkpoint from the training step"
        tokens = np.load(os.path.join(data, "test", "all__inputs.npy"))[0]
        puzzle = "".join("." if t == 1 else str(int(t) - 1) for t in tokens)  # token 1 is a blank cell, 2..10 the digits
        proc = run([sys.executable, "predict.py", f"checkpoint={ck}/step_{final}", f"puzzle={puzzle}"], report, limit, env=train_env())
        return proc.returncode == 0, f"answered {puzzle[:12]}..." if proc.returncode == 0 else f"exit {proc.returncode}: {last_line(proc.stderr)}"
    return step


def benchmark_step(report: Report, arch: str, compiled: bool, steps: int, tmp: str, results: list, peak: Optional[float]):
    def step(limit):
        out = os.path.join(tmp, f"bench_{arch}_{int(compiled)}.json")
        env = {**os.environ, "TORCH_LOGS": "recompiles"} if compiled else None
        proc = run([sys.executable, "scripts/benchmark.py", "--arch", arch, "--preset", "sudoku", "--compile", "on" if compiled else "off",
                    "--steps", str(steps), "--json", out], report, limit, env=env)
        if proc.returncode != 0:
            return False, f"exit {proc.returncode}: {last_line(proc.stderr)}"
        with open(out) as f:
            r = json.load(f)[0]
        r["recompiles"] = len(re.findall(r"Recompiling function", proc.stderr))
        results.append(r)
        write_benchmark_table(report, results, peak)
        mfu = f", MFU {100 * r['train_TFLOP_per_s'] / peak:.1f}%" if peak else ""
        summary = f"{r['train_steps_per_s']} steps/s, {r['train_examples_per_s']} examples/s{mfu}, peak {r['peak_memory_GiB']} GiB"
        if not compiled:
            return True, summary
        # Two graphs, train and eval; dynamo logs the eval graph as the one recompilation of forward.
        ok = r["graphs"] == 2 and r["recompiles"] <= 1
        return ok, summary + (f", compile {r['compile_s']} s, {r['graphs']} graphs (expected 2: train, eval), "
                              f"{r['recompiles']} recompilation(s) (expected at most 1: the eval graph)")
    return step


def write_benchmark_table(report: Report, results: list, peak: Optional[float]) -> None:
    table = ["## Training throughput (Sudoku config: global batch 768, hidden 512, bf16)", "",
             "| arch | compiled | steps/s | examples/s | TFLOP/s | MFU | compile s | graphs | recompilations | peak memory GiB | eval examples/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        mfu = f"{100 * r['train_TFLOP_per_s'] / peak:.1f}%" if peak else "n/a"
        table.append(f"| {r['arch']} | {'yes' if r['compile'] else 'no'} | {r['train_steps_per_s']} | {r['train_examples_per_s']} | "
                     f"{r['train_TFLOP_per_s']} | {mfu} | {r['compile_s']} | {r['graphs'] if r['compile'] else '-'} | "
                     f"{r['recompiles'] if r['compile'] else '-'} | {r['peak_memory_GiB']} | {r['eval_examples_per_s']} |")
    start = next((i for i, line in enumerate(report.sections) if line.startswith("## Training throughput")), None)
    if start is not None:
        del report.sections[start:start + len(table) + 1]
    report.sections += table + [""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check_report.md", help="report file (default gpu_check_report.md); the full log goes to <out>.log")
    parser.add_argument("--bundle", default=None, help="install the wheels of this folder (make gpu-bundle) with no network first")
    parser.add_argument("--budget-s", type=float, default=480, help="stop starting steps after this many seconds (default 480)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, when it is not in the built-in table")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per benchmark run (default 10)")
    args = parser.parse_args()

    gpus = nvidia_smi_gpus()
    problem = cuda_problem(gpus)
    if problem:
        print(problem)
        return 1
    import torch
    if not torch.cuda.is_available():
        print("gpu-check: no NVIDIA GPU here (nvidia-smi lists none, torch sees none); nothing to check")
        return 0

    peak = args.peak_tflops or bf16_peak(torch.cuda.get_device_name())
    report = Report(os.path.abspath(args.out), os.path.abspath(args.out) + ".log", args.budget_s)
    work = tempfile.mkdtemp(prefix="gpu_check_")
    tests: Optional[Background] = None
    data, ck_full, ck_resume = os.path.join(work, "sudoku9"), os.path.join(work, "run"), os.path.join(work, "run_sigterm")
    try:
        if args.bundle:
            if not report.step("install the bundle (no network)", install_step(os.path.abspath(args.bundle), report), 120):
                return 1
        sys.path.insert(0, REPO)
        report.step("environment", environment_step(report, peak), 60, min_s=5)
        # The CUDA tests run beside the training steps (16 cores, one GPU: correctness only, no
        # timings there); the benchmarks below run alone.
        tests = Background(CUDA_TESTS_CMD, report, work, name="cuda_tests")
        if report.step("dataset (9x9 Sudoku, generated)", dataset_step(report, data), 60):
            report.step("pretrain.py: torchrun x1, bf16, compiled, EMA, eval, checkpoints", pretrain_step(report, data, ck_full), 150)
            report.step("pretrain.py: SIGTERM, then resume=", resume_step(report, data, ck_full, ck_resume), 150)
            report.step("evaluate.py on the checkpoint", evaluate_step(report, ck_full), 90)
            report.step("predict.py on the checkpoint", predict_step(report, ck_full, data), 60)
        report.step("CUDA tests (pytest -m cuda)", cuda_tests_step(report, tests), CUDA_TESTS_LIMIT_S, min_s=0)
        results: list = []
        for compiled in (False, True):
            for arch in ("hrm_v1", "trm"):
                report.step(f"benchmark {arch}, {'compiled' if compiled else 'eager'} (Sudoku size)",
                            benchmark_step(report, arch, compiled, args.steps, work, results, peak), 200 if compiled else 90)
    finally:
        if tests is not None and tests.proc.poll() is None:
            kill_tree(tests.proc.pid)
        report.write()
        shutil.rmtree(work, ignore_errors=True)
    print(f"gpu-check: {'FAILED' if report.failed() else 'ready'}; report written to {args.out} (full log {args.out}.log)")
    return 1 if report.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
