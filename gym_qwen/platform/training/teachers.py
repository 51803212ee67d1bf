"""Teachers: trained TD-MPC2 agents shipped under ``models/``, each with a card (``<name>.json``).

A card says what the teacher is (task, model size, env steps, seed), how well it controls (evaluation return
mean, std and episodes, with the exact command that reproduces them), how it was made (the training command,
planning settings, throughput, code version) and its learning curve. :func:`check_card` compares a card
against the checkpoint's own config, so a card cannot silently drift from the weights it describes.
"""
from __future__ import annotations

import csv
import json
import os
import platform
import shutil
from pathlib import Path

import numpy as np

from ..config import TrainConfig, command_line, config_from_dict, config_to_dict
from ..files import atomic_write_bytes, output_folder_problem, publish_together, sha256_of
from ..registry import register, teacher_name
from ..speculative.evaluation import evaluate_checkpoint
from ..tdmpc2.checkpoints import load_agent, load_checkpoint
from ..torch_files import CheckpointError
from ..tracking import Tracker

CARD_VERSION = 1
PLANNING_KEYS = ("horizon", "iterations", "num_samples", "num_elites", "num_pi_trajs", "min_std", "max_std",
                 "temperature")
# Keys that only say where and how verbosely a run writes: left out of the reproduction command.
BOOKKEEPING_KEYS = ("output_dir", "exp_name", "progress", "resume", "mlflow", "mlflow_experiment", "system_metrics",
                    "checkpoint_freq", "ray_address", "worker_cpus", "learner_cpus", "scale_wait")


# The source tree's models/ (an editable install, as `make` does); a wheel install ships no teachers.
SHIPPED_DIR = Path(__file__).resolve().parents[3] / "models"


def shipped_teacher(task: str, model_size: int = 1, seed: int = 1, directory: Path = SHIPPED_DIR) -> Path | None:
    """The shipped teacher file for (task, model_size, seed), or None when there is none."""
    path = Path(directory) / f"{task}-size{model_size}-seed{seed}.pt"
    return path if path.is_file() and path.with_suffix(".json").is_file() else None


class TeacherError(ValueError):
    """A teacher cannot be made or checked as asked (one-line message)."""


def train_command(config: dict) -> str:
    """The `gym-qwen train` command that reproduces a run: every result-relevant key that differs from its
    default (bookkeeping keys such as output_dir are left out)."""
    return command_line("train", config_from_dict(TrainConfig, config), ("task", "model_size", "steps", "seed"),
                        BOOKKEEPING_KEYS)


def planning_settings(config: dict, action_dim: int) -> dict:
    """The MPPI settings the run trained with (iterations resolved as the agent resolves them)."""
    cfg = config_from_dict(TrainConfig, config)
    out = {k: getattr(cfg, k) for k in PLANNING_KEYS}
    if out["iterations"] is None:
        out["iterations"] = 8 if action_dim >= 20 else 6
    return out


