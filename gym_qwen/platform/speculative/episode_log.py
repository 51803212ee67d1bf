"""The episode log of a comparison: one JSON line per finished episode, so a long comparison is resumed or extended
without running a finished episode again.

The first line names what every episode was played with (task, checkpoint sha256, seed); each later line is one
episode of one setting: the setting's key (its execution settings, the corrector file's sha256 and the planner
overrides, not file paths), the episode index and the executor's record. A line is appended and flushed when its
episode ends; a line cut short by a kill is dropped when the log is read again.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..config_schema import ConfigError
from ..files import missing_folders, remove_empty_folders
from .modes import PLANNER_KEYS

LOG_VERSION = 1
# Agent keys that change where and how fast the same maths runs, not the episodes: not part of a setting's key
HOW_NOT_WHAT = ("compile",)


def episodes_path(output: str | os.PathLike) -> Path:
    """Where the episode log of `output` (a JSON file) lives: <stem>.episodes.jsonl beside it."""
    output = Path(output)
    return output.with_name(output.stem + ".episodes.jsonl")


def setting_key(spec, agent_overrides: dict, corrector_sha256: str | None) -> str:
    """The identity of a setting in the log: everything that changes its episodes, nothing that only names it."""
    s = spec.settings
    planner = dict(spec.planner_overrides)
    agent = {}
    for k, v in agent_overrides.items():
        if k in PLANNER_KEYS:  # planner keys given for one setting plan like a mode=all planner row
            planner.setdefault(k, v)
        elif k not in HOW_NOT_WHAT:
            agent[k] = v
    key = {"mode": s.mode, "k": s.exec_horizon, "corrector": spec.corrector_type,
           "corrector_sha256": corrector_sha256, "planner": sorted([k, v] for k, v in planner.items()),
           "agent": sorted([k, v] for k, v in agent.items())}
    if s.mode == "adaptive":
        key.update(threshold=s.mismatch_threshold, mismatch=s.mismatch)
        if s.fallback != "plan":  # absent for the default, so logs written before the key existed still match
            key["fallback"] = s.fallback
    if s.mode == "async" and s.mismatch_threshold != float("inf"):
        key["threshold"] = s.mismatch_threshold
    if s.past_horizon != "extension":  # absent for the default, as fallback's
        key["past_horizon"] = s.past_horizon
    if spec.clock is not None:  # absent without a clock, so logs written before the key existed still match
        # d fixes a simulated clock's episodes (P and L only through it: a measured L that moved a little leaves
        # them as they were); on the wall clock P sets the deadlines too
        clock = spec.clock
        key["clock"] = {"delay": clock.delay, "realtime": clock.realtime}
        if clock.realtime:
            key["clock"]["control_period_ms"] = clock.control_period_ms
    if spec.corrector_type != "none":
        key["history_len"] = s.history_len
    if spec.measure_teacher:
        key["measure_teacher"] = True
    return json.dumps(key, sort_keys=True)


class EpisodeLog:
    """An append-only JSON-lines log of episode records, keyed by setting and episode index."""

    def __init__(self, path: str | os.PathLike, header: dict, resume: bool, read_only: bool = False):
        self.path = Path(path)
        self.header = {"log_version": LOG_VERSION, **header}
        self.records: dict[str, dict[int, dict]] = {}
        self.read_only = read_only  # another run's log, read for its episodes: never written, never truncated
        if self.path.exists() and not resume:
            raise ConfigError(f"{self.path} already holds episodes: give resume=true to continue it, or another "
                              "output=")
        if self.path.exists():
            self._read()  # the header is written with the first episode: a run that fails before leaves no log

    def _read(self) -> None:
        lines = self.path.read_bytes().split(b"\n")
        good, parsed = 0, []
        for line in lines:
            if not line.strip():
                good += len(line) + 1
                continue
            try:
                parsed.append(json.loads(line))
            except ValueError:
                break  # a line cut short by a kill: it and anything after it is dropped
            good += len(line) + 1
        if not parsed:
            raise ConfigError(f"{self.path} is not an episode log (no header line)")
        first = parsed[0]
        for key in ("log_version", "task", "checkpoint_sha256", "seed"):
            if first.get(key) != self.header.get(key):
                raise ConfigError(f"{self.path} was played with {key}={first.get(key)}, not {self.header.get(key)}: "
                                  "its episodes cannot be paired with these; give another output=")
        for rec in parsed[1:]:
            self.records.setdefault(rec["setting"], {})[int(rec["episode"])] = rec
        size = self.path.stat().st_size
        if good < size and not self.read_only:
            with open(self.path, "r+b") as f:
                f.truncate(min(good, size))

    def _append(self, *objs: dict) -> None:
        if self.read_only:
            raise RuntimeError(f"{self.path} was opened read-only")
        new = not self.path.exists()
        made: list[Path] = []
        if new:
            made = missing_folders(self.path.parent)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            objs = (self.header, *objs)
        try:
            with open(self.path, "ab") as f:
                f.write(b"".join(json.dumps(obj).encode() + b"\n" for obj in objs))
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            if new:  # a log that could not take its first episode is not left half-made
                self.path.unlink(missing_ok=True)
                remove_empty_folders(made)
            raise OSError(e.errno, e.strerror, str(self.path)) from None

    def done(self, key: str) -> dict[int, dict]:
        """The finished episodes of a setting: {episode index: record}."""
        return self.records.get(key, {})

    def add(self, key: str, label: str, record: dict) -> None:
        """Log one finished episode of setting `key` (once: an index already logged is not written again)."""
        index = int(record["episode"])
        if index in self.done(key):
            return
        row = {"setting": key, "label": label, **record}
        self._append(row)
        self.records.setdefault(key, {})[index] = row
