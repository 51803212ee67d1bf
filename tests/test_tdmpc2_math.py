"""TD-MPC2 maths and world-model structure: symlog, two-hot, SimNorm, Mish, squashed Gaussian, discount,
parameter counts, zero-initialised heads, the stacked Q ensemble and the target network."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from gym_qwen.platform.config_schema import MODEL_SIZES, TrainConfig
from gym_qwen.platform.tdmpc2.functional import (
    TwoHot,
    discount_for,
    mish,
    simnorm,
    squashed_gaussian,
    symexp,
    symlog,
)
from gym_qwen.platform.tdmpc2.layers import QEnsemble
from gym_qwen.platform.tdmpc2.world_model import ModelDims, WorldModel


pytestmark = pytest.mark.usefixtures("single_thread")


def small_dims(**kw) -> ModelDims:
    base = dict(obs_dim=7, action_dim=3, latent_dim=32, enc_dim=32, mlp_dim=32, num_enc_layers=2, num_q=5,
                num_bins=101, simnorm_dim=8, dropout=0.0, episodic=False)
    base.update(kw)
    return ModelDims(**base)


# --------------------------------------------------------------------------- symlog / symexp
def test_symlog_symexp_are_inverses_including_large_and_negative():
    torch.manual_seed(0)
    x = torch.cat([torch.tensor([0.0, 1e-6, -1e-6, 1.0, -1.0, 123.456, -987.5, 1e6, -1e6, 3e7, -3e7]),
                   torch.randn(1000) * 50]).double()
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-10, atol=1e-12)
    y = torch.linspace(-15, 15, 301).double()
    assert torch.allclose(symlog(symexp(y)), y, rtol=1e-10, atol=1e-12)
    # concrete values: symlog(x) = sign(x) log(1+|x|), odd, monotone
    assert symlog(torch.tensor([math.e - 1])).item() == pytest.approx(1.0, abs=1e-6)
    assert symlog(torch.tensor([-(math.e ** 2 - 1)])).item() == pytest.approx(-2.0, abs=1e-5)
    assert torch.equal(symlog(-x), -symlog(x))
    xs = torch.sort(x).values
    assert (symlog(xs)[1:] >= symlog(xs)[:-1]).all()
    # float32 also round-trips with relative precision
    x32 = torch.tensor([-5000.0, -3.5, 0.25, 42.0, 5000.0])
    assert torch.allclose(symexp(symlog(x32)), x32, rtol=1e-5)


# --------------------------------------------------------------------------- two-hot
@pytest.fixture
def two_hot():
    return TwoHot(101, -10.0, 10.0)


def test_two_hot_encode_is_a_valid_two_hot(two_hot):
    torch.manual_seed(0)
    x = torch.cat([torch.randn(500, 1) * 30, torch.tensor([[0.0], [1e9], [-1e9], [math.expm1(10.0)],
                                                            [-math.expm1(10.0)], [math.expm1(0.2)]])])
    enc = two_hot.encode(x)
    assert enc.shape == (x.shape[0], 101)
    assert (enc >= 0).all()
    assert torch.allclose(enc.sum(-1), torch.ones(x.shape[0]), atol=1e-5)
    for row in enc:
        nz = torch.nonzero(row > 1e-7).flatten()
        assert 1 <= len(nz) <= 2
        if len(nz) == 2:
            assert nz[1] - nz[0] == 1
    # the expectation over bins equals symlog(x) (clamped to the support)
    bins = torch.linspace(-10, 10, 101)
    assert torch.allclose(enc @ bins, symlog(x).clamp(-10, 10).squeeze(-1), atol=1e-4)
    # 0 sits exactly on the middle bin; symexp(0.2) exactly on the bin after it
    assert enc[-6, 50].item() == pytest.approx(1.0, abs=1e-5)
    assert enc[-1, 51].item() == pytest.approx(1.0, abs=1e-4)


def test_two_hot_encode_leading_dims(two_hot):
    x = torch.tensor([[[1.0], [-2.0]], [[0.5], [100.0]]])  # (2, 2, 1)
    enc = two_hot.encode(x)
    assert enc.shape == (2, 2, 101)
    assert torch.allclose(enc.sum(-1), torch.ones(2, 2))
    assert torch.allclose(enc.reshape(4, 101), two_hot.encode(x.reshape(4, 1)))


def test_two_hot_decode_of_log_encode_recovers_value(two_hot):
    torch.manual_seed(1)
    lim = math.expm1(10.0)
    x = torch.cat([torch.linspace(-lim, lim, 41), torch.randn(200) * 20, symexp(torch.rand(200) * 20 - 10)])
    x = x.double()[:, None]
    logits = torch.log(two_hot.encode(x).clamp_min(1e-12))
    dec = two_hot.decode(logits)
    assert dec.shape == x.shape
    # compare in symlog space (uniform precision); the 1e-12 floor leaks ~1e-10 of mass to each other bin
    assert torch.allclose(symlog(dec), symlog(x), atol=1e-6)
    assert torch.allclose(dec[x.abs() < 100], x[x.abs() < 100], rtol=1e-5, atol=1e-5)


def test_two_hot_clamps_beyond_range(two_hot):
    lim = math.expm1(10.0)
    x = torch.tensor([[lim * 3], [1e12], [-lim * 3], [-1e12]])
    enc = two_hot.encode(x)
    assert enc[0, -1] == pytest.approx(1.0) and enc[1, -1] == pytest.approx(1.0)
    assert enc[2, 0] == pytest.approx(1.0) and enc[3, 0] == pytest.approx(1.0)
    dec = two_hot.decode(torch.log(enc.double().clamp_min(1e-12)))
    assert dec[:2].squeeze(-1) == pytest.approx([lim, lim], rel=1e-6)
    assert dec[2:].squeeze(-1) == pytest.approx([-lim, -lim], rel=1e-6)
    # decode can never leave the support either
    extreme = torch.zeros(1, 101)
    extreme[0, -1] = 1e4
    assert two_hot.decode(extreme).item() == pytest.approx(lim, rel=1e-5)


def test_two_hot_decode_of_uniform_logits_is_zero(two_hot):
    assert two_hot.decode(torch.zeros(3, 101)).abs().max().item() < 1e-4


def test_cross_entropy_is_minimal_at_the_target(two_hot):
    torch.manual_seed(2)
    target = torch.tensor([[3.7], [-0.4], [250.0]])
    best = torch.log(two_hot.encode(target).clamp_min(1e-12))
    ce_best = two_hot.cross_entropy(best, target)
    assert ce_best.shape == (3, 1)
    # at the optimum the cross-entropy equals the entropy of the two-hot target
    p = two_hot.encode(target)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1, keepdim=True)
    assert torch.allclose(ce_best, entropy, atol=1e-5)
    for _ in range(20):
        other = best + torch.randn_like(best) * 0.5
        assert (two_hot.cross_entropy(other, target) > ce_best - 1e-6).all()
    # logits for another value are worse
    shifted = symexp(symlog(target) + 0.5)
    assert (two_hot.cross_entropy(torch.log(two_hot.encode(shifted).clamp_min(1e-12)), target) > ce_best + 1).all()
    # the cross-entropy is convex in the logits and its gradient (softmax - two-hot) vanishes at the target
    logits = best.clone().requires_grad_(True)
    two_hot.cross_entropy(logits, target).sum().backward()
    assert logits.grad.abs().max() < 1e-6
    logits = torch.randn(3, 101, requires_grad=True)
    two_hot.cross_entropy(logits, target).sum().backward()
    assert torch.allclose(logits.grad, F.softmax(logits.detach(), -1) - two_hot.encode(target), atol=1e-6)


# --------------------------------------------------------------------------- SimNorm
def _check_simplex(z: torch.Tensor, group: int):
    g = z.reshape(*z.shape[:-1], -1, group)
    assert (z >= 0).all()
    assert torch.allclose(g.sum(-1), torch.ones(g.shape[:-1]), atol=1e-5)


def test_simnorm_groups_sum_to_one():
    torch.manual_seed(3)
    x = torch.randn(4, 5, 32) * 10
    for group in (4, 8, 16):
        out = simnorm(x, group)
        assert out.shape == x.shape
        _check_simplex(out, group)
        # each group is the softmax of that group alone
        assert torch.allclose(out[..., group:2 * group], F.softmax(x[..., group:2 * group], -1), atol=1e-6)


def test_world_model_latents_are_simnorm():
    torch.manual_seed(4)
    wm = WorldModel(small_dims(latent_dim=48, simnorm_dim=8))
    obs = torch.randn(16, 7) * 5
    z = wm.encode(obs)
    assert z.shape == (16, 48)
    _check_simplex(z, 8)
    a = torch.rand(16, 3) * 2 - 1
    z2 = wm.next(z, a)
    _check_simplex(z2, 8)
    r, z3 = wm.step(z, a)
    assert r.shape == (16, 1)
    _check_simplex(z3, 8)
    # groups are not uniform (LayerNorm before the softmax keeps them informative)
    assert z.std() > 0.01


# --------------------------------------------------------------------------- Mish
def test_mish_matches_torch_values_and_gradients():
    x = torch.cat([torch.linspace(-30, 30, 6001), torch.tensor([-30.0, -25.0, -20.0, -19.99, 19.99, 20.0, 20.01,
                                                                 25.0, 30.0, 0.0, -1e-7, 1e-7])])
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    y1, y2 = mish(x1), F.mish(x2)
    assert torch.allclose(y1, y2, atol=1e-5, rtol=1e-5)
    y1.sum().backward()
    y2.sum().backward()
    assert torch.isfinite(x1.grad).all()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5, rtol=1e-5)
    # beyond the range too: no inf/nan, identity for large x, ~0 for very negative x
    big = torch.tensor([-1000.0, -100.0, 50.0, 1000.0], requires_grad=True)
    out = mish(big)
    assert torch.allclose(out, F.mish(big.detach()), atol=1e-5)
    out.sum().backward()
    assert torch.allclose(big.grad, torch.tensor([0.0, 0.0, 1.0, 1.0]), atol=1e-5)
    # double precision agrees too
    xd = torch.linspace(-30, 30, 601, dtype=torch.float64)
    assert torch.allclose(mish(xd), F.mish(xd), atol=1e-9)


# --------------------------------------------------------------------------- discount
def test_discount_heuristic():
    assert discount_for(500) == pytest.approx(0.99, abs=1e-12)
    assert discount_for(1000) == pytest.approx(0.995, abs=1e-12)
    assert discount_for(100) == pytest.approx(0.95, abs=1e-12)  # (20-1)/20 exactly at the floor
    assert discount_for(200) == pytest.approx(0.975, abs=1e-12)
    for short in (1, 5, 10, 50, 99):
        assert discount_for(short) == pytest.approx(0.95)
    assert discount_for(10_000) == pytest.approx(0.995)
    lengths = [50, 100, 150, 300, 500, 800, 1000, 5000]
    values = [discount_for(n) for n in lengths]
    assert values == sorted(values)


# --------------------------------------------------------------------------- squashed Gaussian
def test_squashed_gaussian_range_and_log_std_mapping():
    torch.manual_seed(5)
    mean = torch.randn(2000, 4, dtype=torch.float64) * 2
    raw = torch.randn(2000, 4, dtype=torch.float64) * 3
    raw[:4] = torch.tensor([-1e4, 1e4, 0.0, -50.0])
    eps = torch.randn(2000, 4, dtype=torch.float64)
    action, smean, log_prob, ent = squashed_gaussian(mean, raw, -10.0, 2.0, eps)
    assert action.shape == (2000, 4) and log_prob.shape == (2000, 1) and ent.shape == (2000, 1)
    assert (action.abs() <= 1).all() and (smean.abs() <= 1).all()
    assert torch.allclose(smean, torch.tanh(mean))
    # the action is tanh(mean + eps * std), std = exp(log_std) with log_std in [-10, 2]
    std = torch.atanh(action).sub(mean).div(eps)
    ok = (action.abs() < 0.999) & (eps.abs() > 0.1)
    assert ok.sum() > 1000
    log_std = std[ok].log()
    assert log_std.min() >= -10 - 1e-3 and log_std.max() <= 2 + 1e-3
    assert log_std.min() < -9 and log_std.max() > 1  # the whole range is used
    expected = -10.0 + 6.0 * (torch.tanh(raw) + 1.0)
    assert torch.allclose(log_std, expected[ok], atol=1e-3)
    # explicit mapping: raw -> -inf gives log_std_min, +inf gives log_std_max, 0 the midpoint
    eps1 = torch.ones(1, 4, dtype=torch.float64)
    zero = torch.zeros(1, 4, dtype=torch.float64)
    for raw_v, expect in ((-1e4, -10.0), (1e4, 2.0), (0.0, -4.0)):
        a, _, lp, _ = squashed_gaussian(zero, torch.full((1, 4), raw_v, dtype=torch.float64), -10.0, 2.0, eps1)
        assert a[0, 0].item() == pytest.approx(math.tanh(math.exp(expect)), rel=1e-5, abs=1e-6)
        gauss = (-0.5 - expect - 0.5 * math.log(2 * math.pi)) * 4
        squash = 4 * math.log(max(1 - math.tanh(math.exp(expect)) ** 2, 0.0) + 1e-6)
        assert lp.item() == pytest.approx(gauss - squash, rel=1e-4, abs=1e-3)
    # without eps it samples; samples vary and stay in range
    a1, *_ = squashed_gaussian(zero.expand(500, 4), torch.zeros(500, 4), -10.0, 2.0)
    assert (a1.abs() < 1).all() and a1.std() > 0.005


def test_scaled_entropy_is_gaussian_log_prob_times_action_dim():
    torch.manual_seed(6)
    mean, raw, eps = torch.randn(50, 3), torch.randn(50, 3), torch.randn(50, 3)
    _, _, log_prob, ent = squashed_gaussian(mean, raw, -10.0, 2.0, eps)
    log_std = -10 + 0.5 * 12 * (torch.tanh(raw) + 1)
    gauss = (-0.5 * eps ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
    assert torch.allclose(ent, -gauss * 3, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- world model
def _normed(i: int, o: int) -> int:
    return i * o + o + 2 * o  # Linear + LayerNorm


def _expected_counts(obs: int, act: int, latent_dim: int, enc_dim: int, mlp_dim: int, num_enc_layers: int,
                     num_q: int, bins: int = 101) -> dict[str, int]:
    latent = latent_dim
    za = latent + act
    enc_hidden = max(num_enc_layers - 1, 1) * [enc_dim]
    dims = [obs, *enc_hidden]
    encoder = sum(_normed(dims[i], dims[i + 1]) for i in range(len(enc_hidden))) + _normed(dims[-1], latent)
    two = lambda i, o: _normed(i, mlp_dim) + _normed(mlp_dim, mlp_dim)  # noqa: E731
    dynamics = two(za, latent) + _normed(mlp_dim, latent)
    reward = two(za, bins) + mlp_dim * bins + bins
    policy = two(latent, 2 * act) + mlp_dim * 2 * act + 2 * act
    q = num_q * (two(za, bins) + mlp_dim * bins + bins)
    return {"encoder": encoder, "dynamics": dynamics, "reward": reward, "policy": policy, "q_ensemble": q,
            "total": encoder + dynamics + reward + policy + q}


@pytest.mark.parametrize("size,total", [(1, 1_212_859), (5, 4_958_826)])
def test_parameter_counts_cheetah_run(size, total):
    torch.manual_seed(0)
    wm = WorldModel(ModelDims(obs_dim=17, action_dim=6, **MODEL_SIZES[size]))
    counts = wm.parameter_counts()
    assert counts["total"] == total
    assert counts == _expected_counts(17, 6, **MODEL_SIZES[size])
    trainable = sum(p.numel() for p in wm.parameters() if p.requires_grad)
    assert trainable == total  # target Qs are the only other parameters, and they are frozen
    assert sum(p.numel() for p in wm.target_qs.parameters()) == counts["q_ensemble"]


def test_parameter_counts_follow_train_config_arch():
    cfg = TrainConfig(model_size=5, latent_dim=64)
    arch = cfg.arch()
    assert arch == {**MODEL_SIZES[5], "latent_dim": 64}
    wm = WorldModel(ModelDims(obs_dim=17, action_dim=6, **arch))
    assert wm.parameter_counts()["total"] == _expected_counts(17, 6, **arch)["total"]


def test_reward_and_q_heads_start_at_zero():
    torch.manual_seed(7)
    wm = WorldModel(small_dims())
    assert torch.count_nonzero(wm.reward_head[-1].weight) == 0
    assert torch.count_nonzero(wm.reward_head[-1].bias) == 0
    assert torch.count_nonzero(wm.qs.weights[-1]) == 0
    assert torch.count_nonzero(wm.target_qs.weights[-1]) == 0
    # the other layers are initialised (std ~0.02), not zero
    assert 0.01 < wm.qs.weights[0].std() < 0.03
    assert 0.01 < wm.reward_head[0].weight.std() < 0.03
    z = wm.encode(torch.randn(10, 7))
    a = torch.rand(10, 3) * 2 - 1
    assert torch.allclose(wm.two_hot.decode(wm.reward(z, a)), torch.zeros(10, 1), atol=1e-5)
    for reduce in ("min", "avg"):
        assert torch.allclose(wm.Q(z, a, reduce=reduce), torch.zeros(10, 1), atol=1e-5)
        assert torch.allclose(wm.Q(z, a, reduce=reduce, target=True), torch.zeros(10, 1), atol=1e-5)
    logits = wm.Q(z, a, reduce="all")
    assert logits.shape == (5, 10, 101)
    assert torch.allclose(logits, torch.zeros_like(logits))


def _randomise(module: torch.nn.Module, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_q_ensemble_heads_match_rows_of_all_heads():
    torch.manual_seed(8)
    q = QEnsemble(5, 12, 16, 21, dropout=0.0)
    _randomise(q, 0)
    x = torch.randn(3, 4, 12)
    full = q(x)
    assert full.shape == (5, 3, 4, 21)
    for heads in (torch.tensor([1, 3]), torch.tensor([4, 0]), torch.tensor([2]), torch.arange(5)):
        sub = q(x, heads=heads)
        assert sub.shape == (len(heads), 3, 4, 21)
        assert torch.allclose(sub, full[heads], atol=1e-6)
    # heads differ from each other (the test would be vacuous otherwise)
    assert (full[0] - full[1]).abs().max() > 1e-2
    # each head is an independent MLP: recompute head 2 by hand
    h = x
    for i in range(3):
        h = h @ q.weights[i][2] + q.biases[i][2, 0]
        if i < 2:
            h = mish(F.layer_norm(h, (16,)) * q.ln_weights[i][2, 0] + q.ln_biases[i][2, 0])
    assert torch.allclose(h, full[2], atol=1e-5)


def test_q_ensemble_detach_blocks_parameter_gradients_only():
    torch.manual_seed(9)
    q = QEnsemble(4, 6, 8, 11, dropout=0.0)
    _randomise(q, 1)
    x = torch.randn(5, 6, requires_grad=True)
    out = q(x, heads=torch.tensor([0, 2]), detach=True)
    out.pow(2).sum().backward()
    assert all(p.grad is None for p in q.parameters())
    assert x.grad is not None and x.grad.abs().sum() > 0
    # without detach both get gradients, and only the selected heads receive non-zero ones
    x.grad = None
    out = q(x, heads=torch.tensor([0, 2]))
    out.pow(2).sum().backward()
    assert x.grad.abs().sum() > 0
    g = q.weights[0].grad
    assert g[0].abs().sum() > 0 and g[2].abs().sum() > 0
    assert g[1].abs().sum() == 0 and g[3].abs().sum() == 0
    # and detach gives the same values
    assert torch.allclose(q(x, detach=True), q(x))


def test_world_model_q_detach_passes_gradient_to_action():
    torch.manual_seed(10)
    wm = WorldModel(small_dims())
    _randomise(wm.qs, 2)
    z = wm.encode(torch.randn(8, 7)).detach()
    a = torch.zeros(8, 3, requires_grad=True)
    wm.Q(z, a, reduce="avg", detach=True).sum().backward()
    assert all(p.grad is None for p in wm.qs.parameters())
    assert a.grad.abs().sum() > 0


def test_q_reductions_use_two_random_heads():
    """Q(min)/Q(avg)/q_value decode 2 heads drawn by randperm: min for the TD target, mean for planning."""
    torch.manual_seed(13)
    wm = WorldModel(small_dims(num_q=5))
    _randomise(wm.qs, 4)
    z = wm.encode(torch.randn(6, 7)).detach()
    a = torch.rand(6, 3) * 2 - 1
    with torch.no_grad():
        all_values = wm.two_hot.decode(wm.qs(torch.cat([z, a], -1)))  # (5, 6, 1)
        assert all_values.std(0).mean() > 1e-2  # heads disagree
        for seed in range(4):
            torch.manual_seed(seed)
            heads = torch.randperm(5)[:2]
            torch.manual_seed(seed)
            assert torch.allclose(wm.Q(z, a, reduce="min"), all_values[heads].min(0).values, atol=1e-5)
            torch.manual_seed(seed)
            assert torch.allclose(wm.Q(z, a, reduce="avg"), all_values[heads].mean(0), atol=1e-5)
            torch.manual_seed(seed)
            assert torch.allclose(wm.q_value(z, a), all_values[heads].mean(0), atol=1e-5)


def test_target_qs_frozen_and_soft_update_is_lerp():
    torch.manual_seed(11)
    wm = WorldModel(small_dims())
    assert all(not p.requires_grad for p in wm.target_qs.parameters())
    assert all(p.requires_grad for p in wm.qs.parameters())
    # target starts as an exact copy, in separate storage
    for p, t in zip(wm.qs.parameters(), wm.target_qs.parameters()):
        assert torch.equal(p, t) and p.data_ptr() != t.data_ptr()
    _randomise(wm.qs, 3)
    before = [t.detach().clone() for t in wm.target_qs.parameters()]
    online = [p.detach().clone() for p in wm.qs.parameters()]
    tau = 0.2
    wm.soft_update_target(tau)
    for b, o, t in zip(before, online, wm.target_qs.parameters()):
        assert torch.allclose(t, b + tau * (o - b), atol=1e-6)
        assert not torch.allclose(t, b)
    for o, p in zip(online, wm.qs.parameters()):
        assert torch.equal(o, p)  # online untouched
    # train() never puts the target ensemble in training mode
    wm.train()
    assert wm.qs.training and not wm.target_qs.training
    wm.eval()


def test_termination_head_only_when_episodic():
    torch.manual_seed(12)
    plain = WorldModel(small_dims(episodic=False))
    assert plain.termination_head is None
    assert "termination" not in plain.parameter_counts()
    z = plain.encode(torch.randn(4, 7))
    assert plain.terminal(z) is None
    epi = WorldModel(small_dims(episodic=True))
    assert epi.termination_head is not None
    counts = epi.parameter_counts()
    assert counts["termination"] == _normed(32, 32) * 2 + 32 + 1
    assert counts["total"] == plain.parameter_counts()["total"] + counts["termination"]
    z = epi.encode(torch.randn(4, 7))
    term = epi.terminal(z)
    assert term.shape == (4, 1) and term.dtype == torch.float32
    assert torch.equal(term, (epi.termination_logit(z) > 0).float())