def hardware_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = names[0]
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu})"


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _read_curve(path: Path) -> list[list[float]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [[int(r["env_steps"]), float(r["return_mean"]), float(r["return_std"]), int(r["episodes"])]
                for r in csv.DictReader(f)]


def build_card(name: str, model_file: Path, ckpt: dict, eval_summary: dict, eval_seed: int,
               run_dir: Path, hardware: str, parameters: int, note: str = "", staged_file: Path | None = None) -> dict:
    """The card of a teacher: everything :func:`check_card` verifies plus how it was made. `staged_file`: the
    bytes that will become `model_file` (digest and size are taken from it), when they are not there yet."""
    cfg = ckpt["config"]
    data_file = staged_file if staged_file is not None else model_file
    summary = _read_json(run_dir / "summary.json") or {}
    default_planning = planning_settings(config_to_dict(TrainConfig()), ckpt["task_spec"]["action_dim"])
    planning = planning_settings(cfg, ckpt["task_spec"]["action_dim"])
    return {
        "card_version": CARD_VERSION,
        "name": name,
        "file": model_file.name,
        "sha256": sha256_of(data_file),
        "size_bytes": data_file.stat().st_size,
        "task": ckpt["task"],
        "model_size": cfg["model_size"],
        "parameters": parameters,
        "env_steps": int(ckpt["env_steps"]),
        "seed": cfg["seed"],
        "code_version": ckpt["code_version"],
        "evaluation": {
            "return_mean": round(eval_summary["return_mean"], 3),
            "return_std": round(eval_summary["return_std"], 3),
            "episodes": eval_summary["episodes"],
            "seed": eval_seed,
            "returns": [round(r, 3) for r in eval_summary["returns"]],
            "command": f"gym-qwen evaluate checkpoint=models/{model_file.name} episodes={eval_summary['episodes']} "
                       f"seed={eval_seed}",
        },
        "training": {
            "command": train_command(cfg),
            "gpu_command": train_command(cfg) + " device=cuda",
            "planning": planning,
            "planning_lowered": any(planning[k] != default_planning[k] for k in PLANNING_KEYS),
            "updates": summary.get("updates"),
            "train_hours": round(summary["train_seconds"] / 3600, 2) if "train_seconds" in summary else None,
            "env_steps_per_second": (round(summary["env_steps_per_second"], 2)
                                     if "env_steps_per_second" in summary else None),
            "hardware": hardware,
            "learning_curve": _read_curve(run_dir / "eval.csv"),
        },
        "note": note,
    }


def check_card(card: dict, ckpt: dict, model_file: Path | None = None) -> list[str]:
    """Differences between a card and its checkpoint (empty when they agree)."""
    cfg = ckpt["config"]
    problems = []
    expected = {"task": ckpt["task"], "model_size": cfg["model_size"], "env_steps": int(ckpt["env_steps"]),
                "seed": cfg["seed"], "code_version": ckpt["code_version"]}
    for key, value in expected.items():
        if card.get(key) != value:
            problems.append(f"{key}: card says {card.get(key)!r}, checkpoint says {value!r}")
    command = train_command(cfg)
    if card.get("training", {}).get("command") != command:
        problems.append(f"training command: card says {card.get('training', {}).get('command')!r}, "
                        f"checkpoint config gives {command!r}")
    planning = planning_settings(cfg, ckpt["task_spec"]["action_dim"])
    if card.get("training", {}).get("planning") != planning:
        problems.append(f"planning: card says {card.get('training', {}).get('planning')}, checkpoint {planning}")
    ev = card.get("evaluation", {})
    returns = ev.get("returns", [])
    if len(returns) != ev.get("episodes") or not returns:
        problems.append(f"evaluation: {len(returns)} returns for {ev.get('episodes')} episodes")
    else:
        if abs(float(np.mean(returns)) - ev["return_mean"]) > 1e-2 or abs(float(np.std(returns)) -
                                                                            ev["return_std"]) > 1e-2:
            problems.append("evaluation: return_mean/return_std do not match the listed returns")
    if model_file is not None:
        if card.get("file") != model_file.name:
            problems.append(f"file: card says {card.get('file')!r}, teacher file is {model_file.name!r}")
        if card.get("sha256") != sha256_of(model_file):
            problems.append("sha256 of the teacher file differs from the card's")
    return problems


def load_teacher_card(model_file: str | os.PathLike) -> dict:
    """The card beside a teacher file (`x.pt` -> `x.json`)."""
    card_path = Path(model_file).with_suffix(".json")
    if not card_path.is_file():
        raise TeacherError(f"teacher {model_file} has no card {card_path}")
    return json.loads(card_path.read_text())


def export_teacher(run_dir: str | os.PathLike, output_dir: str | os.PathLike = "models", name: str | None = None,
                   episodes: int = 10, seed: int = 1, force: bool = False,
                   show_progress: bool = False, note: str = "") -> tuple[Path, dict]:
    """Copy a finished run's agent to `output_dir/<name>.pt`, evaluate it as `gym-qwen evaluate` would, and
    write its card `<name>.json` and the folder's README index. Nothing is replaced unless `force`."""
    run_dir = Path(run_dir)
    agent_file = run_dir / "agent.pt"
    if not agent_file.is_file():
        raise TeacherError(f"{run_dir} holds no agent.pt: is it a finished training run directory?")
    ckpt = load_checkpoint(agent_file)
    if ckpt.get("kind") != "agent":
        raise CheckpointError(f"{agent_file} is a {ckpt.get('kind')} checkpoint, not an agent checkpoint")
    cfg = ckpt["config"]
    name = name or f"{ckpt['task']}-size{cfg['model_size']}-seed{cfg['seed']}"
    output_dir = Path(output_dir)
    problem = output_folder_problem(output_dir)
    if problem:
        raise TeacherError(f"cannot write teachers into output_dir={output_dir}: {problem}")
    model_file, card_file = output_dir / f"{name}.pt", output_dir / f"{name}.json"
    if not force and (model_file.exists() or card_file.exists()):
        raise TeacherError(f"{model_file} already exists; pass force=true to replace it or choose name=")
    # Stage the teacher and its card beside their targets, then publish both together: if evaluation, the card
    # or a rename fails (or is interrupted), models/ holds what it held before, never a file without its card.
    staged_model, staged_card = output_dir / f".{name}.staged.pt", output_dir / f".{name}.staged.json"
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open(agent_file, "rb") as src:
            atomic_write_bytes(staged_model, lambda f: shutil.copyfileobj(src, f))
        result, _ = evaluate_checkpoint(str(staged_model), episodes, seed, device="cpu", show_progress=show_progress)
        agent, _, _ = load_agent(str(staged_model), {}, "cpu")
        card = build_card(name, model_file, ckpt, result.summary(), seed, run_dir, hardware_description(),
                          agent.model.parameter_counts()["total"], note, staged_file=staged_model)
        atomic_write_bytes(staged_card, lambda f: f.write((json.dumps(card, indent=2) + "\n").encode()))
        publish_together([(staged_model, model_file), (staged_card, card_file)])
    finally:
        for staged in (staged_model, staged_card):
            if staged.exists():
                staged.unlink()
    write_index(output_dir)
    return model_file, card


def register_teacher(model_file: Path, card: dict, experiment: str = "gym-qwen") -> str:
    """Log a shipped teacher and its card to an MLflow run of `experiment` (under teacher/, with its evaluation
    return) and register them as a new version of <task>-teacher with the alias champion; returns the version's
    models:/ URI."""
    tracker = Tracker(True, experiment)
    tracker.start(f"teacher-{card['name']}", {"name": card["name"], "task": card["task"],
                                              "model_size": card["model_size"], "seed": card["seed"],
                                              "episodes": card["evaluation"]["episodes"],
                                              "eval_seed": card["evaluation"]["seed"], "sha256": card["sha256"]},
                  tags={"command": "teacher", "task": card["task"]})
    status = "FAILED"
    try:
        ev = card["evaluation"]
        tracker.log_metrics({"eval/return_mean": ev["return_mean"], "eval/return_std": ev["return_std"]},
                            card["env_steps"])
        for path in (model_file, model_file.with_suffix(".json")):
            tracker.log_artifact(path, "teacher")
        name = teacher_name(card["task"])
        version = register(tracker.run, "teacher", name, f"Gym Qwen TD-MPC2 teachers of {card['task']} "
                           "(gym-qwen teacher)", {"file": card["file"], "sha256": card["sha256"],
                                                  "env_steps": card["env_steps"], "return_mean": ev["return_mean"],
                                                  "code_version": card["code_version"]})
        status = "FINISHED"
    finally:
        tracker.end(status)
    return f"models:/{name}/{version}"


def write_index(output_dir: str | os.PathLike) -> Path:
    """models/README.md: one row per teacher card in the folder."""
    output_dir = Path(output_dir)
    rows = []
    for card_path in sorted(output_dir.glob("*.json")):
        c = json.loads(card_path.read_text())
        ev, tr = c["evaluation"], c["training"]
        rows.append(f"| `{c['file']}` | {c['task']} | {c['model_size']} | {c['env_steps']:,} | {c['seed']} | "
                    f"{ev['return_mean']:.1f} ± {ev['return_std']:.1f} ({ev['episodes']} ep.) | "
                    f"{'lowered' if tr['planning_lowered'] else 'paper'} | `{c['code_version']}` |")
    text = "\n".join([
        "# Teachers",
        "",
        "Trained TD-MPC2 agents shipped with Gym Qwen, each with a card (`<name>.json`: evaluation returns, the",
        "commands that made and evaluate it, planning settings, throughput, learning curve, code version).",
        "Regenerated by `gym-qwen teacher`; `tests/test_teachers.py` checks every card against its checkpoint.",
        "",
        "| file | task | model size | env steps | seed | evaluation return | planning | code |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Reproduce a card's return: `gym-qwen evaluate checkpoint=models/<file> episodes=10 seed=1`.",
        "Retrain a teacher: the card's `training.command` (add `device=cuda` on a GPU machine).",
        "",
    ])
    return atomic_write_bytes(output_dir / "README.md", lambda f: f.write(text.encode()))


__all__ = ["TeacherError", "SHIPPED_DIR", "shipped_teacher", "export_teacher", "build_card", "check_card",
           "load_teacher_card", "train_command", "planning_settings", "write_index", "sha256_of", "register_teacher"]
