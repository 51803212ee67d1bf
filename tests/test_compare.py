"""gym-qwen compare: the runs `gym-qwen evaluate ... mlflow=true` logs and a sweep's trial runs read back into one
table per task (pooled over seeds, retained vs baseline, the Pareto fronts), the PNG and CSV written and logged
to the sweep's parent run; bad inputs are one line and write nothing (no MLflow store is ever created)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from pngs import assert_plot
from test_cli import _assert_user_error, _main_in

# (setting, returns, planner calls per step, ms per step) of a made-up walker-walk teacher
SETTINGS = {
    "baseline": ([900.0, 920.0], 1.0, 88.0),
    "cheap": ([880.0, 890.0], 1.0, 17.0),
    "naive": ([700.0, 720.0], 1 / 3, 30.0),
    "corrected": ([890.0, 910.0], 1 / 3, 35.0),
    "adaptive": ([905.0, 915.0], 0.45, 50.0),
}


def _spec(name: str):
    from gym_qwen.platform.speculative.modes import ExecutionSpec, SpeculationSettings

    return {"baseline": ExecutionSpec(),
            "cheap": ExecutionSpec(planner_overrides=(("num_samples", 64), ("iterations", 2))),
            "naive": ExecutionSpec(SpeculationSettings("naive", 3)),
            "corrected": ExecutionSpec(SpeculationSettings("spec_corrector", 3), "two_tower", "c.pt"),
            "adaptive": ExecutionSpec(SpeculationSettings("adaptive", 6, 0.5))}[name]


def _result(returns, calls, ms, steps=1000):
    from gym_qwen.platform.speculative.evaluation import EvalResult

    n = len(returns) * steps
    return EvalResult("walker-walk", "x", returns=list(returns), lengths=[steps] * len(returns), decisions=n,
                      planner_calls=round(calls * n), decision_seconds=ms * n / 1e3)


def _log_like_evaluate(experiment: str, seed: int, names, returns_of=None) -> None:
    """What `gym-qwen evaluate checkpoint=models/walker-walk-size1-seed1.pt ... mlflow=true` logs (its own code)."""
    from gym_qwen.jobs.evaluate import SettingRuns
    from gym_qwen.platform.config import EvaluateConfig

    cfg = EvaluateConfig(checkpoint="models/walker-walk-size1-seed1.pt", episodes=2, seed=seed, mlflow=True,
                         mlflow_experiment=experiment)
    results = [(_spec(n), _result((returns_of or {}).get(n, SETTINGS[n][0]), *SETTINGS[n][1:])) for n in names]
    base = next((r.returns for s, r in results if s.settings.mode == "baseline" and not s.planner_overrides), None)
    runs = SettingRuns(cfg, "walker-walk", {}, {})
    for spec, _ in results:
        runs.start(spec)
    runs.finish(results, base, 1_000_000)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An MLflow store outside the working directory holding evaluate runs of every SETTING (seed 1) and of the
    corrected one again with seed 2; MLFLOW_TRACKING_URI points at it."""
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    _log_like_evaluate("cmp", 1, list(SETTINGS))
    _log_like_evaluate("cmp", 2, ["corrected"], {"corrected": [870.0, 930.0]})
    return uri


