"""Build a dataset for your own task from a file of input/output examples.

    python dataset/build_custom_dataset.py --train train.jsonl --test test.jsonl --output-dir data/my-task

Each example is one JSONL line ``{"input": ..., "output": ...}`` or one CSV row with columns
``input,output``. An input or output is a string (one token per character), a list of tokens
(strings or integers), or a 2-D list (a grid). Optional fields: ``puzzle`` (a name; examples
sharing it share one trained puzzle embedding, as the demonstration pairs of an ARC task do) and
``group`` (puzzles that are versions of one another; defaults to the puzzle). In a CSV, a cell
holding a JSON list (``[1, 2]`` or ``[[1, 2], [3, 4]]``) is a list or a grid, anything else a string.

Tokens: PAD 0, end marker 1, then the vocabulary (``--vocab``, else the sorted tokens of the
train file). Sequences and lists are written from position 0 followed by an end marker; grids
row-major on a ``--grid-size``-wide square canvas with an end marker after the last column and
below the last row, as ARC grids are. ``dataset.json`` records ``task: custom``, the vocabulary
(``vocab[i]`` is token ``i``), the shapes, which ``predict.py`` uses to write answers back in
the notation of the file, and ``augment``: the task's symmetries, from which test-time views are drawn.
"""
from __future__ import annotations

import csv
import difflib
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pydantic

from dataset.common import (DatasetError, PuzzleDatasetMetadata, atomic_output_dir, check_output_dir,
                            dihedral_transform, parse_config, run_cli, save_identifiers, save_set)
from dataset.custom import FIRST_TOKEN_ID, PAD_ID, SPECIAL_TOKENS, Value, as_int, lay_out, parse_value, permute_tokens
from utils import json_text
from utils.progress import progress_bar

KINDS = ("string", "list", "grid")
FIELDS = ("input", "output")
OPTIONAL_FIELDS = ("puzzle", "group")
AUG_SEPARATOR = "|||"  # augmented copy k of puzzle P is named "P|||aug<k>", as ARC names versions


class CustomBuildConfig(pydantic.BaseModel):
    """Options of the custom builder (one command-line option per field)."""

    train: Optional[str] = pydantic.Field(None, description="training examples: a .jsonl or .csv file",
                                          json_schema_extra={"metavar": "FILE"})
    test: Optional[str] = pydantic.Field(None, description="held-out examples: a .jsonl or .csv file",
                                         json_schema_extra={"metavar": "FILE"})
    output_dir: str = pydantic.Field("data/custom", description="dataset folder to write")
    vocab: Optional[List[str]] = pydantic.Field(None, description=(
        "the tokens in order (token ids 2, 3, ...); default: the sorted tokens seen in --train"),
        json_schema_extra={"metavar": "TOKEN"})
    ignore_unchanged: bool = pydantic.Field(False, description=(
        "positions whose output token equals the input token are left out of the loss"))
    seq_len: Optional[int] = pydantic.Field(None, ge=1, description=(
        "sequence length (default: the longest input or output; longer examples are an error)"))
    grid_size: Optional[int] = pydantic.Field(None, ge=1, description=(
        "width and height of the canvas grids are laid out on (default: the largest grid side)"))
    num_aug: int = pydantic.Field(0, ge=0, description="augmented copies per train puzzle (duplicates dropped)")
    augment: List[str] = pydantic.Field(default_factory=list, description=(
        "dihedral (the 8 symmetries of grids) and/or permute=<tokens> (a random bijection of the tokens, "
        "characters or comma-separated)"), json_schema_extra={"metavar": "AUG"})
    seed: int = pydantic.Field(0, description="same seed and options, same files")

    @pydantic.field_validator("augment")
    @classmethod
    def _check_augment(cls, value: List[str]) -> List[str]:
        for a in value:
            if a != "dihedral" and not (a.startswith("permute=") and len(permute_tokens(a)) >= 2):
                raise ValueError(f"expects 'dihedral' or 'permute=<at least two tokens>', got {a!r}")
        if sum(a.startswith("permute=") for a in value) > 1:
            raise ValueError("takes one permute=<tokens>")
        return value

    @pydantic.field_validator("vocab")
    @classmethod
    def _check_vocab(cls, value: Optional[List[str]]) -> Optional[List[str]]:
        if value is not None:
            seen = set()
            for t in value:
                if t in seen:
                    raise ValueError(f"lists token {t!r} twice")
                seen.add(t)
        return value

    @pydantic.model_validator(mode="after")
    def _check(self) -> "CustomBuildConfig":
        if self.train is None or self.test is None:
            raise ValueError("--train FILE and --test FILE are both required (.jsonl or .csv files of input/output pairs)")
        if self.num_aug > 0 and not self.augment:
            raise ValueError("--num-aug needs --augment dihedral and/or --augment permute=<tokens>")
        if self.augment and self.num_aug == 0:
            raise ValueError("--augment makes copies only with --num-aug A (A > 0)")
        return self


