"""A golden run: every output file of a tiny end-to-end pipeline is byte-for-byte what it was when
the checksums in ``tests/golden_checksums.json`` were recorded.

The pipeline covers the paths a refactor is most likely to move: training with EMA and two
micro-batches per step, interval and evaluation resume states, a resumed run, ``evaluate.py`` with a
``halt_max_steps`` list and with ``samples``, ``predict.py`` with a trace, and
``scripts/analyze_checkpoint.py``. A change that is meant to alter results re-records the file:

    python tests/test_golden.py --record

Bit-identity across machines needs one summation order: every command runs on one thread with
ATen's portable (non-vectorised) kernels and oneMKL's conditional numerical reproducibility, so the
recorded sums do not depend on the CPU's vector width or core count. Files that hold wall times,
absolute paths, host names or rendered pictures are left out (their data is in the files kept).
"""
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REPO, TINY_HRM, build_sudoku, run, subprocess_env  # noqa: E402

CHECKSUMS = Path(__file__).resolve().parent / "golden_checksums.json"

# One summation order on any x86-64 CPU (see the module docstring).
PINNED_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}

# Files whose bytes carry the time, the machine or the folder of the run, not its results.
# The source files a run copies beside its weights are code, not results.
SKIPPED = [r"\.png$", r"\.gif$", r"\.py$", r"(^|/)run\.lock$", r"(^|/)all_config\.yaml$", r"(^|/)run\.json$",
           r"\.log$", r"(^|/)report\.md$", r"\.train_state\.pt$"]
# JSON fields that hold wall times.
TIMING_KEY = re.compile(r"seconds$|since_start_s$")


def _py(script: str, *args: str, cwd: Path) -> str:
    env = subprocess_env(**PINNED_ENV)
    return run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, timeout=600).stdout


def golden_pipeline(work: Path) -> Path:
    """Run the tiny pipeline in ``work`` and return the folder holding its outputs."""
    data = build_sudoku(work / "sudoku-4x4", grid=4, n_train=32, n_test=8, num_aug=1, seed=3)
    out = work / "out"
    common = [f"data_path={data}", "epochs=2", "eval_interval=1", "global_batch_size=8", "evaluators=[]", "lr=3e-3",
              "lr_warmup_steps=2", *TINY_HRM, "arch.halt_max_steps=3", "arch.halt_exploration_prob=0.5", "ema=True",
              "gradient_accumulation_steps=2", "checkpoint_interval_steps=3", "compile=false", "+run_name=g"]
    _py("pretrain.py", *common, f"checkpoint_path={out / 'run'}", cwd=work)
    # A second run resumed from the first run's state saved at its first evaluation.
    _py("pretrain.py", *common, f"checkpoint_path={out / 'resumed'}", f"resume={out / 'run' / 'step_4'}",
        cwd=work)
    ck = out / "run" / "step_8"
    _py("evaluate.py", f"checkpoint={ck}", "halt_max_steps=[1,3]", f"output_dir={out / 'eval_halt'}", "save_npy=true", cwd=work)
    _py("evaluate.py", f"checkpoint={ck}", "samples=4", f"output_dir={out / 'eval_samples'}", cwd=work)
    answer = _py("predict.py", f"checkpoint={ck}", "puzzle=....34........41", "trace=true",
                 f"output={out / 'answer.json'}", cwd=work)
    (out / "predict_stdout.txt").write_text(answer)
    _py("scripts/analyze_checkpoint.py", f"checkpoint={ck}", f"out={out / 'analysis'}", "samples=4",
        "halt_max_steps=[1,3]", cwd=work)
    return out


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not TIMING_KEY.search(k)}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def canonical_bytes(path: Path, work: Path) -> bytes:
    """The bytes of an output file that depend only on the run's results: the work folder's path
    becomes ``<work>`` and JSON loses its wall-time fields."""
    data = path.read_bytes()
    if path.suffix not in (".json", ".jsonl", ".txt"):
        return data
    text = data.decode().replace(str(work), "<work>")
    if path.suffix == ".json":
        text = json.dumps(_without_timings(json.loads(text)), sort_keys=True)
    elif path.suffix == ".jsonl":
        text = "\n".join(json.dumps(_without_timings(json.loads(line)), sort_keys=True) for line in text.splitlines())
    return text.encode()


def checksums(out: Path, work: Path) -> Dict[str, str]:
    """SHA-256 of every kept output file under ``out``, by its path relative to ``out``."""
    found: Dict[str, str] = {}
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out).as_posix()
        if p.is_file() and not any(re.search(pattern, rel) for pattern in SKIPPED):
            found[rel] = hashlib.sha256(canonical_bytes(p, work)).hexdigest()
    return found


@pytest.mark.slow
def test_golden_run_outputs_are_bit_identical(tmp_path):
    recorded = json.loads(CHECKSUMS.read_text())
    got = checksums(golden_pipeline(tmp_path), tmp_path)
    missing = sorted(set(recorded) - set(got))
    new = sorted(set(got) - set(recorded))
    changed = sorted(k for k in set(got) & set(recorded) if got[k] != recorded[k])
    assert not (missing or new or changed), (
        f"golden run differs from {CHECKSUMS.name}: changed {changed}, missing {missing}, new {new} "
        "(if the change is meant, re-record with: python tests/test_golden.py --record)")


def _record(argv: List[str]) -> None:
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        got = checksums(golden_pipeline(Path(d)), Path(d))
    CHECKSUMS.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(got)} checksums into {CHECKSUMS}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/test_golden.py --record")
    os.chdir(REPO)
    _record(sys.argv[1:])
