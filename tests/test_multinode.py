"""Multi-node Ray on this machine: a cluster of several nodes (ray.cluster_utils.Cluster), each node with its own
CPUs, GPUs (declared, none real: Ray only counts them, and every actor here runs on the CPU) and
a custom resource naming it. Placement per node: a request no single node holds is refused in one line naming
the largest node, though the cluster's totals hold it; one that fits a node is placed there. A node dies (its
raylet and every process on it killed, as `cluster.remove_node` does) mid-collection, mid-training and
mid-sweep: nothing is lost or duplicated, the lost work is redone, and the results equal a single-node run's.

How a node is made to die at the right moment: the fault plan `hold_at_<episode|decision>` makes the actor (or
trial) that reaches that point write its pid to a marker file and wait there, its work unfinished; the test's
NodeKiller finds the node whose raylet is that process's parent and removes the node.

The nodes listen on this machine's own address, not 127.0.0.1: a driver joining at 127.0.0.1:PORT is sent to
the machine's address by Ray (services.resolve_ip_for_localhost), where a GCS bound to 127.0.0.1 does not answer.
"""
from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import TINY_TASK, tiny_train_config
from test_autoscaling import _leave_earlier_ray
from test_cli import _assert_user_error, _main_in, untrained_checkpoint

pytestmark = [pytest.mark.ray, pytest.mark.multinode]

# Node death seen in about a second (Ray's defaults take up to ~30 s): the GCS checks each raylet every 0.5 s
HEALTH = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_timeout_ms": 1000,
          "health_check_failure_threshold": 2}
# The worker nodes: name -> resources. The head (the driver: this process) holds no CPU, so every actor runs on
# a worker node; "two" is the largest.
NODES = {"one": {"num_cpus": 1, "num_gpus": 1}, "two": {"num_cpus": 2, "num_gpus": 1}}


