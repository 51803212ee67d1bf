"""`gym-qwen collect checkpoint=models/walker-walk-size1-seed1.pt episodes=50 output=data/x.parquet num_workers=2`
(or output=s3://bucket/x.parquet)."""
from __future__ import annotations

import sys

from gym_qwen.jobs.common import run_job, table
from gym_qwen.platform.config import CollectConfig
from gym_qwen.platform.speculative.corrector_data import CorrectorDataError
from gym_qwen.platform.storage import display


def _collect(cfg: CollectConfig) -> None:
    # the Ray path only: importing this module must not load Ray
    from gym_qwen.actors.corrector_collection import CHUNK_STATS_HEADER, collect_corrector_data

    rows, stats = collect_corrector_data(cfg)
    print(table(stats.lines(), CHUNK_STATS_HEADER))
    print(f"wrote {rows} rows to {display(cfg.output)}")


def main(argv: list[str] | None = None) -> int:
    return run_job("collect", CollectConfig, _collect, argv, extra_errors=(CorrectorDataError,))


if __name__ == "__main__":
    sys.exit(main())
