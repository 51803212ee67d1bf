"""Distillation: fit correctors to the teacher's actions in corrector data, validated on held-out episodes.

A corrector sees (z_real, z_pred, a_plan, history, history_mask) of a speculative step and is trained to output
the full planner's action at the real state (a_teacher): MSE to the teacher plus `delta_penalty` * mean(delta^2).
Episodes, not rows, are split into train, validation and test (rows of one episode are strongly correlated; data
files whose episodes share reset seeds are refused, so no twins cross a split), the best epoch by validation MSE is
kept, and the report, on the test episodes that chose nothing, compares it with the uncorrected plan (a_plan vs
the target), overall and per step in the chunk. `label=mean` trains on the teacher's MPPI mean instead of its
Gumbel-sampled elite. Each corrector is written as `<save_path>-<type>.pt` with a JSON card beside
it (`<save_path>-<type>.json`).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gym_qwen.platform.files import atomic_write_bytes, code_version, require_output_folder, sha256_of
from gym_qwen.platform.tdmpc2.checkpoints import load_checkpoint
from gym_qwen.platform.config import command_line, config_to_dict
from gym_qwen.platform.devices import resolve_device
from gym_qwen.platform.progress import progress_bar
from gym_qwen.platform.registry import corrector_name, local_files, register
from gym_qwen.platform.tracking import Tracker

from .correctors import CorrectorError, build_corrector, save_corrector
from .collection import episode_reset_seeds
from .corrector_data import CorrectorDataError, read_corrector_data

INPUTS = ("z_real", "z_pred", "a_plan", "history", "history_mask")
# Keys that do not change what is learned: left out of the reproducing command on the card.
BOOKKEEPING = ("force", "device", "torch_threads", "progress", "mlflow", "mlflow_experiment", "system_metrics")
EVAL_BATCH = 4096
EPISODES_PER_FILE = 1_000_000  # episode ids of the i-th data file start at i * this


def kinds_of(corrector_type: str) -> tuple[str, ...]:
    return ("two_tower", "temporal") if corrector_type == "both" else (corrector_type,)


def output_paths(save_path: str, kinds) -> dict[str, tuple[Path, Path]]:
    """kind -> (checkpoint, card): `<save_path>-<kind>.pt` and `.json`, a trailing .pt of save_path dropped."""
    stem = save_path[:-3] if save_path.endswith(".pt") else save_path
    return {k: (Path(f"{stem}-{k}.pt"), Path(f"{stem}-{k}.json")) for k in kinds}


def distill_command(cfg) -> str:
    """The `gym-qwen distill` command that reproduces the correctors of `cfg` (keys that differ from defaults)."""
    return command_line("distill", cfg, ("data", "tdmpc_ckpt", "save_path"), BOOKKEEPING)


def split_episodes(episodes: np.ndarray, val_fraction: float, seed: int,
                   test_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (validation, test) masks over rows: seeded random fractions of the episodes, whole episodes each,
    at least one episode in every split asked for (and at least one left to train on). The validation episodes
    choose the best epoch; the test episodes choose nothing, so their error is the one reported."""
    unique = np.unique(episodes)
    wanted = 2 if test_fraction > 0 else 1
    if len(unique) < wanted + 1:
        splits = "train, validation and test" if test_fraction > 0 else "train and validation"
        raise CorrectorDataError(f"{len(unique)} episodes cannot be split into {splits} episodes: collect at least "
                                 f"{wanted + 1}")
    order = np.random.default_rng(seed).permutation(unique)
    n_val = min(max(1, round(val_fraction * len(unique))), len(unique) - wanted)
    n_test = 0 if test_fraction <= 0 else min(max(1, round(test_fraction * len(unique))), len(unique) - n_val - 1)
    return np.isin(episodes, order[:n_val]), np.isin(episodes, order[n_val:n_val + n_test])


def check_disjoint_seeds(paths: list[str], infos: list[dict], episodes: list[np.ndarray]) -> None:
    """CorrectorDataError if two data files hold episodes that reset from the same seed (twins: a DAgger file and
    an open-loop one collected with the same starts would put the same states on both sides of a split). Files
    that do not record their seed (made outside `gym-qwen collect`) are not checked."""
    seen: dict[int, str] = {}
    for path, info, eps in zip(paths, infos, episodes):
        if "seed" not in info:
            continue
        for start in sorted(episode_reset_seeds(info, np.unique(eps))):
            if start in seen:
                raise CorrectorDataError(f"{path} and {seen[start]} both hold an episode reset with seed {start}: "
                                         "their episodes are twins; collect one of them with another seed= (the "
                                         "seed ranges: gym_qwen/platform/seeds.py)")
        seen.update({start: path for start in episode_reset_seeds(info, np.unique(eps))})


