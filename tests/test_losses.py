"""TD-MPC2 update: losses fall on a fixed batch, the loss weighting (rho^t, averaged over Q heads) matches a
manual recomputation, the running Q scale, and the episode replay buffer."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gym_qwen.platform.config_schema import TrainConfig
from gym_qwen.platform.tdmpc2.agent import TDMPC2Agent
from gym_qwen.platform.tdmpc2.buffer import Episode, EpisodeBuffer
from gym_qwen.platform.tdmpc2.scale import RunningScale

OBS_DIM, ACT_DIM = 4, 2


pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------- synthetic data
def _step(obs: np.ndarray, act: np.ndarray) -> np.ndarray:
    """Deterministic dynamics of the first three features (the fourth is set by the caller)."""
    return np.array([0.8 * obs[0] + 0.5 * act[0], 0.8 * obs[1] + 0.5 * act[1],
                     0.8 * obs[2] + 0.5 * act[0] * act[1], 0.0], np.float32)


def synthetic_episode(rng: np.random.Generator, length: int, episode_id: int) -> Episode:
    """Random actions, deterministic dynamics, reward tanh(next obs[0]) + a[1] (learnable from z, a)."""
    act = rng.uniform(-1, 1, size=(length, ACT_DIM)).astype(np.float32)
    obs = np.zeros((length + 1, OBS_DIM), np.float32)
    obs[0, :3] = rng.normal(size=3)
    for t in range(length):
        obs[t + 1] = _step(obs[t], act[t])
    reward = (np.tanh(obs[1:, 0]) + act[:, 1]).astype(np.float32)
    return Episode(obs, act, reward, np.zeros(length, bool), episode_id)


def falling_episode(rng: np.random.Generator, episode_id: int) -> Episode:
    """An episode of 3-6 steps that terminates by 'falling': only its last action pushes a[0] above 0.9, which
    sets the fall flag obs[3] = 2 in the final observation. Termination is thus predictable from (z, a)."""
    length = int(rng.integers(3, 7))
    act = rng.uniform(-1, 1, size=(length, ACT_DIM)).astype(np.float32)
    act[:, 0] = rng.uniform(-1, 0.5, size=length)
    act[-1, 0] = rng.uniform(0.9, 1.0)
    obs = np.zeros((length + 1, OBS_DIM), np.float32)
    obs[0, :3] = rng.normal(size=3)
    for t in range(length):
        obs[t + 1] = _step(obs[t], act[t])
        obs[t + 1, 3] = 2.0 if act[t, 0] > 0.9 else 0.0
    reward = (np.tanh(obs[1:, 0]) + act[:, 1]).astype(np.float32)
    terminated = np.zeros(length, bool)
    terminated[-1] = True
    return Episode(obs, act, reward, terminated, episode_id)


def fixed_batch(episodic: bool = False, batch_size: int = 64, horizon: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    buf = EpisodeBuffer(10_000, horizon, seed=seed)
    for e in range(16 if episodic else 6):
        buf.add(falling_episode(rng, e) if episodic else synthetic_episode(rng, 40, e))
    return buf.sample(batch_size)


def make_agent(episodic: bool = False, **kw) -> TDMPC2Agent:
    base = dict(latent_dim=32, enc_dim=32, mlp_dim=32, num_q=2, horizon=3, lr=3e-3, dropout=0.0, batch_size=64,
                num_samples=32, num_elites=4, num_pi_trajs=2, device="cpu")
    base.update(kw)
    return TDMPC2Agent(TrainConfig(**base), OBS_DIM, ACT_DIM, episode_length=500, episodic=episodic, device="cpu")


# --------------------------------------------------------------------------- learning on a fixed batch
def test_losses_fall_on_a_fixed_batch():
    """50 updates at lr 3e-3 on one batch. Observed ratios final/initial over 5 seeds: consistency 0.02-0.07,
    reward 0.34-0.38, value 0.34-0.38, total 0.24-0.27; pi_loss goes from ~0 to -0.18..-0.26 (the policy
    finds higher-Q actions)."""
    torch.manual_seed(0)
    agent = make_agent()
    batch = fixed_batch()
    hist = [agent.update(batch) for _ in range(50)]
    first, last = hist[0], hist[-1]
    for k in ("consistency_loss", "reward_loss", "value_loss", "pi_loss", "total_loss", "grad_norm"):
        assert all(math.isfinite(h[k]) for h in hist), k
    assert last["consistency_loss"] < 0.3 * first["consistency_loss"]
    assert last["reward_loss"] < 0.6 * first["reward_loss"]
    assert last["value_loss"] < 0.6 * first["value_loss"]
    assert last["total_loss"] < 0.7 * first["total_loss"]
    assert last["pi_loss"] < first["pi_loss"] - 0.05
    assert first["termination_loss"] == 0.0 and last["termination_loss"] == 0.0  # not episodic
    # the reward head now predicts the batch's rewards far better than the initial zero prediction
    b = {k: torch.as_tensor(v) for k, v in batch.items()}
    with torch.no_grad():
        z = agent.model.encode(b["obs"][0])
        pred = agent.model.two_hot.decode(agent.model.reward(z, b["action"][0]))
    err0 = (b["reward"][0]).pow(2).mean()
    assert (pred - b["reward"][0]).pow(2).mean() < 0.5 * err0


def test_termination_loss_falls_when_episodic():
    """Falling episodes (see falling_episode); ~8-16% of the sampled transitions terminate, so always
    predicting the base rate still costs its entropy H ~ 0.27-0.44 nats. The head first fits the base rate,
    then (observed over 6 seeds: by update 75 at the latest) learns *when* episodes end; observed loss after
    120 updates 0.01-0.03, i.e. 0.03-0.07 of the base-rate entropy."""
    torch.manual_seed(1)
    agent = make_agent(episodic=True)
    batch = fixed_batch(episodic=True)
    frac = float(batch["terminated"].mean())
    assert 0.05 < frac < 0.3
    hist = [agent.update(batch) for _ in range(120)]
    first, last = hist[0]["termination_loss"], hist[-1]["termination_loss"]
    assert first == pytest.approx(math.log(2), abs=0.05)  # uninformative logits at the start
    assert last < 0.2 * first
    baseline = -(frac * math.log(frac) + (1 - frac) * math.log(1 - frac))
    assert last < 0.3 * baseline  # it learned *when* episodes end, not just how often
    b = {k: torch.as_tensor(v) for k, v in batch.items()}
    with torch.no_grad():  # the head separates terminal from non-terminal predicted latents
        z = agent.model.encode(b["obs"][0])
        for t in range(3):
            z = agent.model.next(z, b["action"][t])
            accuracy = (agent.model.terminal(z) == b["terminated"][t]).float().mean()
            assert accuracy > 0.95  # observed 0.98-1.0
        # windows end only at their last step (t0 <= T - H), where 25-50% of them terminate: always-'no'
        # would score 0.5-0.75 there
        assert 0.2 < b["terminated"][2].mean() < 0.6 and b["terminated"][:2].sum() == 0


# --------------------------------------------------------------------------- loss weighting
@pytest.mark.parametrize("rho,horizon,num_q", [(0.5, 3, 2), (0.8, 4, 5)])
def test_initial_losses_show_rho_weights_and_head_average(rho, horizon, num_q):
    """Reward and Q heads start at zero logits, so every per-step cross-entropy is exactly log(num_bins); the
    reported losses are therefore log(num_bins) * sum_t rho^t / H (value: summed over heads, / (H * num_q))."""
    torch.manual_seed(2)
    agent = make_agent(rho=rho, horizon=horizon, num_q=num_q)
    assert torch.allclose(agent.rho, rho ** torch.arange(horizon + 1, dtype=torch.float32))
    out = agent.update(fixed_batch(horizon=horizon))
    expected = math.log(101) * sum(rho ** t for t in range(horizon)) / horizon
    assert out["reward_loss"] == pytest.approx(expected, rel=1e-5)
    assert out["value_loss"] == pytest.approx(expected, rel=1e-5)


def _manual_losses(agent: TDMPC2Agent, batch: dict, seed: int) -> dict:
    """TD-MPC2's losses written out step by step and head by head (same RNG draws as update())."""
    m, cfg, H = agent.model, agent.cfg, agent.cfg.horizon
    b = {k: torch.as_tensor(v) for k, v in batch.items()}
    obs, action, reward, terminated = b["obs"], b["action"], b["reward"], b["terminated"]
    torch.manual_seed(seed)
    with torch.no_grad():
        next_z = m.encode(obs[1:])
        next_a, _ = m.pi(next_z)  # draws the policy noise
        heads = torch.randperm(m.dims.num_q)[:2]  # the 2 random target heads of the TD target
        za = torch.cat([next_z, next_a], -1)
        target_q = torch.stack([m.two_hot.decode(m.target_qs(za)[h]) for h in heads]).min(0).values
        td = reward + agent.discount * (1 - terminated) * target_q
        z = m.encode(obs[0])
        consistency, reward_loss, value_loss, per_head = 0.0, 0.0, 0.0, []
        zs = [z]
        for t in range(H):
            z_next = m.next(z, action[t])
            consistency += cfg.rho ** t * ((z_next - next_z[t]) ** 2).mean()
            za_t = torch.cat([z, action[t]], -1)
            reward_loss += cfg.rho ** t * m.two_hot.cross_entropy(m.reward(z, action[t]), reward[t]).mean()
            logits = m.qs(za_t)  # (num_q, B, bins)
            for q in range(m.dims.num_q):
                ce = m.two_hot.cross_entropy(logits[q], td[t]).mean()
                per_head.append(ce)
                value_loss += cfg.rho ** t * ce
            z = z_next
            zs.append(z)
        out = {"consistency_loss": consistency / H, "reward_loss": reward_loss / H,
               "value_loss": value_loss / (H * m.dims.num_q), "per_head": torch.stack(per_head)}
        if m.termination_head is not None:
            logits = m.termination_logit(torch.stack(zs[1:]))
            out["termination_loss"] = F.binary_cross_entropy_with_logits(logits, terminated)
    return out


