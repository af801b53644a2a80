"""dataset/build_custom_dataset.py: round trips of every input shape from JSONL and CSV, vocabulary
and PAD, ignored unchanged positions, puzzles and groups, augmentation, and one line per bad input."""
import csv
import json

import numpy as np
import pytest

from conftest import load_split
from dataset.build_custom_dataset import CustomBuildConfig, build_custom_dataset, main
from dataset.common import DatasetError, dihedral_transform, run_cli
from dataset.custom import EOS_ID, PAD_ID, read_back, to_value


def write_jsonl(path, examples):
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return str(path)


def write_csv(path, examples):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["input", "output"])
        for e in examples:
            w.writerow([v if isinstance(v, str) else json.dumps(v) for v in (e["input"], e["output"])])
    return str(path)


def build(tmp_path, train, test=None, fmt="jsonl", **options):
    write = write_jsonl if fmt == "jsonl" else write_csv
    out = tmp_path / "data"
    build_custom_dataset(CustomBuildConfig(train=write(tmp_path / f"train.{fmt}", train),
                                           test=write(tmp_path / f"test.{fmt}", test or train[:1]),
                                           output_dir=str(out), **options))
    meta = json.loads((out / "train" / "dataset.json").read_text())
    return out, meta


def decode(meta, row, what):
    layout = meta["custom"]
    ids = read_back(row, layout[what], layout["grid_size"])
    return to_value(ids, layout[what], layout[f"{what}_ints"], meta["vocab"])


SHAPES = {
    "string": [{"input": "cab", "output": "abc"}, {"input": "ba", "output": "ab"}, {"input": "c", "output": "c"}],
    "list": [{"input": [3, 10, 2], "output": [2, 3, 10]}, {"input": [7], "output": [7]}],
    "words": [{"input": ["to", "be"], "output": ["be", "to"]}, {"input": ["or"], "output": ["or"]}],
    "grid": [{"input": [[1, 2, 3], [4, 5, 6]], "output": [[6, 5], [4, 3], [2, 1]]},
             {"input": [[0]], "output": [[9, 9]]}],
}


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_round_trip_every_shape(tmp_path, shape, fmt):
    examples = SHAPES[shape]
    out, meta = build(tmp_path, examples, examples[::-1], fmt=fmt)
    assert meta["task"] == "custom" and meta["pad_id"] == PAD_ID == 0 and meta["ignore_label_id"] == 0
    for split, expected in (("train", examples), ("test", examples[::-1])):
        data = load_split(out, split)
        assert [decode(meta, x, "input") for x in data["inputs"]] == [e["input"] for e in expected]
        assert [decode(meta, y, "output") for y in data["labels"]] == [e["output"] for e in expected]
        assert data["inputs"].shape[1] == meta["seq_len"]
    if shape == "grid":
        assert meta["custom"]["grid_size"] == 3 and meta["seq_len"] == 9
        row = load_split(out, "train")["inputs"][0].reshape(3, 3)  # [[1,2,3],[4,5,6]] on a 3x3 canvas
        assert row[2].tolist() == [EOS_ID] * 3 and (row[:2] >= 2).all()
    else:
        assert meta["seq_len"] == max(len(e[k]) for e in examples for k in ("input", "output"))


def test_vocabulary_order_pad_and_end_marker(tmp_path):
    out, meta = build(tmp_path, [{"input": [10, 2, 9], "output": [2, 9, 10]}, {"input": [1], "output": [1]}])
    assert meta["vocab"] == ["<pad>", "<eos>", "1", "2", "9", "10"] and meta["vocab_size"] == 6
    data = load_split(out, "train")
    assert data["inputs"][1].tolist() == [2, EOS_ID, PAD_ID]  # token "1", end marker, PAD
    out, meta = build(tmp_path, [{"input": "ba", "output": "ab"}], vocab=["b", "a", "c"])
    assert meta["vocab"] == ["<pad>", "<eos>", "b", "a", "c"]
    assert load_split(out, "train")["inputs"][0].tolist() == [2, 3]


