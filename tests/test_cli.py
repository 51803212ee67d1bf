"""Tests of the `gym-qwen` command line: user errors, help, info, evaluate (table, JSON, GIF)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import TINY, TINY_TASK

VENV_BIN = Path(sys.executable).parent
GYM_QWEN = str(VENV_BIN / "gym-qwen")


def run_cli(args: list[str], cwd: Path, module: str | None = None, timeout: float = 300):
    """Run `gym-qwen ARGS` (or `python -m MODULE ARGS`) in cwd with a private MLflow store under cwd."""
    cmd = [sys.executable, "-m", module, *args] if module else [GYM_QWEN, *args]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _assert_user_error(rc: int, out: str, err: str, cwd: Path, words: list[str]) -> str:
    """Exit code 2, exactly one line on stderr naming `words`, nothing on stdout, no traceback, cwd empty."""
    lines = _stderr_lines(err)
    assert rc == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err + out
    assert out == ""
    assert lines[0].startswith("gym-qwen") and ": error: " in lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert sorted(os.listdir(cwd)) == [], "a failed command wrote files"
    return lines[0]


# ------------------------------------------------------------------------------------------ real processes
# The command-line processes of this module run four at a time from one fixture (a Python start with torch
# costs ~2 s of CPU, evaluate with a video ~30 s); the tests below check their results.
ERRORS = {  # name: (args, words the one-line message must contain)
    "unknown-key": (["train", "stepz=10"], ["'stepz'", "did you mean 'steps'", "valid keys:", "task"]),
    "wrong-type": (["train", "steps=many"], ["steps='many'", "is not an int"]),
    "out-of-range": (["train", "steps=0"], ["steps=0", "out of range", ">= 1"]),
    "bad-choice": (["train", "model_size=3"], ["model_size=3", "valid choices", "1, 5, 19, 48, 317"]),
    "unknown-task": (["train", "task=walker-wlak"], ["unknown task 'walker-wlak'", "did you mean 'walker-walk'",
                                                     "valid tasks:", "cheetah-run"]),
    "missing-checkpoint": (["evaluate", "checkpoint=missing/agent.pt"], ["checkpoint not found",
                                                                         "missing/agent.pt"]),
}


@pytest.fixture(scope="module")
def cli_runs(tiny_checkpoint, tmp_path_factory):
    """{name: (CompletedProcess, cwd)} of every process below, each run in an empty directory of its own."""
    root = tmp_path_factory.mktemp("cli")
    video_ckpt = root / "video-ckpt" / "agent.pt"  # a copy, so the default video path lands in a tmp dir
    video_ckpt.parent.mkdir()
    shutil.copy(tiny_checkpoint, video_ckpt)
    jobs = {  # name: (args, `python -m` module or None for the gym-qwen script); longest first
        "evaluate-video": (["evaluate", f"checkpoint={video_ckpt}", "episodes=2", "video=true",
                            f"output={root / 'video-out' / 'eval.json'}", "progress=false", "torch_threads=1"],
                           None),
        **{name: (args, None) for name, (args, _) in ERRORS.items()},
        "python-m": (["steps=1e9.5"], "gym_qwen.jobs.train"),
        "evaluate-model-size": (["evaluate", f"checkpoint={tiny_checkpoint}", "model_size=5"], None),
        "info": (["info", "task=cheetah-run", "model_size=1"], None),
        "help-train": (["train", "--help"], None),
        "help-evaluate": (["evaluate", "--help"], None),
    }

    def one(name):
        args, module = jobs[name]
        cwd = root / name
        cwd.mkdir()
        if (args and args[0] == "train") or module == "gym_qwen.jobs.train":
            args = [*args, f"output_dir={cwd / 'runs'}"]  # train errors must not create it either
        return name, (run_cli(args, cwd, module=module), cwd)

    (root / "video-out").mkdir()
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(one, jobs))


@pytest.mark.parametrize("case", list(ERRORS))
def test_user_error_is_one_line_exit_2(case, cli_runs):
    proc, cwd = cli_runs[case]
    _assert_user_error(proc.returncode, proc.stdout, proc.stderr, cwd, ERRORS[case][1])


def test_user_error_through_python_m(cli_runs):
    proc, cwd = cli_runs["python-m"]
    line = _assert_user_error(proc.returncode, proc.stdout, proc.stderr, cwd, ["steps='1e9.5'", "is not an int"])
    assert line.startswith("gym-qwen train: error:")


def test_evaluate_with_other_model_size(cli_runs, tiny_checkpoint):
    proc, cwd = cli_runs["evaluate-model-size"]
    _assert_user_error(proc.returncode, proc.stdout, proc.stderr, cwd,
                       ["model_size=1", "(asked 5)", str(tiny_checkpoint)])


# ------------------------------------------------------------------------------------------ more errors, in-process
def _main_in(cwd: Path, args: list[str], capsys, monkeypatch):
    from gym_qwen.jobs.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{cwd / 'mlflow.db'}")
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


IN_PROCESS_ERRORS = {
    "bool-type": (["train", "resume=maybe"], ["resume='maybe'", "true/false"]),
    "bad-choice-evaluate": (["evaluate", "checkpoint=x.pt", "mode=speculative"], ["mode='speculative'",
                                                                                   "baseline"]),
    "not-key-value": (["train", "steps"], ["not of the form key=value"]),
    "duplicate-key": (["train", "steps=1", "steps=2"], ["duplicate key 'steps'"]),
    "missing-preset": (["train", "config=nope.yaml"], ["'nope.yaml' not found"]),
    "evaluate-without-checkpoint": (["evaluate"], ["checkpoint= is required"]),
    "info-unknown-task": (["info", "task=dog-runn"], ["unknown task 'dog-runn'"]),
    "unknown-command": (["trian"], ["unknown command 'trian'", "train"]),
    "workers": (["train", "num_workers=2"], ["num_workers"]),
}


@pytest.mark.parametrize("case", list(IN_PROCESS_ERRORS))
def test_more_user_errors(case, tmp_path, capsys, monkeypatch):
    args, words = IN_PROCESS_ERRORS[case]
    if args[0] == "train":
        args = [*args, f"output_dir={tmp_path / 'runs'}"]
    _assert_user_error(*_main_in(tmp_path, args, capsys, monkeypatch), tmp_path, words)
    if "ray" in sys.modules:  # a refused job leaves no Ray of its own behind in this process
        assert not sys.modules["ray"].is_initialized()


def test_evaluate_with_other_task(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    rc, out, err = _main_in(tmp_path, ["evaluate", f"checkpoint={tiny_checkpoint}", "task=walker-walk"], capsys,
                            monkeypatch)
    _assert_user_error(rc, out, err, tmp_path, [TINY_TASK, "walker-walk"])


def test_evaluate_corrupt_checkpoint(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "ckpt" / "agent.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not a checkpoint")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    rc, out, err = _main_in(cwd, ["evaluate", f"checkpoint={bad}", "video=true"], capsys, monkeypatch)
    _assert_user_error(rc, out, err, cwd, ["cannot read checkpoint", str(bad)])
    assert os.listdir(bad.parent) == ["agent.pt"]  # no video or anything beside it


def test_train_into_existing_run_refuses(tiny_run, tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"
    rel = tiny_run.run_dir.relative_to(Path(tiny_run.cfg.output_dir))
    shutil.copytree(tiny_run.run_dir, runs / rel)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in runs.rglob("*") if p.is_file()}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    rc, out, err = _main_in(cwd, ["train", *TINY, f"task={TINY_TASK}", "steps=2000", f"output_dir={runs}"], capsys,
                            monkeypatch)
    _assert_user_error(rc, out, err, cwd, ["already holds a run", "resume=true"])
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in runs.rglob("*") if p.is_file()} == before


# ------------------------------------------------------------------------------------------ help and info
def test_top_level_help(tmp_path):
    for args in ([], ["--help"]):
        proc = run_cli(args, tmp_path)
        assert proc.returncode == 0 and proc.stderr == ""
        for command in ("train", "evaluate", "info"):
            assert command in proc.stdout
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("command, keys, words", [
    ("train", ["task", "steps", "seed", "model_size", "resume", "checkpoint_freq", "eval_freq", "output_dir"],
     ["1, 5, 19, 48, 317", "usage: gym-qwen train"]),
    ("evaluate", ["checkpoint", "episodes", "mode", "video", "output", "seed"], ["baseline"]),
])
def test_command_help_lists_keys(command, keys, words, cli_runs):
    proc, cwd = cli_runs[f"help-{command}"]
    assert proc.returncode == 0 and proc.stderr == ""
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("  ") and line.split()}
    assert set(keys) <= listed
    for word in words:
        assert word in proc.stdout
    assert os.listdir(cwd) == []


def test_info_parameter_count(cli_runs):
    proc, cwd = cli_runs["info"]
    assert proc.returncode == 0, proc.stderr
    assert "1,212,859" in proc.stdout
    assert proc.stderr == ""  # no absl/MuJoCo deprecation chatter
    assert os.listdir(cwd) == []


# ------------------------------------------------------------------------------------------ evaluate
def test_evaluate_table_json_and_gif(cli_runs):
    import imageio.v3 as iio

    proc, cwd = cli_runs["evaluate-video"]
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    header, rule, row = proc.stdout.splitlines()[:3]
    for column in ("task", "setting", "episodes", "return [95% CI]", "IQM", "retained [95% CI]", "falls",
                   "planner calls/step", "ms/step", "plan", "encode"):
        assert column in header
    cells = row.split()
    # task setting episodes mean [low, high] IQM retained [low, high] falls calls/step corrector/step ms/step ...
    assert cells[:3] == [TINY_TASK, "baseline", "2"]
    assert cells[7:11] == ["100.0%", "[100.0,", "100.0]", "0.0%"]  # baseline against itself, paired
    assert cells[11] == "1.000" and cells[12] == "0.000" and float(cells[13]) > 0

    out = cwd.parent / "video-out" / "eval.json"
    ckpt = cwd.parent / "video-ckpt" / "agent.pt"
    result = json.loads(out.read_text())
    assert result["episodes"] == 2 and len(result["returns"]) == 2 and result["mode"] == "baseline"
    assert result["planner_calls_per_step"] == 1.0 and result["ms_per_decision"] > 0
    assert result["lengths"] == [500, 500] and result["decisions"] == 1000
    assert result["return_mean"] == pytest.approx(sum(result["returns"]) / 2)
    assert f"{result['return_mean']:.1f}" == cells[3]
    assert result["planner_calls"] == result["encoder_calls"] == 1000 and result["corrector_calls"] == 0
    assert result["checkpoint"] == str(ckpt) and result["checkpoint_env_steps"] == 2000

    video = ckpt.parent / f"agent-{TINY_TASK}.gif"  # default: beside the checkpoint
    assert result["video"] == str(video) and f"video: {video}" in proc.stdout
    frames = iio.imread(video, index=None)
    # one frame at reset and one per decision, less runs of identical frames that the GIF encoder merges
    assert frames.ndim == 4 and 1 < frames.shape[0] <= result["lengths"][0] + 1
    assert frames.shape[-1] == 3 and frames.std() > 0
    assert os.listdir(cwd) == [] and sorted(os.listdir(out.parent)) == ["eval.episodes.jsonl", "eval.json"]


def test_evaluation_is_repeatable(tiny_checkpoint, tmp_path, capsys):
    from gym_qwen.jobs.evaluate import main

    results = []
    for name in ("a.json", "b.json"):
        rc = main([f"checkpoint={tiny_checkpoint}", "episodes=1", "seed=3", f"output={tmp_path / name}",
                   "progress=false", "torch_threads=1"])
        assert rc == 0
        results.append(json.loads((tmp_path / name).read_text()))
    assert results[0]["returns"] == results[1]["returns"]
    assert results[0]["returns"][0] != 0.0  # cartpole's reward depends on the actions
    capsys.readouterr()


# ------------------------------------------------------------------------------------------ device
@pytest.fixture
def no_cuda(monkeypatch):
    """This machine has no CUDA, whatever it really has."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def untrained_checkpoint(path: Path) -> Path:
    """An agent checkpoint of the tiny agent with fresh weights (no training: built in about a second)."""
    from conftest import tiny_train_config
    from gym_qwen.platform.tdmpc2.checkpoints import agent_payload, save_checkpoint
    from gym_qwen.platform.training.loop import build_learning

    cfg = tiny_train_config(path.parent / "runs", "steps=2000")
    spec, agent, _ = build_learning(cfg)
    return save_checkpoint(path, agent_payload(cfg, spec, agent.state_dict(with_optim=False), 0))