def _read_checked(path: str, sha: str, teacher: str, latent: int, action_dim: int, history_len: int):
    columns, info = read_corrector_data(path, latent_dim=latent)
    theirs = info.get("teacher_sha256")
    if theirs is None:
        raise CorrectorDataError(f"{path} does not name its teacher (no teacher_sha256 in its metadata): "
                                 "collect it with gym-qwen collect")
    if theirs != sha:
        raise CorrectorDataError(f"{path} was collected with teacher sha256 {theirs[:12]}... but "
                                 f"{teacher} is {sha[:12]}...: give the teacher the data was collected with")
    if int(info["action_dim"]) != action_dim:
        raise CorrectorDataError(f"{path} holds actions of size {info['action_dim']} but the teacher's are "
                                 f"of size {action_dim}")
    if int(info["history_len"]) != history_len:
        raise CorrectorError(f"history_len={history_len} but {path} was collected with history_len="
                             f"{info['history_len']}: use history_len={info['history_len']}")
    return columns, info


def _load_inputs(cfg):
    """(tensors by column, data metadata, teacher checkpoint, teacher sha256), every compatibility check done.
    Several files are read as one data set: their episodes stay apart (file i's episode e becomes
    i * EPISODES_PER_FILE + e), so validation still holds out whole episodes."""
    ckpt = load_checkpoint(cfg.tdmpc_ckpt)
    latent, action_dim = int(ckpt["arch"]["latent_dim"]), int(ckpt["task_spec"]["action_dim"])
    sha = sha256_of(cfg.tdmpc_ckpt)
    parts, infos = [], []
    for path in cfg.data_files:
        columns, info = _read_checked(path, sha, cfg.tdmpc_ckpt, latent, action_dim, cfg.history_len)
        parts.append(columns)
        infos.append(info)
    check_disjoint_seeds(list(cfg.data_files), infos, [p["episode"] for p in parts])
    for i, columns in enumerate(parts):
        columns["episode"] = columns["episode"] + i * EPISODES_PER_FILE
    columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if len(parts) > 1 else parts[0]
    info = infos[0] if len(infos) == 1 else {**infos[0], "files": infos}
    keep = np.ones(len(columns["episode"]), dtype=bool)
    if cfg.max_step_in_chunk is not None:
        keep = columns["step_in_chunk"] <= cfg.max_step_in_chunk
    if not keep.any():
        where = "" if cfg.max_step_in_chunk is None else f" with step_in_chunk <= {cfg.max_step_in_chunk}"
        raise CorrectorDataError(f"{cfg.data} has no rows{where} to train on")
    if len(np.unique(columns["episode"][keep])) < 2:
        raise CorrectorDataError(f"{cfg.data} holds one episode: validation is split by episode, "
                                 "collect at least two")
    names = INPUTS + ("a_teacher", "a_teacher_mean", "step_in_chunk", "episode")
    data = {k: torch.as_tensor(np.ascontiguousarray(columns[k][keep])) for k in names}
    data["a_teacher_sample"] = data["a_teacher"]
    if cfg.label == "mean":  # the target the corrector is trained, validated and tested on
        data["a_teacher"] = data["a_teacher_mean"]
    return data, info, ckpt, sha


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _take(data: dict, idx: torch.Tensor, device) -> dict:
    return {k: data[k][idx].to(device, non_blocking=True) for k in INPUTS + ("a_teacher",)}


@torch.no_grad()
def _predict(model, data: dict, idx: torch.Tensor, device) -> torch.Tensor:
    model.eval()
    out = [model(*(b[k] for k in INPUTS)).cpu()
           for b in (_take(data, idx[s], device) for s in _batches(len(idx), EVAL_BATCH))]
    return torch.cat(out)


