"""dataset/arc_grid.py: the one augmented-name format (written and read back), shared by builder and evaluator.
(Grid conversion, hashing and cropping are checked against the original in test_build_arc_dataset.py.)"""
import ast
import os

import numpy as np

from dataset.arc_grid import aug_name, aug_names, parse_aug_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_aug_names_write_what_parse_aug_name_reads():
    rng = np.random.default_rng(0)
    maps = np.stack([np.concatenate([[0], rng.permutation(9) + 1]) for _ in range(5)]).astype(np.uint8)
    trans = [0, 3, 7, 1, 6]
    names = aug_names("a1b2", trans, maps)
    assert names[1] == "a1b2|||t3|||" + "".join(str(int(c)) for c in maps[1])
    assert names == [aug_name("a1b2", t, m) for t, m in zip(trans, maps)]
    for name, t, m in zip(names, trans, maps):
        base, trans_id, mapping = parse_aug_name(name)
        assert (base, trans_id) == ("a1b2", t) and np.array_equal(mapping, m)
    base, trans_id, mapping = parse_aug_name("plain")
    assert (base, trans_id) == ("plain", 0) and np.array_equal(mapping, np.arange(10))
    assert aug_names("x", [], np.zeros((0, 10), np.uint8)) == []


def test_the_format_and_the_evaluator_live_outside_the_builder():
    imported = set()
    for node in ast.walk(ast.parse(open(os.path.join(ROOT, "evaluators", "arc.py")).read())):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    assert "dataset.arc_grid" in imported and "dataset.build_arc_dataset" not in imported
    builder = ast.parse(open(os.path.join(ROOT, "dataset", "build_arc_dataset.py")).read())
    defined = {node.name for node in ast.walk(builder) if isinstance(node, ast.FunctionDef)}
    assert not defined & {"aug_name", "inverse_aug", "grid_hash", "crop_arc_grid", "arc_grid_to_np"}
    assert all(not (isinstance(node, ast.Name) and node.id == "PUZZLE_ID_SEPARATOR") for node in ast.walk(builder))
