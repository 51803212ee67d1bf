"""`gym-qwen dt-train`: a Decision Transformer on one offline dataset, min-decision-transformer's loop.

`max_train_iters` iterations of `num_updates_per_iter` updates (AdamW, linear warm-up of the learning rate over
`warmup_steps` updates, gradient norm clipped at `grad_clip`, mean squared error of the predicted actions at the
unpadded steps), each followed by an evaluation of `num_eval_ep` episodes, a CSV row (the original's columns
plus the score's spread and the speed), MLflow metrics (step = updates) and a checkpoint. Files in `log_dir`:
dt_<dataset>_model_<time>.pt (latest), ..._best.pt (best evaluation), dt_<dataset>_log_<time>.csv and
dt_<dataset>_summary_<time>.json. A checkpoint is a weights-only torch file written atomically: the weights,
the model dimensions, the config, the state normalisation, the evaluation target and the dataset's name, source
and sha256.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from gym_qwen.platform.config import config_to_dict
from gym_qwen.platform.config_schema import ConfigError
from gym_qwen.platform.datasets import load_offline_data
from gym_qwen.platform.datasets.d4rl import DatasetError, OfflineData, default_name, sha256_of
from gym_qwen.platform.devices import resolve_device
from gym_qwen.platform.files import atomic_write_bytes, code_version, output_folder_problem
from gym_qwen.platform.progress import progress_bar
from gym_qwen.platform.storage import display, is_uri, join, storage_problem, upload
from gym_qwen.platform.torch_files import CheckpointError, read_tagged_file, save_tagged_file
from gym_qwen.platform.tracking import Tracker

from .data import TrajectoryWindows
from .evaluate import DT_TARGETS, evaluate_dt
from .model import DecisionTransformer, DTDims, effective_p

FORMAT, VERSION = "gym-qwen/decision-transformer", 1
CSV_COLUMNS = ("duration", "num_updates", "action_loss", "eval_avg_reward", "eval_avg_ep_len", "eval_d4rl_score",
               "eval_d4rl_score_std", "updates_per_s")


def dataset_path(cfg) -> str:
    return cfg.data or str(Path(cfg.dataset_dir) / f"{default_name(cfg.env, cfg.dataset)}.hdf5")


def load_training_data(cfg) -> tuple[OfflineData, dict]:
    """The dataset named by the config (data=, minari=, or <dataset_dir>/<env>-<dataset>-v5.hdf5) and its identity
    (name, source, sha256 of the file, or of the content for a Minari dataset, and content_sha256)."""
    if cfg.minari:
        data = load_offline_data(minari=cfg.minari, env=cfg.env, minari_root=cfg.minari_root)
        name, sha = cfg.minari.replace("/", "-"), None
    else:
        path = dataset_path(cfg)
        if not cfg.data and not Path(path).exists():
            raise DatasetError(f"dataset not found: {path}; make it with gym-qwen make-dataset env={cfg.env} "
                               f"dataset={cfg.dataset}, or give data=FILE.hdf5 or minari=ID")
        data = load_offline_data(data=path, env=cfg.env)
        name = str(data.metadata.get("name") or Path(path).stem.replace("_", "-"))
        sha = sha256_of(path)
    content = data.content_sha256()
    return data, {"name": name, "source": data.source, "sha256": sha or content, "content_sha256": content,
                  "transitions": len(data),
                  "level": str(data.metadata.get("level", cfg.dataset if not (cfg.data or cfg.minari) else ""))}


def save_dt_checkpoint(path: Path, model, cfg_dict: dict, env: str, dataset: dict, windows, rtg_target: float,
                       rtg_scale: float, updates: int, evaluation: dict | None) -> Path:
    payload = {"env": env, "dims": dataclasses.asdict(model.dims),
               "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
               "config": cfg_dict, "dataset": dataset, "state_mean": torch.from_numpy(windows.state_mean),
               "state_std": torch.from_numpy(windows.state_std), "rtg_target": float(rtg_target),
               "rtg_scale": float(rtg_scale), "updates": int(updates),
               "eval_json": json.dumps(evaluation or {}), "code_version": code_version()}
    return save_tagged_file(path, FORMAT, VERSION, payload)


def load_dt_checkpoint(path: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, checkpoint dict). Raises CheckpointError in one line."""
    ckpt = read_tagged_file(path, FORMAT, VERSION, CheckpointError, "checkpoint", kind="Decision Transformer checkpoint")
    try:
        model = DecisionTransformer(DTDims(**ckpt["dims"]))
        model.load_state_dict(ckpt["model"])
    except (TypeError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the weights do not fit the model it describes ({type(e).__name__})") from None
    return model.to(device).eval(), ckpt


def _optimizer(model, lr: float, wd: float, device: torch.device):
    try:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd, foreach=True)


