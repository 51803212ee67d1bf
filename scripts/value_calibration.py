"""What the world model promises against what the episode pays: the planner and the policy prior of one teacher.

Why: on cartpole-swingup the shipped teacher's policy prior alone (875) beats its full planner (703) on every
evaluation episode. If the planner's choices are the ones the model over-values (its predicted rewards and Q values
above what the environment then pays) while the prior's are not, the search exploits the model's errors.

For each policy (planner: the full MPPI plan's first action, as `mode=baseline`, which executes one elite drawn in
proportion to its score, as TD-MPC2 does; planner_mean: the final MPPI mean's first action instead; prior: the
policy prior's mean action, as `mode=prior`) it plays the first EPISODES evaluation episodes of seed 1 (reset
seeds 10001..., one torch thread) and records at every decision:
- the reward the model predicts for the executed action, against the reward the environment pays;
- Q(z, a) of the executed action (mean of all Q heads) and, for the planner, the value of its chosen plan (H
  predicted rewards and the discounted Q at the end, what MPPI maximises), against the discounted return the
  episode then paid from that decision (the planner's discount); only over the first half of each episode, where
  the episode's end cuts that return by less than discount ** (length / 2);
- on planner episodes, Q of the prior's action at the same latent: how often the model ranks the planner's action
  above the prior's, and how far the two actions are apart (mean absolute difference per action dimension).

    .venv/bin/python scripts/value_calibration.py cartpole-swingup walker-run [--episodes 2]
      [--out docs/value-calibration.json] [--compile true|false]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gym_qwen.platform.envs import make_env
from gym_qwen.platform.files import atomic_write_bytes
from gym_qwen.platform.rng import seeded
from gym_qwen.platform.seeds import reset_seed
from gym_qwen.platform.tdmpc2.checkpoints import load_agent


def q_all_heads(model, z: torch.Tensor, a: torch.Tensor) -> float:
    """Mean of every Q head's value (deterministic, unlike the planner's two random heads)."""
    logits = model.Q(z, a, reduce="all")
    return float(model.two_hot.decode(logits).mean())


@torch.inference_mode()
def play(agent, task: str, policy: str, index: int) -> dict:
    """Evaluation episode `index` (seed 1) of `policy` ("prior", "planner" or "planner_mean"), with the model's
    promises at every decision. The prior's and the planner's episodes are `gym-qwen evaluate`'s (mode=prior and
    mode=baseline, seed=1) decision for decision."""
    model, discount = agent.model, agent.planner.s.discount
    start = reset_seed("evaluation", 1, index)
    env = make_env(task, start)
    obs, _ = env.reset(seed=start)
    agent.reset_plans()
    rows, done, t = [], False, 0
    no_noise = torch.zeros(1, model.action_dim)  # the prior's mean without drawing from the planner's stream
    with seeded(start):  # seeded as the evaluator seeds each episode: planner episodes are mode=baseline's
        while not done:
            z = model.encode(torch.as_tensor(np.asarray(obs, dtype=np.float32)).unsqueeze(0))
            prior_action = model.pi(z, eps=no_noise)[1]["mean"]
            row = {}
            if policy in ("planner", "planner_mean"):
                plan = agent.plan(obs, t0=t == 0)
                action = (plan.first_action if policy == "planner" else plan.mean[:, 0]).clamp(-1, 1)
                row["plan_value"] = float(plan.value[0])
                row["q_prior_action"] = q_all_heads(model, z, prior_action)
                row["distance_to_prior_action"] = float((action - prior_action).abs().mean())
            else:
                action = prior_action
            row["q"] = q_all_heads(model, z, action)
            row["reward_predicted"] = float(model.step(z, action)[0])
            obs, reward, terminated, truncated, _ = env.step(action[0].numpy())
            row["reward"] = float(reward)
            rows.append(row)
            done, t = terminated or truncated, t + 1
    env.close()
    paid = 0.0
    for row in reversed(rows):  # the discounted return the episode paid from each decision on
        paid = row["reward"] + discount * paid
        row["paid"] = paid
    return {"return": sum(r["reward"] for r in rows), "rows": rows}


def summarise(episodes: list[dict]) -> dict:
    first_half = [r for e in episodes for r in e["rows"][: len(e["rows"]) // 2]]
    every = [r for e in episodes for r in e["rows"]]
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    out = {"episodes": len(episodes), "returns": [round(e["return"], 1) for e in episodes],
           "reward_paid_mean": mean([r["reward"] for r in every]),
           "reward_predicted_minus_paid": mean([r["reward_predicted"] - r["reward"] for r in every]),
           "q_mean": mean([r["q"] for r in first_half]), "paid_mean": mean([r["paid"] for r in first_half]),
           "q_minus_paid": mean([r["q"] - r["paid"] for r in first_half])}
    if "plan_value" in every[0]:
        out["plan_value_minus_paid"] = mean([r["plan_value"] - r["paid"] for r in first_half])
        out["q_planner_minus_q_prior_action"] = mean([r["q"] - r["q_prior_action"] for r in every])
        out["share_planner_action_valued_higher"] = mean([float(r["q"] > r["q_prior_action"]) for r in every])
        out["distance_to_prior_action"] = mean([r["distance_to_prior_action"] for r in every])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("tasks", nargs="+")
    p.add_argument("--episodes", type=int, default=2)
    p.add_argument("--out", default="docs/value-calibration.json")
    p.add_argument("--compile", choices=("true", "false"), default="true",
                   help="plan compiled, as the frontier runs (compile=true) whose episodes these replay")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error(f"--episodes {args.episodes}: play at least 1")
    teachers = {task: Path(f"models/{task}-size1-seed1.pt") for task in args.tasks}
    missing = [path for path in teachers.values() if not path.is_file()]
    if missing:  # checked before any work, so that no task's episodes are played for nothing
        print(f"no {missing[0]}: ship the task's teacher first", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    given = sys.argv[1:] if argv is None else list(argv)
    result = {"command": " ".join(["scripts/value_calibration.py", *given]), "tasks": {}}
    for task, ckpt in teachers.items():
        agent, _, _ = load_agent(str(ckpt), {"compile": args.compile == "true"}, "cpu")
        result["tasks"][task] = {"discount": agent.planner.s.discount}
        for policy in ("prior", "planner", "planner_mean"):
            t0 = time.perf_counter()
            episodes = [play(agent, task, policy, i) for i in range(args.episodes)]
            summary = summarise(episodes)
            result["tasks"][task][policy] = summary
            print(f"{task} {policy} ({time.perf_counter() - t0:.0f} s): "
                  + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()),
                  flush=True)
    atomic_write_bytes(args.out, lambda f: f.write((json.dumps(result, indent=1) + "\n").encode()))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
