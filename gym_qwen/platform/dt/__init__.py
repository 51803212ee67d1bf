"""The Decision Transformer baseline: model, training windows, training loop, evaluation on the v5 tasks."""
from .evaluate import DT_TARGETS, evaluate_dt  # noqa: F401
from .model import DecisionTransformer, DTDims  # noqa: F401
