"""tasks/custom.py: puzzles in the notation of a custom task's examples file, read with the
vocabulary and shapes its dataset.json stores; answers written back in the same notation."""
import json

import numpy as np
import pytest

from conftest import load_split
from dataset.build_custom_dataset import CustomBuildConfig, build_custom_dataset
from tasks import get_codec
from tasks.base import PuzzleError

EXAMPLES = {
    "string": [{"input": "cab", "output": "abc"}, {"input": "ba", "output": "ab"}],
    "list": [{"input": [3, 10, 2], "output": [2, 3, 10]}, {"input": [7], "output": [7]}],
    "grid": [{"input": [[1, 2, 3], [4, 5, 6]], "output": [[6, 5], [4, 3], [2, 1]]}, {"input": [[0]], "output": [[9, 9]]}],
}


def built(tmp_path, examples, **options):
    tmp_path.mkdir(exist_ok=True)
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in examples))
    out = tmp_path / "data"
    build_custom_dataset(CustomBuildConfig(train=str(src), test=str(src), output_dir=str(out), **options))
    return out


@pytest.mark.parametrize("shape", sorted(EXAMPLES))
def test_round_trip_in_the_files_notation(tmp_path, shape):
    examples = EXAMPLES[shape]
    data = built(tmp_path, examples)
    codec = get_codec("custom")(data_path=str(data))
    split = load_split(data, "test")
    for example, x, y in zip(examples, split["inputs"], split["labels"]):
        text = codec.format_tokens(x)
        assert text == (example["input"] if shape == "string" else json.dumps(example["input"]))
        (puzzle,) = codec.read(text)
        np.testing.assert_array_equal(codec.rows(puzzle)[0].inputs, x)
        assert codec.answer(puzzle, y) == example["output"]
        (line,) = codec.read(json.dumps(example))  # a line of the examples file: the output is the truth
        np.testing.assert_array_equal(codec.rows(line)[0].labels, y)


def test_named_puzzles_get_their_identifier_and_bad_puzzles_one_line(tmp_path):
    data = built(tmp_path, [{"input": "ab", "output": "ba", "puzzle": "swap"}])
    codec = get_codec("custom")(data_path=str(data))
    (puzzle,) = codec.read('{"input": "ba", "puzzle": "swap"}')
    assert codec.rows(puzzle)[0].identifier == 1
    assert codec.check_shapes(2, 4) is None and "vocabulary has 4 tokens" in codec.check_shapes(2, 5)
    with pytest.raises(PuzzleError, match=r"puzzles.txt line 2: input token 'z' is not in the vocabulary \(a b\)"):
        codec.read("ab\naz\n", source="puzzles.txt")
    with pytest.raises(PuzzleError, match=r"input has 3 tokens; this checkpoint's seq_len is 2"):
        codec.read("aba")
    lists = get_codec("custom")(data_path=str(built(tmp_path / "l", EXAMPLES["list"])))
    with pytest.raises(PuzzleError, match=r"input is a string; this task's inputs are lists"):
        lists.read('"ab"')
    with pytest.raises(PuzzleError, match=r"not valid JSON \(.*\); this task's inputs are lists"):
        lists.read("[3, 10")
