"""tasks/views.py and each codec's views: every view is a true symmetry of its task, for every
grid size (a view of a solved puzzle, mapped back, is the original; a valid solution stays a
valid solution of the viewed puzzle), view 0 is the puzzle itself, and draws are reproducible."""
import json

import numpy as np
import pytest

from conftest import load_split
from dataset.common import dihedral_transform
from dataset.sudoku import SUDOKU_BOXES, box_shape, inconsistent_with_clues, invalid_solutions, shuffle_sudoku
from tasks import get_codec
from tasks.views import (DIHEDRAL_COMPOSE, DIHEDRAL_INVERSE, CanvasViews, CellViews, canvas_map, crop_shapes,
                         dihedral_positions, row_keys)

VIEWS = 16


def test_dihedral_tables_and_maps_agree_with_dihedral_transform():
    rng = np.random.default_rng(0)
    for t in range(8):
        x = rng.integers(0, 9, size=(5, 5))
        assert (x.ravel()[dihedral_positions(5)[t]] == dihedral_transform(x, t).ravel()).all()
        assert (dihedral_transform(dihedral_transform(x, t), DIHEDRAL_INVERSE[t]) == x).all()
        for u in range(8):
            assert (dihedral_transform(dihedral_transform(x, u), t) == dihedral_transform(x, DIHEDRAL_COMPOSE[t, u])).all()
    # On a canvas: any h x w grid top-left, every map, as dihedral_transform of the grid laid out again.
    side, rows, expected, shapes, ts = 7, [], [], [], []
    for h, w in [(1, 1), (2, 5), (5, 2), (7, 7), (7, 3), (3, 7), (4, 6)]:
        grid = rng.integers(2, 12, size=(h, w))
        for t in range(8):
            rows.append(lay(grid, side))
            expected.append(lay(dihedral_transform(grid, t), side))
            shapes.append((h, w))
            ts.append(t)
    rows = np.stack(rows)
    np.testing.assert_array_equal(crop_shapes(rows, side), np.array(shapes))
    mapped = canvas_map(rows, np.array(shapes), np.array(ts), np.broadcast_to(np.arange(12), (len(ts), 12)), side,
                        eos_corner=True)
    np.testing.assert_array_equal(mapped, np.stack(expected))


def lay(grid, side, corner=True):
    """A grid top-left on a canvas with end markers (1) right of and below it (custom tasks' lay_out)."""
    canvas = np.zeros((side, side), dtype=np.int64)
    h, w = grid.shape
    canvas[:h, :w] = grid
    if w < side:
        canvas[:h, w] = 1
    if h < side:
        canvas[h, :min(w + int(corner), side)] = 1
    return canvas.ravel()


def test_crop_shapes_reads_grids_as_the_arc_evaluator():
    from dataset.arc_grid import crop_arc_grid
    rng = np.random.default_rng(1)
    preds = rng.choice(12, size=(200, 900), p=[0.02, 0.02] + [0.096] * 10)  # noisy predictions
    preds[:50, 40:] = 0
    shapes = crop_shapes(preds, 30)
    assert [tuple(s) for s in shapes] == [crop_arc_grid(p).shape for p in preds]


def keys_are_reproducible(codec, inputs, **kwargs):
    a, b = codec.views(inputs, VIEWS, seed=3, **kwargs), codec.views(inputs, VIEWS, seed=3, **kwargs)
    np.testing.assert_array_equal(a.forward(inputs), b.forward(inputs))
    other = codec.views(inputs, VIEWS, seed=4, **kwargs)
    assert not np.array_equal(a.forward(inputs), other.forward(inputs))
    # A row's views depend on the row, not on the batch it comes in.
    np.testing.assert_array_equal(codec.views(inputs[1:2], VIEWS, seed=3, **{k: v[1:2] for k, v in kwargs.items()})
                                  .forward(inputs[1:2])[0], a.forward(inputs)[1])
    return a


