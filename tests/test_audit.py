"""Every entry point, given bad input as a hostile or careless user would: exit status 2, at most
3 lines on stderr, no traceback, and nothing new left on disk.

``scripts/gpu_check.py`` and ``scripts/gpu_bundle.py`` are left out: device tooling that must run
before the project's requirements are installed (their own tests cover their errors). Scripts run in this process (``runpy``: importing torch once keeps the audit fast), except
``pretrain.py``, whose Hydra entry is run as a real command. An exception escaping a script in
process is what a traceback would be on the command line.
"""
import contextlib
import io
import os
import runpy
import shutil
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from conftest import REPO, TINY_HRM, malicious_checkpoint, pretrain

MAX_STDERR_LINES = 3


def snapshot(*roots: Path) -> Dict[str, Tuple[int, int]]:
    """Every file and folder under ``roots``, with size and modification time."""
    seen = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                st = os.lstat(path)
                seen[path] = (st.st_size if not os.path.isdir(path) else 0, st.st_mtime_ns if not os.path.isdir(path) else 0)
    return seen


def run_in_process(script: str, args: List[str], cwd: Path, stdout: Optional[io.StringIO] = None) -> Tuple[int, str]:
    """(exit status, stderr) of ``python <script> <args>`` run here (its output into ``stdout``); an
    escaping exception is a traceback."""
    err = io.StringIO()
    argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = [str(REPO / script), *args]
    os.chdir(cwd)
    code = 0
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout or io.StringIO()):
            runpy.run_path(str(REPO / script), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if isinstance(e.code, str):
            err.write(e.code + "\n")
    except BaseException as e:  # noqa: BLE001 - what would be a traceback on the command line
        code = 1
        err.write(f"Traceback (in process): {type(e).__name__}: {e}\n")
    finally:
        sys.argv = argv
        os.chdir(old_cwd)
    return code, err.getvalue()


def shown_lines(stderr: str) -> List[str]:
    """stderr lines a user sees (progress bars redraw with carriage returns: not lines of text)."""
    return [line for line in stderr.splitlines() if line.strip() and "\r" not in line]


def check(failures: List[str], label: str, code: int, stderr: str, before, after) -> None:
    lines = shown_lines(stderr)
    problems = []
    if code != 2:
        problems.append(f"exit {code}")
    if len(lines) > MAX_STDERR_LINES:
        problems.append(f"{len(lines)} stderr lines")
    if "Traceback" in stderr:
        problems.append("traceback")
    new = sorted(set(after) - set(before))
    changed = sorted(p for p in before if p in after and after[p] != before[p] and not os.path.isdir(p))
    gone = sorted(set(before) - set(after))
    if new or changed or gone:
        problems.append(f"disk: new {new[:3]} changed {changed[:3]} removed {gone[:3]}")
    if problems:
        failures.append(f"{label}: {'; '.join(problems)} -- stderr: {' | '.join(lines[-4:])[:400]}")


@pytest.fixture(scope="module")
def hostile(trained_hrm, sudoku4, tmp_path_factory):
    """A work folder of bad inputs next to copies of a real checkpoint folder."""
    ck, _ = trained_hrm
    w = tmp_path_factory.mktemp("audit")
    (w / "file.txt").write_text("a regular file\n")
    (w / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (w / "folder").mkdir()
    (w / "folder" / "keep.txt").write_text("the user's\n")
    run = w / "run"
    run.mkdir()
    for name in ("all_config.yaml", "step_12"):
        shutil.copy(ck / name, run / name)
    malicious_checkpoint(run / "step_1", w / "pwned")
    (run / "step_2").write_bytes(os.urandom(4096))
    data = (ck / "step_12").read_bytes()
    (run / "step_3").write_bytes(data[: len(data) // 2])
    (w / "preds").mkdir()
    shutil.copy(ck / "all_config.yaml", w / "preds" / "all_config.yaml")
    (w / "preds" / "step_12_all_preds.0").write_bytes(os.urandom(3000))
    for name, text in (("cfg_list", "- a\n- b\n"), ("cfg_invalid", "arch: [\n"), ("cfg_empty", "")):
        (w / name).mkdir()
        (w / name / "all_config.yaml").write_text(text)
        shutil.copy(ck / "step_12", w / name / "step_12")
    (w / "resume_cfg").mkdir()  # a resume state beside a broken all_config.yaml
    (w / "resume_cfg" / "all_config.yaml").write_text("arch: [\n")
    for name in ("step_12.train_state.pt", "step_12.train_state.rank0.pt"):
        shutil.copy(ck / name, w / "resume_cfg" / name)
    return w, run, sudoku4


def cases(w: Path, run: Path, data: Path) -> List[Tuple[str, List[str]]]:
    ck = str(run / "step_12")
    sudoku = "1..4..1..3..4..."
    return [
        # evaluate.py
        ("evaluate.py", ["checkpoint=nosuch/step_1"]),
        ("evaluate.py", [f"checkpoint={run}/step_1"]),
        ("evaluate.py", [f"checkpoint={run}/step_2"]),
        ("evaluate.py", [f"checkpoint={run}/step_3"]),
        ("evaluate.py", [f"checkpoint={ck}", f"output_dir={w}/file.txt"]),
        ("evaluate.py", [f"checkpoint={ck}", "output_dir=/proc/x"]),
        ("evaluate.py", [f"checkpoint={w}/cfg_list/step_12"]),
        ("evaluate.py", [f"checkpoint={w}/cfg_invalid/step_12"]),
        ("evaluate.py", [f"checkpoint={w}/cfg_empty/step_12"]),
        ("evaluate.py", [f"checkpoint={ck}", "halt_max_steps=0"]),
        ("evaluate.py", [f"checkpoint={ck}", "samples=1000000"]),
        ("evaluate.py", [f"checkpoint={ck}", "samples=2", "sampling=noise", "noise_std=1e308"]),
        ("evaluate.py", ["nonsense"]),
        # predict.py
        ("predict.py", [f"checkpoint={run}/step_1", f"puzzle={sudoku}"]),
        ("predict.py", [f"checkpoint={run}/step_2", f"puzzle={sudoku}"]),
        ("predict.py", [f"checkpoint={run}/step_3", f"puzzle={sudoku}"]),
        ("predict.py", [f"checkpoint={w}/cfg_list/step_12", f"puzzle={sudoku}"]),
        ("predict.py", [f"checkpoint={w}/cfg_invalid/step_12", f"puzzle={sudoku}"]),
        ("predict.py", [f"checkpoint={w}/cfg_empty/step_12", f"puzzle={sudoku}"]),
        ("predict.py", [f"checkpoint={ck}", f"puzzle={sudoku}", f"output={w}/folder"]),
        ("predict.py", [f"checkpoint={ck}", f"puzzle={sudoku}", "output=/proc/a.json"]),
        ("predict.py", [f"checkpoint={ck}", f"puzzle={sudoku}", f"output={w}/file.txt/x.json"]),
        ("predict.py", [f"checkpoint={ck}", f"puzzle={sudoku}", "picture=/proc/a.png"]),
        ("predict.py", [f"checkpoint={ck}", f"puzzle={sudoku}", f"output={w}/o.json", "picture=/proc/a.gif"]),
        ("predict.py", [f"checkpoint={ck}", f"puzzle={sudoku}", f"output={w}/o.json", f"picture={w}/a.bmp"]),
        ("predict.py", [f"checkpoint={ck}", f"puzzle_file={w}/binary.txt"]),
        ("predict.py", [f"checkpoint={ck}", f"puzzle_file={w}/nosuch.txt"]),
        ("predict.py", [f"checkpoint={ck}", f"puzzle={sudoku}", "halt_max_steps=100000000"]),
        ("predict.py", [f"checkpoint={ck}", f"puzzle={sudoku}", "adapt_steps=5"]),
        ("predict.py", [f"checkpoint={ck}", "puzzle=xyz"]),
        ("predict.py", ["checkpoint"]),
        # scripts/
        ("scripts/analyze_checkpoint.py", ["checkpoint=nosuch/step_1", f"out={w}/analysis"]),
        ("scripts/analyze_checkpoint.py", [f"checkpoint={run}/step_1", f"out={w}/analysis"]),
        ("scripts/analyze_checkpoint.py", [f"checkpoint={run}/step_2", f"out={w}/analysis"]),
        ("scripts/analyze_checkpoint.py", [f"checkpoint={ck}", f"out={w}/file.txt"]),
        ("scripts/analyze_checkpoint.py", [f"checkpoint={w}/cfg_list/step_12", f"out={w}/analysis"]),
        ("scripts/analyze_checkpoint.py", [f"checkpoint={w}/cfg_invalid/step_12", f"out={w}/analysis"]),
        ("scripts/analyze_checkpoint.py", [f"checkpoint={ck}", f"out={w}/analysis", "max_examples=-3"]),
        ("scripts/analyze_checkpoint.py", [f"checkpoint={ck}", f"out={w}/analysis", "samples=5000"]),
        ("scripts/analyze_checkpoint.py", [f"checkpoint={ck}", f"out={w}/analysis", "noise_std=inf"]),
        ("scripts/analyze_checkpoint.py", [f"outputs={w}/nosuch", f"out={w}/analysis"]),
        ("scripts/analyze_checkpoint.py", [f"outputs={w}/preds/step_12_all_preds.0", f"out={w}/analysis"]),
        ("scripts/push_to_hub.py", ["checkpoint=nosuch/step_1", "repo_id=me/x", f"local_dir={w}/release"]),
        ("scripts/push_to_hub.py", [f"checkpoint={run}/step_1", "repo_id=me/x", f"local_dir={w}/release"]),
        ("scripts/push_to_hub.py", [f"checkpoint={ck}", "repo_id=bad", f"local_dir={w}/release"]),
        ("scripts/summarize_runs.py", [f"{w}/nosuch"]),
        ("scripts/summarize_runs.py", [f"{w}/folder"]),
        ("scripts/summarize_runs.py", [str(run), "--metrics", "all/nosuch", "--out", f"{w}/summary"]),
        ("scripts/benchmark.py", ["--arch", "nosuch"]),
        ("scripts/benchmark_builders.py", ["--nosuch"]),
        ("scripts/benchmark_optim.py", ["--repeats", "x"]),
        ("scripts/demo.py", ["--epochs", "-1", "--out", f"{w}/demo"]),
        ("scripts/experiments.py", ["nosuch"]),
        ("scripts/inspect_sudoku_dataset.py", ["--data-path", f"{w}/nosuch"]),
        ("scripts/inspect_sudoku_dataset.py", ["--data-path", str(data), "--split", "nosuch"]),
        ("scripts/inspect_domino_dataset.py", ["--data-path", f"{w}/folder"]),
        ("scripts/visualize_domino_play.py", ["--data-path", str(data), "--index", "-5"]),
        # builders
        ("dataset/build_sudoku_dataset.py", ["--generate", "5", "--grid", "4", "--output-dir", f"{w}/folder"]),
        ("dataset/build_sudoku_dataset.py", ["--source-repo", f"{w}/nosuch", "--output-dir", f"{w}/s"]),
        ("dataset/build_sudoku_dataset.py", ["--generate", "-5", "--grid", "4", "--output-dir", f"{w}/s"]),
        ("dataset/build_maze_dataset.py", ["--generate", "3", "--size", "1", "--output-dir", f"{w}/m"]),
        ("dataset/build_maze_dataset.py", ["--source-repo", f"{w}/nosuch", "--output-dir", f"{w}/m"]),
        ("dataset/build_arc_dataset.py", ["--dataset-dirs", f"{w}/nosuch", "--output-dir", f"{w}/a"]),
        ("dataset/build_arc_dataset.py", ["--dataset-dirs", f"{w}/folder", "--output-dir", f"{w}/a"]),
        ("dataset/build_domino_dataset.py", ["--num-games", "-1", "--output-dir", f"{w}/d"]),
        ("dataset/build_custom_dataset.py", ["--train", f"{w}/binary.txt", "--test", f"{w}/binary.txt", "--output-dir", f"{w}/c"]),
        ("dataset/build_custom_dataset.py", ["--train", f"{w}/nosuch.jsonl", "--test", f"{w}/nosuch.jsonl", "--output-dir", f"{w}/c"]),
    ]


@pytest.mark.slow
def test_every_entry_point_answers_bad_input_with_one_line(hostile):
    w, run, data = hostile
    failures: List[str] = []
    roots = (w, data)
    for script, args in cases(w, run, data):
        before = snapshot(*roots)
        code, stderr = run_in_process(script, args, cwd=w)
        check(failures, f"{script} {' '.join(args)}", code, stderr, before, snapshot(*roots))
    for args in (["nosuch_key=1"], [f"data_path={w}/nosuch"], [f"data_path={data}", f"checkpoint_path={w}/file.txt"],
                 [f"data_path={data}", "lr=abc"], [f"data_path={data}", f"resume={w}/resume_cfg"],
                 [f"data_path={data}", "max_train_seconds=true"]):
        before = snapshot(*roots)
        proc = pretrain(*args, "epochs=1", "eval_interval=1", "global_batch_size=8", *TINY_HRM, cwd=w, check=False)
        check(failures, f"pretrain.py {' '.join(args)}", proc.returncode, proc.stderr, before, snapshot(*roots))
    assert not (w / "pwned").exists(), "a crafted checkpoint ran code"
    assert not failures, f"{len(failures)} case(s):\n" + "\n".join(failures)


def one_line_exit_2(proc, *needles: str) -> None:
    """``proc`` refused with exit status 2 and one line on stderr holding every needle."""
    lines = shown_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert all(n in lines[0] for n in needles), lines[0]


@pytest.mark.slow
def test_a_linked_run_lock_is_refused_and_its_target_untouched(sudoku4, tmp_path):
    """``run.lock`` a symlink to a user's file, or a dangling one: pretrain.py names it and stops,
    and neither the target nor anything outside the folder is written."""
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's\n")
    ck = tmp_path / "ck"
    ck.mkdir()
    os.symlink(victim, ck / "run.lock")
    before = snapshot(tmp_path)
    proc = pretrain(f"data_path={sudoku4}", "epochs=1", "eval_interval=1", "global_batch_size=8", *TINY_HRM, f"checkpoint_path={ck}", cwd=tmp_path,
                    check=False)
    one_line_exit_2(proc, f"{ck / 'run.lock'}", "symbolic link")
    assert victim.read_text() == "the user's\n" and snapshot(tmp_path) == before


def demo_cmd(out: Path) -> List[str]:
    return [sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out), "--train", "1", "--test", "1", "--epochs", "2"]


@pytest.mark.slow
def test_a_rerun_demo_keeps_the_previous_run_and_a_second_demo_is_refused(tmp_path):
    """The demo deletes nothing: a rerun (run here, its pretrain.py a real process) trains beside the
    previous run's folder (the training fails at once on an empty data folder, which is enough to
    see where it goes). A demo started while another holds the folder stops before touching it."""
    from conftest import run as run_cmd
    from training.runs import RunFolderLock
    out = tmp_path / "demo"
    previous = out / "checkpoints" / "hrm-sudoku-4x4"
    (previous / "halt_max_steps_8").mkdir(parents=True)
    (previous / "notes.txt").write_text("the user's\n")
    (previous / "halt_max_steps_8" / "metrics.json").write_text("{}\n")
    (out / "data" / "sudoku-4x4").mkdir(parents=True)  # no dataset in it: pretrain.py refuses it
    before = snapshot(out)
    printed = io.StringIO()
    code, stderr = run_in_process("scripts/demo.py", demo_cmd(out)[2:], cwd=tmp_path, stdout=printed)
    assert code != 0 and "Traceback" not in stderr and f"training into {previous}-2" in printed.getvalue(), stderr
    assert snapshot(out) == before  # the previous run kept; the failed one left nothing
    with RunFolderLock(str(out), option="--out") as lock:  # this process plays the running demo
        assert lock.acquire() is None
        held = snapshot(out)
        proc = run_cmd(demo_cmd(out), check=False)
        assert snapshot(out) == held
    one_line_exit_2(proc, f"--out={out} is in use by another run (PID {os.getpid()} on ")
    assert snapshot(out) == before


@pytest.mark.slow
def test_a_refused_speedrun_leaves_the_running_ones_folder_alone(tmp_path):
    """Two speedruns with one ``out=``: the one that did not create the folder stops, and the
    other's compile cache and files stay."""
    from conftest import run as run_cmd
    out = tmp_path / "out"
    (out / "compile_cache").mkdir(parents=True)
    (out / "compile_cache" / "graph.bin").write_bytes(b"compiled")
    (out / "all_config.yaml").write_text("arch: {}\n")
    before = snapshot(tmp_path)
    proc = run_cmd([sys.executable, str(REPO / "scripts" / "speedrun.py"), f"out={out}", f"data_root={tmp_path / 'data'}",
                    "train_puzzles=5", "test_puzzles=5"], check=False)
    one_line_exit_2(proc, f"out={out} already exists")
    assert snapshot(tmp_path) == before


def edited_checkpoint(trained_hrm, folder: Path, arch: Optional[dict] = None, weights=None) -> Path:
    """A copy of the shared tiny checkpoint with ``arch`` keys of its all_config.yaml replaced
    and/or its weights passed through ``weights``."""
    import torch
    import yaml
    ck, _ = trained_hrm
    folder.mkdir(parents=True)
    config = yaml.safe_load((ck / "all_config.yaml").read_text())
    config["arch"].update(arch or {})
    (folder / "all_config.yaml").write_text(yaml.safe_dump(config))
    state = torch.load(ck / "step_12", weights_only=True)
    torch.save(weights(state) if weights else state, folder / "step_12")
    return folder / "step_12"


def test_a_checkpoint_whose_config_or_weights_lie_is_one_line(trained_hrm, tmp_path):
    """Sizes and budgets from a checkpoint's all_config.yaml are checked against the weights and
    the bounds before anything is allocated or run; NaN or integer weights are refused on load."""
    import torch
    nan = lambda s: {k: (v.fill_(float("nan")) if k.endswith("lm_head.weight") else v) for k, v in s.items()}  # noqa: E731
    int8 = lambda s: {k: (v.to(torch.int8) if k.endswith("lm_head.weight") else v) for k, v in s.items()}  # noqa: E731
    cases = [(edited_checkpoint(trained_hrm, tmp_path / "halt", {"halt_max_steps": 10 ** 9}), "arch.halt_max_steps=1000000000: expected 1 to 1024"),
             (edited_checkpoint(trained_hrm, tmp_path / "cycles", {"L_cycles": 10 ** 9}), "arch.L_cycles=1000000000: expected a whole number from 1 to 256"),
             (edited_checkpoint(trained_hrm, tmp_path / "huge", {"hidden_size": 10 ** 9}), "the model it describes cannot be built"),
             (edited_checkpoint(trained_hrm, tmp_path / "wide", {"hidden_size": 4096}), "(32,) vs model (4096,)"),
             (edited_checkpoint(trained_hrm, tmp_path / "nan", weights=nan), "hold NaN or infinite values (model.inner.lm_head.weight)"),
             (edited_checkpoint(trained_hrm, tmp_path / "int8", weights=int8), "not floating-point: model.inner.lm_head.weight torch.int8")]
    failures: List[str] = []
    for ck, message in cases:
        for script, args in (("predict.py", [f"checkpoint={ck}", "puzzle=1..4..1..3..4..."]), ("evaluate.py", [f"checkpoint={ck}"])):
            before = snapshot(tmp_path)
            code, stderr = run_in_process(script, args, cwd=tmp_path)
            check(failures, f"{script} {ck.parent.name}", code, stderr, before, snapshot(tmp_path))
            if message not in stderr:
                failures.append(f"{script} {ck.parent.name}: {message!r} not in {stderr.strip()[-300:]!r}")
    assert not failures, "\n".join(failures)


@contextlib.contextmanager
def read_only_copy(src: Path, where: Path):
    """A copy of the folder ``src`` that cannot be written: a read-only tmpfs as root (permission
    bits do not stop root), a folder without write permission otherwise."""
    import subprocess
    where.mkdir()
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], check=True, capture_output=True)
        try:
            shutil.copytree(src, where / src.name)
            subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, capture_output=True)
            yield where / src.name
        finally:
            subprocess.run(["umount", str(where)], check=True, capture_output=True)
    else:
        shutil.copytree(src, where / src.name)
        os.chmod(where / src.name, 0o555)
        try:
            yield where / src.name
        finally:
            os.chmod(where / src.name, 0o755)


