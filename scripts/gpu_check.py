"""GPU readiness check (``make gpu-check``): one call on a new GPU machine, one report.

    python scripts/gpu_check.py [--out gpu_check_report.md] [--bundle .gpu_bundle] [--budget-s 540] [--dry-run]

Steps, each with its own time limit and a PASS / FAIL / SKIP line with its start and duration,
the report rewritten after each one (a run killed half-way leaves everything before it).
``--dry-run`` prints the planned timeline (the estimates in ``PLAN``) and whether it fits the budget.

1. ``--bundle DIR`` (a machine without network, ``make gpu-bundle`` made it): install its wheels
   with no index into ``DIR/site``; its reference fixtures stand in for ``../shared/reference``.
2. environment: device, torch and CUDA, the attention backend eager and under ``torch.compile``
   (FlashAttention runs through the ``hrm::flash_attention`` custom op there), the AdamATan2 kernel
   or the built-in fallback.
3. In the background, started first: the cold compiles of the Sudoku-size benchmarks (HRM and
   TRM, side by side, into a compile cache of their own: ~100-180 s each) and the CUDA tests
   (``pytest -m cuda``: attention backends agree in bf16, eager and compiled; compiled equals
   eager; the reference fixtures replayed on CUDA; sparse-embedding sums; NCCL with 2+ GPUs).
4. Meanwhile ``pretrain.py`` under ``torchrun --nproc-per-node 1`` on generated 9x9 Sudoku (bf16,
   compiled, EMA, evaluation, checkpoints), twice side by side: the second run measures how far
   two uninterrupted runs drift apart on this device. Then a run stopped by SIGTERM (compiled
   with one compile thread, so no compile worker is in the signalled process group) and continued
   with ``resume=``: its per-step ``lm_loss`` after the resume point and its final raw (non-EMA)
   weights must be as close to the uninterrupted run as the two uninterrupted runs are to each
   other; a control resume from a deliberately broken state (flipped halting flags of the ACT
   carry) must not be, or the check cannot tell a broken resume from noise and says so.
   ``evaluate.py`` and ``predict.py`` on the checkpoint.
5. ``scripts/benchmark.py`` at the paper's Sudoku configuration (global batch 768, hidden 512,
   bf16), alone on the GPU: HRM and TRM compiled (from the warmed cache; the cold compile time
   comes from step 3), then eager: steps/s, peak memory, MFU; compiled runs must be two graphs
   (train, eval), the eval graph being the only recompilation.

Exit status 0 when every step that ran passed, 1 otherwise. Without an NVIDIA GPU it says so and
exits 0; with a GPU that torch cannot use (a CPU build of torch) it exits 1 with one line.
``--only resume`` runs steps 4's training and resume checks alone, also on a CPU (a small float32
model, eager), and ``--break-resume`` breaks the resumed run's restore the way the control does:
the resume line must then say FAIL.
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

# The training runs of step 4: a small HRM on 9x9 Sudoku (seq_len 81), so that compiling takes
# seconds, with every feature of a real run on; every step's metrics in train_metrics.jsonl.
TRAIN_ARGS = ["arch=hrm_v1", "arch.hidden_size=128", "arch.num_heads=2", "arch.H_layers=1", "arch.L_layers=1", "arch.H_cycles=2",
              "arch.L_cycles=1", "arch.halt_max_steps=4", "arch.forward_dtype=bfloat16", "global_batch_size=64", "epochs=6",
              "eval_interval=3", "lr=1e-3", "lr_warmup_steps=4", "ema=true", "compile=true", "evaluators=[]", "checkpoint_interval_steps=4",
              "train_metrics_interval=1"]
# --only resume without a GPU: the same run, small and eager in float32 (seconds on a laptop CPU).
CPU_TRAIN_ARGS = ["arch.hidden_size=32", "arch.forward_dtype=float32", "compile=false", "global_batch_size=16"]
TRAIN_PUZZLES, TEST_PUZZLES = 384, 64  # 6 steps per epoch at batch 64: 36 steps
CPU_TRAIN_PUZZLES, CPU_TEST_PUZZLES = 48, 16  # 18 steps at batch 16
# The resumed run against the uninterrupted one, per step after the resume point (lm_loss) and at the
# end (raw weights, relative L2): within NOISE_FACTOR x the distance between two uninterrupted runs of
# the same seed on this device (bf16, order-dependent kernels such as atomic adds in backward passes
# and the ACT halting decisions that such noise flips), plus a floor for a device where the two runs
# agree bit for bit (a CPU: then the resumed run must too).
NOISE_FACTOR = 5.0
LOSS_FLOOR, WEIGHT_FLOOR = 1e-6, 1e-6

# The planned timeline: (step, estimate s, limit s). Compile estimates are cold compiles of the
# Sudoku-size train graph (48-56 block forwards) plus the eval graph on a GPU host: 100-180 s each,
# planned at 180; the two run side by side. A warm compile (the cache hit) is planned at 30 s.
BUNDLE_PLAN = ("install the bundle (no network)", 30, 120)
PLAN = [
    ("environment", 5, 60),
    # background, started here:
    ("CUDA tests (pytest -m cuda)", 150, 270),
    ("compile cache: hrm_v1", 180, 300),
    ("compile cache: trm", 180, 300),
    # foreground, meanwhile:
    ("dataset (9x9 Sudoku, generated)", 10, 60),
    ("pretrain.py: torchrun x1, EMA, eval, checkpoints (two runs: their drift is the noise)", 100, 170),
    ("pretrain.py: SIGTERM, then resume= (and a broken-restore control)", 90, 170),
    ("evaluate.py on the checkpoint", 25, 90),
    ("predict.py on the checkpoint", 20, 60),
    # then alone on the GPU, each compiled one after its cache is warm:
    ("benchmark hrm_v1, compiled (Sudoku size)", 60, 150),
    ("benchmark trm, compiled (Sudoku size)", 60, 150),
    ("benchmark hrm_v1, eager (Sudoku size)", 40, 90),
    ("benchmark trm, eager (Sudoku size)", 40, 90),
]
BACKGROUND = ("CUDA tests (pytest -m cuda)", "compile cache: hrm_v1", "compile cache: trm")
DEFAULT_BUDGET_S = 540  # a 10-minute call, with room for start-up and the transfer of the report


def plan_of(name: str) -> Tuple[float, float]:
    """(estimate, limit) of a step of ``PLAN``."""
    return next((est, limit) for n, est, limit in [BUNDLE_PLAN, *PLAN] if n == name)


def planned_timeline(bundle: bool) -> List[Tuple[str, float, float]]:
    """``(step, start, end)`` by the estimates: the background steps run beside the foreground
    ones; a compiled benchmark starts when its cache is warm and the CUDA tests are done."""
    t, rows, ends = 0.0, [], {}
    for name, est, _ in ([BUNDLE_PLAN] if bundle else []) + PLAN:
        if name in BACKGROUND:
            rows.append((name + " [background]", t, t + est))
            ends[name] = t + est
            continue
        start = t
        if name.startswith("benchmark") and "compiled" in name:
            arch = name.split()[1].rstrip(",")
            start = max(t, ends["CUDA tests (pytest -m cuda)"], ends[f"compile cache: {arch}"])
        rows.append((name, start, start + est))
        t = start + est
    return rows


def print_dry_run(bundle: bool, budget_s: float) -> int:
    rows = planned_timeline(bundle)
    total = max(end for _, _, end in rows)
    print(f"gpu-check plan (estimates; budget {budget_s:g} s):")
    for name, start, end in rows:
        print(f"  {start:5.0f} - {end:5.0f} s  {name}")
    fits = total <= budget_s
    print(f"planned end {total:.0f} s: {'fits' if fits else 'does NOT fit'} the budget of {budget_s:g} s")
    return 0 if fits else 1


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
        self.results: List[Tuple[str, str, float, float, str]] = []  # (status, name, start s, seconds, one-line summary)
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
        lines = [*self.header, state, "", "| result | step | start s | seconds | summary |", "|---|---|---|---|---|"]
        lines += [f"| {status} | {name} | {start:.0f} | {secs:.0f} | {summary} |" for status, name, start, secs, summary in self.results]
        text = "\n".join(lines + [""] + self.sections) + "\n"
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.path)

    def step(self, name: str, fn: Callable[[float], Tuple[bool, str]], timeout_s: float, min_s: float = 20) -> bool:
        """Run ``fn(time limit)`` -> ``(passed, summary)``; record and print PASS / FAIL / SKIP."""
        limit = min(timeout_s, self.left_s())
        if limit < min_s:
            self._record("SKIP", name, time.monotonic(), f"out of the time budget ({max(self.left_s(), 0):.0f} s left)", secs=0.0)
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
        self._record("PASS" if passed else "FAIL", name, started, summary)
        return passed

    def _record(self, status: str, name: str, started: float, summary: str, secs: Optional[float] = None) -> None:
        """One result line; ``started`` is a ``time.monotonic()`` reading, shown as seconds since the check began."""
        summary = summary.replace("|", "/").replace("\n", " ")
        secs = time.monotonic() - started if secs is None else secs
        self.results.append((status, name, started - self.started, secs, summary))
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
        self.seconds: Optional[float] = None  # how long it ran, once joined
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
        self.seconds = time.monotonic() - self.started
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


def in_background(report: Report, job: Background) -> str:
    return f"ran {job.seconds:.0f} s in the background from {job.started - report.started:.0f} s"


def cuda_tests_step(report: Report, tests: Background):
    def step(limit):
        proc = tests.join(plan_of("CUDA tests (pytest -m cuda)")[1])
        summary = last_line(proc.stdout)
        report.sections += ["## CUDA tests", "", "```", *proc.stdout.strip().splitlines()[-40:], "```", ""]
        # Every test skipped (torch without CUDA in that process) is no check: at least one must pass.
        return proc.returncode == 0 and re.search(r"\b\d+ passed", summary) is not None, f"{summary}; {in_background(report, tests)}"
    return step


def benchmark_cmd(arch: str, compiled: bool, steps: int, out: str) -> List[str]:
    return [sys.executable, "scripts/benchmark.py", "--arch", arch, "--preset", "sudoku", "--compile", "on" if compiled else "off",
            "--steps", str(steps), "--json", out]


def compile_env(cache: str) -> dict:
    """The benchmarks' compiles share one inductor cache: the cold compile in the background fills
    it, the timed run reads it (``TORCH_LOGS=recompiles`` counts the recompilations)."""
    return {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "TORCH_LOGS": "recompiles"}


def warm_cache_step(report: Report, arch: str, job: Background, cold: dict):
    def step(limit):
        proc = job.join(plan_of(f"compile cache: {arch}")[1])
        if proc.returncode != 0:
            return False, f"exit {proc.returncode}: {last_line(proc.stderr)}; {in_background(report, job)}"
        with open(job.json_path) as f:
            r = json.load(f)[0]
        cold[arch] = r
        return True, f"cold compile {r['compile_s']} s ({r['graphs']} graphs); {in_background(report, job)}"
    return step


def dataset_step(report: Report, data: str, cpu: bool):
    train, test = (CPU_TRAIN_PUZZLES, CPU_TEST_PUZZLES) if cpu else (TRAIN_PUZZLES, TEST_PUZZLES)

    def step(limit):
        proc = run([sys.executable, "dataset/build_sudoku_dataset.py", "--generate", str(train), "--generate-test", str(test),
                    "--grid", "9", "--output-dir", data], report, limit)
        return proc.returncode == 0, f"{train} + {test} generated 9x9 puzzles" if proc.returncode == 0 else last_line(proc.stderr)
    return step


def torchrun_cmd(data: str, ck: str, cpu: bool, *extra: str) -> List[str]:
    # --standalone: a free rendezvous port, so that two runs can go side by side.
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "pretrain.py", f"data_path={data}",
            *TRAIN_ARGS, *(CPU_TRAIN_ARGS if cpu else []), f"checkpoint_path={ck}", "+run_name=gpu-check", *extra]


def train_env(cpu: bool, compile_threads: Optional[int] = None) -> dict:
    # On a CPU the runs go side by side: one thread each.
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1" if cpu else "4"}
    if compile_threads is not None:
        env["TORCHINDUCTOR_COMPILE_THREADS"] = str(compile_threads)
    return env


def final_step(ck: str) -> Optional[int]:
    steps = [int(m.group(1)) for f in os.listdir(ck) if (m := re.fullmatch(r"step_(\d+)", f))] if os.path.isdir(ck) else []
    return max(steps) if steps else None


def pretrain_step(report: Report, data: str, ck: str, ck_twin: str, cpu: bool):
    """The uninterrupted run, and beside it its twin (same seed) that measures the device's run-to-run noise."""
    def step(limit):
        started = time.monotonic()
        twin = Background(torchrun_cmd(data, ck_twin, cpu), report, os.path.dirname(ck_twin), name="twin", env=train_env(cpu))
        proc = run(torchrun_cmd(data, ck, cpu), report, limit, env=train_env(cpu))
        twin_proc = twin.join(limit)
        if proc.returncode != 0:
            return False, f"exit {proc.returncode}: {last_line(proc.stderr)}"
        if twin_proc.returncode != 0:
            return False, f"the second (noise) run: exit {twin_proc.returncode}: {last_line(twin_proc.stderr)}"
        final = final_step(ck)
        evals = [json.loads(line) for line in open(os.path.join(ck, "eval_metrics.jsonl"))] if os.path.exists(os.path.join(ck, "eval_metrics.jsonl")) else []
        if final is None or len(evals) != 2:
            return False, f"expected step_N weights and 2 evaluations, found step {final} and {len(evals)} evaluation(s)"
        accuracy = evals[-1].get("all", {}).get("accuracy")
        return True, f"{final} steps in {time.monotonic() - started:.0f} s (compile included, two runs side by side); last eval accuracy {accuracy}"
    return step


