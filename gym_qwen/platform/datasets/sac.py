"""`gym-qwen behaviour-policy`: the SAC behaviour policies D4RL-style datasets are sampled from
(stable-baselines3's SAC, the maintained implementation; D4RL used rlkit's).

A run lives in runs/behaviour/<env>-<level>/seed<seed>/: config.yaml, train_state.pt (weights-only torch: SAC's
networks, optimisers, entropy coefficient, counters, random states, evaluations, actor snapshots),
replay_buffer-<steps>.hdf5 (the buffer it goes with), eval.csv. `resume=true` continues from there; the episode
that was running when the checkpoint was written is not continued (SB3 starts a fresh one), so a resumed run
is not bit-identical to an uninterrupted one. Nothing is pickled (SB3's own .zip and replay-buffer saves are).

Every `eval_freq` steps the stochastic policy (the one datasets sample from) plays `eval_episodes` episodes.
level=medium stops at the first evaluation whose mean reaches target_fraction x expert_return and writes
models/behaviour/<env>-medium.pt + .json and the medium-replay recipe <env>-medium-replay.pt + .json: the
actor every `snapshot_freq` steps after the uniform warm-up, so make-dataset can replay that training's data
(each step acted by the newest snapshot at or before it, instead of the ever-changing actor: at most
snapshot_freq steps of learning apart). level=expert trains all `steps` and writes <env>-expert.pt + .json.
"""
from __future__ import annotations

import csv
import io
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from gym_qwen.platform.config import BehaviourPolicyConfig, command_line, config_to_dict, load_config, save_config
from gym_qwen.platform.config_schema import ConfigError
from gym_qwen.platform.files import atomic_write_bytes, code_version, output_folder_problem, publish_together
from gym_qwen.platform.progress import progress_bar
from gym_qwen.platform.torch_files import read_tagged_file, save_tagged_file
from gym_qwen.platform.tracking import Tracker

from .d4rl import ENV_IDS, REF_MAX_SCORE, DatasetError, normalized_score
from .generate import evaluate_policy
from .policies import GaussianActor, behaviour_paths, save_policy, save_recipe

STATE_FILE, CONFIG_FILE, EVAL_FILE = "train_state.pt", "config.yaml", "eval.csv"
STATE_FORMAT, STATE_VERSION = "gym-qwen/behaviour-train-state", 1
# Keys a resumed run may change (how long it goes on, what it logs, where things are written).
RESUMABLE = ("resume", "steps", "checkpoint_freq", "progress", "mlflow", "mlflow_experiment", "system_metrics",
             "torch_threads", "output_dir", "models_dir", "force")
EVAL_SEED_OFFSET = 10_000
# What the card's command leaves out: bookkeeping, not what is learned.
BOOKKEEPING = ("resume", "progress", "mlflow", "mlflow_experiment", "system_metrics", "torch_threads", "output_dir",
               "models_dir", "force", "checkpoint_freq")


def run_dir(cfg) -> Path:
    return Path(cfg.output_dir) / f"{cfg.env}-{cfg.level}" / f"seed{cfg.seed}"


def expert_return(cfg) -> float:
    return float(cfg.expert_return if cfg.expert_return is not None else REF_MAX_SCORE[cfg.env])


def command_of(cfg) -> str:
    return command_line("behaviour-policy", cfg, ("env", "level", "steps", "seed"), BOOKKEEPING)


def _actor_state(model) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.actor.state_dict().items()}


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": json.dumps(_np_state()), "python": json.dumps(_py_state())}


def _np_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _py_state():
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = json.loads(state["numpy"])
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))


# ---------------------------------------------------------------------------------------------- replay buffer
def _save_buffer(path: Path, buffer) -> None:
    # h5py is imported only where HDF5 files are read or written
    import h5py

    n = buffer.size()

    def write(f):
        with h5py.File(f, "w") as h5:
            for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
                h5.create_dataset(name, data=getattr(buffer, name)[:n])
            h5.attrs["pos"], h5.attrs["full"] = int(buffer.pos), bool(buffer.full)

    atomic_write_bytes(path, write)


def _load_buffer(path: Path, buffer) -> None:
    # h5py is imported only where HDF5 files are read or written
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            n = h5["rewards"].shape[0]
            if n > buffer.buffer_size:
                raise DatasetError(f"{path} holds {n} transitions, more than buffer_size={buffer.buffer_size}")
            for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
                getattr(buffer, name)[:n] = h5[name][()]
            buffer.pos, buffer.full = int(h5.attrs["pos"]), bool(h5.attrs["full"])
    except (OSError, KeyError) as e:
        raise DatasetError(f"cannot read the replay buffer {path}: {type(e).__name__}: {e}") from None


