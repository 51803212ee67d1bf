"""The MLflow Model Registry: what `teacher` and `distill` ship is registered under one name per task and kind
(`<task>-teacher`, `<task>-corrector-<type>`), each time as a new version that the alias `champion` then names.
A `models:/<name>@<alias>` (or `models:/<name>/<version>`) given where a file is expected is read back as that
file: downloaded into a temporary folder, then read by the same loader with the same checks as any file
(weights-only, the format tag, the version), so a registered file that carries code is refused like a local one.

Registered versions point at run artifacts (`runs:/<run id>/<folder>`): the project's own tagged torch files and
their cards, never a pickled model, so nothing MLflow-specific is needed to load them.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from .config_schema import ConfigError
from .tracking import MlflowRun, check_tracking_uri, client, default_tracking_uri

PREFIX = "models:/"
CHAMPION = "champion"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>[0-9]+))$")


class RegistryError(ConfigError):
    """A models:/ URI that cannot be read here (one line; a user error, exit 2)."""


def teacher_name(task: str) -> str:
    """The registered model of a task's teachers."""
    return f"{task}-teacher"


def corrector_name(task: str, kind: str) -> str:
    """The registered model of a task's correctors of one type (two_tower, temporal)."""
    return f"{task}-corrector-{kind}"


def is_registered(value) -> bool:
    """Whether a file argument names a registered model version (models:/...) rather than a file."""
    return isinstance(value, str) and value.startswith(PREFIX)


def register(run: MlflowRun, artifact_path: str, name: str, description: str, tags: dict) -> str:
    """Register the files `run` logged under `artifact_path` as a new version of the registered model `name`
    (made, with `description`, if it does not exist yet), with `tags`, and point the alias champion at it.
    Returns the version."""
    from mlflow.exceptions import MlflowException  # MLflow loads only where a run is logged (tracking.py)

    c = run.client
    try:
        c.create_registered_model(name, description=description)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":  # the usual case after the first version
            raise
    version = c.create_model_version(name, f"runs:/{run.run_id}/{artifact_path}", run_id=run.run_id,
                                     tags={k: str(v) for k, v in tags.items()})
    c.set_registered_model_alias(name, CHAMPION, version.version)
    return str(version.version)


@contextlib.contextmanager
def _no_progress_bars():
    """MLflow's download progress bar, which would land in the middle of a command's output, turned off."""
    key, before = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            del os.environ[key]
        else:
            os.environ[key] = before


def fetch(uri: str, folder: Path, what: str) -> Path:
    """Download the registered model version `uri` into `folder`; the path of the one .pt file it holds. Every
    refusal (a malformed URI, no store, no such model, alias or version, not exactly one .pt) is a RegistryError
    whose line starts with `<what>=<uri>`."""
    # MLflow takes seconds to import; only runs that log need it
    import mlflow.artifacts
    # MLflow takes seconds to import; only runs that log need it
    from mlflow.exceptions import MlflowException

    match = _URI.match(uri)
    if match is None:
        raise RegistryError(f"{what}={uri} is not a registered model version: write models:/<name>@<alias> (e.g. "
                            f"models:/walker-walk-teacher@{CHAMPION}) or models:/<name>/<version>")
    store = default_tracking_uri()
    if store.startswith("sqlite:///") and not Path(store[len("sqlite:///"):]).is_file():
        raise RegistryError(f"{what}={uri}: no MLflow store at {store[len('sqlite:///'):]} to hold its registry; run "
                            "from the folder that holds mlflow.db or set MLFLOW_TRACKING_URI")
    check_tracking_uri(store)
    c = client(store)
    name, alias = match["name"], match["alias"]
    try:
        version = (c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(name, match["version"]))
        source = c.get_model_version_download_uri(name, version.version)
        target = folder / f"{name}-v{version.version}"
        target.mkdir(parents=True)
        with _no_progress_bars():
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target), tracking_uri=store)
    except MlflowException as e:
        reason = (str(e.message).strip().splitlines() or ["not found"])[0]
        raise RegistryError(f"{what}={uri}: {reason} (registry of {store})") from None
    files = sorted(target.rglob("*.pt"))
    if len(files) != 1:
        raise RegistryError(f"{what}={uri} (version {version.version}) holds {len(files)} .pt files, not the one "
                            "file of a Gym Qwen teacher or corrector")
    return files[0]


@contextlib.contextmanager
def local_files(values: dict[str, str | None]) -> Iterator[dict[str, str | None]]:
    """`values` (a setting -> a file path, a models:/ URI or None) with every models:/ URI replaced by the path of
    its file, downloaded into a temporary folder that is removed on exit. Paths and None pass unchanged, and
    without a models:/ URI nothing is downloaded or made."""
    if not any(is_registered(v) for v in values.values()):
        yield dict(values)
        return
    with tempfile.TemporaryDirectory(prefix="gym-qwen-registry.") as tmp:
        yield {key: str(fetch(value, Path(tmp) / key, key)) if is_registered(value) else value
               for key, value in values.items()}