# ----------------------------------------------------------------------------------------------
# Reading examples


@dataclass
class Example:
    line: int
    input: Value
    output: Value
    puzzle: Optional[str] = None
    group: Optional[str] = None


@dataclass
class Split:
    path: str
    examples: List[Example] = field(default_factory=list)


def _name(value: Any, where: str) -> Optional[str]:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DatasetError(f"{where}: expected a name (string or integer)")
    return str(value)


def _check_field_names(names: Sequence[str], where: str, what: str = "field") -> None:
    """A misspelt field (``"puzzel"``) is an error naming the nearest known one, never silently ignored."""
    known = FIELDS + OPTIONAL_FIELDS
    for name in names:
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(known)}"
            raise DatasetError(f"{where}: unknown {what} {name!r} ({hint})")


def _example(record: Dict[str, Any], where: str, line: int) -> Example:
    _check_field_names(list(record), where)
    missing = [k for k in FIELDS if k not in record]
    if missing:
        raise DatasetError(f"{where}: missing {' and '.join(repr(k) for k in missing)} "
                           "(each example needs \"input\" and \"output\")")
    return Example(line=line, input=parse_value(record["input"], f"{where}: input"),
                   output=parse_value(record["output"], f"{where}: output"),
                   puzzle=_name(record.get("puzzle"), f"{where}: puzzle"),
                   group=_name(record.get("group"), f"{where}: group"))


def _csv_cell(text: str) -> Any:
    if text.lstrip().startswith("["):
        try:
            return json_text.loads(text)
        except json.JSONDecodeError:
            pass  # not JSON: the text itself
    return text


def read_examples(path: str) -> Split:
    """Every example of a ``.jsonl`` or ``.csv`` file (by extension; other names by their first character)."""
    try:
        with open(path, "r", encoding="utf-8-sig", newline="") as f:  # -sig: a byte-order mark is dropped
            text = f.read()
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text") from None
    split = Split(path)
    ext = os.path.splitext(path)[1].lower()
    is_csv = ext == ".csv" or (ext not in (".jsonl", ".json", ".ndjson") and not text.lstrip().startswith("{"))
    if is_csv:
        reader = csv.DictReader(text.splitlines())
        header = reader.fieldnames or []
        if not header:
            raise DatasetError(f"{path}: empty file; expected a header line 'input,output' and one example per row")
        if "input" not in header or "output" not in header:
            raise DatasetError(f"{path}: line 1: header {','.join(header)!r} needs columns 'input' and 'output' "
                               "(optional 'puzzle', 'group')")
        _check_field_names(header, f"{path}: line 1", "column")
        for row in progress_bar(reader, desc=f"read {os.path.basename(path)}", unit="row", leave=False, delay=2):
            where = f"{path}: line {reader.line_num}"
            if None in row or any(v is None for v in row.values()):
                raise DatasetError(f"{where}: expected {len(header)} comma-separated fields ({','.join(header)})")
            record = {k: (_csv_cell(v) if k in FIELDS else v) for k, v in row.items()}
            split.examples.append(_example(record, where, reader.line_num))
    else:
        lines = text.splitlines()
        for i, line in enumerate(progress_bar(lines, desc=f"read {os.path.basename(path)}", unit="line", leave=False,
                                      delay=2)):
            if not line.strip():
                continue
            where = f"{path}: line {i + 1}"
            try:
                record = json_text.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise DatasetError(f"{where}: expected an object {{\"input\": ..., \"output\": ...}}")
            split.examples.append(_example(record, where, i + 1))
    if not split.examples:
        raise DatasetError(f"{path}: no examples (empty file); expected one {{\"input\": ..., \"output\": ...}} "
                           "per line (JSONL) or rows under an 'input,output' header (CSV)")
    return split


# ----------------------------------------------------------------------------------------------
# Layout: shapes, vocabulary, lengths


@dataclass
class Layout:
    """How examples become token rows, recorded in dataset.json as ``custom`` (the codec reads it back)."""

    input: str  # string | list | grid
    output: str
    input_ints: bool
    output_ints: bool
    seq_len: int
    grid_size: Optional[int]

    def to_json(self) -> Dict[str, Any]:
        return {"input": self.input, "output": self.output, "input_ints": self.input_ints,
                "output_ints": self.output_ints, "grid_size": self.grid_size}


