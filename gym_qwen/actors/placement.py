"""Whether a command's actors fit a Ray cluster node by node, and which device `device=auto` takes there.

Plain data in, a verdict out (no Ray here: `cluster.py` reads the cluster, this module judges, so the rules are
tested without one). An actor holds its CPUs and GPUs on one node, so a cluster's totals say little: two
one-GPU nodes hold no actor of two GPUs. The verdict:

- `place`: the live nodes' totals hold every actor (first fit, largest actors first);
- `wait`: they do not, but the nodes the autoscaler may add (the cluster's node types, at most `count` more of
  each) would: the caller asks the autoscaler for them and waits;
- `refuse`: nothing would; the line names the actor that no node holds and the largest node (and node type),
  or the totals that are short.
"""
from __future__ import annotations

import collections
import dataclasses

EPS = 1e-9
ORDER = ("GPU", "CPU")  # the resources shown first and packed by first


def describe(resources: dict, keys=None) -> str:
    """"2 CPU, 1 GPU, 1 ssd" (GPU and CPU first; zeros left out unless named in `keys`)."""
    keys = list(keys) if keys is not None else [k for k, v in resources.items() if v]
    keys = sorted(set(keys), key=lambda k: (k not in ("CPU", "GPU"), k != "CPU", k))
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in keys) or "nothing"


@dataclasses.dataclass(frozen=True)
class Ask:
    """`count` actors of one kind (`what`: "rollout worker", "trial"), each holding `cpus` CPUs, `gpus` GPUs and
    the `custom` resources ((name, amount) pairs)."""

    what: str
    count: int
    cpus: float
    gpus: float = 0.0
    custom: tuple = ()

    @property
    def shape(self) -> dict[str, float]:
        shape = {"CPU": self.cpus, "GPU": self.gpus, **dict(self.custom)}
        return {k: float(v) for k, v in shape.items() if v}

    def describe(self) -> str:
        return f"{self.what} {self.count} x ({describe(self.shape)})"


@dataclasses.dataclass(frozen=True)
class Node:
    """A live node (`name`: its address and id) or, with `count`, a node type the autoscaler may add that many
    more of. `resources` None: a node type that does not declare them (the autoscaler reads the machine's)."""

    name: str
    resources: dict | None
    count: int = 1


@dataclasses.dataclass(frozen=True)
class Verdict:
    """`action`: place, wait or refuse; `line`: the refusal (refuse) or the nodes to add (wait); `bundles`:
    every actor's resources, for the autoscaler's request."""

    action: str
    line: str
    bundles: list


def _fits(shape: dict, free: dict) -> bool:
    return all(free.get(k, 0.0) + EPS >= v for k, v in shape.items())


def _size(shape: dict) -> tuple:
    return tuple(shape.get(k, 0.0) for k in ORDER) + (sum(v for k, v in shape.items() if k not in ORDER),)


def _actors(asks) -> list[tuple[Ask, dict]]:
    """One entry per actor, largest first (GPUs, then CPUs, then the rest)."""
    actors = [(a, a.shape) for a in asks for _ in range(a.count)]
    return sorted(actors, key=lambda item: _size(item[1]), reverse=True)


def pack(asks, nodes, node_types=()) -> dict[str, int] | None:
    """Place every actor on the first live node with room left, else on a new node of the smallest node type
    that holds it. Returns {node type: nodes to add} ({} when the live nodes hold all), or None when an actor
    finds no room. A node type without declared resources holds one actor a node (it may hold more)."""
    free = [dict(n.resources or {}) for n in nodes]
    left = {t.name: t.count for t in node_types}
    added = collections.Counter()
    for _, shape in _actors(asks):
        room = next((f for f in free if _fits(shape, f)), None)
        if room is None:
            types = [t for t in node_types if left[t.name] > 0 and (t.resources is None or _fits(shape, t.resources))]
            if not types:
                return None
            new = min(types, key=lambda t: _size(t.resources) if t.resources is not None else (float("inf"),))
            left[new.name] -= 1
            added[new.name] += 1
            room = dict(new.resources) if new.resources is not None else dict(shape)
            free.append(room)
        for k, v in shape.items():
            room[k] = room.get(k, 0.0) - v
    return dict(added)