def test_unknown_tokens_name_the_line(tmp_path):
    train = [{"input": "ab", "output": "ba"}, {"input": "ac", "output": "ca"}]
    with pytest.raises(DatasetError, match=r"train.jsonl: line 2: input token 'c' is not in the vocabulary \(--vocab"):
        build(tmp_path, train, vocab=["a", "b"])
    with pytest.raises(DatasetError, match=r"test.jsonl: line 1: output token 'z' is not in the vocabulary"):
        build(tmp_path, train, [{"input": "ab", "output": "zz"}])


def test_ignore_unchanged(tmp_path):
    out, meta = build(tmp_path, [{"input": "abca", "output": "abbb"}], ignore_unchanged=True)
    x, y = load_split(out, "train")["inputs"][0], load_split(out, "train")["labels"][0]
    assert (y == 0).tolist() == [True, True, False, False]  # positions 0, 1 unchanged: label = ignore id
    assert y[2:].tolist() == [x[1], x[1]]  # "b" where the output changed


def test_puzzles_groups_and_identifiers(tmp_path):
    train = [{"input": "ab", "output": "ba", "puzzle": "swap"}, {"input": "ca", "output": "ac", "puzzle": "swap"},
             {"input": "aa", "output": "aa", "puzzle": "keep", "group": "g"}, {"input": "bc", "output": "bc"},
             {"input": "cc", "output": "cc", "puzzle": "keep2", "group": "g"}]
    test = [{"input": "bb", "output": "bb", "puzzle": "swap"}, {"input": "ab", "output": "ab", "puzzle": "new"}]
    out, meta = build(tmp_path, train, test)
    data = load_split(out, "train")
    names = json.loads((out / "identifiers.json").read_text())
    assert names == ["<blank>", "swap", "keep", "keep2", "new"]
    # puzzles: swap (2 examples), keep + keep2 (group g), the unnamed one (blank identifier, own group)
    assert data["puzzle_identifiers"].tolist() == [1, 2, 3, 0]
    assert data["puzzle_indices"].tolist() == [0, 2, 3, 4, 5]
    assert data["group_indices"].tolist() == [0, 1, 3, 4]
    assert [decode(meta, x, "input") for x in data["inputs"]] == ["ab", "ca", "aa", "cc", "bc"]
    test_data = load_split(out, "test")
    assert test_data["puzzle_identifiers"].tolist() == [1, 4]  # the train name's identifier; a new name a new one
    assert meta["num_puzzle_identifiers"] == 5 == json.loads((out / "test" / "dataset.json").read_text())["num_puzzle_identifiers"]
    with pytest.raises(DatasetError, match=r"line 2: puzzle 'p' is in group 'y' here but in group 'x' on line 1"):
        build(tmp_path, [{"input": "a", "output": "a", "puzzle": "p", "group": "x"},
                         {"input": "a", "output": "a", "puzzle": "p", "group": "y"}])


def test_dihedral_keeps_input_and_output_aligned(tmp_path):
    grid_in, grid_out = [[1, 2], [3, 4]], [[1, 2], [3, 5]]  # all 8 symmetries of both differ
    out, meta = build(tmp_path, [{"input": grid_in, "output": grid_out}], num_aug=30, augment=["dihedral"], seed=1)
    data = load_split(out, "train")
    assert data["group_indices"].tolist() == [0, data["puzzle_identifiers"].size]  # every copy in the one group
    pairs = [(decode(meta, x, "input"), decode(meta, y, "output")) for x, y in zip(data["inputs"], data["labels"])]
    assert pairs[0] == (grid_in, grid_out) and len(pairs) == 8  # duplicates dropped: the 8 symmetries once each
    assert len({json.dumps(p) for p in pairs}) == 8
    for inp, outp in pairs:
        tids = [t for t in range(8) if dihedral_transform(np.array(grid_in), t).tolist() == inp]
        assert len(tids) == 1 and dihedral_transform(np.array(grid_out), tids[0]).tolist() == outp