def check_kinds(splits: Sequence[Split]) -> Dict[str, Tuple[str, bool]]:
    """The one kind of every input and of every output (and whether all their tokens are ints)."""
    first: Dict[str, Tuple[str, str]] = {}
    ints = {k: True for k in FIELDS}
    for split in splits:
        for ex in split.examples:
            for name in FIELDS:
                v: Value = getattr(ex, name)
                if name not in first:
                    first[name] = (v.kind, f"{split.path} line {ex.line}")
                elif v.kind != first[name][0]:
                    raise DatasetError(f"{split.path}: line {ex.line}: {name} is a {v.kind}, but on {first[name][1]} "
                                       f"it is a {first[name][0]} (every {name} must have the same shape kind)")
                ints[name] &= v.ints
    return {name: (first[name][0], ints[name] and first[name][0] != "string") for name in FIELDS}


def make_vocab(config: CustomBuildConfig, splits: Sequence[Split]) -> List[str]:
    """``vocab[i]`` is the token of id ``i`` (PAD, end marker, then the task's tokens); unknown tokens are errors."""
    train, *others = splits
    if config.vocab is not None:
        tokens, checked, origin = list(config.vocab), list(splits), "--vocab"
    else:
        seen = set()
        for ex in train.examples:
            seen.update(ex.input.tokens.ravel().tolist())
            seen.update(ex.output.tokens.ravel().tolist())
        # Integers in numeric order (so 2 comes before 10), then strings; ties ("1", "01") by text.
        tokens = sorted(seen, key=lambda t: (0, as_int(t), t) if as_int(t) is not None else (1, 0, t))
        checked, origin = others, f"the tokens of {train.path}"
    known = set(tokens)
    for split in checked:
        for ex in split.examples:
            for name in FIELDS:
                for t in getattr(ex, name).tokens.ravel().tolist():
                    if t not in known:
                        raise DatasetError(f"{split.path}: line {ex.line}: {name} token {t!r} is not in the vocabulary "
                                           f"({origin}: {' '.join(tokens[:20])}{' ...' if len(tokens) > 20 else ''})")
    return SPECIAL_TOKENS + tokens


def make_layout(config: CustomBuildConfig, splits: Sequence[Split], kinds: Dict[str, Tuple[str, bool]]) -> Layout:
    """seq_len and grid canvas from the data or the options; an example that does not fit names its line."""
    grid_side, seq_longest, where_longest = 0, 0, ""
    for split in splits:
        for ex in split.examples:
            for name in FIELDS:
                v: Value = getattr(ex, name)
                if v.kind == "grid":
                    side = max(v.tokens.shape)
                    if config.grid_size is not None and side > config.grid_size:
                        raise DatasetError(f"{split.path}: line {ex.line}: {name} grid is {v.tokens.shape[0]}x"
                                           f"{v.tokens.shape[1]}, larger than --grid-size {config.grid_size}")
                    grid_side = max(grid_side, side)
                else:
                    if config.seq_len is not None and v.tokens.size > config.seq_len:
                        raise DatasetError(f"{split.path}: line {ex.line}: {name} has {v.tokens.size} tokens, more "
                                           f"than --seq-len {config.seq_len} (examples are never cut)")
                    if v.tokens.size > seq_longest:
                        seq_longest, where_longest = v.tokens.size, f"{split.path} line {ex.line}"
    grid_size = None
    if grid_side:
        grid_size = config.grid_size or grid_side
        seq_longest = max(seq_longest, grid_size * grid_size)
        if config.seq_len is not None and config.seq_len < grid_size * grid_size:
            raise DatasetError(f"--seq-len {config.seq_len} is shorter than the grid canvas "
                               f"({grid_size}x{grid_size} = {grid_size * grid_size} tokens; see --grid-size)")
    seq_len = config.seq_len or seq_longest
    return Layout(input=kinds["input"][0], output=kinds["output"][0], input_ints=kinds["input"][1],
                  output_ints=kinds["output"][1], seq_len=seq_len, grid_size=grid_size)


# ----------------------------------------------------------------------------------------------
# Puzzles, groups, augmentation


@dataclass
class Puzzle:
    """Examples sharing one puzzle identifier (``name`` None: its own puzzle with the blank identifier)."""

    name: Optional[str]
    group: str
    pairs: List[Tuple[np.ndarray, np.ndarray]]  # token ids of (input, output), 1-D or 2-D