def _report(pred: torch.Tensor, data: dict, idx: torch.Tensor) -> dict:
    """Validation MSE of the corrector and of the uncorrected plan, overall and per step in the chunk."""
    target, plan = data["a_teacher"][idx], data["a_plan"][idx]
    steps = data["step_in_chunk"][idx]

    def entry(mask):
        mse = F.mse_loss(pred[mask], target[mask]).item()
        plan_mse = F.mse_loss(plan[mask], target[mask]).item()
        return {"rows": int(mask.sum()), "mse": mse, "plan_mse": plan_mse,
                "ratio": mse / plan_mse if plan_mse > 0 else None}

    overall = entry(torch.ones_like(steps, dtype=torch.bool))
    overall["per_step"] = [{"step_in_chunk": int(j), **entry(steps == j)} for j in torch.unique(steps).tolist()]
    # the same predictions against both teacher actions, so correctors trained on either label compare
    overall["mse_to_sample"] = F.mse_loss(pred, data["a_teacher_sample"][idx]).item()
    overall["mse_to_mean"] = F.mse_loss(pred, data["a_teacher_mean"][idx]).item()
    return overall


def _hyperparameters(cfg, kind: str, dims: dict) -> dict:
    hp = {"max_delta": cfg.max_delta}
    hp.update({"hidden": cfg.hidden} if kind == "two_tower" else {"d_model": cfg.d_model})
    return {**dims, **hp}


def _train_one(kind: str, cfg, data: dict, train_idx, val_idx, dims: dict, device, tracker, show_progress):
    """Train one corrector; (the model holding the best validation epoch's weights, its report, best epoch)."""
    torch.manual_seed(cfg.seed)
    model = build_corrector(kind, **_hyperparameters(cfg, kind, dims)).to(device)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    best = (math.inf, None, 0)
    with progress_bar(cfg.epochs, f"distill {kind}", unit="epoch", enabled=show_progress) as bar:
        for epoch in range(1, cfg.epochs + 1):
            model.train()
            order = train_idx[torch.randperm(len(train_idx), generator=gen)]
            total = 0.0
            for s in _batches(len(order), cfg.batch_size):
                b = _take(data, order[s], device)
                delta = model.correction(*(b[k] for k in INPUTS))
                # The loss sees a_plan + delta unclamped: clamping would stop the gradient of an overshoot, and
                # the clamped action is never further from the teacher's (which lies in [-1, 1]).
                loss = F.mse_loss(b["a_plan"] + delta, b["a_teacher"]) + cfg.delta_penalty * delta.pow(2).mean()
                optim.zero_grad(set_to_none=True)
                loss.backward()
                optim.step()
                total += loss.item() * (s.stop - s.start)
            val_mse = F.mse_loss(_predict(model, data, val_idx, device), data["a_teacher"][val_idx]).item()
            if val_mse < best[0]:
                best = (val_mse, copy.deepcopy(model.state_dict()), epoch)
            train_loss = total / len(order)
            tracker.log_metrics({f"{kind}/train_loss": train_loss, f"{kind}/val_mse": val_mse}, step=epoch)
            bar.update(1)
            bar.set_postfix(train=f"{train_loss:.4g}", val=f"{val_mse:.4g}", best=f"{best[0]:.4g}")
    if best[1] is None:
        raise CorrectorError(f"{kind} corrector training diverged (validation MSE {val_mse}): lower lr=")
    model.load_state_dict(best[1])
    return model, _report(_predict(model, data, val_idx, device), data, val_idx), best[2]


def test_report(model, data: dict, test_idx, device) -> dict:
    """The reported error: the chosen epoch's predictions on the test episodes, which chose nothing."""
    return _report(_predict(model, data, test_idx, device), data, test_idx)


def _write_card(path: Path, card: dict) -> None:
    text = json.dumps(card, indent=2) + "\n"
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def _register(tracker: Tracker, kind: str, path: Path, provenance: dict, report: dict) -> str | None:
    """Register the corrector the run logged under correctors/<kind> as a new version of <task>-corrector-<kind>
    with the alias champion; its models:/ URI (None without MLflow)."""
    if tracker.run is None:
        return None
    name = corrector_name(provenance["task"], kind)
    version = register(tracker.run, f"correctors/{kind}", name,
                       f"Gym Qwen {kind} correctors of {provenance['task']} teachers (gym-qwen distill)",
                       {"file": path.name, "sha256": sha256_of(path), "teacher_sha256": provenance["teacher_sha256"],
                        "test_mse": report["mse"], "code_version": provenance["code_version"]})
    return f"models:/{name}/{version}"


