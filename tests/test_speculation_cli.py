"""`gym-qwen collect` and `gym-qwen evaluate mode=...` end to end on the tiny checkpoint: bad inputs give one line
and exit 2; a real collection; collection over actors with a killed actor loses and duplicates nothing; evaluation
of a speculative mode over actors equals the sequential run."""
from __future__ import annotations

import json
import shutil

import pytest

from test_cli import _assert_user_error, _main_in


def _collect(tmp_path, ckpt, *extra):
    return ["collect", f"checkpoint={ckpt}", f"output={tmp_path / 'out' / 'd.parquet'}", "progress=false",
            "torch_threads=1", *extra]


@pytest.mark.parametrize("args,words", [
    (["collect"], ["checkpoint= is required"]),
    (["collect", "checkpoint=x.pt"], ["output= is required"]),
    (["collect", "checkpoint=x.pt", "output=d.csv"], ["output='d.csv'", ".parquet"]),
    (["collect", "checkpoint=missing.pt", "output=d.parquet"], ["checkpoint not found", "missing.pt"]),
    (["collect", "checkpoint=x.pt", "output=d.parquet", "spec_exec_horizon=1"], ["spec_exec_horizon=1", ">= 2"]),
    (["collect", "checkpoint=x.pt", "output=d.parquet", "max_samples=0"], ["max_samples=0"]),
    (["evaluate", "checkpoint=x.pt", "mode=spec_corrector"], ["needs a corrector", "corrector_type"]),
    (["evaluate", "checkpoint=x.pt", "mode=naive", "corrector_type=two_tower"], ["mode=naive runs no corrector"]),
    (["evaluate", "checkpoint=x.pt", "mode=baseline", "spec_exec_horizon=3"], ["mode=baseline", "must be 1"]),
    (["evaluate", "checkpoint=x.pt", "mode=all", "plot=x.jpg"], ["plot='x.jpg'", ".png"]),
])
def test_bad_speculation_inputs_one_line(tmp_path, capsys, monkeypatch, args, words):
    _assert_user_error(*_main_in(tmp_path, args, capsys, monkeypatch), tmp_path, words)


