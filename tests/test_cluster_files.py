"""The KubeRay manifests against the KubeRay CRDs' OpenAPI v3 schemas (cluster/crds/, KubeRay v1.7.0), and the
other cluster manifests (PVC, MLflow Deployment and Service, node types) against each other. Fast: no Ray.

How the Kubernetes schema dialect is read (what the API server does, as far as a JSON Schema validator can):
- an object with `properties` takes no other field unless it says `additionalProperties` or
  `x-kubernetes-preserve-unknown-fields`: the API server would prune such a field, and `kubectl apply` rejects it
  (its default field validation is Strict), so a misspelt field is an error here too;
- `x-kubernetes-int-or-string: true` is an integer or a string (its `pattern` then applies to strings only);
- `nullable: true` also allows null; `format: int32`/`int64` bound integers;
- `x-kubernetes-list-type: set` wants unique items, `map` unique `x-kubernetes-list-map-keys`;
- `x-kubernetes-validations` are CEL rules this test cannot run: a manifest that sets a field carrying them fails
  (the manifests set none: managedBy, gcsFaultToleranceOptions.backend, deletionStrategy).
`metadata` at the top is `type: object` in a CRD (the API server checks it as ObjectMeta): its name is checked
here as a DNS-1123 subdomain.
"""
from __future__ import annotations

import copy
import fnmatch
import json
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # the test extra's tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
CRDS = CLUSTER / "crds"
KUBERAY = {"RayCluster": "kuberay-raycluster.yaml", "RayJob": "kuberay-rayjob.yaml"}
SHARED = "kuberay-shared.yaml"
MOUNT = "/mnt/shared"
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
INT_RANGE = {"int32": (-2**31, 2**31 - 1), "int64": (-2**63, 2**63 - 1)}


# ---------------------------------------------------------------- the schema, read as the API server reads it
def k8s_schema(node: dict) -> dict:
    """A Kubernetes structural schema node as a JSON Schema (draft 7) node."""
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {name: k8s_schema(sub) for name, sub in value.items()}
        elif key in ("items", "not"):
            out[key] = k8s_schema(value)
        elif key == "additionalProperties":
            out[key] = value if isinstance(value, bool) else k8s_schema(value)
        elif key in ("anyOf", "allOf", "oneOf"):
            out[key] = [k8s_schema(sub) for sub in value]
        elif key in ("nullable", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
                     "x-kubernetes-map-type", "x-kubernetes-list-map-keys", "x-kubernetes-embedded-resource"):
            continue  # read below
        else:  # type, enum, pattern, required, format, minimum, ..., x-kubernetes-list-type, -validations
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("x-kubernetes-list-type") == "map":
        out["x-kubernetes-list-map-keys"] = node.get("x-kubernetes-list-map-keys", [])
    if "properties" in node and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        elif "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    return out


def _list_type(validator, kind, instance, schema):
    if not validator.is_type(instance, "array"):
        return
    if kind == "set":
        seen = [json.dumps(i, sort_keys=True) for i in instance]
        if len(set(seen)) != len(seen):
            yield jsonschema.ValidationError(f"x-kubernetes-list-type set with duplicate items: {instance!r}")
    elif kind == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = [tuple(json.dumps(i.get(k)) for k in keys) for i in instance if isinstance(i, dict)]
        if len(set(seen)) != len(seen):
            yield jsonschema.ValidationError(f"x-kubernetes-list-type map with duplicate keys {keys}")


def _cel(validator, rules, instance, schema):
    yield jsonschema.ValidationError(f"sets a field with CEL rules this test cannot run: "
                                     f"{[r.get('rule') for r in rules]}")


def _formats() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())
    for name, (lo, hi) in INT_RANGE.items():
        checker.checks(name)(lambda v, lo=lo, hi=hi: not isinstance(v, int) or lo <= v <= hi)
    return checker


