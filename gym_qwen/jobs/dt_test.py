"""`gym-qwen dt-test env=halfcheetah dataset=medium num_eval_ep=10 chk_pt_name=<checkpoint.pt>`: evaluate a Decision
Transformer checkpoint on the v5 task (return and D4RL normalised score, mean ± std over episodes)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from gym_qwen.jobs.common import run_job
from gym_qwen.platform.config import ConfigError, DTTestConfig
from gym_qwen.platform.datasets import DatasetError
from gym_qwen.platform.devices import resolve_device
from gym_qwen.platform.dt.evaluate import evaluate_dt
from gym_qwen.platform.dt.train import load_dt_checkpoint
from gym_qwen.platform.files import atomic_write_bytes, require_output_folder
from gym_qwen.platform.torch_files import CheckpointError


def checkpoint_path(cfg: DTTestConfig) -> Path:
    name = Path(cfg.chk_pt_name)
    if name.is_absolute() or name.exists() or len(name.parts) > 1:
        return name
    return Path(cfg.chk_pt_dir) / name


def _test(cfg: DTTestConfig) -> None:
    if cfg.output:
        require_output_folder(Path(cfg.output).parent, f"output={cfg.output}", ConfigError)
    torch.set_num_threads(cfg.torch_threads)
    device = resolve_device(cfg.device)
    path = checkpoint_path(cfg)
    model, ckpt = load_dt_checkpoint(path, device)
    if cfg.env is not None and cfg.env != ckpt["env"]:
        raise CheckpointError(f"{path} was trained for {ckpt['env']}, not env={cfg.env}")
    level = ckpt["dataset"].get("level") or ""
    if cfg.dataset is not None and level and cfg.dataset != level:
        raise CheckpointError(f"{path} was trained on the {level} dataset ({ckpt['dataset']['name']}), not "
                              f"dataset={cfg.dataset}")
    target = cfg.rtg_target if cfg.rtg_target is not None else ckpt["rtg_target"]
    if cfg.num_workers > 0:
        # the Ray path only: importing this module must not load Ray
        from gym_qwen.actors.evaluators import evaluate_dt_with_actors

        r = evaluate_dt_with_actors(ckpt, target, episodes=cfg.num_eval_ep, seed=cfg.seed,
                                    max_ep_len=cfg.max_eval_ep_len, num_workers=cfg.num_workers,
                                    cpus=cfg.worker_cpus, ray_address=cfg.ray_address, show_progress=cfg.progress,
                                    scale_wait=cfg.scale_wait)
    else:
        r = evaluate_dt(model, ckpt["env"], cfg.num_eval_ep, cfg.seed, rtg_target=target, rtg_scale=ckpt["rtg_scale"],
                        state_mean=ckpt["state_mean"].numpy(), state_std=ckpt["state_std"].numpy(),
                        max_ep_len=cfg.max_eval_ep_len, batch=cfg.eval_batch, device=device, progress=cfg.progress)
    print(f"checkpoint {path}: {ckpt['env']}, trained {ckpt['updates']:,} updates on {ckpt['dataset']['name']} "
          f"(sha256 {ckpt['dataset']['sha256'][:12]})")
    print(f"{r['episodes']} episodes, target {target:.0f}: return {r['return_mean']:.1f} ± {r['return_std']:.1f}, "
          f"length {r['length_mean']:.0f}, D4RL normalised score {r['normalized_mean']:.1f} ± "
          f"{r['normalized_std']:.1f} ({r['ms_per_action']:.2f} ms per action, {r['batch']} episodes a batch)")
    if cfg.output:
        text = json.dumps({**r, "checkpoint": str(path), "dataset": ckpt["dataset"]}, indent=2)
        atomic_write_bytes(cfg.output, lambda f: f.write(text.encode()))
        print(f"wrote {cfg.output}")


def main(argv: list[str] | None = None) -> int:
    return run_job("dt-test", DTTestConfig, _test, argv, extra_errors=(DatasetError,))


if __name__ == "__main__":
    sys.exit(main())
