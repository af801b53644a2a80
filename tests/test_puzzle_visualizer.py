"""puzzle_visualizer.html in a real headless Chromium: datasets go in through the page's folder picker.

ChromeDriver accepts a folder path for an ``<input webkitdirectory>``, so the page reads the
files through its own File API code, exactly as when a person picks the folder.
Set UPDATE_SCREENSHOT=1 to rewrite docs/visualizer.png from the ARC view and
docs/visualizer_predictions.png from predictions joined with a test split.
"""
import os
import shutil
import tempfile

import numpy as np
import pytest

from dataset.common import PuzzleDatasetMetadata, save_identifiers, save_metadata, save_set

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = "file://" + os.path.join(ROOT, "puzzle_visualizer.html")
REFERENCE = os.path.join(os.path.dirname(ROOT), "shared", "reference", "datasets")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
XSS_NAME = "<img src=x onerror=alert(1)>"

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="chromium and chromedriver are not installed (run `make browser` as root to install them)")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (requirements-dev.txt)")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def driver():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless and with every background service off: this machine has no network.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1100,760"):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options.add_argument(f"--user-data-dir={profile}")
    d = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    yield d
    d.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_folder(driver, folder, split=None):
    """Load the page afresh, pick ``folder`` with the folder input, optionally switch split."""
    driver.get(PAGE)
    driver.find_element(By.ID, "folder").send_keys(str(folder))
    state = wait_settled(driver)
    if split is not None:
        Select(driver.find_element(By.ID, "split")).select_by_value(split)
        WebDriverWait(driver, 10, poll_frequency=0.05).until(lambda d: f"/ {split} /" in d.find_element(By.ID, "summary").text)
        state = wait_settled(driver)
    return state


def wait_settled(driver):
    WebDriverWait(driver, 10, poll_frequency=0.05).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                    in ("ready", "error"))
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def press(driver, key, times=1):
    body = driver.find_element(By.TAG_NAME, "body")
    for _ in range(times):
        before = driver.find_element(By.ID, "view").get_attribute("data-example")
        body.send_keys(key)
        WebDriverWait(driver, 5).until(lambda d: d.find_element(By.ID, "view").get_attribute("data-example") != before)
        wait_settled(driver)


def panel_cells(driver, panel_index):
    """(data-token, textContent) of every grid cell of panel ``panel_index``, in reading order."""
    return driver.execute_script(
        "const p = document.querySelectorAll('#view .panel')[arguments[0]];"
        "return Array.from(p.querySelectorAll('.cell'), c => [Number(c.dataset.token), c.textContent,"
        " c.dataset.colour === undefined ? null : Number(c.dataset.colour), c.className]);", panel_index)


def write_dataset(root, split, inputs, labels, puzzle_indices=None, group_indices=None, puzzle_ids=None,
                  names=("<blank>",), vocab=None):
    """A dataset split in the project's format, written with dataset/common.py."""
    n = len(inputs)
    pidx = np.arange(n + 1) if puzzle_indices is None else np.asarray(puzzle_indices)
    gidx = np.arange(len(pidx)) if group_indices is None else np.asarray(group_indices)
    ids = np.zeros(len(pidx) - 1, np.int32) if puzzle_ids is None else np.asarray(puzzle_ids)
    save_set(os.path.join(root, split), "all", {
        "inputs": inputs, "labels": labels, "puzzle_identifiers": ids.astype(np.int32),
        "puzzle_indices": pidx.astype(np.int32), "group_indices": gidx.astype(np.int32)})
    save_metadata(os.path.join(root, split), PuzzleDatasetMetadata(
        pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=vocab or int(inputs.max()) + 1,
        seq_len=inputs.shape[1], num_puzzle_identifiers=len(names), total_groups=len(gidx) - 1,
        mean_puzzle_examples=n / (len(pidx) - 1), sets=["all"]))
    save_identifiers(root, list(names))


# ----------------------------------------------------------------------------------------------
# Sudoku and maze: the files written by the original builders (uint8), or a small one of ours


def reference_or_skip(name, tmp_path):
    src = os.path.join(REFERENCE, name)
    if not os.path.isdir(src):
        pytest.skip(f"reference fixtures not found at {src}")
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


