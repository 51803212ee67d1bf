"""Collection throughput of Ray rollout workers (env steps/s with 1, 2, ... workers) and learner updates/s
while workers collect.

    python benchmarks/bench_collection.py [--task cheetah-run] [--model-size 1] [--workers 1,2] [--episodes 1]
        [--num-envs 1] [--learner-updates 200]
Collection: each worker (one CPU, one torch thread) plays `--episodes` whole episodes (500 decisions on DMC)
with full MPPI planning (eager); the figure is total env steps over wall time.
Learner: updates/s of a learner actor (one CPU) on two random episodes while one worker plays an episode,
the layout of `train num_workers=1` on two cores.
Writes benchmarks/results/collection.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _setup(task: str, model_size: int, num_envs: int):
    import ray

    from gym_qwen.platform.config import TrainConfig, config_to_dict
    from gym_qwen.platform.training.loop import build_learning

    # seed_steps above anything ingested here: episodes handed to the learner make no updates due
    cfg = TrainConfig(task=task, model_size=model_size, num_envs=num_envs, device="cpu", mlflow=False,
                      seed_steps=10**6)
    spec, agent, _ = build_learning(cfg)
    return config_to_dict(cfg), spec, [ray.put(agent.state_dict(with_optim=False))]


def collection_rate(task: str, model_size: int, workers: int, episodes: int, num_envs: int) -> dict:
    import ray

    from gym_qwen.actors.rollout_worker import RolloutWorker

    config, spec, box = _setup(task, model_size, num_envs)
    actors = [ray.remote(RolloutWorker).options(num_cpus=1).remote(config, i, 1) for i in range(workers)]
    ray.get([a.pid.remote() for a in actors], timeout=600)  # built (envs made) before the clock starts
    ids = iter(range(10**6))
    start = time.perf_counter()
    refs = [a.run_episodes.remote(1, box, [next(ids) for _ in range(num_envs)], False)
            for a in actors for _ in range(episodes)]
    done = [e for batch in ray.get(refs, timeout=3600) for e in batch]
    seconds = time.perf_counter() - start
    for a in actors:
        ray.kill(a)
    env_steps = sum(len(e) for e in done) * spec.action_repeat
    return {"workers": workers, "num_envs": num_envs, "episodes": len(done), "env_steps": env_steps,
            "seconds": seconds, "env_steps_per_s": env_steps / seconds}


def learner_rate(task: str, model_size: int, updates: int) -> dict:
    """Learner updates/s (1 CPU) while one rollout worker (1 CPU) plays an episode: training's 2-core layout."""
    import ray

    from gym_qwen.actors.learner import LearnerActor
    from gym_qwen.actors.rollout_worker import RolloutWorker

    config, spec, box = _setup(task, model_size, 1)
    worker = ray.remote(RolloutWorker).options(num_cpus=1).remote(config, 0, 1)
    learner = ray.remote(LearnerActor).options(num_cpus=1).remote(config, 1, "cpu")
    filled = [worker.run_episodes.remote(0, box, [i], True) for i in range(2)]  # random episodes to sample from
    ray.get(learner.ingest.remote(filled), timeout=3600)
    collecting = worker.run_episodes.remote(1, box, [2], False)
    timed = ray.get(learner.update.remote(updates), timeout=3600)
    ray.get(collecting, timeout=3600)
    for a in (worker, learner):
        ray.kill(a)
    return {"updates": updates, "seconds": timed["seconds"], "updates_per_s": updates / timed["seconds"],
            "while": "one rollout worker plays an episode with planning"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cheetah-run")
    p.add_argument("--model-size", type=int, default=1)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--episodes", type=int, default=1, help="episode batches per worker (after a warm-up one)")
    p.add_argument("--num-envs", type=int, default=1)
    p.add_argument("--learner-updates", type=int, default=200, help="0 skips the learner measurement")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "collection.json"))
    args = p.parse_args()
    import ray

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="ERROR")
    rows = [collection_rate(args.task, args.model_size, int(n), args.episodes, args.num_envs)
            for n in args.workers.split(",")]
    base = rows[0]["env_steps_per_s"] / rows[0]["workers"]
    for r in rows:
        r["speedup_vs_1_worker"] = r["env_steps_per_s"] / base
        print(f"{r['workers']} worker(s) x {r['num_envs']} env(s): {r['env_steps_per_s']:.1f} env steps/s "
              f"({r['speedup_vs_1_worker']:.2f}x)")
    out = {"command": "python " + " ".join(sys.argv), "task": args.task, "model_size": args.model_size,
           "cpus": os.cpu_count(), "collection": rows}
    if args.learner_updates:
        out["learner"] = learner_rate(args.task, args.model_size, args.learner_updates)
        print(f"learner while 1 worker collects: {out['learner']['updates_per_s']:.2f} updates/s")
    ray.shutdown()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
