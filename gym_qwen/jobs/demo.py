"""`gym-qwen demo`: the main job end to end on local Ray and local MLflow. A Tune sweep of speculative execution
settings (configs/sweeps/demo.yaml: k = 1, 3, 6 with no corrector, the two-tower and the temporal corrector,
adaptive, and the cheap planner) on the shipped walker-walk teacher and its shipped correctors, then `compare`:
the table, the Pareto plot, what it says in words. `full=true` collects and distills its own correctors first;
`train=true` first trains a small TD-MPC2 briefly (the first demo)."""
from __future__ import annotations

import contextlib
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from gym_qwen.jobs.common import USER_ERRORS, run_job, table
from gym_qwen.platform.config import (
    CollectConfig, CompareConfig, ConfigError, DemoConfig, DistillConfig, SweepConfig, TrainConfig, config_from_dict)
from gym_qwen.platform.envs import make_env
from gym_qwen.platform.files import require_output_folder
from gym_qwen.platform.speculative.distillation import distill
from gym_qwen.platform.speculative.evaluation import EVAL_SEED_OFFSET, evaluate
from gym_qwen.platform.sweeps.compare import compare_runs
from gym_qwen.platform.tdmpc2.checkpoints import load_agent
from gym_qwen.platform.tracking import browse_hint, client, default_tracking_uri
from gym_qwen.platform.training.run import train
from gym_qwen.platform.training.teachers import shipped_teacher


def random_policy_returns(task: str, episodes: int, seed: int) -> list[float]:
    env, rng, returns = make_env(task, seed + EVAL_SEED_OFFSET), np.random.default_rng(seed), []
    for i in range(episodes):
        env.reset(seed=seed + EVAL_SEED_OFFSET + i)
        total, done = 0.0, False
        while not done:
            _, r, terminated, truncated, _ = env.step(rng.uniform(-1, 1, env.action_space.shape).astype("float32"))
            total, done = total + r, terminated or truncated
        returns.append(total)
    env.close()
    return returns


def _against_random(label: str, res, rand: list[float], more: list[tuple] = ()) -> str:
    """The demo's table: random actions, then the evaluated agent `res` (an EvalResult), then `more` (label, res)."""
    rows = [("random actions", len(rand), f"{np.mean(rand):.1f}", f"{np.std(rand):.1f}", "-", "-")]
    rows += [(name, len(r.returns), f"{r.mean:.1f}", f"{r.std:.1f}", f"{r.planner_calls_per_step:.2f}",
              f"{r.ms_per_decision:.1f}") for name, r in [(label, res), *more]]
    return table(rows, ("policy", "episodes", "return", "std", "planner calls/step", "ms/decision"))


def _teacher_file(cfg: DemoConfig) -> str | None:
    if cfg.teacher == "none":
        return None
    if cfg.teacher != "auto":
        return cfg.teacher

    found = shipped_teacher("walker-walk")
    if found is None:
        raise ConfigError("teacher=auto: the shipped walker-walk teacher (models/walker-walk-size1-seed1.pt and its "
                          "card) is missing; give teacher=FILE")
    return str(found)


def _train_part(cfg: DemoConfig, root: Path) -> None:
    """The first demo: a small TD-MPC2 trained briefly on `cfg.task`, against random actions."""
    small = dict(latent_dim=64, enc_dim=64, mlp_dim=128, num_samples=128, num_elites=16, num_pi_trajs=8,
                 iterations=3, batch_size=128) if cfg.small else {}
    train_cfg = TrainConfig(task=cfg.task, steps=cfg.steps, model_size=cfg.model_size, seed=cfg.seed,
                            seed_steps=cfg.seed_steps, eval_freq=0, output_dir=str(root), exp_name="train",
                            mlflow=cfg.mlflow, torch_threads=cfg.torch_threads, **small)
    network = ("a small network (latent 64, MLP 128; 128 MPPI samples, 3 iterations)" if cfg.small
               else f"model size {cfg.model_size}")
    _stage(f"TD-MPC2 with {network} trained on {cfg.task} for {cfg.steps:,} env steps, then {cfg.episodes} "
           "evaluation episodes against a random policy")
    started = time.perf_counter()
    summary = train(train_cfg)
    minutes = (time.perf_counter() - started) / 60
    agent, _, _ = load_agent(summary["checkpoint"], {}, "auto")
    res = evaluate(agent, cfg.task, cfg.episodes, cfg.seed, show_progress=True)
    rand = random_policy_returns(cfg.task, cfg.episodes, cfg.seed)
    print()
    print(_against_random(f"TD-MPC2 after {summary['env_steps']:,} steps", res, rand))
    print(f"\ntrained in {minutes:.1f} min ({summary['env_steps_per_second']:.1f} env steps/s); "
          f"checkpoint {summary['checkpoint']}")
    if summary["mlflow_run_id"]:
        uri = default_tracking_uri()
        experiment_id = client(uri).get_run(summary["mlflow_run_id"]).info.experiment_id
        print(f"MLflow run {summary['mlflow_run_id']} (browse: {browse_hint(uri, experiment_id)})")


