"""The compute frontier's parts: planner budgets, paired statistics, the episode log that makes a comparison
resumable, and `gym-qwen evaluate` refusing what it cannot run (one line, exit 2)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from gym_qwen.platform.config_schema import ConfigError
from gym_qwen.platform.speculative.modes import ExecutionSpec, SpeculationSettings, budget_name, budget_overrides, \
    parse_budget
from gym_qwen.platform.speculative.statistics import fall_rate, interquartile_mean, paired_ratio_interval, \
    paired_summary


# --- planner budgets ---------------------------------------------------------------------------------------------
def test_budgets_scale_elites_and_prior_trajectories_with_the_papers_proportions():
    assert budget_overrides(512, 6) == {"num_samples": 512, "iterations": 6, "num_elites": 64, "num_pi_trajs": 24}
    assert budget_overrides(256, 4) == {"num_samples": 256, "iterations": 4, "num_elites": 32, "num_pi_trajs": 12}
    assert budget_overrides(128, 3)["num_elites"] == 16 and budget_overrides(128, 3)["num_pi_trajs"] == 6
    assert budget_overrides(64, 2)["num_elites"] == 8 and budget_overrides(64, 2)["num_pi_trajs"] == 3
    assert budget_overrides(16, 1)["num_elites"] == 4 and budget_overrides(16, 1)["num_pi_trajs"] == 2  # floors
    for n in (8, 16, 64, 100, 512, 1024):  # elites always select
        assert budget_overrides(n, 1)["num_elites"] < n


def test_budget_text_is_parsed_or_refused_naming_it():
    assert parse_budget("64x2") == (64, 2) and parse_budget("128X3") == (128, 3)
    for bad in ("64", "64x", "x2", "64x2x1", "sixtyx2", "-64x2", "4x2", "64x0"):
        with pytest.raises(ValueError, match="planner budget"):
            parse_budget(bad)


def test_a_budget_setting_is_named_by_its_budget_and_other_overrides_by_their_keys():
    spec = ExecutionSpec(SpeculationSettings("baseline", 1), planner_overrides=tuple(budget_overrides(64, 2).items()))
    assert budget_name(spec.planner_overrides) == "64x2" and spec.label == "baseline (planner 64x2)"
    other = ExecutionSpec(SpeculationSettings("baseline", 1), planner_overrides=(("num_samples", 64),
                                                                                 ("iterations", 2)))
    assert budget_name(other.planner_overrides) is None and "num_samples=64" in other.label


# --- statistics ----------------------------------------------------------------------------------------------------
def test_paired_bootstrap_interval_contains_the_known_ratio_and_is_zero_wide_for_a_constant_ratio():
    rng = np.random.default_rng(0)
    baseline = rng.normal(900, 60, size=30)
    ratio, low, high = paired_ratio_interval(0.9 * baseline, baseline)
    assert ratio == pytest.approx(0.9) and low == pytest.approx(0.9, abs=1e-12) and high == pytest.approx(0.9, abs=1e-12)
    noisy = 0.9 * baseline + rng.normal(0, 30, size=30)  # a known ratio of means, with episode noise
    ratio, low, high = paired_ratio_interval(noisy, baseline)
    assert low < ratio < high and low < noisy.mean() / baseline.mean() < high and high - low < 0.1
    # pairing matters: an episode that is hard for both settings does not widen the interval
    hard = baseline.copy()
    hard[:5] *= 0.2
    _, plow, phigh = paired_ratio_interval(0.95 * hard, hard)
    assert phigh - plow == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="differ in number"):
        paired_ratio_interval([1.0, 2.0], [1.0])


def test_iqm_and_fall_rate_by_hand():
    values = [0, 10, 20, 30, 40, 50, 60, 1000]  # IQM: the middle four of eight
    assert interquartile_mean(values) == pytest.approx((20 + 30 + 40 + 50) / 4)
    baseline = [900, 950, 1000, 960]  # median 955: a fall is below 477.5
    assert fall_rate([100, 900, 470, 480], baseline) == pytest.approx(0.5)
    summary = paired_summary([100, 900, 470, 480], baseline)
    assert summary.fall_rate == pytest.approx(0.5) and summary.episodes == 4
    assert paired_summary([1.0, 2.0]).retained is None  # no baseline: no ratio


# --- the episode log ------------------------------------------------------------------------------------------------
def test_episode_log_keeps_finished_episodes_refuses_foreign_ones_and_drops_a_cut_line(tmp_path):
    from gym_qwen.platform.speculative.episode_log import EpisodeLog, setting_key

    header = {"task": "walker-walk", "checkpoint_sha256": "abc", "seed": 1}
    path = tmp_path / "x.episodes.jsonl"
    spec = ExecutionSpec(SpeculationSettings("prior", 1))
    key = setting_key(spec, {}, None)
    log = EpisodeLog(path, header, resume=False)
    log.add(key, spec.label, {"episode": 0, "return": 1.0})
    log.add(key, spec.label, {"episode": 0, "return": 2.0})  # once only
    with open(path, "ab") as f:
        f.write(b'{"setting": "cut sho')  # a kill mid-line
    with pytest.raises(ConfigError, match="resume=true"):
        EpisodeLog(path, header, resume=False)
    again = EpisodeLog(path, header, resume=True)
    assert {i: r["return"] for i, r in again.done(key).items()} == {0: 1.0}
    again.add(key, spec.label, {"episode": 1, "return": 3.0})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line.get("episode") for line in lines] == [None, 0, 1]
    with pytest.raises(ConfigError, match="checkpoint_sha256"):
        EpisodeLog(path, {**header, "checkpoint_sha256": "other"}, resume=True)


def test_a_read_only_episode_log_is_read_but_never_written_or_truncated(tmp_path):
    from gym_qwen.platform.speculative.episode_log import EpisodeLog, setting_key

    header = {"task": "walker-walk", "checkpoint_sha256": "abc", "seed": 1}
    path = tmp_path / "x.episodes.jsonl"
    key = setting_key(ExecutionSpec(SpeculationSettings("prior", 1)), {}, None)
    EpisodeLog(path, header, resume=False).add(key, "prior", {"episode": 0, "return": 1.0})
    with open(path, "ab") as f:
        f.write(b'{"setting": "being writ')  # another run may be appending to it right now
    before = path.read_bytes()
    other = EpisodeLog(path, header, resume=True, read_only=True)
    assert {i: r["return"] for i, r in other.done(key).items()} == {0: 1.0}
    with pytest.raises(RuntimeError, match="read-only"):
        other.add(key, "prior", {"episode": 1, "return": 2.0})
    assert path.read_bytes() == before


def test_setting_keys_name_what_changes_episodes_and_nothing_else():
    from gym_qwen.platform.speculative.episode_log import setting_key

    budget = tuple(budget_overrides(64, 2).items())
    row = ExecutionSpec(SpeculationSettings("baseline", 1), planner_overrides=budget)
    single = ExecutionSpec(SpeculationSettings("baseline", 1))
    # a mode=all planner row and a single evaluation with the same planner keys are the same setting
    assert setting_key(row, {}, None) == setting_key(single, dict(budget), None)
    assert setting_key(single, {"compile": True}, None) == setting_key(single, {}, None)  # how, not what
    adaptive = lambda thr, kind="open_loop": ExecutionSpec(SpeculationSettings("adaptive", 6, thr, 4, kind))  # noqa
    assert setting_key(adaptive(0.2), {}, None) != setting_key(adaptive(0.3), {}, None)
    assert setting_key(adaptive(0.2), {}, None) != setting_key(adaptive(0.2, "one_step"), {}, None)
    naive = lambda thr: ExecutionSpec(SpeculationSettings("naive", 3, thr))  # noqa: E731
    assert setting_key(naive(0.2), {}, None) == setting_key(naive(0.9), {}, None)  # naive ignores the threshold
    two_tower = ExecutionSpec(SpeculationSettings("spec_corrector", 3), "two_tower", "a.pt")
    assert setting_key(two_tower, {}, "sha-a") != setting_key(two_tower, {}, "sha-b")


# --- the command ---------------------------------------------------------------------------------------------------
def _evaluate(cwd, args, capsys, monkeypatch):
    from gym_qwen.jobs.evaluate import main

    monkeypatch.chdir(cwd)
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    from test_cli import untrained_checkpoint

    return untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "agent.pt")


def test_resuming_and_extending_a_comparison_runs_no_episode_again(tmp_path, capsys, monkeypatch, untrained):
    common = [f"checkpoint={untrained}", "mode=all", "spec_exec_horizons=1,2", "planner_budgets=16x1",
              "spec_budgets=0", "torch_threads=1", "progress=false", "output=cmp.json", "plot=cmp.png"]
    rc, out, err = _evaluate(tmp_path, common + ["episodes=2"], capsys, monkeypatch)
    assert rc == 0, err
    log = tmp_path / "cmp.episodes.jsonl"
    first = log.read_text().splitlines()
    settings = {json.loads(line)["setting"] for line in first[1:]}
    # baseline, prior, 16x1, naive, adaptive, adaptive falling back to the prior
    assert len(first) == 1 + 2 * len(settings) and len(settings) == 6
    rc, out, err = _evaluate(tmp_path, common + ["episodes=2"], capsys, monkeypatch)  # without resume=true
    assert rc == 2 and "resume=true" in err and len(err.strip().splitlines()) == 1
    assert log.read_text().splitlines() == first  # nothing overwritten
    rc, out, err = _evaluate(tmp_path, common + ["episodes=3", "resume=true"], capsys, monkeypatch)
    assert rc == 0, err
    lines = log.read_text().splitlines()
    assert lines[:len(first)] == first and len(lines) == 1 + 3 * len(settings)  # one new episode per setting
    assert [json.loads(line)["episode"] for line in lines[len(first):]] == [2] * len(settings)
    assert out.count("(1 episodes played, 2 from the log)") == len(settings)
    record = json.loads((tmp_path / "cmp.json").read_text())
    assert all(len(s["returns"]) == 3 for s in record["settings"])
    rc, out, err = _evaluate(tmp_path, common + ["episodes=3", "resume=true"], capsys, monkeypatch)
    assert rc == 0 and log.read_text().splitlines() == lines and out.count("(0 episodes played") == len(settings)
    prior = next(s for s in record["settings"] if s["mode"] == "prior")
    assert prior["planner_calls_per_step"] == 0 and prior["policy_calls_per_step"] == 1
    base = next(s for s in record["settings"] if s["mode"] == "baseline" and not s["planner_overrides"])
    assert base["retained"] == 1.0 and base["retained_low"] == base["retained_high"] == pytest.approx(1.0)


def test_one_setting_on_a_budget_is_named_by_it_and_not_retained_against_itself(tmp_path, capsys, monkeypatch,
                                                                                untrained):
    """evaluate mode=baseline planner_budget=16x1: the row says which planner ran, and with no run of the teacher's
    own planner to divide by it claims no retained return (it was 100% of itself before)."""
    rc, out, err = _evaluate(tmp_path, [f"checkpoint={untrained}", "mode=baseline", "planner_budget=16x1", "episodes=1",
                                        "torch_threads=1", "progress=false", "output=one.json"], capsys, monkeypatch)
    assert rc == 0, err
    (row,) = json.loads((tmp_path / "one.json").read_text())["settings"]
    assert row["setting"] == "baseline (planner 16x1)" and "baseline (planner 16x1)" in out
    assert row["retained"] is None


@pytest.mark.parametrize("args, words", [
    (["planner_budgets=64x2,64"], ["planner budget '64'"]),
    (["mode=baseline", "planner_budget=12"], ["planner budget '12'"]),
    (["mode=all", "planner_budget=64x2"], ["planner_budgets="]),
    (["mode=prior", "spec_exec_horizon=3"], ["mode=prior", "spec_exec_horizon=3"]),
    (["mode=prior", "corrector_type=two_tower"], ["mode=prior runs no corrector"]),
    (["mode=prior", "planner_budget=64x2"], ["mode=prior never plans"]),
    (["mode=naive", "mismatch=one_step"], ["mismatch=one_step", "mode=naive"]),
    (["mode=naive", "fallback=prior"], ["fallback=prior", "mode=naive"]),
    (["mode=adaptive", "mismatch=two_step"], ["mismatch"]),
    (["resume=true"], ["resume=true", "output="]),
    (["mode=baseline", "num_samples=64", "num_elites=64"], ["num_elites=64 must be < num_samples=64"]),
    (["mode=baseline", "planner_budget=64x2", "num_samples=32"], ["planner_budget=64x2 sets num_samples"]),
])
def test_bad_frontier_inputs_get_one_line_and_exit_2(tmp_path, capsys, monkeypatch, untrained, args, words):
    rc, out, err = _evaluate(tmp_path, [f"checkpoint={untrained}", "episodes=1", "progress=false", *args], capsys,
                             monkeypatch)
    assert rc == 2, (out, err)
    line = err.strip()
    assert len(line.splitlines()) == 1, err
    for w in words:
        assert w in line, (w, line)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_adaptive_threshold_is_chosen_once_on_collection_episodes_and_recorded(tmp_path, capsys, monkeypatch,
                                                                                  untrained):
    from gym_qwen.jobs.cli import main as cli
    from gym_qwen.platform.speculative.calibration import chunk_mismatches, estimated_calls_per_step
    from gym_qwen.platform.speculative.corrector_data import read_corrector_data

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "collect.parquet"
    assert cli(["collect", f"checkpoint={untrained}", "episodes=2", "spec_exec_horizon=3", "progress=false",
                "torch_threads=1", f"output={data}"]) == 0
    capsys.readouterr()
    args = [f"checkpoint={untrained}", "mode=adaptive", "spec_exec_horizon=3", f"threshold_data={data}",
            "threshold_budget=0.6", "episodes=1", "progress=false", "torch_threads=1", "output=a.json"]
    rc, out, err = _evaluate(tmp_path, args, capsys, monkeypatch)
    assert rc == 0, err
    choice = json.loads((tmp_path / "a.json").read_text())["threshold_choice"]
    assert choice["k"] == 3 and choice["budget"] == 0.6 and choice["seed_kind"] == "collection"
    assert f"adaptive threshold (open_loop) {choice['threshold']:g}, chosen on 2 collection episodes" in out
    # the rule by hand: the chosen threshold meets the budget and the next smaller mismatch seen does not
    chunks = chunk_mismatches(read_corrector_data(data)[0], 3)
    seen = sorted({round(float(d), 4) for c in chunks for d in c})
    assert estimated_calls_per_step(chunks, choice["threshold"], 3) <= 0.6
    smaller = [d for d in seen if d < choice["threshold"]]
    assert not smaller or estimated_calls_per_step(chunks, smaller[-1], 3) > 0.6
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["settings"][0]["threshold"] == choice["threshold"]
    for bad, words in ((["mismatch_threshold=0.3"], ["mismatch_threshold=", "threshold_data="]),
                       (["mode=naive"], ["threshold_data=", "mode=naive"]),
                       (["threshold_budget=0.0"], ["no threshold reaches 0.0"])):
        keys = {b.split("=")[0] for b in bad} | {"output"}
        kept = [a for a in args if a.split("=")[0] not in keys]
        rc, out, err = _evaluate(tmp_path, kept + bad, capsys, monkeypatch)
        assert rc == 2 and len(err.strip().splitlines()) == 1, (bad, err)
        assert all(w in err for w in words), (words, err)


def test_collecting_for_a_cheap_planner_plans_and_teaches_with_that_budget(tmp_path, capsys, monkeypatch, untrained):
    """collect planner_budget=16x1: every planner call (the chunks' plans and the teacher's) uses the budget, and
    the file says so; a corrector distilled from it is a corrector of that cheap planner."""
    from gym_qwen.jobs.cli import main as cli
    from gym_qwen.platform.speculative.corrector_data import read_corrector_data
    from gym_qwen.platform.tdmpc2.planner import MPPIPlanner

    used = []
    plan = MPPIPlanner.plan
    monkeypatch.setattr(MPPIPlanner, "plan", lambda self, *a, **k: (used.append(
        (self.s.num_samples, self.s.iterations, self.s.num_elites, self.s.num_pi_trajs)), plan(self, *a, **k))[1])
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "cheap.parquet"
    assert cli(["collect", f"checkpoint={untrained}", "episodes=1", "spec_exec_horizon=3", "progress=false",
                "torch_threads=1", "planner_budget=16x1", f"output={out}"]) == 0
    assert used and set(used) == {(16, 1, 4, 2)}
    assert read_corrector_data(out)[1]["planner_budget"] == "16x1"
    capsys.readouterr()
    assert cli(["collect", f"checkpoint={untrained}", "episodes=1", "planner_budget=16", f"output={tmp_path / 'x.parquet'}"]) == 2
    assert "planner budget '16'" in capsys.readouterr().err


def test_collection_records_the_one_step_mismatch_and_mode_all_verifies_with_it(tmp_path, capsys, monkeypatch,
                                                                              untrained):
    """Each collected row carries the one-step mismatch ||z_t - d(z_(t-1), a_(t-1))|| (checked by hand from the
    previous row's real latent and executed action); a threshold is chosen for it by the same rule, and mode=all
    with threshold_data= adds the adaptive row verified by it."""
    import pyarrow.parquet as pq
    import torch

    from gym_qwen.jobs.cli import main as cli
    from gym_qwen.platform.speculative.calibration import (CALIBRATION_COLUMNS, slim_calibration,
                                                            threshold_from_data)
    from gym_qwen.platform.speculative.corrector_data import read_corrector_data
    from gym_qwen.platform.tdmpc2.checkpoints import load_agent

    monkeypatch.chdir(tmp_path)
    data = tmp_path / "collect.parquet"
    assert cli(["collect", f"checkpoint={untrained}", "episodes=1", "spec_exec_horizon=3", "progress=false",
                "torch_threads=1", f"output={data}"]) == 0
    cols, _ = read_corrector_data(data)
    model = load_agent(str(untrained), {}, "cpu")[0].model
    second = [i for i in range(1, len(cols["t"])) if cols["step_in_chunk"][i] == 2]
    assert len(second) > 100 and all(cols["t"][i - 1] == cols["t"][i] - 1 for i in second)
    with torch.no_grad():
        prev_z = torch.as_tensor(cols["z_real"][[i - 1 for i in second]])
        prev_a = torch.as_tensor(cols["a_plan"][[i - 1 for i in second]]).clamp(-1, 1)  # open loop: the plan runs
        by_hand = (torch.as_tensor(cols["z_real"][second]) - model.next(prev_z, prev_a)).pow(2).sum(1).sqrt()
    assert torch.allclose(torch.as_tensor(cols["distance_one_step"][second]), by_hand, atol=1e-4)
    assert not torch.allclose(torch.as_tensor(cols["distance"][second]), by_hand, atol=1e-4)
    one_step = threshold_from_data(str(data), 3, 0.6, "one_step")
    assert one_step["mismatch"] == "one_step" and one_step["estimated_planner_calls_per_step"] <= 0.6
    capsys.readouterr()
    args = [f"checkpoint={untrained}", "mode=all", "spec_exec_horizons=1,3", "planner_budgets=16x1", "spec_budgets=0",
            f"threshold_data={data}", "threshold_budget=0.6", "episodes=1", "progress=false", "torch_threads=1",
            "output=all.json"]
    rc, out, err = _evaluate(tmp_path, args, capsys, monkeypatch)
    assert rc == 0, err
    record = json.loads((tmp_path / "all.json").read_text())
    assert record["threshold_choice_one_step"]["threshold"] == one_step["threshold"]
    rows = [s for s in record["settings"] if s.get("mismatch") == "one_step"]
    assert len(rows) == 1 and rows[0]["threshold"] == one_step["threshold"] and rows[0]["mode"] == "adaptive"
    assert f"adaptive threshold (one_step) {one_step['threshold']:g}" in out
    old = tmp_path / "old.parquet"  # a file collected before the column existed: open loop only, and said so
    table = pq.read_table(data)
    pq.write_table(table.drop(["distance_one_step"]).replace_schema_metadata(table.schema.metadata), old)
    with pytest.raises(ValueError, match="no one_step mismatches"):
        threshold_from_data(str(old), 3, 0.6, "one_step")
    assert threshold_from_data(str(old), 3, 0.6)["threshold"] == record["threshold_choice"]["threshold"]
    slim = tmp_path / "slim.parquet"  # slimmed to the columns the rule reads: the same thresholds
    slim_calibration(str(data), str(slim))
    assert slim.stat().st_size < data.stat().st_size / 5 and pq.read_schema(slim).names == list(CALIBRATION_COLUMNS)
    for kind in ("open_loop", "one_step"):
        assert threshold_from_data(str(slim), 3, 0.6, kind)["threshold"] == threshold_from_data(str(data), 3, 0.6,
                                                                                                kind)["threshold"]
    capsys.readouterr()  # ... but no corrector learns from it: distill says so in one line, and writes nothing
    assert cli(["distill", f"data={slim}", f"tdmpc_ckpt={untrained}", f"save_path={tmp_path / 'from-slim'}",
                "epochs=1", "progress=false", "mlflow=false", "torch_threads=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lacks the columns a corrector learns from" in err and "history" in err
    assert not list(tmp_path.glob("from-slim*"))


def _script(name: str):
    """scripts/<name>.py loaded as a module (the scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, f"scripts/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _frontier_log(path, header: dict, rows: dict) -> None:
    """An episode log as `evaluate output=` writes it: {label: [(return, planner calls, seconds), ...]}."""
    lines = [header]
    for label, episodes in rows.items():
        for i, (ret, calls, seconds) in enumerate(episodes):
            lines.append({"label": label, "return": ret, "length": 100, "planner_calls": calls, "seconds": seconds,
                          "episode": i})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_the_frontier_table_pairs_every_setting_with_the_baseline_and_draws_it(tmp_path, monkeypatch):
    """scripts/frontier_table.py: retained is paired episode by episode (a ratio known by construction), planner
    calls per step are summed from the episodes, ms per step comes only from the timing log, an extra log's
    settings are tagged, a setting with too few episodes is left out, and the plot shows each family's colour."""
    from pngs import assert_plot

    frontier_table = _script("frontier_table")
    monkeypatch.setattr(frontier_table, "FOLDER", tmp_path)
    header = {"log_version": 1, "task": "walker-walk", "checkpoint_sha256": "ab", "seed": 1}
    base = [(900.0 + 10 * i, 100, 10.0) for i in range(4)]
    _frontier_log(tmp_path / "walker-walk.episodes.jsonl", header, {
        "baseline": base, "prior": [(r * 0.5, 0, 0.1) for r, _, _ in base],
        "naive k=3": [(r * 0.9, 34, 3.0) for r, _, _ in base], "naive k=6": [(800.0, 17, 1.0)] * 2})
    _frontier_log(tmp_path / "walker-walk-64x2-corrected.episodes.jsonl", header,
                  {"spec_corrector k=3 +two_tower": [(r * 0.8, 34, 2.0) for r, _, _ in base]})
    _frontier_log(tmp_path / "walker-walk-timing.episodes.jsonl", header, {"naive k=3": [(1.0, 34, 0.25)]})
    text = frontier_table.table(frontier_table.setting_rows("walker-walk", min_episodes=4))
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in text.splitlines()[2:]}
    assert set(rows) == {"baseline", "prior", "naive k=3", "spec_corrector k=3 +two_tower [64x2-corrected]"}
    assert rows["prior"][4].startswith("50.0 [50.0, 50.0]") and rows["naive k=3"][4].startswith("90.0 [90.0, 90.0]")
    assert rows["naive k=3"][6] == "0.340" and rows["prior"][6] == "0.000"
    assert rows["naive k=3"][7] == "2.5 |" and rows["baseline"][7] == "- |"  # 0.25 s over 100 steps
    rows = frontier_table.setting_rows("walker-walk", 4)
    out = frontier_table.plot("walker-walk", rows, tmp_path / "frontier.png")
    assert_plot(out, (1680, 720), colours=("black", "tab:olive", "tab:blue", "tab:brown"),
                absent=("tab:orange", "tab:green"))
    bad = dict(header, seed=2)
    _frontier_log(tmp_path / "walker-walk-other.episodes.jsonl", bad, {"naive k=3": base})
    with pytest.raises(SystemExit, match="played on other episodes"):
        frontier_table.setting_rows("walker-walk", min_episodes=4)


def test_the_frontier_answer_names_the_cheapest_settings_and_judges_speculation_at_equal_time(tmp_path, monkeypatch):
    """frontier_table.answer on logs whose ratios and times are known: the cheapest setting above 95% / 97% by ms
    per step, the <= 0.33-calls target, and speculation judged against the best competitor no slower than it
    (beats, level, loses by the paired interval); without times for every setting, no "cheapest" is claimed."""
    frontier_table = _script("frontier_table")
    monkeypatch.setattr(frontier_table, "FOLDER", tmp_path)
    header = {"log_version": 1, "task": "cheetah-run", "checkpoint_sha256": "ab", "seed": 1}
    rng = np.random.default_rng(0)
    base = [500.0 + float(x) for x in rng.normal(0, 20, 30)]
    settings = {"baseline": [(r, 100, 20.0) for r in base],  # 200 ms per step
                "prior": [(0.6 * r, 0, 0.1) for r in base],  # 1 ms
                "baseline (planner 64x2)": [(0.90 * r, 100, 2.0) for r in base],  # 20 ms
                "baseline (planner 256x4)": [(0.97 * r, 100, 8.0) for r in base],  # 80 ms
                "spec_corrector k=3 +two_tower": [(0.98 * r, 33, 7.0) for r in base],  # 70 ms: beats 64x2
                "naive k=3": [(0.85 * r, 33, 6.9) for r in base],  # loses to 64x2
                "naive k=6": [(0.90 * r + d, 17, 3.0) for r, d in zip(base, rng.normal(0, 30, 30))]}  # level
    _frontier_log(tmp_path / "cheetah-run.episodes.jsonl", header, settings)
    timing = {label: eps[:1] for label, eps in settings.items() if label != "naive k=6"}
    _frontier_log(tmp_path / "cheetah-run-timing.episodes.jsonl", header, timing)
    lines = frontier_table.answer(frontier_table.setting_rows("cheetah-run", 30))
    assert all("needs ms per step" in line for line in lines[:2])  # naive k=6 has no time
    assert "spec_corrector k=3 +two_tower (98.0%, 0.330)" in lines[2] and "naive" not in lines[2]
    timing["naive k=6"] = settings["naive k=6"][:1]
    _frontier_log(tmp_path / "cheetah-run-timing.episodes.jsonl", header, timing)
    lines = frontier_table.answer(frontier_table.setting_rows("cheetah-run", 30))
    assert lines[0].startswith("cheapest keeping >= 95% (interval's lower bound): spec_corrector k=3 +two_tower")
    assert lines[1].startswith("cheapest keeping >= 97% (interval's lower bound): spec_corrector k=3 +two_tower")
    verdicts = {line.split(" (")[0]: line for line in lines[3:]}
    assert " beats baseline (planner 64x2) (20.0 ms)" in verdicts["spec_corrector k=3 +two_tower"]
    assert "ratio 1.089 [1.089, 1.089]" in verdicts["spec_corrector k=3 +two_tower"]
    assert " loses to baseline (planner 64x2)" in verdicts["naive k=3"]
    assert " is level with baseline (planner 64x2)" in verdicts["naive k=6"]
    assert not any("prior alone beats" in line for line in lines)  # the prior keeps 60% here
    settings["prior"] = [(1.25 * r, 0, 0.1) for r in base]  # a task that needs no planning (cartpole-swingup)
    _frontier_log(tmp_path / "cheetah-run.episodes.jsonl", header, settings)
    lines = frontier_table.answer(frontier_table.setting_rows("cheetah-run", 30))
    assert lines[0].startswith("cheapest keeping >= 95% (interval's lower bound): prior")
    said = [line for line in lines if "prior alone beats" in line]
    assert len(said) == 1 and "(125.0% [125.0, 125.0])" in said[0] and "needs no planning" in said[0]
    assert frontier_table.answer(frontier_table.setting_rows("cheetah-run", 31)) == \
        ["no setting has enough episodes yet"]


def test_value_calibration_replays_the_evaluators_episodes_and_sums_what_they_paid(tmp_path, monkeypatch):
    """scripts/value_calibration.py: its prior and planner episodes are `evaluate`'s mode=prior and mode=baseline
    episodes decision for decision (same returns), and each decision's paid return is the discounted sum of the
    rewards from there on."""
    from conftest import TINY_TASK
    from test_cli import untrained_checkpoint

    from gym_qwen.platform.speculative.evaluation import evaluate_checkpoint
    from gym_qwen.platform.tdmpc2.checkpoints import load_agent

    value_calibration = _script("value_calibration")
    ckpt = untrained_checkpoint(tmp_path / "models" / f"{TINY_TASK}-size1-seed1.pt")
    agent, _, _ = load_agent(str(ckpt), {}, "cpu")
    prior = value_calibration.play(agent, TINY_TASK, "prior", 1)
    planner = value_calibration.play(agent, TINY_TASK, "planner", 1)
    for mode, played in (("prior", prior), ("baseline", planner)):
        result, _ = evaluate_checkpoint(str(ckpt), 1, 1, device="cpu", indices=[1],
                                        execution=ExecutionSpec(SpeculationSettings(mode, 1)))
        assert played["return"] == pytest.approx(result.returns[0], abs=1e-9), mode
    assert prior["return"] != pytest.approx(planner["return"])  # the two policies act differently
    rewards = np.array([r["reward"] for r in planner["rows"]])
    discount = agent.planner.s.discount
    assert planner["rows"][0]["paid"] == pytest.approx(float((discount ** np.arange(len(rewards)) * rewards).sum()))
    assert planner["rows"][-1]["paid"] == pytest.approx(rewards[-1])
    summary = value_calibration.summarise([planner])
    assert 0.0 <= summary["share_planner_action_valued_higher"] <= 1.0 and summary["distance_to_prior_action"] > 0
    # the command: one JSON per run; a task without a shipped teacher is one line and exit 2
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "calibration.json"
    assert value_calibration.main([TINY_TASK, "--episodes", "1", "--compile", "false", "--out", str(out)]) == 0
    written = json.loads(out.read_text())["tasks"][TINY_TASK]
    first = [round(value_calibration.play(agent, TINY_TASK, p, 0)["return"], 1) for p in ("prior", "planner")]
    assert [written["prior"]["returns"], written["planner"]["returns"]] == [[first[0]], [first[1]]]
    assert set(written) == {"discount", "prior", "planner", "planner_mean"}
    assert value_calibration.main([TINY_TASK, "walker-run", "--out", str(tmp_path / "other.json")]) == 2
    assert not (tmp_path / "other.json").exists()
    with pytest.raises(SystemExit) as bad:
        value_calibration.main([TINY_TASK, "--episodes", "0", "--out", str(tmp_path / "other.json")])
    assert bad.value.code == 2 and not (tmp_path / "other.json").exists()


def test_the_frontier_table_sets_each_thresholds_estimate_against_the_calls_it_made(tmp_path, monkeypatch):
    """scripts/frontier_table.py: the threshold rule's estimate (from the long run's output) beside the planner calls
    per step that the settings run with that threshold made, summed from their episodes; the one-step threshold's
    rows are told apart; an extra log's row with the same threshold is not counted as estimated for."""
    frontier_table = _script("frontier_table")
    monkeypatch.setattr(frontier_table, "FOLDER", tmp_path)
    header = {"log_version": 1, "task": "walker-run", "checkpoint_sha256": "ab", "seed": 1}
    base = [(700.0 + i, 100, 10.0) for i in range(3)]
    _frontier_log(tmp_path / "walker-run.episodes.jsonl", header, {
        "baseline": base,
        "adaptive k=6 thr=0.35 +two_tower": [(650.0, 20, 1.0), (660.0, 30, 1.0), (640.0, 25, 1.0)],
        "adaptive k=6 thr=0.35": [(600.0, 40, 1.0)] * 3,
        "adaptive k=6 thr=0.27 one_step +two_tower": [(620.0, 21, 1.0)] * 3})
    _frontier_log(tmp_path / "walker-run-32x1-adaptive.episodes.jsonl", header,
                  {"adaptive k=6 thr=0.35 +two_tower (planner 32x1)": [(500.0, 50, 1.0)] * 3})
    rows = frontier_table.setting_rows("walker-run", 3)
    assert frontier_table.threshold_lines("walker-run", rows) == []  # no output of the long run yet
    choice = {"k": 6, "episodes": 16, "seed_kind": "collection"}
    (tmp_path / "walker-run.json").write_text(json.dumps({
        "threshold_choice": {**choice, "threshold": 0.35, "mismatch": "open_loop",
                             "estimated_planner_calls_per_step": 0.33},
        "threshold_choice_one_step": {**choice, "threshold": 0.27, "mismatch": "one_step",
                                      "estimated_planner_calls_per_step": 0.3}}))
    open_loop, one_step = frontier_table.threshold_lines("walker-run", rows)
    assert open_loop.startswith("adaptive threshold 0.35 (open_loop): estimated 0.330 planner calls per step at k=6 "
                                "on 16 collection episodes")
    assert open_loop.endswith("adaptive k=6 thr=0.35 +two_tower 0.250, adaptive k=6 thr=0.35 0.400")  # 75 / 300
    assert one_step.endswith(": adaptive k=6 thr=0.27 one_step +two_tower 0.210")
