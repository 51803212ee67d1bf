"""The MLflow Model Registry, against a SQLite store and against an `mlflow server` on 127.0.0.1 (one server for
the module, with its own SQLite backend and artifact folder): `teacher` and `distill` register what they ship as
a new version of <task>-teacher and <task>-corrector-<type> under the alias champion; models:/ URIs given to
evaluate (checkpoint=, corrector_checkpoint=) and distill (tdmpc_ckpt=) are read weights-only with the checks
of a file, so a registered file that carries code, or is no Gym Qwen file, is refused in one line."""
from __future__ import annotations

import collections
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import mlflow_server
from test_cli import _assert_user_error, untrained_checkpoint
from test_correctors import K, TASK, data, teacher  # noqa: F401 (data and teacher are fixtures)

from gym_qwen.platform.files import sha256_of
from gym_qwen.platform.registry import CHAMPION, register, teacher_name
from gym_qwen.platform.tracking import MlflowRun, client, prepare_experiment


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An `mlflow server` on 127.0.0.1 (SQLite backend, artifacts proxied through it), shared by the module."""
    with mlflow_server(tmp_path_factory.mktemp("server")) as uri:
        yield uri


@pytest.fixture(params=["sqlite", "server"])
def store(request, tmp_path, monkeypatch) -> str:
    """MLFLOW_TRACKING_URI: a SQLite store outside the working directory, or the module's server."""
    if request.param == "server":
        uri = request.getfixturevalue("server")
    else:
        (tmp_path / "store").mkdir()
        uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _run(cwd: Path, args: list[str], capsys, monkeypatch):
    """`gym-qwen ARGS` in cwd, in this process, with the store of MLFLOW_TRACKING_URI."""
    from gym_qwen.jobs.cli import main

    cwd.mkdir(exist_ok=True)
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _log_and_register(uri: str, files: dict[str, Path]) -> None:
    """One run logging each file under its own folder, registered as the model of the same name."""
    c = client(uri)
    run = MlflowRun.create(c, prepare_experiment(uri, "registry-test"), "files", {})
    for name, path in files.items():
        run.log_artifact(path, name)
        register(run, name, name, "a test model", {"sha256": sha256_of(path)})
    run.finish()


def _registry_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("gym-qwen-registry.*")}


def _quick_evaluation(checkpoint, episodes, seed, **kwargs):
    """The teacher command's evaluation, replaced by fixed returns (this is about files and the registry)."""
    summary = {"return_mean": 10.0, "return_std": 0.0, "episodes": episodes, "returns": [10.0] * episodes}
    return SimpleNamespace(summary=lambda: summary), None


def test_a_teacher_round_trips_through_the_registry(store, tmp_path, capsys, monkeypatch):
    """teacher registers a new version under champion each time; evaluate checkpoint=models:/...@champion reads
    exactly that file (its sha256 in the episode log) and records the URI it was given."""
    from gym_qwen.platform.speculative import evaluation

    run = untrained_checkpoint(tmp_path / "run" / "agent.pt").parent
    name = teacher_name("cartpole-balance")
    versions = []
    for extra in ([], ["force=true", "seed=2"]):  # the second replaces the file: a new version, the champion
        with monkeypatch.context() as m:
            m.setattr(evaluation, "evaluate_checkpoint", _quick_evaluation)
            rc, out, err = _run(tmp_path / "work", ["teacher", f"run={run}", "output_dir=models", "episodes=1",
                                                    "progress=false", *extra], capsys, monkeypatch)
        assert rc == 0, err
        versions.append(out.split(f"registered models:/{name}/")[1].split(",")[0])
        card = json.loads((tmp_path / "work" / "models" / "cartpole-balance-size1-seed1.json").read_text())
        champion = client(store).get_model_version_by_alias(name, CHAMPION)
        assert str(champion.version) == versions[-1] and champion.tags["sha256"] == card["sha256"]
        assert f"checkpoint=models:/{name}@{CHAMPION}" in out
    assert int(versions[1]) == int(versions[0]) + 1
    before = _registry_folders()
    uri = f"models:/{name}@{CHAMPION}"
    rc, out, err = _run(tmp_path / "eval", ["evaluate", f"checkpoint={uri}", "mode=prior", "episodes=1",
                                            "output=ev.json", "progress=false"], capsys, monkeypatch)
    assert rc == 0, err
    assert json.loads((tmp_path / "eval" / "ev.json").read_text())["checkpoint"] == uri
    header = json.loads((tmp_path / "eval" / "ev.episodes.jsonl").read_text().splitlines()[0])
    assert header["checkpoint_sha256"] == card["sha256"]
    assert _registry_folders() == before  # the downloaded copy went with the evaluation


