"""`gym-qwen dataset-info path=data/halfcheetah-medium-v5.hdf5` (or `minari=ID`): episodes, transitions, returns
and the D4RL normalised score of a dataset."""
from __future__ import annotations

import json
import sys

from gym_qwen.jobs.common import print_dataset_summary, run_job
from gym_qwen.platform.config import DatasetInfoConfig
from gym_qwen.platform.datasets import DatasetError, load_offline_data, summarize


def _info(cfg: DatasetInfoConfig) -> None:
    data = load_offline_data(data=cfg.path, minari=cfg.minari, env=cfg.env, minari_root=cfg.minari_root)
    s = {**summarize(data), "content_sha256": data.content_sha256()}
    if cfg.json:
        print(json.dumps({**s, "metadata": {k: str(v) for k, v in data.metadata.items()}}, indent=2))
    else:
        print_dataset_summary(s)
        for key in ("timeouts_inferred", "timeouts_from_cuts"):
            if key in data.metadata:
                print(f"note: {data.metadata[key]}")


def main(argv: list[str] | None = None) -> int:
    return run_job("dataset-info", DatasetInfoConfig, _info, argv, extra_errors=(DatasetError,))


if __name__ == "__main__":
    sys.exit(main())
