"""Placement node by node (gym_qwen/actors/placement.py, no Ray): actors fit the live nodes, or wait for nodes the
autoscaler may add, or are refused in one line naming the largest node; `device=auto` on a cluster. Plain data
here; tests/test_multinode.py checks the same rules on real multi-node clusters."""
from __future__ import annotations

import pytest

from gym_qwen.actors.placement import Ask, Node, auto_device, judge, pack

HEAD = Node("10.0.0.1 (node head0000)", {"CPU": 1.0})
GPU_A = Node("10.0.0.2 (node aaaa0000)", {"CPU": 1.0, "GPU": 1.0})
GPU_B = Node("10.0.0.3 (node bbbb0000)", {"CPU": 2.0, "GPU": 1.0})


def test_a_request_the_totals_hold_but_no_node_is_refused_naming_the_largest_node():
    # two one-GPU nodes: 2 GPUs in all, but no trial of 2 GPUs fits either (issue 32's trial_gpus=2)
    verdict = judge([Ask("trial", 1, 1.0, 2.0)], [HEAD, GPU_A, GPU_B], hint="lower trial_gpus=")
    assert verdict.action == "refuse"
    assert verdict.line == ("no node can hold a trial (1 CPU, 2 GPU): the largest node, 10.0.0.3 (node bbbb0000), "
                            "has 2 CPU, 1 GPU; lower trial_gpus=")
    assert "\n" not in verdict.line


def test_the_largest_node_is_the_one_with_most_of_what_is_short():
    nodes = [Node("big-cpu", {"CPU": 8.0}), Node("gpu", {"CPU": 2.0, "GPU": 1.0})]
    assert "the largest node, big-cpu, has 8 CPU, 0 GPU" in judge([Ask("learner", 1, 16.0)], nodes).line
    assert "the largest node, gpu, has 2 CPU, 1 GPU" in judge([Ask("learner", 1, 1.0, 2.0)], nodes).line


def test_a_request_that_fits_a_node_is_placed():
    assert judge([Ask("learner", 1, 2.0, 1.0)], [HEAD, GPU_A, GPU_B]).action == "place"
    # 1 + 1 + 0.5 x 2 CPUs on nodes of 1, 1 and 2 CPUs: the learner of 2 CPUs takes the big node whole
    asks = [Ask("learner", 1, 2.0), Ask("rollout worker", 2, 0.5)]
    assert judge(asks, [HEAD, GPU_A, GPU_B]).action == "place"


def test_totals_short_keep_the_old_line_and_packing_short_says_node_by_node():
    line = judge([Ask("rollout worker", 9, 1.0), Ask("learner", 1, 1.0)], [Node("n", {"CPU": 4.0})],
                 hint="lower num_workers=").line
    assert line == ("asked for 10 CPUs and 0 GPUs (rollout worker 9 x (1 CPU) + learner 1 x (1 CPU)) but the Ray "
                    "cluster has 4 CPUs and 0 GPUs in all; lower num_workers=")
    # three actors of 0.6 CPU on two nodes of 1 CPU: 1.8 <= 2 CPUs in all, yet only two fit
    line = judge([Ask("evaluator", 3, 0.6)], [Node("a", {"CPU": 1.0}), Node("b", {"CPU": 1.0})]).line
    assert line == "evaluator 3 x (0.6 CPU) do not fit the cluster node by node: its 2 nodes: 2 x (1 CPU, 0 GPU)"


def test_custom_resources_are_placed_like_cpus():
    nodes = [Node("a", {"CPU": 1.0, "ssd": 1.0}), Node("b", {"CPU": 4.0})]
    assert judge([Ask("trial", 1, 1.0, custom=(("ssd", 1.0),))], nodes).action == "place"
    line = judge([Ask("trial", 1, 2.0, custom=(("ssd", 1.0),))], nodes).line
    # the largest node: the most GPUs, then CPUs, then the rest
    assert line == "no node can hold a trial (2 CPU, 1 ssd): the largest node, b, has 4 CPU, 0 GPU, 0 ssd"


GPU_TYPE = Node("gpu_worker", {"CPU": 4.0, "GPU": 1.0}, count=2)


def test_a_request_a_node_type_could_hold_waits_for_the_nodes_it_needs():
    verdict = judge([Ask("learner", 1, 1.0, 1.0), Ask("rollout worker", 6, 1.0)], [HEAD], [GPU_TYPE])
    # the learner takes 1 + 1 GPU of a new gpu_worker, three workers the rest of it, the head one, two a second
    assert verdict.action == "wait" and verdict.line == "2 x gpu_worker"
    assert verdict.bundles == [{"CPU": 1.0, "GPU": 1.0}] + [{"CPU": 1.0}] * 6  # for the autoscaler's request
    assert pack([Ask("learner", 1, 1.0, 1.0)], [HEAD], [GPU_TYPE]) == {"gpu_worker": 1}


