"""Tests of gym_qwen.platform.tdmpc2.checkpoints (and files, torch_files under it): atomic writes, safe loads,
compatibility checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gym_qwen.platform.config import config_to_dict
from gym_qwen.platform.files import atomic_write_bytes
from gym_qwen.platform.tdmpc2.checkpoints import FORMAT, VERSION, check_compatible, load_checkpoint, save_checkpoint
from gym_qwen.platform.torch_files import CheckpointError

from conftest import tiny_train_config


def _flat_tensors(d, prefix=""):
    """{dotted key: tensor} of every tensor in nested dicts/lists."""
    out = {}
    items = d.items() if isinstance(d, dict) else enumerate(d)
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            out[key] = v
        elif isinstance(v, (dict, list, tuple)):
            out.update(_flat_tensors(v, key + "."))
    return out


@pytest.fixture(scope="module")
def tiny_agent(tmp_path_factory):
    from gym_qwen.platform.envs import task_spec
    from gym_qwen.platform.tdmpc2.agent import TDMPC2Agent

    cfg = tiny_train_config(tmp_path_factory.mktemp("ckpt") / "runs")
    spec = task_spec(cfg.task)
    torch.manual_seed(0)
    agent = TDMPC2Agent(cfg, spec.obs_dim, spec.action_dim, spec.episode_length, spec.episodic, "cpu")
    return cfg, spec, agent


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ------------------------------------------------------------------------------------------ round trip
def test_agent_checkpoint_round_trip(tiny_agent, tmp_path):
    from gym_qwen.platform.tdmpc2.agent import TDMPC2Agent
    from gym_qwen.platform.tdmpc2.checkpoints import agent_payload, model_signature

    cfg, spec, agent = tiny_agent
    path = save_checkpoint(tmp_path / "agent.pt", agent_payload(cfg, spec, agent.state_dict(with_optim=False), env_steps=1234))
    assert _entries(tmp_path) == ["agent.pt"]
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == FORMAT and ckpt["version"] == VERSION and ckpt["kind"] == "agent"
    assert ckpt["config"] == config_to_dict(cfg)  # the config travels with the weights
    assert ckpt["task"] == cfg.task and ckpt["env_steps"] == 1234
    assert ckpt["arch"] == model_signature(cfg)
    assert "optim" not in ckpt["agent"]  # an agent checkpoint carries no optimiser state

    saved, loaded = _flat_tensors(agent.state_dict(with_optim=False)), _flat_tensors(ckpt["agent"])
    assert saved.keys() == loaded.keys() and saved
    for k in saved:
        assert torch.equal(saved[k], loaded[k]), k

    torch.manual_seed(123)  # different initial weights, then overwritten by the checkpoint
    other = TDMPC2Agent(cfg, spec.obs_dim, spec.action_dim, spec.episode_length, spec.episodic, "cpu")
    other.load_state_dict(ckpt["agent"])
    for k, v in _flat_tensors(other.state_dict(with_optim=False)).items():
        assert torch.equal(v, saved[k]), k


def test_numpy_and_rng_state_survive_weights_only_load(tmp_path):
    import numpy as np

    rng = np.random.default_rng(7)
    rng.random(3)
    payload = {"array": np.arange(6, dtype=np.float32).reshape(2, 3), "scalar": np.float64(2.5),
               "rng": rng.bit_generator.state, "nested": [{"x": np.int64(3)}]}
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "s.pt", payload))
    assert torch.equal(ckpt["array"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert ckpt["scalar"] == 2.5 and ckpt["nested"] == [{"x": 3}]
    restored = np.random.default_rng(0)
    restored.bit_generator.state = ckpt["rng"]
    assert np.array_equal(restored.random(4), rng.random(4))


def test_global_rng_state_survives_weights_only_load_in_both_formats(tmp_path):
    from gym_qwen.platform.rng import TorchRngStream, global_rng_state, set_global_rng_state

    torch.manual_seed(3)
    stream = TorchRngStream(11)
    with stream:
        torch.rand(2)
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "s.pt", {"rng": global_rng_state(), "stream": stream.state(),
                                                               "old": torch.get_rng_state()}))
    assert set(ckpt["rng"]) == {"cpu", "cuda"} and set(ckpt["stream"]) == {"cpu", "cuda"}
    expected = torch.rand(5)
    with stream:
        stream_expected = torch.rand(3)
    set_global_rng_state(ckpt["rng"])
    assert torch.equal(torch.rand(5), expected)
    set_global_rng_state(ckpt["old"])  # a checkpoint from before the CUDA states were saved: a bare CPU tensor
    assert torch.equal(torch.rand(5), expected)
    restored = TorchRngStream(0)
    restored.load_state(ckpt["stream"])
    with restored:
        assert torch.equal(torch.rand(3), stream_expected)


# ------------------------------------------------------------------------------------------ atomic writes
def test_atomic_write_leaves_no_temp_files(tmp_path):
    atomic_write_bytes(tmp_path / "f.bin", lambda f: f.write(b"first"))
    atomic_write_bytes(tmp_path / "f.bin", lambda f: f.write(b"second"))
    assert (tmp_path / "f.bin").read_bytes() == b"second"
    assert _entries(tmp_path) == ["f.bin"]
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644  # not mkstemp's owner-only 0600


def test_interrupted_write_keeps_previous_file(tmp_path):
    path = tmp_path / "agent.pt"
    save_checkpoint(path, {"kind": "agent", "n": 1})
    before = path.read_bytes()

    def interrupted(f):
        f.write(b"partial garbage")
        raise KeyboardInterrupt  # e.g. Ctrl-C or a kill in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, interrupted)
    assert path.read_bytes() == before
    assert _entries(tmp_path) == ["agent.pt"]
    assert load_checkpoint(path)["n"] == 1


def test_interrupted_torch_save_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "train_state.pt"
    save_checkpoint(path, {"kind": "train_state", "n": 1})
    before = path.read_bytes()
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        real_save({"half": torch.zeros(10)}, f)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"kind": "train_state", "n": 2})
    assert path.read_bytes() == before
    assert _entries(tmp_path) == ["train_state.pt"]


# ------------------------------------------------------------------------------------------ bad files
def test_load_missing_file(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "nope.pt")
    assert "not found" in _one_line(e) and "nope.pt" in str(e.value)


def test_load_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path)
    _one_line(e)


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint\n" * 10, b"PK\x03\x04garbage"])
def test_load_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "bad.pt" in _one_line(e)


def test_load_truncated_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "agent.pt", {"kind": "agent", "w": torch.randn(1000)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    _one_line(e)


def test_load_foreign_torch_file(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "not a Gym Qwen" in _one_line(e)
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_load_other_version(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format": FORMAT, "version": VERSION + 1}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(VERSION + 1) in _one_line(e)




def _leave_marker(path: str) -> None:
    """What a malicious pickle would run at load time (here: create a file)."""
    Path(path).write_text("code ran")


class Malicious:
    """Pickles to 'call _leave_marker(path)' (the classic arbitrary-code-execution pickle)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return _leave_marker, (self.path,)


