"""`gym-qwen behaviour-policy env=halfcheetah level=medium|expert [steps=...] [seed=...] [resume=true]`: train the
SAC policy a D4RL level is sampled from (stable-baselines3), checkpointed and resumable."""
from __future__ import annotations

import sys

from gym_qwen.jobs.common import run_job
from gym_qwen.platform.config import BehaviourPolicyConfig
from gym_qwen.platform.datasets import DatasetError
from gym_qwen.platform.datasets.sac import train_behaviour


def _train(cfg: BehaviourPolicyConfig) -> int:
    s = train_behaviour(cfg, show_progress=cfg.progress)
    last = s["evals"][-1] if s["evals"] else None
    print(f"{cfg.env} {cfg.level}: {s['steps']:,} steps in {s['seconds'] / 3600:.2f} h ({s['run_dir']})"
          + (f"; last evaluation {last['return_mean']:.1f} ± {last['return_std']:.1f} (normalised "
             f"{last['normalized']:.1f}) at {last['steps']:,} steps" if last else ""))
    if not s["reached"]:
        print(f"the medium target {s['target']:.1f} was not reached in {s['steps']:,} steps; nothing was written "
              f"to {cfg.models_dir}: continue with resume=true steps=<more>", file=sys.stderr)
        return 1
    card = s["card"]
    print(f"wrote {', '.join(s['files'])}: return {card['eval']['return_mean']:.1f} ± {card['eval']['return_std']:.1f}"
          f" over {card['eval']['episodes']} episodes (normalised {card['eval']['normalized_score']:.1f})")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_job("behaviour-policy", BehaviourPolicyConfig, _train, argv, extra_errors=(DatasetError,))


if __name__ == "__main__":
    sys.exit(main())