def test_update_losses_match_manual_recomputation():
    torch.manual_seed(3)
    agent = make_agent(episodic=True, num_q=4, rho=0.6)
    batch = fixed_batch(episodic=True)
    for _ in range(5):  # move away from the zero initialisation so heads and steps differ
        agent.update(batch)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # informative target values, so that the TD target's (1 - terminated) matters
        w = agent.model.target_qs.weights[-1]
        w.copy_(torch.randn(w.shape, generator=g) * 0.3)
    manual = _manual_losses(agent, batch, seed=123)
    assert manual["per_head"].std() > 1e-3  # the heads disagree, so averaging them is a real check
    torch.manual_seed(123)
    out = agent.update(batch)
    for k in ("consistency_loss", "reward_loss", "value_loss", "termination_loss"):
        assert out[k] == pytest.approx(float(manual[k]), rel=1e-4, abs=1e-7), k
    total = (20 * manual["consistency_loss"] + 0.1 * manual["reward_loss"] + 0.1 * manual["value_loss"]
             + 1.0 * manual["termination_loss"])
    assert out["total_loss"] == pytest.approx(float(total), rel=1e-4)
    # the unweighted alternatives differ, so the comparison above pins the weighting down
    assert abs(float(manual["per_head"].mean()) - out["value_loss"]) > 1e-3