class DTTrainer:
    """The update step, separate from the loop so the benchmark and tests time and check exactly it."""

    def __init__(self, model, windows: TrajectoryWindows, *, lr: float, wt_decay: float, warmup_steps: int,
                 grad_clip: float, batch_size: int, seed: int, device: torch.device):
        self.model, self.windows, self.device = model, windows, device
        self.grad_clip, self.batch_size = grad_clip, batch_size
        self.optimizer = _optimizer(model, lr, wt_decay, device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min((s + 1) / warmup_steps, 1.0))
        self.rng = np.random.default_rng(seed)
        self.updates = 0

    def batch(self):
        return [x.to(self.device, non_blocking=True) for x in self.windows.sample(self.batch_size, self.rng)]

    def loss(self, timesteps, states, actions, rtg, mask):
        pred = self.model(timesteps, states, actions, rtg)
        err = ((pred - actions) ** 2).sum(-1) * mask
        return err.sum() / (mask.sum() * actions.shape[-1])

    def step(self) -> float:
        self.model.train()
        loss = self.loss(*self.batch())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip, foreach=True)
        self.optimizer.step()
        self.scheduler.step()
        self.updates += 1
        return float(loss.detach())


def build(cfg, windows: TrajectoryWindows, device: torch.device):
    torch.manual_seed(cfg.seed)
    dims = DTDims(state_dim=windows.state_dim, act_dim=windows.act_dim, n_blocks=cfg.n_blocks, h_dim=cfg.embed_dim,
                  context_len=cfg.context_len, n_heads=cfg.n_heads, drop_p=cfg.dropout_p)
    model = DecisionTransformer(dims).to(device)
    return model, DTTrainer(model, windows, lr=cfg.lr, wt_decay=cfg.wt_decay, warmup_steps=cfg.warmup_steps,
                            grad_clip=cfg.grad_clip, batch_size=cfg.batch_size, seed=cfg.seed, device=device)