def _add(cluster, name: str, spec: dict):
    return cluster.add_node(resources={name: 1}, **spec)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The module's cluster: a head of 0 CPUs and the NODES; this process is its driver. Tests that kill a node
    put a new one of the same kind back (`NodeKiller.restore`)."""
    import ray
    from ray.cluster_utils import Cluster

    _leave_earlier_ray()  # another module's local Ray is not this cluster
    started = time.perf_counter()
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "resources": {"head": 1}, "include_dashboard": False, "_system_config": HEALTH,
        "temp_dir": f"/tmp/gqmn{secrets.token_hex(4)}"})  # its own (short: socket paths live under it)
    c.names = {}
    for name, spec in NODES.items():
        c.names[_add(c, name, spec).node_id] = name
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not on the actors' path
    print(f"cluster of {len(NODES) + 1} nodes up in {time.perf_counter() - started:.1f} s")
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _node_names(cluster) -> dict[str, str]:
    """Live node id -> name (the custom resource each node holds)."""
    import ray

    return {n["NodeID"]: next(k for k in ("head", *NODES, "spare") if k in n["Resources"])
            for n in ray.nodes() if n["Alive"]}


# ------------------------------------------------------------------------------------------ placement per node
def test_a_request_no_single_node_holds_is_refused_naming_the_largest_node(cluster, tmp_path, capsys,
                                                                           monkeypatch):
    """3 CPUs and 2 GPUs in all: a learner of 3 CPUs, or a trial of 2 GPUs, passed the old check (the cluster's
    sums) and then waited forever; no node holds either."""
    import ray

    two = next(n for n in ray.nodes() if n["Alive"] and "two" in n["Resources"])
    largest = f"the largest node, {two['NodeManagerAddress']} (node {two['NodeID'][:8]}), has 2 CPU, 1 GPU"
    args = ["train", f"task={TINY_TASK}", "device=cpu", "progress=false", "mlflow=false",
            f"output_dir={tmp_path / 'runs'}", "num_workers=1", "worker_cpus=0.5", "learner_cpus=3"]
    (tmp_path / "a").mkdir()
    line = _assert_user_error(*_main_in(tmp_path / "a", args, capsys, monkeypatch), tmp_path / "a",
                              ["no node can hold a learner (3 CPU)", largest])
    assert line.endswith("lower num_workers=, worker_cpus= or learner_cpus=, or use device=cpu")
    ckpt = untrained_checkpoint(tmp_path / "ckpt" / "agent.pt")
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"experiment: gpus\nfixed: {{checkpoint: {ckpt}, episodes: 1, device: cpu}}\n"
                     "grid: {mode: baseline}\n")
    (tmp_path / "b").mkdir()
    line = _assert_user_error(*_main_in(tmp_path / "b", ["sweep", f"config={sweep}", "trial_gpus=2",
                                                         f"storage={tmp_path / 'sweeps'}"], capsys, monkeypatch),
                              tmp_path / "b", ["no node can hold a trial (1 CPU, 2 GPU)", largest, "trial_gpus="])
    assert not (tmp_path / "sweeps").exists()


def where_am_i(_base):
    import ray

    return {"node": ray.get_runtime_context().get_node_id()}


def node_record(state, index):
    return [{"node": state["node"]}]


def test_a_request_that_fits_one_node_is_placed_on_it(cluster):
    """Actors of 2 CPUs fit only "two", of 1 GPU only "one" or "two", of 0.5 CPU anywhere but the head."""
    from gym_qwen.actors.cluster import check_resources
    from gym_qwen.actors.episode_farm import EpisodeFarm

    names = _node_names(cluster)
    check_resources([("trial", 1, 1.0, 1.0), ("evaluator", 2, 1.0, 0.0)])  # fits: no error
    with EpisodeFarm(where_am_i, node_record, 1, cpus=2.0, setup_args=(0,), what="collector") as farm:
        table = farm.run(range(2))
    assert {names[n] for n in table["node"].to_pylist()} == {"two"}


# ------------------------------------------------------------------------------------------ a node dies
class NodeKiller(threading.Thread):
    """Waits for the fault plan's marker (the pid of a process that holds its work unfinished), then removes
    the node whose raylet started that process, as a lost machine: its raylet and everything on it killed."""

    def __init__(self, cluster, marker: Path, timeout: float = 600):
        super().__init__(daemon=True)
        self.cluster, self.marker, self.timeout = cluster, marker, timeout
        self.killed: str | None = None  # the name of the node removed
        self.error: str | None = None

    def _node_of(self, pid: int):
        from ray._private import ray_constants

        raylets = {n.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid: n
                   for n in self.cluster.list_all_nodes()}
        while pid > 1 and pid not in raylets:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return raylets.get(pid)

    def run(self):
        deadline = time.time() + self.timeout
        while not self.marker.exists():
            if time.time() > deadline:
                self.error = "the fault plan's point was never reached"
                return
            time.sleep(0.2)
        pid = int(self.marker.read_text())
        node = self._node_of(pid)
        if node is None or node is self.cluster.head_node:
            self.error = f"process {pid} runs on no worker node"
            return
        self.killed = self.cluster.names.get(node.node_id, "?")
        self.cluster.remove_node(node, allow_graceful=False)
        try:
            os.kill(pid, 9)  # it would see its raylet gone and exit; do not leave it to
        except ProcessLookupError:
            pass

    def restore(self):
        """Put a node of the killed one's kind back, so the module's cluster keeps its shape."""
        self.join(timeout=60)
        if self.killed in NODES:
            self.cluster.names[_add(self.cluster, self.killed, NODES[self.killed]).node_id] = self.killed
            self.cluster.wait_for_nodes()


@pytest.fixture
def kill_node(cluster, tmp_path):
    """kill_node() -> a NodeKiller watching tmp_path/held (started); the node it kills is put back after."""
    killers = []

    def start() -> NodeKiller:
        killer = NodeKiller(cluster, tmp_path / "held")
        killer.start()
        killers.append(killer)
        return killer

    yield start
    for k in killers:
        k.restore()


def test_a_node_dies_mid_collection_and_its_episode_is_collected_again(cluster, kill_node, tmp_path, capsys,
                                                                      monkeypatch):
    """Two collectors (0.5 CPU each, so either node holds both) play 2 collection episodes; the one playing
    episode 1 holds it unsent and its node is killed: the collector is restarted on the other node, episode 1 is
    played again, and the file equals a collection in one process, row for row."""
    from gym_qwen.actors.rollout_worker import FAULTS_ENV
    from gym_qwen.platform.speculative.corrector_data import read_corrector_data

    ckpt = untrained_checkpoint(tmp_path / "ckpt" / "agent.pt")
    runs = {}
    killer = None
    for name, extra in (("seq", []), ("cluster", ["num_workers=2", "worker_cpus=0.5"])):
        work = tmp_path / name
        work.mkdir()
        if name == "cluster":
            monkeypatch.setenv(FAULTS_ENV, json.dumps({"hold_at_episode": 1, "marker": str(tmp_path / "held")}))
            killer = kill_node()
        args = ["collect", f"checkpoint={ckpt}", f"output={tmp_path / (name + '.parquet')}", "episodes=2",
                "spec_exec_horizon=2", "progress=false", "torch_threads=1", *extra]
        rc, out, err = _main_in(work, args, capsys, monkeypatch)
        assert rc == 0, err
        runs[name], _ = read_corrector_data(tmp_path / (name + ".parquet"))
    killer.join(timeout=60)
    assert killer.error is None and killer.killed in NODES, killer.error
    assert sorted(set(runs["cluster"]["episode"].tolist())) == [0, 1]
    for key in ("episode", "t", "step_in_chunk", "distance", "z_real", "a_teacher", "history"):
        assert (runs["seq"][key] == runs["cluster"][key]).all(), key


@pytest.mark.slow
def test_a_node_dies_mid_training_and_its_episodes_are_played_again(cluster, kill_node, tmp_path, monkeypatch):
    """The learner (2 CPUs) can only be on "two"; two rollout workers (0.5 CPU) on "one" and a spare node. The
    worker at decision 250 holds; its node dies: the worker restarts on the other node, its episodes are played
    again under the same ids, and the buffer, decisions and updates equal an in-process run's."""
    import ray

    from gym_qwen.actors.rollout_worker import FAULTS_ENV
    from gym_qwen.platform.training.loop import LoopState, run_training

    spare = _add(cluster, "spare", {"num_cpus": 1})
    cluster.names[spare.node_id] = "spare"
    cluster.wait_for_nodes()
    try:
        monkeypatch.chdir(tmp_path)
        common = ("mlflow=false", "steps=3000", "eval_freq=0", "device=cpu")
        local = _in_process_counts(tiny_train_config(tmp_path / "local", *common))
        monkeypatch.setenv(FAULTS_ENV, json.dumps({"hold_at_decision": 250, "marker": str(tmp_path / "held")}))
        killer = kill_node()
        cfg = tiny_train_config(tmp_path / "runs", *common, "num_workers=2", "worker_cpus=0.5", "learner_cpus=2")
        from gym_qwen.actors.training_backend import RayTrainingBackend

        backend = RayTrainingBackend(cfg)
        try:
            learner_node = _node_of_actor(backend.learner)
            state = run_training(cfg, backend.spec, backend, LoopState())
            stats = ray.get(backend.learner.stats.remote(), timeout=60)
            buffer = ray.get(backend.learner.state.remote(), timeout=60)["buffer"]
        finally:
            backend.close()
        killer.join(timeout=60)
        assert killer.error is None and killer.killed in ("one", "spare"), killer.error
        assert _node_names(cluster)[learner_node] == "two"  # the only node that holds it
        assert backend.restarts >= 1  # the held worker's batch was played again
        ids = sorted(int(e["episode_id"]) for e in buffer["episodes"])
        assert stats["episode_ids"] == ids == list(range(local["episodes"]))  # each episode exactly once
        assert (stats["decisions"], stats["updates"], len(state.episode_returns)) == \
            (local["decisions"], local["updates"], local["episodes"])
    finally:
        if spare in cluster.worker_nodes:
            cluster.remove_node(spare)


