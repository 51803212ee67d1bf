"""How long the environment's thread takes per decision while the planner plans in its own thread (`realtime=true`).

On the wall clock the environment's thread must step the environment, encode the observation and run the corrector
within every control period P while the BackgroundPlanner plans back to back beside it. Both are Python threads
sharing one interpreter: this measures that thread's work per decision (environment step, encoder, mismatch
feature, two-tower corrector: what async with a corrector does at a speculative step) on the real grid (it sleeps to
each deadline), with the planner thread busy all along, under a few interpreter settings that could matter: the
GIL's switch interval (Python's default 5 ms; a thread waiting for the GIL waits up to that long) and the cyclic
garbage collector (on, or off during the round). Settings are played in turn, `rounds` times each, so a slow spell
of the machine is not pinned on one setting.

    python benchmarks/bench_realtime_jitter.py                      # cheetah-run, P = 25 ms, 1000 decisions x 2 rounds
    python benchmarks/bench_realtime_jitter.py --task walker-walk --period-ms 20 --decisions 500 --rounds 3

Writes docs/realtime-jitter-<task>.json: per setting and round, the work's median, p99 and max (ms), how many
decisions finished past their deadline, and the plans the planner thread finished meanwhile. Run it on an
otherwise idle machine (`scripts/background.sh pause` first): it measures time.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gym_qwen.platform.envs import make_env  # noqa: E402
from gym_qwen.platform.files import atomic_write_bytes  # noqa: E402
from gym_qwen.platform.seeds import reset_seed  # noqa: E402
from gym_qwen.platform.speculative.background_planner import BackgroundPlanner, PlanJob  # noqa: E402
from gym_qwen.platform.speculative.correctors import load_corrector  # noqa: E402
from gym_qwen.platform.speculative.features import HistoryWindow, feature_dim, mismatch_feature  # noqa: E402
from gym_qwen.platform.tdmpc2.checkpoints import load_agent  # noqa: E402

# (name, switch interval in seconds, garbage collector on)
SETTINGS = (("default (5 ms switch interval, gc on)", 0.005, True), ("switch interval 0.5 ms", 0.0005, True),
            ("gc off", 0.005, False))


def play_round(agent, corrector, env, period_s: float, decisions: int, seed: int) -> dict:
    """One round: `decisions` decisions on the period grid, the planner thread planning back to back meanwhile."""
    model, generator = agent.model, torch.Generator().manual_seed(seed)
    A, L = model.dims.action_dim, model.dims.latent_dim
    history = HistoryWindow(1, 4, feature_dim(L, A), "cpu")
    rows = torch.zeros(1, dtype=torch.long)
    obs, _ = env.reset(seed=seed)
    with torch.inference_mode():
        z0 = model.encode(torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1))
    runner = BackgroundPlanner(lambda job: agent.planner.plan(job.z_start, None, generator=generator,
                                                              cancelled=job.cancel.is_set),
                               threads=torch.get_num_threads())
    job = runner.submit(PlanJob(started=0, ready_at=0, z_start=z0, prev_mean=None, shift=0))
    plans, work, late = 0, [], 0
    action = np.zeros(A, dtype=np.float32)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for t in range(decisions):
            start = time.perf_counter()
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs, _ = env.reset(seed=seed + t + 1)
            z = model.encode(torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1))
            z_pred, a_plan = z + 0.01, torch.zeros(1, A)  # stand-ins for the plan's latent and action
            history.push(rows, mismatch_feature(z, z_pred, a_plan))
            window, mask = history.window(rows)
            action = corrector(z, z_pred, a_plan, window, mask).clamp(-1, 1).numpy()[0]
            if job.done.is_set():  # the planner never idles: the next plan as soon as one is done
                plans += 1
                job = runner.submit(PlanJob(started=t, ready_at=t, z_start=z, prev_mean=None, shift=0))
            end = time.perf_counter()
            work.append(1e3 * (end - start))
            deadline = t0 + (t + 1) * period_s
            if end > deadline:
                late += 1
            else:
                time.sleep(deadline - end)
    runner.cancel(job)
    runner.close()
    w = np.asarray(work)
    return {"work_ms_median": float(np.median(w)), "work_ms_p99": float(np.percentile(w, 99)),
            "work_ms_max": float(w.max()), "decisions_late": late, "decisions": decisions, "plans_finished": plans}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="cheetah-run")
    p.add_argument("--period-ms", type=float, default=25.0)
    p.add_argument("--decisions", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads of each thread (the benchmarks' 1)")
    p.add_argument("--out", default=None, help="JSON path (default docs/realtime-jitter-<task>.json)")
    args = p.parse_args()
    ckpt = ROOT / "models" / f"{args.task}-size1-seed1.pt"
    corrector_file = ROOT / "models" / "correctors" / f"{args.task}-size1-seed1-two_tower.pt"
    for f in (ckpt, corrector_file):
        if not f.exists():
            print(f"bench_realtime_jitter: error: no {f.relative_to(ROOT)}", file=sys.stderr)
            return 2
    torch.set_num_threads(args.threads)
    agent, _, _ = load_agent(str(ckpt), {}, "cpu", None)
    corrector, _ = load_corrector(corrector_file, latent_dim=agent.model.dims.latent_dim)
    env = make_env(args.task, reset_seed("calibration", 1, 0))
    with torch.inference_mode():  # a compiled planner compiles at its first plans, not inside a round
        z = agent.model.encode(torch.zeros(1, env.observation_space.shape[0]))
        for _ in range(2):
            agent.planner.plan(z, None, generator=torch.Generator().manual_seed(0))
    results = {name: [] for name, _, _ in SETTINGS}
    old_interval = sys.getswitchinterval()
    for r in range(args.rounds):
        for name, interval, gc_on in SETTINGS:
            sys.setswitchinterval(interval)
            if not gc_on:
                gc.collect()
                gc.disable()
            try:
                res = play_round(agent, corrector, env, args.period_ms / 1000, args.decisions, seed=100 + r)
            finally:
                gc.enable()
                sys.setswitchinterval(old_interval)
            results[name].append(res)
            print(f"round {r}, {name}: work median {res['work_ms_median']:.2f} ms, p99 {res['work_ms_p99']:.2f}, "
                  f"max {res['work_ms_max']:.2f}; {res['decisions_late']} of {res['decisions']} decisions late; "
                  f"{res['plans_finished']} plans", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    record = {"task": args.task, "control_period_ms": args.period_ms, "decisions": args.decisions,
              "rounds": args.rounds, "threads": args.threads, "torch": torch.__version__,
              "python": platform.python_version(), "commit": commit.strip(),
              "command": "python benchmarks/bench_realtime_jitter.py " + " ".join(sys.argv[1:]), "settings": results}
    out = Path(args.out) if args.out else ROOT / "docs" / f"realtime-jitter-{args.task}.json"
    atomic_write_bytes(out, lambda f: f.write(json.dumps(record, indent=1).encode()))
    print(f"numbers: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
