"""The minimal reference's mathematics, written plainly (separate q, k, v layers; a materialised T x T attention
matrix masked with -inf; nn.Dropout; every head computed at every token): what the tests check the fast model
against, weight for weight, and what benchmarks/bench_dt.py times it against. Not used for training."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import DecisionTransformer


class RefAttention(nn.Module):
    def __init__(self, h: int, max_t: int, n_heads: int, p: float):
        super().__init__()
        self.n_heads = n_heads
        self.q_net, self.k_net, self.v_net = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.proj_net = nn.Linear(h, h)
        self.att_drop, self.proj_drop = nn.Dropout(p), nn.Dropout(p)
        self.register_buffer("mask", torch.tril(torch.ones(max_t, max_t)).view(1, 1, max_t, max_t))

    def forward(self, x):
        B, T, C = x.shape
        N, D = self.n_heads, C // self.n_heads
        q = self.q_net(x).view(B, T, N, D).transpose(1, 2)
        k = self.k_net(x).view(B, T, N, D).transpose(1, 2)
        v = self.v_net(x).view(B, T, N, D).transpose(1, 2)
        w = q @ k.transpose(2, 3) / math.sqrt(D)
        w = w.masked_fill(self.mask[..., :T, :T] == 0, float("-inf"))
        att = self.att_drop(F.softmax(w, dim=-1) @ v)
        att = att.transpose(1, 2).contiguous().view(B, T, N * D)
        return self.proj_drop(self.proj_net(att))


class RefBlock(nn.Module):
    def __init__(self, h: int, max_t: int, n_heads: int, p: float):
        super().__init__()
        self.attention = RefAttention(h, max_t, n_heads, p)
        self.mlp = nn.Sequential(nn.Linear(h, 4 * h), nn.GELU(), nn.Linear(4 * h, h), nn.Dropout(p))
        self.ln1, self.ln2 = nn.LayerNorm(h), nn.LayerNorm(h)

    def forward(self, x):
        x = self.ln1(x + self.attention(x))
        return self.ln2(x + self.mlp(x))


class ReferenceDT(nn.Module):
    def __init__(self, state_dim, act_dim, n_blocks, h_dim, context_len, n_heads, drop_p, max_timestep=4096):
        super().__init__()
        self.h_dim = h_dim
        self.transformer = nn.Sequential(*[RefBlock(h_dim, 3 * context_len, n_heads, drop_p)
                                           for _ in range(n_blocks)])
        self.embed_ln = nn.LayerNorm(h_dim)
        self.embed_timestep = nn.Embedding(max_timestep, h_dim)
        self.embed_rtg = nn.Linear(1, h_dim)
        self.embed_state = nn.Linear(state_dim, h_dim)
        self.embed_action = nn.Linear(act_dim, h_dim)
        self.predict_rtg = nn.Linear(h_dim, 1)
        self.predict_state = nn.Linear(h_dim, state_dim)
        self.predict_action = nn.Sequential(nn.Linear(h_dim, act_dim), nn.Tanh())

    def forward(self, timesteps, states, actions, returns_to_go):
        B, T, _ = states.shape
        time = self.embed_timestep(timesteps)
        s = self.embed_state(states) + time
        a = self.embed_action(actions) + time
        r = self.embed_rtg(returns_to_go) + time
        h = torch.stack((r, s, a), dim=1).permute(0, 2, 1, 3).reshape(B, 3 * T, self.h_dim)
        h = self.transformer(self.embed_ln(h))
        h = h.reshape(B, T, 3, self.h_dim).permute(0, 2, 1, 3)
        return self.predict_state(h[:, 2]), self.predict_action(h[:, 1]), self.predict_rtg(h[:, 2])


def reference_from(model: DecisionTransformer) -> ReferenceDT:
    """A ReferenceDT holding exactly `model`'s weights (the fused qkv split into q, k, v)."""
    d = model.dims
    ref = ReferenceDT(d.state_dim, d.act_dim, d.n_blocks, d.h_dim, d.context_len, d.n_heads, d.drop_p, d.max_timestep)
    h = d.h_dim
    with torch.no_grad():
        for mine, theirs in zip(model.blocks, ref.transformer):
            for i, lin in enumerate((theirs.attention.q_net, theirs.attention.k_net, theirs.attention.v_net)):
                lin.weight.copy_(mine.qkv.weight[i * h:(i + 1) * h])
                lin.bias.copy_(mine.qkv.bias[i * h:(i + 1) * h])
            theirs.attention.proj_net.load_state_dict(mine.proj.state_dict())
            theirs.mlp[0].load_state_dict(mine.fc1.state_dict())
            theirs.mlp[2].load_state_dict(mine.fc2.state_dict())
            theirs.ln1.load_state_dict(mine.ln1.state_dict())
            theirs.ln2.load_state_dict(mine.ln2.state_dict())
        for name in ("embed_ln", "embed_timestep", "embed_rtg", "embed_state", "embed_action"):
            getattr(ref, name).load_state_dict(getattr(model, name).state_dict())
        ref.predict_action[0].load_state_dict(model.predict_action.state_dict())
    return ref
