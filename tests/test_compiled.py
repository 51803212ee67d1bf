"""The compiled planner and update compute the same mathematics as the eager ones (docs/architecture.md: an eager
fallback for compiler failures only, and a check that both give the same actions)."""
import numpy as np
import pytest
import torch

from gym_qwen.platform.config import TrainConfig
from gym_qwen.platform.tdmpc2.agent import TDMPC2Agent
from gym_qwen.platform.tdmpc2.buffer import Episode, EpisodeBuffer
from gym_qwen.platform.tdmpc2.compiled import CompiledOrEager

SMALL = dict(task="cheetah-run", latent_dim=32, enc_dim=32, mlp_dim=48, num_samples=64, num_elites=8,
             num_pi_trajs=4, iterations=2, batch_size=16)


def _agents(horizon: int = 3):
    agents = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        agents.append(TDMPC2Agent(TrainConfig(**SMALL, horizon=horizon, compile=compile_), 17, 6, 500, False, "cpu"))
    agents[1].model.load_state_dict(agents[0].model.state_dict())
    return agents


def _buffer(horizon: int = 3):
    rng = np.random.default_rng(0)
    buf = EpisodeBuffer(1000, horizon, seed=0)
    buf.add(Episode(rng.standard_normal((51, 17), dtype=np.float32), rng.uniform(-1, 1, (50, 6)).astype(np.float32),
                    rng.random(50, dtype=np.float32), np.zeros(50, bool), 0))
    return buf


# horizon 1: the planner's first decode ran compiled under inference_mode, once made the two-hot bins an inference
# tensor, and the policy update then failed ("Inference tensors cannot be saved for backward")
@pytest.mark.slow
@pytest.mark.parametrize("horizon", [3, 1])
def test_compiled_planner_and_update_match_eager(horizon):
    eager, compiled = _agents(horizon)
    obs = np.random.default_rng(1).standard_normal((3, 17)).astype(np.float32)
    plans = []
    for agent in (eager, compiled):
        torch.manual_seed(5)
        plans.append(agent.plan(obs, t0=True))
    assert compiled.planner._rollout.active, "compilation failed and fell back to eager; the comparison would be empty"
    np.testing.assert_allclose(plans[0].actions.numpy(), plans[1].actions.numpy(), atol=1e-4)
    np.testing.assert_allclose(plans[0].value.numpy(), plans[1].value.numpy(), rtol=1e-4, atol=1e-4)
    batch = _buffer(horizon).sample(16)
    metrics = []
    for agent in (eager, compiled):
        torch.manual_seed(7)
        metrics.append(agent.update(batch))
    assert compiled._losses.active and compiled._policy_terms.active
    for k in ("consistency_loss", "reward_loss", "value_loss", "pi_loss"):
        assert metrics[0][k] == pytest.approx(metrics[1][k], rel=1e-4, abs=1e-5), k
    for (name, p), q in zip(eager.model.named_parameters(), compiled.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)


def _failing(error: BaseException) -> CompiledOrEager:
    """A CompiledOrEager of x -> x + 1 whose compiled function raises `error`."""
    def raise_error(*args):
        raise error

    wrapped = CompiledOrEager(lambda x: x + 1, enabled=False, name="f")
    wrapped.compiled = raise_error
    return wrapped


def test_compile_disabled_calls_eager():
    wrapped = CompiledOrEager(lambda x: x + 1, enabled=False, name="f")
    assert not wrapped.active and wrapped(1) == 2


@pytest.mark.parametrize("error, named", [
    (torch._dynamo.exc.BackendCompilerFailed(lambda gm, inputs: None, ValueError("backend exploded"), None),
     "BackendCompilerFailed (ValueError: backend exploded)"),
    (torch._dynamo.exc.Unsupported("cannot trace this"), "Unsupported: cannot trace this"),
    (torch._dynamo.exc.InternalTorchDynamoError("dynamo broke"), "InternalTorchDynamoError: dynamo broke"),
    (torch._dynamo.exc.TorchRuntimeError("fake tensors disagree"), "TorchRuntimeError: fake tensors disagree"),
])
def test_compiler_error_falls_back_to_eager_and_says_which(error, named):
    wrapped = _failing(error)
    with pytest.warns(UserWarning, match="continuing in eager mode") as record:
        assert wrapped(2) == 3
    assert named in str(record[0].message)
    assert not wrapped.active and wrapped(3) == 4  # eager for good


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("mat1 and mat2 shapes cannot be multiplied"),  # the compiled code's own run-time error
    KeyboardInterrupt(),
])
def test_other_errors_propagate_and_compilation_stays_on(error):
    wrapped = _failing(error)
    with pytest.raises(type(error)):
        wrapped(2)
    assert wrapped.active


def test_out_of_memory_while_compiling_propagates():
    oom = torch.OutOfMemoryError("CUDA out of memory while autotuning")
    wrapped = _failing(torch._dynamo.exc.BackendCompilerFailed(lambda gm, inputs: None, oom, None))
    with pytest.raises(torch.OutOfMemoryError):
        wrapped(2)
    assert wrapped.active


def test_error_in_the_maths_propagates_from_eager_and_compilation_stays_on():
    """A shape error shows up while tracing (TorchRuntimeError); eager fails the same way, so it is the maths."""
    def bad_maths(x):
        return x @ torch.ones(3, 4)

    wrapped = CompiledOrEager(bad_maths, enabled=False, name="f")
    wrapped.compiled = _failing(torch._dynamo.exc.TorchRuntimeError("mm: shapes [2, 5] x [3, 4]")).compiled
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        wrapped(torch.ones(2, 5))
    assert wrapped.active
