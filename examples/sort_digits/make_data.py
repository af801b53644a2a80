"""Generate the "sort a list of digits" task as JSONL for dataset/build_custom_dataset.py.

    python examples/sort_digits/make_data.py --out data/sort-digits-src --length 6 --train 10000 --test 1000

Each line is ``{"input": "503891", "output": "013589"}``: a random string of ``--length`` digits and
the same digits in ascending order. The output is not a copy of the input: every position
depends on the whole input (position k holds the k-th smallest digit), so the model has to count.
Held-out inputs never occur in the train file.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np


def make_examples(count: int, length: int, rng: np.random.Generator, exclude: frozenset = frozenset()) -> list:
    """``count`` distinct digit strings of ``length`` (none in ``exclude``) with their sorted versions."""
    if count + len(exclude) > 10 ** length:
        raise SystemExit(f"error: --length {length} has only {10 ** length} distinct inputs")
    seen, examples = set(exclude), []
    while len(examples) < count:
        digits = rng.integers(0, 10, size=(count, length))
        for row in digits:
            text = "".join(map(str, row))
            if text not in seen and len(examples) < count:
                seen.add(text)
                examples.append({"input": text, "output": "".join(sorted(text))})
    return examples


def write_jsonl(path: str, examples: list) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in examples)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/sort-digits-src", help="folder for train.jsonl and test.jsonl")
    parser.add_argument("--train", type=int, default=10000, help="training examples")
    parser.add_argument("--test", type=int, default=1000, help="held-out examples")
    parser.add_argument("--length", type=int, default=6, help="digits per list")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    test = make_examples(args.test, args.length, rng)
    train = make_examples(args.train, args.length, rng, exclude=frozenset(e["input"] for e in test))
    write_jsonl(os.path.join(args.out, "train.jsonl"), train)
    write_jsonl(os.path.join(args.out, "test.jsonl"), test)
    print(f"wrote {len(train)} train and {len(test)} test examples to {args.out}")


if __name__ == "__main__":
    main()
