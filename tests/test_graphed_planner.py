"""cuda_graph=true: plans replayed from CUDA graphs (gym_qwen/platform/tdmpc2/graphed_planner.py). The refusal runs
everywhere; the graph tests need a CUDA device and are skipped without one (they ran on a lent H200: BENCHMARKS.md,
"The frontier's cheap competitors on a GPU"). They import nothing from conftest, so that they also run with
`pytest --noconftest` on a machine without the test dependencies."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from gym_qwen.platform.config import ConfigError, TrainConfig
from gym_qwen.platform.tdmpc2.agent import TDMPC2Agent
from gym_qwen.platform.tdmpc2.graphed_planner import GraphedPlanner

OBS, ACT, LENGTH = 17, 6, 1000
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def _agent(device: str, **keys) -> TDMPC2Agent:
    torch.manual_seed(0)
    cfg = TrainConfig(task="cheetah-run", compile=False, **keys)
    return TDMPC2Agent(cfg, OBS, ACT, LENGTH, False, device)


def test_cuda_graph_is_refused_off_a_gpu_in_one_line():
    with pytest.raises(ConfigError, match="cuda_graph=true captures CUDA graphs: it needs a CUDA device, not cpu"):
        _agent("cpu", cuda_graph=True)


def _latents(agent, B: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        return agent.model.encode(torch.randn(B, OBS, generator=g).to(agent.device))


@cuda
def test_replays_are_counted_as_plans_and_plan_like_the_eager_planner():
    eager, graphed = _agent("cuda"), _agent("cuda", cuda_graph=True)
    assert isinstance(graphed.planner, GraphedPlanner)
    with torch.no_grad():  # fresh weights value every plan at zero (zero-initialised heads): give them a landscape
        for p in eager.model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    graphed.model.load_state_dict(eager.model.state_dict())
    z = _latents(eager, 1)
    with torch.inference_mode():
        values = {name: [float(a.planner.plan(z).value) for _ in range(20)] for name, a in
                  (("eager", eager), ("graphed", graphed))}
        assert graphed.planner.calls == 20 and graphed.planner.batches == 20  # the capture's own runs count nothing
        assert graphed.planner.inner.calls == 20
        z4 = _latents(eager, 4, seed=1)
        plan = graphed.planner.plan(z4)
    assert graphed.planner.calls == 24 and plan.actions.shape == (4, 3, ACT) and (plan.actions.abs() <= 1).all()
    mean = {k: float(np.mean(v)) for k, v in values.items()}
    stderr = float(np.sqrt(sum(np.var(v, ddof=1) / len(v) for v in values.values())))
    assert abs(mean["graphed"] - mean["eager"]) <= 4 * stderr + 1e-3, (mean, stderr)  # the same distribution
    assert len(set(values["graphed"])) > 10  # every replay draws fresh samples


@cuda
def test_the_warm_start_and_its_shift_reach_the_graph():
    """With one iteration and a tiny spread every sample is the warm start, so the plan is the previous mean moved
    by `shift` steps (zero past its end), eager and graphed alike."""
    agent = _agent("cuda", cuda_graph=True)
    s = dataclasses.replace(agent.planner.s, iterations=1, num_pi_trajs=0, max_std=1e-4, min_std=1e-4)
    graphed = agent.planner.with_settings(s)
    eager = graphed.inner
    z = _latents(agent, 2)
    prev = torch.tensor([0.5, -0.5, 0.25], device="cuda")[None, :, None].expand(2, 3, ACT).contiguous()
    want = torch.stack([torch.tensor([-0.5, 0.25, 0.0]), torch.tensor([0.0, 0.0, 0.0])]).to("cuda")
    with torch.inference_mode():
        for planner in (eager, graphed):
            for _ in range(2):  # the second graphed call replays the graph captured by the first
                plan = planner.plan(z, prev, shift=torch.tensor([1, 3]))
                assert torch.allclose(plan.actions[..., 0], want, atol=1e-2), plan.actions[..., 0]
        cold = graphed.plan(z, None)
    assert torch.allclose(cold.actions, torch.zeros_like(cold.actions), atol=1e-2)  # no warm start: zero mean


@cuda
def test_a_generator_given_to_the_plan_draws_its_numbers():
    """A background planner's own generator: reseeded, the replay repeats its plan; left alone, it moves on."""
    agent = _agent("cuda", cuda_graph=True)
    z = _latents(agent, 1)
    g = torch.Generator(device="cuda")
    with torch.inference_mode():
        agent.planner.plan(z, generator=g)  # captures (its warm-up runs draw from g too)
        g.manual_seed(7)
        first = agent.planner.plan(z, generator=g).actions
        g.manual_seed(7)
        again = agent.planner.plan(z, generator=g).actions
        later = agent.planner.plan(z, generator=g).actions
    assert torch.equal(first, again) and not torch.equal(first, later)