# ------------------------------------------------------------------------------------------------------ run
class _Run:
    """The state around SB3's learn(): evaluations, snapshots, checkpoints, MLflow, progress."""

    def __init__(self, cfg, out: Path, tracker, bar):
        self.cfg, self.out, self.tracker, self.bar = cfg, out, tracker, bar
        self.evals: list[dict] = []
        self.snapshots: list[dict] = []
        self.snapshot_steps: list[int] = []
        self.reached: dict | None = None
        self.started = time.perf_counter()
        self.seconds_before = 0.0
        self.steps_at_start = 0

    def evaluate(self, model) -> dict:
        actor = GaussianActor(_actor_state(model))
        returns = evaluate_policy(self.cfg.env, actor, self.cfg.eval_episodes, self.cfg.seed + EVAL_SEED_OFFSET)
        row = {"steps": int(model.num_timesteps), "return_mean": float(returns.mean()),
               "return_std": float(returns.std()), "normalized": float(normalized_score(self.cfg.env, returns.mean())),
               "returns": [float(r) for r in returns]}
        self.evals.append(row)
        self.tracker.log_metrics({"eval/return": row["return_mean"], "eval/return_std": row["return_std"],
                                  "eval/normalized_score": row["normalized"],
                                  "train/ent_coef": float(torch.exp(model.log_ent_coef.detach()).item())},
                                 step=row["steps"])
        self._write_evals()
        return row

    def _write_evals(self) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["steps", "return_mean", "return_std", "normalized"])
        for r in self.evals:
            writer.writerow([r["steps"], f"{r['return_mean']:.3f}", f"{r['return_std']:.3f}", f"{r['normalized']:.3f}"])
        atomic_write_bytes(self.out / EVAL_FILE, lambda f: f.write(buf.getvalue().encode()))

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started

    def checkpoint(self, model) -> None:
        steps = int(model.num_timesteps)
        buffer_file = f"replay_buffer-{steps}.hdf5"
        _save_buffer(self.out / buffer_file, model.replay_buffer)
        state = {"steps": steps, "n_updates": int(model._n_updates),
                 "policy": {k: v.detach().cpu().clone() for k, v in model.policy.state_dict().items()},
                 "actor_optimizer": model.actor.optimizer.state_dict(),
                 "critic_optimizer": model.critic.optimizer.state_dict(),
                 "log_ent_coef": model.log_ent_coef.detach().cpu().clone(),
                 "ent_coef_optimizer": model.ent_coef_optimizer.state_dict(),
                 "snapshots": self.snapshots, "snapshot_steps": self.snapshot_steps,
                 "evals_json": json.dumps(self.evals), "rng": _rng_state(), "buffer_file": buffer_file,
                 "seconds": self.seconds(), "mlflow_run_id": self.tracker.run_id or "",
                 "code_version": code_version()}
        save_tagged_file(self.out / STATE_FILE, STATE_FORMAT, STATE_VERSION, state)
        for old in self.out.glob("replay_buffer-*.hdf5"):
            if old.name != buffer_file:
                old.unlink()


def _callback(run: _Run, cfg):
    # stable-baselines3 is imported only to train or run a behaviour policy (import cost)
    from stable_baselines3.common.callbacks import BaseCallback

    target = cfg.target_fraction * expert_return(cfg)

    class Callback(BaseCallback):
        def _on_step(self) -> bool:
            t = int(self.model.num_timesteps)
            run.bar.update(t - run.bar.n)
            if cfg.level == "medium" and t >= cfg.learning_starts and (t - cfg.learning_starts) % cfg.snapshot_freq == 0:
                run.snapshots.append(_actor_state(self.model))
                run.snapshot_steps.append(t)
            if t % cfg.eval_freq == 0 and t >= cfg.learning_starts:
                row = run.evaluate(self.model)
                run.bar.set_postfix(eval=f"{row['return_mean']:.0f}", norm=f"{row['normalized']:.1f}")
                if cfg.level == "medium" and row["return_mean"] >= target:
                    run.reached = row
                    return False
            if t % cfg.checkpoint_freq == 0:
                run.checkpoint(self.model)
            return True

    return Callback()


