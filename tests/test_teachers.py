"""Teachers: the shipped ones under models/ agree with their cards; exporting a run makes a card that
`gym-qwen evaluate` reproduces; the teacher command's errors are one line and change nothing."""
from __future__ import annotations

import json
import os
import re
import shutil

import pytest

from test_cli import _assert_user_error, _main_in

from gym_qwen.platform.training.teachers import SHIPPED_DIR as MODELS
SHIPPED = sorted(MODELS.glob("*.pt"))


# ------------------------------------------------------------------------------------------ shipped teachers
@pytest.mark.parametrize("model_file", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_teacher_matches_its_card(model_file):
    from gym_qwen.platform.tdmpc2.checkpoints import load_agent, load_checkpoint
    from gym_qwen.platform.training.teachers import check_card, load_teacher_card

    card = load_teacher_card(model_file)
    ckpt = load_checkpoint(model_file)  # weights_only load
    assert ckpt["kind"] == "agent"
    assert check_card(card, ckpt, model_file) == []
    assert model_file.stat().st_size < 20e6, "teachers must stay small (a few MB)"
    agent, _, _ = load_agent(str(model_file), {}, "cpu")
    assert agent.model.parameter_counts()["total"] == card["parameters"]
    assert card["evaluation"]["episodes"] >= 10


def _reward_over(task: str, decisions: int, act) -> float:
    from gym_qwen.platform.envs import make_env

    env = make_env(task, 7)
    obs, _ = env.reset(seed=7)
    total = 0.0
    for t in range(decisions):
        obs, r, terminated, truncated, _ = env.step(act(obs, t, env.action_space.shape))
        total += r
        if terminated or truncated:
            break
    env.close()
    return total


@pytest.mark.parametrize("model_file", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_teacher_controls_far_better_than_random_actions(model_file):
    """100 decisions from one start: a teacher that learned earns several times what random actions do."""
    import numpy as np
    import torch

    from gym_qwen.platform.tdmpc2.checkpoints import load_agent

    agent, _, ckpt = load_agent(str(model_file), {}, "cpu")
    torch.manual_seed(0)
    taught = _reward_over(ckpt["task"], 100, lambda obs, t, shape: agent.act(obs, t0=t == 0, eval_mode=True))
    rng = np.random.default_rng(0)
    rand = _reward_over(ckpt["task"], 100, lambda obs, t, shape: rng.uniform(-1, 1, shape).astype(np.float32))
    assert taught > 3 * rand + 10, (taught, rand)


def test_models_index_lists_every_teacher():
    """The teachers are in git: an empty models/ fails here instead of leaving the tests above with no cases."""
    assert [p.name for p in SHIPPED] != [], f"no teacher in {MODELS}: the shipped models are part of the checkout"
    assert (MODELS / "walker-walk-size1-seed1.pt") in SHIPPED, "the demo's teacher (teacher=auto) is missing"
    cards = sorted(MODELS.glob("*.json"))
    assert sorted(p.stem for p in cards) == [p.stem for p in SHIPPED], "every teacher needs a card and vice versa"
    listed = re.findall(r"^\| `([^`]+\.pt)` \|", (MODELS / "README.md").read_text(), flags=re.M)
    assert sorted(listed) == [p.name for p in SHIPPED], "models/README.md's table lists exactly the shipped teachers"


# ------------------------------------------------------------------------------------------ export
@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    from gym_qwen.platform.training.teachers import export_teacher

    out = tmp_path_factory.mktemp("models")
    model_file, card = export_teacher(tiny_run.run_dir, out, episodes=2, seed=3)
    return model_file, card


def test_export_writes_teacher_card_and_index(exported, tiny_run):
    from gym_qwen.platform.tdmpc2.checkpoints import load_checkpoint
    from gym_qwen.platform.training.teachers import check_card

    model_file, card = exported
    assert model_file.name == f"{tiny_run.cfg.task}-size1-seed{tiny_run.cfg.seed}.pt"
    assert json.loads(model_file.with_suffix(".json").read_text()) == card
    assert model_file.read_bytes() == tiny_run.checkpoint.read_bytes()
    assert check_card(card, load_checkpoint(model_file), model_file) == []
    assert card["env_steps"] == 2000 and card["evaluation"]["episodes"] == 2 and card["evaluation"]["seed"] == 3
    assert [row[0] for row in card["training"]["learning_curve"]] == [1000, 2000]
    assert card["training"]["planning_lowered"] is True  # the tiny agent plans with 32 samples, 1 iteration
    assert card["training"]["planning"]["num_samples"] == 32
    assert card["training"]["updates"] == tiny_run.summary["updates"]
    cmd = card["training"]["command"]
    assert cmd.startswith(f"gym-qwen train task={tiny_run.cfg.task} model_size=1 steps=2000 seed=")
    assert "num_samples=32" in cmd and "output_dir" not in cmd and "progress" not in cmd
    assert card["training"]["gpu_command"] == cmd + " device=cuda"
    assert card["note"] == ""
    index = (model_file.parent / "README.md").read_text()
    assert f"`{model_file.name}`" in index and "lowered" in index
    assert sorted(os.listdir(model_file.parent)) == sorted(["README.md", model_file.name,
                                                            model_file.with_suffix(".json").name])


def test_card_return_is_reproduced_by_evaluate(exported, tmp_path, capsys, monkeypatch):
    model_file, card = exported
    ev = card["evaluation"]
    args = ev["command"].split()[1:]  # the card's own command, pointed at the exported file
    args = [f"checkpoint={model_file}" if a.startswith("checkpoint=") else a for a in args]
    rc, out, err = _main_in(tmp_path, [*args, f"output={tmp_path / 'ev.json'}", "progress=false"], capsys,
                            monkeypatch)
    assert rc == 0, err
    result = json.loads((tmp_path / "ev.json").read_text())
    assert [round(r, 3) for r in result["returns"]] == ev["returns"]


def test_check_card_names_each_difference(exported, tmp_path):
    from gym_qwen.platform.tdmpc2.checkpoints import load_checkpoint
    from gym_qwen.platform.training.teachers import check_card

    model_file, card = exported
    ckpt = load_checkpoint(model_file)
    bad = json.loads(json.dumps(card))
    bad["env_steps"] += 1
    bad["seed"] = 99
    bad["training"]["command"] = bad["training"]["command"].replace("num_samples=32", "num_samples=512")
    bad["evaluation"]["return_mean"] += 5
    problems = check_card(bad, ckpt, model_file)
    joined = " | ".join(problems)
    assert len(problems) == 4, problems
    for word in ("env_steps", "seed", "training command", "return_mean"):
        assert word in joined
    tampered = tmp_path / model_file.name
    tampered.write_bytes(model_file.read_bytes() + b"\0")
    assert check_card(card, ckpt, tampered) == ["sha256 of the teacher file differs from the card's"]


def test_teacher_refuses_to_replace_an_existing_teacher(exported, tiny_run, tmp_path, capsys, monkeypatch):
    model_file, _ = exported
    models = tmp_path / "models"
    shutil.copytree(model_file.parent, models)
    before = {p.name: p.read_bytes() for p in models.iterdir()}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    rc, out, err = _main_in(cwd, ["teacher", f"run={tiny_run.run_dir}", f"output_dir={models}", "episodes=1"],
                            capsys, monkeypatch)
    _assert_user_error(rc, out, err, cwd, ["already exists", "force=true"])
    assert {p.name: p.read_bytes() for p in models.iterdir()} == before


def test_teacher_command_keeps_a_note_on_the_card(tiny_run, tmp_path, capsys, monkeypatch):
    """`note=` travels from the command line to the card, verbatim, spaces and commas included."""
    note = "recovered run directory: eval.csv restored from the record, summary.json lost"
    models = tmp_path / "models"
    rc, out, err = _main_in(tmp_path, ["teacher", f"run={tiny_run.run_dir}", f"output_dir={models}", "episodes=1",
                                       "name=noted", f"note={note}", "progress=false"], capsys, monkeypatch)
    assert rc == 0, err
    card = json.loads((models / "noted.json").read_text())
    assert card["note"] == note and card["name"] == "noted" and card["evaluation"]["episodes"] == 1


@pytest.mark.parametrize("case", ["missing-run", "not-a-run", "bad-name"])
def test_teacher_user_errors(case, tmp_path, capsys, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    args, words = {
        "missing-run": (["teacher"], ["run= is required"]),
        "not-a-run": (["teacher", f"run={empty}"], ["holds no agent.pt", str(empty)]),
        "bad-name": (["teacher", f"run={empty}", "name=../x"], ["name='../x'"]),
    }[case]
    _assert_user_error(*_main_in(cwd, [*args, f"output_dir={tmp_path / 'models'}"], capsys, monkeypatch), cwd,
                       words)
    assert not (tmp_path / "models").exists()


# ------------------------------------------------------------------------------------------ publish both or neither
def _listing(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def fresh_run(tmp_path):
    """A run directory holding only an untrained tiny agent.pt (no training: a second to make)."""
    from test_cli import untrained_checkpoint

    return untrained_checkpoint(tmp_path / "run" / "agent.pt").parent


@pytest.fixture
def quick_evaluation(monkeypatch):
    """export_teacher's evaluation replaced by a fixed result (these tests are about files, not returns)."""
    from types import SimpleNamespace

    from gym_qwen.platform.speculative import evaluation

    def evaluate_checkpoint(checkpoint, episodes, seed, **kwargs):
        assert os.path.isfile(checkpoint)
        returns = [10.0 + i for i in range(episodes)]
        summary = {"return_mean": sum(returns) / episodes, "return_std": 0.0 if episodes == 1 else 0.5,
                   "episodes": episodes, "returns": returns}
        return SimpleNamespace(summary=lambda: summary), None

    monkeypatch.setattr(evaluation, "evaluate_checkpoint", evaluate_checkpoint)


@pytest.mark.parametrize("previous", [False, True], ids=["new", "force-replace"])
def test_teacher_and_card_are_published_together_or_not_at_all(previous, fresh_run, quick_evaluation, tmp_path,
                                                               monkeypatch):
    """The card cannot be made (first) or renamed into place (second): the folder is as it was, teacher and card."""
    from gym_qwen.platform import files
    from gym_qwen.platform.training import teachers

    models = tmp_path / "models"
    models.mkdir()
    if previous:
        (models / "t.pt").write_bytes(b"the previous teacher")
        (models / "t.json").write_bytes(b"{\"the previous\": \"card\"}")
    before = _listing(models)

    def no_card(*args, **kwargs):
        raise RuntimeError("the card could not be made")

    with monkeypatch.context() as m:
        m.setattr(teachers, "build_card", no_card)
        with pytest.raises(RuntimeError, match="card could not be made"):
            teachers.export_teacher(fresh_run, models, name="t", episodes=1, force=True)
    assert _listing(models) == before

    real_replace = os.replace

    def card_rename_fails(src, dst):
        if str(src).endswith(".t.staged.json"):  # publishing the card (not the rollback, nor staging it)
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(files.os, "replace", card_rename_fails)
        with pytest.raises(OSError, match="No space left"):
            teachers.export_teacher(fresh_run, models, name="t", episodes=1, force=True)
    assert _listing(models) == before

    model_file, card = teachers.export_teacher(fresh_run, models, name="t", episodes=1, force=True)  # and now it works
    assert sorted(_listing(models)) == ["README.md", "t.json", "t.pt"]
    assert model_file.read_bytes() == (fresh_run / "agent.pt").read_bytes()
    assert card["sha256"] == files.sha256_of(model_file) and card["size_bytes"] == model_file.stat().st_size


def test_publish_together_restores_the_previous_files(tmp_path, monkeypatch):
    from gym_qwen.platform import files

    old_a, old_b = tmp_path / "a", tmp_path / "b"
    old_a.write_text("old a")
    new_a, new_b = tmp_path / ".a.new", tmp_path / ".b.new"
    new_a.write_text("new a")
    new_b.write_text("new b")
    synced = []
    monkeypatch.setattr(files, "fsync_dir", lambda path: synced.append(path))
    real_replace = os.replace
    monkeypatch.setattr(files.os, "replace",
                        lambda src, dst: (_ for _ in ()).throw(OSError("disk gone")) if dst == old_b
                        else real_replace(src, dst))
    with pytest.raises(OSError, match="disk gone"):
        files.publish_together([(new_a, old_a), (new_b, old_b)])
    assert old_a.read_text() == "old a" and not old_b.exists() and synced == [tmp_path]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.new", "a"]  # a's staged file went in, then back
    monkeypatch.setattr(files.os, "replace", real_replace)
    new_a.write_text("new a")
    files.publish_together([(new_a, old_a), (new_b, old_b)])
    assert old_a.read_text() == "new a" and old_b.read_text() == "new b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_atomic_write_syncs_the_folder(tmp_path, monkeypatch):
    from gym_qwen.platform import files

    synced = []
    monkeypatch.setattr(files, "fsync_dir", lambda path: synced.append(path))
    files.atomic_write_bytes(tmp_path / "x" / "f.bin", lambda f: f.write(b"data"))
    assert synced == [tmp_path / "x"] and (tmp_path / "x" / "f.bin").read_bytes() == b"data"
    files.fsync_dir(tmp_path / "x")  # the real one: runs on a folder, quietly does nothing on a missing one
    files.fsync_dir(tmp_path / "missing")