def distill(cfg, show_progress: bool = True) -> dict:
    """Train the correctors a DistillConfig asks for; write each checkpoint and card. Returns kind -> result
    (validation report, rows, episodes, best epoch, checkpoint and card paths, MLflow run id)."""
    torch.set_num_threads(cfg.torch_threads)
    kinds = kinds_of(cfg.corrector_type)
    paths = output_paths(cfg.save_path, kinds)
    existing = [str(p) for pair in paths.values() for p in pair if p.exists()]
    if existing and not cfg.force:
        raise CorrectorError(f"{existing[0]} exists: choose another save_path or add force=true to replace it")
    require_output_folder(next(iter(paths.values()))[0].parent, f"save_path={cfg.save_path}", CorrectorError)
    device = resolve_device(cfg.device)
    with local_files({"tdmpc_ckpt": cfg.tdmpc_ckpt}) as local:  # a models:/ teacher is read as its file
        data, info, ckpt, sha = _load_inputs(dataclasses.replace(cfg, tdmpc_ckpt=local["tdmpc_ckpt"]))
    dims = {"latent_dim": int(info["latent_dim"]), "action_dim": int(info["action_dim"]),
            "history_len": int(info["history_len"])}
    val_mask, test_mask = (torch.as_tensor(m) for m in split_episodes(data["episode"].numpy(), cfg.val_fraction,
                                                                       cfg.seed, cfg.test_fraction))
    train_idx = torch.nonzero(~(val_mask | test_mask)).squeeze(1)
    val_idx, test_idx = torch.nonzero(val_mask).squeeze(1), torch.nonzero(test_mask).squeeze(1)
    split = {"train": train_idx, "val": val_idx, "test": test_idx}
    episodes = {k: int(data["episode"][idx].unique().numel()) for k, idx in split.items()}
    rows = {k: len(idx) for k, idx in split.items()}
    command = distill_command(cfg)
    provenance = {"teacher_sha256": sha, "teacher": str(cfg.tdmpc_ckpt), "task": ckpt.get("task"),
                  "data": str(cfg.data), "rows": rows, "episodes": episodes,
                  "max_step_in_chunk": cfg.max_step_in_chunk, "code_version": code_version(), "command": command}

    tracker = Tracker(cfg.mlflow, cfg.mlflow_experiment, system_metrics=cfg.system_metrics)
    run_id = tracker.start(f"distill-{Path(cfg.save_path).name.removesuffix('.pt')}",
                           {**config_to_dict(cfg), "teacher_sha256": sha, "task": ckpt.get("task"),
                            "rows": rows, "episodes": episodes}, tags={"command": command})
    results = {}
    try:
        for kind in kinds:
            model, report, best_epoch = _train_one(kind, cfg, data, train_idx, val_idx, dims, device, tracker,
                                                   show_progress)
            tested = test_report(model, data, test_idx, device)
            results[kind] = {"model": model, "report": tested, "validation": report, "best_epoch": best_epoch}
            final = {f"{kind}/best_val_mse": report["mse"], f"{kind}/test_mse": tested["mse"],
                     f"{kind}/plan_test_mse": tested["plan_mse"], f"{kind}/ratio": tested["ratio"],
                     f"{kind}/best_epoch": best_epoch}
            for s in tested["per_step"]:
                final.update({f"{kind}/test_mse_j{s['step_in_chunk']}": s["mse"],
                              f"{kind}/plan_test_mse_j{s['step_in_chunk']}": s["plan_mse"]})
            tracker.log_metrics(final, step=cfg.epochs)
        # Files only once every corrector has trained: a failure or an interrupt leaves nothing half-written.
        for kind in kinds:
            model, report, best_epoch = results[kind]["model"], results[kind]["report"], results[kind]["best_epoch"]
            ckpt_path, card_path = paths[kind]
            validation = {**results[kind]["validation"], "best_epoch": best_epoch}
            hp = model.hyperparameters()
            training = {k: getattr(cfg, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "delta_penalty",
                                                     "val_fraction", "test_fraction", "label", "seed")}
            save_corrector(ckpt_path, model.cpu(), {**provenance, "type": kind, "validation": validation,
                                                    "test": report, "training": training, "data_metadata": info})
            _write_card(card_path, {"corrector": ckpt_path.name, "type": kind, **provenance, "test": report,
                                    "validation": validation, "hyperparameters": hp, "training": training,
                                    "data_metadata": info, "mlflow_run_id": run_id})
            tracker.log_artifact(ckpt_path, f"correctors/{kind}")
            tracker.log_artifact(card_path, f"correctors/{kind}")
            registered = _register(tracker, kind, ckpt_path, provenance, report)
            results[kind] = {**report, "best_epoch": best_epoch, "rows": rows, "episodes": episodes,
                             "checkpoint": str(ckpt_path), "card": str(card_path), "mlflow_run_id": run_id,
                             "registered": registered}
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end()
    return results
