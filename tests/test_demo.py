"""gym-qwen demo: the main job end to end (collect and distill with full=true, a Tune sweep logged to MLflow,
compare and its conclusion in words), the first demo's brief training (train=true), and its refusals."""
from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from pngs import assert_plot
from test_cli import _assert_user_error, _main_in, untrained_checkpoint

CORRECTED_SWEEP = """experiment: demo-test
max_concurrent: 2
max_failures: 0
trial_cpus: 1
fixed: {checkpoint: nowhere.pt, episodes: 1, seed: 1, torch_threads: 1, device: cpu}
families:
  baseline: {mode: baseline}
  extended: {mode: spec_extended, spec_exec_horizon: 3, corrector_type: [two_tower, temporal]}
"""


@pytest.mark.ray
def test_the_demo_collects_distills_sweeps_and_compares(ray_local, tmp_path, capsys, monkeypatch):
    """full=true on a tiny teacher: its own correctors beside a copy of it (the teacher's folder is untouched),
    then a 3-trial sweep that uses them, one nested MLflow run per trial, the comparison's table, plot and CSV,
    and the conclusion in words."""
    import mlflow
    import pyarrow.parquet as pq

    teacher = untrained_checkpoint(tmp_path / "teacher" / "agent.pt")
    before = sorted(os.listdir(teacher.parent))
    sweep = tmp_path / "corrected.yaml"
    sweep.write_text(CORRECTED_SWEEP)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = ["demo", f"teacher={teacher}", f"sweep={sweep}", "full=true", "collect_episodes=3", "distill_epochs=2",
            "num_workers=0", "torch_threads=1", "seed=2"]
    rc, out, err = _main_in(cwd, args, capsys, monkeypatch)
    assert rc == 0, err[-3000:]
    stages = [line for line in out.splitlines() if line.startswith("== ")]
    assert [s.split()[1] for s in stages] == ["collecting", "distilling", "sweeping", "comparing"]
    (root,) = (cwd / "runs" / "demo").iterdir()
    rows = pq.read_table(root / "corrector-data.parquet")
    assert rows.num_rows > 0 and set(rows["episode"].to_pylist()) == {0, 1, 2}  # collect_episodes=3
    for kind in ("two_tower", "temporal"):
        assert (root / "teacher" / "correctors" / f"agent-{kind}.pt").stat().st_size > 1000
    assert (root / "teacher" / "agent.pt").read_bytes() == teacher.read_bytes()
    assert sorted(os.listdir(teacher.parent)) == before  # the user's teacher folder gets no correctors

    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("demo-test")
    runs = client.search_runs([exp.experiment_id])
    trials = [r for r in runs if r.data.tags.get("gym_qwen.role") == "trial"]
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials)
    (parent,) = [r for r in runs if r.data.tags.get("gym_qwen.role") == "sweep"]
    assert [r.data.tags.get("mlflow.parentRunId") for r in trials] == [parent.info.run_id] * 3  # nested under it
    assert "mlflow.parentRunId" not in parent.data.tags
    assert {r.data.params.get("corrector_type") for r in trials} >= {"two_tower", "temporal"}
    assert {r.data.params["seed"] for r in trials} == {"2"}  # the demo's seed= reaches every trial
    assert all(r.data.params["checkpoint"].endswith(str(Path("teacher") / "agent.pt")) for r in trials)

    with open(root / "compare-demo.csv") as f:
        table = list(csv.DictReader(f))
    assert sorted(r["mode"] for r in table) == ["baseline", "spec_extended", "spec_extended"]
    # baseline and spec_extended (purple) only: no naive (red), adaptive (green) or planner family (orange)
    assert_plot(root / "compare-demo.png", (1680, 648), colours=("tab:purple",),
                absent=("tab:red", "tab:green", "tab:orange"))
    base = next(r for r in table if r["mode"] == "baseline")
    assert f"The full planner at every step scored {float(base['return_mean']):.1f}" in out
    assert "planner calls per step" in out and "mlflow ui --backend-store-uri" in out
    assert f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs" in out  # the link to the runs
    assert "demo finished in" in out


