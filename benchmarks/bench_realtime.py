"""Real-time control: return against the control period, for the full planner at model size 1 (issue 31).

    python benchmarks/bench_realtime.py                                  # walker-walk and cheetah-run, 30 episodes
    python benchmarks/bench_realtime.py tasks=walker-walk episodes=5 realtime=true
    python benchmarks/bench_realtime.py tasks=walker-walk episodes=1 samples=32 iterations=1 budgets=16x1 \\
        out=/tmp/rt plot_dir=/tmp/rt                                     # a smoke run with tiny settings

For each task's shipped teacher (models/<task>-size1-seed1.pt): the full planner's latency L is measured here
(the median of 15 rounds, each timing one plan of it and of every budget, interleaved; `latency=<ms>` gives it
instead), and each control period P = fraction x L x margin is run
under the simulated clock (d = max(1, ceil(L / P)); a plan started at decision s is ready for decision s + d - 1)
with every mode on the same episodes: async without and with the corrector (and, where d is longer than the plan's
horizon H, both again acting with the policy prior at the real latent past H: `past_horizon=prior`), stale, the
policy prior, the planner
budgets whose measured latency fits within P (d = 1: they replan every step on time), and the unconstrained
baseline (no clock), the reference for "retained". Settings whose episodes cannot differ are run once: the
simulated clock depends on P only through d, and with d = 1 async and stale are the baseline step for step
(tests/test_realtime.py), so they reuse its episodes. `realtime=true` also runs async (with and without the
corrector, and past H with the prior too) on the wall clock at every P (times `realtime_margin`: slack for the
planner's jitter, d unchanged; auto: 1.3 where d allows it), with L as measured, on the first `realtime_episodes` episodes: it counts
deadline misses and how many episodes return exactly what the simulated clock's did (a clock that held plays the
same actions), printed as a check, not drawn; before it, the full planner's time per plan in its thread beside an
environment thread deciding every wall P (measure_thread_latency_ms), and the d that gives: where it is larger than
the simulated d, the wall clock cannot hold that period (printed with the check). At the period whose d
is 3 (the issue's targets), `gap_correctors=` and `gap_budgets=` add what could close a gap to the best planner
budget fitting it: async with other correctors (e.g. one distilled on `collect async_delay=3` DAgger data) and
async with the corrector on cheaper planners (under the same P, each with its own measured latency and d).

Settings the frontier runs already played on the same teacher, seed and episodes (the baseline, the policy prior,
the planner budgets: docs/frontier/<task>*.episodes.jsonl) are copied from their logs, each line marked
`reused_from`, not played again (`reuse=none` plays them). Every finished episode is appended to
<out>/realtime-<task>.episodes.jsonl; running the same command again
continues from it, with the latencies the earlier run measured (L and each budget's, kept in
<out>/realtime-<task>.latencies.json as soon as they are measured, so that a run stopped before its end resumes under
the same clock and the same budgets fitting each P; more episodes= extends it; fresh=true starts over and measures
again). Writes <out>/realtime-<task>.json (every
row with its 95% intervals, the control rate each setting sustains while keeping >= 95% of the baseline's return,
the issue's targets at d = 3) and <plot_dir>/realtime-<task>.png.
"""
from __future__ import annotations

