"""Learning curves: the published data, the plot over it, the `gym-qwen curves` command."""
from __future__ import annotations

import json
import shutil

import pytest

from pngs import assert_plot
from test_cli import _assert_user_error, _main_in


@pytest.mark.parametrize("task,steps,mean", [("walker-walk", 100_000, 962), ("cheetah-run", 100_000, 519),
                                             ("cheetah-run", 1_000_000, 844), ("humanoid-walk", 1_000_000, 628)])
def test_published_means_are_the_papers(task, steps, mean):
    from gym_qwen.platform.training.curves import published_curve, published_mean_at

    assert len(published_curve(task)[steps]) == 3  # three seeds
    assert published_mean_at(task, steps) == pytest.approx(mean, abs=0.6)  # the rounded figures in docs/architecture.md


def test_unpublished_task_has_no_curve():
    from gym_qwen.platform.training.curves import published_curve, published_mean_at

    assert published_curve("quadruped-run") == {}  # not among the shipped curves
    assert published_mean_at("walker-walk", 12_345) is None


def test_curves_command_plots_and_logs(tiny_run, tmp_path, capsys, monkeypatch):
    from mlflow.tracking import MlflowClient

    out = tmp_path / "docs" / "curves.png"
    rc, stdout, err = _main_in(tmp_path, ["curves", f"runs={tiny_run.run_dir}", f"output={out}"], capsys,
                               monkeypatch)
    assert rc == 0, err
    # one task: 5.2 x 4 inches at 110 dpi; our run in the first colour of the cycle, the published mean black
    assert_plot(out, (572, 440), colours=("tab:blue",))
    numbers = json.loads(out.with_suffix(".json").read_text())
    (curve,) = numbers["curves"]
    assert curve["env_steps"] == [1000, 2000] and curve["task"] == tiny_run.cfg.task
    assert numbers["comparison"][0]["return"] == curve["return_mean"][-1]
    assert numbers["comparison"][0]["published_mean"] is None  # no published point at 2000 steps
    assert tiny_run.cfg.task in stdout and "2,000" in stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = stdout.strip().splitlines()[-1].split()[-1]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run_id)} == {"curves.png", "curves.json"}
    key = f"{tiny_run.cfg.task}/seed{tiny_run.cfg.seed}/return"
    assert run.data.metrics[key] == pytest.approx(curve["return_mean"][-1])


def test_curves_of_a_run_without_evaluations(tiny_run, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, run)
    (run / "eval.csv").unlink()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    _assert_user_error(*_main_in(cwd, ["curves", f"runs={run}", f"output={cwd / 'x.png'}"], capsys, monkeypatch),
                       cwd, ["no eval.csv", str(run)])


def test_curves_output_must_be_png(tmp_path, capsys, monkeypatch):
    _assert_user_error(*_main_in(tmp_path, ["curves", "runs=a", "output=plot.pdf"], capsys, monkeypatch),
                       tmp_path, ["output='plot.pdf'", ".png"])


def test_curves_read_a_shipped_teachers_card_beside_a_run(tiny_run, tmp_path, capsys, monkeypatch):
    """A teacher whose run directory is gone still has its curve: its card's training.learning_curve."""
    card = tmp_path / "models" / "walker-walk-size1-seed1.json"
    card.parent.mkdir()
    card.write_text(json.dumps({"card_version": 1, "task": "walker-walk", "seed": 1, "model_size": 1,
                                "training": {"learning_curve": [[50000, 900.0, 5.0, 2], [100000, 950.0, 3.0, 2]]}}))
    out = tmp_path / "curves.png"
    rc, stdout, err = _main_in(tmp_path, ["curves", f"runs={tiny_run.run_dir},{card}", f"output={out}",
                                          "mlflow=false"], capsys, monkeypatch)
    assert rc == 0, err
    curves = {c["task"]: c for c in json.loads(out.with_suffix(".json").read_text())["curves"]}
    assert curves["walker-walk"]["env_steps"] == [50000, 100000] and curves["walker-walk"]["return_mean"] == [900, 950]
    comparison = {r["task"]: r for r in json.loads(out.with_suffix(".json").read_text())["comparison"]}
    assert comparison["walker-walk"]["published_mean"] == pytest.approx(962, abs=0.6)
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    _assert_user_error(*_main_in(cwd, ["curves", f"runs={broken}", f"output={cwd / 'y.png'}"], capsys,
                                 monkeypatch), cwd, ["not a teacher card", str(broken)])
