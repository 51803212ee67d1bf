"""Decision Transformer: the fast model against the reference mathematics, causal masking, the evaluation
window, dropout, training windows (padding, masks, sampling by length), a short training run, evaluation on a v5
task, checkpoints, and the dt-train / dt-test / dt-plot commands (outputs and one-line errors)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pngs import assert_plot
from test_datasets import _cli, _one_line_error

from gym_qwen.platform.datasets.d4rl import OfflineData, write_hdf5
from gym_qwen.platform.dt.data import TrajectoryWindows
from gym_qwen.platform.dt.model import DecisionTransformer, DTDims, effective_p, fast_dropout
from gym_qwen.platform.dt.reference import reference_from

pytestmark = pytest.mark.usefixtures("single_thread")
SMALL = DTDims(state_dim=5, act_dim=2, n_blocks=2, h_dim=32, context_len=6, n_heads=2, drop_p=0.1)


def _inputs(dims: DTDims, B: int = 3, T: int | None = None, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    T = T or dims.context_len
    return (torch.randint(0, 900, (B, 1), generator=g) + torch.arange(T),
            torch.randn(B, T, dims.state_dim, generator=g), torch.rand(B, T, dims.act_dim, generator=g) * 2 - 1,
            torch.randn(B, T, 1, generator=g))


def _model(dims=SMALL, seed=0):
    torch.manual_seed(seed)
    return DecisionTransformer(dims).eval()


def test_shapes_and_the_reference_mathematics():
    model = _model()
    ts, s, a, r = _inputs(SMALL)
    out = model(ts, s, a, r)
    assert out.shape == (3, SMALL.context_len, SMALL.act_dim) and out.abs().max() < 1
    _, ref_actions, _ = reference_from(model).eval()(ts, s, a, r)
    torch.testing.assert_close(out, ref_actions, atol=2e-6, rtol=1e-5)
    assert model(ts, s, a, r, last_only=True).shape == (3, SMALL.act_dim)


def test_a_future_token_never_changes_an_earlier_output():
    model = _model()
    ts, s, a, r = _inputs(SMALL)
    base = model(ts, s, a, r)
    for t in range(SMALL.context_len - 1):
        s2, a2, r2 = s.clone(), a.clone(), r.clone()
        s2[:, t + 1:] += 5.0
        r2[:, t + 1:] -= 3.0
        a2[:, t:] = -a2[:, t:]  # a_t comes after s_t: it must not change the prediction of a_t either
        out = model(ts, s2, a2, r2)
        torch.testing.assert_close(out[:, :t + 1], base[:, :t + 1], atol=1e-6, rtol=0)
        assert (out[:, t + 1:] - base[:, t + 1:]).abs().max() > 1e-3  # the test can fail: later outputs do move


def test_the_evaluation_window_equals_the_reference_zero_padding():
    """Evaluation feeds only the steps so far and leaves out the unknown last action; the reference feeds the
    whole window with zeros after step t and reads position t."""
    model = _model()
    ts, s, a, r = _inputs(SMALL, B=2)
    ref = reference_from(model).eval()
    for t in range(SMALL.context_len):
        padded = [x.clone() for x in (s, a, r)]
        for x in padded:
            x[:, t + 1:] = 0
        padded[1][:, t] = 0
        _, want, _ = ref(ts, *padded)
        got = model(ts[:, :t + 1], s[:, :t + 1], a[:, :t], r[:, :t + 1], last_only=True)
        torch.testing.assert_close(got, want[:, t], atol=2e-6, rtol=1e-5)


def test_fast_dropout_keeps_one_minus_p_and_scales():
    torch.manual_seed(0)
    x = torch.ones(400_000, requires_grad=True)
    y = fast_dropout(x, 0.1, True)
    keep = (y > 0).float().mean().item()
    assert abs(keep - 0.9) < 0.003 and abs(effective_p(0.1) - 0.1) < 1e-5
    assert abs(y.mean().item() - 1.0) < 0.005
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # the gradient goes through the kept elements, scaled
    assert torch.equal(fast_dropout(x, 0.1, False), x)
    assert torch.equal(fast_dropout(x, 1.0, True), torch.zeros_like(x))


def test_dropout_is_on_in_training_and_off_in_eval():
    model = _model()
    ts, s, a, r = _inputs(SMALL)
    model.train()
    assert not torch.equal(model(ts, s, a, r), model(ts, s, a, r))
    model.eval()
    assert torch.equal(model(ts, s, a, r), model(ts, s, a, r))


# ------------------------------------------------------------------------------------------- training windows
def _episodes_data(lengths=(3, 8), tail=2, S=5, A=2, seed=0) -> OfflineData:
    """Episodes of the given lengths (the first ends by a terminal, the others by timeouts) and a partial tail."""
    rng = np.random.default_rng(seed)
    n = sum(lengths) + tail
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    ends = np.cumsum(lengths) - 1
    terminals[ends[0]] = True
    timeouts[ends[1:]] = True
    return OfflineData("hopper", rng.normal(size=(n, S)).astype(np.float32), rng.uniform(-1, 1, (n, A)).astype(
        np.float32), np.arange(1, n + 1, dtype=np.float32), terminals, timeouts)


def test_windows_padding_masks_returns_to_go_and_normalisation():
    data = _episodes_data()
    w = TrajectoryWindows(data, context_len=5, rtg_scale=10.0)
    assert w.n_rows == 11 and w.n_episodes == 2  # the 2-row tail is not used
    rows = np.arange(11)
    np.testing.assert_allclose(w.state_mean, data.observations[rows].mean(0), rtol=1e-5)
    # a window starting at the last row of episode 0: one real step, four padded
    ts, s, a, rtg, mask = w.window(np.array([2, 3]), np.array([3, 11]), np.array([0, 3]))
    assert mask[0].tolist() == [1, 0, 0, 0, 0] and mask[1].tolist() == [1, 1, 1, 1, 1]
    assert ts[0].tolist() == [2, 0, 0, 0, 0] and ts[1].tolist() == [0, 1, 2, 3, 4]
    assert torch.all(s[0, 1:] == 0) and torch.all(a[0, 1:] == 0) and torch.all(rtg[0, 1:] == 0)
    assert rtg[0, 0, 0].item() == pytest.approx(3 / 10)  # the last reward of episode 0 (rewards are 1, 2, 3, ...)
    assert rtg[1, :, 0].tolist() == pytest.approx([sum(range(4, 12)) / 10 - sum(range(4, 4 + i)) / 10
                                                   for i in range(5)])
    torch.testing.assert_close(s[1, 0], torch.from_numpy((data.observations[3] - w.state_mean) / w.state_std))
    torch.testing.assert_close(a[1], torch.from_numpy(data.actions[3:8]))


def test_episodes_are_sampled_in_proportion_to_their_length():
    w = TrajectoryWindows(_episodes_data(lengths=(10, 90), tail=0), context_len=4, rtg_scale=1.0)
    starts = w.draw_starts(20_000, np.random.default_rng(0))
    assert abs(np.mean(w.episode_of_row[starts] == 1) - 0.9) < 0.01
    _, _, _, _, mask = w.sample(2_000, np.random.default_rng(0))
    assert mask.sum(1).min() >= 1 and mask.sum(1).max() == 4  # windows near an episode's end are padded


# ------------------------------------------------------------------------------------------------- training
def _learnable_data(n_eps=6, length=40, S=5, A=2) -> OfflineData:
    """Actions are a fixed function of the state, so a few updates must lower the loss."""
    rng = np.random.default_rng(1)
    n = n_eps * length
    obs = rng.normal(size=(n, S)).astype(np.float32)
    actions = np.tanh(obs[:, :A] - 0.5 * obs[:, A:2 * A]).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[length - 1::length] = True
    return OfflineData("hopper", obs, actions, rng.normal(size=n).astype(np.float32), np.zeros(n, bool), timeouts)


def test_a_short_training_run_lowers_the_loss():
    from gym_qwen.platform.dt.train import DTTrainer

    w = TrajectoryWindows(_learnable_data(), context_len=SMALL.context_len, rtg_scale=10.0)
    torch.manual_seed(0)
    model = DecisionTransformer(SMALL)
    trainer = DTTrainer(model, w, lr=3e-3, wt_decay=1e-4, warmup_steps=5, grad_clip=1.0, batch_size=16, seed=0,
                        device=torch.device("cpu"))
    batch = trainer.batch()
    model.eval()
    with torch.no_grad():
        before = float(trainer.loss(*batch))
    losses = [trainer.step() for _ in range(80)]
    model.eval()
    after = float(trainer.loss(*batch))
    assert after < 0.5 * before, (before, after)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    assert trainer.updates == 80 and trainer.scheduler.get_last_lr()[0] == pytest.approx(3e-3)


# ----------------------------------------------------------------------------------------------- evaluation
def test_evaluation_on_a_v5_task_is_reproducible_and_batch_independent():
    from gym_qwen.platform.dt.evaluate import evaluate_dt

    dims = DTDims(state_dim=11, act_dim=3, n_blocks=1, h_dim=16, context_len=4, n_heads=1, drop_p=0.1)
    model = _model(dims)
    kw = dict(rtg_target=3600.0, rtg_scale=1000.0, state_mean=np.zeros(11, np.float32),
              state_std=np.ones(11, np.float32), max_ep_len=15)
    one = evaluate_dt(model, "hopper", 2, 3, **kw)
    assert len(one["returns"]) == 2 and all(1 <= n <= 15 for n in one["lengths"])
    assert one == {**evaluate_dt(model, "hopper", 2, 3, **kw), "ms_per_action": one["ms_per_action"]}
    alone = evaluate_dt(model, "hopper", 2, 3, batch=1, **kw)
    np.testing.assert_allclose(alone["returns"], one["returns"], rtol=1e-4)
    assert one["normalized_mean"] == pytest.approx(100 * (one["return_mean"] + 20.272305) / (3234.3 + 20.272305))
    assert not model.training


# ---------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip_and_refusals(tmp_path):
    from gym_qwen.platform.torch_files import CheckpointError
    from gym_qwen.platform.dt.train import load_dt_checkpoint, save_dt_checkpoint

    w = TrajectoryWindows(_learnable_data(), context_len=SMALL.context_len, rtg_scale=10.0)
    model = _model()
    path = save_dt_checkpoint(tmp_path / "m.pt", model, {"seed": 0}, "hopper", {"name": "x", "sha256": "ab"}, w,
                              3600.0, 10.0, 7, None)
    loaded, ckpt = load_dt_checkpoint(path)
    ts, s, a, r = _inputs(SMALL)
    assert torch.equal(loaded(ts, s, a, r), model(ts, s, a, r))
    assert ckpt["updates"] == 7 and ckpt["dataset"]["sha256"] == "ab" and ckpt["env"] == "hopper"
    np.testing.assert_array_equal(ckpt["state_mean"].numpy(), w.state_mean)
    torch.save({"format": "gym-qwen/decision-transformer", "version": 1, "x": Path("evil")}, tmp_path / "p.pt")
    with pytest.raises(CheckpointError, match="pickled Python object"):
        load_dt_checkpoint(tmp_path / "p.pt")
    (tmp_path / "t.pt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_dt_checkpoint(tmp_path / "t.pt")
    torch.save({"format": "other"}, tmp_path / "o.pt")
    with pytest.raises(CheckpointError, match="not a Gym Qwen Decision Transformer checkpoint"):
        load_dt_checkpoint(tmp_path / "o.pt")


# ------------------------------------------------------------------------------------------------- commands
TINY_DT = ["n_blocks=1", "embed_dim=16", "context_len=4", "batch_size=8", "max_train_iters=2",
           "num_updates_per_iter=3", "num_eval_ep=1", "max_eval_ep_len=8", "warmup_steps=2", "torch_threads=1",
           "progress=false"]


@pytest.fixture()
def hopper_file(tmp_path):
    data = _learnable_data(n_eps=3, length=30, S=11, A=3)
    return write_hdf5(tmp_path / "hopper-test-v5.hdf5", data)


def test_dt_train_test_and_plot_commands(tmp_path, hopper_file, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rc, out, err = _cli(["dt-train", "env=hopper", f"data={hopper_file}", "log_dir=runs", *TINY_DT], capsys)
    assert rc == 0, err
    assert "6 updates" in out and "D4RL normalised score" in out
    summary = json.loads(next(Path("runs").glob("dt_hopper-test-v5_summary_*.json")).read_text())
    assert summary["updates"] == 6 and summary["dataset"]["sha256"] == __import__("hashlib").sha256(
        hopper_file.read_bytes()).hexdigest()
    from gym_qwen.platform.datasets import read_hdf5
    assert summary["dataset"]["content_sha256"] == read_hdf5(hopper_file).content_sha256()
    log = next(Path("runs").glob("dt_hopper-test-v5_log_*.csv")).read_text().splitlines()
    assert log[0].startswith("duration,num_updates,action_loss,eval_avg_reward") and len(log) == 3
    best = Path(summary["best"]).name
    rc, out, err = _cli(["dt-test", "env=hopper", "num_eval_ep=2", "max_eval_ep_len=5", "chk_pt_dir=runs",
                         f"chk_pt_name={best}", "output=res.json", "progress=false"], capsys)
    assert rc == 0, err
    assert "D4RL normalised score" in out and json.loads(Path("res.json").read_text())["episodes"] == 2
    rc, out, err = _cli(["dt-plot", "env_d4rl_name=hopper-test-v5", "log_dir=runs", "smoothing_window=2",
                         "plot_avg=true", "save_fig=true"], capsys)
    assert rc == 0, err
    assert_plot("runs/hopper-test-v5_avg.png", (1320, 480), colours=("tab:blue",))  # 11 x 4 in at 120 dpi
    import mlflow

    runs = mlflow.search_runs(experiment_names=["gym-qwen-dt"])
    assert len(runs) == 1 and runs["metrics.train/action_loss"].notna().all()
    assert runs["params.dataset_sha256"].iloc[0] == summary["dataset"]["sha256"]
    from mlflow.artifacts import download_artifacts

    logged = download_artifacts(run_id=runs["run_id"].iloc[0], artifact_path="checkpoints",
                                dst_path=str(tmp_path / "logged"))
    assert sorted(p.name for p in Path(logged).iterdir()) == sorted([Path(summary["model"]).name, best])
    assert (Path(logged) / best).read_bytes() == (Path("runs") / best).read_bytes()  # dt-test reads it back


def test_dt_command_errors_are_one_line(tmp_path, hopper_file, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _one_line_error(*_cli(["dt-train", "env=walker2d", f"data={hopper_file}", "mlflow=false"], capsys),
                    "another environment")
    _one_line_error(*_cli(["dt-train", "env=hopper", "dataset=medium", "mlflow=false"], capsys),
                    "dataset not found", "gym-qwen make-dataset env=hopper dataset=medium")
    _one_line_error(*_cli(["dt-test", "chk_pt_name=missing.pt"], capsys), "checkpoint not found")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    _one_line_error(*_cli(["dt-test", f"chk_pt_name={tmp_path / 'junk.pt'}"], capsys), "cannot read checkpoint")
    _one_line_error(*_cli(["dt-plot", "env_d4rl_name=nothing-here", "log_dir=runs"], capsys), "no logs")
    _one_line_error(*_cli(["dt-train", "embed_dim=30", "n_heads=4"], capsys), "multiple of n_heads")
    assert sorted(os.listdir(tmp_path)) == ["hopper-test-v5.hdf5", "junk.pt"]


@pytest.mark.ray
@pytest.mark.slow
def test_dt_test_on_evaluator_actors_equals_one_episode_at_a_time(tmp_path, capsys, ray_local):
    """num_workers=2: episodes on two evaluator actors give exactly the numbers of eval_batch=1 in this process."""
    from gym_qwen.platform.dt.train import save_dt_checkpoint

    dims = DTDims(state_dim=11, act_dim=3, n_blocks=1, h_dim=16, context_len=4, n_heads=1, drop_p=0.1)
    data = _learnable_data(n_eps=2, length=20, S=11, A=3)
    w = TrajectoryWindows(data, context_len=4, rtg_scale=1000.0)
    path = save_dt_checkpoint(tmp_path / "m.pt", _model(dims), {}, "hopper", {"name": "t", "sha256": "0"}, w,
                              3600.0, 1000.0, 0, None)
    common = ["dt-test", f"chk_pt_name={path}", "num_eval_ep=3", "max_eval_ep_len=12", "progress=false"]
    results = {}
    # one torch thread on both sides: a matmul split over more threads may round differently
    for extra in (["eval_batch=1", "torch_threads=1"], ["num_workers=2", "worker_cpus=1"]):
        out_file = tmp_path / f"{extra[0]}.json"
        rc, out, err = _cli(common + extra + [f"output={out_file}"], capsys)
        assert rc == 0, err
        results[extra[0]] = json.loads(out_file.read_text())
    one, actors = results["eval_batch=1"], results["num_workers=2"]
    assert actors["returns"] == one["returns"] and actors["lengths"] == one["lengths"] and actors["batch"] == 1


def test_dt_train_reads_a_local_minari_dataset(tmp_path):
    pytest.importorskip("minari")
    from gym_qwen.platform.config import DTTrainConfig, parse_config
    from gym_qwen.platform.datasets.minari_io import export_minari
    from gym_qwen.platform.dt.train import load_training_data

    data = _learnable_data(n_eps=2, length=25, S=11, A=3)
    data.next_observations = np.roll(data.observations, -1, axis=0)
    export_minari(data, "gym-qwen/hopper/unit-v0", root=tmp_path)
    cfg = parse_config(DTTrainConfig, ["env=hopper", "minari=gym-qwen/hopper/unit-v0", f"minari_root={tmp_path}"])
    loaded, ident = load_training_data(cfg)
    assert ident["name"] == "gym-qwen-hopper-unit-v0" and len(ident["sha256"]) == 64 and len(loaded) == 50
    assert ident["sha256"] == ident["content_sha256"] == data.content_sha256()
    np.testing.assert_array_equal(loaded.actions, data.actions)
    assert TrajectoryWindows(loaded, 4, 1000.0).n_episodes == 2
