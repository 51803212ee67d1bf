"""The bad-input table of docs/errors.md: every row exits 2 with one line naming the problem, no traceback, and
nothing written or changed (the working directory stays empty; the prepared inputs keep their bytes)."""
from __future__ import annotations

import collections
import hashlib
import os
import re
import socket
from pathlib import Path

import pytest

from test_cli import _assert_user_error, _main_in, untrained_checkpoint

TABLE = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
ROW = re.compile(r"^\| `(?P<command>[^`]+)` \| `(?P<says>[^`]+)` \|(?P<needs>[^|]*)\|$")


def _rows() -> list:
    rows = []
    for line in TABLE.read_text().splitlines():
        match = ROW.match(line.strip())
        if match:
            needs = match["needs"].strip()
            marks = [pytest.mark.ray, pytest.mark.slow] if needs == "ray" else []
            rows.append(pytest.param(match["command"], match["says"], marks=marks, id=match["command"][:80]))
    return rows


ROWS = _rows()


def test_the_table_has_every_command_and_forty_rows():
    commands = {p.values[0].split("gym-qwen ", 1)[1].split()[0] for p in ROWS}
    assert {"train", "evaluate", "info", "teacher", "curves", "demo"} <= commands
    assert len(ROWS) >= 40


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The prepared inputs `{fx}` of the table."""
    import torch

    from gym_qwen.platform.config import TrainConfig, save_config

    fx = tmp_path_factory.mktemp("fx")
    ckpt = untrained_checkpoint(fx / "ckpt" / "agent.pt")
    data = ckpt.read_bytes()
    (fx / "truncated.pt").write_bytes(data[: len(data) // 2])
    (fx / "corrupt.pt").write_bytes(b"not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, fx / "foreign.pt")
    torch.save({"format": "gym-qwen/tdmpc2", "version": 1, "where": collections.OrderedDict(p=Path("/etc"))},
               fx / "code.pt")
    (fx / "broken.yaml").write_text("steps: [1, 2\n")
    (fx / "list.yaml").write_text("- steps\n- seed\n")
    (fx / "unknown-key.yaml").write_text("stepz: 10\n")
    (fx / "sweep-empty-grid.yaml").write_text("grid: {spec_exec_horizon: []}\n")  # bad sweep files
    (fx / "sweep-out-of-range.yaml").write_text("grid: {mode: naive, spec_exec_horizon: [0, 3]}\n")
    (fx / "sweep-unknown-key.yaml").write_text("fixed: {episodes: 2}\nfamilies: {a: {mdoe: [naive]}}\n")
    (fx / "afile").write_text("a plain file\n")
    (fx / "empty").mkdir()
    run = fx / "runs" / "cartpole-balance" / "default" / "seed1"
    save_config(TrainConfig(task="cartpole-balance", output_dir=str(fx / "runs")), run / "config.yaml")
    (run / "train_state.pt").write_bytes(b"a training checkpoint")  # the refusals come before it is read
    (fx / "models").mkdir()
    (fx / "models" / "cartpole-balance-size1-seed1.pt").write_bytes(b"a teacher")
    (fx / "models" / "cartpole-balance-size1-seed1.json").write_text("{}\n")
    return fx


@pytest.fixture(scope="module")
def dead_address() -> str:
    """127.0.0.1:<a port nobody listens on>."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"127.0.0.1:{port}"


def _state(root: Path) -> dict:
    """Every path under root with the sha256 of each file (folders map to None)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("command, says", ROWS)
def test_bad_input(command, says, inputs, dead_address, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    fill = lambda text: text.replace("{fx}", str(inputs)).replace("{dead}", dead_address)  # noqa: E731
    words = fill(command).split()
    at = words.index("gym-qwen")
    env, args = dict(w.split("=", 1) for w in words[:at]), words[at + 1:]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = _state(inputs)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{cwd / 'mlflow.db'}")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)
    from gym_qwen.jobs.cli import main

    capsys.readouterr()
    rc = main(args)
    captured = capsys.readouterr()
    _assert_user_error(rc, captured.out, captured.err, cwd, [fill(says)])
    assert _state(inputs) == before


FULL_DISK = {  # a command (placeholders as in the table) -> the file its one line names
    # the episode log beside output= is the first file an evaluation writes (its first episode)
    "evaluate": ("evaluate checkpoint={fx}/ckpt/agent.pt episodes=1 progress=false output=out/ev.json",
                 "ev.episodes.jsonl"),
    "train": ("train task=cartpole-balance steps=2000 mlflow=false output_dir=runs", "config.yaml"),
}


@pytest.mark.parametrize("name", sorted(FULL_DISK))
def test_a_full_disk_is_one_line_and_leaves_nothing_behind(name, inputs, tmp_path):
    """Writes fail as on a full disk (a file-size limit of 0 bytes on the command's process: EFBIG, the same
    handling as ENOSPC): exit 2, one line naming the file, no traceback, no temp file or folder left."""
    import resource
    import subprocess

    from test_cli import GYM_QWEN

    command, file = FULL_DISK[name]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = _state(inputs)
    done = subprocess.run([GYM_QWEN, *command.replace("{fx}", str(inputs)).split()], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0)))
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith(f"gym-qwen {name}: error: cannot write") and file in lines[0], lines[0]
    assert "File too large" in lines[0]
    assert sorted(p.name for p in cwd.rglob("*")) == [], "a failed write left files or folders"
    assert _state(inputs) == before
