"""`gym-qwen evaluate checkpoint=models/walker-walk-size1-seed1.pt episodes=10 mode=naive spec_exec_horizon=3`.

One setting prints one row; `mode=all` evaluates every mode on the same seeds, prints the comparison and writes
its plot. Every row: return, return retained vs baseline, planner / corrector calls per step, ms per step split
into plan / encode / correct / extend, replan rate and misses (adaptive), and the action error to the teacher
with measure_teacher=true.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch

from gym_qwen.jobs.common import run_job, table
from gym_qwen.platform.config import PRESET_KEY, ConfigError, EvaluateConfig, read_preset
from gym_qwen.platform.files import atomic_write_bytes, require_output_folder, sha256_of
from gym_qwen.platform.registry import PREFIX, is_registered, local_files
from gym_qwen.platform.speculative.calibration import threshold_from_data
from gym_qwen.platform.speculative.clock import CLOCK_METRICS
from gym_qwen.platform.speculative.comparison import (
    CLOCK_HEADER, ROW_HEADER, all_specs, clock_rows, comparison_record, comparison_rows, plot_comparison, resolve_mode)
from gym_qwen.platform.speculative.episode_log import EpisodeLog, episodes_path, setting_key
from gym_qwen.platform.speculative.evaluation import evaluate_checkpoint, measure_clocks, result_from_records
from gym_qwen.platform.speculative.modes import BUDGET_RULE
from gym_qwen.platform.sweeps.setting import PLANNER_KEYS, agent_overrides, planning_horizon, resolve_setting
from gym_qwen.platform.tdmpc2.checkpoints import check_compatible, check_overrides, load_checkpoint
from gym_qwen.platform.tracking import Tracker


def card_baseline(checkpoint: str, seed: int, episodes: int, overrides: dict) -> list[float] | None:
    """The baseline's returns on the same episodes (indices 0..episodes-1 of the same seed) from the teacher's
    card beside the checkpoint, if it has them."""
    card = Path(checkpoint).with_suffix(".json")
    if any(k in overrides for k in PLANNER_KEYS) or not card.is_file():
        return None
    try:
        ev = json.loads(card.read_text())["evaluation"]
    except (ValueError, KeyError):
        return None
    if ev.get("seed") != seed or len(ev.get("returns", [])) < episodes:
        return None
    return [float(r) for r in ev["returns"][:episodes]]


def _run_one(cfg: EvaluateConfig, spec, overrides: dict, video_path: str | None, indices=None, on_record=None):
    if cfg.num_workers > 0:  # Ray only when asked for
        from gym_qwen.actors.evaluators import evaluate_with_actors

        return evaluate_with_actors(cfg.checkpoint, cfg.episodes, cfg.seed, num_workers=cfg.num_workers,
                                    cpus=cfg.worker_cpus, overrides=overrides, task=cfg.task,
                                    ray_address=cfg.ray_address, show_progress=cfg.progress, execution=spec,
                                    indices=indices, on_record=on_record, scale_wait=cfg.scale_wait)
    return evaluate_checkpoint(cfg.checkpoint, cfg.episodes, cfg.seed, overrides=overrides, device=cfg.device,
                               task=cfg.task, video_path=video_path, show_progress=cfg.progress, execution=spec,
                               num_envs=cfg.num_envs, indices=indices, on_record=on_record)


def _play_setting(cfg: EvaluateConfig, task: str, spec, overrides: dict, video_path: str | None, log):
    """One setting's EvalResult over episodes 0..episodes-1: those in the episode log are read, the others are
    played (and logged as each finishes)."""
    records: dict[int, dict] = {}
    key = None
    if log is not None:
        corrector_sha = sha256_of(spec.corrector_checkpoint) if spec.corrector_checkpoint else None
        key = setting_key(spec, overrides, corrector_sha)
        records.update({i: r for i, r in log.done(key).items() if i < cfg.episodes})
    todo = [i for i in range(cfg.episodes) if i not in records]

    def arrived(record):
        records[int(record["episode"])] = record
        if log is not None:
            log.add(key, spec.label, record)

    video = None
    if todo:
        res, _ = _run_one(cfg, spec, overrides, video_path, indices=todo, on_record=arrived)
        video = res.video
    result = result_from_records(task, spec.settings.mode, [records[i] for i in range(cfg.episodes)])
    result.video = video
    return result, len(todo)


def check_output_paths(cfg: EvaluateConfig) -> None:
    """Every folder evaluate would write into can be written (ConfigError otherwise), before any work: output=
    and its episode log, plot= (mode=all: docs/ by default), video_path= (video=true: the checkpoint's folder by
    default)."""
    targets = {f"{key}={getattr(cfg, key)}": getattr(cfg, key) for key in ("output", "plot", "video_path")}
    if cfg.mode == "all" and cfg.plot is None:
        targets["the plot (plot= not given)"] = "docs/speculation.png"
    if cfg.video and cfg.video_path is None:
        targets["the video (video_path= not given)"] = str(default_video_path(cfg.checkpoint, "task"))
    for what, target in targets.items():
        if target:
            require_output_folder(Path(target).parent, what, ConfigError)


def default_video_path(checkpoint: str, task: str) -> Path:
    """Where video=true records without video_path=: beside the checkpoint file; for a registered checkpoint
    (models:/...) in the working directory, named after the registered model."""
    if is_registered(checkpoint):
        return Path(f"{checkpoint[len(PREFIX):].replace('/', '-').replace('@', '-')}-{task}.gif")
    return Path(f"{Path(checkpoint).with_suffix('')}-{task}.gif")


def _evaluate_given(cfg: EvaluateConfig, explicit: set[str]) -> None:
    """Evaluate as asked: the output paths and the MLflow server checked before any work, registered files
    (checkpoint= or corrector_checkpoint= models:/...) read from the registry for the time of the evaluation."""
    check_output_paths(cfg)
    Tracker(cfg.mlflow).preflight()
    keys = ("checkpoint", "corrector_checkpoint")
    with local_files({k: getattr(cfg, k) for k in keys}) as local:
        given = {local[k]: getattr(cfg, k) for k in keys if local[k] != getattr(cfg, k)}
        _evaluate(dataclasses.replace(cfg, **local), explicit, given)


def _evaluate(cfg: EvaluateConfig, explicit: set[str], given: dict[str, str]) -> None:
    """`given`: a local copy of a registered file -> the models:/ URI given for it (what records name)."""
    torch.set_num_threads(cfg.torch_threads)
    choice = one_step_choice = None
    if cfg.threshold_data:  # chosen once, on collection episodes, before any evaluation episode is played

        if "mismatch_threshold" in explicit:
            raise ConfigError("give mismatch_threshold= or threshold_data=, not both")
        k = max(cfg.spec_exec_horizons) if cfg.mode == "all" else (cfg.spec_exec_horizon or 3)
        try:
            choice = threshold_from_data(cfg.threshold_data, k, cfg.threshold_budget, cfg.mismatch)
            if cfg.mode == "all" and cfg.mismatch == "open_loop":  # and one more row: the one-step verifier
                try:
                    one_step_choice = threshold_from_data(cfg.threshold_data, k, cfg.threshold_budget, "one_step")
                except ValueError as e:
                    print(f"no adaptive one_step row: {e}")
        except ValueError as e:
            raise ConfigError(f"threshold_data={cfg.threshold_data}: {e}") from None
        cfg = dataclasses.replace(cfg, mismatch_threshold=choice["threshold"])
        for c in filter(None, (choice, one_step_choice)):
            print(f"adaptive threshold ({c['mismatch']}) {c['threshold']:g}, chosen on {c['episodes']} "
                  f"{c['seed_kind']} episodes of {cfg.threshold_data}: estimated "
                  f"{c['estimated_planner_calls_per_step']:.3f} planner calls per step at k={k} "
                  f"(budget {cfg.threshold_budget:g})")
    ckpt = load_checkpoint(cfg.checkpoint)
    check_compatible(ckpt, task=cfg.task, path=cfg.checkpoint)
    task = ckpt["task"]
    resolved, note = resolve_mode(cfg)
    if resolved["mode"] == "all":
        overrides = agent_overrides(cfg, explicit, resolved)
        if note:
            print(note)
        teacher_planner = {**ckpt["config"], **overrides}
        specs, notes = all_specs(cfg, planning_horizon(ckpt, overrides), teacher_planner,
                                 one_step_choice and one_step_choice["threshold"])
        for line in notes:
            print(line)
    else:  # the setting a sweep trial with the same keys runs
        setting = resolve_setting(cfg, explicit, ckpt, Path.cwd())
        if setting.note:
            print(setting.note)
        overrides = setting.overrides
        specs = [dataclasses.replace(setting.spec, agent_planner=tuple(setting.planner.items()))]
    check_overrides(ckpt, overrides, cfg.checkpoint)
    specs = _clocked(cfg, specs, overrides)
    # planner keys given for every setting (num_samples=64 ...) make each a cheap-planner setting in MLflow
    planner = {k: v for k, v in overrides.items() if k in PLANNER_KEYS}
    video_path = None
    if cfg.video:
        video_path = cfg.video_path or str(default_video_path(given.get(cfg.checkpoint, cfg.checkpoint), task))
    log = None
    if cfg.output:
        log = EpisodeLog(episodes_path(cfg.output), {"task": task, "checkpoint_sha256": sha256_of(cfg.checkpoint),
                                                     "seed": cfg.seed}, resume=cfg.resume)
    if any(s.planner_overrides for s in specs):
        print(f"planner budgets: samples x MPPI iterations; {BUDGET_RULE}")
    results = []

    def record_so_far():
        # a setting's own cheap planner is no reference: only the teacher's planner is retained against
        base = next((r.returns for s, r in results if s.settings.mode == "baseline" and not s.planner_overrides
                     and not s.agent_planner), None)
        base = base if base is not None else card_baseline(cfg.checkpoint, cfg.seed, cfg.episodes, overrides)
        rec = comparison_record(task, results, base)
        rec.update(checkpoint=given.get(cfg.checkpoint, cfg.checkpoint), checkpoint_env_steps=ckpt["env_steps"],
                   seed=cfg.seed, episodes=cfg.episodes, settings_done=len(results), settings_planned=len(specs),
                   episode_log=None if log is None else str(log.path), threshold_choice=choice)
        if one_step_choice:
            rec["threshold_choice_one_step"] = one_step_choice
        return rec, base

    runs = SettingRuns(cfg, task, planner, given)
    try:
        for spec in specs:
            runs.start(spec)
            res, played = _play_setting(cfg, task, spec, overrides, video_path, log)
            results.append((spec, res))
            if len(specs) > 1:  # a long comparison keeps what it has: the numbers so far after every setting
                print(f"[{len(results)}/{len(specs)}] {spec.label}: return {res.mean:.1f} ± {res.std:.1f}, "
                      f"{res.planner_calls_per_step:.3f} planner calls/step, {res.ms_per_decision:.1f} ms/step "
                      f"({played} episodes played, {cfg.episodes - played} from the log)", flush=True)
                if cfg.output:
                    partial = record_so_far()[0]
                    atomic_write_bytes(cfg.output, lambda f: f.write(json.dumps(partial, indent=2).encode()))
        record, baseline = record_so_far()
        print(table(comparison_rows(task, results, baseline), ROW_HEADER))
        if any(spec.clock is not None for spec, _ in results):
            print(table(clock_rows(results), CLOCK_HEADER))
        if baseline is not None:
            print("retained: mean return over the baseline's on the same episodes, 95% paired bootstrap interval; "
                  "falls: episodes below half the baseline's median")
        if results[0][1].video:
            print(f"video: {results[0][1].video}")
        if len(results) > 1:
            plot = plot_comparison(record, cfg.plot or f"docs/speculation-{task}.png")
            print(f"plot: {plot} (numbers: {plot.with_suffix('.json')})")
        if cfg.output:
            payload = record if len(results) > 1 else {**results[0][1].summary(), **record}
            atomic_write_bytes(cfg.output, lambda f: f.write(json.dumps(payload, indent=2).encode()))
            print(f"episodes: {log.path}")
        runs.finish(results, baseline, ckpt["env_steps"])
    except KeyboardInterrupt:
        runs.end("KILLED")
        raise
    except BaseException:
        runs.end("FAILED")
        raise


def _clocked(cfg: EvaluateConfig, specs: list, overrides: dict) -> list:
    """The specs with their clock's planner latency measured here, once, before any episode (so every episode,
    here or on actors, runs with one d); a line says what the clock is."""
    specs = measure_clocks(cfg.checkpoint, specs, overrides, cfg.device, cfg.seed)
    for spec in specs:
        c = spec.clock
        if c is not None and spec.settings.mode != "prior":
            print(f"clock: P={c.control_period_ms:g} ms, planner latency L={c.planner_latency_ms:.1f} ms "
                  f"({c.latency_source}), d={c.delay}: a plan started at decision s is ready for decision "
                  f"s+{c.delay - 1}{' (wall clock)' if c.realtime else ' (simulated clock)'}", flush=True)
    return specs


class SettingRuns:
    """The MLflow runs of an evaluation with mlflow=true (nothing otherwise): one per setting, made before the
    setting plays so that its system metrics (system_metrics=true) cover it; the numbers are logged, and the runs
    ended, once every setting has played (a setting's return retained needs the baseline's)."""

    METRICS = ("return_mean", "return_std", "planner_calls_per_step", "corrector_calls_per_step",
               "encoder_calls_per_step", "ms_per_decision", "plan_ms_per_step", "encode_ms_per_step",
               "correct_ms_per_step", "extend_ms_per_step", "replan_rate", "misses", "teacher_action_mse")

    def __init__(self, cfg: EvaluateConfig, task: str, planner: dict, given: dict[str, str]):
        self.cfg, self.task, self.planner, self.given = cfg, task, planner, given
        self.trackers: list[Tracker] = []

    def start(self, spec) -> None:
        """Make the run of setting `spec` (the next to play)."""
        if not self.cfg.mlflow:
            return
        cfg, shown = self.cfg, lambda path: self.given.get(path, path)
        tracker = Tracker(True, cfg.mlflow_experiment, system_metrics=cfg.system_metrics)
        clock = spec.clock.record() if spec.clock is not None else {}
        tracker.start(f"evaluate-{self.task}-{spec.label}", {
            "checkpoint": shown(cfg.checkpoint), "episodes": cfg.episodes, "seed": cfg.seed,
            "mode": spec.settings.mode, "spec_exec_horizon": spec.steps_per_plan,
            "corrector_type": spec.corrector_type, "corrector_checkpoint": shown(spec.corrector_checkpoint),
            "mismatch_threshold": spec.settings.mismatch_threshold, "fallback": spec.settings.fallback,
            "past_horizon": spec.settings.past_horizon,
            "planner_overrides": {**self.planner, **dict(spec.planner_overrides)}, **clock},
            tags={"task": self.task, "command": "evaluate"})
        self.trackers.append(tracker)

    def finish(self, results: list, baseline: list | None, env_steps: int) -> None:
        """Log each setting's numbers at step `env_steps` (the checkpoint's), its video, and end its run."""
        for tracker, (spec, res) in zip(self.trackers, results):
            s = res.summary()
            metrics = {k: s[k] for k in self.METRICS}
            if spec.clock is not None:
                metrics.update({k: s[k] for k in CLOCK_METRICS})
            if baseline:
                metrics["return_retained"] = res.mean / (sum(baseline) / len(baseline))
            tracker.log_metrics(metrics, step=env_steps)
            if res.video:
                tracker.log_artifact(res.video)
            tracker.end()

    def end(self, status: str) -> None:
        """End every run not ended yet with `status` (the evaluation failed or was interrupted)."""
        for tracker in self.trackers:
            tracker.end(status)


def given_keys(argv: list[str]) -> set[str]:
    """The keys a user set: on the command line or in the config= preset (those override the checkpoint's)."""
    pairs = dict(a.split("=", 1) for a in argv if "=" in a)
    keys = set(pairs) - {PRESET_KEY}
    if PRESET_KEY in pairs:
        keys |= set(read_preset(pairs[PRESET_KEY]))
    return keys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_job("evaluate", EvaluateConfig, lambda cfg: _evaluate_given(cfg, given_keys(argv)), argv)


if __name__ == "__main__":
    sys.exit(main())