def test_speculation_settings_checked_against_the_teacher(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    # the tiny agent plans with horizon 1: k = 2 corrected steps need spec_extended; no corrector file exists
    ck = f"checkpoint={tiny_checkpoint}"
    _assert_user_error(*_main_in(tmp_path, ["evaluate", ck, "mode=spec_corrector", "corrector_type=two_tower",
                                            "spec_exec_horizon=2"], capsys, monkeypatch), tmp_path,
                       ["k <= H", "spec_exec_horizon=2", "spec_extended"])
    _assert_user_error(*_main_in(tmp_path, ["evaluate", ck, "mode=spec_extended", "corrector_type=temporal"],
                                 capsys, monkeypatch), tmp_path, ["corrector file", "temporal.pt", "not found"])
    foreign = tmp_path.parent / "foreign-corrector.pt"
    shutil.copy(tiny_checkpoint, foreign)  # a TD-MPC2 checkpoint is no corrector
    _assert_user_error(*_main_in(tmp_path, ["evaluate", ck, "mode=adaptive", "corrector_type=two_tower",
                                            f"corrector_checkpoint={foreign}"], capsys, monkeypatch), tmp_path,
                       ["foreign-corrector.pt"])


def test_collect_writes_parquet_and_refuses_to_overwrite(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    from gym_qwen.platform.speculative.corrector_data import read_corrector_data

    work = tmp_path / "work"
    work.mkdir()
    args = _collect(tmp_path, tiny_checkpoint, "episodes=3", "spec_exec_horizon=3", "max_samples=400")
    rc, out, err = _main_in(work, args, capsys, monkeypatch)
    assert rc == 0, err
    cols, meta = read_corrector_data(tmp_path / "out" / "d.parquet", latent_dim=16)
    # 500 decisions an episode in chunks of 3: 167 plans and 333 speculative steps; the cap of 400 rows is
    # reached during the second episode, so the third never runs and the second is cut
    assert cols["episode"].tolist() == [0] * 333 + [1] * 67
    assert cols["step_in_chunk"].tolist()[:6] == [1, 2] * 3 and all(cols["extended"])  # H = 1: all extended
    assert meta["exec_horizon"] == 3 and meta["plan_horizon"] == 1 and meta["task"] == "cartpole-balance"
    assert "wrote" in out and "step in chunk" in out
    before = (tmp_path / "out" / "d.parquet").read_bytes()
    _assert_user_error(*_main_in(work, args, capsys, monkeypatch), work, ["exists", "force=true"])
    assert (tmp_path / "out" / "d.parquet").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["d.parquet"]


def test_collect_under_the_async_clock(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    """collect async_delay=3: each episode runs in mode=async with plans spanning 3 decisions, a row at every
    speculative decision (2..499: the policy prior acts until the first plan is ready), from the async seed
    range, recorded in the metadata; adaptive's thresholds refuse such data; async_delay=1 is refused."""
    from gym_qwen.platform.speculative.corrector_data import read_corrector_data

    work = tmp_path / "work"
    work.mkdir()
    args = _collect(tmp_path, tiny_checkpoint, "episodes=1", "async_delay=3")
    rc, out, err = _main_in(work, args, capsys, monkeypatch)
    assert rc == 0, err
    data = tmp_path / "out" / "d.parquet"
    cols, meta = read_corrector_data(data, latent_dim=16)
    assert cols["episode"].tolist() == [0] * 498
    assert cols["t"].tolist()[:4] == [2, 3, 4, 5] and cols["step_in_chunk"].tolist()[:4] == [0, 1, 2, 0]
    assert (meta["async_delay"], meta["exec_horizon"], meta["seed_kind"], meta["reset_seed_base"]) == \
        (3, 3, "async_collection", 50_000)
    assert meta["executed"] == "async d=3, plan"
    _assert_user_error(*_main_in(work, ["evaluate", f"checkpoint={tiny_checkpoint}", "mode=adaptive",
                                        "spec_exec_horizon=3", f"threshold_data={data}", "threshold_budget=0.5"],
                                 capsys, monkeypatch), work, ["collected under the async clock"])
    _assert_user_error(*_main_in(work, _collect(tmp_path, tiny_checkpoint, "async_delay=1", "force=true"), capsys,
                                 monkeypatch), work, ["async_delay", "2"])
    _assert_user_error(*_main_in(work, _collect(tmp_path, tiny_checkpoint, "past_horizon=prior", "force=true"),
                                 capsys, monkeypatch), work, ["past_horizon=prior", "async_delay="])
    # past_horizon=prior at d = 4 > H: rows at plan steps only, and the metadata says so
    rc, out, err = _main_in(work, _collect(tmp_path, tiny_checkpoint, "episodes=1", "async_delay=4",
                                           "past_horizon=prior", "force=true"), capsys, monkeypatch)
    assert rc == 0, err
    cols, meta = read_corrector_data(data, latent_dim=16)
    H = meta["plan_horizon"]
    assert H < 4 and meta["past_horizon"] == "prior" and set(cols["step_in_chunk"].tolist()) == set(range(H))


@pytest.mark.ray
def test_collect_over_actors_with_a_killed_actor_equals_the_sequential_run(ray_local, tiny_checkpoint, tmp_path,
                                                                           capsys, monkeypatch):
    from gym_qwen.actors.rollout_worker import FAULTS_ENV
    from gym_qwen.platform.speculative.corrector_data import read_corrector_data

    runs = {}
    for name, extra in (("seq", []), ("farm", ["num_workers=2"])):
        work = tmp_path / name
        work.mkdir()
        if name == "farm":
            monkeypatch.setenv(FAULTS_ENV, json.dumps({"crash_at_episode": 1, "marker": str(tmp_path / "crashed")}))
        args = ["collect", f"checkpoint={tiny_checkpoint}", f"output={tmp_path / (name + '.parquet')}", "episodes=3",
                "spec_exec_horizon=2", "progress=false", "torch_threads=1", *extra]
        rc, out, err = _main_in(work, args, capsys, monkeypatch)
        assert rc == 0, err
        runs[name], _ = read_corrector_data(tmp_path / (name + ".parquet"))
    assert (tmp_path / "crashed").exists()  # an actor died with episode 1's rows unsent
    for key in ("episode", "t", "step_in_chunk", "distance", "z_real", "a_teacher", "history"):
        assert (runs["seq"][key] == runs["farm"][key]).all(), key


@pytest.mark.ray
def test_speculative_evaluation_over_actors_equals_sequential(ray_local, tiny_checkpoint):
    from gym_qwen.actors.evaluators import evaluate_with_actors
    from gym_qwen.platform.speculative.evaluation import evaluate_checkpoint
    from gym_qwen.platform.speculative.modes import ExecutionSpec, SpeculationSettings

    spec = ExecutionSpec(SpeculationSettings("adaptive", 4, mismatch_threshold=0.2))
    sequential, _ = evaluate_checkpoint(str(tiny_checkpoint), 2, seed=4, device="cpu", execution=spec)
    spread, _ = evaluate_with_actors(str(tiny_checkpoint), 2, seed=4, num_workers=2, cpus=1, execution=spec)
    assert spread.returns == sequential.returns
    assert spread.planner_calls == sequential.planner_calls and spread.misses == sequential.misses
    assert 250 < sequential.planner_calls < 1000  # some steps accepted, some missed


def test_evaluate_validates_overrides_against_the_checkpoint_and_honours_presets(tiny_checkpoint, tmp_path, capsys,
                                                                                  monkeypatch):
    # the tiny checkpoint plans with 32 samples: 40 elites are valid for the schema's 512 but not for it
    ck = f"checkpoint={tiny_checkpoint}"
    _assert_user_error(*_main_in(tmp_path, ["evaluate", ck, "num_elites=40"], capsys, monkeypatch), tmp_path,
                       ["num_elites=40", "num_samples=32"])
    preset = tmp_path.parent / "preset.yaml"
    preset.write_text("num_elites: 40\n")
    _assert_user_error(*_main_in(tmp_path, ["evaluate", ck, f"config={preset}"], capsys, monkeypatch), tmp_path,
                       ["num_elites=40", "num_samples=32"])


@pytest.mark.ray
def test_evaluator_actors_fail_fast_on_a_bad_override(ray_local, tiny_checkpoint, tmp_path, capsys, monkeypatch):
    rc, out, err = _main_in(tmp_path, ["evaluate", f"checkpoint={tiny_checkpoint}", "num_elites=40", "num_workers=2",
                                       "progress=false"], capsys, monkeypatch)
    _assert_user_error(rc, out, err, tmp_path, ["num_elites=40"])



def test_outputs_behind_a_file_are_refused_before_any_work(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    blocker = tmp_path.parent / "a-file"
    blocker.write_text("x")
    ck = f"checkpoint={tiny_checkpoint}"
    for args in (["evaluate", ck, f"output={blocker}/r.json"], ["evaluate", ck, "mode=all", f"plot={blocker}/p.png"],
                 ["collect", ck, f"output={blocker}/d.parquet"]):
        _assert_user_error(*_main_in(tmp_path, args, capsys, monkeypatch), tmp_path, [str(blocker), "is a file"])


def test_dagger_collection_executes_the_corrector_and_records_the_plan(tiny_checkpoint, tmp_path, capsys,
                                                                       monkeypatch):
    """collect corrector_type=...: the episodes start from the DAgger seed range (never an open-loop episode's
    start), the chunks execute the corrector's actions (so the states differ from an open-loop collection of the
    same starts after the first corrected step), the rows keep the plan's action as the corrector's input, and
    the metadata names the corrector; distill reads both files as one, and refuses twins."""
    import numpy as np

    from gym_qwen.platform.files import sha256_of
    from gym_qwen.platform.speculative.corrector_data import read_corrector_data

    work = tmp_path / "work"
    work.mkdir()
    open_loop = tmp_path / "open.parquet"
    common = [f"checkpoint={tiny_checkpoint}", "episodes=3", "spec_exec_horizon=3", "progress=false",
              "torch_threads=1"]
    rc, out, err = _main_in(work, ["collect", *common, f"output={open_loop}"], capsys, monkeypatch)
    assert rc == 0, err
    _assert_user_error(*_main_in(work, ["collect", *common, f"output={tmp_path / 'x.parquet'}",
                                        "corrector_type=two_tower"], capsys, monkeypatch), work,
                       ["corrector file", "two_tower.pt", "not found"])
    stem = tmp_path / "c"
    rc, out, err = _main_in(work, ["distill", f"data={open_loop}", f"tdmpc_ckpt={tiny_checkpoint}",
                                   f"save_path={stem}", "corrector_type=two_tower", "epochs=3", "lr=0.01",
                                   "device=cpu", "torch_threads=1", "progress=false", "mlflow=false",
                                   "val_fraction=0.5"], capsys, monkeypatch)
    assert rc == 0, err
    corrector = tmp_path / "c-two_tower.pt"
    dagger = tmp_path / "dagger.parquet"
    rc, out, err = _main_in(work, ["collect", *common, f"output={dagger}", "corrector_type=two_tower",
                                   f"corrector_checkpoint={corrector}"], capsys, monkeypatch)
    assert rc == 0, err
    a, _ = read_corrector_data(open_loop)
    b, meta = read_corrector_data(dagger)
    assert meta["executed"] == "corrector (two_tower)" and meta["corrector_sha256"] == sha256_of(corrector)
    assert meta["seed_kind"] == "dagger" and read_corrector_data(open_loop)[1]["seed_kind"] == "collection"
    # the DAgger episodes start from their own seed range: no row of theirs is a twin of an open-loop row
    assert a["t"].tolist() == b["t"].tolist()  # the same speculative steps: chunks of 3
    assert not np.array_equal(a["z_real"][0], b["z_real"][0])
    # an open-loop collection made (for this test only) from the DAgger range's starts: ...
    from gym_qwen.platform.seeds import RESET_SEED_BASE

    twin = tmp_path / "twin.parquet"
    with monkeypatch.context() as m:
        m.setitem(RESET_SEED_BASE, "collection", RESET_SEED_BASE["dagger"])
        rc, out, err = _main_in(work, ["collect", *common, f"output={twin}"], capsys, monkeypatch)
    assert rc == 0, err
    c, _ = read_corrector_data(twin)
    # ... t = 1 follows the plan's first action in both (a chunk's first step is never corrected) ...
    assert np.array_equal(c["z_real"][0], b["z_real"][0]) and np.array_equal(c["a_plan"][0], b["a_plan"][0])
    # ... t = 2 follows the corrected action of t = 1 in the DAgger data
    assert not np.array_equal(c["z_real"][1], b["z_real"][1])
    rc, out, err = _main_in(work, ["distill", f"data={open_loop},{dagger}", f"tdmpc_ckpt={tiny_checkpoint}",
                                   f"save_path={tmp_path / 'both'}", "corrector_type=two_tower", "epochs=1",
                                   "device=cpu", "torch_threads=1", "progress=false", "mlflow=false",
                                   "val_fraction=0.25"], capsys, monkeypatch)
    assert rc == 0, err
    _assert_user_error(*_main_in(work, ["distill", f"data={dagger},{twin}", f"tdmpc_ckpt={tiny_checkpoint}",
                                        f"save_path={tmp_path / 'tw'}", "corrector_type=two_tower", "epochs=1",
                                        "device=cpu", "progress=false", "mlflow=false"], capsys, monkeypatch),
                       work, ["twin.parquet", "dagger.parquet", "both hold an episode reset with seed 30001"])
    card = json.loads((tmp_path / "both-two_tower.json").read_text())
    assert sum(card["episodes"].values()) == 6  # two files of three episodes, kept apart
    assert sum(card["rows"].values()) == len(a["t"]) + len(b["t"])
    assert [f["executed"] for f in card["data_metadata"]["files"]] == ["plan", "corrector (two_tower)"]
