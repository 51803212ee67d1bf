"""Sweeps without Ray: the sweep file, one evaluation or training trial, the MLflow runs of a sweep, and the comparison
of finished runs with its Pareto front."""