def step_losses(ck: str) -> dict:
    """``{step: train/lm_loss}`` of a run (train_metrics.jsonl holds every step)."""
    path = os.path.join(ck, "train_metrics.jsonl")
    if not os.path.exists(path):
        return {}
    lines = [json.loads(line) for line in open(path) if line.strip()]
    return {line["step"]: line["train/lm_loss"] for line in lines if "train/lm_loss" in line}


def raw_weights(ck: str, step: int) -> dict:
    """The weights the optimizer trains (not the EMA that ``step_N`` holds when ``ema``)."""
    from utils.safe_io import safe_load
    return safe_load(os.path.join(ck, f"step_{step}.train_state.pt"), "resume")["model"]


def break_restore(ck: str, step: int) -> None:
    """A deliberately broken resume state: the ACT carry's halting flags flipped, as a restore that
    mixed up the carry would leave them (rows mid-reasoning start over, halted rows keep stale data)."""
    import torch

    from utils.safe_io import safe_load
    path = os.path.join(ck, f"step_{step}.train_state.rank0.pt")
    state = safe_load(path, "resume")
    for carry in state["carry"] if isinstance(state["carry"], list) else [state["carry"]]:
        carry["halted"] = ~carry["halted"]
    torch.save(state, path)


def distances(full: str, other: str, first: int, last: int) -> Tuple[float, float]:
    """(worst relative lm_loss difference over steps ``first..last``, relative L2 distance of the raw weights at ``last``)."""
    import torch
    a, b = step_losses(full), step_losses(other)
    missing = [s for s in range(first, last + 1) if s not in a or s not in b]
    if missing:
        raise ValueError(f"train_metrics.jsonl lacks the lm_loss of step(s) {missing[:5]} in {full if missing[0] not in a else other}")
    loss = max(abs(b[s] - a[s]) / max(abs(a[s]), 1e-12) for s in range(first, last + 1))
    wa, wb = raw_weights(full, last), raw_weights(other, last)
    flat_a, flat_b = (torch.cat([w[k].double().flatten() for k in sorted(wa)]) for w in (wa, wb))
    return loss, ((flat_a - flat_b).norm() / flat_a.norm()).item()


