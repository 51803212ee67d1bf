"""`gym-qwen dt-train env=halfcheetah dataset=medium device=cpu` (or `data=FILE.hdf5`, `minari=ID`): train a
Decision Transformer on an offline dataset, evaluating on the v5 task after every iteration."""
from __future__ import annotations

import sys

from gym_qwen.jobs.common import run_job
from gym_qwen.platform.config import DTTrainConfig
from gym_qwen.platform.datasets import DatasetError
from gym_qwen.platform.dt.train import train_dt


def _f(x, d=1):
    return "-" if x in (None, "") else f"{x:.{d}f}"


def _train(cfg: DTTrainConfig) -> None:
    s = train_dt(cfg, show_progress=cfg.progress)
    ds = s["dataset"]
    print(f"dataset {ds['name']} ({ds['source']}, {ds['transitions']:,} transitions, sha256 {ds['sha256'][:12]})")
    print(f"{s['updates']:,} updates in {s['train_seconds']:.0f} s ({s['updates_per_s']:.2f} updates/s), final action "
          f"loss {s['final']['action_loss']:.5f}")
    for label, e in (("final", s["final_eval"]), ("best", s["best_eval"])):
        if e:
            print(f"{label} evaluation ({e['episodes']} episodes, target {s['rtg_target']:.0f}): return "
                  f"{e['return_mean']:.1f} ± {e['return_std']:.1f}, D4RL normalised score "
                  f"{e['normalized_mean']:.1f} ± {e['normalized_std']:.1f}")
    print(f"wrote {s['model']}, {s['best']}, {s['log']}, {s['summary']}")


def main(argv: list[str] | None = None) -> int:
    return run_job("dt-train", DTTrainConfig, _train, argv, extra_errors=(DatasetError,))


if __name__ == "__main__":
    sys.exit(main())
