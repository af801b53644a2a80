"""One base class for user mistakes: every error class a user's input can raise derives from
``utils.errors.UserError``, which every entry script catches once (one ``error:`` line, exit 2)."""
import ast
import importlib
from pathlib import Path

from conftest import REPO
from utils.errors import UserError

# Error classes that are not user mistakes: a peer rank that stopped, a step past its time limit.
NOT_USER_ERRORS = {"RankStoppedAnswering", "StepTimeout", "Preempted"}


def project_error_classes():
    """(module, class name) of every class named ``*Error`` / ``*Busy`` defined in the project."""
    for path in sorted(REPO.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[0] in (".venv", "tests", "build") or rel.name == "gpu_check.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and (node.name.endswith("Error") or node.name.endswith("Busy")):
                yield ".".join(rel.with_suffix("").parts), node.name


def test_every_user_error_class_derives_from_user_error():
    found = [(m, n) for m, n in project_error_classes() if n not in NOT_USER_ERRORS]
    assert len(found) >= 10, found  # the scan sees the project
    for module, name in found:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, UserError), f"{module}.{name} is not a UserError"
        assert issubclass(cls, ValueError)  # callers that caught ValueError still do


def test_entry_scripts_catch_user_errors_once():
    """No entry script lists user-error classes one by one: it catches UserError (or lets
    utils.cli.run_config_cli or dataset.common.run_cli do it)."""
    names = {n for _, n in project_error_classes() if n not in NOT_USER_ERRORS} - {"UserError"}
    entry_scripts = [REPO / "pretrain.py", REPO / "evaluate.py", REPO / "predict.py", *sorted((REPO / "scripts").glob("*.py"))]
    for path in entry_scripts:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler) and isinstance(node.type, ast.Tuple):
                listed = {e.id for e in node.type.elts if isinstance(e, ast.Name)}
                assert len(listed & names) <= 1, f"{path.name}:{node.lineno} catches {sorted(listed & names)}: catch UserError"
