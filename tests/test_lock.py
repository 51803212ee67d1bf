"""Versions locked: constraints.txt pins every package the install pulls on Python 3.11 and on 3.10, at the exact
version installed here, with the deliberate torch and mujoco pins, but not what only one torch build pulls in
(the CUDA build's nvidia-*, cuda-* and triton); `make lock` regenerates it with scripts/lock.py."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _lock_module():
    spec = importlib.util.spec_from_file_location("gym_qwen_lock", ROOT / "scripts" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lock(python: str | None = None) -> dict[str, str]:
    """{canonical package name: version} of constraints.txt for `python` (default: this interpreter; tests that
    compare versions read this)."""
    return _lock_module().read_lock(ROOT / "constraints.txt", python)


def test_every_line_is_an_exact_pin_of_a_public_version():
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")]
    marker = r'(?: ; python_version (?:<|>=) "3\.11")?'
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9.-]*==[0-9][0-9a-z.]*" + marker, line) for line in lines), lines
    names = [line.split("==")[0] for line in lines]
    assert names == sorted(names)  # sorted; a name twice only with the two markers
    assert lock("3.10") and lock("3.11")  # read_lock refuses a name locked twice for one Python


def test_deliberate_pins_hold():
    for python in ("3.10", "3.11", "3.12"):
        pins = lock(python)
        assert pins["torch"] == "2.13.0" and pins["mujoco"] == "3.17.0"
        assert "gym-qwen" not in pins


def test_python_3_10_backports_are_locked_for_3_10_only():
    """What 3.10 needs beyond 3.11 (pytest's exceptiongroup and tomli, aiohttp's async-timeout, and the older
    numpy/scipy/pandas/matplotlib that still support 3.10) is locked under `python_version < "3.11"`."""
    old, new = lock("3.10"), lock("3.11")
    assert {"exceptiongroup", "tomli", "async-timeout"} <= set(old) - set(new)
    assert all(int(old[name].split(".")[0]) < 3 for name in ("numpy", "pandas"))
    module = _lock_module()
    for requirement in module.declared():  # the declared requirements hold on 3.10 too
        if requirement.marker is None or requirement.marker.evaluate({"python_version": "3.10", "extra": ""}):
            assert requirement.specifier.contains(old[module.canonicalize_name(requirement.name)]), requirement


def test_no_build_only_package_is_locked():
    module = _lock_module()
    assert not [pin.name for pin in module.parse_lock(ROOT / "constraints.txt") if module.build_only(pin.name)]
    assert all(module.build_only(name) for name in module.CUDA_TORCH_ONLY)
    assert module.build_only("nvidia-cublas-cu12") and not module.build_only("numpy")


def test_the_lock_is_the_installed_dependency_closure():
    """Every package that gym-qwen[test] pulls, directly or not, is locked at the version installed here; nothing
    else is locked for this Python; every declared requirement is locked in its range. Packages that only one
    torch build pulls in may be installed, unlocked. (If this fails after editing pyproject.toml: `make lock`,
    then `make test`.)"""
    module = _lock_module()
    installed, locked = module.installed_closure(), lock()
    assert {"ray", "mlflow", "gymnasium", "dm-control", "numpy", "pytest", "torch", "mujoco"} <= set(locked)
    assert module.problems(installed, locked, module.declared()) == []


def test_what_is_declared():
    """pyyaml, pandas, scipy and psutil are declared (imported here, or needed by MLflow's system metrics);
    omegaconf, never imported, is not, nor locked."""
    names = {_lock_module().canonicalize_name(r.name) for r in _lock_module().declared()}
    assert {"pyyaml", "pandas", "scipy", "psutil", "absl-py"} <= names
    assert "omegaconf" not in names and "omegaconf" not in lock("3.10") | lock("3.11")


# A simulated foreign install: the checking function on a made-up installed closure, no real install.
LOCKED = {"torch": "2.13.0", "numpy": "2.4.6", "filelock": "4.3.1", "pytest": "9.2.0"}
DECLARED = [Requirement("torch==2.13.0"), Requirement("numpy>=1.26"), Requirement("pytest>=8"),
            Requirement("tomli>=2; python_version < '3.11'")]


def _problems(installed, locked=LOCKED, declared=DECLARED):
    return _lock_module().problems(installed, locked, declared, python="3.11")


def test_check_allows_what_only_the_cuda_torch_pulls_in():
    cuda = dict(LOCKED, triton="3.7.1", **{"nvidia-cublas": "13.1.1.3", "nvidia-cudnn-cu13": "9.20.0.48",
                                            "cuda-toolkit": "13.0.3.0", "cuda-bindings": "13.5.0"})
    assert _problems(LOCKED) == []  # the CPU build
    assert _problems(cuda) == []
    assert _problems(dict(LOCKED, **{"nvidia-cublas-cu12": "12.8.4.1"})) == []  # a cu128 build from PyTorch's index


def test_check_refuses_a_declared_dependency_at_another_version():
    assert _problems(dict(LOCKED, numpy="2.4.5")) == ["numpy: installed 2.4.5, locked 2.4.6"]
    assert _problems(dict(LOCKED, filelock="4.3.2")) == ["filelock: installed 4.3.2, locked 4.3.1"]


def test_check_refuses_a_missing_locked_dependency():
    assert _problems({k: v for k, v in LOCKED.items() if k != "filelock"}) == ["filelock: locked 4.3.1 but not installed"]


def test_check_refuses_an_unlocked_package_and_an_undeclared_lock():
    assert _problems(dict(LOCKED, omegaconf="2.4.0")) == ["omegaconf: installed 2.4.0 but not locked"]
    assert _problems(LOCKED, {k: v for k, v in LOCKED.items() if k != "pytest"}, DECLARED) == [
        "pytest: declared (pytest>=8) but not locked", "pytest: installed 9.2.0 but not locked"]
    assert _problems(LOCKED, dict(LOCKED, numpy="1.20.0"), DECLARED) == [
        "numpy: locked 1.20.0, outside the declared numpy>=1.26", "numpy: installed 2.4.6, locked 1.20.0"]


def test_check_reads_markers_for_the_python_it_is_asked_about():
    module = _lock_module()
    assert module.problems(dict(LOCKED, tomli="2.5.0"), dict(LOCKED, tomli="2.5.0"), DECLARED, python="3.10") == []
    assert module.problems(LOCKED, LOCKED, DECLARED, python="3.10") == ["tomli: declared (tomli>=2; python_version < "
                                                                       "\"3.11\") but not locked"]


def test_render_writes_one_line_where_both_pythons_agree(tmp_path):
    module = _lock_module()
    new = {"numpy": "2.4.6", "torch": "2.13.0", "narwhals": "2.29.0"}
    old = {"numpy": "2.2.6", "torch": "2.13.0", "tomli": "2.5.0"}
    out = tmp_path / "constraints.txt"
    out.write_text(module.render(new, old))
    lines = [line for line in out.read_text().splitlines() if not line.startswith("#")]
    assert lines == ['narwhals==2.29.0 ; python_version >= "3.11"', 'numpy==2.4.6 ; python_version >= "3.11"',
                     'numpy==2.2.6 ; python_version < "3.11"', 'tomli==2.5.0 ; python_version < "3.11"',
                     "torch==2.13.0"]
    assert module.read_lock(out, "3.11") == new and module.read_lock(out, "3.10") == old
    assert module.read_lock(out, "3.13") == new


def test_read_lock_refuses_other_markers(tmp_path):
    out = tmp_path / "constraints.txt"
    out.write_text('numpy==2.4.6 ; sys_platform == "linux"\n')
    with pytest.raises(ValueError, match="not name==version"):
        _lock_module().read_lock(out)


def test_lock_script_checks_this_environment(tmp_path):
    module = _lock_module()
    out = tmp_path / "constraints.txt"
    out.write_text((ROOT / "constraints.txt").read_text())
    assert module.main(["--output", str(out), "--check"]) == 0
    out.write_text(re.sub(r"\nray==[^\n]*", "\nray==0.0.1", out.read_text()))
    assert module.main(["--output", str(out), "--check"]) == 1
    assert module.public_version("2.13.0+cpu") == "2.13.0"
