"""`gym-qwen demo`: train TD-MPC2 briefly on an easy task, evaluate it against a random policy, print a table."""
from __future__ import annotations

import os
import sys
import time

from gym_qwen.jobs.common import run_job, table
from gym_qwen.platform.config import DemoConfig, TrainConfig


def random_policy_returns(task: str, episodes: int, seed: int) -> list[float]:
    import numpy as np

    from gym_qwen.platform.envs import make_env
    from gym_qwen.platform.evaluation import EVAL_SEED_OFFSET

    env, rng, returns = make_env(task, seed + EVAL_SEED_OFFSET), np.random.default_rng(seed), []
    for i in range(episodes):
        env.reset(seed=seed + EVAL_SEED_OFFSET + i)
        total, done = 0.0, False
        while not done:
            _, r, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype("float32"))
            total, done = total + r, terminated or truncated
        returns.append(total)
    env.close()
    return returns


def _against_random(label: str, res, rand: list[float], more: list[tuple] = ()) -> str:
    """The demo's table: random actions, then the evaluated agent `res` (an EvalResult), then `more` (label, res)."""
    import numpy as np

    rows = [("random actions", len(rand), f"{np.mean(rand):.1f}", f"{np.std(rand):.1f}", "-", "-")]
    rows += [(name, len(r.returns), f"{r.mean:.1f}", f"{r.std:.1f}", f"{r.planner_calls_per_step:.2f}",
              f"{r.ms_per_decision:.1f}") for name, r in [(label, res), *more]]
    return table(rows, ("policy", "episodes", "return", "std", "planner calls/step", "ms/decision"))


def _teacher_file(cfg: DemoConfig) -> str | None:
    if cfg.teacher == "none":
        return None
    if cfg.teacher != "auto":
        return cfg.teacher
    from gym_qwen.platform.teachers import shipped_teacher

    found = shipped_teacher("walker-walk")
    return str(found) if found else None


def _show_teacher(path: str, cfg: DemoConfig) -> None:
    """A shipped teacher (trained for ~100k env steps) beside random actions on its own task."""
    from gym_qwen.platform.evaluation import evaluate_checkpoint
    from gym_qwen.platform.teachers import load_teacher_card

    card = load_teacher_card(path)
    ev = card["evaluation"]
    print(f"\nShipped teacher {path}: TD-MPC2 model size {card['model_size']} trained for {card['env_steps']:,} env "
          f"steps on {card['task']} (its card: {ev['return_mean']:.1f} ± {ev['return_std']:.1f} over "
          f"{ev['episodes']} episodes).")
    res, _ = evaluate_checkpoint(path, cfg.teacher_episodes, cfg.seed, device="cpu", show_progress=True)
    more = []
    if cfg.speculation:
        from gym_qwen.platform.speculative.comparison import corrector_path
        from gym_qwen.platform.speculative.modes import ExecutionSpec, SpeculationSettings

        specs = [("open loop, 3 actions/plan", ExecutionSpec(SpeculationSettings("naive", 3)))]
        corrector = corrector_path(path, "two_tower")
        if os.path.isfile(corrector):
            specs.append(("two-tower corrector, k=3", ExecutionSpec(SpeculationSettings("spec_corrector", 3),
                                                                    "two_tower", corrector)))
        for label, spec in specs:
            more.append((label, evaluate_checkpoint(path, cfg.teacher_episodes, cfg.seed, device="cpu",
                                                    show_progress=True, execution=spec)[0]))
    rand = random_policy_returns(card["task"], cfg.teacher_episodes, cfg.seed)
    print(_against_random("shipped teacher", res, rand, more))
    if more:
        print("Speculative execution runs 3 planned actions per planner call: open loop, or corrected by a network "
              "distilled from the planner (gym-qwen evaluate mode=all compares every mode).")


def _demo(cfg: DemoConfig) -> None:
    from gym_qwen.platform.evaluation import evaluate
    from gym_qwen.platform.trainer import train

    exp = time.strftime("demo-%Y%m%d-%H%M%S")
    small = dict(latent_dim=64, enc_dim=64, mlp_dim=128, num_samples=128, num_elites=16, num_pi_trajs=8,
                 iterations=3, batch_size=128) if cfg.small else {}
    train_cfg = TrainConfig(task=cfg.task, steps=cfg.steps, model_size=cfg.model_size, seed=cfg.seed,
                            seed_steps=cfg.seed_steps, eval_freq=0, output_dir=cfg.output_dir, exp_name=exp,
                            mlflow=cfg.mlflow, torch_threads=cfg.torch_threads, **small)
    network = ("a small network (latent 64, MLP 128; 128 MPPI samples, 3 iterations)" if cfg.small
               else f"model size {cfg.model_size}")
    print(f"Gym Qwen demo: TD-MPC2 with {network} on {cfg.task} for {cfg.steps:,} env steps, then "
          f"{cfg.episodes} evaluation episodes against a random policy.")
    started = time.perf_counter()
    summary = train(train_cfg)
    minutes = (time.perf_counter() - started) / 60
    from gym_qwen.platform.checkpoints import load_agent

    agent, _, _ = load_agent(summary["checkpoint"], {}, "auto")
    res = evaluate(agent, cfg.task, cfg.episodes, cfg.seed, show_progress=True)
    rand = random_policy_returns(cfg.task, cfg.episodes, cfg.seed)
    print()
    print(_against_random(f"TD-MPC2 after {summary['env_steps']:,} steps", res, rand))
    print(f"\ntrained in {minutes:.1f} min ({summary['env_steps_per_second']:.1f} env steps/s); "
          f"checkpoint {summary['checkpoint']}")
    if summary["mlflow_run_id"]:
        from gym_qwen.platform.tracking import default_tracking_uri

        print(f"MLflow run {summary['mlflow_run_id']} (browse: mlflow ui --backend-store-uri "
              f"{default_tracking_uri()})")
    teacher = _teacher_file(cfg)
    if teacher:
        _show_teacher(teacher, cfg)


def main(argv: list[str] | None = None) -> int:
    return run_job("demo", DemoConfig, _demo, argv)


if __name__ == "__main__":
    sys.exit(main())
