"""The Decision Transformer (Chen et al. 2021) as min-decision-transformer builds it, written for speed.

The mathematics are the minimal reference's: for each timestep t the tokens (R_t, s_t, a_t), each a linear
embedding plus a learned embedding of the episode timestep t, interleaved into a sequence of 3K tokens, a
LayerNorm, then `n_blocks` post-LayerNorm GPT blocks (x = LN(x + Attn(x)); x = LN(x + MLP(x))) with causal
self-attention (dropout on the attention output and after its projection), an MLP of width 4h with exact GELU
and dropout, and a tanh action head read at the state tokens (a_t is predicted from R_<=t, s_<=t, a_<t).

What makes it fast (same outputs, less work): q, k and v come from one fused linear layer and attention is
`scaled_dot_product_attention` with a causal mask (no T x T weight matrix is materialised); only the action
head runs, and the last block computes its attention queries, projection, MLP and LayerNorms only at the
state tokens (the loss reads nothing else); dropout draws one 32-bit random number per two elements (16-bit
thresholds: p is rounded to a multiple of 1/65536, 0.1 -> 0.1000061), since on a CPU drawing the random numbers
costs as much as the matmuls; in evaluation the context holds only the steps seen so far and the last action
token (not yet known) is left out, which causal attention makes equivalent to the reference's zero padding.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_TIMESTEP = 4096


@dataclasses.dataclass(frozen=True)
class DTDims:
    state_dim: int
    act_dim: int
    n_blocks: int = 3
    h_dim: int = 128
    context_len: int = 20
    n_heads: int = 1
    drop_p: float = 0.1
    max_timestep: int = MAX_TIMESTEP


def _threshold(p: float) -> int:
    return int(round(p * 65536)) - 32768


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout with a keep mask from 16-bit uniform integers (two per 32-bit draw)."""
    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return torch.zeros_like(x)
    n = x.numel()
    bits = torch.randint(-(2 ** 31), 2 ** 31 - 1, ((n + 1) // 2,), dtype=torch.int32, device=x.device)
    q = (32768 - _threshold(p)) / 65536  # the exact keep probability of the 16-bit test
    scale = (bits.view(torch.int16)[:n].view(x.shape) >= _threshold(p)).to(x.dtype).mul_(1.0 / q)
    return x * scale  # one multiply forward and backward (a bool mask would be cast to float twice)


def effective_p(p: float) -> float:
    """The dropout probability fast_dropout really applies (p rounded to a multiple of 1/65536)."""
    return (_threshold(p) + 32768) / 65536


class Block(nn.Module):
    def __init__(self, h_dim: int, n_heads: int, drop_p: float):
        super().__init__()
        self.n_heads, self.drop_p = n_heads, drop_p
        self.qkv = nn.Linear(h_dim, 3 * h_dim)
        self.proj = nn.Linear(h_dim, h_dim)
        self.fc1 = nn.Linear(h_dim, 4 * h_dim)
        self.fc2 = nn.Linear(4 * h_dim, h_dim)
        self.ln1 = nn.LayerNorm(h_dim)
        self.ln2 = nn.LayerNorm(h_dim)

    def forward(self, x: torch.Tensor, query_index: torch.Tensor | None = None,
                query_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, L, h). With `query_index` (Q positions) only those positions come out, attending causally
        (`query_mask`, (Q, L) bool, True = may attend)."""
        B, L, C = x.shape
        N, D = self.n_heads, C // self.n_heads
        if query_index is None:
            q, k, v = self.qkv(x).view(B, L, 3, N, D).permute(2, 0, 3, 1, 4)
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            resid = x
        else:
            w, b = self.qkv.weight, self.qkv.bias
            k, v = F.linear(x, w[C:], b[C:]).view(B, L, 2, N, D).permute(2, 0, 3, 1, 4)
            resid = x[:, query_index]
            q = F.linear(resid, w[:C], b[:C]).view(B, -1, N, D).transpose(1, 2)
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=query_mask)
        att = att.transpose(1, 2).reshape(B, -1, C)
        att = fast_dropout(att, self.drop_p, self.training)
        x = self.ln1(resid + fast_dropout(self.proj(att), self.drop_p, self.training))
        m = self.fc2(F.gelu(self.fc1(x)))
        return self.ln2(x + fast_dropout(m, self.drop_p, self.training))


class DecisionTransformer(nn.Module):
    def __init__(self, dims: DTDims):
        super().__init__()
        self.dims = dims
        h = dims.h_dim
        self.blocks = nn.ModuleList(Block(h, dims.n_heads, dims.drop_p) for _ in range(dims.n_blocks))
        self.embed_ln = nn.LayerNorm(h)
        self.embed_timestep = nn.Embedding(dims.max_timestep, h)
        self.embed_rtg = nn.Linear(1, h)
        self.embed_state = nn.Linear(dims.state_dim, h)
        self.embed_action = nn.Linear(dims.act_dim, h)
        self.predict_action = nn.Linear(h, dims.act_dim)
        self._masks: dict = {}

    def _query_mask(self, n_steps: int, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions of the state tokens of a sequence of `length` tokens, and their causal mask."""
        key = (n_steps, length, str(device))
        if key not in self._masks:
            index = torch.arange(n_steps, device=device) * 3 + 1
            mask = torch.arange(length, device=device)[None, :] <= index[:, None]
            self._masks[key] = (index, mask)
        return self._masks[key]

    def tokens(self, timesteps, states, actions, returns_to_go) -> torch.Tensor:
        """(B, 3T, h) interleaved (R_0, s_0, a_0, R_1, ...); with T-1 actions the last action token is left out."""
        B, T, _ = states.shape
        time = self.embed_timestep(timesteps)
        r = self.embed_rtg(returns_to_go) + time
        s = self.embed_state(states) + time
        if actions.shape[1] == T:
            a = self.embed_action(actions) + time
            h = torch.stack((r, s, a), dim=2).reshape(B, 3 * T, -1)
        else:  # evaluation: a_{T-1} is what is being predicted
            a = self.embed_action(actions) + time[:, :-1]
            pad = torch.zeros_like(r[:, :1])
            h = torch.stack((r, s, torch.cat([a, pad], 1)), dim=2).reshape(B, 3 * T, -1)[:, :-1]
        return self.embed_ln(h)

    def forward(self, timesteps: torch.Tensor, states: torch.Tensor, actions: torch.Tensor,
                returns_to_go: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Action predictions at every state token, (B, T, act_dim); `last_only`: at the last one, (B, act_dim).

        timesteps (B, T) long, states (B, T, state_dim), actions (B, T or T-1, act_dim), returns_to_go (B, T, 1).
        """
        T = states.shape[1]
        h = self.tokens(timesteps, states, actions, returns_to_go)
        for block in self.blocks[:-1]:
            h = block(h)
        L = h.shape[1]
        if last_only:
            index = torch.tensor([3 * (T - 1) + 1], device=h.device)
            mask = None if L == 3 * (T - 1) + 2 else (torch.arange(L, device=h.device) <= index[0])[None]
        else:
            index, mask = self._query_mask(T, L, h.device)
        h = self.blocks[-1](h, index, mask)
        out = torch.tanh(self.predict_action(h))
        return out[:, -1] if last_only else out


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def update_flops(dims: DTDims, batch: int) -> float:
    """Matmul FLOPs of one training update (forward + backward ~ 3x forward) of this implementation."""
    B, T, h = batch, dims.context_len, dims.h_dim
    L = 3 * T
    full_block = 2 * B * L * h * (3 * h + h + 8 * h) + 2 * 2 * B * L * L * h / 2  # linears + causal attention
    last_block = 2 * B * (L * 2 * h + T * (h + h + 8 * h)) + 2 * 2 * B * T * L * h / 2
    embed = 2 * B * T * h * (dims.state_dim + dims.act_dim + 1) + 2 * B * T * h * dims.act_dim
    return 3.0 * ((dims.n_blocks - 1) * full_block + last_block + embed)


def attention_scale(h_dim: int, n_heads: int) -> float:
    return 1.0 / math.sqrt(h_dim // n_heads)
