"""Learned correctors (two-tower, temporal) and `gym-qwen distill`: identity at initialisation, bounded output,
masking, learning a known residual, safe save/load with one-line refusals, and the command's errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gym_qwen.platform.speculative.correctors import (
    CorrectorError, TemporalCorrector, TwoTowerCorrector, build_corrector, load_corrector, save_corrector,
)
from gym_qwen.platform.speculative.features import feature_dim, mismatch_feature
from gym_qwen.platform.speculative.corrector_data import CorrectorDataError

L, A, K = 16, 2, 3
SMALL = {"two_tower": {"hidden": 32}, "temporal": {"d_model": 32, "heads": 2, "layers": 2, "ff": 64}}
TASK = "reacher-easy"  # two action dimensions


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    yield


def make(kind: str, **hp):
    torch.manual_seed(0)
    return build_corrector(kind, L, A, K, **{**SMALL[kind], **hp}).eval()


def inputs(batch: int = 8, seed: int = 0, a_scale: float = 0.9):
    g = torch.Generator().manual_seed(seed)
    z_real, z_pred = torch.rand(batch, L, generator=g), torch.rand(batch, L, generator=g)
    a_plan = (torch.rand(batch, A, generator=g) * 2 - 1) * a_scale
    history = torch.randn(batch, K, feature_dim(L, A), generator=g)
    history[:, -1] = mismatch_feature(z_real, z_pred, a_plan)
    valid = torch.randint(1, K + 1, (batch,), generator=g)
    mask = torch.arange(K).unsqueeze(0) >= (K - valid).unsqueeze(1)
    history[~mask] = 0.0
    return z_real, z_pred, a_plan, history, mask


def perturb_head(model, seed: int = 1):
    """Make the (zero-initialised) delta head non-zero, as training would."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.head.delta.weight.copy_(torch.randn(model.head.delta.weight.shape, generator=g))
        model.head.delta.bias.copy_(torch.randn(model.head.delta.bias.shape, generator=g) * 0.1)
    return model


# --- the modules ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["two_tower", "temporal"])
def test_identity_at_initialisation(kind):
    model = make(kind)
    x = inputs()
    with torch.no_grad():
        assert torch.equal(model(*x), x[2])
        out_of_bounds = x[2] * 3.0
        assert torch.equal(model(x[0], x[1], out_of_bounds, x[3], x[4]), out_of_bounds.clamp(-1, 1))


@pytest.mark.parametrize("kind", ["two_tower", "temporal"])
def test_output_stays_in_the_action_box(kind):
    model = perturb_head(make(kind, max_delta=1.0))
    with torch.no_grad():
        model.head.delta.weight.mul_(50.0)  # saturate the tanh
        out = model(*inputs(batch=64, a_scale=1.0))
    assert out.abs().max() <= 1.0
    assert (out.abs() == 1.0).any()  # really pushed against the bounds, and clamped there


def test_temporal_ignores_padding_and_reads_the_last_position():
    model = perturb_head(make("temporal"))
    z_real, z_pred, a_plan, history, mask = inputs(batch=16)
    mask[:4, :-1] = False  # some rows at an episode's first step: only the current position is real
    with torch.no_grad():
        out = model(z_real, z_pred, a_plan, history, mask)
        noisy = history.clone()
        noisy[~mask] = torch.randn(int((~mask).sum()), history.shape[-1]) * 10
        assert torch.allclose(model(z_real, z_pred, a_plan, noisy, mask), out, atol=1e-6)
        last = history.clone()
        last[:, -1] += torch.randn(16, history.shape[-1])
        # The unclamped delta: a clamped output can sit at a bound either way.
        before = model.correction(z_real, z_pred, a_plan, history, mask)
        after = model.correction(z_real, z_pred, a_plan, last, mask)
    assert ((after - before).abs().amax(dim=1) > 1e-4).all()


def test_two_tower_ignores_history():
    model = perturb_head(make("two_tower"))
    z_real, z_pred, a_plan, history, mask = inputs()
    with torch.no_grad():
        assert torch.equal(model(z_real, z_pred, a_plan, history, mask),
                           model(z_real, z_pred, a_plan, torch.randn_like(history), mask))
        assert not torch.equal(model(z_real, z_pred, a_plan, history, mask),
                               model(z_real + 0.5, z_pred, a_plan, history, mask))


def test_build_corrector_types():
    assert isinstance(make("two_tower"), TwoTowerCorrector)
    assert isinstance(make("temporal"), TemporalCorrector)
    with pytest.raises(CorrectorError, match="unknown corrector type"):
        build_corrector("lstm", L, A, K)


