"""benchmarks/bench_realtime.py: which other runs' episode logs it may copy episodes from (reuse=)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(monkeypatch, root: Path):
    spec = importlib.util.spec_from_file_location("bench_realtime", ROOT / "benchmarks" / "bench_realtime.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_realtime", module)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "ROOT", root)
    return module


def _log(path: Path, header: dict, episodes: int = 1) -> None:
    from gym_qwen.platform.speculative.episode_log import EpisodeLog

    log = EpisodeLog(path, header, resume=False)
    for i in range(episodes):
        log.add("key", "label", {"episode": i, "return": float(i)})


def test_reuse_takes_the_frontier_logs_of_the_task_and_teacher_only(tmp_path, monkeypatch, capsys):
    bench = _bench(monkeypatch, tmp_path)
    header = {"task": "walker-walk", "checkpoint_sha256": "abc", "seed": 1}
    folder = tmp_path / "docs" / "frontier"
    folder.mkdir(parents=True)
    _log(folder / "walker-walk.episodes.jsonl", header, 3)
    _log(folder / "walker-walk-32x1.episodes.jsonl", header)
    _log(folder / "walker-walk-32x1-timing.episodes.jsonl", header)  # timed beside others: left out
    _log(folder / "walker-walker.episodes.jsonl", {**header, "task": "walker-walker"})  # another task's prefix
    _log(folder / "walker-walk-old.episodes.jsonl", {**header, "checkpoint_sha256": "old"})  # another teacher
    logs = bench.reused_logs("walker-walk", "frontier", header)
    assert sorted(log.path.name for log in logs) == ["walker-walk-32x1.episodes.jsonl", "walker-walk.episodes.jsonl"]
    assert "not reused" in capsys.readouterr().out
    assert all(log.read_only for log in logs) and len(logs[-1].done("key")) in (1, 3)
    assert bench.reused_logs("walker-walk", "none", header) == []
    with pytest.raises(SystemExit, match="checkpoint_sha256"):  # named by the user: refused, not skipped
        bench.reused_logs("walker-walk", str(folder / "walker-walk-old.episodes.jsonl"), header)
    with pytest.raises(SystemExit, match="no episode log"):
        bench.reused_logs("walker-walk", str(folder / "missing.episodes.jsonl"), header)
    both = bench.reused_logs("walker-walk", f"frontier,{folder / 'walker-walk-32x1-timing.episodes.jsonl'}", header)
    assert sorted(log.path.name for log in both) == ["walker-walk-32x1-timing.episodes.jsonl",
                                                     "walker-walk-32x1.episodes.jsonl", "walker-walk.episodes.jsonl"]


def test_latencies_are_kept_when_measured_and_not_measured_again(tmp_path, monkeypatch):
    """A run stopped before its end resumes with the L and budget latencies it measured (they set d and which
    budgets fit each P), not with new ones taken on a machine that may be busier; the missing ones are timed
    together (one interleaved measurement)."""
    bench = _bench(monkeypatch, tmp_path)
    runner = bench.Runner.__new__(bench.Runner)  # the teacher is not needed: only the keeping of its timings
    runner.task, runner.args, runner.overrides = "walker-walk", {"threads": "1"}, {"compile": False}
    runner.timings, runner.measured = tmp_path / "realtime-walker-walk.latencies.json", {}
    timed = []

    def latencies(specs):
        timed.append(dict(specs))
        return {name: 100.0 + len(timed) + i for i, name in enumerate(specs)}

    monkeypatch.setattr(runner, "latencies", latencies)
    assert runner.planner_latencies({"full": None, "64x2": "spec"}) == {"full": (101.0, True), "64x2": (102.0, True)}
    assert runner.planner_latencies({"full": None, "32x1": "other"}) == {"full": (101.0, False), "32x1": (102.0, True)}
    assert timed == [{"full": None, "64x2": "spec"}, {"32x1": "other"}]  # only the missing one timed again
    assert runner.planner_latencies({"64x2": "spec"}) == {"64x2": (102.0, False)} and len(timed) == 2
    kept = bench.load_kept_latencies(runner.timings, {"compile": False}, 1)
    assert kept == {"full": 101.0, "64x2": 102.0, "32x1": 102.0}
    assert bench.load_kept_latencies(runner.timings, {}, 1) == {}  # another agent: measured again
    assert bench.load_kept_latencies(runner.timings, {"compile": False}, 2) == {}  # other threads: measured again
    assert bench.load_kept_latencies(tmp_path / "missing.json", {}, 1) == {}
    resumed = bench.Runner.__new__(bench.Runner)
    resumed.timings, resumed.measured, resumed.latencies = runner.timings, kept, lambda specs: 1 / 0
    assert resumed.planner_latencies({"64x2": None}) == {"64x2": (102.0, False)}


def test_a_gap_corrector_is_named_by_its_file_in_the_episode_log(tmp_path, monkeypatch):
    """Rows of two correctors of one type (the default and a gap one) must not share a label in the log (once,
    every cheetah-run two-tower row at d = 3 was "async +two_tower")."""
    from gym_qwen.platform.speculative.modes import ExecutionSpec, SpeculationSettings

    bench = _bench(monkeypatch, tmp_path)
    runner = bench.Runner.__new__(bench.Runner)
    runner.checkpoint = Path("models/cheetah-run-size1-seed1.pt")
    default = runner.corrector_file("two_tower")
    gap = str(tmp_path / "cheetah-run-size1-seed1-async-d3-aggregated-two_tower.pt")
    label = lambda path: runner.log_label(ExecutionSpec(SpeculationSettings("async", 1, float("inf")),  # noqa: E731
                                                        "two_tower", path))
    assert label(default) == "async +two_tower"
    assert label(gap) == "async +cheetah-run-size1-seed1-async-d3-aggregated-two_tower"
    assert runner.log_label(ExecutionSpec(SpeculationSettings("prior", 1, float("inf")))) == "prior"


def test_the_rate_a_setting_sustains_is_the_fastest_period_where_it_keeps_95_percent(tmp_path, monkeypatch):
    bench = _bench(monkeypatch, tmp_path)

    def period(ms, d, async_retained, budgets):
        rows = [{"setting": "baseline (no clock)", "delay": None, "retained": 1.0, "return_mean": 100.0},
                {"setting": "async", "delay": d, "retained": async_retained, "return_mean": 100 * async_retained}]
        rows += [{"setting": f"planner {n}", "delay": 1, "retained": v, "return_mean": 100 * v, "budget": n}
                 for n, v in budgets]
        return {"control_period_ms": ms, "rate_hz": 1000 / ms, "delay": d, "rows": rows}

    periods = [period(100.0, 1, 1.0, [("64x2", 0.97), ("256x4", 0.99)]),
               period(50.0, 2, 0.96, [("64x2", 0.97), ("128x3", 0.90)]),
               period(25.0, 4, 0.60, [("32x1", 0.80), ("64x2", 0.98), ("128x3", 0.96)])]
    out = bench.sustained(periods)
    assert out["async"]["control_period_ms"] == 50.0 and out["async"]["delay"] == 2
    best = out["planner budget (best fitting P)"]  # the best budget at each P, not the last row listed
    assert best["control_period_ms"] == 25.0 and best["setting"] == "planner 64x2" and best["retained"] == 0.98
    assert "baseline (no clock)" not in out


def test_corrector_lists_name_a_type_and_an_existing_file(tmp_path, monkeypatch):
    bench = _bench(monkeypatch, tmp_path)
    present = tmp_path / "c.pt"
    present.write_bytes(b"x")
    args = {"past_h_correctors": f"two_tower:{present}, temporal:{present}", "gap_correctors": ""}
    assert bench.corrector_files(args, "past_h_correctors") == [("two_tower", str(present)), ("temporal", str(present))]
    assert bench.corrector_files(args, "gap_correctors") == []
    for bad in (f"two_tower:{tmp_path / 'missing.pt'}", f"mlp:{present}", str(present)):
        with pytest.raises(SystemExit, match="past_h_correctors entry"):
            bench.corrector_files({"past_h_correctors": bad}, "past_h_correctors")