import json
import math
import sys
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULTS = {
    "tasks": "walker-walk,cheetah-run", "episodes": "30", "seed": "1", "periods": "1/8,1/4,1/3,1/2,1,2",
    "margin": "1.0", "latency": "measured", "budgets": "32x1,32x2,64x2,128x3,256x4", "corrector": "two_tower",
    "threads": "1", "compile": "teacher", "samples": "none", "iterations": "none", "realtime": "false",
    "realtime_episodes": "5", "realtime_margin": "auto",
    "fresh": "false", "out": str(ROOT / "benchmarks" / "results"), "plot_dir": str(ROOT / "docs"),
    "gap_correctors": "", "gap_budgets": "", "past_h_correctors": "", "reuse": "frontier",
}
HELP = {
    "tasks": "tasks whose shipped size-1 teachers are run", "episodes": "episodes per setting (paired)",
    "seed": "evaluation seed", "periods": "control periods as fractions of L",
    "margin": "P = fraction x L x margin (above 1: slack for the wall clock; d unchanged while margin < d/(d-1))",
    "latency": "measured, or the full planner's latency in ms", "budgets": "planner budgets <samples>x<iterations>",
    "corrector": "corrector of the async rows (two_tower or temporal; models/correctors/)",
    "threads": "torch threads (the realtime planner thread gets as many)",
    "compile": "teacher (as the checkpoint says), true or false", "samples": "the full planner's samples (none = "
    "the teacher's; a smoke run makes it small)", "iterations": "the full planner's MPPI iterations (none = the "
    "teacher's)", "realtime": "also run async on the wall clock",
    "realtime_episodes": "episodes of each wall-clock setting (the first of the simulated ones: on the same seeds a "
                         "clock that held plays them step for step)",
    "realtime_margin": "the wall clock's P is the simulated one's times this (slack for the planner's jitter around "
                       "its median; must leave d as it is); auto: 1.3, or the most below d/(d-1) that keeps d",
    "fresh": "start the episode logs over",
    "out": "folder of the JSON and the episode logs", "plot_dir": "folder of realtime-<task>.png",
    "gap_correctors": "what could close a gap at d = 3: async with each of these corrector files (<type>:<path>, "
                      "comma-separated; e.g. one distilled on `collect async_delay=3` DAgger data)",
    "past_h_correctors": "where d > H: async with the prior past H and each of these corrector files (<type>:<path>, "
                         "comma-separated; e.g. one distilled on `collect async_delay=4 past_horizon=prior` data)",
    "gap_budgets": "what could close a gap at d = 3: async with the corrector on each of these cheaper planners "
                   "(under the same P, with its own measured latency and so its own d)",
    "reuse": "episode logs of other runs on the same teacher, seed and episodes whose settings are taken from them "
             "instead of played again (the baseline, the prior, the budgets): frontier (docs/frontier/<task>*."
             "episodes.jsonl, timing runs left out) and/or episode log files, comma-separated; none",
}
RETAIN = 0.95  # the control rate a setting sustains: the shortest P at which it keeps this much of the baseline
TARGET_D = 3
LATENCY_ROUNDS = 15  # interleaved rounds timing the full planner and every budget (one plan of each per round)
LATE_SHOWN = 20  # late decisions ([episode, decision, ms past the deadline]) a row of the JSON lists
AUTO_MARGIN = 1.3  # the wall clock's slack: with 1.1, 0-46 of 1000 decisions missed; with 1.3 none (BENCHMARKS.md)
TARGETS = {"walker-walk": 0.95, "cheetah-run": 0.90}  # async with a corrector at d = 3 (issue 31)
PAST_H = {"async": "async, prior past H", "async +corrector": "async +corrector, prior past H"}  # past_horizon=prior
CLOCKED_ROWS = ("async", "async +corrector", "stale", *PAST_H.values())  # every period's rows, in table order


def parse_args(argv: list[str], defaults: dict | None = None, name: str = "bench_realtime") -> dict:
    """`key=value` arguments over `defaults` (this benchmark's DEFAULTS); an unknown key: one line, exit 2."""
    defaults = DEFAULTS if defaults is None else defaults
    args = dict(defaults)
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            print(f"{name}: error: {item!r}: expected key=value with a key among {', '.join(defaults)}",
                  file=sys.stderr)
            raise SystemExit(2)
        args[key] = value
    return args


def flag(text: str) -> bool:
    return str(text).strip().lower() in ("1", "true", "yes")


def fractions(text: str) -> list[Fraction]:
    return [Fraction(p.strip()) for p in text.split(",") if p.strip()]


