"""The code layout's rules (docs/development.md "Code layout"), read from the import statements of every
module with ``ast`` (imports inside functions and under ``TYPE_CHECKING`` count too):
no import circles, no module imports an entry script, ``utils/`` imports nothing above it, and the
library layers read task rules from ``dataset/<task>.py``, never from a builder script."""
import ast
import functools
import os
from pathlib import Path
from typing import Dict, List, Set

from conftest import REPO

ENTRY_SCRIPTS = {"pretrain", "evaluate", "predict"}
ABOVE_UTILS = ("models", "training", "inference", "tasks", "dataset", "puzzle_dataset", "evaluators", "scripts", *ENTRY_SCRIPTS)
SKIPPED = {".venv", "tests", "build", "checkpoints", "data", "outputs", "wandb", "examples", "docs"}


def project_modules() -> Dict[str, Path]:
    """Dotted module name -> file, for every Python file of the project outside tests/."""
    modules = {}
    for folder, dirs, files in os.walk(REPO):
        if Path(folder) == REPO:
            dirs[:] = [d for d in dirs if d not in SKIPPED and not d.startswith(".")]
        dirs[:] = [d for d in dirs if d != "__pycache__" and not d.endswith(".egg-info")]
        for name in files:
            if name.endswith(".py"):
                modules[module_name(Path(folder, name).relative_to(REPO))] = Path(folder, name)
    return modules


def module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, modules: Dict[str, Path]) -> Set[str]:
    """Project modules ``path`` imports (``from a import b`` counts as ``a.b`` when that is a module)."""
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names]
        found.update(n for n in names if n in modules)
    return found


@functools.lru_cache(maxsize=None)
def import_graph() -> Dict[str, Set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def test_the_scan_sees_the_project():
    graph = import_graph()
    assert {"pretrain", "training.config", "inference.segments", "utils.safe_io", "tasks.arc"} <= set(graph)
    assert "inference.segments" in graph["inference.evaluation"] and "training.config" in graph["pretrain"]


def test_no_import_circles():
    graph = import_graph()
    state: Dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(node: str, path: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not circles, "import circles: " + "; ".join(circles)


def test_no_module_imports_an_entry_script():
    graph = import_graph()
    offenders = {m: sorted(deps & ENTRY_SCRIPTS) for m, deps in graph.items() if deps & ENTRY_SCRIPTS}
    assert not offenders, offenders


def test_utils_imports_nothing_above_it():
    graph = import_graph()
    offenders = {m: sorted(d for d in deps if d.split(".")[0] in ABOVE_UTILS)
                 for m, deps in graph.items() if m.split(".")[0] == "utils"}
    assert not any(offenders.values()), {m: d for m, d in offenders.items() if d}


def test_task_rules_are_not_read_from_builder_scripts():
    # Builders are command lines over the rules in dataset/<task>.py; the library layers use the rules.
    graph = import_graph()
    offenders = {m: sorted(d for d in deps if d.startswith("dataset.build_"))
                 for m, deps in graph.items() if m.split(".")[0] in ("tasks", "inference", "evaluators", "training")}
    assert any(m.startswith("tasks.") for m in offenders)  # the scan sees the task modules
    assert not any(offenders.values()), {m: d for m, d in offenders.items() if d}
