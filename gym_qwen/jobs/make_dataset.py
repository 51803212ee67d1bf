"""`gym-qwen make-dataset env=halfcheetah dataset=random seed=0 [format=hdf5|minari] [output=...]`: a D4RL-style
dataset made on the Gymnasium v5 task (D4RL's HDF5 layout, or a local Minari dataset)."""
from __future__ import annotations

import sys
from pathlib import Path

from gym_qwen.jobs.common import print_dataset_summary, run_job
from gym_qwen.platform.config import ConfigError, MakeDatasetConfig
from gym_qwen.platform.datasets import DatasetError, summarize, write_hdf5
from gym_qwen.platform.datasets.make import check_inputs, default_output, make_dataset, make_dataset_command
from gym_qwen.platform.datasets.minari_io import datasets_root, export_minari, minari_path
from gym_qwen.platform.files import output_folder_problem


def _make(cfg: MakeDatasetConfig) -> None:
    check_inputs(cfg.env, cfg.dataset, cfg.models_dir)  # a missing behaviour policy: one line, nothing written
    output = cfg.output or default_output(cfg.env, cfg.dataset, cfg.format)
    if cfg.format == "hdf5":
        if Path(output).exists() and not cfg.force:
            raise ConfigError(f"{output} exists; pass force=true to replace it")
        problem = output_folder_problem(Path(output).parent)
        if problem:
            raise ConfigError(f"cannot write {output}: {problem}")
    else:
        problem = output_folder_problem(datasets_root(cfg.minari_root))  # before Minari makes the folder itself
        if problem:
            raise ConfigError(f"cannot write the Minari dataset {output} into {datasets_root(cfg.minari_root)}: "
                              f"{problem}")
        where = minari_path(output, cfg.minari_root)
        if where.exists():
            raise ConfigError(f"the Minari dataset {output} exists at {where}; delete it or give another output= id")
    data = make_dataset(cfg.env, cfg.dataset, cfg.seed, transitions=cfg.transitions, models_dir=cfg.models_dir,
                        progress=cfg.progress, command=make_dataset_command(cfg))
    data.source = output
    if cfg.format == "hdf5":
        write_hdf5(output, data)
        where = output
    else:
        where = f"Minari dataset {output} at " + export_minari(data, output, root=cfg.minari_root)
    print_dataset_summary(summarize(data))
    print(f"wrote {where}")


def main(argv: list[str] | None = None) -> int:
    return run_job("make-dataset", MakeDatasetConfig, _make, argv, extra_errors=(DatasetError,))


if __name__ == "__main__":
    sys.exit(main())
