"""Evaluating a Decision Transformer on the Gymnasium v5 task: return-conditioned rollouts, D4RL normalised score.

As in the DT paper and min-decision-transformer: the first return-to-go is the target (halfcheetah 6000,
hopper 3600, walker2d 5000) divided by rtg_scale, and each reward received is subtracted from it; states are
normalised with the training data's mean and std; the model sees the last `context_len` steps (all steps so far
while fewer) and acts with the action predicted at the last state token (deterministic: no dropout in eval).
Episode i resets with seed + 10000 + i (the platform's evaluation seeds). The episodes run in lockstep, one
batched forward pass per step for all those still running; `batch=1` plays them one at a time instead (a batched
matmul may round differently in the last bit, so returns can differ slightly between the two; evaluator actors
play one episode at a time and equal batch=1).
"""
from __future__ import annotations

import time

import numpy as np
import torch

from gym_qwen.platform.datasets.d4rl import ENV_IDS, normalized_score
from gym_qwen.platform.datasets.generate import make_gym_env
from gym_qwen.platform.progress import progress_bar

from .model import DecisionTransformer, DTDims

DT_TARGETS = {"halfcheetah": 6000.0, "hopper": 3600.0, "walker2d": 5000.0}
EVAL_SEED_OFFSET = 10_000


def episode_seed(seed: int, episode: int) -> int:
    return int(seed) + EVAL_SEED_OFFSET + int(episode)


@torch.no_grad()
def evaluate_dt(model, env: str, episodes: int, seed: int, *, rtg_target: float, rtg_scale: float,
                state_mean: np.ndarray, state_std: np.ndarray, max_ep_len: int = 1000, batch: int | None = None,
                first_episode: int = 0, device: str | torch.device = "cpu", progress: bool = False) -> dict:
    """Returns {returns, lengths, return_mean, return_std, normalized_mean, normalized_std, ms_per_action, ...}."""
    batch = episodes if batch is None else max(1, int(batch))
    returns, lengths, forward_s, actions_taken = [], [], 0.0, 0
    was_training = model.training
    model.eval()
    try:
        with progress_bar(total=episodes, desc=f"evaluate DT {ENV_IDS[env]}", unit="ep", enabled=progress) as bar:
            for lo in range(0, episodes, batch):
                ids = list(range(first_episode + lo, first_episode + min(episodes, lo + batch)))
                r, n, s, k = _play(model, env, ids, seed, rtg_target, rtg_scale, state_mean, state_std, max_ep_len,
                                   torch.device(device))
                returns += r
                lengths += n
                forward_s += s
                actions_taken += k
                bar.update(len(ids))
    finally:
        model.train(was_training)
    return result_of(env, seed, rtg_target, returns, lengths, 1000.0 * forward_s / max(actions_taken, 1), batch)


def result_of(env: str, seed: int, rtg_target: float, returns, lengths, ms_per_action: float, batch: int) -> dict:
    rets = np.asarray(returns, dtype=np.float64)
    norm = normalized_score(env, rets)
    return {"env": env, "episodes": len(rets), "seed": seed, "rtg_target": rtg_target,
            "returns": [float(x) for x in rets], "lengths": [int(x) for x in lengths],
            "return_mean": float(rets.mean()), "return_std": float(rets.std()),
            "normalized_mean": float(norm.mean()), "normalized_std": float(norm.std()),
            "length_mean": float(np.mean(lengths)), "ms_per_action": ms_per_action, "batch": batch}


# Evaluator actors (gym_qwen/actors/episode_farm.py) run one episode per call with batch 1: the same numbers as
# evaluate_dt(..., batch=1) in one process.
def dt_eval_setup(ckpt: dict, seed: int, rtg_target: float, max_ep_len: int) -> dict:
    model = DecisionTransformer(DTDims(**ckpt["dims"]))
    model.load_state_dict(ckpt["model"])
    return {"model": model.eval(), "env": ckpt["env"], "seed": seed, "rtg_target": rtg_target,
            "rtg_scale": ckpt["rtg_scale"], "state_mean": ckpt["state_mean"].numpy(),
            "state_std": ckpt["state_std"].numpy(), "max_ep_len": max_ep_len}


def dt_eval_episode(state: dict, index: int) -> list[dict]:
    returns, lengths, seconds, steps = _play(state["model"], state["env"], [index], state["seed"],
                                             state["rtg_target"], state["rtg_scale"], state["state_mean"],
                                             state["state_std"], state["max_ep_len"], torch.device("cpu"))
    return [{"return": returns[0], "length": lengths[0], "forward_s": seconds, "actions": steps}]


@torch.no_grad()
def _play(model, env, ids, seed, rtg_target, rtg_scale, state_mean, state_std, max_ep_len, device):
    K = model.dims.context_len
    E = len(ids)
    envs = [make_gym_env(env) for _ in ids]
    mean = torch.as_tensor(state_mean, dtype=torch.float32, device=device)
    std = torch.as_tensor(state_std, dtype=torch.float32, device=device)
    S, A = model.dims.state_dim, model.dims.act_dim
    states = torch.zeros(E, max_ep_len, S, device=device)
    actions = torch.zeros(E, max_ep_len, A, device=device)
    rtg = torch.zeros(E, max_ep_len, 1, device=device)
    timesteps = torch.arange(max_ep_len, device=device).repeat(E, 1)
    returns, lengths = [0.0] * E, [0] * E
    running = np.full(E, rtg_target / rtg_scale)
    done = [False] * E
    obs = [e.reset(seed=episode_seed(seed, i))[0] for e, i in zip(envs, ids)]
    forward_s, taken = 0.0, 0
    try:
        for t in range(max_ep_len):
            live = [j for j in range(E) if not done[j]]
            if not live:
                break
            rows = torch.tensor(live, device=device)
            obs_t = torch.as_tensor(np.stack([obs[j] for j in live]), dtype=torch.float32, device=device)
            states[rows, t] = (obs_t - mean) / std
            rtg[rows, t, 0] = torch.as_tensor(running[live], dtype=torch.float32, device=device)
            lo = max(0, t - K + 1)
            started = time.perf_counter()
            act = model(timesteps[rows, lo:t + 1], states[rows, lo:t + 1], actions[rows, lo:t], rtg[rows, lo:t + 1],
                        last_only=True)
            forward_s += time.perf_counter() - started
            taken += len(live)
            actions[rows, t] = act
            act_np = act.cpu().numpy()
            for n, j in enumerate(live):
                obs[j], reward, terminated, truncated, _ = envs[j].step(act_np[n])
                returns[j] += float(reward)
                lengths[j] += 1
                running[j] -= float(reward) / rtg_scale
                done[j] = bool(terminated or truncated)
    finally:
        for e in envs:
            e.close()
    return returns, lengths, forward_s, taken