def test_a_read_only_run_is_evaluated_into_output_dir_or_refused_up_front(trained_hrm, tmp_path):
    ck, _ = trained_hrm
    with read_only_copy(ck, tmp_path / "ro") as ro:
        code, stderr = run_in_process("evaluate.py", [f"checkpoint={ro}/step_12"], cwd=tmp_path)
        assert code == 2 and shown_lines(stderr) == [f"error: checkpoint={ro}/step_12: the outputs go to {ro} by default, but cannot "
                                                      f"write in {ro} ({os.strerror(30 if os.geteuid() == 0 else 13)}); "
                                                      "give output_dir=<a folder you can write>"], stderr
        code, stderr = run_in_process("evaluate.py", [f"checkpoint={ro}/step_12", f"output_dir={tmp_path / 'out'}"], cwd=tmp_path)
        assert code == 0 and (tmp_path / "out" / "step_12_all_preds.0").is_file(), stderr


def test_deep_json_and_huge_integers_are_one_line(trained_hrm, tmp_path):
    """Nesting deeper than Python's JSON reader and integers over its 4,300 digits, in a puzzle
    of predict.py (custom lists, ARC) and in an examples file of the builder."""
    import yaml

    from conftest import build_custom, untrained_checkpoint
    from tasks import get_codec
    from tasks.base import PuzzleError
    deep, huge = "[" * 5000 + "]" * 5000, "[" + "7" * 5000 + "]"
    data = build_custom(tmp_path / "lists", [{"input": [3, 1, 2], "output": [1, 2, 3]}])
    config = yaml.safe_load((trained_hrm[0] / "all_config.yaml").read_text())
    ck = untrained_checkpoint(config, data, tmp_path / "ck")
    (tmp_path / "deep.jsonl").write_text(f'{{"input": {deep}, "output": [1]}}\n')
    (tmp_path / "huge.jsonl").write_text(f'{{"input": {huge}, "output": [1]}}\n')
    failures: List[str] = []
    for script, args in [("predict.py", [f"checkpoint={ck}", f"puzzle={deep}"]), ("predict.py", [f"checkpoint={ck}", f"puzzle={huge}"]),
                         *[("dataset/build_custom_dataset.py", ["--train", str(tmp_path / f), "--test", str(tmp_path / f),
                                                                "--output-dir", str(tmp_path / "out")]) for f in ("deep.jsonl", "huge.jsonl")]]:
        before = snapshot(tmp_path)
        code, stderr = run_in_process(script, args, cwd=tmp_path)
        check(failures, f"{script} {args[-1][:40]}", code, stderr, before, snapshot(tmp_path))
        if "nested deeper" not in stderr and "number too long" not in stderr:
            failures.append(f"{script}: {stderr.strip()[-200:]!r} does not say what is wrong")
    arc = get_codec("arc")()
    for text, message in ((deep, "nested deeper"), ('{"train": [{"input": ' + huge + "}]}", "number too long")):
        with pytest.raises(PuzzleError, match=message):
            arc.read(text)
    assert not failures, "\n".join(failures)