def _check_resume(cfg, out: Path) -> dict | None:
    config_path, state_path = out / CONFIG_FILE, out / STATE_FILE
    if not config_path.exists():
        if not cfg.resume and out.exists() and any(out.iterdir()):
            raise ConfigError(f"{out} already holds a run; continue it with resume=true or use another seed")
        return None
    if not cfg.resume:
        raise ConfigError(f"{out} already holds a run; continue it with resume=true or use another seed")
    saved, asked = config_to_dict(load_config(BehaviourPolicyConfig, config_path)), config_to_dict(cfg)
    diffs = [f"{k}={saved[k]} (asked {v})" for k, v in asked.items() if k not in RESUMABLE and saved.get(k) != v]
    if diffs:
        raise ConfigError(f"resume=true cannot change the run in {out}: " + ", ".join(diffs) + f"; only "
                          f"{', '.join(k for k in RESUMABLE if k != 'resume')} may change")
    if not state_path.exists():
        return None
    return read_tagged_file(state_path, STATE_FORMAT, STATE_VERSION, DatasetError, "behaviour-policy training state")


def _sb3_model(cfg, buffer_size: int):
    # gymnasium is imported only where an environment is built (import cost)
    import gymnasium
    # stable-baselines3 is imported only to train or run a behaviour policy (import cost)
    from stable_baselines3 import SAC

    env = gymnasium.make(ENV_IDS[cfg.env])
    return SAC("MlpPolicy", env, learning_rate=cfg.learning_rate, buffer_size=buffer_size,
               learning_starts=cfg.learning_starts, batch_size=cfg.batch_size, seed=cfg.seed, device="cpu", verbose=0)


def _restore(model, state: dict, out: Path) -> None:
    model.policy.load_state_dict(state["policy"])
    model.actor.optimizer.load_state_dict(state["actor_optimizer"])
    model.critic.optimizer.load_state_dict(state["critic_optimizer"])
    with torch.no_grad():
        model.log_ent_coef.copy_(state["log_ent_coef"])
    model.ent_coef_optimizer.load_state_dict(state["ent_coef_optimizer"])
    model.num_timesteps, model._n_updates = int(state["steps"]), int(state["n_updates"])
    _load_buffer(out / state["buffer_file"], model.replay_buffer)
    _set_rng_state(state["rng"])


def _card(cfg, level: str, steps: int, returns: np.ndarray, seconds: float, extra: dict) -> dict:
    # stable-baselines3 is imported only to train or run a behaviour policy (import cost)
    import stable_baselines3

    return {"env": cfg.env, "env_id": ENV_IDS[cfg.env], "level": level, "steps": steps, "seed": cfg.seed,
            "eval": {"episodes": len(returns), "return_mean": float(returns.mean()), "return_std": float(returns.std()),
                     "normalized_score": float(normalized_score(cfg.env, returns.mean())),
                     "returns": [round(float(r), 3) for r in returns], "policy": "stochastic (as datasets sample it)",
                     "reset_seeds": f"(seed + {EVAL_SEED_OFFSET}) * 1000003 + i"},
            "expert_return": expert_return(cfg), "target_fraction": cfg.target_fraction,
            "expert_return_source": "config" if cfg.expert_return is not None else "D4RL REF_MAX_SCORE (d4rl/infos.py)",
            "command": command_of(cfg), "make_dataset": f"gym-qwen make-dataset env={cfg.env} dataset={level} seed=0",
            "algorithm": f"stable-baselines3 {stable_baselines3.__version__} SAC (MlpPolicy, defaults except the "
                         "keys in the command)",
            "hours": round(seconds / 3600, 3), "steps_per_second": round(steps / max(seconds, 1e-9), 1),
            "code_version": code_version(), **extra}


def _publish(files: list[tuple[Path, bytes | None, callable]]) -> None:
    """Stage every (target, writer) beside its target, then rename them all into place together."""
    staged = []
    for target, write in files:
        tmp = target.with_name(f".{target.name}.staged")
        write(tmp)
        staged.append((tmp, target))
    publish_together(staged)


