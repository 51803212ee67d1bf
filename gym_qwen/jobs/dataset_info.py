"""`gym-qwen dataset-info path=data/halfcheetah-medium-v5.hdf5` (or `minari=ID`): episodes, transitions, returns
and the D4RL normalised score of a dataset."""
from __future__ import annotations

import json
import sys

from gym_qwen.jobs.common import run_job, table
from gym_qwen.platform.config import DatasetInfoConfig
from gym_qwen.platform.datasets import DatasetError


def _f(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def print_summary(s: dict) -> None:
    env = s["env"] or "unknown (neither its metadata nor its name says; pass env= for the normalised score)"
    print(f"{s['source']}: env {env}, observations {s['obs_dim']}, actions {s['action_dim']}")
    print(f"{s['transitions']:,} transitions, {s['episodes']:,} episodes ({s['terminals']:,} ended by a terminal, "
          f"{s['timeouts']:,} by a timeout); {s['dropped_partial']:,} transitions of a final partial episode left out")
    if s["episodes"]:
        rows = [("return", _f(s["return_mean"]), _f(s["return_std"]), _f(s["return_min"]), _f(s["return_max"])),
                ("length", _f(s["length_mean"]), "", str(s["length_min"]), str(s["length_max"]))]
        if "normalized_mean" in s:
            rows.insert(1, ("D4RL normalised score", _f(s["normalized_mean"]), _f(s["normalized_std"]),
                            _f(s["normalized_min"]), _f(s["normalized_max"])))
        print(table(rows, ("per episode", "mean", "std", "min", "max")))
    if "content_sha256" in s:
        print(f"content sha256 {s['content_sha256']} (observations, actions, rewards, flags; metadata left out)")


def _info(cfg: DatasetInfoConfig) -> None:
    from gym_qwen.platform.datasets import load_offline_data, summarize

    data = load_offline_data(data=cfg.path, minari=cfg.minari, env=cfg.env, minari_root=cfg.minari_root)
    s = {**summarize(data), "content_sha256": data.content_sha256()}
    if cfg.json:
        print(json.dumps({**s, "metadata": {k: str(v) for k, v in data.metadata.items()}}, indent=2))
    else:
        print_summary(s)
        for key in ("timeouts_inferred", "timeouts_from_cuts"):
            if key in data.metadata:
                print(f"note: {data.metadata[key]}")


def main(argv: list[str] | None = None) -> int:
    return run_job("dataset-info", DatasetInfoConfig, _info, argv, extra_errors=(DatasetError,))


if __name__ == "__main__":
    sys.exit(main())
