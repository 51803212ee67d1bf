"""A training run end to end: run directory, resume, checkpoints, evaluation, MLflow, progress bar."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import signal
import tempfile
import threading
from dataclasses import asdict
from pathlib import Path

import torch

from ..config import (ConfigError, TrainConfig, config_from_dict, config_to_dict, format_value, load_config,
                      save_config)
from ..envs import task_spec
from ..files import atomic_write_bytes, output_folder_problem
from ..progress import progress_bar
from ..storage import display, download, exists, is_uri, join, storage_problem, upload
from ..tdmpc2.checkpoints import agent_payload, check_compatible, load_checkpoint, model_signature, save_checkpoint
from ..torch_files import CheckpointError
from ..tracking import Tracker
from .loop import InProcessBackend, LoopState, run_training

AGENT_FILE, STATE_FILE = "agent.pt", "train_state.pt"


class RunDirectoryError(ConfigError):
    """The run directory cannot be used as asked (one-line message; a user error, exit 2)."""


def run_dir(cfg) -> Path:
    return Path(cfg.output_dir) / cfg.task / cfg.exp_name / f"seed{cfg.seed}"


def run_location(cfg) -> str:
    """Where the run directory is: run_dir's path, or its URI when output_dir is one (s3://...)."""
    return join(cfg.output_dir, cfg.task, cfg.exp_name, f"seed{cfg.seed}")


# The files of a run directory on a URI that a resume reads back (train_state.pt is written there straight by the
# process that makes it; the others are written locally and then uploaded whole)
RESUME_FILES = ("config.yaml", STATE_FILE, "eval.csv")


def _stage_remote_run(cfg, remote: str) -> Path:
    """A run directory on a URI: checked (writable, not holding another run unless resume=true) and staged in a
    local temporary folder, which holds the files a resume reads (downloaded) and those written before upload."""
    problem = storage_problem(remote)
    if problem:
        raise RunDirectoryError(f"cannot write the run directory {display(remote)}: {problem} (change output_dir=)")
    if not cfg.resume and (exists(join(remote, STATE_FILE)) or exists(join(remote, AGENT_FILE))):
        raise RunDirectoryError(f"{display(remote)} already holds a run; pass resume=true to continue it, or change "
                                f"exp_name= or output_dir=")
    out = Path(tempfile.mkdtemp(prefix="gym-qwen-run-"))
    try:
        if cfg.resume:
            for name in RESUME_FILES:
                download(join(remote, name), out / name)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def _write_eval_csv(path: Path, history: list) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["env_steps", "return_mean", "return_std", "episodes"])
    writer.writeheader()
    for row in history:
        writer.writerow({k: row[k] for k in writer.fieldnames})
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue().encode()))


# Keys a resumed run may change: how long it goes on, how often it evaluates and checkpoints, what it logs, and
# where and how fast the same maths runs (output_dir only says where the run directory is found; device,
# compile and cuda_graph change the arithmetic's speed, not what is learned (cuda_graph draws other random
# numbers); Ray placement; learner and learner_workers: the data-parallel learner's update equals the single
# learner's to float tolerance; learner_log_limit: when it checkpoints). Every other key is the run's own:
# changing it on resume is refused. docs/architecture.md ("Resuming a run") has the reasons.
RESUMABLE_KEYS = ("resume", "steps", "eval_freq", "eval_episodes", "checkpoint_freq", "progress", "mlflow",
                  "mlflow_experiment", "system_metrics", "torch_threads", "output_dir", "device", "compile",
                  "cuda_graph", "ray_address", "worker_cpus", "learner_cpus", "scale_wait", "learner",
                  "learner_workers", "learner_log_limit")
# How episodes are collected. num_workers, num_envs and chunk_decisions may change while collection stays
# asynchronous, and an in-process run may continue asynchronously (the Ray backend reads in-process checkpoints);
# nothing else.
COLLECTION_KEYS = ("num_workers", "num_envs", "chunk_decisions", "sync")


class ResumeConfigError(ConfigError):
    """resume=true asked for a config that differs from the saved run's in keys that may not change."""


def _collection(c: dict) -> str:
    if c["num_workers"] == 0:
        return "in-process"
    return "lockstep" if c["sync"] else "asynchronous"


def resume_differences(saved: dict, asked: dict) -> list[str]:
    """`key=saved (asked new)` for every key of `asked` (a config_to_dict) that a resume may not change."""
    diffs = [f"{k}={format_value(saved.get(k))} (asked {format_value(v)})" for k, v in asked.items()
             if k not in RESUMABLE_KEYS and k not in COLLECTION_KEYS and saved.get(k) != v]
    before, after = _collection(saved), _collection(asked)
    if before != after and not (before == "in-process" and after == "asynchronous"):
        diffs += [f"{k}={format_value(saved.get(k))} (asked {format_value(asked[k])}; {before} collection cannot continue as "
                  f"{after})" for k in COLLECTION_KEYS if saved.get(k) != asked[k]]
    return diffs


