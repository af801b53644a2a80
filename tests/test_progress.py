"""utils/progress.py: in a log (not a terminal) nested bars leave plain lines, no carriage returns or cursor moves."""
import io

from utils import progress


def test_nested_bars_in_a_log_are_plain_lines(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.0)
    log = io.StringIO()
    outer = progress.progress_bar(total=3, desc="train", file=log, dynamic_ncols=True)
    for _ in range(3):
        for _ in progress.progress_bar(range(4), desc="eval", leave=False, file=log):
            pass
        outer.update(1)
    outer.close()
    text = log.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[-1].startswith("train: 100%") and "3/3" in lines[-1]
    assert sum(line.startswith("eval: 100%") for line in lines) == 3  # each finished eval bar leaves its last line
    assert all(len(line) <= progress.PLAIN_WIDTH for line in lines)


def test_disable_none_hides_the_bar_outside_a_terminal():
    log = io.StringIO()
    for _ in progress.progress_bar(range(3), desc="predict", disable=None, file=log):
        pass
    assert log.getvalue() == ""


def test_a_finished_bar_leaves_its_last_line_once(monkeypatch):
    """The redraw at close differs from the last update's only in timing and postfix: not printed again."""
    import time
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.0)
    log = io.StringIO()
    bar = progress.progress_bar(total=3, desc="train", file=log)
    for _ in range(3):
        time.sleep(0.2)  # each update redraws
        bar.update(1)
    bar.set_postfix(loss="1.0", refresh=False)
    time.sleep(1.1)  # the closing redraw's elapsed time differs
    bar.close()
    lines = log.getvalue().splitlines()
    assert sum("3/3" in line for line in lines) == 1 and lines[-1].startswith("train: 100%")
