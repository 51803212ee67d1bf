"""Does asynchronous Ray training learn? In-process training against `num_workers=2` asynchronous training (workers
play chunks of 50 decisions; the learner runs a chunk's updates before its worker plays on with the new weights),
same task, seeds, env steps and agent, run side by side (one seed's two runs back to back), with `gym-qwen train`
itself as the user runs it.

    python benchmarks/bench_async.py [--task cartpole-balance] [--steps 16000] [--seeds 1,2] [--eval-freq 4000]
    python benchmarks/bench_async.py --report-only      # the table and plot again from the JSON
Writes docs/async-<task>.json (after every run, so a run cut off keeps what finished; a second invocation with the
same settings skips the runs already there, --fresh starts over) and docs/async-<task>.png. The default agent is
the small one of the BENCHMARKS "learning check" (`--agent full` trains model size 1 with the default planner).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from gym_qwen.platform.files import atomic_write_bytes  # noqa: E402
from gym_qwen.platform.tdmpc2.checkpoints import load_checkpoint  # noqa: E402
from gym_qwen.platform.training.curves import read_run  # noqa: E402

SMALL_AGENT = ["latent_dim=64", "enc_dim=64", "mlp_dim=128", "num_samples=128", "num_elites=16", "num_pi_trajs=8",
               "iterations=3", "batch_size=128", "seed_steps=1000"]
MODES = {
    "in-process": ["num_workers=0", "torch_threads=2"],
    # two rollout workers and the learner on two cores: each worker half a CPU (one torch thread), learner one
    "async, 2 workers": ["num_workers=2", "worker_cpus=0.5", "learner_cpus=1", "sync=false", "chunk_decisions=50"],
}


def train_once(task: str, seed: int, mode: str, args, root: Path) -> dict:
    cmd = [sys.executable, "-c", "from gym_qwen.jobs.cli import main; raise SystemExit(main())", "train",
           f"task={task}", f"steps={args.steps}", f"seed={seed}", f"eval_freq={args.eval_freq}",
           f"eval_episodes={args.eval_episodes}", "checkpoint_freq=0", f"output_dir={root}",
           f"exp_name={mode.split(',')[0].replace(' ', '-')}", "mlflow=false", "progress=false", "device=cpu",
           *(SMALL_AGENT if args.agent == "small" else []), *MODES[mode]]
    log = root / f"{task}-{seed}-{mode.split(',')[0]}.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        rc = subprocess.call(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if rc != 0:
        raise SystemExit(f"{mode} seed {seed} failed (exit {rc}); see {log}:\n{log.read_text()[-2000:]}")
    run = root / task / mode.split(",")[0].replace(" ", "-") / f"seed{seed}"
    curve = read_run(run)
    final_state = load_checkpoint(run / "train_state.pt")  # counted by the learner where the updates ran
    return {"mode": mode, "seed": seed, "wall_s": seconds, "updates": int(final_state["num_updates"]),
            "env_steps": int(final_state["env_steps"]), "train_s": float(final_state["loop"]["train_seconds"]),
            "eval": [{"env_steps": n, "return_mean": r, "return_std": sd}
                     for n, r, sd in zip(curve.env_steps, curve.returns, curve.stds)]}


def summarise(runs: list[dict]) -> dict:
    out = {}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        if not mine:
            continue
        final = [r["eval"][-1]["return_mean"] for r in mine]
        out[mode] = {"final_return_mean": statistics.mean(final), "final_returns": final,
                     "updates": [r["updates"] for r in mine],
                     "wall_s_mean": statistics.mean(r["wall_s"] for r in mine),
                     "curve": [statistics.mean(r["eval"][i]["return_mean"] for r in mine)
                               for i in range(min(len(r["eval"]) for r in mine))],
                     "curve_steps": [e["env_steps"] for e in mine[0]["eval"]]}
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for colour, mode in zip(("tab:blue", "tab:orange"), MODES):
        for r in (r for r in result["runs"] if r["mode"] == mode):
            ax.plot([e["env_steps"] for e in r["eval"]], [e["return_mean"] for e in r["eval"]], color=colour,
                    alpha=0.35, lw=1)
        s = result["summary"].get(mode)
        if s:
            ax.plot(s["curve_steps"][:len(s["curve"])], s["curve"], color=colour, lw=2.2,
                    label=f"{mode}: {s['final_return_mean']:.0f} at the end, {s['wall_s_mean'] / 60:.1f} min")
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"evaluation return ({result['eval_episodes']} episodes)")
    ax.set_title(f"{result['task']}: in-process vs async Ray training (thin: each seed; thick: mean)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))


def report(result: dict) -> None:
    print(f"{result['task']}, {result['steps']} env steps, seeds {result['seeds']}, agent {result['agent']}")
    print(f"{'mode':<20} {'final return (each seed)':<34} {'mean':>7} {'wall min':>9}  updates (each seed)")
    for mode, s in result["summary"].items():
        each = ", ".join(f"{x:.0f}" for x in s["final_returns"])
        updates = ", ".join(f"{u:,}" for u in s["updates"])
        print(f"{mode:<20} {each:<34} {s['final_return_mean']:>7.1f} {s['wall_s_mean'] / 60:>9.1f}  {updates}")


def save(out: Path, settings: dict, runs: list[dict]) -> dict:
    """The result of the runs so far, written atomically to `out` (the benchmark calls it after every run)."""
    result = {**settings, "seeds": sorted({r["seed"] for r in runs}), "runs": runs, "summary": summarise(runs)}
    atomic_write_bytes(out, lambda f: f.write(json.dumps(result, indent=2).encode()))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="cartpole-balance")
    p.add_argument("--steps", type=int, default=16000)
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--eval-freq", type=int, default=4000)
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--agent", choices=("small", "full"), default="small")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--fresh", action="store_true", help="ignore runs already in the JSON")
    p.add_argument("--out", default=None)
    p.add_argument("--figure", default=None)
    args = p.parse_args()
    out = Path(args.out or ROOT / "docs" / f"async-{args.task}.json")
    figure = Path(args.figure or ROOT / "docs" / f"async-{args.task}.png")
    if args.report_only:
        result = json.loads(out.read_text())
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
        settings = {"task": args.task, "steps": args.steps, "agent": args.agent, "eval_episodes": args.eval_episodes,
                    "eval_freq": args.eval_freq, "modes": MODES}
        runs = []
        if out.exists() and not args.fresh:
            earlier = json.loads(out.read_text())
            if all(earlier.get(k) == v for k, v in settings.items()):
                runs = [r for r in earlier["runs"] if r["seed"] in seeds]
                print(f"{out}: keeping {len(runs)} finished run(s) with the same settings (--fresh to redo)")
        with tempfile.TemporaryDirectory(prefix="bench-async-") as tmp:
            for seed in seeds:
                for mode in MODES:
                    if any(r["seed"] == seed and r["mode"] == mode for r in runs):
                        continue
                    runs.append(train_once(args.task, seed, mode, args, Path(tmp)))
                    r = runs[-1]
                    print(f"seed {seed} {mode}: {r['eval'][-1]['return_mean']:.1f} in {r['wall_s'] / 60:.1f} min, "
                          f"{r['updates']:,} updates", flush=True)
                    result = save(out, settings, runs)
        result = save(out, settings, runs)
    report(result)
    plot(result, figure)
    print(f"wrote {out} and {figure}")


if __name__ == "__main__":
    main()