def resume_step(report: Report, data: str, ck_full: str, ck_twin: str, ck: str, cpu: bool, break_resumed: bool):
    """SIGTERM a run once it has a resume state, resume it, and compare with the uninterrupted run."""
    def step(limit):
        deadline = time.monotonic() + limit
        report.log("(the next command gets SIGTERM once a resume state exists)")
        # One compile thread: inductor compiles in the worker itself, so no compile sidecar sits in the
        # worker's process group, which torchrun signals whole.
        first = Background(torchrun_cmd(data, ck, cpu), report, os.path.dirname(ck), name="sigterm", env=train_env(cpu, compile_threads=1))
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
        control = ck + "_broken"
        shutil.copytree(ck, control)
        break_restore(control, at)
        if break_resumed:
            break_restore(ck, at)
        resume_cmd = torchrun_cmd(data, ck, cpu, f"resume={ck}/step_{at}")
        broken = Background(torchrun_cmd(data, control, cpu, f"resume={control}/step_{at}"), report, os.path.dirname(ck), name="broken",
                            env=train_env(cpu))
        resumed = run(resume_cmd, report, max(5.0, deadline - time.monotonic()), env=train_env(cpu))
        if resumed.returncode == 2 and "is in use by another run" in resumed.stderr:  # a data-loader child of the stopped run lingering
            time.sleep(5)
            resumed = run(resume_cmd, report, max(5.0, deadline - time.monotonic()), env=train_env(cpu))
        broken_run = broken.join(max(5.0, deadline - broken.started))
        if resumed.returncode != 0:
            return False, f"resume from step {at}: exit {resumed.returncode}: {last_line(resumed.stderr)}"
        if broken_run.returncode != 0:
            return False, f"the broken-restore control: exit {broken_run.returncode}: {last_line(broken_run.stderr)}"
        full = final_step(ck_full)
        if final_step(ck) != full or final_step(control) != full:
            return False, f"resumed run ended at step {final_step(ck)} (control {final_step(control)}), the uninterrupted one at {full}"
        noise = distances(ck_full, ck_twin, at + 1, full)
        bound = (NOISE_FACTOR * noise[0] + LOSS_FLOOR, NOISE_FACTOR * noise[1] + WEIGHT_FLOOR)
        got, ctl = distances(ck_full, ck, at + 1, full), distances(ck_full, control, at + 1, full)
        resumed_ok = got[0] <= bound[0] and got[1] <= bound[1]
        control_caught = ctl[0] > bound[0] or ctl[1] > bound[1]
        numbers = (f"SIGTERM after step {at}, resumed to step {full}; vs the uninterrupted run after step {at}: lm_loss worst relative "
                   f"difference {got[0]:.2e}, raw weights relative L2 {got[1]:.2e} (bounds {bound[0]:.2e}, {bound[1]:.2e}: "
                   f"{NOISE_FACTOR:g} x two uninterrupted runs' {noise[0]:.2e}, {noise[1]:.2e}); broken-restore control {ctl[0]:.2e}, {ctl[1]:.2e}")
        if not resumed_ok:
            return False, "the resumed run differs from the uninterrupted one more than noise explains: " + numbers
        if not control_caught:
            return False, "inconclusive: a deliberately broken restore stays within the noise bounds, so this check cannot tell: " + numbers
        return True, numbers
    return step