# ------------------------------------------------------------------------------------------------- running
class Runner:
    """Plays settings of one task on its teacher, each episode logged (and read back when resuming)."""

    def __init__(self, task: str, args: dict):
        import torch

        from gym_qwen.platform.files import sha256_of
        from gym_qwen.platform.speculative.episode_log import EpisodeLog, episodes_path
        from gym_qwen.platform.tdmpc2.checkpoints import load_agent

        self.task, self.args = task, args
        self.checkpoint = ROOT / "models" / f"{task}-size1-seed1.pt"
        self.episodes, self.seed = int(args["episodes"]), int(args["seed"])
        torch.set_num_threads(int(args["threads"]))
        self.overrides = {}
        if args["compile"] != "teacher":
            self.overrides["compile"] = flag(args["compile"])
        for key, name in (("samples", "num_samples"), ("iterations", "iterations")):
            if args[key] != "none":
                self.overrides[name] = int(args[key])
        if "num_samples" in self.overrides:  # a small full planner keeps the paper's proportions
            n = self.overrides["num_samples"]
            self.overrides.update(num_elites=max(2, n // 8), num_pi_trajs=max(1, round(n * 24 / 512)))
        self.agent, _, self.ckpt = load_agent(str(self.checkpoint), self.overrides, "cpu", None)
        self.sha = sha256_of(self.checkpoint)
        out = Path(args["out"])
        log_path = episodes_path(out / f"realtime-{task}.json")
        if flag(args["fresh"]) and log_path.exists():
            log_path.unlink()
        header = {"task": task, "checkpoint_sha256": self.sha, "seed": self.seed}
        self.log = EpisodeLog(log_path, header, resume=True)
        self.reused = reused_logs(task, args["reuse"], header)
        self.correctors = {}
        self.timings = out / f"realtime-{task}.latencies.json"
        # "full" or a budget's name -> median ms, measured here or by the run being continued
        self.measured = {} if flag(args["fresh"]) else load_kept_latencies(self.timings, self.overrides,
                                                                            int(args["threads"]))

    def corrector_file(self, kind: str) -> str:
        return str(ROOT / "models" / "correctors" / f"{self.checkpoint.stem}-{kind}.pt")

    def log_label(self, spec) -> str:
        """The setting's label in the episode log: the spec's, with a corrector other than the task's default
        named by its file (the gap rows' correctors share a type, so "+two_tower" alone would not tell them apart)."""
        kind, path = spec.corrector_type, spec.corrector_checkpoint
        if not path or Path(path).resolve() == Path(self.corrector_file(kind)).resolve():
            return spec.label
        return spec.label.replace(f"+{kind}", f"+{Path(path).stem}", 1)

    def planner_latencies(self, wanted: dict) -> dict[str, tuple[float, bool]]:
        """The median time (ms) of each planner of `wanted` ("full" or a budget's name -> its spec; None: the full
        planner): as the run being continued measured it, else measured now, every missing one together in
        interleaved rounds (their ratios decide which budgets fit a period), and kept at once (atomically) for the
        runs that continue this one; with whether each was measured now."""
        from gym_qwen.platform.files import atomic_write_bytes

        missing = {name: spec for name, spec in wanted.items() if name not in self.measured}
        if missing:
            self.measured.update(self.latencies(missing))
            kept = {"task": self.task, "agent_overrides": self.overrides, "threads": int(self.args["threads"]),
                    "rounds": LATENCY_ROUNDS, "latency_ms": self.measured}
            atomic_write_bytes(self.timings, lambda f: f.write(json.dumps(kept, indent=1).encode()))
        return {name: (self.measured[name], name in missing) for name in wanted}

    def latencies(self, specs: dict) -> dict[str, float]:
        """The median time (ms) of each setting's planner here (name -> spec, None: the full planner), timed
        together in LATENCY_ROUNDS interleaved rounds."""
        from gym_qwen.platform.speculative.clocked import calibration_observation, measure_latencies_ms
        from gym_qwen.platform.speculative.evaluation import setting_planner

        obs = calibration_observation(self.task, self.seed)
        planners = {name: setting_planner(self.agent, spec) for name, spec in specs.items()}
        return measure_latencies_ms(self.agent, obs, planners, repeats=LATENCY_ROUNDS, seed=self.seed)

    def play(self, spec, episodes: int | None = None):
        """The setting's EvalResult over episodes 0..episodes-1 (those in the log are read, not played)."""
        from gym_qwen.platform.files import sha256_of
        from gym_qwen.platform.speculative.episode_log import setting_key
        from gym_qwen.platform.speculative.evaluation import evaluate, load_execution_corrector, result_from_records

        corrector = None
        if spec.corrector_checkpoint:
            if spec.corrector_checkpoint not in self.correctors:
                self.correctors[spec.corrector_checkpoint] = load_execution_corrector(spec, self.agent, self.sha)
            corrector = self.correctors[spec.corrector_checkpoint]
        sha = sha256_of(spec.corrector_checkpoint) if spec.corrector_checkpoint else None
        key, label = setting_key(spec, self.overrides, sha), self.log_label(spec)
        n = self.episodes if episodes is None else min(episodes, self.episodes)
        todo = [i for i in range(n) if i not in self.log.done(key)]
        copied = 0
        for other in self.reused:  # the same key on the same teacher, seed and index: the same episode
            for i in [i for i in todo if i in other.done(key)]:
                rec = {k: v for k, v in other.done(key)[i].items() if k not in ("setting", "label")}
                self.log.add(key, label, {**rec, "reused_from": str(other.path.relative_to(ROOT))
                                               if other.path.is_relative_to(ROOT) else str(other.path)})
                todo.remove(i)
                copied += 1
        start = time.perf_counter()
        if todo:
            evaluate(self.agent, self.task, len(todo), self.seed, execution=spec, corrector=corrector, indices=todo,
                     on_record=lambda rec: self.log.add(key, label, rec))
        done = self.log.done(key)
        result = result_from_records(self.task, spec.settings.mode, [done[i] for i in range(n)])
        print(f"  {label}: return {result.mean:.1f}, {result.planner_calls_per_step:.3f} planner calls/step, "
              f"{result.deadline_misses} deadline misses ({len(todo)} episodes played in "
              f"{time.perf_counter() - start:.0f} s, {n - len(todo) - copied} from the log, {copied} "
              "reused from another run's log)", flush=True)
        return result


def load_kept_latencies(path: Path, overrides: dict, threads: int) -> dict:
    """The planner latencies (ms by "full" or budget name) an earlier run of the same agent overrides and torch
    threads kept in `path`; {} where there is none."""
    if not path.is_file():
        return {}
    kept = json.loads(path.read_text())
    if kept.get("agent_overrides") != overrides or kept.get("threads") != threads:
        return {}
    return dict(kept["latency_ms"])


def reused_logs(task: str, reuse: str, header: dict) -> list:
    """The episode logs whose episodes may stand in for this run's (read-only): comma-separated files and/or
    `frontier`, the logs of the frontier runs on this task (docs/frontier/<task>.episodes.jsonl and
    <task>-<extra>.episodes.jsonl; not the timing runs, whose one episode is played beside others to time it), of
    which one whose header (teacher, seed) differs is skipped (a file named is refused instead)."""
    from gym_qwen.platform.config_schema import ConfigError
    from gym_qwen.platform.speculative.episode_log import EpisodeLog

    paths = []  # (path, named by the user)
    for item in [i.strip() for i in reuse.split(",") if i.strip() and i.strip().lower() != "none"]:
        if item.lower() == "frontier":
            folder = ROOT / "docs" / "frontier"
            paths += [(p, False) for p in sorted(folder.glob(f"{task}*.episodes.jsonl"))
                      if not p.name.endswith("-timing.episodes.jsonl")
                      and (p.name == f"{task}.episodes.jsonl" or p.name[len(task)] == "-")]
        else:
            paths.append((Path(item), True))
    logs = []
    for path, given in paths:
        if not path.is_file():
            raise SystemExit(f"bench_realtime: error: reuse: no episode log at {path}")
        try:
            logs.append(EpisodeLog(path, header, resume=True, read_only=True))
        except ConfigError as e:
            if given:
                raise SystemExit(f"bench_realtime: error: reuse: {e}") from None
            print(f"  not reused: {e}", flush=True)
    return logs


def corrector_files(args: dict, key: str) -> list[tuple[str, str]]:
    """The (type, path) entries of a corrector list argument, `<type>:<path>` comma-separated, each an existing file."""
    out = []
    for item in [c.strip() for c in args[key].split(",") if c.strip()]:
        kind, _, path = item.partition(":")
        if kind not in ("two_tower", "temporal") or not Path(path).is_file():
            raise SystemExit(f"bench_realtime: error: {key} entry {item!r}: expected two_tower:<file> or "
                             "temporal:<file> of an existing file")
        out.append((kind, path))
    return out


def specs_for(runner: Runner, args: dict) -> dict:
    """Every setting the benchmark needs, by name, and the clock of each period."""
    from gym_qwen.platform.speculative.clock import ClockSettings, delay_steps, parse_latency
    from gym_qwen.platform.speculative.modes import ExecutionSpec, SpeculationSettings, budget_overrides, parse_budget

    given = parse_latency(args["latency"])
    source = "given" if given is not None else "measured"
    inf = float("inf")

    def budget_spec(text):
        return ExecutionSpec(SpeculationSettings("baseline", 1, inf), "none", None,
                             tuple(budget_overrides(*parse_budget(text)).items()))

    names = lambda key: [b.strip() for b in args[key].split(",") if b.strip()]  # noqa: E731
    wanted = {text: budget_spec(text) for text in names("budgets") + names("gap_budgets")}
    if given is None:
        wanted = {"full": None, **wanted}
    timed = runner.planner_latencies(wanted)  # continuing: as the run being continued measured them, so the periods
    if given is not None:                  # and the budgets fitting each stay the same
        latency, now = given, False
    else:
        latency, now = timed["full"]
    kept = "" if now or given is not None else f", by the run being continued: {runner.timings}"
    print(f"{runner.task}: the full planner takes L = {latency:.1f} ms ({source}{kept}; {args['threads']} threads)",
          flush=True)
    margin = float(args["margin"])
    periods = []
    for f in fractions(args["periods"]):
        P = float(f) * latency * margin
        periods.append({"fraction": str(f), "control_period_ms": P, "delay": delay_steps(P, latency)})
    corrector = runner.corrector_file(args["corrector"])
    if not Path(corrector).is_file():
        raise SystemExit(f"bench_realtime: error: no corrector at {corrector}")

    def spec(mode, P=None, corrector_type="none", realtime=False, overrides=(), past_horizon="extension",
             corrector_path=None):  # the corrector: the task's default file of its type unless a path is given
        clock = None if P is None else ClockSettings(P, latency, source, realtime,
                                                     int(args["threads"]) if realtime else None)
        path = None if corrector_type == "none" else corrector_path or corrector
        return ExecutionSpec(SpeculationSettings(mode, 1, inf, past_horizon=past_horizon), corrector_type, path,
                             tuple(overrides), clock=clock)

    budgets = {}
    for text in names("budgets"):
        b = budget_spec(text)
        ms, now = timed[text]
        budgets[text] = (b, ms)
        print(f"  planner budget {text}: {ms:.1f} ms{'' if now else ' (kept)'}", flush=True)
    H = runner.agent.planner.s.horizon
    by_delay = {}  # one simulated setting per d (P matters only through d); d = 1: the baseline's episodes
    for p in periods:
        d, P = p["delay"], p["control_period_ms"]
        if d > 1 and d not in by_delay:
            by_delay[d] = {"async": spec("async", P), "async +corrector": spec("async", P, args["corrector"]),
                           "stale": spec("stale", P)}
            if d > H:  # up to H there is nothing past the horizon: async's own episodes (tests/test_realtime.py)
                by_delay[d].update({PAST_H["async"]: spec("async", P, past_horizon="prior"),
                                    PAST_H["async +corrector"]: spec("async", P, args["corrector"],
                                                                     past_horizon="prior")})
                for kind, path in corrector_files(args, "past_h_correctors"):  # rows of their own (gap rows)
                    by_delay[d][f"async +{Path(path).stem}, prior past H"] = spec("async", P, kind,
                                                                                 past_horizon="prior",
                                                                                 corrector_path=path)
    gap = {}  # at the period whose d is TARGET_D: async with other correctors, async on cheaper planners
    target = next((p for p in periods if p["delay"] == TARGET_D), None)
    if target is not None:
        P = target["control_period_ms"]
        for kind, path in corrector_files(args, "gap_correctors"):
            gap[f"async +{Path(path).stem}"] = spec("async", P, kind, corrector_path=path)
        for text in names("gap_budgets"):
            overrides = budget_spec(text).planner_overrides
            ms = timed[text][0]
            if delay_steps(P, ms) == 1:
                print(f"  async on {text}: its plans ({ms:.1f} ms) fit P = {P:.1f} ms, so it is the budget's own "
                      "row (d = 1)", flush=True)
                continue
            gap[f"async +corrector (planner {text})"] = ExecutionSpec(
                SpeculationSettings("async", 1, inf), args["corrector"], corrector, overrides,
                clock=ClockSettings(P, ms, "measured"))
    realtime = {}
    if flag(args["realtime"]):
        for p in periods:
            P, d = p["control_period_ms"], p["delay"]
            margin = args["realtime_margin"]
            margin = min(AUTO_MARGIN, 0.99 * d / (d - 1) if d > 1 else AUTO_MARGIN) if margin == "auto" else float(margin)
            wall = P * margin
            if delay_steps(wall, latency) != p["delay"]:
                raise SystemExit(f"bench_realtime: error: realtime_margin={args['realtime_margin']} changes d at "
                                 f"P = {P:.1f} ms ({p['delay']} -> {delay_steps(wall, latency)}): give a smaller one")
            realtime[P] = {"async realtime": spec("async", wall, realtime=True),
                           "async +corrector realtime": spec("async", wall, args["corrector"], realtime=True)}
            if d > H:
                realtime[P].update({
                    f"{PAST_H['async']} realtime": spec("async", wall, realtime=True, past_horizon="prior"),
                    f"{PAST_H['async +corrector']} realtime": spec("async", wall, args["corrector"], realtime=True,
                                                                    past_horizon="prior")})
    return {"latency": latency, "source": source, "periods": periods, "baseline": spec("baseline"),
            "prior": spec("prior"), "budgets": budgets, "by_delay": by_delay, "realtime": realtime, "gap": gap}


# ------------------------------------------------------------------------------------------------- numbers
def row(name: str, res, base_returns, d=None, extra=None) -> dict:
    from gym_qwen.platform.speculative.statistics import paired_summary

    p = paired_summary(res.returns, base_returns)
    s = res.summary()
    return {"setting": name, "delay": d, "returns": res.returns, "return_mean": p.mean, "return_low": p.mean_low,
            "return_high": p.mean_high, "retained": p.retained, "retained_low": p.retained_low,
            "retained_high": p.retained_high, "planner_calls_per_step": res.planner_calls_per_step,
            "ms_per_decision": res.ms_per_decision, "plans_started": res.plans_started, "plans_used": res.plans_used,
            "plans_discarded": res.plans_discarded, "deadline_misses": res.deadline_misses,
            "wait_ms_per_step": s["wait_ms_per_step"], "steps_plan": res.steps_plan,
            "steps_corrected": res.steps_corrected, "steps_extension": res.steps_extension,
            "steps_prior": res.steps_prior, "late_ms": 1e3 * res.late_seconds,
            "worst_late": max(res.late_decisions, key=lambda x: x[2], default=None),  # [episode, decision, ms]
            "late_decisions": res.late_decisions[:LATE_SHOWN], "clock": res.clock, **(extra or {})}


def run_task(task: str, args: dict, command: str) -> dict:
    from gym_qwen.platform.speculative.statistics import paired_ratio_interval

    runner = Runner(task, args)
    plan = specs_for(runner, args)
    base = runner.play(plan["baseline"])
    prior = runner.play(plan["prior"])
    budgets = {name: (runner.play(b), ms) for name, (b, ms) in plan["budgets"].items()}
    # the targets first (d = 3 and what could close its gap), so a run stopped early has answered them
    by_delay = sorted(plan["by_delay"].items(), key=lambda item: (item[0] != TARGET_D, item[0]))
    sim = {d: {name: runner.play(s) for name, s in group.items()} for d, group in by_delay[:1]}
    gap = {name: runner.play(s) for name, s in plan["gap"].items()}
    sim.update({d: {name: runner.play(s) for name, s in group.items()} for d, group in by_delay[1:]})
    n_wall = int(args["realtime_episodes"])
    beside = {P: thread_latency(runner, next(iter(group.values())).clock.control_period_ms)
              for P, group in plan["realtime"].items()}
    wall = {P: {name: runner.play(s, n_wall) for name, s in group.items()} for P, group in plan["realtime"].items()}
    b = base.returns
    periods = []
    for p in plan["periods"]:
        d, P = p["delay"], p["control_period_ms"]
        rows = [row("baseline (no clock)", base, b, None), row("policy prior", prior, b, 1)]
        for name in CLOCKED_ROWS:
            if d == 1:  # the baseline step for step (tested): its episodes
                rows.append(row(name, base, b, 1, {"same_as": "baseline (d = 1)"}))
            elif name in sim[d]:
                rows.append(row(name, sim[d][name], b, d))
            else:  # d <= H: nothing past the plan's horizon, so async's episodes (tested)
                same = next(a for a, closed in PAST_H.items() if closed == name)
                rows.append(row(name, sim[d][same], b, d, {"same_as": f"{same} (d <= H)"}))
        for name in [n for n in (sim[d] if d > 1 else {}) if n not in CLOCKED_ROWS]:
            rows.append(row(name, sim[d][name], b, d, {"gap": True}))  # past_h_correctors' rows
        for name, (res, ms) in budgets.items():
            if ms <= P:
                rows.append(row(f"planner {name}", res, b, 1, {"budget": name, "budget_latency_ms": ms}))
        for name, res in wall.get(P, {}).items():  # against the simulated clock's same setting, same episodes
            twin = base if d == 1 else sim[d][name.removesuffix(" realtime")]
            n = len(res.returns)
            rows.append(row(name, res, b[:n], d, {"episodes": n, "simulated_returns": twin.returns[:n],
                                                  "wall_control_period_ms": res.clock["control_period_ms"],
                                                  **beside[P],
                                                  "equal_to_simulated": sum(abs(x - y) < 1e-6 for x, y in
                                                                            zip(res.returns, twin.returns))}))
        if d == TARGET_D:
            for name, res in gap.items():
                rows.append(row(name, res, b, res.clock["delay"] if res.clock else d, {"gap": True}))
        periods.append({**p, "rate_hz": 1000.0 / P, "rows": rows})
    record = {"task": task, "command": command, "checkpoint": str(runner.checkpoint.relative_to(ROOT)),
              "episodes": runner.episodes, "seed": runner.seed, "threads": int(args["threads"]),
              "agent_overrides": runner.overrides, "planner_latency_ms": plan["latency"],
              "latency_source": plan["source"], "margin": float(args["margin"]),
              "budget_latency_ms": {n: ms for n, (_, ms) in budgets.items()},
              "interpretation": "a plan started at decision s is ready for decision s + d - 1, d = max(1, ceil(L/P))",
              "statistics": "95% percentile bootstrap over episodes; retained: paired ratio of means to the "
                            "unconstrained baseline on the same episodes", "periods": periods}
    record["sustains"] = sustained(periods)
    record["realtime_check"] = [
        {"control_period_ms": r["wall_control_period_ms"], "delay": p["delay"], "setting": r["setting"],
         "episodes": r["episodes"], "deadline_misses": r["deadline_misses"], "late_ms": r["late_ms"],
         "worst_late": r["worst_late"], "late_decisions": r["late_decisions"],
         "thread_latency_ms": r["thread_latency_ms"], "thread_delay": r["thread_delay"],
         "equal_to_simulated": r["equal_to_simulated"]} for p in periods for r in p["rows"] if "simulated_returns" in r]
    record["targets"] = targets(task, periods, paired_ratio_interval)
    return record


def thread_latency(runner, wall_ms: float) -> dict:
    """The full planner's median time per plan in its thread beside an environment thread deciding every wall_ms
    (what the wall clock's plans take), and the d it gives at that period: the wall clock can hold only where that d
    is the simulated one."""
    from gym_qwen.platform.speculative.clock import delay_steps
    from gym_qwen.platform.speculative.clocked import measure_thread_latency_ms

    ms = measure_thread_latency_ms(runner.agent, runner.task, runner.seed, wall_ms, threads=int(runner.args["threads"]))
    d = delay_steps(wall_ms, ms)
    print(f"  beside the environment's thread at P = {wall_ms:.1f} ms a plan takes {ms:.1f} ms: d = {d}", flush=True)
    return {"thread_latency_ms": ms, "thread_delay": d}


def best_budget(period: dict) -> dict | None:
    """The row of the planner budget with the highest mean return among those fitting the period (None: none fits)."""
    return max((r for r in period["rows"] if r.get("budget")), key=lambda r: r["return_mean"], default=None)


def sustained(periods: list[dict]) -> dict:
    """Per setting, the highest control rate (shortest P) of the grid at which it keeps >= RETAIN of the
    baseline's return (for planner budgets: the best budget that fits P)."""
    out: dict = {}
    for p in sorted(periods, key=lambda p: p["control_period_ms"], reverse=True):
        best = best_budget(p)
        for r in p["rows"]:
            if "simulated_returns" in r or r["delay"] is None:  # a wall-clock check; the baseline has no clock
                continue
            if r.get("budget") and r is not best:
                continue
            name = "planner budget (best fitting P)" if r.get("budget") else r["setting"]
            if r["retained"] is not None and r["retained"] >= RETAIN:
                out[name] = {"control_period_ms": p["control_period_ms"], "rate_hz": p["rate_hz"],
                             "delay": p["delay"], "retained": r["retained"], "setting": r["setting"]}
    return out


def targets(task: str, periods: list[dict], ratio_interval) -> list[dict]:
    """The issue's targets at the period whose d is 3: async with a corrector keeps the task's share of the
    baseline and beats stale and the policy prior by more than the interval (the 95% paired interval of the
    ratio of their returns lies above 1); where it stands against the best budget that fits the same period."""
    at = [p for p in periods if p["delay"] == TARGET_D]
    if not at:
        return [{"target": f"no period of the grid has d = {TARGET_D}", "met": None}]
    rows = {r["setting"]: r for r in at[0]["rows"]}
    a = rows["async +corrector"]
    goal = TARGETS.get(task, RETAIN)
    out = [{"target": f"async +corrector at d={TARGET_D} keeps >= {100 * goal:.0f}% of the baseline",
            "value": a["retained"], "interval": [a["retained_low"], a["retained_high"]],
            "met": a["retained"] is not None and a["retained"] >= goal}]
    for other in ("stale", "policy prior"):
        ratio, low, high = ratio_interval(a["returns"], rows[other]["returns"])
        out.append({"target": f"async +corrector beats {other} by more than the interval", "value": ratio,
                    "interval": [low, high], "met": bool(low > 1) if low == low else None})
    best = best_budget(at[0])
    for r in [a] + [r for r in at[0]["rows"] if r.get("gap")]:
        value = None
        if best is not None:
            ratio, low, high = ratio_interval(r["returns"], best["returns"])
            value = {"budget": best["budget"], "budget_retained": best["retained"], "async_retained": r["retained"],
                     "ratio": ratio, "interval": [low, high]}
        out.append({"target": f"{r['setting']} (d={r['delay']}) against the best planner budget fitting the period",
                    "value": value, "met": None if best is None else r["return_mean"] >= best["return_mean"]})
    return out


# ------------------------------------------------------------------------------------------------- output
STYLE = {"async": ("tab:cyan", "o"), "async +corrector": ("tab:blue", "s"), "stale": ("tab:gray", "v"),
         PAST_H["async"]: ("tab:green", "^"), PAST_H["async +corrector"]: ("darkgreen", "P")}
GAP_COLOURS = ("tab:purple", "tab:pink", "tab:brown", "tab:red")


def plot(record: dict, path: Path) -> Path:
    """Return (mean, 95% interval) against the control period: async with and without the corrector (and with the
    prior past H), stale, the
    best planner budget fitting each P; the baseline and the policy prior as lines (the wall-clock check is
    printed, not drawn)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gym_qwen.platform.files import atomic_write_bytes

    periods = sorted(record["periods"], key=lambda p: p["control_period_ms"])
    xs = [p["control_period_ms"] for p in periods]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name, (color, marker) in STYLE.items():
        pts = [(p["control_period_ms"], r) for p in periods for r in p["rows"] if r["setting"] == name]
        if name in PAST_H.values():  # drawn where they differ from async, joined to it at the largest d <= H
            joint = max((r["delay"] for _, r in pts if r.get("same_as") and r["delay"] > 1), default=None)
            pts = [(x, r) for x, r in pts if not r.get("same_as") or r["delay"] == joint]
        if not pts:
            continue
        ys = [r["return_mean"] for _, r in pts]
        err = [[max(0.0, r["return_mean"] - r["return_low"]) if r["return_low"] == r["return_low"] else 0
                for _, r in pts], [max(0.0, r["return_high"] - r["return_mean"]) if r["return_high"] ==
                                   r["return_high"] else 0 for _, r in pts]]
        ax.errorbar([x for x, _ in pts], ys, yerr=err, color=color, marker=marker, capsize=3, label=name)
    gap_rows = [(p["control_period_ms"], r) for p in periods for r in p["rows"] if r.get("gap")]
    for (x, r), color in zip(gap_rows, GAP_COLOURS * len(gap_rows)):
        ax.errorbar([x * 0.96], [r["return_mean"]], yerr=[[max(0.0, r["return_mean"] - r["return_low"])],
                                                           [max(0.0, r["return_high"] - r["return_mean"])]],
                    color=color, marker="*", markersize=9, capsize=3, ls="none", label=f"{r['setting']} (d={r['delay']})")
    best = [(p["control_period_ms"], top) for p in periods if (top := best_budget(p)) is not None]
    if best:
        ax.plot([x for x, _ in best], [r["return_mean"] for _, r in best], color="tab:orange", marker="D", ls=":",
                label="best planner budget fitting P")
        for x, r in best:
            ax.annotate(r["budget"], (x, r["return_mean"]), fontsize=7, xytext=(3, -10), textcoords="offset points")
    first = periods[0]["rows"]
    for name, color in (("baseline (no clock)", "black"), ("policy prior", "tab:olive")):
        r = next(r for r in first if r["setting"] == name)
        ax.axhline(r["return_mean"], color=color, ls="--", lw=1, label=f"{name}: {r['return_mean']:.0f}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([f"{x:.0f}\n(d={p['delay']})" for x, p in zip(xs, periods)], fontsize=8)
    ax.set_xlabel(f"control period P, ms (planner latency L = {record['planner_latency_ms']:.0f} ms; "
                  "d = ceil(L/P))")
    ax.set_ylabel("return (mean, 95% interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{record['task']}: {record['episodes']} episodes per setting, the same episodes for all "
                 "(simulated clock)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130)
    plt.close(fig)
    return atomic_write_bytes(path, lambda f: f.write(buf.getvalue()))


def late_summary(check: dict) -> str:
    """`, 12.3 ms late in all, worst 4.1 ms at episode 0 decision 17`: where a wall-clock setting's misses were
    (one long stall shows as a run of consecutive late decisions after it, the grid catching up)."""
    worst = check.get("worst_late")
    if not check.get("deadline_misses") or not worst:
        return ""
    return f", {check['late_ms']:.1f} ms late in all, worst {worst[2]:.1f} ms at episode {worst[0]} decision {worst[1]}"


def print_table(record: dict) -> None:
    from gym_qwen.jobs.common import table

    rows = []
    for p in record["periods"]:
        for r in p["rows"]:
            retained = "-" if r["retained"] is None else \
                f"{100 * r['retained']:.1f}% [{100 * (r['retained_low'] or math.nan):.1f}, " \
                f"{100 * (r['retained_high'] or math.nan):.1f}]"
            d = r["delay"] if r.get("gap") else p["delay"]  # async on a cheaper planner: its own d
            rows.append((f"{p['control_period_ms']:.1f}", d, r["setting"], f"{r['return_mean']:.1f}",
                         retained, f"{r['planner_calls_per_step']:.3f}", r["plans_discarded"], r["deadline_misses"],
                         f"{r['wait_ms_per_step']:.1f}"))
    print(table(rows, ("P ms", "d", "setting", "return", "retained [95% CI]", "planner calls/step", "discarded",
                       "deadline misses", "wait ms/step")))
    for name, s in record["sustains"].items():
        print(f"sustains >= {100 * RETAIN:.0f}%: {name} up to {s['rate_hz']:.1f} Hz (P = {s['control_period_ms']:.1f} "
              f"ms, d = {s['delay']}, {s['setting']})")
    for c in record["realtime_check"]:
        holds = "" if c["thread_delay"] <= c["delay"] else \
            f"; beside the environment's thread a plan takes {c['thread_latency_ms']:.1f} ms: d = {c['thread_delay']}"
        print(f"wall clock, P = {c['control_period_ms']:.1f} ms (d = {c['delay']}{holds}), {c['setting']}: "
              f"{c['deadline_misses']} deadline misses{late_summary(c)}; {c['equal_to_simulated']} of "
              f"{c['episodes']} episodes return what the simulated clock's did")
    verdict = {True: "MET ", False: "MISS", None: "----"}
    for t in record["targets"]:
        print(f"{verdict[t['met']]} {t['target']}: {t.get('value')}")


def main(argv: list[str] | None = None) -> int:
    from gym_qwen.platform.files import atomic_write_bytes

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = "python benchmarks/bench_realtime.py " + " ".join(argv)
    for task in [t.strip() for t in args["tasks"].split(",") if t.strip()]:
        record = run_task(task, args, command)
        out = Path(args["out"]) / f"realtime-{task}.json"
        atomic_write_bytes(out, lambda f: f.write(json.dumps(record, indent=1).encode()))
        png = plot(record, Path(args["plot_dir"]) / f"realtime-{task}.png")
        print_table(record)
        print(f"numbers: {out}  plot: {png}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