@pytest.mark.slow
def test_sudoku_reference_cells_and_keyboard(driver, tmp_path):
    folder = reference_or_skip("sudoku", tmp_path)
    assert open_folder(driver, folder, split="test") == "ready"
    assert driver.find_element(By.ID, "view").get_attribute("data-kind") == "sudoku"
    press(driver, Keys.ARROW_RIGHT, 3)   # one puzzle per group here: example 3 is group 3
    assert driver.find_element(By.ID, "group").get_attribute("value") == "3"
    x = np.load(folder / "test" / "all__inputs.npy")[3]
    y = np.load(folder / "test" / "all__labels.npy")[3]
    shown_in, shown_out = panel_cells(driver, 0), panel_cells(driver, 1)
    assert [c[1] for c in shown_in] == [str(t - 1) if t >= 2 else "" for t in x]
    assert [c[1] for c in shown_out] == [str(t - 1) for t in y]
    # blanks of the puzzle are marked as the cells to fill in the solution
    assert ["filled" in c[3] for c in shown_out] == [t == 1 for t in x]
    press(driver, Keys.PAGE_UP)
    assert driver.find_element(By.ID, "global").get_attribute("value") == "2"
    # the manual override shows the same tokens as plain numbers
    Select(driver.find_element(By.ID, "kind")).select_by_value("generic")
    WebDriverWait(driver, 5).until(lambda d: d.find_element(By.ID, "view").get_attribute("data-kind") == "generic")
    x2 = np.load(folder / "test" / "all__inputs.npy")[2]
    assert [c[0] for c in panel_cells(driver, 0)] == x2.tolist()


@pytest.mark.slow
def test_sudoku_6x6_int32(driver, tmp_path):
    solution = np.array([[1, 2, 3, 4, 5, 6], [4, 5, 6, 1, 2, 3], [2, 3, 1, 5, 6, 4],
                         [5, 6, 4, 2, 3, 1], [3, 1, 2, 6, 4, 5], [6, 4, 5, 3, 1, 2]]).ravel()
    puzzle = solution.copy()
    puzzle[::3] = 0
    folder = tmp_path / "sixes"   # no hint in the name: the kind comes from seq_len 36 and vocab 8
    write_dataset(folder, "train", (puzzle + 1)[None].astype(np.int32), (solution + 1)[None].astype(np.int32), vocab=8)
    assert open_folder(driver, folder) == "ready"
    assert driver.find_element(By.ID, "view").get_attribute("data-kind") == "sudoku"
    cells = panel_cells(driver, 0)
    assert [c[1] for c in cells] == [str(d) if d else "" for d in puzzle]
    # 2x3 boxes: thick line after column 3 and after rows 2 and 4
    assert ["box-r" in c[3] for c in cells[:6]] == [False, False, True, False, False, False]
    assert ["box-b" in cells[r * 6][3] for r in range(6)] == [False, True, False, True, False, False]


@pytest.mark.slow
def test_maze_reference(driver, tmp_path):
    folder = reference_or_skip("maze", tmp_path)
    assert open_folder(driver, folder) == "ready"
    assert driver.find_element(By.ID, "view").get_attribute("data-kind") == "maze"
    driver.find_element(By.ID, "global").clear()
    driver.find_element(By.ID, "global").send_keys("5", Keys.ENTER)
    WebDriverWait(driver, 5).until(lambda d: d.find_element(By.ID, "view").get_attribute("data-example") == "5")
    y = np.load(folder / "train" / "all__labels.npy")[5]
    cells = panel_cells(driver, 1)
    assert [c[1] for c in cells] == ["# SGo"[t - 1] for t in y]
    assert "o" in [c[1] for c in cells]   # the solution path is drawn


# ----------------------------------------------------------------------------------------------
# ARC: a tiny dataset in the ARC encoding, with a hostile identifier name


def arc_encode(grid):
    """30x30 with colours as 2..11, PAD 0 and EOS (1) just below and right of the grid."""
    grid = np.asarray(grid)
    out = np.zeros((30, 30), np.uint8)
    h, w = grid.shape
    out[:h, :w] = grid + 2
    out[h, :w + 1] = 1
    out[:h + 1, w] = 1
    return out.ravel()


@pytest.fixture(scope="module")
def arc_folder(tmp_path_factory):
    # ARC-like pictures: a few coloured rectangles on black
    rng = np.random.default_rng(0)
    grids = []
    for _ in range(4):
        g = np.zeros((rng.integers(6, 11), rng.integers(6, 11)), np.int64)
        for colour in rng.choice(np.arange(1, 10), size=3, replace=False):
            r, c = rng.integers(0, g.shape[0] - 2), rng.integers(0, g.shape[1] - 2)
            g[r:r + rng.integers(1, 4), c:c + rng.integers(1, 5)] = colour
        grids.append(g)
    inputs = np.stack([arc_encode(g) for g in grids])
    labels = np.stack([arc_encode(np.rot90(g)) for g in grids]).astype(np.int32)   # mixed dtypes on purpose
    folder = tmp_path_factory.mktemp("arc") / "arc-tiny"
    # group 0 = puzzles 0 (examples 0, 1) and 1 (example 2); group 1 = puzzle 2 (example 3)
    write_dataset(folder, "train", inputs, labels, puzzle_indices=[0, 2, 3, 4], group_indices=[0, 2, 3],
                  puzzle_ids=[1, 2, 1], names=("<blank>", "task_a", XSS_NAME), vocab=12)
    return folder, grids