def test_policy_loss_matches_manual_recomputation():
    """pi loss = -mean_t rho^t * mean_b (entropy_coef * scaled_entropy + Q / S), S updated from Q at t=0 first."""
    torch.manual_seed(5)
    agent = make_agent(num_q=3, rho=0.7, entropy_coef=0.01, tau=0.2)
    m = agent.model
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        m.qs.weights[-1].copy_(torch.randn(m.qs.weights[-1].shape, generator=g) * 0.5)
    agent.scale.value.fill_(5.0)
    batch = {k: torch.as_tensor(v) for k, v in fixed_batch().items()}
    with torch.no_grad():
        zs = [m.encode(batch["obs"][0])]
        for t in range(3):
            zs.append(m.next(zs[-1], batch["action"][t]))
        zs = torch.stack(zs)  # (H+1, B, L)
    m.train()
    torch.manual_seed(77)
    with torch.no_grad():
        action, info = m.pi(zs)
        q = m.Q(zs, action, reduce="avg")
        lo, hi = torch.quantile(q[0].flatten(), torch.tensor([0.05, 0.95]))
        spread = max(float(hi - lo), 1.0)
        scale = 5.0 + 0.2 * (spread - 5.0)
        per_t = (0.01 * info["scaled_entropy"] + q / scale).mean(dim=(1, 2))  # (H+1,)
        expected = -sum(0.7 ** t * per_t[t] for t in range(4)) / 4
    assert spread != pytest.approx(5.0, abs=0.5)  # the scale update matters
    torch.manual_seed(77)
    pi_loss, entropy = agent._update_policy(zs)
    m.eval()
    assert agent.scale.value.item() == pytest.approx(scale, rel=1e-5)
    assert pi_loss == pytest.approx(float(expected), rel=1e-4)
    assert entropy == pytest.approx(float(-info["log_prob"].mean()), rel=1e-4)