def _largest(places, shape: dict):
    """The node (or type) with the most of what `shape` asks for, GPUs first."""
    keys = sorted(shape, key=lambda k: (k not in ORDER, ORDER.index(k) if k in ORDER else 0, k))
    return max(places, key=lambda n: tuple((n.resources or {}).get(k, 0.0) for k in keys))


def _shown(node: Node, shape: dict) -> str:
    if node.resources is None:
        return "resources it does not declare"
    return describe(node.resources, ["CPU", "GPU", *shape])


def summary(nodes) -> str:
    """"3 nodes: 1 x (1 CPU), 2 x (2 CPU, 1 GPU)"."""
    shapes = collections.Counter(describe(n.resources or {}, ["CPU", "GPU"]) for n in nodes)
    return f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}: " + ", ".join(
        f"{n} x ({s})" for s, n in sorted(shapes.items()))


def refusal(asks, nodes, node_types=(), hint: str = "") -> str:
    """The one line that says why `asks` cannot be placed (see `judge`)."""
    tail = f"; {hint}" if hint else ""
    asked = " + ".join(a.describe() for a in asks)
    for ask in asks:
        shape = ask.shape
        if any(_fits(shape, n.resources or {}) for n in nodes):
            continue
        if any(t.count > 0 and (t.resources is None or _fits(shape, t.resources)) for t in node_types):
            continue
        where = "node" if not node_types else "node, and no node type the autoscaler may add,"
        line = f"no {where} can hold a {ask.what} ({describe(shape)})"
        if nodes:
            big = _largest(nodes, shape)
            line += f": the largest node, {big.name}, has {_shown(big, shape)}"
        if node_types:
            big = _largest(node_types, shape)
            line += f"; the largest node type, {big.name}, has {_shown(big, shape)}"
        return line + tail
    need = collections.Counter()
    for a in asks:
        for k, v in a.shape.items():
            need[k] += a.count * v
    have = collections.Counter()
    for n in nodes:
        have.update({k: v for k, v in (n.resources or {}).items()})
    if not node_types and any(need[k] > have.get(k, 0.0) + EPS for k in need):
        return (f"asked for {need['CPU']:g} CPUs and {need['GPU']:g} GPUs ({asked}) but the Ray cluster has "
                f"{have.get('CPU', 0):g} CPUs and {have.get('GPU', 0):g} GPUs in all" + tail)
    more = ""
    if node_types:
        more = " and the node types the autoscaler may add (" + ", ".join(
            f"{t.count} x {t.name}" for t in node_types) + ")"
    return f"{asked} do not fit the cluster node by node: its {summary(nodes)}{more}" + tail


def judge(asks, nodes, node_types=(), hint: str = "") -> Verdict:
    """Place, wait for the autoscaler, or refuse `asks` on the live `nodes` and the `node_types`."""
    asks = [a for a in asks if a.count > 0]
    bundles = [shape for _, shape in _actors(asks)]
    if pack(asks, nodes) is not None:
        return Verdict("place", "", bundles)
    if node_types:
        added = pack(asks, nodes, node_types)
        if added is not None:
            return Verdict("wait", ", ".join(f"{n} x {name}" for name, n in sorted(added.items())), bundles)
    return Verdict("refuse", refusal(asks, nodes, node_types, hint), bundles)


def auto_device(nodes, node_types=()) -> tuple[str, str]:
    """`device=auto` for an actor that wants one GPU: (device, why), from the live nodes, then the node types."""
    for n in nodes:
        if (n.resources or {}).get("GPU", 0.0) + EPS >= 1:
            return "cuda", f"node {n.name} has {n.resources['GPU']:g} GPU"
    for t in node_types:
        if t.count > 0 and t.resources is not None and t.resources.get("GPU", 0.0) + EPS >= 1:
            return "cuda", (f"no node has a GPU yet, and the autoscaler may add a {t.name} node with "
                            f"{t.resources['GPU']:g} GPU")
    unknown = [t.name for t in node_types if t.count > 0 and t.resources is None]
    if unknown:
        return "cpu", (f"no node has a GPU, and node type {unknown[0]} does not declare its resources: "
                       "give device=cuda to wait for a GPU node")
    if node_types:
        return "cpu", "no node has a GPU, and no node type the autoscaler may add has one"
    return "cpu", "no node of the cluster has a GPU"