Validator = jsonschema.validators.extend(jsonschema.Draft7Validator, {
    "x-kubernetes-list-type": _list_type, "x-kubernetes-validations": _cel})


def crd(kind: str) -> dict:
    (path,) = [p for p in CRDS.glob("*.json") if json.loads(p.read_text())["kind"] == kind]
    return json.loads(path.read_text())


def problems(manifest: dict) -> list[str]:
    """What is wrong with a RayCluster or RayJob manifest, by its CRD's schema: [] when nothing."""
    spec = crd(manifest.get("kind"))
    found = []
    if manifest.get("apiVersion") != f"{spec['group']}/{spec['version']}":
        found.append(f"apiVersion {manifest.get('apiVersion')!r}, the CRD serves {spec['group']}/{spec['version']}")
    name = (manifest.get("metadata") or {}).get("name", "")
    if not DNS1123.match(name) or len(name) > 253:
        found.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    validator = Validator(k8s_schema(spec["openAPIV3Schema"]), format_checker=_formats())
    for e in sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path)):
        found.append(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}")
    return found


# ---------------------------------------------------------------- the manifests
def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d]


def package_version() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def ray_clusters() -> list[tuple[str, dict]]:
    """(where, RayCluster spec) of each KubeRay manifest."""
    (cluster,), (job,) = load(KUBERAY["RayCluster"]), load(KUBERAY["RayJob"])
    return [("RayCluster", cluster["spec"]), ("RayJob", job["spec"]["rayClusterSpec"])]


def pod_specs(spec: dict) -> list[tuple[str, dict]]:
    return [("head", spec["headGroupSpec"]["template"]["spec"]),
            *[(g["groupName"], g["template"]["spec"]) for g in spec["workerGroupSpecs"]]]


def shared() -> dict[str, dict]:
    return {d["kind"]: d for d in load(SHARED)}


def test_the_crd_schemas_are_kept_with_their_version():
    readme = (CRDS / "README.md").read_text()
    assert "v1.7.0" in readme and re.search(r"\b[0-9a-f]{40}\b", readme)
    for kind in KUBERAY:
        spec = crd(kind)
        assert (spec["group"], spec["version"]) == ("ray.io", "v1")
        assert "spec" in spec["openAPIV3Schema"]["properties"]


@pytest.mark.parametrize("kind", sorted(KUBERAY))
def test_each_kuberay_manifest_satisfies_its_crd_schema(kind):
    docs = load(KUBERAY[kind])
    assert [d["kind"] for d in docs] == [kind]
    assert problems(docs[0]) == []


