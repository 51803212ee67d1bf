"""Joining or starting Ray; reading the cluster (its live nodes, the node types its autoscaler may add); placing a
command's actors node by node: at once, after the autoscaler added nodes, or refused in one line."""
from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from gym_qwen.platform.config import ConfigError

from .placement import Ask, Node, auto_device, judge, pack, summary


class ResourceRequestError(ConfigError):
    """No node of the cluster (nor one the autoscaler may add) holds the actors asked for (one-line message)."""


class ClusterAddressError(ConfigError):
    """Nobody answers at the Ray address given (one-line message)."""


CONNECT_TIMEOUT_S = 5.0


def check_address(address: str, where: str = "ray_address") -> None:
    """Raise ClusterAddressError unless something accepts a TCP connection at `address` (host:port,
    ray://host:port or http(s)://host:port) within a few seconds: Ray's own client keeps retrying a dead address
    for minutes. "auto", "local" and other forms are left to Ray."""
    try:
        parts = urlsplit(address if "://" in address else f"tcp://{address}")
        host, port = parts.hostname, parts.port
    except ValueError:
        return
    if not host or port is None:
        return
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise ClusterAddressError(f"nobody answers at {where}={address} ({e.strerror or e}); start the cluster "
                                  f"(ray start --head) or fix {where}") from None


def connect(address: str | None = None) -> bool:
    """Join the cluster at `address` (or RAY_ADDRESS, as under `ray job submit`), else start Ray on this machine
    bound to 127.0.0.1. A second call does nothing. Returns whether this call connected, so that the caller
    (and only it) calls `disconnect` when done. An address nobody answers at is a ClusterAddressError."""
    # Ray takes seconds to import; only the Ray paths need it
    import ray

    if ray.is_initialized():
        return False
    where = "ray_address" if address else "RAY_ADDRESS"
    address = address or os.environ.get("RAY_ADDRESS") or None
    common = {"logging_level": "ERROR", "configure_logging": True, "log_to_driver": True}
    if address:
        check_address(address, where)
        try:
            ray.init(address=address, **common)
        except ConnectionError as e:  # e.g. address=auto with no cluster running on this machine
            raise ClusterAddressError(f"cannot join the Ray cluster at {where}={address}: "
                                      f"{(str(e).strip().splitlines() or [''])[0]}") from None
    else:
        # address="local": a new Ray of this process's own, never a stale cluster recorded on this machine
        ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", **common)
    return True


def disconnect(connected: bool) -> None:
    """Leave Ray if `connect` returned True: a job run inside a longer-lived process (a notebook, a test) must not
    leave its Ray behind for the next caller, who would find this machine's CPU count instead of its own."""
    if connected:
        # Ray takes seconds to import; only the Ray paths need it
        import ray

        ray.shutdown()


@contextlib.contextmanager
def ray_session(address: str | None = None):
    """`connect(address)` on entry and, if that call connected, `disconnect` on exit, however the block ends."""
    connected = connect(address)
    try:
        yield
    finally:
        disconnect(connected)


def threads_for(cpus: float) -> int:
    """Torch threads for an actor holding `cpus` CPUs (at least one)."""
    return max(1, int(round(cpus)))


# The cluster launcher's config on the head node (`ray up` writes it there; Ray Tune looks for it too): its
# available_node_types are the nodes the autoscaler may add.
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
POLL_S = 2.0  # how often a waiting request looks at the cluster again
PROGRESS_S = 30.0  # how often it says it is still waiting


def _say(line: str) -> None:
    print(line, flush=True)


def live_nodes() -> list[Node]:
    """The cluster's live nodes with their total resources (not what is free now)."""
    # Ray takes seconds to import; only the Ray paths need it
    import ray

    nodes = []
    for n in ray.nodes():
        if n.get("Alive"):
            resources = {k: float(v) for k, v in n.get("Resources", {}).items() if not k.startswith("node:")}
            nodes.append(Node(f"{n.get('NodeManagerAddress', '?')} (node {n.get('NodeID', '?')[:8]})", resources))
    return nodes


def _types_from_gcs() -> list[Node] | None:
    """Node types an autoscaler reported to the GCS (its ClusterConfig), or None when none did. Ray's own
    reader is private, so any failure of it is read as "none reported"."""
    try:
        # Ray takes seconds to import; only the Ray paths need it
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - a private API that may change: no config, not a crash
        return None
    if config is None or not config.node_group_configs:
        return None
    types = []
    for group in config.node_group_configs:
        resources = {k: float(v) for k, v in group.resources.items()}
        count = group.max_count if group.max_count >= 0 else 1_000_000  # -1: no limit
        if count > 0:
            types.append(Node(group.name, resources or None, count))
    return types