@pytest.mark.slow
def test_arc_colours_and_identifier_is_text(driver, arc_folder, tmp_path):
    folder, grids = arc_folder
    assert open_folder(driver, folder) == "ready"
    assert driver.find_element(By.ID, "view").get_attribute("data-kind") == "arc"
    assert driver.find_element(By.ID, "identifier").text == "task_a"
    press(driver, Keys.ARROW_DOWN)   # next puzzle: example 2, named like an HTML tag
    assert driver.find_element(By.ID, "view").get_attribute("data-example") == "2"
    identifier = driver.find_element(By.ID, "identifier")
    assert identifier.text == XSS_NAME
    assert driver.execute_script("return document.getElementById('identifier').childElementCount") == 0
    assert driver.execute_script("return document.querySelectorAll('img').length") == 0
    with pytest.raises(TimeoutException):
        WebDriverWait(driver, 0.5).until(EC.alert_is_present())
    # the cells: the grid's colours, then the EOS border
    g = grids[2]
    h, w = g.shape
    cells = panel_cells(driver, 0)
    rows = max(h, w) + 1          # the label (rotated) may be the larger of the two
    cols = max(h, w) + 1
    assert len(cells) == rows * cols
    shown = np.array([c[2] if c[2] is not None else -1 for c in cells]).reshape(rows, cols)
    assert (shown[:h, :w] == g).all()
    assert all("eos" in cells[h * cols + c][3] for c in range(w + 1))
    label = np.array([c[2] if c[2] is not None else -1 for c in panel_cells(driver, 1)]).reshape(rows, cols)
    assert (label[:w, :h] == np.rot90(g)).all()
    # under each grid its size, as the evaluator's crop reads it
    sizes = driver.execute_script("return Array.from(document.querySelectorAll('#view .grid-size'), e => e.textContent)")
    assert sizes == [f"{h}×{w} grid", f"{w}×{h} grid"]
    assert driver.find_element(By.CSS_SELECTOR, "#view .cell[data-colour]").value_of_css_property("background-color")
    if os.environ.get("UPDATE_SCREENSHOT"):
        press(driver, Keys.ARROW_UP)
        driver.set_window_size(1100, 800)
        os.makedirs(os.path.join(ROOT, "docs"), exist_ok=True)
        driver.save_screenshot(os.path.join(ROOT, "docs", "visualizer.png"))
        driver.set_window_size(1100, 760)


# ----------------------------------------------------------------------------------------------
# Domino, generic numbers, and broken folders


@pytest.mark.slow
def test_domino(driver, tmp_path):
    from dataset.build_domino_dataset import DominoDatasetConfig, build
    folder = tmp_path / "domino-small"
    build(DominoDatasetConfig(output_dir=str(folder), num_games=30, seed=1))
    x = np.load(folder / "test" / "all__inputs.npy")
    y = np.load(folder / "test" / "all__labels.npy")
    index = int(np.flatnonzero((x[:, 6] != 0) & (x[:, 58] != 0))[0])  # >= 4 tiles on the table, >= 2 in hand
    assert open_folder(driver, folder, split="test") == "ready"
    assert driver.find_element(By.ID, "view").get_attribute("data-kind") == "domino"
    press(driver, Keys.ARROW_RIGHT, index)
    table = [e.get_attribute("data-tile") for e in driver.find_elements(By.CSS_SELECTOR, ".domino-table .tile")]
    assert table == [f"{x[index][k] - 1}|{x[index][k + 1] - 1}" for k in range(0, 56, 2) if x[index][k]]
    hand = {e.get_attribute("data-tile"): e.get_attribute("class")
            for e in driver.find_elements(By.CSS_SELECTOR, ".domino-hand .tile")}
    left, right = x[index][70] - 1, x[index][71] - 1
    target = f"{y[index][0] - 1}|{y[index][1] - 1}"
    assert len(hand) == (x[index][56:70] != 0).sum() // 2
    for tile, cls in hand.items():
        a, b = map(int, tile.split("|"))
        expected = "target" if tile == target else "playable" if {a, b} & {left, right} else None
        assert (expected in cls.split()) if expected else cls.split() == ["tile"], (tile, cls)
    where = {1: "at the left end", 2: "at the right end", 3: "to open the empty table"}[int(y[index][2])]
    assert driver.find_element(By.ID, "target").text == f"Target: play [{target}] {where}"
    assert not driver.find_elements(By.CSS_SELECTOR, ".problem")


