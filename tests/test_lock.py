"""Versions locked: constraints.txt pins every package the install pulls, at the exact version installed here, with
the deliberate torch and mujoco pins; `make lock` regenerates it with scripts/lock.py."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lock_module():
    spec = importlib.util.spec_from_file_location("gym_qwen_lock", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lock() -> dict[str, str]:
    """{canonical package name: version} of constraints.txt (tests that compare versions read this)."""
    return _lock_module().read_lock(ROOT / "constraints.txt")


def test_every_line_is_an_exact_pin_of_a_public_version():
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9.-]*==[0-9][0-9a-z.]*", line) for line in lines), lines
    names = [line.split("==")[0] for line in lines]
    assert names == sorted(set(names))  # sorted, each once


def test_deliberate_pins_hold():
    pins = lock()
    assert pins["torch"] == "2.13.0" and pins["mujoco"] == "3.17.0"
    assert "gym-qwen" not in pins


def test_the_lock_is_the_installed_dependency_closure():
    """Every package that gym-qwen[test] pulls, directly or not, is locked at the version installed here; nothing
    else is locked. (If this fails after editing pyproject.toml: `make lock`, then `make test`.)"""
    module = _lock_module()
    installed, locked = module.installed_closure(), lock()
    assert {"ray", "mlflow", "gymnasium", "dm-control", "numpy", "pytest", "torch", "mujoco"} <= set(locked)
    assert {k: v for k, v in locked.items() if installed.get(k) != v} == {}
    assert set(installed) == set(locked)


def test_lock_script_writes_what_it_reads(tmp_path):
    module = _lock_module()
    out = tmp_path / "constraints.txt"
    assert module.main(["--output", str(out)]) == 0
    assert module.read_lock(out) == module.installed_closure()
    assert module.main(["--output", str(out), "--check"]) == 0
    out.write_text(out.read_text().replace("\nray==", "\nray==0.0.1\n#"))
    assert module.main(["--output", str(out), "--check"]) == 1
    assert module.public_version("2.13.0+cpu") == "2.13.0"