def test_train_on_cuda_without_cuda_is_a_user_error(no_cuda, tmp_path, capsys, monkeypatch):
    args = ["train", *[a for a in TINY if not a.startswith("device=")], "device=cuda", f"task={TINY_TASK}",
            f"output_dir={tmp_path / 'runs'}"]
    _assert_user_error(*_main_in(tmp_path, args, capsys, monkeypatch), tmp_path, ["device=cuda", "no CUDA device"])


def test_info_on_cuda_without_cuda_is_a_user_error(no_cuda, tmp_path, capsys, monkeypatch):
    _assert_user_error(*_main_in(tmp_path, ["info", f"task={TINY_TASK}", "device=cuda"], capsys, monkeypatch),
                       tmp_path, ["device=cuda", "no CUDA device"])


def test_evaluate_on_cuda_without_cuda_is_a_user_error(no_cuda, tmp_path, capsys, monkeypatch):
    ckpt = untrained_checkpoint(tmp_path / "ckpt" / "agent.pt")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = ["evaluate", f"checkpoint={ckpt}", "device=cuda", "episodes=1", "progress=false", "torch_threads=1",
            f"output={cwd / 'out.json'}"]
    _assert_user_error(*_main_in(cwd, args, capsys, monkeypatch), cwd, ["device=cuda", "no CUDA device"])
    assert os.listdir(ckpt.parent) == ["agent.pt"]


def test_a_job_reads_its_code_version_before_its_work_begins():
    """Records written hours into a run (cards, checkpoints, data files) name the code the run imported: run_job
    reads the git state before the job's body, not when the body first asks (by then the checkout may have
    uncommitted edits: the walker-run card once read '+dirty' for code it never ran)."""
    from gym_qwen.jobs.common import run_job
    from gym_qwen.platform.config import InfoConfig
    from gym_qwen.platform.files import code_version

    code_version.cache_clear()
    seen = []
    assert run_job("info", InfoConfig, lambda cfg: seen.append(code_version.cache_info().currsize), []) == 0
    assert seen == [1]
