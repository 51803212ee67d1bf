"""Output paths that cannot be made: every command checks every folder it would write into before any work, by
making it (and a temporary file in it) for real, and answers a folder that cannot be made in one line, exit 2,
with nothing written. The path is under /proc, where the permission bits of the parent allow root to write but
no folder can be made (the case a check of permission bits alone lets through: `train output_dir=` used to end
in a FileNotFoundError traceback from mkdir, `evaluate output=` after the whole evaluation)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from test_cli import _assert_user_error, _main_in, untrained_checkpoint

from gym_qwen.jobs import cli
from gym_qwen.platform import config_schema
from gym_qwen.platform.files import output_folder_problem

BAD = f"/proc/gym-qwen-{os.getpid()}"  # a folder that cannot be made, though /proc's bits let root write
# Every command's keys that name where it writes -> the arguments that point one of them at BAD/... ({ck}: a
# checkpoint, {run}: a run directory holding it, {sweep}: a sweep file of it). A key of that kind added to a
# schema without a case here fails test_every_output_key_has_a_case.
OUTPUT_CASES = {
    ("train", "output_dir"): ["task=cartpole-balance", "output_dir={bad}/runs"],
    ("evaluate", "output"): ["checkpoint={ck}", "output={bad}/r.json"],
    ("evaluate", "plot"): ["checkpoint={ck}", "mode=all", "plot={bad}/p.png"],
    ("evaluate", "video_path"): ["checkpoint={ck}", "video=true", "video_path={bad}/v.gif"],
    ("teacher", "output_dir"): ["run={run}", "output_dir={bad}/models"],
    ("curves", "output"): ["runs={run}", "output={bad}/c.png"],
    ("collect", "output"): ["checkpoint={ck}", "output={bad}/d.parquet"],
    ("distill", "save_path"): ["data=d.parquet", "tdmpc_ckpt={ck}", "save_path={bad}/c"],
    ("demo", "output_dir"): ["teacher=none", "train=true", "output_dir={bad}/runs"],
    ("make-dataset", "output"): ["env=hopper", "dataset=random", "output={bad}/d.hdf5"],
    ("make-dataset", "minari_root"): ["env=hopper", "dataset=random", "format=minari", "minari_root={bad}/m"],
    ("behaviour-policy", "output_dir"): ["output_dir={bad}/runs"],
    ("behaviour-policy", "models_dir"): ["models_dir={bad}/models"],
    ("dt-train", "log_dir"): ["env=hopper", "log_dir={bad}/dt"],
    ("dt-test", "output"): ["chk_pt_name=x.pt", "output={bad}/r.json"],
    ("dt-plot", "output"): ["output={bad}/p.png"],
    ("dt-plot", "log_dir"): ["save_fig=true", "log_dir={bad}/dt"],
    ("sweep", "storage"): ["config={sweep}", "storage={bad}/sweeps"],
    ("compare", "output"): ["experiment=x", "output={bad}/p.png"],
}
# Keys of these names are where a command writes; minari_root only for make-dataset (elsewhere it is read), and
# make-dataset's models_dir is read (the behaviour policies)
OUTPUT_KEYS = {"output", "output_dir", "log_dir", "save_path", "storage", "plot", "video_path", "models_dir"}
WRITTEN, READ = {("make-dataset", "minari_root")}, {("make-dataset", "models_dir")}


def _schemas() -> dict:
    found = [v for v in vars(config_schema).values() if dataclasses.is_dataclass(v) and isinstance(v, type)]
    return {s.command: s for s in found if getattr(s, "command", None) in cli.COMMANDS}


def test_every_output_key_has_a_case():
    written = {(command, f.name) for command, schema in _schemas().items() for f in dataclasses.fields(schema)
               if f.name in OUTPUT_KEYS}
    assert written - READ | WRITTEN == set(OUTPUT_CASES)


def test_the_bad_path_cannot_be_made_although_its_parent_lets_root_write():
    assert not Path(BAD).exists() and Path("/proc").is_dir()
    if os.geteuid() == 0:
        assert os.access("/proc", os.W_OK)  # the permission bits say yes for root: only trying tells
    assert output_folder_problem(f"{BAD}/x") is not None


def test_a_folder_that_can_be_made_is_tried_and_left_as_it_was(tmp_path):
    assert output_folder_problem(tmp_path / "a" / "b") is None
    assert list(tmp_path.iterdir()) == []  # the folders it made, and its temporary file, are gone again
    (tmp_path / "f").write_text("x")
    assert output_folder_problem(tmp_path / "f" / "x") == f"{tmp_path / 'f'} is a file, not a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """{ck}, {run} and {sweep}: a tiny untrained checkpoint in a run directory, and a sweep file of it."""
    fx = tmp_path_factory.mktemp("fx")
    ck = untrained_checkpoint(fx / "run" / "agent.pt")
    sweep = fx / "sweep.yaml"
    sweep.write_text(f"fixed: {{checkpoint: {ck}, episodes: 1}}\ngrid: {{mode: naive}}\n")
    return {"{ck}": str(ck), "{run}": str(ck.parent), "{sweep}": str(sweep), "{bad}": BAD}


@pytest.mark.parametrize("command, key", sorted(OUTPUT_CASES), ids=[f"{c}-{k}" for c, k in sorted(OUTPUT_CASES)])
def test_an_output_folder_that_cannot_be_made_is_one_line_before_any_work(command, key, inputs, tmp_path, capsys,
                                                                          monkeypatch):
    args = [command] + [_fill(a, inputs) for a in OUTPUT_CASES[command, key]]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))  # a default that could be made
    line = _assert_user_error(*_main_in(cwd, args, capsys, monkeypatch), cwd, [BAD])
    assert "cannot create" in line or "not writable" in line, line
    assert not (tmp_path / "minari").exists()


def _fill(arg: str, inputs: dict) -> str:
    for placeholder, value in inputs.items():
        arg = arg.replace(placeholder, value)
    return arg