@pytest.mark.slow
def test_generic_int64_and_uint16(driver, tmp_path):
    folder = tmp_path / "numbers"
    inputs = (np.arange(2 * 30).reshape(2, 30) * 1001).astype(np.int64)   # values past 255 and 65535
    labels = np.arange(2 * 30).reshape(2, 30).astype(np.uint16) * 700
    write_dataset(folder, "test", inputs, labels, vocab=70000)
    assert open_folder(driver, folder) == "ready"
    assert driver.find_element(By.ID, "view").get_attribute("data-kind") == "generic"
    press(driver, Keys.END)
    assert [c[0] for c in panel_cells(driver, 0)][:30] == inputs[1].tolist()
    assert [c[0] for c in panel_cells(driver, 1)][:30] == labels[1].tolist()


@pytest.mark.slow
def test_folder_without_dataset_json(driver, tmp_path):
    folder = tmp_path / "just-files"
    os.makedirs(folder / "train")
    np.save(folder / "train" / "all__inputs.npy", np.zeros((2, 4), np.uint8))
    assert open_folder(driver, folder) == "error"
    message = driver.find_element(By.ID, "message").text
    assert "No dataset.json" in message and "just-files" in message
    assert not driver.find_element(By.ID, "nav").is_displayed()
    assert driver.find_elements(By.CSS_SELECTOR, "#view *") == []


@pytest.mark.slow
def test_truncated_npy(driver, arc_folder, tmp_path):
    folder = tmp_path / "arc-cut"
    shutil.copytree(arc_folder[0], folder)
    path = folder / "train" / "all__inputs.npy"
    path.write_bytes(path.read_bytes()[:1000])
    assert open_folder(driver, folder) == "error"
    message = driver.find_element(By.ID, "message").text
    assert "train/all__inputs.npy" in message and "truncated" in message and "3600 bytes" in message
    # a file cut inside its header, and a dataset.json that is not JSON
    path.write_bytes(b"\x93NUMPY\x01\x00")
    assert open_folder(driver, folder) == "error"
    assert "all__inputs.npy" in driver.find_element(By.ID, "message").text
    (folder / "train" / "dataset.json").write_text("{not json")
    assert open_folder(driver, folder) == "error"
    assert "dataset.json: not valid JSON" in driver.find_element(By.ID, "message").text


# ----------------------------------------------------------------------------------------------
# Predictions (evaluate.py outputs as .npy, see utils/outputs.py)


def write_predictions(folder, step, ranks):
    """``step_<step>_all_preds.<rank>.<key>.npy`` files for ``ranks`` = [{key: array}] (one dict per rank)."""
    paths = []
    for rank, arrays in enumerate(ranks):
        for key, value in arrays.items():
            path = os.path.join(folder, f"step_{step}_all_preds.{rank}.{key}.npy")
            np.save(path, value)
            paths.append(path)
    return paths


def pick_predictions(driver, paths):
    # A fresh pick replaces the files (ChromeDriver would add to the previous selection).
    driver.execute_script("document.body.dataset.state = 'picking'; document.getElementById('preds').value = ''")
    driver.find_element(By.ID, "preds").send_keys("\n".join(str(p) for p in paths))
    return wait_settled(driver)


def wrong_cells(driver):
    return driver.execute_script("return Array.from(document.querySelectorAll('#view .prediction .cell.wrong'),"
                                 " c => Number(c.dataset.index)).sort((a, b) => a - b)")