def to_puzzles(split: Split, token_id: Dict[str, int]) -> List[List[Puzzle]]:
    """Examples -> groups of puzzles, in order of first appearance; a puzzle in two groups is an error."""
    groups: Dict[str, List[Puzzle]] = {}
    named: Dict[str, Tuple[Puzzle, int]] = {}
    lookup = np.vectorize(token_id.__getitem__, otypes=[np.int32])
    for i, ex in enumerate(split.examples):
        pair = (lookup(ex.input.tokens), lookup(ex.output.tokens))
        if ex.puzzle is not None and ex.puzzle in named:
            puzzle, line = named[ex.puzzle]
            if ex.group is not None and ex.group != puzzle.group:
                raise DatasetError(f"{split.path}: line {ex.line}: puzzle {ex.puzzle!r} is in group {ex.group!r} here "
                                   f"but in group {puzzle.group!r} on line {line}")
            puzzle.pairs.append(pair)
            continue
        # An example without a name and group is a group of its own ("\0" cannot clash with a name).
        group = ex.group if ex.group is not None else (ex.puzzle if ex.puzzle is not None else f"\0{i}")
        puzzle = Puzzle(ex.puzzle, group, [pair])
        if ex.puzzle is not None:
            named[ex.puzzle] = (puzzle, ex.line)
        groups.setdefault(group, []).append(puzzle)
    return list(groups.values())


def _pairs_key(pairs: Sequence[Tuple[np.ndarray, np.ndarray]]) -> bytes:
    return b"|".join(bytes(str(a.shape), "ascii") + a.tobytes() for pair in pairs for a in pair)


def augment(puzzle: Puzzle, num_aug: int, dihedral: bool, permute_ids: Optional[np.ndarray], vocab_size: int,
            rng: np.random.Generator) -> List[Puzzle]:
    """Up to ``num_aug`` distinct transformed copies of ``puzzle`` (every example of it transformed alike).

    A copy draws one of the 8 symmetries (``dihedral``) and/or one bijection of ``permute_ids``
    and applies it to inputs and outputs together; copies equal to the puzzle or to an earlier
    copy are dropped, so a puzzle with fewer distinct versions gets fewer copies.
    """
    seen = {_pairs_key(puzzle.pairs)}
    copies = []
    for _ in range(num_aug):
        tid = int(rng.integers(8)) if dihedral else 0
        mapping = np.arange(vocab_size, dtype=np.int32)
        if permute_ids is not None:
            mapping[permute_ids] = rng.permutation(permute_ids)
        pairs = [tuple(mapping[dihedral_transform(a, tid) if a.ndim == 2 else a] for a in pair) for pair in puzzle.pairs]
        key = _pairs_key(pairs)
        if key in seen:
            continue
        seen.add(key)
        name = None if puzzle.name is None else f"{puzzle.name}{AUG_SEPARATOR}aug{len(copies) + 1}"
        copies.append(Puzzle(name, puzzle.group, pairs))
    return copies


def split_arrays(groups: List[List[Puzzle]], layout: Layout, identifier_of: Dict[str, int], ignore_unchanged: bool,
                 desc: str) -> Dict[str, np.ndarray]:
    """The five arrays of one split; named puzzles get identifiers from ``identifier_of`` (added when new)."""
    inputs, labels, identifiers, puzzle_indices, group_indices = [], [], [], [0], [0]
    for group in progress_bar(groups, desc=desc, unit="group", leave=False, delay=2):
        for puzzle in group:
            for inp, out in puzzle.pairs:
                inputs.append(lay_out(inp, layout.seq_len, layout.grid_size))
                labels.append(lay_out(out, layout.seq_len, layout.grid_size))
            if puzzle.name is None:
                identifiers.append(0)
            else:
                identifiers.append(identifier_of.setdefault(puzzle.name, len(identifier_of) + 1))
            puzzle_indices.append(len(inputs))
        group_indices.append(len(identifiers))
    x, y = np.stack(inputs), np.stack(labels)
    if ignore_unchanged:
        y = np.where(y == x, PAD_ID, y)  # label PAD is the ignored label (ignore_label_id 0)
    return {"inputs": x, "labels": y, "puzzle_identifiers": np.array(identifiers, dtype=np.int32),
            "puzzle_indices": np.array(puzzle_indices, dtype=np.int32),
            "group_indices": np.array(group_indices, dtype=np.int32)}


