"""The data-parallel learner's maths (gym_qwen/platform/training/data_parallel.py): N processes learning from their
shares of one global batch take the single learner's update, to float tolerance. Real torch.distributed (gloo)
in 2 spawned processes; Ray Train's wiring of the same learner is tested in test_ray_train_learner.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import TINY_TASK, tiny_train_config

UPDATES = 3  # Adam's moments, the EMA target and the running Q scale all carry over from one update to the next
ATOL = 1e-5


def _filled_learner(tmp_path, *overrides):
    """The tiny agent's learner with a replay buffer of four fixed random episodes."""
    from gym_qwen.platform.envs import task_spec
    from gym_qwen.platform.tdmpc2.buffer import Episode
    from gym_qwen.platform.training.loop import build_learning

    torch.set_num_threads(1)
    cfg = tiny_train_config(tmp_path, "mlflow=false", *overrides)
    spec, _, learner = build_learning(cfg, "cpu")
    rng = np.random.default_rng(7)
    for i in range(4):
        T = 40
        learner.add(Episode(rng.normal(size=(T + 1, spec.obs_dim)).astype(np.float32),
                            rng.uniform(-1, 1, (T, spec.action_dim)).astype(np.float32),
                            rng.uniform(0, 1, T).astype(np.float32), np.zeros(T, bool), episode_id=i))
    return learner


def _learned(learner) -> dict:
    d = learner.agent.state_dict(with_optim=True)
    return {"model": d["model"], "scale": d["scale"],
            "optim": [s for st in d["optim"]["state"].values() for s in st.values()],
            "pi_optim": [s for st in d["pi_optim"]["state"].values() for s in st.values()]}


def _dp_worker(rank, world, init_file, tmp_path, out, overrides):
    from gym_qwen.platform.training.data_parallel import DataParallelGroup

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        learner = _filled_learner(tmp_path, *overrides)
        learner.set_data_parallel(DataParallelGroup(rank, world))
        metrics = [learner.update(1) for _ in range(UPDATES)]
        torch.save({"learned": _learned(learner), "metrics": metrics}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def _assert_close(a, b, atol=ATOL):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_close(a[k], b[k], atol)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_close(x, y, atol)
    elif isinstance(a, torch.Tensor):
        assert a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=atol, rtol=1e-4), \
            (a - b).abs().max().item()
    else:
        assert a == pytest.approx(b, rel=1e-4, abs=atol)


def _max_difference(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_two_processes_update_as_one_learner_on_the_global_batch(tmp_path):
    overrides = ("batch_size=16",)
    single = _filled_learner(tmp_path, *overrides)
    single_metrics = [single.update(1) for _ in range(UPDATES)]
    out = tmp_path / "dp"
    mp.start_processes(_dp_worker, args=(2, str(tmp_path / "init"), tmp_path, str(out), overrides), nprocs=2,
                       start_method="spawn", join=True)
    r0, r1 = (torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1))
    torch.testing.assert_close(r0["learned"], r1["learned"], atol=0, rtol=0)  # the replicas stay identical
    _assert_close(r0["learned"], _learned(single))
    _assert_close(r0["metrics"], single_metrics)
    # the comparison can fail: learning from one process's share alone (half the batch) lands elsewhere
    half = _filled_learner(tmp_path, "batch_size=8")
    half.update(UPDATES)
    assert _max_difference(_learned(half)["model"], r0["learned"]["model"]) > 100 * ATOL


def test_the_shards_of_a_batch_are_the_single_learners_batch(tmp_path):
    from gym_qwen.platform.training.data_parallel import DataParallelGroup

    whole = _filled_learner(tmp_path).buffer.sample(16)
    parts = [_filled_learner(tmp_path).buffer.sample(16, DataParallelGroup(r, 2).rows(16)) for r in (0, 1)]
    for k in whole:
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts], axis=1), whole[k])


def test_one_learner_worker_is_the_present_learner(tmp_path):
    from gym_qwen.platform.training.data_parallel import DataParallelGroup

    present = _filled_learner(tmp_path)  # each build seeds the global (learner) stream: build, then learn
    present_metrics = present.update(UPDATES)
    one = _filled_learner(tmp_path)
    one.set_data_parallel(DataParallelGroup(0, 1))
    assert one.update(UPDATES) == present_metrics
    torch.testing.assert_close(_learned(one), _learned(present), atol=0, rtol=0)


def test_learner_keys_are_checked(tmp_path):
    from gym_qwen.platform.config import ConfigError

    cfg = tiny_train_config(tmp_path, "learner=ray_train", "learner_workers=2", "num_workers=1")
    assert (cfg.learner, cfg.learner_workers) == ("ray_train", 2)
    for bad, says in [(("learner=ray_train",), "num_workers="),
                      (("learner=ray_train", "num_workers=1", "learner_workers=3"), "split evenly"),
                      (("learner_workers=2",), "learner=ray_train"),
                      (("learner=ray_train", "num_workers=1", "sync=true"), "learner=single"),
                      (("learner_workers=0",), "learner_workers"),
                      (("learner=several",), "learner")]:
        with pytest.raises(ConfigError, match=says):
            tiny_train_config(tmp_path, *bad)
