"""utils/paths.py: output locations are checked before any work, and the checks leave nothing behind."""
import os

import pytest

from utils.paths import check_output_file, check_output_folder, make_folder, remove_if_empty


def test_output_file_checks(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "folder").mkdir()
    check_output_file(str(tmp_path / "new.json"), "output")
    check_output_file(str(tmp_path / "file.txt"), "output")  # replaced
    check_output_file(str(tmp_path / "a" / "b" / "new.json"), "output")  # folders made when writing
    check_output_file("/dev/null", "output")  # written in place
    with pytest.raises(ValueError, match=r"^output=.*folder: is a folder; give a file name$"):
        check_output_file(str(tmp_path / "folder"), "output")
    with pytest.raises(ValueError, match=r"^output=.*file.txt/x.json: .*file.txt is a file, not a folder$"):
        check_output_file(str(tmp_path / "file.txt" / "x.json"), "output")
    with pytest.raises(ValueError, match=r"^picture=/proc/a.png: cannot write in /proc \("):
        check_output_file("/proc/a.png", "picture")
    assert sorted(os.listdir(tmp_path)) == ["file.txt", "folder"]


def test_output_folder_checks_and_undo(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    check_output_folder(str(tmp_path / "new" / "deeper"), "out")
    check_output_folder(str(tmp_path), "out")
    with pytest.raises(ValueError, match=r"^output_dir=.*file.txt: a file is in the way; give a folder$"):
        check_output_folder(str(tmp_path / "file.txt"), "output_dir")
    with pytest.raises(ValueError, match=r"^output_dir=/proc/x: cannot write in /proc"):
        check_output_folder("/proc/x", "output_dir")
    assert os.listdir(tmp_path) == ["file.txt"]
    top = make_folder(str(tmp_path / "a" / "b" / "c"))
    assert top == str(tmp_path / "a") and make_folder(str(tmp_path / "a" / "b")) == ""
    remove_if_empty(str(tmp_path / "a" / "b" / "c"), top)
    assert os.listdir(tmp_path) == ["file.txt"]
    top = make_folder(str(tmp_path / "a" / "b"))
    (tmp_path / "a" / "keep").write_text("x")
    remove_if_empty(str(tmp_path / "a" / "b"), top)  # stops at a folder holding something
    assert sorted(os.listdir(tmp_path / "a")) == ["keep"]