def test_permutation_maps_input_and_output_alike(tmp_path):
    train = [{"input": "0123x", "output": "3210x"}, {"input": "5x", "output": "x5"}]
    out, meta = build(tmp_path, train, num_aug=4, augment=["permute=0123456789"], vocab=list("0123456789x"), seed=3)
    data = load_split(out, "train")
    groups = data["group_indices"]
    assert groups.size == 3 and groups[1] == 5  # 1 + 4 copies of the first example
    for g in range(2):
        x0, y0 = decode(meta, data["inputs"][groups[g]], "input"), decode(meta, data["labels"][groups[g]], "output")
        for i in range(groups[g] + 1, groups[g + 1]):
            x, y = decode(meta, data["inputs"][i], "input"), decode(meta, data["labels"][i], "output")
            mapping = dict(zip(x0, x))
            assert mapping["x"] == "x" and len(set(mapping.values())) == len(mapping)  # a bijection, "x" untouched
            assert "".join(mapping[c] for c in y0) == y  # the same mapping on the output
            assert (x, y) != (x0, y0)


def test_lengths_and_bad_lines(tmp_path):
    with pytest.raises(DatasetError, match=r"train.jsonl: line 2: output has 4 tokens, more than --seq-len 3"):
        build(tmp_path, [{"input": "ab", "output": "ab"}, {"input": "ab", "output": "abab"}], seq_len=3)
    _, meta = build(tmp_path, [{"input": "ab", "output": "ab"}], seq_len=6)
    assert meta["seq_len"] == 6
    with pytest.raises(DatasetError, match=r"line 1: input grid is 3x1, larger than --grid-size 2"):
        build(tmp_path, [{"input": [[1], [2], [3]], "output": [[1]]}], grid_size=2)
    with pytest.raises(DatasetError, match=r"line 2: output is a list, but on .* line 1 it is a string"):
        build(tmp_path, [{"input": "ab", "output": "ab"}, {"input": "ab", "output": ["a"]}])
    (tmp_path / "bad.jsonl").write_text('{"input": "a", "output": "a"}\n\n{"input": "a", "output": \n')
    (tmp_path / "missing.jsonl").write_text('{"input": "a"}\n')
    (tmp_path / "bad.csv").write_text('input,output\nab,ba\nab\n')
    (tmp_path / "empty.jsonl").write_text("\n")
    (tmp_path / "ragged.jsonl").write_text('{"input": [[1, 2], [3]], "output": [[1]]}\n')
    for name, message in [("bad.jsonl", r"bad.jsonl: line 3: not valid JSON"),
                          ("missing.jsonl", r"missing.jsonl: line 1: missing 'output'"),
                          ("bad.csv", r"bad.csv: line 3: expected 2 comma-separated fields"),
                          ("empty.jsonl", r"empty.jsonl: no examples \(empty file\)"),
                          ("ragged.jsonl", r"ragged.jsonl: line 1: input: grid rows must be non-empty and of equal length")]:
        with pytest.raises(DatasetError, match=message):
            build_custom_dataset(CustomBuildConfig(train=str(tmp_path / name), test=str(tmp_path / name),
                                                   output_dir=str(tmp_path / "never")))
    assert not (tmp_path / "never").exists()