@pytest.mark.slow  # trains for 1,000 steps: about a minute in the suite
def test_train_true_trains_a_small_agent_and_prints_it_beside_random_actions(tmp_path, capsys, monkeypatch):
    """The first demo (train=true teacher=none): a small TD-MPC2 trained briefly, evaluated beside random actions."""
    args = ["demo", "train=true", "teacher=none", "steps=1000", "seed_steps=250", "episodes=1", "seed=3",
            "mlflow=false", "torch_threads=1", f"output_dir={tmp_path / 'runs'}"]
    rc, out, err = _main_in(tmp_path, args, capsys, monkeypatch)
    assert rc == 0, err
    rows = {line.split("  ")[0].strip(): line.split() for line in out.splitlines()
            if line.startswith(("random actions", "TD-MPC2 after"))}
    assert set(rows) == {"random actions", "TD-MPC2 after 1,000 steps"}
    assert rows["TD-MPC2 after 1,000 steps"][-2] == "1.00"  # planner calls per step of the baseline agent
    assert len(list((tmp_path / "runs" / "demo").glob("*/cartpole-balance/train/seed3/agent.pt"))) == 1
    assert "sweeping" not in out


def test_the_demo_checks_its_sweep_before_it_prints_anything(tmp_path, capsys, monkeypatch):
    teacher = untrained_checkpoint(tmp_path / "in" / "teacher" / "agent.pt")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # the demo's own sweep executes 3 corrected steps of each plan: this teacher plans only 1
    demo_yaml = Path(__file__).resolve().parents[1] / "configs" / "sweeps" / "demo.yaml"
    _assert_user_error(*_main_in(cwd, ["demo", f"teacher={teacher}", f"sweep={demo_yaml}"], capsys, monkeypatch),
                       cwd, ["family 'corrected'", "plan horizon 1"])


def test_the_conclusion_names_the_prior_on_its_own_when_it_keeps_95_percent():
    """A one-episode demo can see the policy prior (0 planner calls per step) keep 95% of the full planner's
    return: the conclusion says so in its own line, and the fewest-calls line names the best setting that plans
    (once, it divided by the prior's 0 calls)."""
    from gym_qwen.jobs.demo import _conclusion
    from gym_qwen.platform.sweeps.compare import Setting

    def setting(mode, k, calls, ms, ret, planner=()):
        return Setting("demo", "walker-walk", "t", mode, k, "none", None, planner, "plan", "extension", False, ["r"],
                       ["1"], 1, ret, 0.0, float("nan"), calls, ms, 0.0, retained=ret / 929.2)

    settings = [setting("baseline", 1, 1.0, 322.5, 929.2), setting("prior", 1, 0.0, 1.1, 922.0),
                setting("naive", 3, 0.334, 166.4, 962.6), setting("naive", 6, 0.168, 44.3, 859.7),
                setting("baseline", 1, 1.0, 121.9, 962.8, planner=(("iterations", 2), ("num_samples", 64)))]
    settings[0].retained = 1.0
    lines = _conclusion(settings, 1)
    assert any(line.startswith("The policy prior alone kept 95%") for line in lines)
    fewest = next(line for line in lines if line.startswith("Fewest planner calls"))
    assert "naive k=3" in fewest and "one plan per 3.0 steps" in fewest
    fastest = next(line for line in lines if line.startswith("Fastest keeping 95%"))
    assert "the policy prior alone" in fastest and "at 1.1 ms per step" in fastest


def test_the_conclusion_says_the_clocked_settings_on_their_own_line():
    """async and stale answer which control period a setting keeps up with: they are said on their own line and
    never named the fewest-calls or fastest setting (their ms per step is not a latency)."""
    from gym_qwen.jobs.demo import _conclusion
    from gym_qwen.platform.sweeps.compare import Setting

    def setting(mode, k, calls, ms, ret, corrector="none"):
        return Setting("demo", "walker-walk", "t", mode, k, corrector, None, (), "plan", "extension", False, ["r"],
                       ["1"], 1, ret, 0.0, float("nan"), calls, ms, 0.0, retained=ret / 929.2)

    settings = [setting("baseline", 1, 1.0, 322.5, 929.2), setting("naive", 3, 0.334, 166.4, 900.0),
                setting("async", 3, 0.2, 20.0, 950.0, "two_tower"), setting("stale", 3, 0.334, 30.0, 500.0)]
    settings[0].retained = 1.0
    lines = _conclusion(settings, 1)
    fewest = next(line for line in lines if line.startswith("Fewest planner calls"))
    assert "naive k=3" in fewest and not any(line.startswith("Fastest") and "async" in line for line in lines)
    clock = next(line for line in lines if line.startswith("Under a simulated clock"))
    assert clock.index("async") < clock.index("stale") and "(102.2%)" in clock and "(53.8%)" in clock
