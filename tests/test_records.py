"""The records name a figure's run by its date and commit ("2026-12-01, c338d71"), never by the stretch of work
that made it ("session 14", "the training machine"): BENCHMARKS.md, README.md, docs/*.md, models/README.md and
the notes of the model cards. Every date there is followed by its commit, every BENCHMARKS section has one, and
(where git history is at hand) each commit exists and was made on that day."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATE = r"20\d\d-[01]\d-[0-3]\d"
DATED = re.compile(rf"\b({DATE}),\s+([0-9a-f]{{7,40}})\b")
ANY_DATE = re.compile(rf"\b{DATE}\b")
# Provenance by stretch of work or by machine: what a reader cannot look up.
PROVENANCE = [re.compile(p, re.I) for p in (
    r"\bsessions?\b",  # "session 14", "this session", "across sessions" (a "terminal session" is allowed below)
    r"\btraining machine\b",
    r"\bthe machine that (?:trained|ran|made|measured)\b",
    r"(?:\d|session|machine)'s machine\b",  # "session 14's machine", "2026-12-01's machine"
    r"\b(?:last|previous|next|earlier|later) (?:stretch|round) of work\b",
)]
ALLOWED = [re.compile(p, re.I) for p in (r"\bterminal sessions?\b",)]


def _records() -> dict[str, str]:
    """{name: text} of every record the rules cover (a card's note under `<card> note`)."""
    files = [REPO / "BENCHMARKS.md", REPO / "README.md", REPO / "models" / "README.md",
             *sorted((REPO / "docs").glob("*.md"))]
    texts = {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in files}
    for card in sorted((REPO / "models").rglob("*.json")):
        note = json.loads(card.read_text(encoding="utf-8")).get("note")
        if note:
            texts[f"{card.relative_to(REPO)} note"] = note
    return texts


def provenance_problems(text: str) -> list[str]:
    """Provenance wording in `text` (code in backticks aside), each with its line."""
    found = []
    for line in text.splitlines():
        prose = re.sub(r"`[^`]*`", "", line)
        for allowed in ALLOWED:
            prose = allowed.sub("", prose)
        found += [f"{m.group(0)!r} in: {line.strip()[:160]}" for p in PROVENANCE for m in p.finditer(prose)]
    return found


def undated_commit_problems(text: str) -> list[str]:
    """Dates in `text` not followed by ', <commit>'."""
    paired = {m.start(1) for m in DATED.finditer(text)}
    return [f"{m.group(0)} without its commit in: {text[max(0, m.start() - 60):m.end() + 40]!r}"
            for m in ANY_DATE.finditer(text) if m.start() not in paired]


def test_the_checks_find_what_they_look_for():
    assert provenance_problems("hopper-expert (2026-12-02, session 14)")
    assert provenance_problems("its log was lost with session 14's machine")
    assert provenance_problems("the most one session could train")
    assert provenance_problems("The training machine stopped after both runs finished")
    assert provenance_problems("543 on 2026-12-01's machine")
    assert not provenance_problems("the kernel groups processes by terminal session; `ray_session` joins")
    assert undated_commit_problems("one run on 2026-12-01 (61 minutes)")
    assert undated_commit_problems("(2026-12-01; the sweep 268 s)")
    assert not undated_commit_problems("one run (2026-12-01, 5c24e53; 61 minutes)")


@pytest.mark.parametrize("name", sorted(_records()))
def test_a_record_names_runs_by_date_and_commit(name):
    text = _records()[name]
    assert provenance_problems(text) == [], f"{name}: say the date and commit instead"
    assert undated_commit_problems(text) == [], f"{name}: write a figure's date as '2026-12-01, c338d71'"


def test_every_benchmarks_section_dates_its_figures():
    text = (REPO / "BENCHMARKS.md").read_text(encoding="utf-8")
    sections = re.split(r"^(#{2,3} .+)$", text, flags=re.M)[1:]
    undated = [head for head, body in zip(sections[::2], sections[1::2]) if body.strip() and not DATED.search(body)]
    assert undated == [], f"BENCHMARKS.md sections without a date and commit: {undated}"


def _commit_dates() -> dict[str, str]:
    """{full hash: author date (UTC, YYYY-MM-DD)} of every commit in this checkout's history."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True,
                              env={**os.environ, "TZ": "UTC"}).stdout.strip()

    try:
        shallow = git("rev-parse", "--is-shallow-repository")
        log = git("log", "--all", "--format=%H %ad", "--date=format-local:%Y-%m-%d")
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"no git history to check the commits against ({e})")
    if shallow == "true":
        pytest.skip("a shallow clone: the recorded commits are older than its history")
    return dict(line.split() for line in log.splitlines())


def test_each_recorded_commit_exists_and_was_made_that_day():
    dates = _commit_dates()
    wrong = []
    for name, text in _records().items():
        for m in DATED.finditer(text):
            day, short = m.groups()
            matches = {h: d for h, d in dates.items() if h.startswith(short)}
            if len(matches) != 1:
                wrong.append(f"{name}: {short} is {'no' if not matches else 'an ambiguous'} commit")
            elif day not in matches.values():
                wrong.append(f"{name}: {short} was made on {next(iter(matches.values()))}, not {day}")
    assert wrong == []