def _compare(cwd: Path, args: list[str], capsys, monkeypatch, uri: str):
    from gym_qwen.jobs.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    rc = main(["compare", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_compare_reads_what_evaluate_logs(store, tmp_path, capsys, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    rc, out, err = _compare(cwd, ["experiment=cmp", "output=plots/cmp.png"], capsys, monkeypatch, store)
    assert rc == 0, err
    rows = {line.split()[0] + " " + line.split()[4]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in ("baseline", "naive", "spec_corrector", "adaptive")}
    assert set(rows) == {"baseline full", "baseline iters=2", "naive full", "spec_corrector full", "adaptive full"}
    corrected = rows["spec_corrector full"]
    # mode k corrector threshold planner seeds episodes return std retained calls ms pareto
    assert corrected[1:4] == ["3", "two_tower", "-"] and corrected[5:7] == ["1,2", "4"]
    assert float(corrected[7]) == pytest.approx(900.0, abs=0.05)
    assert float(corrected[8]) == pytest.approx(float(np.std([890, 910, 870, 930])), abs=0.05)  # pooled
    # seeds 1 and 2 pooled against a baseline of seed 1 only: never called retained, and the note says why
    assert corrected[9] == "-"
    assert "no retained for spec_corrector k=3 +two_tower: it played seed 1 (2 episodes), 2 (2 episodes), its " \
           "baseline seed 1 (2 episodes)" in out
    assert rows["adaptive full"][3] == "0.5" and rows["baseline full"][9] == "100.0%"
    assert rows["baseline iters=2"][4:6] == ["iters=2", "samples=64"]
    marks = {k: (v[-1] if v[-1] in ("*", "+", "*+") else "") for k, v in rows.items()}
    assert marks == {"baseline full": "", "baseline iters=2": "+", "naive full": "",
                     "spec_corrector full": "*+", "adaptive full": "*+"}
    png, table = cwd / "plots" / "cmp.png", cwd / "plots" / "cmp.csv"
    # one task: two panels of 14 x 5.4 inches at 120 dpi; the planner family orange, naive red, spec_corrector
    # blue, adaptive green; no spec_extended (purple) or policy prior (olive) was logged
    assert_plot(png, (1680, 648), colours=("tab:orange", "tab:red", "tab:blue", "tab:green"),
                absent=("tab:purple", "tab:olive"))
    with open(table) as f:
        lines = list(csv.DictReader(f))
    assert len(lines) == 5 and {r["family"] for r in lines} == {"baseline", "planner family", "speculation"}
    adaptive = next(r for r in lines if r["mode"] == "adaptive")
    assert adaptive["pareto_calls"] == "1" and float(adaptive["retained"]) == pytest.approx(1.0)
    assert float(adaptive["planner_calls_per_step"]) == pytest.approx(0.45)
    assert sorted(p.name for p in cwd.rglob("*")) == ["cmp.csv", "cmp.png", "plots"]  # no store made here
    assert "logged to" not in out  # evaluate runs have no parent run


def test_a_setting_run_twice_with_one_seed_counts_once_and_experiments_stay_apart(store, tmp_path, capsys,
                                                                                  monkeypatch):
    _log_like_evaluate("cmp", 1, ["naive"], {"naive": [500.0, 500.0]})  # the same setting and seed again: newer
    _log_like_evaluate("other", 1, ["baseline", "naive"])
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    rc, out, err = _compare(cwd, ["experiment=cmp,other"], capsys, monkeypatch, store)
    assert rc == 0, err
    assert "1 runs repeat a setting and seed of their experiment" in out
    naive = [line.split() for line in out.splitlines() if " naive " in f" {line} "]
    assert sorted((row[0], row[8]) for row in naive) == [("cmp", "500.0"), ("other", "710.0")]
    assert (cwd / "compare-cmp.png").is_file() and (cwd / "compare-cmp.csv").is_file()


def test_pareto_front():
    from gym_qwen.platform.figures import pareto_front

    pts = [(1.0, 910), (1.0, 885), (1 / 3, 710), (1 / 3, 900), (0.45, 910), (0.45, 910), (0.2, math.nan)]
    assert pareto_front(pts) == [3, 4, 5]  # equal points are both on it; a NaN never is
    assert pareto_front([]) == []
    assert pareto_front([(2.0, 1.0)]) == [0]


def test_compare_logs_to_the_sweeps_parent_run(tmp_path, capsys, monkeypatch):
    from gym_qwen.platform.sweeps.runs import open_run
    from gym_qwen.platform.tracking import client, prepare_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp = prepare_experiment(uri, "sw")
    parent = open_run(uri, exp, {"sweep_id": "sw-1", "gym_qwen.role": "sweep"}, "sw-1")
    for i, (mode, k, ret, calls) in enumerate([("baseline", 1, 900.0, 1.0), ("naive", 3, 800.0, 1 / 3)]):
        run = open_run(uri, exp, {"sweep_id": "sw-1", "trial_id": f"t{i}"}, mode,
                       {"checkpoint": "models/walker-walk-size1-seed1.pt", "episodes": 1, "seed": 1, "mode": mode,
                        "spec_exec_horizon": k, "corrector_type": "none", "mismatch_threshold": 0.5,
                        "planner_overrides": {}},
                       {"gym_qwen.role": "trial", "task": "walker-walk", "mlflow.parentRunId": parent.run_id})
        run.log_metrics({"return_mean": ret, "return_std": 0.0, "planner_calls_per_step": calls,
                         "ms_per_decision": 80 * calls, "episodes_done": 1}, 1)
        run.finish()
    unfinished = open_run(uri, exp, {"sweep_id": "sw-1", "trial_id": "t9"}, "x",
                          {"mode": "naive", "spec_exec_horizon": 6, "checkpoint": "m.pt"},
                          {"gym_qwen.role": "trial", "task": "walker-walk"})
    unfinished.log_metrics({"return_mean": 1.0, "planner_calls_per_step": 0.2}, 1)
    parent.finish()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    rc, out, err = _compare(cwd, ["sweep=sw-1"], capsys, monkeypatch, uri)
    assert rc == 0, err
    assert "1 unfinished runs left out" in out and f"logged to the sweep's parent run {parent.run_id}" in out
    assert {a.path for a in client(uri).list_artifacts(parent.run_id, "compare")} == \
        {"compare/compare-sw-1.png", "compare/compare-sw-1.csv"}
    rc, out, err = _compare(cwd, ["sweep=sw-1", "unfinished=true", "log=false", "output=u.png"], capsys,
                            monkeypatch, uri)
    assert rc == 0 and "naive  6" in out and "logged to" not in out


def test_bad_inputs_are_one_line_and_write_nothing(store, tmp_path, capsys, monkeypatch):
    from gym_qwen.platform.tracking import prepare_experiment

    prepare_experiment(store, "empty")
    (tmp_path / "afile").write_text("x")
    cases = [
        ([], ["give experiment=NAME or sweep=ID"], store),
        (["experiment=cmp", "output=p.jpg"], ["output='p.jpg' must end in .png"], store),
        (["experiment=nope"], ["no MLflow experiment 'nope'", "cmp"], store),
        (["sweep=nope-1"], ["no runs of sweep 'nope-1'"], store),
        (["experiment=empty"], ["no finished evaluation runs of empty"], store),
        (["experiment=cmp", "task=cheetah-run"], ["no finished evaluation runs of task cheetah-run"], store),
        (["experiment=cmp", f"output={tmp_path / 'afile' / 'p.png'}"], ["afile is a file"], store),
        (["experiment=cmp"], ["no MLflow store at"], "sqlite:///{cwd}/mlflow.db"),
        (["experiment=cmp", "colour=red"], ["unknown key 'colour' for compare"], store),
    ]
    for i, (args, words, uri) in enumerate(cases):
        cwd = tmp_path / f"cwd{i}"
        cwd.mkdir()
        rc, out, err = _compare(cwd, args, capsys, monkeypatch, uri.replace("{cwd}", str(cwd)))
        _assert_user_error(rc, out, err, cwd, words)


@pytest.mark.slow
def test_compare_on_a_real_evaluate_mode_all_run(tmp_path, capsys, monkeypatch):
    """`gym-qwen evaluate mode=all mlflow=true` on a tiny checkpoint, then compare: one row per setting it ran."""
    from test_cli import untrained_checkpoint

    ckpt = untrained_checkpoint(tmp_path / "ckpt" / "agent.pt")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    rc, out, err = _main_in(cwd, ["evaluate", f"checkpoint={ckpt}", "mode=all", "episodes=1", "mlflow=true",
                                  "mlflow_experiment=all", "spec_exec_horizons=1,2", "torch_threads=1",
                                  "progress=false", "plot=all.png"], capsys, monkeypatch)
    assert rc == 0, err
    ran = [line for line in out.splitlines() if line.startswith("cartpole-balance")]
    rc, out, err = _main_in(cwd, ["compare", "experiment=all"], capsys, monkeypatch)
    assert rc == 0, err
    rows = [line for line in out.splitlines() if line.split() and line.split()[0] in ("baseline", "prior", "naive",
                                                                                       "adaptive")]
    # baseline, prior, three planner budgets, naive k=2, adaptive k=2 planning with three planners and with
    # fallback=prior: the fallback is part of the setting (once, the two adaptive rows were pooled as one)
    assert len(rows) == len(ran) == 10
    assert sum("fallback=prior" in r for r in rows) == 1
    assert sum(" 64x2 " in r for r in rows) == 2
    assert (cwd / "compare-all.png").is_file()


def test_planner_keys_given_to_evaluate_make_its_run_a_cheap_planner_setting(tmp_path, capsys, monkeypatch):
    """`gym-qwen evaluate ... num_samples=16 mlflow=true`: the run says which planner it used, so compare shows it
    as a cheap-planner setting, not as the teacher's own planner."""
    from test_cli import untrained_checkpoint

    ckpt = untrained_checkpoint(tmp_path / "ckpt" / "agent.pt")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for extra in ([], ["num_samples=16"]):
        rc, out, err = _main_in(cwd, ["evaluate", f"checkpoint={ckpt}", "mode=naive", "spec_exec_horizon=2",
                                      "episodes=1", "mlflow=true", "mlflow_experiment=cheap", "torch_threads=1",
                                      "progress=false", *extra], capsys, monkeypatch)
        assert rc == 0, err
    rc, out, err = _main_in(cwd, ["compare", "experiment=cheap"], capsys, monkeypatch)
    assert rc == 0, err
    rows = [line.split() for line in out.splitlines() if line.startswith("naive")]
    assert sorted(r[4] for r in rows) == ["full", "samples=16"]


def test_async_variants_under_one_clock_are_settings_of_their_own(tmp_path, capsys, monkeypatch):
    """Three real `evaluate mode=async mlflow=true` runs under the same clock (d = 5 > H): plain, with
    past_horizon=prior, and on the wall clock. compare keeps them apart (once, the newer replaced the older as the
    same setting, and a wall-clock run would have been pooled with its simulated twin)."""
    from test_cli import untrained_checkpoint

    ckpt = untrained_checkpoint(tmp_path / "ckpt" / "agent.pt")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    common = ["evaluate", f"checkpoint={ckpt}", "mode=async", "control_period_ms=10", "planner_latency_ms=50",
              "episodes=1", "mlflow=true", "mlflow_experiment=rt", "torch_threads=1", "progress=false"]
    for extra in ([], ["past_horizon=prior"], ["realtime=true"]):
        rc, out, err = _main_in(cwd, common + extra, capsys, monkeypatch)
        assert rc == 0, err
    rc, out, err = _main_in(cwd, ["compare", "experiment=rt"], capsys, monkeypatch)
    assert rc == 0, err
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].startswith("async")]
    assert len(rows) == 3 and "repeat a setting" not in out
    assert [sum(word in r for r in rows) for word in ("past_horizon=prior", "realtime")] == [1, 1]
