"""`gym-qwen <command> key=value ...`: one entry point, one typed config per command."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": ("gym_qwen.jobs.train", "train a TD-MPC2 agent online"),
    "evaluate": ("gym_qwen.jobs.evaluate", "evaluate a checkpoint (return, planner calls per step, latency)"),
    "info": ("gym_qwen.jobs.info", "print the parameter count of each model component"),
    "teacher": ("gym_qwen.jobs.teacher", "ship a finished training run as a teacher (models/<name>.pt + card)"),
    "curves": ("gym_qwen.jobs.curves", "plot evaluation return vs env steps over the published curves"),
    "collect": ("gym_qwen.jobs.collect", "collect corrector data from a teacher's speculative chunks (Parquet)"),
    "distill": ("gym_qwen.jobs.distill", "distill correctors from corrector data (two-tower, temporal)"),
    "demo": ("gym_qwen.jobs.demo", "the main job: a sweep of speculation settings on a shipped teacher, then compare"),
    "make-dataset": ("gym_qwen.jobs.make_dataset", "make a D4RL-style dataset on a MuJoCo v5 task (HDF5 or Minari)"),
    "dataset-info": ("gym_qwen.jobs.dataset_info", "episodes, returns and D4RL normalised score of a dataset"),
    "behaviour-policy": ("gym_qwen.jobs.behaviour_policy", "train the SAC behaviour policy of a dataset level"),
    "dt-train": ("gym_qwen.jobs.dt_train", "train a Decision Transformer on an offline dataset"),
    "dt-test": ("gym_qwen.jobs.dt_test", "evaluate a Decision Transformer checkpoint (D4RL normalised score)"),
    "dt-plot": ("gym_qwen.jobs.dt_plot", "plot Decision Transformer training curves (loss, normalised score)"),
    "sweep": ("gym_qwen.jobs.sweep", "a Ray Tune sweep of evaluation settings, every trial logged to MLflow"),
    "compare": ("gym_qwen.jobs.compare", "compare evaluation runs in MLflow: table, Pareto front, plot"),
}


def usage() -> str:
    lines = ["usage: gym-qwen <command> [key=value ...] [--help]", "", "commands:"]
    lines += [f"  {name:<10} {doc}" for name, (_, doc) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"gym-qwen: error: unknown command {name!r}; valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[name][0]).main(rest)


if __name__ == "__main__":
    sys.exit(main())