@pytest.mark.slow
def test_predictions_mark_wrong_cells_filter_trace_and_identifier_text(driver, tmp_path):
    solution = np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]]).reshape(-1) + 1
    puzzle = solution.copy()
    puzzle[[1, 6, 11, 12]] = 1  # four blanks
    folder = tmp_path / "sudoku-4x4"
    write_dataset(folder, "test", np.stack([puzzle] * 3).astype(np.uint8), np.stack([solution] * 3).astype(np.uint8),
                  puzzle_ids=[0, 1, 1], names=("<blank>", XSS_NAME), vocab=6)
    assert open_folder(driver, folder) == "ready"

    def rank(preds, trace_first, steps, q, ids, pad_last=False):
        labels = np.stack([solution] * len(preds)).astype(np.int32)
        if pad_last:
            labels[-1] = -100  # a padding row of the last batch
        trace = np.stack([np.stack(trace_first), np.stack(preds)], axis=1).astype(np.int32)
        return {"inputs": np.stack([puzzle] * len(preds)).astype(np.int32), "labels": labels,
                "preds": np.stack(preds).astype(np.int64), "trace": trace, "steps": np.array(steps, np.int32),
                "q_halt_logits": np.array(q, np.float32), "puzzle_identifiers": np.array(ids, np.int32),
                "trace_q_halt_logits": np.array([[-2.0, x] for x in q], np.float32)}

    right = solution.copy()
    two_wrong = solution.copy()
    two_wrong[[1, 11]] = [5, 2]
    one_wrong = solution.copy()
    one_wrong[6] = 3
    worse = solution.copy()
    worse[[1, 6, 11]] = 5
    out = tmp_path / "preds"
    out.mkdir()
    paths = write_predictions(out, 7, [rank([right, two_wrong], [worse, worse], [1, 2], [3.0, 1.0], [0, 0]),
                                       rank([right, one_wrong, right], [right, one_wrong, right], [2, 1, 1], [0.0, -1.0, 0.0], [0, 1, 0],
                                            pad_last=True)])
    assert pick_predictions(driver, paths) == "ready"
    assert "4 examples, 2 right, 2 wrong" in driver.find_element(By.ID, "summary").text
    assert wrong_cells(driver) == [] and "right" in driver.find_element(By.ID, "pred-info").text

    Select(driver.find_element(By.ID, "pred-filter")).select_by_value("wrong")
    wait_settled(driver)
    assert driver.find_element(By.ID, "pred-of").text == "of 2"
    assert wrong_cells(driver) == [1, 11]
    info = driver.find_element(By.ID, "pred-info").text
    assert "wrong (2 cells)" in info and "segments used 2 of 2" in info and "halt confidence sigmoid(q_halt) 0.731" in info
    # The slider shows the first segment's prediction, with its own mistakes.
    driver.execute_script("const s = document.getElementById('segment'); s.value = 1; s.dispatchEvent(new Event('input'));")
    WebDriverWait(driver, 5).until(lambda d: wrong_cells(d) == [1, 6, 11])
    assert "halt confidence sigmoid(q_halt) 0.119" in driver.find_element(By.ID, "pred-info").text

    press(driver, Keys.ARROW_RIGHT)
    assert wrong_cells(driver) == [6]
    assert driver.find_element(By.ID, "view").get_attribute("data-example") == "1:1"
    assert driver.find_element(By.ID, "pred-identifier").text == XSS_NAME  # rendered as text
    assert driver.execute_script("return document.querySelectorAll('img').length") == 0

    # Outputs of another dataset (9x9 Sudoku) get a clear message, not a crash.
    other = tmp_path / "other"
    other.mkdir()
    nine = np.ones((2, 81), np.int32)
    paths = write_predictions(other, 3, [{"inputs": nine, "labels": nine, "preds": nine}])
    assert pick_predictions(driver, paths) == "error"
    message = driver.find_element(By.ID, "message").text
    assert "come from another dataset" in message and "seq_len 16" in message
    assert driver.find_element(By.ID, "view").find_elements(By.CLASS_NAME, "panel")  # the dataset view is still there


