"""Write the openAPIV3Schema of each KubeRay CRD's served storage version (v1) as compact JSON, descriptions left
out: python cluster/crds/slim.py <kuberay checkout or export>/helm-chart/kuberay-operator/crds/ray.io_{rayclusters,rayjobs}.yaml"""
import json
import sys
from pathlib import Path

import yaml


def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


for path in sys.argv[1:]:
    crd = yaml.safe_load(Path(path).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("served") and v.get("storage")]
    out = Path(__file__).with_name(f"{crd['spec']['names']['plural']}.{crd['spec']['group']}.{version['name']}.json")
    schema = {"group": crd["spec"]["group"], "version": version["name"], "kind": crd["spec"]["names"]["kind"],
              "openAPIV3Schema": strip(version["schema"]["openAPIV3Schema"])}
    out.write_text(json.dumps(schema, separators=(",", ":"), sort_keys=True) + "\n")
    print(out, out.stat().st_size)