def _resume_checkpoint(cfg, out: Path) -> dict | None:
    """resume=true: refuse a config that changes the saved run, then load and check its training checkpoint
    (None when the run directory holds none yet: training starts afresh). Reads only; writes nothing."""
    state_path, config_path = out / STATE_FILE, out / "config.yaml"
    ckpt = None
    try:
        if config_path.exists():
            saved = load_config(TrainConfig, config_path)
        elif state_path.exists():
            ckpt = load_checkpoint(state_path)
            saved = config_from_dict(TrainConfig, ckpt["config"])
        else:
            return None
    except ConfigError as e:
        raise ConfigError(f"cannot resume the run in {out}: its saved config does not load here: {e}") from None
    diffs = resume_differences(config_to_dict(saved), config_to_dict(cfg))
    if diffs:
        raise ResumeConfigError(
            f"resume=true would change the run in {out}: {', '.join(diffs)}; on resume only "
            f"{', '.join(k for k in RESUMABLE_KEYS if k != 'resume')} may change (and num_workers, num_envs while "
            "collection stays asynchronous); start a new run with another exp_name= instead")
    if ckpt is None and state_path.exists():
        ckpt = load_checkpoint(state_path)
    if ckpt is None:
        return None
    check_compatible(ckpt, task=cfg.task, arch=model_signature(cfg), path=str(state_path))
    if ckpt["config"]["seed"] != cfg.seed:
        raise CheckpointError(f"{state_path} was trained with seed={ckpt['config']['seed']}, not {cfg.seed}")
    saved_episodic = ckpt.get("task_spec", {}).get("episodic")
    if saved_episodic is not None and saved_episodic != task_spec(cfg.task).episodic:
        raise CheckpointError(
            f"{state_path} was trained {'with' if saved_episodic else 'without'} a termination head, but this "
            f"code treats {cfg.task} as {'not ' if saved_episodic else ''}episodic; start a new run (another "
            "exp_name=)")
    return ckpt