@pytest.mark.slow
def test_predictions_alone_are_joined_with_the_test_split(driver, tmp_path):
    """Training's eval_save_outputs=[preds]: no inputs or labels saved; the page reads them from the
    test split in the order the evaluation walked it (and the Split menu says so)."""
    grid = np.array([1, 2, 3, 4, 3, 4, 1, 2, 2, 1, 4, 3, 4, 3, 2, 1])
    relabel = np.array([[1, 2, 3, 4], [2, 1, 4, 3], [3, 4, 1, 2]])  # three different solutions
    solutions = np.stack([r[grid - 1] + 1 for r in relabel])
    puzzles = solutions.copy()
    puzzles[:, [0, 5, 10, 15]] = 1
    folder = tmp_path / "sudoku-4x4"
    write_dataset(folder, "train", puzzles[:1].astype(np.uint8), solutions[:1].astype(np.uint8), vocab=6)
    write_dataset(folder, "test", puzzles.astype(np.uint8), solutions.astype(np.uint8), puzzle_ids=[0, 1, 0],
                  names=("<blank>", "second"), vocab=6)
    assert open_folder(driver, folder) == "ready"
    assert Select(driver.find_element(By.ID, "split")).first_selected_option.text == "train"
    preds = solutions.astype(np.int64).copy()
    preds[1, 5] = 5 if preds[1, 5] != 5 else 4  # example 1 wrong in one cell

    one = tmp_path / "one"
    one.mkdir()
    saved = {"preds": preds, "halt_confidence": np.array([0.9, 0.25, 0.5], np.float32), "q_halt_logits": np.zeros(3, np.float32)}
    assert pick_predictions(driver, write_predictions(one, 5, [saved])) == "ready"
    summary = driver.find_element(By.ID, "summary").text
    assert "3 examples, 2 right, 1 wrong" in summary and "from its test split" in summary
    assert Select(driver.find_element(By.ID, "split")).first_selected_option.text == "test (joined with the predictions)"
    Select(driver.find_element(By.ID, "pred-filter")).select_by_value("wrong")
    wait_settled(driver)
    assert wrong_cells(driver) == [5] and driver.find_element(By.ID, "view").get_attribute("data-position") == "1"
    assert driver.find_element(By.ID, "pred-identifier").text == "second"
    assert "halt confidence 0.250" in driver.find_element(By.ID, "pred-info").text  # the rule's, not sigmoid(q_halt) = 0.5
    assert [c[0] for c in panel_cells(driver, 0)] == puzzles[1].tolist()   # the test split's input
    if os.environ.get("UPDATE_SCREENSHOT"):  # docs/visualizer_predictions.png: this view, as the README describes it
        driver.set_window_size(1100, 640)
        driver.save_screenshot(os.path.join(ROOT, "docs", "visualizer_predictions.png"))
        driver.set_window_size(1100, 760)

    # Two ranks in global batches of 2: rank 0 evaluated examples 0 and 2, rank 1 example 1.
    two = tmp_path / "two"
    two.mkdir()
    paths = write_predictions(two, 5, [{"preds": preds[[0, 2]]}, {"preds": preds[[1]]}])
    assert pick_predictions(driver, paths) == "error"
    assert "all_config.yaml" in driver.find_element(By.ID, "message").text
    (two / "all_config.yaml").write_text("arch:\n  global_batch_size: 99\nglobal_batch_size: 2\neval_global_batch_size: null\n")
    assert pick_predictions(driver, paths + [two / "all_config.yaml"]) == "ready"
    Select(driver.find_element(By.ID, "pred-filter")).select_by_value("wrong")
    wait_settled(driver)
    assert driver.find_element(By.ID, "view").get_attribute("data-example") == "1:0"
    assert driver.find_element(By.ID, "view").get_attribute("data-position") == "1" and wrong_cells(driver) == [5]
    # Leaving the predictions gives the menus back.
    Select(driver.find_element(By.ID, "mode")).select_by_value("dataset")
    wait_settled(driver)
    assert Select(driver.find_element(By.ID, "split")).first_selected_option.text == "train"

    # A file with more rows than the split (saved with its padding rows) is refused, saying why.
    padded = tmp_path / "padded"
    padded.mkdir()
    assert pick_predictions(driver, write_predictions(padded, 5, [{"preds": np.concatenate([preds, preds[:1]])}])) == "error"
    assert "4 predictions but the test split" in driver.find_element(By.ID, "message").text


@pytest.mark.slow
def test_arc_zooms_to_a_small_grid_anywhere_on_the_canvas(driver, tmp_path):
    grid = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    canvas = np.zeros((30, 30), np.uint8)
    canvas[5:9, 7:11] = arc_encode(grid).reshape(30, 30)[:4, :4]  # moved, as augmented ARC data is
    folder = tmp_path / "arc-small"
    write_dataset(folder, "train", canvas.reshape(1, -1), canvas.reshape(1, -1), vocab=12)
    assert open_folder(driver, folder) == "ready"
    cells = panel_cells(driver, 0)
    assert len(cells) == 16   # the 3x3 grid and its EOS border, not the 30x30 canvas
    colours = np.array([c[2] if c[2] is not None else -1 for c in cells]).reshape(4, 4)
    assert (colours[:3, :3] == grid).all()
    size = driver.execute_script("return getComputedStyle(document.querySelector('#view .grid.arc .cell')).width")
    assert float(size.rstrip("px")) >= 36
    assert "4×4 area at row 5, column 7" in driver.find_element(By.CSS_SELECTOR, "#view .legend").text


@pytest.mark.slow
def test_task_recorded_in_dataset_json_picks_the_view_and_custom_tokens_are_decoded(driver, tmp_path):
    """A custom task of 5x5 grids in 4 colours (seq_len 25, vocab 6: the shape of a maze) is drawn as
    the custom task dataset.json records, in the file's own symbols (digit 5 for token 4)."""
    import json
    from dataset.build_custom_dataset import CustomBuildConfig, build_custom_dataset
    rng = np.random.default_rng(0)
    examples = [{"input": rng.choice(list("2589"), (5, 5)).tolist(), "output": rng.choice(list("2589"), (5, 5)).tolist()}
                for _ in range(3)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(e) + "\n" for e in examples))
    folder = tmp_path / "colours"
    build_custom_dataset(CustomBuildConfig(train=str(data), test=str(data), output_dir=str(folder)))
    meta = json.loads((folder / "train" / "dataset.json").read_text())
    assert (meta["task"], meta["seq_len"], meta["vocab_size"], meta["vocab"][2:]) == ("custom", 25, 6, ["2", "5", "8", "9"])

    assert open_folder(driver, folder) == "ready"
    assert driver.find_element(By.ID, "view").get_attribute("data-kind") == "custom"
    for panel_index, key in ((0, "input"), (1, "output")):
        shown = panel_cells(driver, panel_index)
        assert [[shown[r * 5 + c][1] for c in range(5)] for r in range(5)] == examples[0][key]
        assert [c[0] for c in shown] == [meta["vocab"].index(t) for row in examples[0][key] for t in row]
    assert "Tokens decoded with dataset.json's vocab (4 task tokens)" in driver.find_element(By.ID, "view").text

    # Without a recorded task (the original builders write none) the shape decides: here, wrongly, a maze.
    for split in ("train", "test"):
        m = json.loads((folder / split / "dataset.json").read_text())
        m.pop("task")
        (folder / split / "dataset.json").write_text(json.dumps(m))
    assert open_folder(driver, folder) == "ready"
    assert driver.find_element(By.ID, "view").get_attribute("data-kind") == "maze"