def _stage(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _own_correctors(cfg: DemoConfig, teacher: str, root: Path) -> str:
    """full=true: a copy of the teacher in <root>/teacher/ with correctors distilled here beside it, in
    correctors/ (where evaluate and the sweep look for them). Returns the copy's path."""
    # the Ray path only: importing this module must not load Ray
    from gym_qwen.actors.corrector_collection import collect_corrector_data

    src = Path(teacher)
    folder = root / "teacher"
    (folder / "correctors").mkdir(parents=True, exist_ok=True)
    copy = folder / src.name
    shutil.copyfile(src, copy)
    if src.with_suffix(".json").is_file():
        shutil.copyfile(src.with_suffix(".json"), copy.with_suffix(".json"))
    data = root / "corrector-data.parquet"
    _stage(f"collecting corrector data: {cfg.collect_episodes} episodes of the teacher executing 6 planned actions "
           "per plan, the full planner's action recorded at every speculative step")
    with _stage_errors("the collection"):
        rows, _ = collect_corrector_data(config_from_dict(CollectConfig, {
            "checkpoint": str(copy), "episodes": cfg.collect_episodes, "output": str(data),
            "num_workers": cfg.num_workers, "seed": cfg.seed, "torch_threads": cfg.torch_threads}))
    print(f"wrote {rows} rows to {data}")
    _stage(f"distilling the two-tower and the temporal corrector from it ({cfg.distill_epochs} epochs each)")
    with _stage_errors("the distillation"):
        results = distill(config_from_dict(DistillConfig, {
            "data": str(data), "tdmpc_ckpt": str(copy), "save_path": str(folder / "correctors" / copy.stem),
            "corrector_type": "both", "epochs": cfg.distill_epochs, "seed": cfg.seed, "device": "cpu",
            "torch_threads": cfg.torch_threads}))
    print("wrote " + ", ".join(r["checkpoint"] for r in results.values()))
    return str(copy)


@contextlib.contextmanager
def _stage_errors(stage: str):
    """A user error inside a stage (after the demo wrote its folder) ends the demo as a failed stage, exit 1."""
    try:
        yield
    except USER_ERRORS as e:
        raise DemoStageError(f"{stage} failed: {' '.join(str(e).split())}") from None


class DemoStageError(RuntimeError):
    """A stage of the demo (collect, distill, sweep) failed; it has printed why."""


CLOCKED_MODES = ("async", "stale")


def _name(s) -> str:
    """A setting as a person says it: a planner budget is not called a baseline, the prior is the prior."""
    if s.mode == "prior":
        return "the policy prior alone (no planner)"
    return f"the planner budget {s.label.split('(', 1)[1][:-1]}" if s.mode == "baseline" and s.planner else s.label


def _ms(ms: float) -> str:
    return f"{ms:.0f}" if ms >= 10 else f"{ms:.1f}"  # the prior's 0.3 ms is not "0 ms"


def _conclusion(settings: list, trial_episodes: int) -> list[str]:
    """What the comparison says, in words: the baseline, and the setting with the fewest planner calls per step
    that keeps 95% of its return."""
    base = next((s for s in settings if s.mode == "baseline" and not s.planner), None)
    if base is None:
        return []
    lines = [f"The full planner at every step scored {base.return_mean:.1f} at {_ms(base.ms_per_step)} ms per step."]
    prior = next((s for s in settings if s.mode == "prior"), None)
    if prior is not None and prior.retained is not None:
        lines.append(f"{_name(prior)[0].upper()}{_name(prior)[1:]} scored {prior.return_mean:.1f} "
                     f"({100 * prior.retained:.1f}%) at {prior.ms_per_step:.1f} ms per step: what planning adds "
                     "is measured against this.")
    # under a clock (async, stale) a setting answers another question, which control period it keeps up with:
    # said on its own line below, not ranked with the settings the planner waits for
    clocked = [s for s in settings if s.mode in CLOCKED_MODES]
    kept = [s for s in settings if s is not base and s not in clocked and s.retained is not None
            and s.retained >= 0.95]
    if prior in kept:
        lines.append("The policy prior alone kept 95%: on these episodes the planner adds nothing the table can "
                     "resolve.")
    # the settings that speculate with the planner (the prior makes no planner calls: it is said on its own above)
    fewest = min((s for s in kept if s.mode not in ("baseline", "prior")), key=lambda s: s.planner_calls_per_step,
                 default=None)
    if fewest is not None:
        lines.append(f"Fewest planner calls keeping 95% of it: {_name(fewest)}: {fewest.return_mean:.1f} "
                     f"({100 * fewest.retained:.1f}%) at {fewest.planner_calls_per_step:.3f} planner calls per step "
                     f"(one plan per {1 / fewest.planner_calls_per_step:.1f} steps), {_ms(fewest.ms_per_step)} ms per "
                     "step.")
    fastest = min(kept, key=lambda s: s.ms_per_step, default=None)
    if fastest is not None and fastest is not fewest:
        lines.append(f"Fastest keeping 95%: {_name(fastest)}: {fastest.return_mean:.1f} "
                     f"({100 * fastest.retained:.1f}%) at {_ms(fastest.ms_per_step)} ms per step.")
    if clocked:
        said = ", ".join(f"{_name(s)} {s.return_mean:.1f}" + (f" ({100 * s.retained:.1f}%)" if s.retained is not None
                                                              else "") for s in sorted(clocked, key=lambda s: s.k))
        lines.append(f"Under a simulated clock whose plans arrive d = k decisions after they start (the planner "
                     f"slower than the control period): {said}; the policy prior is on time at any period.")
    if trial_episodes < 5:
        lines.append(f"Each setting ran {trial_episodes} episode{'s' if trial_episodes > 1 else ''} (same seeds): "
                     "differences of a few percent are noise here; BENCHMARKS.md's compute frontier has 30 "
                     "episodes per setting with intervals, and trial_episodes=30 measures them yourself.")
    return lines


def _sweep_overrides(cfg: DemoConfig, teacher: str) -> tuple[dict, dict]:
    """The sweep keys and the trial keys the demo sets over its sweep file's."""
    return ({"max_concurrent": cfg.max_concurrent, "storage": str(Path(cfg.output_dir) / "demo")},
            {"checkpoint": teacher, "episodes": cfg.trial_episodes, "seed": cfg.seed})


def _sweep_arguments(cfg: DemoConfig, teacher: str, root: Path) -> tuple:
    """run_sweep_file's (SweepConfig, command_line, fixed) for the demo's sweep of `teacher`."""
    command_line, fixed = _sweep_overrides(cfg, teacher)
    return config_from_dict(SweepConfig, {"file": cfg.sweep}), {**command_line, "storage": str(root / "sweep")}, fixed


def _check_sweep(cfg: DemoConfig, teacher: str, root: Path) -> tuple | None:
    """The sweep file and its trials, checked before anything runs; the check is handed on to the sweep. With
    full=true the correctors do not exist yet: then only the file and the keys are checked (returns None)."""
    # the Ray path only: importing this module must not load Ray
    from gym_qwen.actors.sweep_runner import check_sweep_file

    checked = check_sweep_file(*_sweep_arguments(cfg, teacher, root), resolve=not cfg.full)
    return None if cfg.full else checked


def _sweep_and_compare(cfg: DemoConfig, teacher: str, root: Path, checked: tuple | None) -> int:
    # the Ray path only: importing this module must not load Ray
    from gym_qwen.actors.sweep_runner import run_sweep_file

    _stage(f"sweeping speculation settings on {teacher} ({cfg.sweep}, {cfg.trial_episodes} episode(s) per trial, "
           f"{cfg.max_concurrent} trials at once)")
    rc, sweep_id = run_sweep_file(*_sweep_arguments(cfg, teacher, root), checked=checked)
    if rc or sweep_id is None:
        raise DemoStageError(f"the sweep did not finish (exit {rc}; see above)")
    _stage(f"comparing the sweep's settings (gym-qwen compare sweep={sweep_id})")
    settings = compare_runs(config_from_dict(CompareConfig, {"sweep": [sweep_id],
                                                              "output": str(root / "compare-demo.png")}))
    print()
    for line in _conclusion(settings, cfg.trial_episodes):
        print(line)
    uri = default_tracking_uri()
    experiment = client(uri).get_experiment_by_name(settings[0].experiment) if settings else None
    if experiment is not None:
        print(f"Browse every trial (experiment {experiment.name}, sweep {sweep_id}: a parent run with one nested "
              f"run per trial): {browse_hint(uri, experiment.experiment_id)}")
    return 0


def _demo(cfg: DemoConfig) -> int:
    started = time.perf_counter()
    root = Path(cfg.output_dir) / "demo" / time.strftime("%Y%m%d-%H%M%S")
    require_output_folder(root, f"output_dir={cfg.output_dir}", ConfigError)
    teacher = _teacher_file(cfg)
    checked = _check_sweep(cfg, teacher, root) if teacher else None
    print("Gym Qwen demo: how much replanning does a TD-MPC2 agent need? "
          + (f"A sweep of speculative execution settings on {teacher}, then their comparison; " if teacher else "")
          + f"everything under {root}.", flush=True)
    if cfg.train:
        _train_part(cfg, root)
    if teacher is None:
        return 0
    try:
        if cfg.full:
            teacher = _own_correctors(cfg, teacher, root)
        rc = _sweep_and_compare(cfg, teacher, root, checked)
    except DemoStageError as e:
        print(f"gym-qwen demo: {e}", file=sys.stderr)
        return 1
    print(f"demo finished in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return rc


def main(argv: list[str] | None = None) -> int:
    return run_job("demo", DemoConfig, _demo, argv)


if __name__ == "__main__":
    sys.exit(main())