class Plain:
    def __init__(self):
        self.weights = torch.zeros(3)


def test_weights_only_refuses_code_in_pickles(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": VERSION, "kind": "agent", "payload": Malicious(str(marker))}, path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    msg = _one_line(e)
    assert "_leave_marker" in msg and "weights-only" in msg and "\x1b" not in msg
    assert not marker.exists(), "loading a checkpoint executed code from the pickle"
    # The file really is dangerous: an unsafe load runs the code.
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


def test_weights_only_refuses_custom_class_instances(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save(Plain(), path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert "Plain" in _one_line(e)


# ------------------------------------------------------------------------------------------ compatibility
def _ckpt(task="cartpole-balance", **arch):
    return {"task": task, "arch": {"model_size": 1, "latent_dim": 128, "enc_dim": 256, "mlp_dim": 384,
                                   "num_enc_layers": 2, "num_q": 2, "num_bins": 101, "simnorm_dim": 8, **arch}}


def test_check_compatible_accepts_same():
    ckpt = _ckpt()
    check_compatible(ckpt, task="cartpole-balance", arch=dict(ckpt["arch"]), path="x.pt")
    check_compatible(ckpt)  # nothing asked, nothing checked


def test_check_compatible_model_size(tiny_agent):
    from gym_qwen.platform.tdmpc2.checkpoints import model_signature

    cfg, _, _ = tiny_agent
    ckpt = {"task": cfg.task, "arch": model_signature(cfg)}
    asked = model_signature(tiny_train_config("unused", "model_size=5"))
    with pytest.raises(CheckpointError) as e:
        check_compatible(ckpt, task=cfg.task, arch=asked, path="runs/agent.pt")
    msg = _one_line(e)
    assert "model_size=1" in msg and "5" in msg and "runs/agent.pt" in msg


def test_check_compatible_other_dims():
    with pytest.raises(CheckpointError) as e:
        check_compatible(_ckpt(), arch={**_ckpt()["arch"], "latent_dim": 512})
    msg = _one_line(e)
    assert "latent_dim=128" in msg and "512" in msg


def test_check_compatible_task():
    with pytest.raises(CheckpointError) as e:
        check_compatible(_ckpt(task="cartpole-balance"), task="walker-walk", path="a.pt")
    msg = _one_line(e)
    assert "cartpole-balance" in msg and "walker-walk" in msg


KEEP_SAVING = """
import io, sys, time
import torch
from gym_qwen.platform.tdmpc2 import checkpoints

real_save = torch.save

def slow_save(obj, f):  # the bytes reach the file over ~0.3 s: a SIGKILL lands mid-write
    buf = io.BytesIO()
    real_save(obj, buf)
    data = buf.getvalue()
    for i in range(0, len(data), len(data) // 10 + 1):
        f.write(data[i:i + len(data) // 10 + 1])
        f.flush()
        time.sleep(0.03)

checkpoints.torch.save = slow_save
generation = 0
while True:
    generation += 1
    print(f"writing {generation}", flush=True)
    checkpoints.save_checkpoint(sys.argv[1], {"generation": generation, "weights": torch.full((200_000,), float(generation))})
"""


def test_kill_9_during_checkpoint_writes_leaves_the_last_good_checkpoint(tmp_path):
    """A process killed (SIGKILL) in the middle of writing a checkpoint: the file under the checkpoint's name is
    the previous generation, whole; the half-written bytes sit in a temp file that nothing loads."""
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "train_state.pt"
    for round_ in range(2):  # each writer starts at generation 1 and is killed writing generation 2 + round_
        proc = subprocess.Popen([sys.executable, "-c", KEEP_SAVING, str(target)], stdout=subprocess.PIPE, text=True)
        try:
            for line in proc.stdout:  # kill while generation 2 (or 3, 4) is being written
                if line.strip() == f"writing {2 + round_}":
                    time.sleep(0.1)
                    break
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        ckpt = load_checkpoint(target)
        assert ckpt["generation"] == 1 + round_
        assert torch.equal(ckpt["weights"], torch.full((200_000,), float(1 + round_)))
        leftovers = [p.name for p in tmp_path.iterdir() if p != target]
        assert leftovers and all(n.startswith(".train_state.pt.") and n.endswith(".tmp") for n in leftovers)
        for name in leftovers:
            (tmp_path / name).unlink()