def test_update_moves_target_qs_by_polyak_after_the_step():
    torch.manual_seed(4)
    agent = make_agent(tau=0.05)
    batch = fixed_batch()
    m = agent.model
    target_before = [p.detach().clone() for p in m.target_qs.parameters()]
    online_before = [p.detach().clone() for p in m.qs.parameters()]
    policy_before = [p.detach().clone() for p in m.policy.parameters()]
    enc_before = [p.detach().clone() for p in m.encoder.parameters()]
    agent.update(batch)
    moved = False
    for tb, ob, t, o in zip(target_before, online_before, m.target_qs.parameters(), m.qs.parameters()):
        assert torch.allclose(t, tb + 0.05 * (o.detach() - tb), atol=1e-7)
        moved |= not torch.equal(o, ob)
    assert moved
    assert any(not torch.equal(a, b) for a, b in zip(policy_before, m.policy.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(enc_before, m.encoder.parameters()))
    assert not m.training and not m.target_qs.training  # update() leaves the model in eval mode
    assert all(p.grad is None for p in m.parameters())  # gradients are cleared after the steps


# --------------------------------------------------------------------------- running scale
def test_running_scale_starts_at_one_and_tracks_percentile_range():
    s = RunningScale(tau=0.01)
    assert s.value.item() == 1.0
    x = torch.arange(101, dtype=torch.float32)[:, None]  # 5th percentile 5, 95th 95
    s.update(x)
    assert s.value.item() == pytest.approx(1 + 0.01 * (90 - 1), rel=1e-6)
    for n in range(2, 301):
        s.update(x)
    assert s.value.item() == pytest.approx(90 - 89 * 0.99 ** 300, rel=1e-4)
    # forward divides by the scale
    assert torch.allclose(s(torch.tensor([[9.0]])), torch.tensor([[9.0]]) / s.value)
    # linear interpolation between order statistics: 0..10 -> 0.5 and 9.5
    s2 = RunningScale(tau=0.5)
    s2.update(torch.arange(11, dtype=torch.float32))
    assert s2.value.item() == pytest.approx(1 + 0.5 * (9.0 - 1), rel=1e-6)


def test_running_scale_never_below_one():
    s = RunningScale(tau=0.3)
    small = torch.rand(256, 1) * 0.5  # spread < 1 is clamped to 1
    for _ in range(10):
        s.update(small)
        assert s.value.item() == pytest.approx(1.0)
    s.update(torch.linspace(0, 30, 256)[:, None])
    high = s.value.item()
    assert high > 5
    for _ in range(60):
        s.update(small)
        assert s.value.item() >= 1.0
    assert s.value.item() < 1.001 and s.value.item() < high


def test_running_scale_state_round_trip():
    s = RunningScale(tau=0.1)
    s.update(torch.linspace(-50, 50, 100)[:, None])
    t = RunningScale(tau=0.1)
    t.load_state_dict(copy.deepcopy(s.state_dict()))
    assert t.value.item() == pytest.approx(s.value.item()) and t.value.item() > 1


# --------------------------------------------------------------------------- replay buffer
def tagged_episode(episode_id: int, length: int, terminal: bool = False) -> Episode:
    """obs = (episode_id, t, ...), action = (episode_id, t), reward = 1000 * episode_id + t."""
    t = np.arange(length + 1, dtype=np.float32)
    obs = np.stack([np.full_like(t, episode_id), t, t * 2, -t], 1)
    action = np.stack([np.full(length, episode_id, np.float32), t[:-1]], 1)
    reward = (1000 * episode_id + t[:-1]).astype(np.float32)
    terminated = np.zeros(length, bool)
    terminated[-1] = terminal
    return Episode(obs, action, reward, terminated, episode_id)


def test_buffer_sample_shapes_and_dtypes():
    buf = EpisodeBuffer(1000, horizon=3, seed=0)
    with pytest.raises(RuntimeError):
        buf.sample(4)
    buf.add(tagged_episode(0, 10))
    buf.add(tagged_episode(1, 7, terminal=True))
    s = buf.sample(16)
    assert s["obs"].shape == (4, 16, OBS_DIM)
    assert s["action"].shape == (3, 16, ACT_DIM)
    assert s["reward"].shape == (3, 16, 1)
    assert s["terminated"].shape == (3, 16, 1)
    assert s["terminated"].dtype == np.float32 and s["obs"].dtype == np.float32
    assert buf.num_transitions == 17
    assert buf.num_samples_available == (10 - 3 + 1) + (7 - 3 + 1)


def test_buffer_samples_never_cross_episode_boundaries():
    H = 3
    buf = EpisodeBuffer(10_000, horizon=H, seed=1)
    lengths = {0: 8, 1: 3, 2: 2, 3: 12, 4: 5}  # episode 2 is shorter than the horizon: never sampled
    for eid, n in lengths.items():
        buf.add(tagged_episode(eid, n, terminal=eid % 2 == 1))
    seen = set()
    for _ in range(20):
        s = buf.sample(128)
        obs, act, rew, term = s["obs"], s["action"], s["reward"], s["terminated"]
        eid = obs[0, :, 0]
        t0 = obs[0, :, 1]
        assert (obs[:, :, 0] == eid).all()  # same episode all along
        assert (obs[:, :, 1] == t0 + np.arange(H + 1)[:, None]).all()  # consecutive steps
        assert (act[:, :, 0] == eid).all() and (act[:, :, 1] == obs[:-1, :, 1]).all()  # a_t pairs with o_t
        assert (rew[..., 0] == 1000 * eid + obs[:-1, :, 1]).all()
        n = np.vectorize(lengths.get)(eid.astype(int))
        assert (t0 + H <= n).all()  # the last obs exists
        expect_term = ((obs[1:, :, 1] == n) & (eid % 2 == 1)).astype(np.float32)
        assert (term[..., 0] == expect_term).all()
        seen |= set(zip(eid.astype(int).tolist(), t0.astype(int).tolist()))
    valid = {(e, t) for e, n in lengths.items() for t in range(n - H + 1)}
    assert seen == valid  # every valid start (including the last one, t = T - H) and nothing else


def test_buffer_capacity_evicts_oldest_episodes():
    buf = EpisodeBuffer(100, horizon=3, seed=2)
    for eid in range(3):
        buf.add(tagged_episode(eid, 30))
    assert [e.episode_id for e in buf.episodes] == [0, 1, 2]
    buf.add(tagged_episode(3, 30))  # 120 > 100: the oldest goes
    assert [e.episode_id for e in buf.episodes] == [1, 2, 3]
    assert buf.num_transitions == 90
    buf.add(tagged_episode(4, 50))  # 140 -> drop 1 (110) -> drop 2 (80)
    assert [e.episode_id for e in buf.episodes] == [3, 4]
    assert buf.num_transitions <= 100
    ids = set(buf.sample(512)["obs"][0, :, 0].astype(int).tolist())
    assert ids == {3, 4}
    # a single episode longer than the capacity is still kept (nothing else to learn from)
    buf.add(tagged_episode(5, 150))
    assert [e.episode_id for e in buf.episodes] == [5]


def test_buffer_state_round_trip_reproduces_samples():
    buf = EpisodeBuffer(500, horizon=3, seed=3)
    for eid in range(6):
        buf.add(tagged_episode(eid, 20 + eid, terminal=eid == 2))
    buf.sample(10)  # advance the generator
    state = pickle.loads(pickle.dumps(buf.state()))  # as a checkpoint would store it
    other = EpisodeBuffer(1, horizon=1, seed=99)
    other.load_state(state)
    assert other.capacity == 500 and other.horizon == 3
    assert other.num_transitions == buf.num_transitions
    for _ in range(3):
        a, b = buf.sample(32), other.sample(32)
        for k in a:
            assert np.array_equal(a[k], b[k]), k
    # and both continue identically after new data
    buf.add(tagged_episode(10, 25))
    other.add(tagged_episode(10, 25))
    a, b = buf.sample(64), other.sample(64)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    # episodes keep their types
    assert other.episodes[2].terminated.dtype == bool and other.episodes[2].terminated[-1]


def test_buffer_load_empty_state_clears_old_data():
    buf = EpisodeBuffer(500, horizon=3, seed=4)
    buf.add(tagged_episode(0, 20))
    buf.load_state(EpisodeBuffer(500, horizon=3, seed=4).state())
    assert buf.episodes == []
    assert buf.num_samples_available == 0
    with pytest.raises(RuntimeError):
        buf.sample(4)