def _csv_bytes(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def train_dt(cfg, show_progress: bool = True, tracker=None, on_evaluation=None) -> dict:
    """Train; returns the summary (also written as JSON beside the checkpoints). `tracker`: the MLflow run to log
    to (default: one made from cfg.mlflow and cfg.mlflow_experiment); `on_evaluation(row, evaluation)` after every
    iteration (row: the CSV log's; evaluation: None when num_eval_ep=0)."""
    torch.set_num_threads(cfg.torch_threads)
    device = resolve_device(cfg.device)
    remote = cfg.log_dir if is_uri(cfg.log_dir) else None  # log_dir on a URI (s3://...)
    problem = storage_problem(remote) if remote else output_folder_problem(cfg.log_dir)
    if problem:
        raise ConfigError(f"cannot write into log_dir={display(cfg.log_dir)}: {problem}")
    data, dataset = load_training_data(cfg)
    windows = TrajectoryWindows(data, cfg.context_len, cfg.rtg_scale)
    longest = int((windows.ends - windows.starts).max())
    if longest > 4096:
        raise DatasetError(f"{data.source} has an episode of {longest} steps; the timestep embedding holds 4096")
    env = data.env
    rtg_target = cfg.rtg_target if cfg.rtg_target is not None else DT_TARGETS[env]
    model, trainer = build(cfg, windows, device)
    tracker = tracker or Tracker(cfg.mlflow, cfg.mlflow_experiment, system_metrics=cfg.system_metrics)
    tracker.preflight()

    stamp = datetime.now().strftime("%y-%m-%d-%H-%M-%S")
    # log_dir on a URI: the files are written in a local temporary folder and each uploaded whole as it changes
    # (an object store shows an object only once complete, so a reader never sees half of one)
    log_dir = Path(tempfile.mkdtemp(prefix="gym-qwen-dt-")) if remote else Path(cfg.log_dir)

    def publish(path: Path) -> None:
        if remote:
            upload(path, join(remote, path.name))

    def where(path: Path) -> str:  # what the summary names: the file on the URI, or the local path
        return display(join(remote, path.name)) if remote else str(path)
    prefix = f"dt_{dataset['name']}"
    model_path = log_dir / f"{prefix}_model_{stamp}.pt"
    best_path = log_dir / f"{prefix}_model_{stamp}_best.pt"
    csv_path = log_dir / f"{prefix}_log_{stamp}.csv"
    summary_path = log_dir / f"{prefix}_summary_{stamp}.json"
    cfg_dict = config_to_dict(cfg)
    log_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    best = -float("inf")
    best_eval = None
    total = cfg.max_train_iters * cfg.num_updates_per_iter
    started = time.perf_counter()
    train_seconds = 0.0
    status = "FAILED"
    try:
        tracker.start(f"dt-{dataset['name']}-seed{cfg.seed}", {**cfg_dict, "dataset_sha256": dataset["sha256"],
                                                                "dataset_content_sha256": dataset["content_sha256"],
                                                                "dataset_name": dataset["name"],
                                                                "dropout_effective": effective_p(cfg.dropout_p)},
                      tags={"kind": "decision-transformer", "dataset": dataset["name"]})
        with progress_bar(total=total, desc=f"DT {dataset['name']}", unit="upd", enabled=show_progress) as bar:
            for it in range(cfg.max_train_iters):
                losses = []
                t0 = time.perf_counter()
                for _ in range(cfg.num_updates_per_iter):
                    losses.append(trainer.step())
                    bar.update(1)
                dt = time.perf_counter() - t0
                train_seconds += dt
                evaluation = None
                if cfg.num_eval_ep > 0:
                    evaluation = evaluate_dt(model, env, cfg.num_eval_ep, cfg.seed, rtg_target=rtg_target,
                                             rtg_scale=cfg.rtg_scale, state_mean=windows.state_mean,
                                             state_std=windows.state_std, max_ep_len=cfg.max_eval_ep_len,
                                             device=device)
                row = {"duration": round(time.perf_counter() - started, 1), "num_updates": trainer.updates,
                       "action_loss": float(np.mean(losses)),
                       "eval_avg_reward": evaluation["return_mean"] if evaluation else "",
                       "eval_avg_ep_len": evaluation["length_mean"] if evaluation else "",
                       "eval_d4rl_score": evaluation["normalized_mean"] if evaluation else "",
                       "eval_d4rl_score_std": evaluation["normalized_std"] if evaluation else "",
                       "updates_per_s": cfg.num_updates_per_iter / dt}
                rows.append(row)
                atomic_write_bytes(csv_path, lambda f: f.write(_csv_bytes(rows)))
                publish(csv_path)
                metrics = {"train/action_loss": row["action_loss"], "train/updates_per_s": row["updates_per_s"]}
                if evaluation:
                    metrics.update({"eval/return": evaluation["return_mean"], "eval/return_std": evaluation["return_std"],
                                    "eval/d4rl_score": evaluation["normalized_mean"],
                                    "eval/d4rl_score_std": evaluation["normalized_std"]})
                    bar.set_postfix(loss=f"{row['action_loss']:.4f}", score=f"{evaluation['normalized_mean']:.1f}")
                tracker.log_metrics(metrics, step=trainer.updates)
                save_dt_checkpoint(model_path, model, cfg_dict, env, dataset, windows, rtg_target, cfg.rtg_scale,
                                   trainer.updates, evaluation)
                publish(model_path)
                score = evaluation["normalized_mean"] if evaluation else -row["action_loss"]
                if score >= best:
                    best, best_eval = score, evaluation
                    save_dt_checkpoint(best_path, model, cfg_dict, env, dataset, windows, rtg_target, cfg.rtg_scale,
                                       trainer.updates, evaluation)
                    publish(best_path)
                if on_evaluation is not None:
                    on_evaluation(row, evaluation)
        summary = {"dataset": dataset, "env": env, "updates": trainer.updates, "train_seconds": train_seconds,
                   "updates_per_s": trainer.updates / max(train_seconds, 1e-9), "final": rows[-1],
                   "final_eval": evaluation, "best_eval": best_eval, "model": where(model_path), "best": where(best_path),
                   "log": where(csv_path), "rtg_target": rtg_target, "code_version": code_version()}
        atomic_write_bytes(summary_path, lambda f: f.write(json.dumps(summary, indent=2).encode()))
        publish(summary_path)
        summary["summary"] = where(summary_path)
        tracker.log_artifact(csv_path)
        tracker.log_artifact(summary_path)
        for checkpoint in (model_path, best_path):  # weights-only files: gym-qwen dt-test reads them back
            tracker.log_artifact(checkpoint, "checkpoints")
        status = "FINISHED"
        return summary
    finally:
        tracker.end(status)
        if remote:  # everything is on the URI (or the run failed): the staging folder goes
            shutil.rmtree(log_dir, ignore_errors=True)