def test_a_registered_file_is_refused_as_a_file_would_be(store, tmp_path, capsys, monkeypatch):
    fx = tmp_path / "fx"
    ckpt = untrained_checkpoint(fx / "ckpt" / "agent.pt")
    torch.save({"format": "gym-qwen/tdmpc2", "version": 1, "where": collections.OrderedDict(p=Path("/etc"))},
               fx / "code.pt")
    torch.save({"weights": torch.zeros(2)}, fx / "foreign.pt")
    suffix = tmp_path.name[-12:].replace("_", "-")  # names of this test's own on the shared server
    code, foreign = f"code-{suffix}", f"foreign-{suffix}"
    _log_and_register(store, {code: fx / "code.pt", foreign: fx / "foreign.pt"})
    cases = [
        (["evaluate", f"checkpoint=models:/{code}@{CHAMPION}"], ["holds a pickled Python object"]),
        (["evaluate", f"checkpoint=models:/{foreign}/1"], ["is not a Gym Qwen TD-MPC2 checkpoint"]),
        (["evaluate", f"checkpoint=models:/nobody-{suffix}@{CHAMPION}"], [f"checkpoint=models:/nobody-{suffix}@"]),
        (["evaluate", f"checkpoint=models:/{code}@nope"], [f"checkpoint=models:/{code}@nope", "alias"]),
        (["evaluate", f"checkpoint={ckpt}", "mode=adaptive", "corrector_type=two_tower",
          f"corrector_checkpoint=models:/{code}@{CHAMPION}"], ["holds a pickled Python object"]),
        (["distill", "data=d.parquet", f"tdmpc_ckpt=models:/{code}@{CHAMPION}", "save_path=c"],
         ["holds a pickled Python object"]),
    ]
    before = _registry_folders()
    for i, (args, words) in enumerate(cases):
        cwd = tmp_path / f"cwd{i}"
        _assert_user_error(*_run(cwd, args, capsys, monkeypatch), cwd, words)
    assert _registry_folders() == before


def test_distill_reads_a_registered_teacher_and_registers_its_corrector(store, teacher, data, tmp_path,  # noqa: F811
                                                                        capsys, monkeypatch):
    path, sha = teacher
    task_teacher = teacher_name(TASK)
    _log_and_register(store, {task_teacher: path})
    uri = f"models:/{task_teacher}@{CHAMPION}"
    rc, out, err = _run(tmp_path / "work", ["distill", f"data={data}", f"tdmpc_ckpt={uri}", "save_path=out/c",
                                            "corrector_type=two_tower", f"history_len={K}", "epochs=1",
                                            "batch_size=128", "hidden=32", "device=cpu", "torch_threads=1",
                                            "progress=false", "mlflow=true"], capsys, monkeypatch)
    assert rc == 0, err
    corrector = tmp_path / "work" / "out" / "c-two_tower.pt"
    card = json.loads(corrector.with_suffix(".json").read_text())
    assert card["teacher"] == uri and card["teacher_sha256"] == sha
    name = f"{TASK}-corrector-two_tower"
    champion = client(store).get_model_version_by_alias(name, CHAMPION)
    assert f"registered models:/{name}/{champion.version}" in out
    assert champion.tags["sha256"] == sha256_of(corrector) and champion.tags["teacher_sha256"] == sha
    assert champion.run_id == card["mlflow_run_id"]
    logged = {a.path for a in client(store).list_artifacts(champion.run_id, "correctors/two_tower")}
    assert logged == {"correctors/two_tower/c-two_tower.pt", "correctors/two_tower/c-two_tower.json"}