def test_command_line_errors_are_one_line(tmp_path, capsys):
    train = write_jsonl(tmp_path / "t.jsonl", [{"input": "ab", "output": "ba"}])
    cases = [(["--train", train], 2, "--train FILE and --test FILE are both required"),
             (["--train", train, "--test", train, "--num-aug", "2"], 2, "--num-aug needs --augment"),
             (["--train", train, "--test", train, "--num-aug", "2", "--augment", "rotate"], 2, "--augment expects 'dihedral'"),
             (["--train", train, "--test", train, "--num-aug", "2", "--augment", "dihedral"], 2,
              "--augment dihedral needs grid inputs and outputs"),
             (["--train", train, "--test", train, "--num-aug", "2", "--augment", "permute=az"], 2,
              "--augment permute=az: token 'z' is not in the vocabulary")]
    for argv, status, message in cases:
        with pytest.raises(SystemExit) as e:
            run_cli(main, argv + ["--output-dir", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert e.value.code == status and err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_augment_options_repeat_and_combine(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [{"input": [[1, 2], [3, 4]], "output": [[4, 3], [2, 1]]}])
    out = tmp_path / "out"
    main(["--train", train, "--test", train, "--output-dir", str(out), "--augment", "dihedral", "--num-aug", "6",
          "--augment", "permute=1234"])
    meta = json.loads((out / "train" / "dataset.json").read_text())
    data = load_split(out, "train")
    grids = [decode(meta, x, "input") for x in data["inputs"]]
    assert 1 < len(grids) <= 7 and len({json.dumps(g) for g in grids}) == len(grids)  # duplicates dropped
    # some copy is neither a symmetry of the original nor keeps its colours: both transforms were drawn
    symmetries = {json.dumps(dihedral_transform(np.array([[1, 2], [3, 4]]), t).tolist()) for t in range(8)}
    assert any(json.dumps(g) not in symmetries for g in grids)


def test_output_folder_holding_the_sources_or_other_files_is_refused(tmp_path, capsys):
    # --output-dir cu with the sources in cu/: refused, not replaced by a dataset that drops the sources.
    cu = tmp_path / "cu"
    (cu / "notes").mkdir(parents=True)
    train = write_jsonl(cu / "train.jsonl", [{"input": "ab", "output": "ba"}])
    test = write_jsonl(cu / "test.jsonl", [{"input": "ba", "output": "ab"}])
    elsewhere = write_jsonl(tmp_path / "t.jsonl", [{"input": "ab", "output": "ba"}])
    before = {p: p.read_bytes() if p.is_file() else None for p in cu.rglob("*")}
    for argv, message in [
            (["--train", train, "--test", test], f"--train {train} is inside --output-dir {cu}, which the build "
             "replaces as a whole: choose another output folder"),
            (["--train", elsewhere, "--test", test], f"--test {test} is inside --output-dir {cu}"),
            (["--train", elsewhere, "--test", elsewhere],
             f"--output-dir {cu} holds files that are not a dataset (notes/, test.jsonl, train.jsonl): "
             "choose an empty or new folder")]:
        with pytest.raises(SystemExit) as e:
            run_cli(main, argv + ["--output-dir", str(cu)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
        assert {p: p.read_bytes() if p.is_file() else None for p in cu.rglob("*")} == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cu", "t.jsonl"]


def test_byte_order_mark_is_dropped(tmp_path):
    examples = [{"input": "ab", "output": "ba", "puzzle": "p"}, {"input": "ba", "output": "ab", "puzzle": "p"}]
    for fmt, write in (("jsonl", write_jsonl), ("csv", write_csv)):
        plain = write(tmp_path / f"plain.{fmt}", examples)
        bom = tmp_path / f"bom.{fmt}"  # as Windows editors save UTF-8
        bom.write_bytes(b"\xef\xbb\xbf" + (tmp_path / f"plain.{fmt}").read_bytes())
        for name, path in (("a", plain), ("b", str(bom))):
            build_custom_dataset(CustomBuildConfig(train=path, test=path, output_dir=str(tmp_path / name)))
        for split in ("train", "test"):
            a, b = load_split(tmp_path / "a", split), load_split(tmp_path / "b", split)
            assert all(np.array_equal(a[k], b[k]) for k in a)
        assert (tmp_path / "a" / "identifiers.json").read_text() == (tmp_path / "b" / "identifiers.json").read_text()


def test_unknown_fields_name_the_nearest_known_one(tmp_path):
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text('{"input": "ab", "output": "ba"}\n{"input": "ab", "output": "ba", "puzzel": "p"}\n')
    (tmp_path / "t.csv").write_text("input,output,grup\nab,ba,g\n")
    (tmp_path / "u.jsonl").write_text('{"input": "ab", "output": "ba", "weight": 2}\n')
    for name, message in [("t.jsonl", "line 2: unknown field 'puzzel' (did you mean 'puzzle'?)"),
                          ("t.csv", "line 1: unknown column 'grup' (did you mean 'group'?)"),
                          ("u.jsonl", "line 1: unknown field 'weight' (known: input, output, puzzle, group)")]:
        with pytest.raises(DatasetError) as e:
            build_custom_dataset(CustomBuildConfig(train=str(tmp_path / name), test=str(tmp_path / name),
                                                   output_dir=str(tmp_path / "out")))
        assert str(e.value) == f"{tmp_path / name}: {message}"
    assert not (tmp_path / "out").exists()
