"""The layout of the house (docs/architecture.md, "Layers" and "Rooms"): platform/ holds rooms and the shared
infrastructure only, every room says what it holds, the jobs call the library rather than each other, and the
architecture doc names every command that `gym-qwen --help` lists."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import gym_qwen
from gym_qwen.jobs import cli
from test_layering import resolve_import

PACKAGE_DIR = Path(gym_qwen.__file__).resolve().parent
PLATFORM = PACKAGE_DIR / "platform"
ARCHITECTURE = PACKAGE_DIR.parent / "docs" / "architecture.md"
ROOMS = ("datasets", "dt", "speculative", "sweeps", "tdmpc2", "training")
SHARED = ("config", "config_schema", "devices", "envs", "figures", "files", "progress", "registry", "rng", "seeds",
          "storage", "torch_files", "tracking")


def test_platform_holds_only_rooms_and_the_shared_infrastructure():
    modules = sorted(p.stem for p in PLATFORM.glob("*.py") if p.name != "__init__.py")
    rooms = sorted(p.name for p in PLATFORM.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert modules == sorted(SHARED), "a module in platform/ that is neither a room nor shared infrastructure"
    assert rooms == sorted(ROOMS)


def test_every_room_says_in_one_sentence_what_it_holds():
    for room in [PACKAGE_DIR / "actors", PACKAGE_DIR / "jobs", PLATFORM, *(PLATFORM / r for r in ROOMS)]:
        doc = ast.get_docstring(ast.parse((room / "__init__.py").read_text(encoding="utf-8")))
        assert doc, f"{room} has no docstring"
        ends = re.findall(r"(?<!\bal)(?<!\be\.g)[.!?](?:\s|$)", doc.strip())  # "et al." and "e.g." end none
        assert len(ends) == 1, f"{room}: {doc!r} is not one sentence"


def _imports(path: Path, importer: str) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = resolve_import(node.module, node.level, importer, False)
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return found


def test_a_job_calls_the_library_not_another_job():
    shared = {"gym_qwen.jobs", "gym_qwen.jobs.common"}
    for path in sorted((PACKAGE_DIR / "jobs").glob("*.py")):
        importer = f"gym_qwen.jobs.{path.stem}"
        others = {name for name in _imports(path, importer) if name.startswith("gym_qwen.jobs.")
                  and name not in shared and not name.startswith("gym_qwen.jobs.common.")}
        others = {".".join(name.split(".")[:3]) for name in others} - {importer}
        assert others == set(), f"{importer} imports the jobs {sorted(others)}: move what it needs into the library"


def test_the_architecture_doc_names_every_command(capsys):
    assert cli.main(["--help"]) == 0
    listed = re.findall(r"^  (\S+) ", capsys.readouterr().out, flags=re.M)
    assert listed == list(cli.COMMANDS) and len(listed) == 16
    doc = ARCHITECTURE.read_text(encoding="utf-8")
    missing = [name for name in listed if f"`{name}`" not in doc]
    assert missing == [], f"docs/architecture.md does not name {missing}"