def evaluate_step(report: Report, ck: str):
    def step(limit):
        final = final_step(ck)
        if final is None:
            return False, "no checkpoint from the training step"
        proc = run([sys.executable, "evaluate.py", f"checkpoint={ck}/step_{final}"], report, limit, env=train_env(False))
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
        proc = run([sys.executable, "predict.py", f"checkpoint={ck}/step_{final}", f"puzzle={puzzle}"], report, limit, env=train_env(False))
        return proc.returncode == 0, f"answered {puzzle[:12]}..." if proc.returncode == 0 else f"exit {proc.returncode}: {last_line(proc.stderr)}"
    return step


def benchmark_step(report: Report, arch: str, compiled: bool, steps: int, tmp: str, results: list, peak: Optional[float],
                   cache: str, cold: dict):
    def step(limit):
        out = os.path.join(tmp, f"bench_{arch}_{int(compiled)}.json")
        proc = run(benchmark_cmd(arch, compiled, steps, out), report, limit, env=compile_env(cache) if compiled else None)
        if proc.returncode != 0:
            return False, f"exit {proc.returncode}: {last_line(proc.stderr)}"
        with open(out) as f:
            r = json.load(f)[0]
        r["recompiles"] = len(re.findall(r"Recompiling function", proc.stderr))
        r["cold_compile_s"] = cold[arch]["compile_s"] if compiled and arch in cold else None
        results.append(r)
        write_benchmark_table(report, results, peak)
        mfu = f", MFU {100 * r['train_TFLOP_per_s'] / peak:.1f}%" if peak else ""
        summary = f"{r['train_steps_per_s']} steps/s, {r['train_examples_per_s']} examples/s{mfu}, peak {r['peak_memory_GiB']} GiB"
        if not compiled:
            return True, summary
        # Two graphs, train and eval; dynamo logs the eval graph as the one recompilation of forward.
        ok = r["graphs"] == 2 and r["recompiles"] <= 1
        cold_s = f"{r['cold_compile_s']} s cold, " if r["cold_compile_s"] is not None else "no warm cache (its cold compile failed), "
        return ok, summary + (f", compile {cold_s}{r['compile_s']} s from the cache, {r['graphs']} graphs (expected 2: train, eval), "
                              f"{r['recompiles']} recompilation(s) (expected at most 1: the eval graph)")
    return step


def compile_cell(r: dict) -> str:
    if not r["compile"]:
        return "-"
    return f"{r['cold_compile_s'] if r.get('cold_compile_s') is not None else '?'} / {r['compile_s']}"


def write_benchmark_table(report: Report, results: list, peak: Optional[float]) -> None:
    table = ["## Training throughput (Sudoku config: global batch 768, hidden 512, bf16)", "",
             "| arch | compiled | steps/s | examples/s | TFLOP/s | MFU | compile s (cold / cached) | graphs | recompilations | peak memory GiB | eval examples/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        mfu = f"{100 * r['train_TFLOP_per_s'] / peak:.1f}%" if peak else "n/a"
        table.append(f"| {r['arch']} | {'yes' if r['compile'] else 'no'} | {r['train_steps_per_s']} | {r['train_examples_per_s']} | "
                     f"{r['train_TFLOP_per_s']} | {mfu} | {compile_cell(r)} | {r['graphs'] if r['compile'] else '-'} | "
                     f"{r['recompiles'] if r['compile'] else '-'} | {r['peak_memory_GiB']} | {r['eval_examples_per_s']} |")
    start = next((i for i, line in enumerate(report.sections) if line.startswith("## Training throughput")), None)
    if start is not None:
        del report.sections[start:start + len(table) + 1]
    report.sections += table + [""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check_report.md", help="report file (default gpu_check_report.md); the full log goes to <out>.log")
    parser.add_argument("--bundle", default=None, help="install the wheels of this folder (make gpu-bundle) with no network first")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"stop starting steps after this many seconds (default {DEFAULT_BUDGET_S})")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, when it is not in the built-in table")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per benchmark run (default 10)")
    parser.add_argument("--dry-run", action="store_true", help="print the planned timeline and whether it fits --budget-s; run nothing")
    parser.add_argument("--only", choices=["resume"], default=None,
                        help="resume: only the training runs and the SIGTERM / resume comparison (on a CPU without a GPU)")
    parser.add_argument("--break-resume", action="store_true",
                        help="break the resumed run's restore (flipped carry halting flags): the resume step must FAIL")
    args = parser.parse_args()
    if args.dry_run:
        return print_dry_run(args.bundle is not None, args.budget_s)

    gpus = nvidia_smi_gpus()
    problem = cuda_problem(gpus)
    if problem:
        print(problem)
        return 1
    import torch
    cpu = not torch.cuda.is_available()
    if cpu and args.only is None:
        print("gpu-check: no NVIDIA GPU here (nvidia-smi lists none, torch sees none); nothing to check")
        return 0

    peak = None if cpu else (args.peak_tflops or bf16_peak(torch.cuda.get_device_name()))
    report = Report(os.path.abspath(args.out), os.path.abspath(args.out) + ".log", args.budget_s)
    work = tempfile.mkdtemp(prefix="gpu_check_")
    background: List[Background] = []
    data, ck_full, ck_twin, ck_resume = (os.path.join(work, name) for name in ("sudoku9", "run", "run_twin", "run_sigterm"))
    cache = os.path.join(work, "inductor_cache")
    try:
        if args.bundle:
            if not report.step(BUNDLE_PLAN[0], install_step(os.path.abspath(args.bundle), report), BUNDLE_PLAN[2]):
                return 1
        sys.path.insert(0, REPO)
        warm: dict = {}
        if args.only is None:
            report.step("environment", environment_step(report, peak), plan_of("environment")[1], min_s=5)
            # Started first, side by side: the CUDA tests (correctness only: no timings beside them) and
            # the cold compiles of the benchmarks, whose caches the timed runs then read.
            tests = Background(CUDA_TESTS_CMD, report, work, name="cuda_tests")
            background.append(tests)
            for arch in ("hrm_v1", "trm"):
                job = Background(benchmark_cmd(arch, True, 2, os.path.join(work, f"cold_{arch}.json")), report, work, name=f"cold_{arch}",
                                 env=compile_env(cache))
                job.json_path = os.path.join(work, f"cold_{arch}.json")
                warm[arch] = job
                background.append(job)
        slack = 4 if cpu else 1  # the CPU runs (--only resume) are for trying the check itself, on any machine
        if report.step("dataset (9x9 Sudoku, generated)", dataset_step(report, data, cpu), slack * plan_of("dataset (9x9 Sudoku, generated)")[1]):
            name = PLAN[5][0]
            if report.step(name, pretrain_step(report, data, ck_full, ck_twin, cpu), slack * plan_of(name)[1]):
                name = PLAN[6][0]
                report.step(name, resume_step(report, data, ck_full, ck_twin, ck_resume, cpu, args.break_resume), slack * plan_of(name)[1])
                if args.only is None:
                    report.step("evaluate.py on the checkpoint", evaluate_step(report, ck_full), plan_of("evaluate.py on the checkpoint")[1])
                    report.step("predict.py on the checkpoint", predict_step(report, ck_full, data), plan_of("predict.py on the checkpoint")[1])
        if args.only is None:
            report.step("CUDA tests (pytest -m cuda)", cuda_tests_step(report, tests), plan_of("CUDA tests (pytest -m cuda)")[1], min_s=0)
            results: list = []
            cold: dict = {}
            for compiled in (True, False):
                for arch in ("hrm_v1", "trm"):
                    if compiled:
                        report.step(f"compile cache: {arch}", warm_cache_step(report, arch, warm[arch], cold), plan_of(f"compile cache: {arch}")[1],
                                    min_s=0)
                    name = f"benchmark {arch}, {'compiled' if compiled else 'eager'} (Sudoku size)"
                    report.step(name, benchmark_step(report, arch, compiled, args.steps, work, results, peak, cache, cold), plan_of(name)[1])
    finally:
        for job in background:
            if job.proc.poll() is None:
                kill_tree(job.proc.pid)
        report.write()
        shutil.rmtree(work, ignore_errors=True)
    print(f"gpu-check: {'FAILED' if report.failed() else 'ready'}; report written to {args.out} (full log {args.out}.log)")
    return 1 if report.failed() else 0


if __name__ == "__main__":
    sys.exit(main())
