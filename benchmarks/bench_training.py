"""Training throughput of the whole in-process loop (acting + learning), in env steps per second.

Runs a short training (seed phase, then one update per decision) and times the learning phase separately.
    python benchmarks/bench_training.py [--task cheetah-run] [--model-size 1] [--decisions 600] [--compile]
Writes benchmarks/results/training.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gym_qwen.platform.config import TrainConfig  # noqa: E402
from gym_qwen.platform.envs import task_spec  # noqa: E402
from gym_qwen.platform.training.loop import InProcessBackend, LoopState, run_training  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cheetah-run")
    p.add_argument("--model-size", type=int, default=1)
    p.add_argument("--seed-decisions", type=int, default=500)
    p.add_argument("--decisions", type=int, default=300, help="decisions with learning after the seed phase")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "training.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    spec = task_spec(args.task)
    total = args.seed_decisions + args.decisions
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(task=args.task, model_size=args.model_size, steps=total * spec.action_repeat,
                          seed_steps=args.seed_decisions, eval_freq=0, checkpoint_freq=0, mlflow=False,
                          progress=False, output_dir=tmp, compile=args.compile, torch_threads=args.threads)
        backend = InProcessBackend(cfg)
        start = time.perf_counter()
        # Phase 1: seed decisions (random actions), then the pretraining burst of seed_steps updates.
        cfg.steps = args.seed_decisions * spec.action_repeat
        run_training(cfg, spec, backend, LoopState())
        seed_done = time.perf_counter()
        # Phase 2: steady state, one decision (planned) + one update per step.
        cfg.steps = total * spec.action_repeat
        steady_start = time.perf_counter()
        run_training(cfg, spec, backend, LoopState())
        end = time.perf_counter()
    steady = (end - steady_start)
    out = {"command": "python " + " ".join(sys.argv), "task": args.task, "model_size": args.model_size,
           "compiled": args.compile, "threads": args.threads,
           "seed_phase_seconds_incl_pretraining": seed_done - start,
           "steady_decisions": args.decisions, "steady_seconds": steady,
           "steady_env_steps_per_s": args.decisions * spec.action_repeat / steady,
           "steady_seconds_per_decision": steady / args.decisions,
           "seconds_per_10k_env_steps": 10_000 / (args.decisions * spec.action_repeat / steady),
           "updates": backend.num_updates}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"{args.task} size {args.model_size}{' compiled' if args.compile else ''}: steady state "
          f"{out['steady_env_steps_per_s']:.2f} env steps/s ({1e3 * out['steady_seconds_per_decision']:.0f} ms per "
          f"decision incl. one update; {out['seconds_per_10k_env_steps'] / 3600:.2f} h per 10k env steps); "
          f"seed phase incl. {args.seed_decisions} pretraining updates {out['seed_phase_seconds_incl_pretraining']:.0f} s")


if __name__ == "__main__":
    main()