@pytest.mark.parametrize("where, break_it, expected", [
    ("a misspelt field under a strict object", lambda m: m["spec"].__setitem__("enableInTreeAutoscalling", True),
     "Additional properties are not allowed ('enableInTreeAutoscalling'"),
    ("a misspelt field deep in the pod template",
     lambda m: m["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].__setitem__("volumeMount", []),
     "'volumeMount' was unexpected"),
    ("a boolean given as a string", lambda m: m["spec"].__setitem__("enableInTreeAutoscaling", "true"),
     "'true' is not of type 'boolean'"),
    ("a value outside an enum", lambda m: m["spec"]["autoscalerOptions"].__setitem__("upscalingMode", "Fast"),
     "'Fast' is not one of"),
    ("a quantity that is not one", lambda m: m["spec"]["workerGroupSpecs"][1]["template"]["spec"]["containers"][0][
        "resources"]["limits"].__setitem__("nvidia.com/gpu", "one"), "does not match"),
    ("a quantity of the wrong type", lambda m: m["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "resources"]["limits"].__setitem__("cpu", [8]), "is not valid under any of the given schemas"),
    ("a missing required field", lambda m: m["spec"]["headGroupSpec"].pop("template"), "'template' is a required"),
    ("an int32 out of range", lambda m: m["spec"]["workerGroupSpecs"][0].__setitem__("maxReplicas", 2**31),
     "is not a 'int32'"),
    ("a duplicate key of a map list", lambda m: m["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "ports"].append({"containerPort": 6379, "name": "again"}), "duplicate keys"),
    ("a field with CEL rules", lambda m: m["spec"].__setitem__("managedBy", "ray.io/kuberay-operator"),
     "CEL rules"),
    ("a name that is not a DNS name", lambda m: m["metadata"].__setitem__("name", "Gym_Qwen"), "DNS-1123"),
    ("the old API version", lambda m: m.__setitem__("apiVersion", "ray.io/v1alpha1"), "the CRD serves ray.io/v1"),
])
def test_a_broken_manifest_is_rejected(where, break_it, expected):
    (manifest,) = load(KUBERAY["RayCluster"])
    broken = copy.deepcopy(manifest)
    break_it(broken)
    found = problems(broken)
    assert any(expected in p for p in found), (where, found)


def test_a_broken_rayjob_is_rejected_under_its_own_schema():
    (job,) = load(KUBERAY["RayJob"])
    job = copy.deepcopy(job)
    job["spec"]["shutdownAfterJobFinishes"] = "yes"
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupNme"] = "cpu"
    found = problems(job)
    assert any("shutdownAfterJobFinishes" in p and "boolean" in p for p in found), found
    assert any("'groupNme' was unexpected" in p or "('groupNme'" in p for p in found), found


def test_the_images_are_tagged_with_the_package_version():
    version = package_version()
    images = []
    for _, spec in ray_clusters():
        images += [c["image"] for _, pod in pod_specs(spec) for c in pod["containers"]]
    (job,) = load(KUBERAY["RayJob"])
    images += [c["image"] for c in job["spec"]["submitterPodTemplate"]["spec"]["containers"]]
    images += [c["image"] for c in shared()["Deployment"]["spec"]["template"]["spec"]["containers"]]
    assert images and {i.rsplit(":", 1)[1] for i in images} == {version}, images
    assert f"gym-qwen:{version}" in (CLUSTER / "Dockerfile").read_text()


def test_autoscaling_is_on_with_cpu_and_gpu_worker_groups():
    for where, spec in ray_clusters():
        assert spec["enableInTreeAutoscaling"] is True and spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0, where
        assert spec["authOptions"] == {"mode": "token", "secretName": "gym-qwen-ray-token"}, where
        groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
        for g in groups.values():
            assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], (where, g["groupName"])
        gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]
        assert gpu["limits"]["nvidia.com/gpu"] == gpu["requests"]["nvidia.com/gpu"] == "1", where
        assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def _ray_resources(start_params: dict, container: dict) -> dict[str, float]:
    """The Ray resources KubeRay gives a pod: num-cpus/num-gpus of rayStartParams, else the container's limits."""
    limits = container["resources"]["limits"]
    cpus = float(start_params.get("num-cpus", limits["cpu"]))
    gpus = float(start_params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
    return {"CPU": cpus, **({"GPU": gpus} if gpus else {})}


def test_the_node_types_gym_qwen_reads_are_the_worker_groups(tmp_path):
    """The head's ~/ray_bootstrap_config.yaml (the ConfigMap gym-qwen-node-types) declares each worker group as a
    node type with its Ray resources and maxReplicas, as gym_qwen.actors.cluster reads them."""
    from gym_qwen.actors.cluster import types_from_launcher_config
    from gym_qwen.actors.placement import Node

    config_map = shared()["ConfigMap"]
    assert config_map["metadata"]["name"] == "gym-qwen-node-types"
    (tmp_path / "config.yaml").write_text(config_map["data"]["ray_bootstrap_config.yaml"])
    types = types_from_launcher_config(tmp_path / "config.yaml")
    head_type = yaml.safe_load(config_map["data"]["ray_bootstrap_config.yaml"])["available_node_types"]["head"]
    for where, spec in ray_clusters():
        expected = [Node(g["groupName"], _ray_resources(g["rayStartParams"], g["template"]["spec"]["containers"][0]),
                         g["maxReplicas"]) for g in spec["workerGroupSpecs"]]
        assert types == expected, where
        head = spec["headGroupSpec"]
        assert {k: float(v) for k, v in head_type["resources"].items()} == _ray_resources(
            head["rayStartParams"], head["template"]["spec"]["containers"][0]), where
        pod = head["template"]["spec"]
        mount = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "node-types"]
        assert mount == [{"name": "node-types", "mountPath": "/home/ray/ray_bootstrap_config.yaml",
                          "subPath": "ray_bootstrap_config.yaml"}], where
        assert {"name": "node-types", "configMap": {"name": "gym-qwen-node-types"}} in pod["volumes"], where


def test_the_shared_manifests_are_well_formed():
    docs = load(SHARED)
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment", "PersistentVolumeClaim", "Service"]
    api = {"ConfigMap": "v1", "Deployment": "apps/v1", "PersistentVolumeClaim": "v1", "Service": "v1"}
    for d in docs:
        assert d["apiVersion"] == api[d["kind"]] and DNS1123.match(d["metadata"]["name"]), d["kind"]
        assert set(d) <= {"apiVersion", "kind", "metadata", "spec", "data"}, d["kind"]
    pvc = shared()["PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"] and pvc["spec"]["resources"]["requests"]["storage"]


def test_the_service_selects_the_mlflow_deployment_and_the_ray_pods_point_at_it():
    deployment, service = shared()["Deployment"], shared()["Service"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items() and service["spec"]["selector"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in [p["name"] for p in container["ports"]] + [p["containerPort"] for p in
                                                                           container["ports"]]
    command = " ".join(container["command"] + container["args"])
    assert "--backend-store-uri sqlite:////mnt/shared/mlflow/mlflow.db" in command
    assert "--artifacts-destination /mnt/shared/mlflow/artifacts" in command
    allowed = re.search(r"--allowed-hosts '([^']+)'", command).group(1).split(",")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    for where, spec in ray_clusters():
        for group, pod in pod_specs(spec):
            env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
            uri = urlsplit(env["MLFLOW_TRACKING_URI"])
            assert (uri.scheme, uri.hostname, uri.port) == ("http", service["metadata"]["name"], port["port"]), \
                (where, group)
            assert any(fnmatch.fnmatch(uri.netloc, a) for a in allowed), (where, group, uri.netloc)  # MLflow's check
    assert any(fnmatch.fnmatch("127.0.0.1:5000", a) for a in allowed)  # kubectl port-forward


def test_every_pod_mounts_the_shared_volume_that_exists():
    claim = shared()["PersistentVolumeClaim"]["metadata"]["name"]
    deployment = shared()["Deployment"]["spec"]["template"]["spec"]
    pods = [("mlflow", "", deployment)]
    for where, spec in ray_clusters():
        pods += [(where, group, pod) for group, pod in pod_specs(spec)]
    for where, group, pod in pods:
        volumes = {v["name"]: v for v in pod["volumes"]}
        claimed = [n for n, v in volumes.items() if "persistentVolumeClaim" in v]
        assert [volumes[n]["persistentVolumeClaim"]["claimName"] for n in claimed] == [claim], (where, group)
        mounts = pod["containers"][0]["volumeMounts"]
        assert {"name": claimed[0], "mountPath": MOUNT} in mounts, (where, group)
        assert all(m["name"] in volumes for m in mounts), (where, group)


def test_the_rayjob_keeps_its_run_on_the_shared_volume():
    (job,) = load(KUBERAY["RayJob"])
    assert re.search(rf"\boutput_dir={MOUNT}/", job["spec"]["entrypoint"])
    assert job["spec"]["shutdownAfterJobFinishes"] is True
