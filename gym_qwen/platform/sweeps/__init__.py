"""Sweeps over evaluation settings, without Ray: the sweep file (spec), one trial's setting and its episodes
(trial), MLflow run bookkeeping (runs), and the comparison of finished runs with its Pareto front (compare).
The Tune side (trainable, tuner, restore) is gym_qwen/actors/tune_trials.py; the commands are
gym_qwen/jobs/sweep.py and gym_qwen/jobs/compare.py."""