def build_custom_dataset(config: CustomBuildConfig) -> None:
    """Read ``config.train`` and ``config.test`` and write ``config.output_dir`` (atomically)."""
    check_output_dir(config.output_dir, [("--train", config.train), ("--test", config.test)])
    rng = np.random.default_rng(config.seed)
    splits = [read_examples(config.train), read_examples(config.test)]
    kinds = check_kinds(splits)
    vocab = make_vocab(config, splits)
    layout = make_layout(config, splits, kinds)
    token_id = {t: i for i, t in enumerate(vocab) if i >= FIRST_TOKEN_ID}

    dihedral = "dihedral" in config.augment
    permute_ids = None
    for a in config.augment:
        if a.startswith("permute="):
            missing = [t for t in permute_tokens(a) if t not in token_id]
            if missing:
                raise DatasetError(f"--augment {a}: token {missing[0]!r} is not in the vocabulary")
            permute_ids = np.array([token_id[t] for t in permute_tokens(a)], dtype=np.int32)
    if dihedral and (layout.input != "grid" or layout.output != "grid"):
        raise DatasetError(f"--augment dihedral needs grid inputs and outputs; this task's are a {layout.input} and a "
                           f"{layout.output}")

    train_groups = to_puzzles(splits[0], token_id)
    test_groups = to_puzzles(splits[1], token_id)
    if config.num_aug:
        for group in progress_bar(train_groups, desc="augment", unit="group", leave=False, delay=2):
            group[:] = [p for puzzle in list(group)
                        for p in [puzzle] + augment(puzzle, config.num_aug, dihedral, permute_ids, len(vocab), rng)]

    identifier_of: Dict[str, int] = {}
    arrays = {"train": split_arrays(train_groups, layout, identifier_of, config.ignore_unchanged, "train"),
              "test": split_arrays(test_groups, layout, identifier_of, config.ignore_unchanged, "test")}
    dtype = np.uint8 if len(vocab) <= 256 else np.int32
    needed = sum(v.size * (np.dtype(dtype).itemsize if k in ("inputs", "labels") else 4)
                 for a in arrays.values() for k, v in a.items())
    with atomic_output_dir(config.output_dir, needed_bytes=needed) as tmp:
        for split, a in arrays.items():
            a["inputs"], a["labels"] = a["inputs"].astype(dtype), a["labels"].astype(dtype)
            split_dir = os.path.join(tmp, split)
            save_set(split_dir, "all", a)
            num_puzzles = a["puzzle_identifiers"].size
            metadata = PuzzleDatasetMetadata(
                pad_id=PAD_ID, ignore_label_id=PAD_ID, blank_identifier_id=0, vocab_size=len(vocab),
                seq_len=layout.seq_len, num_puzzle_identifiers=len(identifier_of) + 1,
                total_groups=a["group_indices"].size - 1, mean_puzzle_examples=a["inputs"].shape[0] / num_puzzles,
                total_puzzles=num_puzzles, sets=["all"], task="custom")
            with open(os.path.join(split_dir, "dataset.json"), "w") as f:
                json.dump({**metadata.model_dump(), "vocab": vocab, "custom": layout.to_json(), "augment": config.augment}, f)
            print(f"{split}: {a['inputs'].shape[0]} examples in {num_puzzles} puzzles, "
                  f"{a['group_indices'].size - 1} groups")
        names = ["<blank>"] + sorted(identifier_of, key=identifier_of.get)
        save_identifiers(tmp, names)
    print(f"wrote {config.output_dir}: seq_len {layout.seq_len}, vocab {len(vocab)} "
          f"({' '.join(vocab[FIRST_TOKEN_ID:][:20])}{' ...' if len(vocab) > 22 else ''})")


def merge_repeated_augment(argv: Sequence[str]) -> List[str]:
    """``--augment dihedral --augment permute=...`` as ``--augment dihedral permute=...`` (argparse keeps the last)."""
    out: List[str] = []
    values: List[str] = []
    i, seen = 0, False
    while i < len(argv):
        arg = argv[i]
        if arg == "--augment" or arg.startswith("--augment="):
            if arg.startswith("--augment="):
                values.append(arg[len("--augment="):])
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            if not seen:
                out.append("--augment")  # placeholder position, filled below
                seen = True
            continue
        out.append(arg)
        i += 1
    if seen:
        at = out.index("--augment")
        out[at + 1:at + 1] = values
    return out


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Build the dataset the command line asks for (one option per field of :class:`CustomBuildConfig`)."""
    argv = merge_repeated_augment(list(sys.argv[1:] if argv is None else argv))
    build_custom_dataset(parse_config(CustomBuildConfig, argv, description=__doc__))


if __name__ == "__main__":
    run_cli(main)
