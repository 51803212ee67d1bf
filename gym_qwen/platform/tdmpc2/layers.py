"""Building blocks: Linear -> (Dropout) -> LayerNorm -> Mish/SimNorm layers, MLPs and a stacked Q ensemble."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .functional import mish, simnorm


def ln_mish(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """mish(LayerNorm(x)); weight/bias are (D,) or broadcastable stacks like (k, 1, D) for an ensemble."""
    if weight.ndim == 1:
        return mish(F.layer_norm(x, (x.shape[-1],), weight, bias))
    return mish(F.layer_norm(x, (x.shape[-1],)) * weight + bias)


class NormedLinear(nn.Linear):
    """Linear layer followed by optional dropout, LayerNorm and an activation ("mish" or "simnorm")."""

    def __init__(self, in_dim: int, out_dim: int, act: str = "mish", dropout: float = 0.0, simnorm_dim: int = 8):
        super().__init__(in_dim, out_dim)
        self.ln = nn.LayerNorm(out_dim)
        self.act, self.simnorm_dim = act, simnorm_dim
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.dropout is not None:
            x = self.dropout(x)
        if self.act == "simnorm":
            return simnorm(self.ln(x), self.simnorm_dim)
        return ln_mish(x, self.ln.weight, self.ln.bias)


def mlp(in_dim: int, hidden: list[int], out_dim: int, *, out_act: str | None = None, dropout: float = 0.0,
        simnorm_dim: int = 8) -> nn.Sequential:
    """MLP of NormedLinear hidden layers. The output layer is plain Linear, or NormedLinear with `out_act`."""
    dims = [in_dim, *hidden]
    layers: list[nn.Module] = [
        NormedLinear(dims[i], dims[i + 1], dropout=dropout if i == 0 else 0.0) for i in range(len(hidden))
    ]
    if out_act is None:
        layers.append(nn.Linear(dims[-1], out_dim))
    else:
        layers.append(NormedLinear(dims[-1], out_dim, act=out_act, simnorm_dim=simnorm_dim))
    return nn.Sequential(*layers)


def init_weights(module: nn.Module) -> None:
    """TD-MPC2 initialisation: truncated normal (std 0.02) weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, QEnsemble):
            for w in m.weights:
                nn.init.trunc_normal_(w, std=0.02)
            for b in m.biases:
                nn.init.zeros_(b)


class QEnsemble(nn.Module):
    """`num_q` Q-heads with identical shape, stored stacked so that any subset runs as one batched matmul.

    Each head is Linear -> Dropout -> LayerNorm -> Mish -> Linear -> LayerNorm -> Mish -> Linear(num_bins),
    the same parameters (and count) as separate MLPs. Passing `heads` evaluates only those heads, which is
    what the planner and the TD target need (2 of num_q).
    """

    def __init__(self, num_q: int, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        dims = [in_dim, hidden, hidden, out_dim]
        self.num_q, self.hidden, self.dropout = num_q, hidden, dropout
        self.weights = nn.ParameterList([nn.Parameter(torch.empty(num_q, dims[i], dims[i + 1])) for i in range(3)])
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(num_q, 1, dims[i + 1])) for i in range(3)])
        self.ln_weights = nn.ParameterList([nn.Parameter(torch.ones(num_q, 1, hidden)) for _ in range(2)])
        self.ln_biases = nn.ParameterList([nn.Parameter(torch.zeros(num_q, 1, hidden)) for _ in range(2)])
        self.batch_shard = None  # data-parallel learning: a DataParallelGroup (dropout masks of the global batch)

    def forward(self, x: torch.Tensor, heads: torch.Tensor | None = None, detach: bool = False) -> torch.Tensor:
        """x: (..., in_dim) -> logits (k, ..., out_dim) for the selected heads (all heads if `heads` is None)."""
        lead = x.shape[:-1]
        h = x.reshape(1, -1, x.shape[-1])
        for i in range(3):
            w, b = self.weights[i], self.biases[i]
            if heads is not None:
                w, b = w[heads], b[heads]
            if detach:
                w, b = w.detach(), b.detach()
            h = torch.baddbmm(b, h.expand(w.shape[0], -1, -1) if h.shape[0] == 1 else h, w)
            if i < 2:
                if i == 0 and self.dropout > 0 and self.training:
                    h = self._dropout(h, lead)
                g, beta = self.ln_weights[i], self.ln_biases[i]
                if heads is not None:
                    g, beta = g[heads], beta[heads]
                if detach:
                    g, beta = g.detach(), beta.detach()
                h = ln_mish(h, g, beta)
        return h.reshape(h.shape[0], *lead, h.shape[-1])

    def _dropout(self, h: torch.Tensor, lead) -> torch.Tensor:
        """Dropout of the first hidden layer h (k, prod(lead), hidden). Data-parallel (batch_shard set, the batch
        the last dim of `lead`): this process's rows of the mask the single learner draws for the global batch
        (the same Bernoulli draws, in the same order)."""
        shard = self.batch_shard
        if shard is None or not lead:
            return F.dropout(h, self.dropout, training=True)
        k, hidden, b = h.shape[0], h.shape[-1], lead[-1]
        keep = 1.0 - self.dropout
        mask = torch.empty((k, *lead[:-1], b * shard.world, hidden), device=h.device, dtype=h.dtype).bernoulli_(keep)
        mask = mask.narrow(-2, shard.rank * b, b).reshape(h.shape)
        return h * mask / keep
