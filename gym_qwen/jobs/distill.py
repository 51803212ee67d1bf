"""`gym-qwen distill data=corr.parquet tdmpc_ckpt=models/x.pt save_path=models/x`: train learned correctors."""
from __future__ import annotations

import sys

from gym_qwen.jobs.common import run_job, table
from gym_qwen.platform.config import DistillConfig
from gym_qwen.platform.registry import CHAMPION
from gym_qwen.platform.speculative.corrector_data import CorrectorDataError
from gym_qwen.platform.speculative.correctors import CorrectorError
from gym_qwen.platform.speculative.distillation import distill


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def _distill(cfg: DistillConfig) -> None:
    results = distill(cfg, show_progress=cfg.progress)
    first = next(iter(results.values()))
    print(f"data {cfg.data}: " + ", ".join(f"{first['rows'][k]} {name} rows ({first['episodes'][k]} episodes)"
                                          for k, name in (("train", "train"), ("val", "validation"), ("test", "test"))))
    rows = []
    for kind, r in results.items():
        rows.append((kind, r["rows"]["test"], _fmt(r["mse"]), _fmt(r["plan_mse"]), _fmt(r["ratio"]),
                     _fmt(r["mse_to_sample"]), _fmt(r["mse_to_mean"]), r["best_epoch"]))
        rows += [(f"  step {s['step_in_chunk']}", s["rows"], _fmt(s["mse"]), _fmt(s["plan_mse"]), _fmt(s["ratio"]),
                  "", "", "") for s in r["per_step"]]
    print(table(rows, ("corrector", "test rows", f"test MSE ({cfg.label})", "plan's test MSE", "ratio",
                       "MSE to sample", "MSE to mean", "best epoch (validation)")))
    print("wrote " + ", ".join(f"{r['checkpoint']} (card {r['card']})" for r in results.values()))
    registered = [r["registered"] for r in results.values() if r.get("registered")]
    if registered:
        print(f"registered {', '.join(registered)}, each now the alias {CHAMPION}")


def main(argv: list[str] | None = None) -> int:
    return run_job("distill", DistillConfig, _distill, argv, extra_errors=(CorrectorDataError, CorrectorError))


if __name__ == "__main__":
    sys.exit(main())
