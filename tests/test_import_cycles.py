"""No import cycles among the project's modules, and the library never imports the engine.

Static: every `import` statement in ddakern/, kernels/ (installed as ddakern.kernels), train/ and bench/
(a folder of scripts importing each other as top-level modules) is read with ast -- module-level,
function-level and `if TYPE_CHECKING:` alike, since a lazy import only hides a cycle until the two
modules change. An edge points at the module imported (`from a.b import c` at a.b.c when that is a
module, else at a.b); parent packages' __init__ are not edges (importing any submodule runs them, so
they would make every package a cycle). graphlib finds the cycles.
"""

from __future__ import annotations

import ast
import functools
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TREES = {"ddakern": "ddakern", "kernels": "ddakern.kernels", "train": "train", "bench": ""}
"""Source folder -> the package name its modules have when imported ('' for bench's top-level scripts)."""


def module_names() -> dict[str, Path]:
    """Every project module by dotted name (package __init__ files under the package's own name)."""
    found: dict[str, Path] = {}
    for folder, package in TREES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(p for p in [package, *parts] if p)] = path
    return found


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that module `name` (at path) imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            candidates = [[alias.name] for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*here[: len(here) - (node.level - 1)], *([base] if base else [])])
            candidates = [[f"{base}.{alias.name}" if base else alias.name, base] for alias in node.names]
        else:
            continue
        for options in candidates:
            for option in options:
                hit = _longest_module(option, modules)
                if hit is not None:
                    targets.add(hit)
                    break
    targets.discard(name)
    return targets


def _longest_module(dotted: str, modules: dict[str, Path]) -> str | None:
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = module_names()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def test_project_has_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 50 and any(graph.values())  # the scan found the tree and its imports
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        raise AssertionError(f"import cycle: {' -> '.join(e.args[1])}") from None


def test_cycle_finder_sees_a_lazy_cycle(tmp_path):
    """The finder itself: a function-level import back is a cycle (a test that can fail)."""
    pkg = tmp_path / "ddakern"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from ddakern import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n")
    modules = {"ddakern": pkg / "__init__.py", "ddakern.a": pkg / "a.py", "ddakern.b": pkg / "b.py"}
    graph = {name: imported(name, path, modules) for name, path in modules.items()}
    assert graph == {"ddakern": set(), "ddakern.a": {"ddakern.b"}, "ddakern.b": {"ddakern.a"}}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError:
        return
    raise AssertionError("the cycle ddakern.a <-> ddakern.b was not found")


def test_library_never_imports_the_engine():
    """ddakern/ and kernels/ import nothing from train/ (the engine depends on the library, not back)."""
    graph = import_graph()
    engine = {m for m in graph if m == "train" or m.startswith("train.")}
    back = sorted((m, t) for m, ts in graph.items() if m.split(".")[0] == "ddakern" for t in ts & engine)
    assert not back, f"library modules importing the engine: {sorted(back)}"