# ----------------------------------------------------------------------------------------------
# ARC on a canvas fitted to the grids (build_arc_dataset.py --canvas fit): 1-row grids on 2x94,
# 5x5 grids on 6x6, built from task files of our own


def _one_row_tasks():
    """1 x N grids up to N = 93 (so the fitted canvas is 2x94); one task's outputs are shorter."""
    rng = np.random.default_rng(1)
    tasks = {}
    for name, width, cut in (("short", 7, 0), ("middle", 33, 2), ("long", 93, 0)):
        pairs = []
        for _ in range(4):
            row = rng.integers(0, 10, size=width) * (rng.random(width) < 0.6)
            pairs.append({"input": [row.tolist()], "output": [row[::-1][:width - cut].tolist()]})
        tasks[f"rows/{name}.json"] = {"train": pairs[:3], "test": pairs[3:]}
    return tasks


def _small_2d_tasks():
    """5x5 inputs; one task's outputs are 3x5, so that transposing augmentations change the shape."""
    rng = np.random.default_rng(2)
    tasks = {}
    for k in range(2):
        pairs = []
        for _ in range(4):
            grid = rng.integers(0, 10, size=(5, 5))
            pairs.append({"input": grid.tolist(), "output": (grid[:3] if k else grid.T).tolist()})
        tasks[f"grid_{k}.json"] = {"train": pairs[:3], "test": pairs[3:]}
    return tasks


@pytest.fixture(scope="module")
def fitted_arc(tmp_path_factory):
    """{kind: (dataset folder, task files as {name: task})} built by build_arc_dataset.py --canvas fit."""
    import json
    from dataset.build_arc_dataset import ARCBuildConfig, build_arc_dataset
    root = tmp_path_factory.mktemp("arc-fit")
    built = {}
    for kind, tasks, num_aug in (("rows", _one_row_tasks(), 1), ("grids", _small_2d_tasks(), 2)):
        for rel, task in tasks.items():
            path = root / f"{kind}-tasks" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(task))
        folder = root / f"{kind}-data"
        build_arc_dataset(ARCBuildConfig(dataset_dirs=[str(root / f"{kind}-tasks")], output_dir=str(folder),
                                         canvas="fit", protocol="hrm", num_aug=num_aug))
        built[kind] = folder, {os.path.splitext(os.path.basename(rel))[0]: task for rel, task in tasks.items()}
    return built


# One round trip per example (every example of a split is visited): go to example ``index``, wait
# until it is drawn, and read its identifier, its index in the puzzle and its ARC panels.
SHOW_EXAMPLE = """
const [index, done] = arguments, view = document.getElementById('view'), text = id => document.getElementById(id).textContent;
const here = () => index === null || view.dataset.example === String(index);
if (!here()) { const g = document.getElementById('global'); g.value = index; g.dispatchEvent(new Event('change')); }
const colour = c => (c.dataset.colour === undefined ? -1 : Number(c.dataset.colour));
const panel = p => {
  const grid = p.querySelector('.grid.arc');
  return {shape: grid.dataset.gridShape, caption: p.querySelector('.grid-size').textContent,
          box: grid.getBoundingClientRect().toJSON(),
          cells: Array.from(grid.querySelectorAll('.cell'), c => [Number(c.dataset.row), Number(c.dataset.col), colour(c)])};
};
const read = () => {
  if (!here() || document.body.dataset.state !== 'ready') return setTimeout(read, 5);
  done({identifier: text('identifier'), example: Number(document.getElementById('example').value),
        legend: document.querySelector('#view .legend').textContent,
        panels: Array.from(document.querySelectorAll('#view .panel'), panel)});
};
read();
"""