# --- save and load -------------------------------------------------------------------------------------------
SHA = "ab" * 32


@pytest.mark.parametrize("kind", ["two_tower", "temporal"])
def test_save_load_round_trip(tmp_path, kind, monkeypatch):
    model = perturb_head(make(kind))
    path = save_corrector(tmp_path / "c.pt", model, {"teacher_sha256": SHA, "task": TASK})
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k) or real_load(*a, **k))
    loaded, meta = load_corrector(path, teacher_sha256=SHA, latent_dim=L)
    assert calls and all(k.get("weights_only") is True for k in calls)
    assert not loaded.training and type(loaded) is type(model)
    assert meta["teacher_sha256"] == SHA and meta["latent_dim"] == L and meta["history_len"] == K
    x = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(*x), model(*x))


def one_line_error(path, **kw) -> str:
    with pytest.raises(CorrectorError) as e:
        load_corrector(path, **kw)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    return message


def test_load_refusals(tmp_path):
    good = save_corrector(tmp_path / "good.pt", make("two_tower"), {"teacher_sha256": SHA})
    assert "not found" in one_line_error(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    assert "cannot read corrector" in one_line_error(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    assert "not a Gym Qwen corrector" in one_line_error(foreign)
    message = one_line_error(good, latent_dim=L * 2)
    assert f"size {L}" in message and f"size is {L * 2}" in message
    message = one_line_error(good, teacher_sha256="cd" * 32)
    assert "abababababab" in message and "cdcdcdcdcdcd" in message and "distill one for this teacher" in message
    temporal = save_corrector(tmp_path / "temporal.pt", make("temporal"), {"teacher_sha256": SHA})
    assert f"reads {K} mismatch features; use history_len={K}" in one_line_error(temporal, history_len=K + 1)
    load_corrector(temporal, history_len=K)
    load_corrector(good, history_len=K + 1)  # a two-tower corrector reads no history


# --- distillation --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A real (untrained) tiny agent checkpoint for reacher-easy with latent 16: what distill reads of it."""
    from gym_qwen.platform.tdmpc2.checkpoints import save_checkpoint
    from gym_qwen.platform.config import TrainConfig, parse_config
    from gym_qwen.platform.envs import TaskSpec
    from gym_qwen.platform.tdmpc2.agent import TDMPC2Agent
    from gym_qwen.platform.files import sha256_of
    from gym_qwen.platform.tdmpc2.checkpoints import agent_payload

    cfg = parse_config(TrainConfig, [f"task={TASK}", f"latent_dim={L}", "enc_dim=32", "mlp_dim=32", "device=cpu",
                                     "num_samples=32", "num_elites=4", "num_pi_trajs=2"])
    spec = TaskSpec(name=TASK, suite="dmc", obs_dim=6, action_dim=A, episode_length=500, action_repeat=2,
                    episodic=False)
    agent = TDMPC2Agent(cfg, spec.obs_dim, spec.action_dim, spec.episode_length, spec.episodic, "cpu")
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, agent_payload(cfg, spec, agent.state_dict(with_optim=False), 0))
    return path, sha256_of(path)


def synthetic_data(path, teacher_sha: str, episodes: int = 16, steps: int = 40, history_len: int = K, seed: int = 0,
                   collect_seed: int | None = None):
    """Corrector data whose teacher action is clip(a_plan + W (z_real - z_pred)) for a fixed W. `collect_seed`:
    the seed= of the collection it poses as (its episodes then reset from the collection seed range)."""
    from gym_qwen.platform.speculative.corrector_data import ShardedParquetWriter, rows_to_table, schema

    rng = np.random.default_rng(seed)
    W = rng.normal(0, 1.5 / np.sqrt(L), (A, L))
    F = feature_dim(L, A)
    meta = {"teacher_sha256": teacher_sha, "task": TASK, "k": 3}
    if collect_seed is not None:
        meta.update(seed=collect_seed, seed_kind="collection")
    sch = schema(L, A, history_len, F, meta)
    writer = ShardedParquetWriter(path, sch)
    writer.start()
    for e in range(episodes):
        z_real = rng.uniform(0, 0.5, (steps, L)).astype(np.float32)
        z_pred = (z_real + rng.normal(0, 0.3, (steps, L))).astype(np.float32)
        a_plan = rng.uniform(-0.8, 0.8, (steps, A)).astype(np.float32)
        a_teacher = np.clip(a_plan + (z_real - z_pred) @ W.T, -1, 1).astype(np.float32)
        feats = np.concatenate([z_real, z_pred, z_real - z_pred, a_plan], axis=1)
        padded = np.concatenate([np.zeros((history_len - 1, F), np.float32), feats])
        history = np.stack([padded[t:t + history_len] for t in range(steps)])
        rows = {"episode": np.full(steps, e), "t": np.arange(steps), "step_in_chunk": 1 + np.arange(steps) % 2,
                "extended": np.zeros(steps, bool), "distance": np.linalg.norm(z_real - z_pred, axis=1),
                "distance_one_step": np.linalg.norm(z_real - z_pred, axis=1) / 2,
                "z_real": z_real, "z_pred": z_pred, "a_plan": a_plan, "a_teacher": a_teacher,
                "a_teacher_mean": a_teacher, "history": history,
                "history_valid": np.minimum(np.arange(steps) + 1, history_len)}
        writer.write_episode(e, rows_to_table(rows, sch))
    writer.finish()
    return path


@pytest.fixture(scope="module")
def data(teacher, tmp_path_factory):
    return synthetic_data(tmp_path_factory.mktemp("data") / "corr.parquet", teacher[1])


def distill_config(data, teacher, save_path, *extra):
    from gym_qwen.platform.config import DistillConfig, parse_config

    args = {"data": data, "tdmpc_ckpt": teacher, "save_path": save_path, "history_len": K, "epochs": 12,
            "batch_size": 64, "lr": 3e-3, "hidden": 64, "d_model": 32, "device": "cpu", "torch_threads": 1,
            "progress": "false", "mlflow": "false", "val_fraction": 0.25}
    args.update(a.split("=", 1) for a in extra)
    return parse_config(DistillConfig, [f"{k}={v}" for k, v in args.items()])


def test_distill_learns_a_known_residual(teacher, data, tmp_path):
    from gym_qwen.platform.speculative.distillation import distill

    results = distill(distill_config(data, teacher[0], tmp_path / "c"), show_progress=False)
    assert set(results) == {"two_tower", "temporal"}
    for kind, r in results.items():
        # 16 episodes: 4 validate (choose the epoch), 2 test (report), 10 train
        assert r["episodes"] == {"train": 10, "val": 4, "test": 2}
        assert r["rows"] == {"train": 400, "val": 160, "test": 80}
        assert r["ratio"] < 0.3, (kind, r["mse"], r["plan_mse"])  # on the test episodes
        assert [s["step_in_chunk"] for s in r["per_step"]] == [1, 2]
        assert sum(s["rows"] for s in r["per_step"]) == 80
        assert r["mse"] == pytest.approx(r["mse_to_sample"]) == pytest.approx(r["mse_to_mean"])  # equal labels here
        loaded, meta = load_corrector(r["checkpoint"], teacher_sha256=teacher[1], latent_dim=L)
        assert meta["test"]["mse"] == pytest.approx(r["mse"]) and meta["validation"]["best_epoch"] == r["best_epoch"]
        assert meta["validation"]["rows"] == 160 and meta["test"]["rows"] == 80
        card = json.loads(open(r["card"]).read())
        assert card["teacher_sha256"] == teacher[1] and card["type"] == kind
        assert card["command"].startswith(f"gym-qwen distill data={data} tdmpc_ckpt={teacher[0]}")
        assert "epochs=12" in card["command"] and "mlflow" not in card["command"]
        assert card["test"]["plan_mse"] == pytest.approx(r["plan_mse"])


def test_distill_filters_steps_in_chunk(teacher, data, tmp_path):
    from gym_qwen.platform.speculative.distillation import distill

    results = distill(distill_config(data, teacher[0], tmp_path / "c.pt", "corrector_type=two_tower", "epochs=1",
                                     "max_step_in_chunk=1"), show_progress=False)
    r = results["two_tower"]
    assert [s["step_in_chunk"] for s in r["per_step"]] == [1] and r["rows"]["val"] == 80 and r["rows"]["test"] == 40
    assert r["checkpoint"] == str(tmp_path / "c-two_tower.pt") and (tmp_path / "c-two_tower.json").is_file()


# --- the command ---------------------------------------------------------------------------------------------
def run_cli(capsys, *args):
    from gym_qwen.jobs.cli import main

    code = main(["distill", *args])
    out, err = capsys.readouterr()
    return code, out, err


def cli_args(data, teacher, save_path, *extra):
    args = dict(a.split("=", 1) for a in [
        f"data={data}", f"tdmpc_ckpt={teacher}", f"save_path={save_path}", f"history_len={K}", "epochs=2",
        "batch_size=128", "hidden=32", "d_model=32", "device=cpu", "torch_threads=1", "progress=false",
        "mlflow=false", *extra])
    return [f"{k}={v}" for k, v in args.items()]


def test_cli_refusals_write_nothing(teacher, data, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cases = {
        "not found": cli_args(tmp_path / "missing.parquet", teacher[0], out_dir / "c"),
        "history_len=3 but": cli_args(synthetic_data(tmp_path / "k4.parquet", teacher[1], episodes=2, steps=4,
                                                     history_len=4), teacher[0], out_dir / "c"),
        "save_path= is required": cli_args(data, teacher[0], ""),
        "collected with teacher sha256": cli_args(synthetic_data(tmp_path / "other.parquet", "ef" * 32, episodes=2,
                                                                 steps=4), teacher[0], out_dir / "c"),
    }
    for expected, args in cases.items():
        code, out, err = run_cli(capsys, *args)
        assert code == 2 and err.count("\n") == 1 and expected in err, (expected, err)
        assert err.startswith("gym-qwen distill: error: ")
        assert list(out_dir.iterdir()) == []
    (out_dir / "c-temporal.pt").write_bytes(b"keep me")
    code, _, err = run_cli(capsys, *cli_args(data, teacher[0], out_dir / "c"))
    assert code == 2 and err.count("\n") == 1 and "force=true" in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["c-temporal.pt"]
    assert (out_dir / "c-temporal.pt").read_bytes() == b"keep me"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_cuda_without_cuda(teacher, data, tmp_path, capsys):
    code, _, err = run_cli(capsys, *cli_args(data, teacher[0], tmp_path / "c", "device=cuda"))
    assert code == 2 and err.count("\n") == 1 and "no CUDA device" in err
    assert list(tmp_path.iterdir()) == []


def test_cli_help(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "max_step_in_chunk" in out and "corrector_type" in out


def test_cli_distills_and_logs_to_mlflow(teacher, data, tmp_path, capsys, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *cli_args(data, teacher[0], tmp_path / "m" / "c", "mlflow=true"))
    assert code == 0, err
    for kind in ("two_tower", "temporal"):
        assert (tmp_path / "m" / f"c-{kind}.pt").is_file() and (tmp_path / "m" / f"c-{kind}.json").is_file()
        assert kind in out
    assert "plan's test MSE" in out and "step 2" in out and "test rows" in out

    from mlflow.tracking import MlflowClient

    run_id = json.loads((tmp_path / "m" / "c-temporal.json").read_text())["mlflow_run_id"]
    client = MlflowClient(uri)
    assert [m.step for m in client.get_metric_history(run_id, "temporal/val_mse")] == [1, 2]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "two_tower/ratio" in run.data.metrics
    assert run.data.params["corrector_type"] == "both"


def test_distill_reads_several_files_as_one_keeping_their_episodes_apart(teacher, tmp_path):
    from gym_qwen.platform.speculative.distillation import distill

    first = synthetic_data(tmp_path / "a.parquet", teacher[1], episodes=4, seed=0, collect_seed=1)
    second = synthetic_data(tmp_path / "b.parquet", teacher[1], episodes=4, seed=1, collect_seed=5)  # 0..3 again
    r = distill(distill_config(f"{first},{second}", teacher[0], tmp_path / "c", "corrector_type=two_tower",
                               "epochs=1"), show_progress=False)["two_tower"]
    assert r["episodes"] == {"train": 5, "val": 2, "test": 1} and r["rows"] == {"train": 200, "val": 80, "test": 40}
    # seed 2's episodes 0..3 reset like seed 1's episodes 1..3 (and one more): twins, refused naming both files
    twins = synthetic_data(tmp_path / "twins.parquet", teacher[1], episodes=4, seed=2, collect_seed=2)
    with pytest.raises(CorrectorDataError, match="twins.parquet and .*a.parquet both hold an episode reset with "
                                                 "seed 20002"):
        distill(distill_config(f"{first},{twins}", teacher[0], tmp_path / "t", "corrector_type=two_tower",
                               "epochs=1"), show_progress=False)
    other = synthetic_data(tmp_path / "other.parquet", "0" * 64, episodes=2)
    with pytest.raises(CorrectorDataError, match="other.parquet was collected with teacher sha256 000000"):
        distill(distill_config(f"{first},{other}", teacher[0], tmp_path / "d", "corrector_type=two_tower",
                               "epochs=1"), show_progress=False)