def train_behaviour(cfg, show_progress: bool = True) -> dict:
    """Train (or continue) the run; returns a summary. Raises ConfigError / DatasetError for user errors."""
    torch.set_num_threads(cfg.torch_threads)
    out = run_dir(cfg)
    policy_path, card_path = behaviour_paths(cfg.models_dir, cfg.env, cfg.level)
    if policy_path.exists() and not cfg.force:
        raise ConfigError(f"{policy_path} exists; pass force=true to replace it")
    for folder in (out, Path(cfg.models_dir)):
        problem = output_folder_problem(folder)
        if problem:
            raise ConfigError(f"cannot write into {folder}: {problem}")
    state = _check_resume(cfg, out)
    if state is not None and int(state["steps"]) >= cfg.steps:
        raise ConfigError(f"the run in {out} is at {state['steps']} steps already; ask for more with steps=")
    tracker = Tracker(cfg.mlflow, cfg.mlflow_experiment, system_metrics=cfg.system_metrics)
    tracker.preflight()
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / CONFIG_FILE)
    model = _sb3_model(cfg, cfg.buffer_size)  # never smaller: a resumed run restores the buffer's pos and full flag
    start_steps = 0
    status = "FAILED"
    try:
        tracker.start(f"behaviour-{cfg.env}-{cfg.level}-seed{cfg.seed}", config_to_dict(cfg),
                      tags={"kind": "behaviour-policy"}, run_id=(state or {}).get("mlflow_run_id") or None)
        with progress_bar(total=cfg.steps, desc=f"SAC {cfg.env} {cfg.level}", unit="step",
                          enabled=show_progress) as bar:
            run = _Run(cfg, out, tracker, bar)
            if state is not None:
                _restore(model, state, out)
                run.snapshots, run.snapshot_steps = list(state["snapshots"]), list(state["snapshot_steps"])
                run.evals, run.seconds_before = json.loads(state["evals_json"]), float(state["seconds"])
                start_steps = int(state["steps"])
                bar.update(start_steps)
            model.learn(total_timesteps=cfg.steps - start_steps, reset_num_timesteps=state is None,
                        callback=_callback(run, cfg))
            steps = int(model.num_timesteps)
            run.checkpoint(model)
        summary = {"run_dir": str(out), "steps": steps, "seconds": run.seconds(), "evals": run.evals}
        if cfg.level == "medium" and run.reached is None:
            summary["reached"] = False
            summary["target"] = cfg.target_fraction * expert_return(cfg)
            status = "FINISHED"
            return summary
        actor = _actor_state(model)
        returns = np.asarray(run.reached["returns"]) if run.reached else evaluate_policy(
            cfg.env, GaussianActor(actor), cfg.eval_episodes, cfg.seed + EVAL_SEED_OFFSET)
        extra = {"actor_arch": "MLP [256, 256] ReLU, mean and log-std heads, tanh squashing (SB3 SAC actor)"}
        card = _card(cfg, cfg.level, steps, returns, run.seconds(), extra)
        files = [(policy_path, lambda p: save_policy(p, cfg.env, cfg.level, actor, {
                    "steps": steps, "eval_return_mean": float(returns.mean()), "seed": cfg.seed})),
                 (card_path, lambda p: atomic_write_bytes(p, lambda f: f.write(json.dumps(card, indent=2).encode())))]
        if cfg.level == "medium":
            recipe_path, recipe_card = behaviour_paths(cfg.models_dir, cfg.env, "medium-replay")
            rcard = {**card, "level": "medium-replay", "snapshots": len(run.snapshots),
                     "snapshot_freq": cfg.snapshot_freq, "learning_starts": cfg.learning_starts,
                     "transitions": steps, "make_dataset": f"gym-qwen make-dataset env={cfg.env} "
                                                           "dataset=medium-replay seed=0",
                     "recipe": "steps < learning_starts: uniform actions; step t after: the newest actor snapshot "
                               "taken at or before t, sampled stochastically; 1000-step episodes"}
            files += [(recipe_path, lambda p: save_recipe(p, cfg.env, run.snapshots, run.snapshot_steps,
                                                          cfg.learning_starts, steps, {"seed": cfg.seed})),
                      (recipe_card, lambda p: atomic_write_bytes(
                          p, lambda f: f.write(json.dumps(rcard, indent=2).encode())))]
        Path(cfg.models_dir).mkdir(parents=True, exist_ok=True)
        _publish(files)
        tracker.log_artifact(card_path)
        summary.update(reached=True, policy=str(policy_path), card=card, files=[str(f[0]) for f in files])
        status = "FINISHED"
        return summary
    finally:
        tracker.end(status)
        model.env.close()
