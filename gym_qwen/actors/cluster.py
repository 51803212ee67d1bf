"""Joining or starting Ray, and refusing resource requests a cluster can never satisfy."""
from __future__ import annotations

import contextlib
import os

from gym_qwen.platform.config import ConfigError


class ResourceRequestError(ConfigError):
    """The actors asked for more CPUs or GPUs than the whole cluster has (one-line message)."""


class ClusterAddressError(ConfigError):
    """Nobody answers at the Ray address given (one-line message)."""


CONNECT_TIMEOUT_S = 5.0


def check_address(address: str, where: str = "ray_address") -> None:
    """Raise ClusterAddressError unless something accepts a TCP connection at `address` (host:port,
    ray://host:port or http(s)://host:port) within a few seconds: Ray's own client keeps retrying a dead address
    for minutes. "auto", "local" and other forms are left to Ray."""
    import socket
    from urllib.parse import urlsplit

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


def check_resources(requests: list[tuple[str, int, float, float]]) -> None:
    """requests: (what, count, cpus each, gpus each). Raise ResourceRequestError if the cluster's totals (not
    what is free now) cannot hold them, rather than leaving actors PENDING forever."""
    import ray

    total = ray.cluster_resources()
    have_cpu, have_gpu = float(total.get("CPU", 0)), float(total.get("GPU", 0))
    need_cpu = sum(n * c for _, n, c, _ in requests)
    need_gpu = sum(n * g for _, n, _, g in requests)
    if need_cpu <= have_cpu + 1e-9 and need_gpu <= have_gpu + 1e-9:
        return
    asked = " + ".join(f"{what} {n} x ({c:g} CPU" + (f", {g:g} GPU)" if g else ")") for what, n, c, g in requests)
    raise ResourceRequestError(
        f"asked for {need_cpu:g} CPUs and {need_gpu:g} GPUs ({asked}) but the Ray cluster has {have_cpu:g} CPUs and "
        f"{have_gpu:g} GPUs in all; lower num_workers=, worker_cpus= or learner_cpus=, or use device=cpu")
