"""Hoist function-level imports to module top (one-off refactoring tool, not shipped).

Hoists imports of gym_qwen modules (absolute or relative), the standard library, numpy and torch. Keeps heavy or
optional third-party imports where they are (ray, mlflow, matplotlib, ...) and gives each kept one a reason comment
if it has none. Usage: python hoist.py <package dir> [--dry]
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

KEEP = {  # module -> reason
    "ray": "Ray takes seconds to import; only the Ray paths need it",
    "mlflow": "MLflow takes seconds to import; only runs that log need it",
    "matplotlib": "matplotlib is imported only where a plot is drawn (import cost)",
    "optuna": "optional: only the Optuna search needs it",
    "stable_baselines3": "stable-baselines3 is imported only to train or run a behaviour policy (import cost)",
    "minari": "optional: only the Minari format needs it",
    "h5py": "h5py is imported only where HDF5 files are read or written",
    "dm_control": "dm_control is imported only where a DMControl task is built (import cost)",
    "gymnasium": "gymnasium is imported only where an environment is built (import cost)",
    "imageio": "imageio is imported only to write a video",
    "pyarrow": "pyarrow is imported only where Parquet files are read or written (import cost)",
    "pandas": "pandas is imported only where a table is built (import cost)",
    "absl": "absl is imported only to silence dm_control's logging",
    "tqdm": "tqdm is imported only where a progress bar is shown",
    "scipy": "scipy is imported only where intervals are computed (import cost)",
    "yaml": "yaml is imported only where presets are read",
    "psutil": "psutil is imported only for system metrics",
    "packaging": "optional",
}
STDLIB = set(sys.stdlib_module_names)


def top_name(node) -> str | None:
    if isinstance(node, ast.Import):
        return node.names[0].name.split(".")[0]
    if node.level:
        return "."
    return (node.module or "").split(".")[0]


def imports_actors(node) -> bool:
    """An import of gym_qwen.actors (Ray) or of a job: only on the path that needs it."""
    mod = ("" if isinstance(node, ast.Import) else ("." * node.level + (node.module or "")))
    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [mod]
    return any(n.lstrip(".").startswith(("gym_qwen.actors", "actors")) or ".actors" in n for n in names)


def hoistable(node, path: Path) -> bool:
    if imports_actors(node) and "actors" not in path.parts:
        return False
    name = top_name(node)
    return name in (".", "gym_qwen", "numpy", "torch") or name in STDLIB


def process(path: Path, dry: bool) -> tuple[int, int]:
    src = path.read_text()
    tree = ast.parse(src)
    lines = src.splitlines(keepends=True)
    top_imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    existing = {ast.unparse(n) for n in top_imports}
    to_hoist, kept = [], []
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for stmt in ast.walk(fn):
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                (to_hoist if hoistable(stmt, path) else kept).append(stmt)
    defined = set()
    for n in tree.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(n.name)
        elif isinstance(n, (ast.Assign, ast.AnnAssign)):
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target]):
                defined |= {x.id for x in ast.walk(t) if isinstance(x, ast.Name)}
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            for a in n.names:
                defined.add("@" + (a.asname or a.name.split(".")[0]) + "=" + ast.unparse(n))
    bound: dict[str, str] = {}
    for d in list(defined):
        if d.startswith("@"):
            name, text = d[1:].split("=", 1)
            bound[name] = text
            defined.discard(d)

    def conflicts(stmt) -> bool:
        text = ast.unparse(stmt)
        for a in stmt.names:
            name = a.asname or a.name.split(".")[0]
            if name in defined or bound.get(name, text) != text:
                return True
        return False

    # never hoist out of a block that would become empty, nor a name the module binds otherwise
    safe = []
    for stmt in to_hoist:
        if conflicts(stmt):
            kept.append(stmt)
            continue
        parent_bodies = [b for n in ast.walk(tree) for b in (getattr(n, "body", None), getattr(n, "orelse", None),
                                                            getattr(n, "finalbody", None))
                         if isinstance(b, list) and stmt in b]
        body = parent_bodies[0]
        if all(isinstance(s, (ast.Import, ast.ImportFrom)) and s in to_hoist for s in body):
            kept.append(stmt)  # e.g. a try: import ... block
            continue
        if any(isinstance(n, ast.Try) and stmt in n.body for n in ast.walk(tree)):
            kept.append(stmt)
            continue
        safe.append(stmt)
        for a in stmt.names:
            bound[a.asname or a.name.split(".")[0]] = ast.unparse(stmt)
    remove = set()
    new_top = []
    for stmt in safe:
        for i in range(stmt.lineno - 1, stmt.end_lineno):
            remove.add(i)
    for stmt in safe:  # a blank line left at the start of a body (after the def or its docstring) goes too
        after = stmt.end_lineno
        while after in remove:
            after += 1
        before = stmt.lineno - 2
        while before in remove:
            before -= 1
        if after < len(lines) and not lines[after].strip() and before >= 0 and (
                lines[before].rstrip().endswith(":") or lines[before].rstrip().endswith('"""')):
            remove.add(after)
        text = ast.unparse(stmt)
        if text not in existing:
            existing.add(text)
            new_top.append(text)
    # a comment for kept ones without one
    comments = {}
    for stmt in kept:
        name = top_name(stmt)
        line = lines[stmt.lineno - 1]
        prev = lines[stmt.lineno - 2] if stmt.lineno >= 2 else ""
        if "#" in line or "#" in prev:
            continue
        reason = "the Ray path only: importing this module must not load Ray" if imports_actors(stmt) else \
            KEEP.get(name)
        if reason:
            comments[stmt.lineno - 1] = reason
    out = []
    for i, line in enumerate(lines):
        if i in remove:
            # drop a blank line that followed an import group inside a function if the group is now gone
            continue
        if i in comments:
            indent = line[: len(line) - len(line.lstrip())]
            out.append(f"{indent}# {comments[i]}\n")
        out.append(line)
    # clean: a blank line directly after a def/docstring left by removed imports
    text = "".join(out)
    if new_top:
        tree2 = ast.parse(text)
        anchor = [n for n in tree2.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        if anchor:
            at = anchor[-1].end_lineno
        else:
            doc = tree2.body[0] if tree2.body and isinstance(tree2.body[0], ast.Expr) else None
            at = doc.end_lineno if doc else 0
        ls = text.splitlines(keepends=True)
        text = "".join(ls[:at]) + "".join(t + "\n" for t in sorted(new_top)) + "".join(ls[at:])
    if not dry:
        path.write_text(text)
    return len(safe), len(kept)


def main() -> None:
    root = Path(sys.argv[1])
    dry = "--dry" in sys.argv
    total_h = total_k = 0
    for p in sorted(root.rglob("*.py")):
        h, k = process(p, dry)
        total_h += h
        total_k += k
        if h or k:
            print(f"{p}: hoisted {h}, kept {k}")
    print(f"hoisted {total_h}, kept {total_k}")


if __name__ == "__main__":
    main()
