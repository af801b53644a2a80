"""scripts/plan.py: the plan of a recipe (steps from the schedule's formula, FLOPs from the analytic
count, hours from the vendors' peaks) and its memory model against the measured CPU peak of a real
training step."""
import json
import subprocess
import sys

import pytest

from conftest import REPO, subprocess_env
from scripts.benchmark import arch_config, model_flops
from scripts.plan import ACTIVATION_PEAK_FACTOR, GPUS, main, plan

# Measured in a fresh process: resident memory after a warm-up (kernels loaded, a small model's step
# done), then the peak through one training forward and backward of a model at the given batch (the
# kernel's high-water mark, reset just before the step, so pages the system reclaimed meanwhile do
# not count).
MEASURE = """
import json, sys, torch
from types import SimpleNamespace
from inference.model import build_model
from scripts.benchmark import arch_config
from scripts.plan import memory_model
arch = arch_config(sys.argv[1], **json.loads(sys.argv[2]))
batch_size = int(sys.argv[3])
sizes = dict(seq_len=81, vocab_size=11, num_puzzle_identifiers=1)
def batch(n):
    return {"inputs": torch.randint(1, 11, (n, 81), dtype=torch.int32), "labels": torch.randint(2, 11, (n, 81), dtype=torch.int32),
            "puzzle_identifiers": torch.zeros(n, dtype=torch.int32)}
def step(model, b):
    model.train()
    _, loss, *_ = model(carry=model.initial_carry(b), batch=b, return_keys=[])
    loss.backward()
step(build_model(dict(arch), SimpleNamespace(**sizes), 2, "cpu", check_keys=False), batch(2))
model = build_model(dict(arch), SimpleNamespace(**sizes), batch_size, "cpu", check_keys=False)
b = batch(batch_size)
def status_kib(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":")) * 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the high-water mark starts again from here: the step's own peak, not the warm-up's
resident = status_kib("VmRSS")
step(model, b)
peak = status_kib("VmHWM")
estimate = memory_model(arch, sizes, batch_size, "adam_atan2", False)
print(json.dumps({"measured": peak - resident, "activations": estimate.activations + estimate.carry}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("arch, overrides", [
    ("trm", dict(H_cycles=2, L_cycles=3)),
    ("hrm_v1", dict(H_cycles=2, L_cycles=2, H_layers=2, L_layers=2)),
    ("urm", dict(loops=2, num_layers=2, H_cycles=2, L_cycles=2)),
])
def test_memory_model_matches_the_measured_cpu_peak(arch, overrides):
    """The tensors autograd keeps (counted on the meta device, before the peak factor's margin) are
    within 1.2x of the measured peak of a real step at hidden 128, batch 32, float32: a few hundred
    MiB. The allocator returns every large block at once (a fixed mmap threshold), so the resident
    peak is the live tensors' and repeats to the page from run to run; with glibc's moving threshold
    it varied by 1.5x between runs of the same step."""
    overrides = dict(overrides, hidden_size=128, num_heads=2, forward_dtype="float32")
    proc = subprocess.run([sys.executable, "-c", MEASURE, arch, json.dumps(overrides), "32"], cwd=REPO, capture_output=True, text=True,
                          env=subprocess_env(OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="131072"), timeout=300, check=True)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    live = got["activations"] / ACTIVATION_PEAK_FACTOR
    assert live > 100 * 2 ** 20
    assert 1 / 1.2 <= got["measured"] / live <= 1.2, got


def test_plan_of_the_trm_sudoku_recipe():
    """65,104 steps (50,000 epochs x 1,000 groups / 768), the analytic FLOPs per step times the steps,
    hours = FLOPs / (peak x MFU), and the memory of the recipe's batch falling with accumulation."""
    p = plan("trm_sudoku_extreme_mlp", [], gpus=1, mfu=0.25)
    assert p["steps"] == 65104 and p["global_batch"] == 768 and p["micro_batch"] == 768
    cfg = arch_config("trm", mlp_t=True, pos_encodings="none", L_layers=2, H_cycles=3, L_cycles=6)
    assert p["step_flops"] == model_flops(cfg, 768)[1] and p["train_flops"] == 65104 * p["step_flops"]
    assert 1.5e18 < p["train_flops"] < 3e18  # about 2 EFLOP
    for gpu, (peak, _) in GPUS.items():
        assert p["hours"][gpu] == pytest.approx(p["total_flops"] / (peak * 1e12 * 0.25) / 3600)
    split = plan("trm_sudoku_extreme_mlp", ["gradient_accumulation_steps=4"])
    m, m4 = p["memory"], split["memory"]
    assert split["micro_batch"] == 192 and m4.activations == pytest.approx(m.activations / 4, rel=0.01)
    assert m4.parameters == m.parameters > 0 and m.optimizer == 2 * m.parameters and m.ema == m.parameters  # ema=True
    assert plan("trm_sudoku_extreme_mlp", [], gpus=4)["micro_batch"] == 192


def test_report_and_errors(capsys, tmp_path):
    main(["hrm_sudoku_extreme_1k", "--gpus", "8"])
    out = capsys.readouterr().out
    assert out.startswith("ESTIMATES for hrm_sudoku_extreme_1k") and "26,041 (20,000 epochs at global batch 768)" in out
    assert "micro-batch 96 (8 GPU(s)" in out and all(gpu in out for gpu in GPUS)
    for argv, message in ((["trm_arc9"], "no recipe 'trm_arc9'"),
                          (["trm_arc1", f"data_paths=[{tmp_path}]"], f"{tmp_path}/train/dataset.json: missing; build the dataset first"),
                          (["trm_sudoku_extreme_mlp", "--mfu", "2"], "--mfu 2.0: expected a fraction in (0, 1]"),
                          (["trm_sudoku_extreme_mlp", "--gpus", "5"], "global_batch_size=768 does not split into 5 GPU(s)")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error: " + message) and err.count("\n") == 1, err
