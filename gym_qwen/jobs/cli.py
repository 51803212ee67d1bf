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
    "demo": ("gym_qwen.jobs.demo", "train briefly on an easy task, evaluate, print a table"),
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