def _node_of_actor(handle) -> str:
    from ray._private import state  # Ray's actor table (its public state API needs the dashboard)

    return state.actors(handle._actor_id.hex())["Address"]["NodeID"]


def _in_process_counts(cfg) -> dict:
    from gym_qwen.platform.training.loop import InProcessBackend, LoopState, run_training

    backend = InProcessBackend(cfg)
    state = run_training(cfg, backend.spec, backend, LoopState())
    return {"decisions": backend.decisions, "updates": backend.num_updates,
            "episodes": len(state.episode_returns)}


@pytest.mark.slow
def test_a_node_dies_mid_sweep_and_its_trial_is_retried_without_a_duplicate_run(cluster, kill_node, tmp_path,
                                                                                capsys, monkeypatch):
    """A sweep of two trials of two episodes: the trial that logged episode 0 first holds, and its node dies.
    Tune retries the trial on a live node; each trial ends with one MLflow run holding each episode's step
    once, and the returns equal the sequential evaluation of the same settings."""
    from gym_qwen.platform.speculative.evaluation import evaluate_checkpoint
    from gym_qwen.platform.speculative.modes import ExecutionSpec, SpeculationSettings
    from test_sweeps import _runs, _tiny_sweep

    ckpt = untrained_checkpoint(tmp_path / "ckpt" / "agent.pt")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("GYM_QWEN_SWEEP_FAULTS", json.dumps({"hold_at_episode": 0, "marker": str(tmp_path / "held")}))
    killer = kill_node()
    path = _tiny_sweep(tmp_path / "tiny.yaml", ckpt, episodes=2)
    rc, out, err = _main_in(cwd, ["sweep", f"config={path}", f"storage={tmp_path / 'sweeps'}"], capsys, monkeypatch)
    assert rc == 0, err[-3000:]
    killer.join(timeout=60)
    assert killer.error is None and killer.killed in NODES, killer.error
    assert "retrying from its last finished episode" in out
    c, runs = _runs(f"sqlite:///{cwd / 'mlflow.db'}")
    trials = [r for r in runs if r.data.tags.get("gym_qwen.role") == "trial"]
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    for run in trials:
        assert [m.step for m in c.get_metric_history(run.info.run_id, "return_mean")] == [1, 2]
        mode = run.data.params["mode"]
        spec = ExecutionSpec(SpeculationSettings(mode, 1 if mode == "baseline" else 3))
        sequential, _ = evaluate_checkpoint(str(ckpt), 2, seed=1, device="cpu", execution=spec)
        assert run.data.metrics["return_mean"] == pytest.approx(sequential.mean, rel=1e-6), mode