def show_example(driver, index=None):
    """Example ``index`` (None: what is on screen) as drawn; per panel the colours of the area shown
    (-1 for padding and EOS), the grid size the page read, its caption and the grid's box on the page."""
    shown = driver.execute_async_script(SHOW_EXAMPLE, index)
    for p in shown["panels"]:
        cells = np.array(p["cells"])
        p["area"] = np.full((cells[:, 0].max() + 1, cells[:, 1].max() + 1), -2)
        p["area"][cells[:, 0], cells[:, 1]] = cells[:, 2]
        p["shape"] = tuple(int(v) for v in p["shape"].split("x"))
    return shown


def check_every_example_shows_its_task_grids(driver, folder, tasks, canvas):
    """Every example of both splits, as drawn, is its task file's pair once mapped back by its version."""
    from dataset.arc_grid import inverse_aug
    for split in ("train", "test"):
        assert open_folder(driver, folder, split=split) == "ready"
        total = np.load(folder / split / "all__inputs.npy").shape[0]
        assert driver.find_element(By.ID, "global-of").text == f"of {total}"
        for index in range(total):
            shown = show_example(driver, index)
            name, undo = inverse_aug(shown["identifier"])
            pair = tasks[name][split][shown["example"]]
            for p, side in zip(shown["panels"], ("input", "output")):
                h, w = p["shape"]
                assert undo(p["area"][:h, :w]).tolist() == pair[side], (split, index, side)
                assert p["caption"] == f"{h}×{w} grid"
            assert f"of the {canvas} canvas" in shown["legend"]


@pytest.mark.slow
def test_arc_on_a_fitted_canvas_of_one_row_grids(driver, fitted_arc, tmp_path):
    import json
    from dataset.arc_grid import Canvas, crop_arc_grid
    folder, tasks = fitted_arc["rows"]
    meta = json.loads((folder / "test" / "dataset.json").read_text())
    assert (meta["canvas_height"], meta["canvas_width"]) == (2, 94)
    check_every_example_shows_its_task_grids(driver, folder, tasks, "2×94")

    # The 1x93 grid: input above output, columns aligned, the whole row readable without scrolling.
    labels = np.load(folder / "test" / "all__labels.npy")
    row = next(i for i, y in enumerate(labels) if crop_arc_grid(y, Canvas(2, 94)).shape == (1, 93))
    top, bottom = show_example(driver, row)["panels"]
    view = driver.execute_script("return document.getElementById('view').getBoundingClientRect().toJSON()")
    assert top["area"].shape == (2, 94)
    assert top["box"]["left"] == bottom["box"]["left"] and bottom["box"]["top"] > top["box"]["bottom"]
    assert top["box"]["right"] <= view["right"] and top["box"]["width"] / 94 >= 8

    # Predictions saved alone, joined with the test split: one grid ends a cell early (an EOS where
    # the label has its last colour), and the page reads it as the evaluator does.
    preds = labels.astype(np.int64)
    width = crop_arc_grid(labels[row], Canvas(2, 94)).shape[1]
    preds[row, width - 1] = 1
    out = tmp_path / "preds"
    out.mkdir()
    assert pick_predictions(driver, write_predictions(out, 4, [{"preds": preds}])) == "ready"
    assert f"{len(labels)} examples, {len(labels) - 1} right, 1 wrong" in driver.find_element(By.ID, "summary").text
    Select(driver.find_element(By.ID, "pred-filter")).select_by_value("wrong")
    wait_settled(driver)
    assert driver.find_element(By.ID, "view").get_attribute("data-position") == str(row)
    assert wrong_cells(driver) == [width - 1]
    given, label, guess = show_example(driver)["panels"]
    assert guess["shape"] == crop_arc_grid(preds[row], Canvas(2, 94)).shape == (1, width - 1)
    assert guess["caption"] == f"1×{width - 1} grid" and label["shape"] == (1, width)
    assert guess["box"]["left"] == label["box"]["left"] and guess["box"]["top"] > label["box"]["bottom"]

    # A canvas that does not match seq_len is said so, and the tokens are shown as numbers.
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    for split in ("train", "test"):
        path = broken / split / "dataset.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "canvas_width": 93}))
    assert open_folder(driver, broken) == "ready"
    assert not driver.find_elements(By.CSS_SELECTOR, "#view .grid.arc")
    assert "canvas 2×93 does not match its seq_len 188" in driver.find_element(By.CSS_SELECTOR, "#view .legend").text


@pytest.mark.slow
def test_arc_on_a_fitted_canvas_of_small_grids(driver, fitted_arc):
    import json
    folder, tasks = fitted_arc["grids"]
    meta = json.loads((folder / "train" / "dataset.json").read_text())
    assert (meta["canvas_height"], meta["canvas_width"]) == (6, 6)
    check_every_example_shows_its_task_grids(driver, folder, tasks, "6×6")
    a, b = show_example(driver)["panels"]
    assert b["box"]["left"] > a["box"]["right"]  # a square canvas keeps input and output side by side