def types_from_launcher_config(path: str | Path) -> list[Node]:
    """The worker node types of a cluster-launcher config (available_node_types, less the head's type): each
    with its declared resources (None when it declares none: the autoscaler reads them off the machine) and
    its max_workers (the file's max_workers when the type gives none)."""
    # yaml is imported only where presets are read
    import yaml

    config = yaml.safe_load(Path(path).expanduser().read_text()) or {}
    head = config.get("head_node_type")
    types = []
    for name, spec in (config.get("available_node_types") or {}).items():
        spec = spec or {}
        count = int(spec.get("max_workers", config.get("max_workers", 0)) or 0)
        if name == head or count <= 0:
            continue
        resources = {k: float(v) for k, v in (spec.get("resources") or {}).items()}
        types.append(Node(name, resources or None, count))
    return types


def node_types() -> list[Node]:
    """The node types the cluster's autoscaler may add: those an autoscaler reported to the GCS, else those of
    the launcher config on this (the head) node; [] for a cluster that declares none (a fixed cluster, or a
    driver that runs off the head)."""
    types = _types_from_gcs()
    if types is not None:
        return types
    path = Path(BOOTSTRAP_CONFIG).expanduser()
    if not path.is_file():
        return []
    try:
        return types_from_launcher_config(path)
    except (OSError, ValueError, TypeError, AttributeError) as e:
        print(f"note: cannot read the node types of {path} ({e}); treating the cluster as fixed")
        return []


def check_resources(requests: list[tuple[str, int, float, float]], hint: str = "lower num_workers=, worker_cpus= "
                    "or learner_cpus=, or use device=cpu", wait_s: float = 0.0, say=None) -> None:
    """requests: (what, count, cpus each, gpus each). Return when the cluster's nodes can hold every actor, each
    on one node (totals, not what is free now). When they cannot but nodes of its node types could, ask the
    autoscaler for them and wait up to `wait_s` seconds, saying so (`say`) every PROGRESS_S. Otherwise raise
    ResourceRequestError: one line naming what no node holds and the largest node, then `hint`."""
    say = say or _say
    asks = [Ask(what, n, c, g) for what, n, c, g in requests]
    verdict = judge(asks, live_nodes(), node_types(), hint)
    if verdict.action == "refuse":
        raise ResourceRequestError(verdict.line)
    if verdict.action == "wait":
        _wait_for_nodes(asks, verdict, wait_s, hint, say)


def _wait_for_nodes(asks: list[Ask], verdict, wait_s: float, hint: str, say) -> None:
    # Ray takes seconds to import; only the Ray paths need it
    from ray.autoscaler.sdk import request_resources

    asked = " + ".join(a.describe() for a in asks)
    if wait_s <= 0:
        raise ResourceRequestError(f"the cluster's nodes cannot hold {asked}; the autoscaler may add "
                                   f"{verdict.line}, but scale_wait=0 waits for none; {hint}")
    request_resources(bundles=verdict.bundles)
    started = time.monotonic()
    say(f"waiting up to {wait_s:g} s (scale_wait=) for the autoscaler to add {verdict.line} for {asked}")
    spoken = started
    try:
        while True:
            time.sleep(max(0.0, min(POLL_S, started + wait_s - time.monotonic())))  # never past the deadline
            nodes = live_nodes()
            waited = time.monotonic() - started
            if pack(asks, nodes) is not None:
                say(f"the cluster holds them after {waited:.0f} s: {summary(nodes)}")
                return
            if waited >= wait_s:
                raise ResourceRequestError(
                    f"the autoscaler added no node that holds {asked} within {wait_s:g} s (scale_wait=): the "
                    f"cluster has {summary(nodes)}; see `ray status`, raise scale_wait=, or {hint}")
            if time.monotonic() - spoken >= PROGRESS_S:
                spoken = time.monotonic()
                say(f"still waiting for {verdict.line} ({waited:.0f} of {wait_s:g} s); the cluster has "
                    f"{summary(nodes)}")
    finally:
        request_resources(bundles=[])  # the request is persistent: withdraw it, held or not


def choose_device(device: str) -> tuple[str, str | None]:
    """The learner's device on the cluster and, for `auto`, the line that says which and why: cuda when a node
    has a GPU or a node type the autoscaler may add has one, else cpu. (Said once the actors are placed, so a
    refused request prints nothing but its one line.)"""
    if device != "auto":
        return device, None
    chosen, why = auto_device(live_nodes(), node_types())
    return chosen, f"device=auto: {chosen} for the learner ({why})"
