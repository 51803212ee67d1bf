"""Real-time control on a GPU: the control rate the full planner sustains with `async` against `stale` (issue 31).

    python benchmarks/bench_realtime_cuda.py out=benchmarks/results/realtime-cuda.json

Needs a CUDA device. The planner runs on its own CUDA stream in a background thread (realtime=true), the
environment on the CPU. The agent is TD-MPC2 at model size 5 (and size 1) with fresh weights: no size-5 teacher is
trained here, so this measures time, not return (the returns printed are an untrained agent's). Steps:

1. the full planner's latency L on the GPU, model sizes 1 and 5 (median of `plans` synchronous plans after warm-up);
   `cuda_graph=true`: every plan replayed from a CUDA graph (the agent's cuda_graph=true), here and in step 2;
2. for each control period P (ms) and mode (baseline under the clock, stale, async), `episodes` episodes of
   `task` on the wall clock through `gym-qwen evaluate ... realtime=true device=cuda`: d, deadline misses per
   step, the main thread's wait per step, plans started/used/discarded and the achieved period;
3. a short training run at model size 5 on the GPU (`gym-qwen train device=cuda`): updates per second.

A setting *sustains* P when it misses no deadline (a miss: the step began after its deadline). Writes one JSON.
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULTS = {"task": "HalfCheetah-v5", "periods": "2,4,8,16,33", "modes": "baseline,stale,async", "episodes": "1",
            "sizes": "1,5", "plans": "20", "train_steps": "2000", "device": "cuda", "cuda_graph": "false",
            "out": str(ROOT / "benchmarks" / "results" / "realtime-cuda.json")}


def parse_args(argv: list[str]) -> dict:
    args = dict(DEFAULTS)
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in DEFAULTS:
            sys.exit(f"usage: bench_realtime_cuda.py [{' '.join(f'{k}=...' for k in DEFAULTS)}] (got {item!r})")
        args[key] = value
    return args


def make_checkpoint(task: str, size: int, folder: Path, device: str) -> Path:
    """An agent checkpoint of model size `size` with fresh weights, saved as training would save it."""
    from gym_qwen.platform.config import TrainConfig, parse_config
    from gym_qwen.platform.tdmpc2.checkpoints import agent_payload, save_checkpoint
    from gym_qwen.platform.training.loop import build_learning

    cfg = parse_config(TrainConfig, [f"task={task}", f"model_size={size}", f"device={device}", "steps=1000",
                                     f"output_dir={folder / 'runs'}"])
    spec, agent, _ = build_learning(cfg)
    return save_checkpoint(folder / f"size{size}.pt", agent_payload(cfg, spec, agent.state_dict(with_optim=False), 0))


def planner_latency(ckpt: Path, task: str, plans: int, device: str, cuda_graph: bool) -> dict:
    """The full planner's median latency on the GPU, measured as `evaluate` measures it for a clock (the platform's
    measure_latency_ms: synchronous plans from one real observation, after warm-up)."""
    from gym_qwen.platform.envs import make_env
    from gym_qwen.platform.speculative.clocked import measure_latency_ms
    from gym_qwen.platform.tdmpc2.checkpoints import load_agent

    agent = load_agent(str(ckpt), {"cuda_graph": cuda_graph}, device)[0]
    obs, _ = make_env(task, seed=1).reset(seed=1)
    return {"median_ms": measure_latency_ms(agent, obs, repeats=plans, warmup=5), "plans": plans,
            "cuda_graph": cuda_graph}


def evaluate(ckpt: Path, mode: str, period: float, episodes: int, folder: Path, device: str, cuda_graph: bool) -> dict:
    from gym_qwen.jobs.evaluate import main as evaluate_main

    out = folder / f"{mode}-{period:g}.json"
    args = [f"checkpoint={ckpt}", f"mode={mode}", f"episodes={episodes}", f"device={device}", "progress=false",
            f"output={out}", f"control_period_ms={period:g}", "realtime=true", f"cuda_graph={str(cuda_graph).lower()}"]
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = evaluate_main(args)
    wall = time.perf_counter() - t0
    text = buf.getvalue()
    print(text[-1500:], flush=True)
    if rc != 0:
        return {"mode": mode, "period_ms": period, "rc": rc, "output": text[-2000:]}
    s = json.loads(out.read_text())
    keep = ("return_mean", "steps", "ms_per_decision", "deadline_misses", "deadline_misses_per_step",
            "wait_ms_per_step", "plans_started", "plans_used", "plans_discarded", "plans_cancelled", "steps_plan",
            "steps_corrected", "steps_extension", "steps_prior", "planner_calls_per_step", "control_period_ms",
            "planner_latency_ms", "delay")
    row = {k: s.get(k) for k in keep if k in s}
    row.update(mode=mode, period_ms=period, wall_s=wall, rc=0)
    row["sustained"] = row.get("deadline_misses", 1) == 0
    return row


def train_check(task: str, steps: int, folder: Path, device: str) -> dict:
    """`gym-qwen train model_size=5` for `steps` env steps (updates start once the first 1000-step episode is in
    the buffer): its own summary line says how many updates it made and at what rate."""
    from gym_qwen.jobs.cli import main as cli

    args = ["train", f"task={task}", "model_size=5", f"device={device}", f"steps={steps}", "seed_steps=1000",
            f"eval_freq={steps}", "eval_episodes=1", f"checkpoint_freq={steps}", f"output_dir={folder / 'train'}",
            "progress=false", "mlflow=false"]
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = cli(args)
    text = buf.getvalue()
    print(text[-1000:], flush=True)
    summary = next((line for line in text.splitlines() if line.startswith("trained ")), None)
    return {"rc": rc, "steps": steps, "summary": summary, "wall_s": time.perf_counter() - t0}


def main(argv: list[str]) -> int:
    import torch

    args = parse_args(argv)
    device = args["device"]
    graphed = args["cuda_graph"] == "true"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_realtime_cuda.py needs a CUDA device")
    result = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__,
              "task": args["task"], "cuda_graph": graphed, "latency": {}, "rows": []}
    out = Path(args["out"])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpts = {}
        for size in [int(s) for s in args["sizes"].split(",")]:
            ckpts[size] = make_checkpoint(args["task"], size, folder, device)
            result["latency"][f"size{size}"] = planner_latency(ckpts[size], args["task"], int(args["plans"]), device,
                                                               graphed)
            print(f"size {size}: full planner L = {result['latency'][f'size{size}']}", flush=True)
        big = ckpts[max(ckpts)]
        for period in [float(p) for p in args["periods"].split(",")]:
            for mode in args["modes"].split(","):
                row = evaluate(big, mode, period, int(args["episodes"]), folder, device, graphed)
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(result, indent=2))
        if int(args["train_steps"]) > 0:
            result["train"] = train_check(args["task"], int(args["train_steps"]), folder, device)
            print(json.dumps(result["train"]), flush=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
