"""The Ray-free library: one room per subject (tdmpc2, training, speculative, sweeps, dt, datasets) and the shared
infrastructure beside them (configs, environments, files, MLflow, random streams, devices, progress)."""