def sudoku_solutions(n, count, rng):
    """Valid n x n solutions: the pattern grid under random builder shuffles."""
    br, bc = box_shape(n)
    r, c = np.divmod(np.arange(n * n), n)
    base = ((bc * (r % br) + r // br + c) % n + 1).astype(np.uint8)
    grids = np.repeat(base[None], count, axis=0)
    _, solutions = shuffle_sudoku(grids, grids, n, rng)
    assert not invalid_solutions(solutions, n).any()
    return solutions


@pytest.mark.parametrize("n", sorted(SUDOKU_BOXES))
def test_sudoku_views_are_symmetries(n):
    rng = np.random.default_rng(n)
    solutions = sudoku_solutions(n, 8, rng)
    puzzles = np.where(rng.random(solutions.shape) < 0.5, 0, solutions)
    x, y = puzzles.astype(np.int32) + 1, solutions.astype(np.int32) + 1  # the builder's tokens
    codec = get_codec("sudoku")(seq_len=n * n)
    views = keys_are_reproducible(codec, x)
    assert isinstance(views, CellViews) and views.shape == (8, VIEWS)
    vx, vy = views.forward(x), views.forward(y)
    np.testing.assert_array_equal(vx[:, 0], x)  # view 0 is the puzzle itself
    flat_x, flat_y = vx.reshape(-1, n * n) - 1, vy.reshape(-1, n * n) - 1
    assert not invalid_solutions(flat_y, n).any()  # every view of a solution is a solution ...
    assert not inconsistent_with_clues(flat_x, flat_y).any()  # ... of the view of its puzzle
    assert (np.count_nonzero(flat_x, axis=1) == np.repeat(np.count_nonzero(puzzles, axis=1), VIEWS)).all()
    np.testing.assert_array_equal(views.back(vy), np.repeat(y[:, None], VIEWS, axis=1))
    np.testing.assert_array_equal(views.back(vx), np.repeat(x[:, None], VIEWS, axis=1))
    assert len({v.tobytes() for v in vx.reshape(-1, n * n)}) == 8 * VIEWS  # 16 distinct views of 8 distinct puzzles
    # The codec's own rule check agrees on a few.
    (puzzle,) = codec.read(codec.format_tokens(vx[0, 5]))
    assert codec.problem(puzzle, vy[0, 5]) is None
    # Transposes happen exactly when boxes are square.
    transposed = views.positions[..., 0] % n == views.positions[..., 1] % n  # view row 0 is a column of the row
    assert transposed.any() == (box_shape(n)[0] == box_shape(n)[1])


@pytest.mark.parametrize("size", [7, 10, 15])
def test_maze_views_are_the_8_symmetries(size):
    from dataset.maze import CHAR_TO_TOKEN, generate_mazes
    questions, answers, _ = generate_mazes(3, size, np.random.default_rng(size))
    x, y = CHAR_TO_TOKEN[questions].astype(np.int32), CHAR_TO_TOKEN[answers].astype(np.int32)
    codec = get_codec("maze")(seq_len=size * size)
    views = keys_are_reproducible(codec, x)
    vx, vy = views.forward(x), views.forward(y)
    np.testing.assert_array_equal(vx[:, 0], x)
    for b in range(3):
        forms = {vx[b, v].tobytes() for v in range(8)}
        assert forms == {dihedral_transform(x[b].reshape(size, size), t).tobytes() for t in range(8)}
        for v in range(VIEWS):
            (puzzle,) = codec.read(codec.format_tokens(vx[b, v]))
            assert codec.problem(puzzle, vy[b, v]) is None  # the viewed path is a shortest path of the viewed maze
    np.testing.assert_array_equal(views.back(vy), np.repeat(y[:, None], VIEWS, axis=1))


def test_arc_views_are_the_builders_versions(tmp_path):
    from dataset.arc_grid import crop_arc_grid, inverse_aug
    from dataset.build_arc_dataset import ARCBuildConfig, build_arc_dataset
    rng = np.random.default_rng(0)

    def pair(h, w):
        x = rng.integers(0, 10, size=(h, w))
        return {"input": x.tolist(), "output": np.rot90(x).tolist()}

    raw = tmp_path / "raw"
    for subset in ("training", "evaluation"):
        (raw / subset).mkdir(parents=True)
        (raw / subset / f"{subset}_task.json").write_text(
            json.dumps({"train": [pair(3, 4), pair(5, 2)], "test": [pair(4, 6), pair(2, 3)]}))
    build_arc_dataset(ARCBuildConfig(dataset_dirs=[str(raw)], output_dir=str(tmp_path / "a"), num_aug=5))
    codec = get_codec("arc")(seq_len=900, data_path=str(tmp_path / "a"))
    test = load_split(tmp_path / "a", "test")
    ids = test["puzzle_identifiers"][np.searchsorted(test["puzzle_indices"], np.arange(len(test["inputs"])), side="right") - 1]
    x, y, ids = test["inputs"].astype(np.int32), test["labels"].astype(np.int32), ids.astype(np.int64)
    row_of = {(int(i), k): r for k in range(2) for r, i in enumerate(ids) if r % 2 == k}  # (identifier, test input) -> row
    names = codec.identifier_names()
    # From any version of a test input, every view is exactly the builder's row of the view's version.
    for start in [0, 1, 6, 7]:
        views = codec.views(x[start:start + 1], 8, seed=1, identifiers=ids[start:start + 1])
        assert isinstance(views, CanvasViews) and views.identifiers[0, 0] == ids[start]
        assert sorted(set(views.identifiers[0].tolist())) == sorted(set(ids.tolist()))  # all 6 versions, then again
        vx, vy = views.forward(x[start:start + 1]), views.forward(y[start:start + 1])
        for v in range(8):
            r = row_of[(int(views.identifiers[0, v]), start % 2)]
            np.testing.assert_array_equal(vx[0, v], x[r])
            np.testing.assert_array_equal(vy[0, v], y[r])
        np.testing.assert_array_equal(views.back(vy)[0], np.repeat(y[start:start + 1], 8, axis=0))
    # Back maps read predictions as the evaluator does: crop, then undo the version.
    plain = np.array([row_of[(int(ids[0]), 0)]])
    views = codec.views(x[plain], 6, identifiers=ids[plain])
    preds = rng.choice(12, size=(1, 6, 900), p=[0.01, 0.01] + [0.098] * 10)
    preds[..., 300:] = 0
    back = views.back(preds)
    for v in range(6):
        _, undo = inverse_aug(names[int(views.identifiers[0, v])])
        np.testing.assert_array_equal(crop_arc_grid(back[0, v]), undo(crop_arc_grid(preds[0, v])))
    with pytest.raises(ValueError, match="puzzle identifiers"):
        codec.views(x[:1], 2)


@pytest.mark.parametrize("kind", ["2d", "1d"])
def test_arc_views_on_a_fitted_canvas_map_back_exactly(arc_tiny, kind):
    """Every view of every test row of a 5x5-grid (canvas 6x6) and a 1xN-grid (canvas 2x13) dataset:
    a trained version's view is the builder's own row of that version, and every view, the fresh
    augmentations of blank-identifier rows among them, maps inputs and answers back exactly; a
    prediction's back map is the evaluator's (crop, then undo the version)."""
    from dataset.arc import view_transforms
    from dataset.arc_grid import Canvas, crop_arc_grid, inverse_aug, parse_aug_name
    data, _ = arc_tiny[kind]
    meta = json.loads((data / "test" / "dataset.json").read_text())
    canvas = Canvas(meta["canvas_height"], meta["canvas_width"])
    assert str(canvas) == {"2d": "6x6", "1d": "2x13"}[kind]
    codec = get_codec("arc").for_run(canvas.seq_len, [str(data)])
    test = load_split(data, "test")
    ids = np.repeat(test["puzzle_identifiers"], np.diff(test["puzzle_indices"])).astype(np.int64)
    x, y = test["inputs"].astype(np.int32), test["labels"].astype(np.int32)
    names = codec.identifier_names()
    nth = [int((ids[:r] == ids[r]).sum()) for r in range(len(ids))]  # which test input of its task a row holds
    row_of = {(int(ids[r]), nth[r]): r for r in range(len(ids))}
    versions = 4  # the original and 3 augmentations per task
    views = codec.views(x, 2 * versions, seed=5, identifiers=ids)
    vx, vy = views.forward(x), views.forward(y)
    for r in range(len(x)):
        shown = views.identifiers[r]
        assert shown[0] == ids[r] and len(set(shown[:versions].tolist())) == versions  # every version once, then again
        assert {parse_aug_name(names[int(i)])[0] for i in shown} == {parse_aug_name(names[int(ids[r])])[0]}
        for v in range(2 * versions):
            twin = row_of[(int(shown[v]), nth[r])]
            np.testing.assert_array_equal(vx[r, v], x[twin])
            np.testing.assert_array_equal(vy[r, v], y[twin])
    np.testing.assert_array_equal(views.back(vx), np.repeat(x[:, None], 2 * versions, axis=1))
    np.testing.assert_array_equal(views.back(vy), np.repeat(y[:, None], 2 * versions, axis=1))

    # Blank-identifier rows: fresh augmentations on the canvas, colour 0 kept, mapped back exactly.
    blank = codec.views(x, 64, seed=1, identifiers=np.zeros(len(x), dtype=np.int64))
    assert (blank.identifiers == 0).all() and (blank.dihedral[:, 0] == 0).all()
    assert set(blank.dihedral.ravel().tolist()) == set(view_transforms(canvas)) == ({0, 4} if kind == "1d" else set(range(8)))
    assert (blank.tokens[..., :3] == np.arange(3)).all()  # PAD, EOS and colour 0 stay
    bx, by = blank.forward(x), blank.forward(y)
    np.testing.assert_array_equal(blank.back(bx), np.repeat(x[:, None], 64, axis=1))
    np.testing.assert_array_equal(blank.back(by), np.repeat(y[:, None], 64, axis=1))
    for r in range(len(x)):
        grid = crop_arc_grid(x[r], canvas)
        for v in range(64):
            shown = crop_arc_grid(bx[r, v], canvas)
            colours = blank.tokens[r, v, 2:] - 2
            assert np.array_equal(shown, colours[dihedral_transform(grid, blank.dihedral[r, v])])
            assert shown.shape[0] <= canvas.height - 1 and shown.shape[1] <= canvas.width - 1  # inside the canvas

    # A prediction maps back as the evaluator reads it.
    rng = np.random.default_rng(0)
    preds = rng.choice(12, size=(len(x), 2 * versions, canvas.seq_len), p=[0.02, 0.02] + [0.096] * 10)
    back = views.back(preds)
    for r in range(len(x)):
        _, own_t, own_map = parse_aug_name(names[int(ids[r])])
        for v in range(2 * versions):
            _, undo_view = inverse_aug(names[int(views.identifiers[r, v])])
            expected = own_map[dihedral_transform(undo_view(crop_arc_grid(preds[r, v], canvas)), own_t)]  # to the row's version
            np.testing.assert_array_equal(crop_arc_grid(back[r, v], canvas), expected)


def build_custom(tmp_path, examples, **options):
    from dataset.build_custom_dataset import CustomBuildConfig, build_custom_dataset
    tmp_path.mkdir(exist_ok=True)
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in examples))
    out = tmp_path / "data"
    build_custom_dataset(CustomBuildConfig(train=str(src), test=str(src), output_dir=str(out), **options))
    return out