def test_a_request_no_node_type_could_hold_is_refused_naming_both():
    verdict = judge([Ask("trial", 1, 1.0, 2.0)], [HEAD], [GPU_TYPE], hint="lower trial_gpus=")
    assert verdict.action == "refuse"
    assert verdict.line == ("no node, and no node type the autoscaler may add, can hold a trial (1 CPU, 2 GPU): the "
                            "largest node, 10.0.0.1 (node head0000), has 1 CPU, 0 GPU; the largest node type, "
                            "gpu_worker, has 4 CPU, 1 GPU; lower trial_gpus=")
    # more than max_workers nodes of the type would hold: refused, naming the limit
    verdict = judge([Ask("learner", 3, 1.0, 1.0)], [HEAD], [GPU_TYPE])
    assert verdict.action == "refuse" and "(2 x gpu_worker)" in verdict.line


def test_a_node_type_that_declares_no_resources_may_hold_anything():
    undeclared = Node("gpu_worker", None, count=4)
    assert judge([Ask("learner", 1, 1.0, 1.0)], [HEAD], [undeclared]).action == "wait"
    assert judge([Ask("learner", 1, 1.0, 1.0)], [HEAD], [Node("gpu_worker", None, count=0)]).action == "refuse"


@pytest.mark.parametrize("nodes,types,device,why", [
    ([HEAD, GPU_A], [], "cuda", "node 10.0.0.2 (node aaaa0000) has 1 GPU"),
    ([HEAD], [GPU_TYPE], "cuda", "no node has a GPU yet, and the autoscaler may add a gpu_worker node with 1 GPU"),
    ([HEAD], [], "cpu", "no node of the cluster has a GPU"),
    ([HEAD], [Node("cpu_worker", {"CPU": 8.0}, 3)], "cpu", "no node has a GPU, and no node type the autoscaler may "
                                                           "add has one"),
    ([HEAD], [Node("gpu_worker", None, 3)], "cpu", "no node has a GPU, and node type gpu_worker does not declare "
                                                   "its resources: give device=cuda to wait for a GPU node"),
    ([Node("half", {"CPU": 1.0, "GPU": 0.5})], [], "cpu", "no node of the cluster has a GPU"),
])
def test_device_auto_on_a_cluster_says_what_it_chose_and_why(nodes, types, device, why):
    assert auto_device(nodes, types) == (device, why)


def test_the_launcher_files_node_types_are_what_requests_are_judged_against():
    """cluster/ray-cluster.yaml, as the head's ~/ray_bootstrap_config.yaml: its CPU and GPU worker types (the
    head's own type left out) with their declared resources and max_workers; a CPU-only request waits for the
    CPU type, one that wants a GPU for the GPU type."""
    from pathlib import Path

    from gym_qwen.actors.cluster import types_from_launcher_config

    types = types_from_launcher_config(Path(__file__).resolve().parents[1] / "cluster" / "ray-cluster.yaml")
    assert types == [Node("cpu_worker", {"CPU": 16.0}, 4), Node("gpu_worker", {"CPU": 16.0, "GPU": 1.0}, 4)]
    head = Node("10.0.0.1 (node head0000)", {"CPU": 16.0})  # the launcher's head: no GPU, min_workers 0
    assert auto_device([head], types)[0] == "cuda"
    assert judge([Ask("trial", 4, 1.0, 0.25)], [head], types).line == "1 x gpu_worker"
    assert judge([Ask("trial", 1, 1.0, 2.0)], [head], types).action == "refuse"
    assert judge([Ask("rollout worker", 20, 1.0, 0.0)], [head], types).line == "1 x cpu_worker"


def test_an_unreachable_actor_is_one_loss_until_it_answers_and_waits_longer_each_time():
    """What the farm and the training backend count a crash or a node's death by: calls that bounce off an actor
    before it answers again are the same loss (one restart), and each waits twice as long, at most 30 s."""
    from gym_qwen.actors.unreachable import FIRST_S, MOST_S, UnreachableActors

    u = UnreachableActors(limit_s=600)
    assert not u.waiting(0) and u.ready(0) and u.next_in([0, 1]) is None
    assert u.failed(0) and u.waiting(0) and not u.waiting(1)
    assert not u.ready(0) and 0 < u.next_in([0, 1]) <= FIRST_S
    for _ in range(8):
        u.failed(0)
    assert FIRST_S * 2 < u.next_in([0]) <= MOST_S
    u.reached(0)
    assert not u.waiting(0) and u.ready(0)
    assert not UnreachableActors(limit_s=-1).failed(0)  # unreachable for longer than the limit: give up
