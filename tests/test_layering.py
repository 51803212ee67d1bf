"""The layering rule (docs/architecture.md, "Layers"): nothing under gym_qwen/platform imports Ray, or the
actors and jobs layers above it that do. A static scan of every platform module's source (any import
statement, at module level or inside a function, and importlib/__import__ calls with a literal name), plus a
fresh interpreter that imports every platform module and finds Ray unloaded."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import gym_qwen

PACKAGE_ROOT = Path(gym_qwen.__file__).resolve().parent
PLATFORM = PACKAGE_ROOT / "platform"
FORBIDDEN = ("ray", "gym_qwen.actors", "gym_qwen.jobs")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve_import(module: str | None, level: int, importer: str, is_package: bool) -> str:
    """The absolute name of `from <level dots><module> import ...` inside module `importer`."""
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[:len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def _is_forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def forbidden_imports(source: str, importer: str, is_package: bool = False) -> list[str]:
    """`line: name` for every import of a forbidden module in `source` (the module named `importer`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve_import(node.module, node.level, importer, is_package)
            names = [base] + [f"{base}.{alias.name}" for alias in node.names if not node.module]
        elif isinstance(node, ast.Call):  # importlib.import_module("ray"), __import__("ray")
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                    and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{node.lineno}: {name}" for name in names if _is_forbidden(name)]
    return found


PLATFORM_FILES = sorted(PLATFORM.rglob("*.py"))


def test_the_scan_covers_the_platform():
    names = {_module_name(p) for p in PLATFORM_FILES}
    for expected in ("gym_qwen.platform", "gym_qwen.platform.training.run", "gym_qwen.platform.training.loop",
                     "gym_qwen.platform.tdmpc2.agent", "gym_qwen.platform.speculative.evaluation"):
        assert expected in names
    assert len(PLATFORM_FILES) >= 25


@pytest.mark.parametrize("path", PLATFORM_FILES, ids=[_module_name(p) for p in PLATFORM_FILES])
def test_platform_module_never_imports_ray(path):
    assert forbidden_imports(path.read_text(encoding="utf-8"), _module_name(path), path.name == "__init__.py") == []


@pytest.mark.parametrize("source, found", [
    ("import ray", ["1: ray"]),
    ("import numpy, ray.tune as tune", ["1: ray.tune"]),
    ("from ray.util import ActorPool", ["1: ray.util"]),
    ("def f():\n    import ray\n    return ray", ["2: ray"]),
    ("import importlib\nm = importlib.import_module('ray')", ["2: ray"]),
    ("m = __import__('ray.tune')", ["1: ray.tune"]),
    ("from gym_qwen.actors.cluster import connect", ["1: gym_qwen.actors.cluster"]),
    ("from ...actors import cluster", ["1: gym_qwen.actors"]),
    ("from ... import actors", ["1: gym_qwen.actors"]),
    ("from ...jobs.common import run_job", ["1: gym_qwen.jobs.common"]),
    ("import raylib\nfrom .rays import x\nfrom ..envs import make_env\nimport gym_qwen.platform.envs", []),
])
def test_the_scan_finds_every_form_of_import(source, found):
    assert forbidden_imports(source, "gym_qwen.platform.tdmpc2.agent") == found


def test_importing_every_platform_module_leaves_ray_unloaded():
    modules = sorted({_module_name(p) for p in PLATFORM_FILES})
    code = ("import importlib, sys\n"
            f"for name in {modules!r} + ['gym_qwen.jobs.train', 'gym_qwen.jobs.evaluate', 'gym_qwen.jobs.info']:\n"
            "    importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith(('ray.', 'gym_qwen.actors'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout
