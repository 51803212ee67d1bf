"""gym-qwen sweep: the sweep file (every bad one is one line, exit 2, nothing started), grid expansion, MLflow run
bookkeeping (continued runs, no step twice, concurrent trials on one SQLite store), a trial continued after an
interruption, an interrupted sweep resumed without running a finished trial again (ray, in the default suite), and
real Tune sweeps (ray + slow): end to end with a retried trial, Optuna, ASHA, and a remote tracking server."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import mlflow_server
from pngs import assert_plot
from test_cli import _assert_user_error, _main_in, untrained_checkpoint

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """An untrained tiny cartpole-balance checkpoint (horizon 1, 32 samples, 4 elites)."""
    return untrained_checkpoint(tmp_path_factory.mktemp("sweep_ckpt") / "ckpt" / "agent.pt")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _sweep_file(path: Path, ckpt: Path, families: str, head: str = "", fixed: str = "") -> Path:
    return _write(path, f"experiment: t\n{head}fixed:\n  checkpoint: {ckpt}\n  episodes: 1\n{fixed}"
                        f"families:\n{families}")


# ---------------------------------------------------------------------------------------------- the sweep file
FIXED = "fixed: {checkpoint: CKPT, episodes: 1}\n"
BAD = {  # file text (CKPT: the tiny checkpoint) -> words the one line must hold
    "unknown-top-key": (FIXED + "experimnet: x\ngrid: {mode: naive}\n",
                        ["unknown key 'experimnet'", "did you mean 'experiment'"]),
    "unknown-family-key": (FIXED + "families: {a: {mdoe: [naive]}}\n", ["family 'a'", "unknown key 'mdoe'", "'mode'"]),
    "unknown-fixed-key": ("fixed: {checkpoint: CKPT, episodez: 2}\ngrid: {mode: naive}\n",
                          ["fixed", "unknown key 'episodez'"]),
    "empty-grid": (FIXED + "families: {a: {spec_exec_horizon: []}}\n",
                   ["family 'a'", "spec_exec_horizon: [] is an empty grid"]),
    "empty-family": (FIXED + "families: {a: {}}\n", ["family 'a' is empty"]),
    "no-families": (FIXED + "families: {}\n", ["families: is empty"]),
    "no-trials": (FIXED, ["no trials"]),
    "out-of-range": (FIXED + "families: {a: {mode: naive, spec_exec_horizon: [0, 3]}}\n",
                     ["family 'a'", "spec_exec_horizon=0 is out of range: must be >= 1"]),
    "bad-choice": (FIXED + "grid: {mode: [naive, speculate]}\n", ["mode='speculate' is not one of the valid choices"]),
    "bad-type": (FIXED + "grid: {mode: naive, spec_exec_horizon: [three]}\n",
                 ["spec_exec_horizon='three' is not an int"]),
    "top-out-of-range": (FIXED + "max_failures: -1\ngrid: {mode: naive}\n", ["max_failures=-1 is out of range"]),
    "search-choice": (FIXED + "search: random\ngrid: {mode: naive}\n", ["search='random' is not one of"]),
    "optuna-with-grid": (FIXED + "search: optuna\ngrid: {mode: naive}\n", ["grid: is for search: grid"]),
    "optuna-no-space": (FIXED + "search: optuna\n", ["search: optuna needs a space:"]),
    "space-with-grid-search": (FIXED + "space: {mismatch_threshold: {low: 0.1, high: 1}}\ngrid: {mode: naive}\n",
                               ["space: is for search: optuna"]),
    "space-unknown-key": (FIXED + "search: optuna\nspace: {treshold: [1, 2]}\n",
                          ["space", "unknown key 'treshold'"]),
    "space-bad-range": (FIXED + "search: optuna\nspace: {mismatch_threshold: {low: 1.0, high: 0.5}}\n",
                        ["mismatch_threshold: low=1.0 and high=0.5 must be numbers with low < high"]),
    "space-log-zero": (FIXED + "search: optuna\nspace: {mismatch_threshold: {low: 0, high: 1, log: true}}\n",
                       ["a log range needs low > 0"]),
    "space-not-range": (FIXED + "search: optuna\nspace: {mismatch_threshold: 0.5}\n",
                        ["give a list of values or a range"]),
    "space-empty-choice": (FIXED + "search: optuna\nspace: {corrector_type: []}\n", ["[] is an empty choice"]),
    "space-resources": (FIXED + "search: optuna\nspace: {num_workers: [0, 2]}\n", ["num_workers cannot be searched"]),
    "space-and-fixed": (FIXED + "search: optuna\nspace: {episodes: [1, 2]}\n", ["episodes cannot be searched"]),
    "space-corner-out-of-range": (FIXED + "search: optuna\nspace: {mode: [naive], spec_exec_horizon: "
                                  "{low: 0, high: 4}}\n", ["space corner", "spec_exec_horizon=0 is out of range"]),
    "space-corner-corrector": (FIXED + "search: optuna\nspace: {mode: [adaptive], corrector_type: [none, "
                               "temporal]}\n", ["corrector file", "not found"]),
    "objective-unknown": (FIXED + "search: optuna\nobjectives: [return_mean:max, speed:min]\n"
                          "space: {mode: [naive]}\n", ["objectives", "unknown key 'speed'"]),
    "objective-direction": (FIXED + "search: optuna\nobjectives: [return_mean:up]\nspace: {mode: [naive]}\n",
                            ["'return_mean:up' must be METRIC:max or METRIC:min"]),
    "not-swept": (FIXED + "grid: {mode: naive, plot: x.png}\n", ["plot cannot be set in a sweep"]),
    "num-envs": (FIXED + "grid: {mode: naive, num_envs: 4}\n", ["num_envs cannot be set in a sweep"]),
    "trial-system-metrics": (FIXED + "grid: {mode: naive, system_metrics: true}\n",
                             ["system_metrics cannot be set in a sweep", "the sweep's own system_metrics=true"]),
    "mode-all": (FIXED + "grid: {mode: all}\n", ["mode=all compares inside one process"]),
    "cross-field": (FIXED + "grid: {mode: naive, corrector_type: [two_tower]}\n", ["mode=naive runs no corrector"]),
    "fixed-and-swept": (FIXED + "grid: {episodes: [1, 2]}\n", ["episodes is both fixed and swept"]),
    "value-twice": (FIXED + "grid: {mode: naive, seed: [1, 1]}\n", ["seed: [1, 1] lists a value twice"]),
    "grid-and-families": (FIXED + "grid: {mode: naive}\nfamilies: {a: {mode: naive}}\n", ["not both"]),
    "family-not-mapping": (FIXED + "families: {a: [1, 2]}\n", ["families: a: must be a mapping"]),
    "no-corrector-file": (FIXED + "families: {a: {mode: spec_corrector, spec_exec_horizon: 1, "
                                  "corrector_type: two_tower}}\n", ["family 'a'", "corrector file", "not found"]),
    "k-past-plan": (FIXED + "grid: {mode: spec_corrector, spec_exec_horizon: 3, corrector_type: two_tower}\n",
                    ["spec_exec_horizon=3 > plan horizon 1"]),
    "elites-vs-checkpoint": (FIXED + "grid: {mode: baseline, num_elites: 40}\n",
                             ["num_elites=40 must be < num_samples=32"]),
    "arch-vs-checkpoint": (FIXED + "grid: {mode: baseline, latent_dim: 64}\n", ["latent_dim"]),
    "missing-checkpoint": ("fixed: {checkpoint: nope.pt}\ngrid: {mode: naive}\n", ["checkpoint not found"]),
    "no-checkpoint": ("grid: {mode: naive}\n", ["checkpoint= is required"]),
    "list-file": ("- mode\n- seed\n", ["must contain a mapping"]),
    "asha-on-evaluate": (FIXED + "scheduler: asha\ngrid: {mode: naive}\n", ["asha stops trainings early",
                                                                           "not evaluate"]),
    "train-output-dir": ("trial_command: train\nfixed: {task: cartpole-balance}\ngrid: {output_dir: [a, b]}\n",
                         ["output_dir cannot be set in a sweep", "its own folder"]),
    "train-ray-inside": ("trial_command: train\nfixed: {task: cartpole-balance, num_workers: 2}\ngrid: {seed: [1]}\n",
                         ["num_workers cannot be set in a sweep"]),
    "train-unknown-key": ("trial_command: train\nfixed: {task: cartpole-balance}\ngrid: {model_sise: [1, 5]}\n",
                          ["unknown key 'model_sise'", "'model_size'", "train keys"]),
    "train-bad-value": ("trial_command: train\nfixed: {task: cartpole-balance}\ngrid: {model_size: [1, 2]}\n",
                        ["model_size=2"]),
    "train-optuna": ("trial_command: train\nsearch: optuna\nfixed: {task: cartpole-balance}\n"
                     "space: {lr: {low: 0.0001, high: 0.01}}\n", ["search: optuna searches evaluation settings"]),
    "asha-without-evaluations": ("trial_command: train\nscheduler: asha\nfixed: {task: cartpole-balance, "
                                 "eval_freq: 0}\ngrid: {seed: [1, 2]}\n", ["eval_freq=0 makes none"]),
    "dt-missing-dataset": ("trial_command: dt-train\nfixed: {dataset_dir: nowhere}\ngrid: {env: [hopper]}\n",
                           ["dataset nowhere/hopper-medium-v5.hdf5 not found", "make-dataset env=hopper"]),
    "dt-log-dir": ("trial_command: dt-train\nfixed: {log_dir: x}\ngrid: {env: [hopper]}\n",
                   ["log_dir cannot be set in a sweep"]),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_sweep_file_is_one_line_and_starts_nothing(name, ckpt, tmp_path, capsys, monkeypatch):
    import ray

    text, words = BAD[name]
    path = _write(tmp_path / "files" / f"{name}.yaml", text.replace("CKPT", str(ckpt)))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    rc, out, err = _main_in(cwd, ["sweep", f"config={path}"], capsys, monkeypatch)
    _assert_user_error(rc, out, err, cwd, words)
    assert not ray.is_initialized()


def test_command_line_keys_and_the_usual_refusals(ckpt, tmp_path, capsys, monkeypatch):
    path = _sweep_file(tmp_path / "s.yaml", ckpt, "  a: {mode: naive}\n")
    cases = [
        (["sweep"], ["config=SWEEP.yaml is required"]),
        (["sweep", f"config={tmp_path / 'missing.yaml'}"], ["not found"]),
        (["sweep", f"config={path}", "max_concurrent=-2"], ["max_concurrent=-2 is out of range"]),
        (["sweep", f"config={path}", "resume=maybe"], ["resume='maybe' is not a bool"]),
        (["sweep", f"config={path}", "resume=true"], ["no sweep to resume"]),
        (["sweep", f"config={path}", f"storage={path}"], ["cannot keep the sweep there"]),
        (["sweep", f"config={path}", "speed=3"], ["unknown key 'speed'"]),
    ]
    for i, (args, words) in enumerate(cases):
        cwd = tmp_path / f"cwd{i}"
        cwd.mkdir()
        _assert_user_error(*_main_in(cwd, args, capsys, monkeypatch), cwd, words)


def test_families_expand_to_the_union_of_their_grids_and_equal_trials_run_once(ckpt, tmp_path):
    from gym_qwen.platform.sweeps.spec import load_sweep

    path = _sweep_file(tmp_path / "s.yaml", ckpt,
                       "  base: {mode: baseline, seed: [1, 2]}\n"
                       "  again: {mode: baseline, mismatch_threshold: 0.5, seed: 2}\n"
                       "  naive: {mode: naive, spec_exec_horizon: [2, 3], seed: [1, 2]}\n"
                       "  cheap: {mode: baseline, num_samples: [16, 32], num_elites: 4, num_pi_trajs: 2}\n")
    sweep = load_sweep(str(path), {"max_failures": "5"})
    names = [p.name for p in sweep.points]
    assert [n.replace("mode=", "") for n in names] == [
        "base: baseline seed=1", "base: baseline seed=2",
        "naive: naive spec_exec_horizon=2 seed=1", "naive: naive spec_exec_horizon=2 seed=2",
        "naive: naive spec_exec_horizon=3 seed=1", "naive: naive spec_exec_horizon=3 seed=2",
        "cheap: baseline num_samples=16 num_elites=4 num_pi_trajs=2",
        "cheap: baseline num_samples=32 num_elites=4 num_pi_trajs=2"]
    assert sweep.notes == ["again: mode=baseline mismatch_threshold=0.5 seed=2 is the same trial as base: "
                           "mode=baseline seed=2: run once"]
    assert sweep.settings.max_failures == 5 and sweep.experiment == "t"
    assert all(p.values["episodes"] == 1 and p.values["checkpoint"] == str(ckpt) for p in sweep.points)
    # the fingerprint follows the trials, not the file's layout
    moved = _sweep_file(tmp_path / "m.yaml", ckpt, "  base: {seed: [1, 2], mode: baseline}\n")
    assert load_sweep(str(moved)).fingerprint != sweep.fingerprint


def test_a_search_space_is_parsed_and_every_corner_checked(ckpt, tmp_path):
    from gym_qwen.platform.sweeps.spec import load_sweep

    path = _write(tmp_path / "o.yaml", f"search: optuna\nnum_trials: 5\nfixed: {{checkpoint: {ckpt}, mode: adaptive}}\n"
                                       "space:\n  mismatch_threshold: {low: 0.05, high: 2.0, log: true}\n"
                                       "  spec_exec_horizon: [2, 3, 4]\n  iterations: {low: 1, high: 3}\n")
    sweep = load_sweep(str(path))
    assert sweep.searched and sweep.num_trials == 5
    assert sweep.objectives == (("return_mean", "max"), ("planner_calls_per_step", "min"))
    threshold, horizon, iterations = sweep.space
    assert (threshold.low, threshold.high, threshold.log) == (0.05, 2.0, True) and isinstance(threshold.low, float)
    assert horizon.values == (2, 3, 4) and (iterations.low, iterations.high) == (1, 3)
    assert isinstance(iterations.low, int)
    assert len(sweep.points) == 2 * 3 * 2  # every corner, each built into evaluate's config
    assert {p.cfg.mismatch_threshold for p in sweep.points} == {0.05, 2.0}
    assert {p.cfg.spec_exec_horizon for p in sweep.points} == {2, 3, 4}
    assert all(p.cfg.mode == "adaptive" for p in sweep.points)
    # the fingerprint follows the budget, the space and the sampler's seed
    assert load_sweep(str(path), {"num_trials": "6"}).fingerprint != sweep.fingerprint
    assert load_sweep(str(path), {"search_seed": "1"}).fingerprint != sweep.fingerprint
    assert load_sweep(str(path)).fingerprint == sweep.fingerprint


def test_the_searcher_draws_inside_the_space_seeded_and_learns_from_two_objectives():
    from gym_qwen.actors.tune_trials import param_space, searcher
    from gym_qwen.platform.sweeps.spec import Dimension

    space = (Dimension("mismatch_threshold", low=0.05, high=2.0, log=True), Dimension("spec_exec_horizon", low=2, high=6),
             Dimension("corrector_type", values=("none", "two_tower")))
    objectives = (("return_mean", "max"), ("planner_calls_per_step", "min"))

    def draws(seed: int, n: int = 6) -> list[dict]:
        s = searcher(objectives, seed)
        assert s.set_search_properties(None, None, param_space([{"values": {}}], {"uri": "x"}, space))
        out = []
        for i in range(n):
            point = s.suggest(f"t{i}")["suggested"]
            out.append(point)
            s.on_trial_complete(f"t{i}", {"return_mean": 100.0 * point["spec_exec_horizon"],
                                          "planner_calls_per_step": 1.0 / point["spec_exec_horizon"]})
        return out

    first = draws(0)
    for p in first:
        assert 0.05 <= p["mismatch_threshold"] <= 2.0 and 2 <= p["spec_exec_horizon"] <= 6
        assert isinstance(p["spec_exec_horizon"], int) and p["corrector_type"] in ("none", "two_tower")
    assert len({p["mismatch_threshold"] for p in first}) == len(first)
    assert draws(0) == first and draws(1) != first


def test_trial_settings_resolve_like_evaluate(ckpt, tmp_path):
    from gym_qwen.platform.sweeps.setting import resolve_sweep
    from gym_qwen.platform.sweeps.spec import load_sweep

    path = _sweep_file(tmp_path / "s.yaml", ckpt,
                       "  a: {mode: [naive3, adaptive], mismatch_threshold: 0.3}\n"
                       "  cheap: {mode: baseline, num_samples: 16, iterations: 2, num_elites: 4, num_pi_trajs: 2}\n")
    sweep = load_sweep(str(path))
    settings, shas = resolve_sweep(sweep, tmp_path)
    assert [s.label for s in settings] == ["naive k=3", "adaptive k=3 thr=0.3",
                                           "baseline (planner 16x2)"]  # the budget rule's elites and trajectories
    assert settings[2].overrides == {"iterations": 2, "num_elites": 4, "num_pi_trajs": 2, "num_samples": 16}
    assert settings[0].note.startswith("mode=naive3 is the original project's name")
    assert list(shas) == [str(ckpt)]


def test_the_presets_are_valid(tmp_path):
    from gym_qwen.platform.sweeps.setting import resolve_sweep
    from gym_qwen.platform.sweeps.spec import load_sweep

    sweep = load_sweep(str(REPO / "configs/sweeps/spec_exec_horizon.yaml"))
    settings, shas = resolve_sweep(sweep, REPO)  # the shipped teacher and its correctors
    families = {p.family for p in sweep.points}
    assert {"baseline", "prior", "naive", "corrected", "extended", "adaptive", "planner"} <= families
    assert {s.spec.settings.mismatch_threshold for s in settings if s.spec.settings.mode == "adaptive"} == \
        {0.3, 0.5, 0.8}
    assert {s.spec.corrector_type for s in settings} == {"none", "two_tower", "temporal"}
    assert all(s.planner and s.spec.settings.mode == "baseline" for s, p in zip(settings, sweep.points)
               if p.family == "planner")
    assert {s.planner["num_elites"] for s, p in zip(settings, sweep.points) if p.family == "planner"} == {8, 16, 32}
    assert len(shas) == 1
    demo = load_sweep(str(REPO / "configs/sweeps/demo.yaml"))
    settings, _ = resolve_sweep(demo, REPO)
    assert len(settings) == 13 and {s.spec.settings.exec_horizon for s in settings} == {1, 3, 6}
    assert {s.spec.settings.mode for s in settings} >= {"prior", "baseline", "async", "stale"}
    assert {s.spec.clock.delay for s in settings if s.spec.clock is not None} == {3}  # L = 300 ms, P = 100 ms
    tiny = load_sweep(str(REPO / "configs/sweeps/tiny.yaml"))
    assert len(tiny.points) == 2 and tiny.settings.max_concurrent == 2
    search, grid = (load_sweep(str(REPO / f"configs/sweeps/{n}.yaml")) for n in ("search", "search-grid"))
    resolve_sweep(search, REPO)  # every corner of the space: the shipped correctors exist
    assert search.searched and {d.key for d in search.space} == set(grid.families["grid"])
    assert len(resolve_sweep(grid, REPO)[0]) == 30
    train = load_sweep(str(REPO / "configs/sweeps/train.yaml"))
    assert len(train.points) == 8 and train.settings.scheduler == "asha"
    assert {(p.cfg.model_size, p.cfg.seed, p.cfg.lr) for p in train.points} == \
        {(m, s, lr) for m in (1, 5) for s in (1, 2) for lr in (3e-4, 1e-3)}
    dt = load_sweep(str(REPO / "configs/sweeps/dt.yaml"))  # (its datasets are made on the machine that runs it)
    assert len(dt.points) == 18 and {p.cfg.env for p in dt.points} == {"halfcheetah", "hopper", "walker2d"}


# ------------------------------------------------------------------------------------------------ MLflow runs
def test_a_run_found_by_its_tags_is_continued_and_never_logs_a_step_twice(tmp_path):
    from gym_qwen.platform.sweeps.runs import open_run
    from gym_qwen.platform.tracking import prepare_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = prepare_experiment(uri, "e")
    assert prepare_experiment(uri, "e") == exp
    tags = {"sweep_id": "s1", "trial_id": "t1"}
    first = open_run(uri, exp, tags, "trial", {"mode": "naive", "planner_overrides": {"num_samples": 64}},
                     {"mlflow.parentRunId": "p"})
    assert first.log_metrics({"return_mean": 1.0, "x": 2.0}, 1) == 2
    assert first.log_metrics({"return_mean": 5.0}, 1) == 0  # the same step again: skipped
    again = open_run(uri, exp, tags, "trial", {"mode": "naive", "extra": 1})
    assert again.run_id == first.run_id and again.last == {"return_mean": 1, "x": 1}
    assert again.log_metrics({"return_mean": 9.0, "x": 9.0}, 1) == 0
    assert again.log_metrics({"return_mean": 3.0}, 2) == 1
    other = open_run(uri, exp, {"sweep_id": "s1", "trial_id": "t2"}, "trial")
    assert other.run_id != first.run_id
    hist = again.client.get_metric_history(first.run_id, "return_mean")
    assert [(m.step, m.value) for m in hist] == [(1, 1.0), (2, 3.0)]
    params = again.client.get_run(first.run_id).data.params
    assert params["planner_overrides.num_samples"] == "64" and params["extra"] == "1"


_CONCURRENT = """
import sys, time
from gym_qwen.platform.sweeps.runs import open_run
uri, exp, i = sys.argv[1], sys.argv[2], sys.argv[3]
for attempt in range(2):  # a retried trial: the second attempt finds its run again and logs the rest
    run = open_run(uri, exp, {"sweep_id": "s", "trial_id": i}, f"trial {i}", {"i": i, "mode": "naive"})
    for step in range(1, 16):
        run.log_metrics({"return_mean": float(step), "ms_per_decision": 1.0, "episodes_done": step}, step)
    run.set_tags({"attempt": attempt})
    run.finish()
print("ok", run.run_id)
"""


@pytest.mark.slow
def test_concurrent_trials_share_one_sqlite_store(tmp_path):
    """Four processes (trials) open, continue and log to one SQLite store the driver made: no "database is locked",
    one run per trial, each step once."""
    from gym_qwen.platform.tracking import client, prepare_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = prepare_experiment(uri, "concurrent")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(["nice", "-n", "19", PY, "-c", _CONCURRENT, uri, exp, str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out.startswith("ok"), err[-2000:]
        assert "locked" not in err
    c = client(uri)
    runs = c.search_runs([exp])
    assert len(runs) == 4
    for run in runs:
        assert [m.step for m in c.get_metric_history(run.info.run_id, "return_mean")] == list(range(1, 16))


# ------------------------------------------------------------------------------------------ one trial, no Ray
def test_an_interrupted_trial_continues_its_run_and_ends_with_the_uninterrupted_numbers(ckpt, tmp_path):
    """A trial killed after logging episode 1 but before reporting it runs episode 1 again when retried from its
    last report: its MLflow run (the same one) holds each step once, and the numbers equal evaluate's."""
    from gym_qwen.platform.config import EvaluateConfig, config_from_dict
    from gym_qwen.platform.speculative.evaluation import evaluate_checkpoint
    from gym_qwen.platform.speculative.modes import ExecutionSpec, SpeculationSettings
    from gym_qwen.platform.sweeps.runs import open_run
    from gym_qwen.platform.tracking import prepare_experiment
    from gym_qwen.platform.sweeps.spec import SweepPoint
    from gym_qwen.platform.sweeps.trial import run_trial

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = prepare_experiment(uri, "e")
    values = {"checkpoint": str(ckpt), "episodes": 2, "mode": "naive", "spec_exec_horizon": 3, "device": "cpu"}
    point = SweepPoint("naive", values, {"mode": "naive"}, config_from_dict(EvaluateConfig, values))
    reports = []

    class Killed(Exception):
        pass

    def report_then_die(metrics, records):
        if len(records) == 2:
            raise Killed  # the machine is lost after MLflow got episode 1 and before Tune did
        reports.append((metrics, records))

    kw = dict(workdir=str(tmp_path), uri=uri, experiment_id=exp, parent_run_id="p", sweep_id="s", trial_id="t1")
    with pytest.raises(Killed):
        run_trial(point, records=[], report=report_then_die, **kw)
    assert len(reports) == 1
    final = run_trial(point, records=reports[-1][1], report=lambda m, r: reports.append((m, r)), **kw)
    run = open_run(uri, exp, {"sweep_id": "s", "trial_id": "t1"}, "x")
    assert run.client.get_run(run.run_id).info.status == "RUNNING"  # (open continued it again)
    hist = run.client.get_metric_history(run.run_id, "return_mean")
    assert [m.step for m in hist] == [1, 2]
    assert [a.path for a in run.client.list_artifacts(run.run_id)] == ["episodes.csv", "metrics.json"]
    res, _ = evaluate_checkpoint(str(ckpt), 2, 1, execution=ExecutionSpec(SpeculationSettings("naive", 3)))
    assert final["return_mean"] == pytest.approx(res.mean)
    assert final["planner_calls_per_step"] == pytest.approx(res.planner_calls_per_step)
    assert hist[-1].value == pytest.approx(res.mean)


# -------------------------------------------------------------------------------------------- real Tune sweeps
def _tiny_sweep(path: Path, ckpt: Path, episodes: int = 2, head: str = "", families: str | None = None) -> Path:
    families = families or "  baseline: {mode: baseline}\n  naive: {mode: naive, spec_exec_horizon: 3}\n"
    return _write(path, f"experiment: tiny\nmax_concurrent: 2\nmax_failures: 1\ntrial_cpus: 1\n{head}fixed:\n"
                        f"  checkpoint: {ckpt}\n  episodes: {episodes}\n  torch_threads: 1\n  device: cpu\n"
                        f"families:\n{families}")


def _runs(uri: str):
    from gym_qwen.platform.tracking import client

    c = client(uri)
    exps = [e.experiment_id for e in c.search_experiments()]
    return c, c.search_runs(exps)


@pytest.mark.ray
@pytest.mark.slow
def test_a_two_trial_sweep_end_to_end_with_a_retried_trial_then_compare(ray_local, ckpt, tmp_path, capsys,
                                                                        monkeypatch):
    """Tune + MLflow SQLite: the driver's parent run (sweep id, teacher sha256), one nested run per trial with its
    params, per-episode metrics (each step once, though one trial died after logging episode 0 and was retried
    from scratch) and its episode table; then compare on it: rows, Pareto marks, PNG + CSV, logged to the parent."""
    from gym_qwen.platform.files import sha256_of

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    marker = tmp_path / "crashed"
    monkeypatch.setenv("GYM_QWEN_SWEEP_FAULTS", json.dumps({"crash_at_episode": 0, "marker": str(marker)}))
    path = _tiny_sweep(tmp_path / "tiny.yaml", ckpt, episodes=2)
    rc, out, err = _main_in(cwd, ["sweep", f"config={path}"], capsys, monkeypatch)
    assert rc == 0, err[-3000:]
    assert marker.exists()  # a trial did die once
    assert "retrying from its last finished episode" in out
    assert "[2/2]" in out and "compare: gym-qwen compare sweep=tiny-" in out
    sweep_id = out.split("compare sweep=")[1].split()[0]
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    c, runs = _runs(uri)
    parents = [r for r in runs if r.data.tags.get("gym_qwen.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("gym_qwen.role") == "trial"]
    assert len(parents) == 1 and len(trials) == 2
    parent = parents[0]
    assert parent.data.tags["sweep_id"] == sweep_id and parent.data.tags["teacher_sha256"] == sha256_of(ckpt)
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_done"] == 2
    for run in trials:
        tags, params = run.data.tags, run.data.params
        assert tags["mlflow.parentRunId"] == parent.info.run_id and tags["sweep_id"] == sweep_id
        assert tags["trial_id"] and tags["teacher_sha256"] == sha256_of(ckpt)
        for key in ("mlflow.source.name", "mlflow.source.git.commit", "mlflow.user"):  # the driver's, from Ray
            assert tags.get(key) == parent.data.tags.get(key), key
        assert run.info.status == "FINISHED"
        assert params["episodes"] == "2" and params["mode"] in ("baseline", "naive")
        for key in ("return_mean", "planner_calls_per_step", "ms_per_decision", "episodes_done"):
            assert [m.step for m in c.get_metric_history(run.info.run_id, key)] == [1, 2], key
        assert {a.path for a in c.list_artifacts(run.info.run_id)} == {"episodes.csv", "metrics.json"}
    calls = {r.data.params["mode"]: r.data.metrics["planner_calls_per_step"] for r in trials}
    assert calls["baseline"] == 1.0 and calls["naive"] == pytest.approx(1 / 3, abs=0.01)
    assert len({r.data.tags["trial_id"] for r in trials}) == 2
    assert f"http://127.0.0.1:5000/#/experiments/{parent.info.experiment_id}/runs" in out

    rc, out, err = _main_in(cwd, ["compare", f"sweep={sweep_id}"], capsys, monkeypatch)
    assert rc == 0, err
    lines = [line for line in out.splitlines() if line.lstrip().startswith(("baseline", "naive"))]
    assert len(lines) == 2
    naive = next(line for line in lines if line.lstrip().startswith("naive"))
    assert naive.rstrip().endswith(("*", "*+"))  # fewer planner calls: on the front whatever its return
    png, csv = cwd / f"compare-{sweep_id}.png", cwd / f"compare-{sweep_id}.csv"
    assert_plot(png, (1680, 648), colours=("tab:red",), absent=("tab:blue", "tab:green", "tab:purple"))  # naive
    assert len(csv.read_text().splitlines()) == 3
    assert {a.path for a in c.list_artifacts(parent.info.run_id, "compare")} == \
        {f"compare/{png.name}", f"compare/{csv.name}"}


@pytest.mark.ray
@pytest.mark.slow
def test_an_optuna_search_runs_its_budget_of_points_inside_the_space(ray_local, ckpt, tmp_path, capsys, monkeypatch):
    """search=optuna on Tune: num_trials trials, each a point the searcher drew inside the space (a nested MLflow run
    whose params carry it), the parent run records the space and objectives; compare reads the trials."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    path = _write(tmp_path / "search.yaml",
                  f"experiment: search\nsearch: optuna\nnum_trials: 4\nmax_concurrent: 2\ntrial_cpus: 1\n"
                  f"fixed:\n  checkpoint: {ckpt}\n  episodes: 1\n  torch_threads: 1\n  device: cpu\n"
                  f"  mode: adaptive\nspace:\n  mismatch_threshold: {{low: 0.01, high: 10.0, log: true}}\n"
                  f"  spec_exec_horizon: [2, 3]\n")
    rc, out, err = _main_in(cwd, ["sweep", f"config={path}"], capsys, monkeypatch)
    assert rc == 0, err[-3000:]
    assert "4 trials chosen by Optuna for most return_mean, least planner_calls_per_step" in out
    assert "[4/4] optuna: mismatch_threshold=" in out
    sweep_id = out.split("compare sweep=")[1].split()[0]
    c, runs = _runs(f"sqlite:///{cwd / 'mlflow.db'}")
    parent = next(r for r in runs if r.data.tags.get("gym_qwen.role") == "sweep")
    assert parent.data.params["search"] == "optuna"
    assert parent.data.params["space.mismatch_threshold"] == "mismatch_threshold in [0.01, 10.0] (log)"
    trials = [r for r in runs if r.data.tags.get("gym_qwen.role") == "trial"]
    assert len(trials) == 4 and all(r.info.status == "FINISHED" for r in trials)
    thresholds = [float(r.data.params["mismatch_threshold"]) for r in trials]
    assert all(0.01 <= t <= 10.0 for t in thresholds) and len(set(thresholds)) == 4
    assert {r.data.params["spec_exec_horizon"] for r in trials} <= {"2", "3"}
    assert all(r.data.params["family"] == "optuna" and r.data.params["mode"] == "adaptive" for r in trials)
    for r in trials:  # the executor counted what it did: between replanning every step and every k-th
        k = int(r.data.params["spec_exec_horizon"])
        assert 1 / k - 0.01 <= r.data.metrics["planner_calls_per_step"] <= 1.0
    rc, out, err = _main_in(cwd, ["compare", f"sweep={sweep_id}"], capsys, monkeypatch)
    assert rc == 0, err
    assert sum(1 for line in out.splitlines() if line.lstrip().startswith("adaptive")) == 4


def interrupt_five_trial_sweep(ckpt, tmp_path: Path, *keys: str):
    """A five-trial `gym-qwen sweep` (one trial at a time, `keys` added to its command line) in tmp_path/cwd,
    stopped by SIGINT once its first trial finished: exit 130, resumable. Returns (cwd, cmd, env, tracking uri,
    stdout, stderr)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # five trials, so that the four after the first outlast the poll even on a fast machine (with three, the sweep
    # once finished before the SIGINT arrived)
    families = ("  baseline: {mode: baseline}\n  naive: {mode: naive, spec_exec_horizon: [2, 3, 4, 5]}\n")
    path = _tiny_sweep(tmp_path / "tiny.yaml", ckpt, episodes=1, head="", families=families)
    path.write_text(path.read_text().replace("max_concurrent: 2", "max_concurrent: 1"))
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1", "RAY_ADDRESS": ""}
    cmd = ["nice", "-n", "19", PY, "-m", "gym_qwen.jobs.cli", "sweep", f"config={path}", *keys]

    def first_trial_finished() -> bool:
        if not (cwd / "mlflow.db").exists():
            return False
        _, runs = _runs(uri)
        return any(r.info.status == "FINISHED" and r.data.tags.get("gym_qwen.role") == "trial" for r in runs)

    rc, out, err = _interrupt_sweep(cmd, cwd, env, first_trial_finished, poll=0.5)
    assert rc == 130, err[-3000:]
    assert "resume=true continues it" in err
    return cwd, cmd, env, uri, out, err


def resume_interrupted_five_trial_sweep(cmd: list, cwd: Path, env: dict, uri: str):
    """Resume a five-trial sweep stopped after at least one trial finished (cmd + resume=true) and check that
    every trial has one finished MLflow run with its one step, that no finished trial ran again, and that there is
    one finished parent run, which is returned."""
    c, runs = _runs(uri)
    done_before = {r.info.run_id: r for r in runs if r.data.tags.get("gym_qwen.role") == "trial"
                   and r.info.status == "FINISHED"}
    assert 1 <= len(done_before) < 5
    res = subprocess.run(cmd + ["resume=true"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming 5 trials" in res.stdout
    c, runs = _runs(uri)
    trials = [r for r in runs if r.data.tags.get("gym_qwen.role") == "trial"]
    assert len(trials) == 5 and len({r.data.tags["trial_id"] for r in trials}) == 5
    assert all(r.info.status == "FINISHED" for r in trials)
    for r in trials:
        assert [m.step for m in c.get_metric_history(r.info.run_id, "return_mean")] == [1]
    for run_id, before in done_before.items():  # a finished trial was not run again
        assert c.get_run(run_id).info.end_time == before.info.end_time
    parents = [r for r in runs if r.data.tags.get("gym_qwen.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    return parents[0]


def _interrupt_sweep(cmd: list, cwd: Path, env: dict, ready, poll: float = 1.0, settle: float = 0.0,
                     timeout: float = 300) -> tuple[int, str, str]:
    """Start `gym-qwen sweep` (`cmd`) in its own session, wait until `ready()` (at most `timeout` s; the sweep must
    still be running then), send SIGINT after `settle` s and return (exit status, stdout, stderr)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            time.sleep(poll)
            if proc.poll() is None and ready():
                break
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(settle)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out, err


TINY_TRAIN = ("task: cartpole-balance, steps: 2000, eval_freq: 1000, eval_episodes: 1, checkpoint_freq: 1000, "
              "latent_dim: 16, enc_dim: 32, mlp_dim: 32, num_samples: 32, num_elites: 4, num_pi_trajs: 2, "
              "iterations: 1, horizon: 1, batch_size: 16, seed_steps: 300, device: cpu, torch_threads: 1")


def _asha_stops(first_rung: list[float], reduction: int) -> list[bool]:
    """Which of trials run one after another ASHA stops at its first rung: a trial goes on unless its value is
    below the (1 - 1/reduction) quantile of the values recorded there before it (Ray's ASHA rule)."""
    import numpy as np

    out = []
    for i, value in enumerate(first_rung):
        earlier = first_rung[:i]
        out.append(bool(earlier) and value < np.nanpercentile(earlier, (1 - 1 / reduction) * 100))
    return out


@pytest.mark.ray
@pytest.mark.slow
def test_a_training_sweep_with_asha_stops_the_trainings_behind(ray_local, tmp_path, capsys, monkeypatch):
    """trial_command=train, scheduler=asha, one trial at a time: every trial trains in its own folder and reports
    each evaluation; ASHA stops exactly the trials its rule says (behind at the first rung), whose MLflow runs are
    closed as KILLED with the reason; the others train to the end (agent.pt written, run FINISHED)."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    path = _write(tmp_path / "train.yaml", f"trial_command: train\nexperiment: tsweep\nscheduler: asha\n"
                                           f"asha_grace: 1\nasha_reduction: 2\nmax_concurrent: 1\ntrial_cpus: 1\n"
                                           f"fixed: {{{TINY_TRAIN}}}\ngrid: {{seed: [1, 2, 3, 4]}}\n")
    rc, out, err = _main_in(cwd, ["sweep", f"config={path}"], capsys, monkeypatch)
    assert rc == 0, err[-3000:]
    c, runs = _runs(f"sqlite:///{cwd / 'mlflow.db'}")
    trials = sorted((r for r in runs if r.data.tags.get("gym_qwen.role") == "trial"), key=lambda r: r.info.start_time)
    assert len(trials) == 4 and all(r.data.tags["mlflow.parentRunId"] for r in trials)
    first_rung = [c.get_metric_history(r.info.run_id, "eval/return_mean")[0].value for r in trials]
    expected = _asha_stops(first_rung, 2)
    assert any(expected), f"no trial is behind at the first rung ({first_rung}): choose other seeds"
    exp_dir = cwd / "runs" / "sweeps" / "tsweep"
    for run, stop in zip(trials, expected):
        evals = [m.step for m in c.get_metric_history(run.info.run_id, "eval/return_mean")]
        seed = run.data.params["seed"]
        folder = next(exp_dir.glob("trial-*/run/cartpole-balance/trial/seed" + seed))
        if stop:
            assert evals == [1000] and run.info.status == "KILLED", (seed, evals, run.info.status)
            assert run.data.tags["gym_qwen.stopped_early"] == "ASHA after 1 of 2 evaluations"
            assert not (folder / "agent.pt").exists()
        else:
            assert evals == [1000, 2000] and run.info.status == "FINISHED", (seed, evals, run.info.status)
            assert (folder / "agent.pt").exists()
    assert out.count("stopped early (1/2)") == sum(expected) and "done" in out
    parent = next(r for r in runs if r.data.tags.get("gym_qwen.role") == "sweep")
    assert parent.data.metrics["trials_stopped_early"] == sum(expected)
    assert parent.data.metrics["trials_done"] == 4 - sum(expected)


@pytest.mark.ray
@pytest.mark.slow
def test_an_interrupted_training_sweep_resumes_each_trial_from_its_checkpoint(tmp_path):
    """SIGINT to a training sweep (one trial at a time) once its first trial has checkpointed: resume=true
    finishes every trial, the interrupted one continuing its own run folder and MLflow run (each evaluation logged
    once), with one run per trial."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    path = _write(tmp_path / "train.yaml", f"trial_command: train\nexperiment: tres\nmax_concurrent: 1\n"
                                           f"trial_cpus: 1\nfixed: {{{TINY_TRAIN}}}\ngrid: {{seed: [1, 2]}}\n")
    uri = f"sqlite:///{cwd / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "OMP_NUM_THREADS": "1", "RAY_ADDRESS": ""}
    cmd = [PY, "-m", "gym_qwen.jobs.cli", "sweep", f"config={path}"]
    exp_dir = cwd / "runs" / "sweeps" / "tres"
    rc, out, err = _interrupt_sweep(
        cmd, cwd, env, lambda: bool(list(exp_dir.glob("trial-000/run/*/trial/seed1/train_state.pt"))))
    assert rc == 130, err[-3000:]
    assert not list(exp_dir.glob("trial-*/run/*/trial/seed*/agent.pt"))  # nothing finished before the interrupt
    res = subprocess.run(cmd + ["resume=true"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list(exp_dir.glob("trial-*/run/*/trial/seed*/agent.pt"))) == 2
    c, runs = _runs(uri)
    trials = [r for r in runs if r.data.tags.get("gym_qwen.role") == "trial"]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    for r in trials:  # (a trial that started afresh in its folder would be refused: "already holds a run")
        assert [m.step for m in c.get_metric_history(r.info.run_id, "eval/return_mean")] == [1000, 2000]


def tiny_dt_sweep(tmp_path: Path, experiment: str) -> tuple[Path, Path]:
    """A working folder with a tiny hopper dataset in data/, and a dt-train sweep file over seeds 0 and 1 on it
    (two trials of 2 iterations x 3 updates, one evaluation episode each): (working folder, sweep file)."""
    from test_dt import _learnable_data

    from gym_qwen.platform.datasets.d4rl import write_hdf5

    cwd = tmp_path / "cwd"
    (cwd / "data").mkdir(parents=True)
    write_hdf5(cwd / "data" / "hopper-test-v5.hdf5", _learnable_data(n_eps=3, length=30, S=11, A=3))
    path = _write(tmp_path / "dt.yaml",
                  f"trial_command: dt-train\nexperiment: {experiment}\nmax_concurrent: 2\ntrial_cpus: 1\nfixed: "
                  "{env: hopper, data: data/hopper-test-v5.hdf5, n_blocks: 1, embed_dim: 16, context_len: 4, "
                  "batch_size: 8, max_train_iters: 2, num_updates_per_iter: 3, num_eval_ep: 1, max_eval_ep_len: 8, "
                  "warmup_steps: 2, torch_threads: 1, device: cpu}\ngrid: {seed: [0, 1]}\n")
    return cwd, path


@pytest.mark.ray
@pytest.mark.slow
def test_a_decision_transformer_sweep_logs_each_trial_with_its_score(ray_local, tmp_path, capsys, monkeypatch):
    """trial_command=dt-train over seeds: each trial trains in its own folder (the dataset path taken from the
    sweep's folder), reports its D4RL score after every iteration and logs a nested MLflow run."""
    cwd, path = tiny_dt_sweep(tmp_path, "dts")
    rc, out, err = _main_in(cwd, ["sweep", f"config={path}"], capsys, monkeypatch)
    assert rc == 0, err[-3000:]
    assert "D4RL score" in out and sum(1 for line in out.splitlines() if line.rstrip().endswith(" done")) == 2
    c, runs = _runs(f"sqlite:///{cwd / 'mlflow.db'}")
    trials = [r for r in runs if r.data.tags.get("gym_qwen.role") == "trial"]
    assert len(trials) == 2 and {r.data.params["seed"] for r in trials} == {"0", "1"}
    for r in trials:
        assert r.info.status == "FINISHED" and r.data.tags["family"] == "grid"
        assert [m.step for m in c.get_metric_history(r.info.run_id, "eval/d4rl_score")] == [3, 6]
    assert len(list((cwd / "runs" / "sweeps" / "dts").glob("trial-*/dt/*/dt_hopper-test-v5_summary_*.json"))) == 2


@pytest.mark.ray
def test_an_interrupted_sweep_resumes_without_running_finished_trials_again(ckpt, tmp_path):
    """SIGINT to a running `gym-qwen sweep` (one trial at a time) after its first trial finished: exit 130, the
    sweep resumable; resume=true runs the rest; every trial has one MLflow run, each step once, and the first
    trial's run was not touched again."""
    cwd, cmd, env, uri, out, err = interrupt_five_trial_sweep(ckpt, tmp_path)
    resume_interrupted_five_trial_sweep(cmd, cwd, env, uri)


@pytest.mark.ray
@pytest.mark.slow
def test_a_sweep_logs_to_a_remote_tracking_server(ray_local, ckpt, tmp_path, capsys, monkeypatch):
    """MLFLOW_TRACKING_URI=http://127.0.0.1:PORT (an `mlflow server` with a SQLite backend): the same runs,
    artifacts through the server, and compare reads them back."""
    with mlflow_server(tmp_path) as uri:
        cwd = tmp_path / "cwd"
        cwd.mkdir()
        path = _tiny_sweep(tmp_path / "tiny.yaml", ckpt, episodes=1,
                           families="  naive: {mode: naive, spec_exec_horizon: 3}\n")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.chdir(cwd)
        from gym_qwen.jobs.cli import main

        capsys.readouterr()
        assert main(["sweep", f"config={path}"]) == 0, capsys.readouterr().err[-3000:]
        out = capsys.readouterr().out
        sweep_id = out.split("compare sweep=")[1].split()[0]
        c, runs = _runs(uri)
        assert {r.data.tags.get("gym_qwen.role") for r in runs} == {"sweep", "trial"}
        trial = next(r for r in runs if r.data.tags.get("gym_qwen.role") == "trial")
        assert {a.path for a in c.list_artifacts(trial.info.run_id)} == {"episodes.csv", "metrics.json"}
        assert main(["compare", f"sweep={sweep_id}"]) == 0
        assert "naive" in capsys.readouterr().out
        assert not (cwd / "mlflow.db").exists()  # nothing went to a local store


def test_a_trial_holds_its_evaluator_actors_and_its_gpu_share():
    from gym_qwen.actors.tune_trials import trial_resources

    run = {"trial_cpus": 1.0, "trial_gpus": 0.0}
    alone = trial_resources({"trial": {"values": {"mode": "naive"}}, "run": run})
    assert alone.bundles == [{"CPU": 1.0}]
    farm = trial_resources({"trial": {"values": {"num_workers": 2, "worker_cpus": 0.5}}, "run": run})
    assert farm.bundles == [{"CPU": 1.0}, {"CPU": 0.5}, {"CPU": 0.5}]
    shared = trial_resources({"trial": {"values": {}}, "run": {"trial_cpus": 2.0, "trial_gpus": 0.25}})
    assert shared.bundles == [{"CPU": 2.0, "GPU": 0.25}]