@contextlib.contextmanager
def _sigterm_sets(flag: list):
    """While inside, SIGTERM (`ray job stop`, `kill`) appends to `flag` instead of ending the process (main
    thread only: elsewhere signals cannot be handled, and nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: flag.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train(cfg, backend_factory=InProcessBackend, stop_on_sigterm: bool = False, tracker: Tracker | None = None,
          on_evaluation=None) -> dict:
    """Train per a TrainConfig. Returns a summary dict (final evaluation, paths, run id, throughput).
    `backend_factory(cfg)` makes the training backend: in-process by default, Ray actors from gym_qwen.actors.

    Everything that can refuse the run (device, run directory, a resume that changes the run's config or does not
    fit its checkpoint) is checked before anything is built or written; the backend and the MLflow run are made
    inside the try whose finally closes them, so no failure leaves actors (or Ray) behind.

    With `stop_on_sigterm` (the train command), SIGTERM stops training at the next episode boundary, after a
    checkpoint; the summary then has `stopped: True` and no agent.pt is written: resume=true continues.

    `tracker`: the MLflow run to log to (default: one made from cfg.mlflow and cfg.mlflow_experiment);
    `on_evaluation(record)` after every evaluation (a sweep's trial reports it to Tune)."""
    torch.set_num_threads(cfg.torch_threads)
    preflight = getattr(backend_factory, "preflight", None)  # e.g. device=cuda on a machine without CUDA
    if preflight is not None:
        preflight(cfg)
    remote = run_location(cfg) if is_uri(cfg.output_dir) else None  # a run directory on a URI (s3://...)
    if remote is None:
        out = run_dir(cfg)
        if not cfg.resume and ((out / STATE_FILE).exists() or (out / AGENT_FILE).exists()):
            raise RunDirectoryError(f"{out} already holds a run; pass resume=true to continue it, or change "
                                    f"exp_name= or output_dir=")
        problem = output_folder_problem(out)
        if problem:
            raise RunDirectoryError(f"cannot write the run directory {out}: {problem} (change output_dir=)")
    else:
        out = _stage_remote_run(cfg, remote)
    state_path = out / STATE_FILE
    where = display(remote) if remote else str(out)  # what the summary and messages name

    def publish(name: str) -> None:  # a file written in the staging folder goes to the URI, whole
        if remote is not None:
            upload(out / name, join(remote, name))

    tracker = tracker or Tracker(cfg.mlflow, cfg.mlflow_experiment, system_metrics=cfg.system_metrics)
    try:
        ckpt = _resume_checkpoint(cfg, out) if cfg.resume else None
        tracker.preflight()  # an MLflow server that does not answer, refused in seconds rather than minutes
    except BaseException:
        if remote is not None:  # the staging folder goes with the refusal
            shutil.rmtree(out, ignore_errors=True)
        raise
    backend = None
    status = "FAILED"
    stop: list = []  # SIGTERM's mark: it stops training at the next episode boundary
    signals = contextlib.ExitStack()
    try:
        backend = backend_factory(cfg)
        if stop_on_sigterm:  # after the backend: ray.init installs a SIGTERM handler of its own
            signals.enter_context(_sigterm_sets(stop))
        spec = backend.spec
        state = LoopState()
        run_id = None
        if ckpt is not None:
            backend.load_state(ckpt)
            state = LoopState(**ckpt["loop"])
            run_id = ckpt.get("mlflow_run_id")
            ckpt = None  # the replay buffer now lives in the backend; do not hold a second copy
        save_config(cfg, out / "config.yaml")
        publish("config.yaml")
        run_id = tracker.start(f"{cfg.task}-{cfg.exp_name}-seed{cfg.seed}", config_to_dict(cfg),
                               tags={"task": cfg.task, "model_size": str(cfg.model_size), "command": "train"},
                               run_id=run_id) if cfg.mlflow else None
        tracker.log_artifact(out / "config.yaml")

        def on_episode(episode, metrics, env_steps):
            tracker.log_metrics({"train/episode_return": episode.total_reward, "train/episode_length": len(episode),
                                 **{f"train/{k}": v for k, v in metrics.items()}}, env_steps)
            bar.set_postfix(ret=f"{episode.total_reward:.1f}", updates=backend.num_updates)

        def on_eval(env_steps):
            res = backend.evaluate(cfg.eval_episodes, cfg.seed)
            record = {"env_steps": env_steps, "return_mean": res.mean, "return_std": res.std,
                      "episodes": len(res.returns)}
            tracker.log_metrics({"eval/return_mean": res.mean, "eval/return_std": res.std,
                                 "eval/ms_per_decision": res.ms_per_decision}, env_steps)
            _write_eval_csv(out / "eval.csv", state.eval_history + [record])
            publish("eval.csv")
            bar.write(f"eval @ {env_steps:>8,} env steps: return {res.mean:8.1f} ± {res.std:.1f}")
            if on_evaluation is not None:
                on_evaluation(record)
            return record

        def on_checkpoint(env_steps):
            meta = {**agent_payload(cfg, spec, None, env_steps), "kind": "train_state", "loop": asdict(state),
                    "mlflow_run_id": run_id}
            if remote is not None and hasattr(backend, "save_state_to"):
                backend.save_state_to(join(remote, STATE_FILE), meta)  # the learner's node writes it, not the driver
            else:  # the in-process learner is this process; a local run directory is the driver's
                save_checkpoint(join(remote, STATE_FILE) if remote else state_path, {**meta, **backend.state()})

        initial = backend.decisions * spec.action_repeat
        with progress_bar(total=cfg.steps, desc=f"train {cfg.task}", unit="step", enabled=cfg.progress,
                          initial=initial) as bar:
            run_training(cfg, spec, backend, state, on_episode=on_episode, on_eval=on_eval,
                         on_checkpoint=on_checkpoint, bar=bar, should_stop=lambda: bool(stop))
        env_steps = backend.decisions * spec.action_repeat
        if stop and env_steps < cfg.steps:  # stopped at an episode boundary, just after a checkpoint
            status = "KILLED"
            return {"task": cfg.task, "stopped": True, "env_steps": env_steps, "run_dir": where,
                    "checkpoint": join(where, STATE_FILE), "mlflow_run_id": run_id}
        agent_path = save_checkpoint(out / AGENT_FILE, agent_payload(cfg, spec, backend.agent_weights(), env_steps))
        publish(AGENT_FILE)
        tracker.log_artifact(agent_path, "checkpoints")
        if (out / "eval.csv").exists():
            tracker.log_artifact(out / "eval.csv")
        summary = {"task": cfg.task, "env_steps": env_steps, "updates": backend.num_updates,
                   "run_dir": where, "checkpoint": join(where, AGENT_FILE), "mlflow_run_id": run_id,
                   "train_seconds": state.train_seconds,
                   "env_steps_per_second": env_steps / max(state.train_seconds, 1e-9),
                   "last_episode_return": state.episode_returns[-1] if state.episode_returns else None,
                   "eval": state.eval_history[-1] if state.eval_history else None,
                   "eval_history": state.eval_history}
        atomic_write_bytes(out / "summary.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
        publish("summary.json")
        status = "FINISHED"
        return summary
    finally:
        try:
            signals.close()
            if backend is not None:
                backend.close()
        finally:
            tracker.end(status)
            if remote is not None:
                shutil.rmtree(out, ignore_errors=True)
