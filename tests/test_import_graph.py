"""No import cycle in gym_qwen (issue 33): every import of one gym_qwen module by another, at module level or
inside a function, is an edge of the module graph, and the graph has no cycle. An import inside a function
does not fail at import time, but it still ties the two modules together: a cycle through one is a knot that
a later move of the import to the top turns into an ImportError."""
from __future__ import annotations

import ast
from pathlib import Path

import gym_qwen
from test_layering import resolve_import

PACKAGE_DIR = Path(gym_qwen.__file__).resolve().parent


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """{module: the package's modules it imports} for every module of the package at `package_dir`. An import
    names the most specific module it reaches: `from pkg import mod` is an edge to pkg.mod when that is a module,
    else to pkg. The parent packages Python initialises on the way are not edges (they are in sys.modules before
    their submodules run)."""
    root = package_dir.parent
    files = {_module_name(p, root): p for p in sorted(package_dir.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for importer, path in files.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = resolve_import(node.module, node.level, importer, is_package)
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            for name in names:
                while name and name not in files:  # `import a.b.c` of a module, or a name inside one
                    name = name.rpartition(".")[0]
                if name and name != importer:
                    edges.add(name)
        graph[importer] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_gym_qwen_has_no_import_cycle():
    graph = import_graph(PACKAGE_DIR)
    assert len(graph) >= 80 and "gym_qwen.platform.tdmpc2.checkpoints" in graph["gym_qwen.platform.training.run"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "pkg"


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path):
    pkg = _package(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "def f():\n    from . import b\n    return b\n",
                              "pkg/b.py": "from .a import f\n", "pkg/c.py": "import pkg.b\n"})
    graph = import_graph(pkg)
    assert graph == {"pkg": set(), "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.b"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_a_package_without_a_cycle_passes(tmp_path):
    pkg = _package(tmp_path, {"pkg/__init__.py": "from .sub import x\n", "pkg/sub/__init__.py": "x = 1\n",
                              "pkg/sub/y.py": "from .. import sub\nfrom ...pkg import sub as again\nimport os\n",
                              "pkg/z.py": "def g():\n    from pkg.sub.y import sub\n"})
    graph = import_graph(pkg)
    assert graph == {"pkg": {"pkg.sub"}, "pkg.sub": set(), "pkg.sub.y": {"pkg.sub"}, "pkg.z": {"pkg.sub.y"}}
    assert find_cycle(graph) is None


def imports_without_a_reason(package_dir: Path) -> list[str]:
    """Imports inside functions with no comment on their line, their last line or the line above: the reason an
    import stays out of the module's top (Ray's import cost, an optional package, ...) is written beside it."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        seen = set()
        for func in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno not in seen:
                    seen.add(node.lineno)
                    near = lines[max(node.lineno - 2, 0):node.end_lineno]
                    if not any("#" in line for line in near):
                        found.append(f"{path.name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return found


def test_every_import_inside_a_function_says_why_it_is_not_at_the_top():
    assert imports_without_a_reason(PACKAGE_DIR) == []


def test_an_import_inside_a_function_without_a_comment_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    import json\n    return json\n\n\n"
                              "def g():\n    # matplotlib is slow to import\n    import math\n    return math\n")
    assert imports_without_a_reason(pkg) == ["a.py:2: import json"]