def test_custom_views_are_the_augment_it_was_built_with(tmp_path):
    rng = np.random.default_rng(2)
    # A task that commutes with both symmetries: the output is the input with colours a <-> b swapped.
    examples = []
    for h, w in [(2, 3), (4, 1), (3, 3), (1, 5)]:
        grid = rng.choice(list("abcd"), size=(h, w))
        examples.append({"input": grid.tolist(), "output": np.where(grid == "a", "b", np.where(grid == "b", "a", grid)).tolist()})
    data = build_custom(tmp_path, examples, num_aug=2, augment=["dihedral", "permute=cd"])
    assert json.loads((data / "train" / "dataset.json").read_text())["augment"] == ["dihedral", "permute=cd"]
    codec = get_codec("custom")(data_path=str(data))
    split = load_split(data, "test")
    x, y = split["inputs"].astype(np.int32), split["labels"].astype(np.int32)
    views = keys_are_reproducible(codec, x)
    assert isinstance(views, CanvasViews)
    vx, vy = views.forward(x), views.forward(y)
    np.testing.assert_array_equal(vx[:, 0], x)
    np.testing.assert_array_equal(views.back(vy), np.repeat(y[:, None], VIEWS, axis=1))
    c, d = codec.token_id["c"], codec.token_id["d"]
    for b, example in enumerate(examples):
        (puzzle,) = codec.read(json.dumps(example["input"]))
        for v in range(VIEWS):
            t = int(views.dihedral[b, v])
            relabel = {"c": "c", "d": "d"} if views.tokens[b, v, c] == c else {"c": "d", "d": "c"}
            expected = np.vectorize(lambda s: relabel.get(s, s))(dihedral_transform(np.array(example["output"]), t))
            assert codec.answer(puzzle, vy[b, v]) == expected.tolist()
        assert len({int(t) for t in views.dihedral[b, :8]}) == 8
    assert {tuple(views.tokens[b, v, [c, d]]) for b in range(4) for v in range(VIEWS)} == {(c, d), (d, c)}
    # Sequences with a permutation only; no --augment: no views (noise only), as datasets built before it.
    seq = build_custom(tmp_path / "s", [{"input": "abc", "output": "cba"}, {"input": "ba", "output": "ab"}],
                       num_aug=1, augment=["permute=abc"])
    seq_codec = get_codec("custom")(data_path=str(seq))
    sx = load_split(seq, "test")["inputs"].astype(np.int32)
    seq_views = seq_codec.views(sx, 40)
    assert isinstance(seq_views, CellViews)
    assert {seq_codec.format_tokens(r) for r in seq_views.forward(sx)[0]} == {"abc", "acb", "bac", "bca", "cab", "cba"}
    plain = build_custom(tmp_path / "p", [{"input": "abc", "output": "cba"}])
    meta = json.loads((plain / "train" / "dataset.json").read_text())
    del meta["augment"]  # a dataset from before the key existed
    (plain / "train" / "dataset.json").write_text(json.dumps(meta))
    assert get_codec("custom")(data_path=str(plain)).views(sx[:, :meta["seq_len"]], 4) is None


def test_tasks_without_symmetries_have_no_views():
    from dataset.domino import SEQ_LEN
    codec = get_codec("domino")(seq_len=SEQ_LEN)
    assert codec.views(np.zeros((2, SEQ_LEN), dtype=np.int32), 4) is None


def test_row_keys_depend_on_seed_and_tokens_only():
    x = np.arange(32).reshape(2, 16) % 6
    assert (row_keys(x, 0) == row_keys(x.copy(), 0)).all()
    assert len({int(k) for k in row_keys(x, 0)} | {int(k) for k in row_keys(x, 1)}) == 4
