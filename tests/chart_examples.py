"""The chart's committed rendered examples, and the checks shared by the tests,
``make chart`` and the GitHub workflow.

Helm cannot be installed everywhere the tests run, so
``charts/parsl-flux/examples/NAME.yaml`` holds ``helm template`` output for
``examples/NAME.values.yaml``. Where helm is on PATH (the workflow, a
developer's machine) ``check`` renders every example again and compares it,
object by object, with the committed file; ``regenerate`` rewrites them.

    python tests/chart_examples.py check        # exit 1 and a diff when stale
    python tests/chart_examples.py regenerate   # after changing the chart
    python tests/chart_examples.py validate FILE...  # MiniCluster CRD + Kubernetes schemas
"""

from __future__ import annotations

import argparse
import copy
import difflib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "parsl-flux"
EXAMPLES = CHART / "examples"
SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "schemas"
CRD = SCHEMAS / "flux-framework.org_miniclusters.yaml"
RELEASE = "demo"
NAMESPACE = "parsl"
GENERATED = "parsl-flux.io/generated-secret"
KUBERNETES_VERSION = "1.37.0"


def header(name: str) -> str:
    return ("# Rendered chart, checked by tests/test_chart.py and, against real helm, by\n"
            "# .github/workflows/chart.yml. Regenerate with `make chart-examples`:\n"
            f"#   helm template {RELEASE} charts/parsl-flux --namespace {NAMESPACE} "
            f"-f charts/parsl-flux/examples/{name}.values.yaml\n")


def example_names() -> List[str]:
    return sorted(p.name[: -len(".values.yaml")] for p in EXAMPLES.glob("*.values.yaml"))


def load_docs(text: str) -> List[Dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def deep_merge(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    """Helm's coalescing of a values file onto the chart's values (null deletes)."""
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def values_for(name: str) -> Dict[str, Any]:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return deep_merge(defaults, yaml.safe_load((EXAMPLES / f"{name}.values.yaml").read_text()) or {})


def normalize(docs: List[Dict[str, Any]]) -> Dict[Tuple[str, str], Dict[str, Any]]:
    """Objects by (kind, name); a generated (random) secret value is masked."""
    out = {}
    for doc in docs:
        doc = copy.deepcopy(doc)
        if doc.get("kind") == "Secret" and (doc["metadata"].get("annotations") or {}).get(GENERATED) == "true":
            doc["data"] = {k: "<generated>" for k in doc.get("data", {})}
        out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def diff(rendered: str, committed: str, label: str = "") -> str:
    """'' when both hold the same objects, else a unified diff of them."""
    a, b = normalize(load_docs(committed)), normalize(load_docs(rendered))
    if a == b:
        return ""
    def dump(objs: dict) -> list:
        return yaml.safe_dump_all([objs[k] for k in sorted(objs)], sort_keys=True).splitlines(True)

    return "".join(difflib.unified_diff(dump(a), dump(b), f"committed {label}", f"helm template {label}"))


def helm_template(name: str, helm: str = "helm") -> str:
    cmd = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
           "-f", str(EXAMPLES / f"{name}.values.yaml")]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


# ------------------------------------------------------------------ schemas
def strict(schema: Any) -> Any:
    """The CRD's openAPIV3Schema as JSON Schema that, like `kubectl apply
    --validate=strict`, rejects unknown fields (the API server would silently
    prune them). x-kubernetes-int-or-string fields already carry anyOf."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if schema.get("nullable"):
        out.pop("nullable")
        if "type" in out:
            out["type"] = [out["type"], "null"]
    return out


def minicluster_schema() -> Dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha2")
    return strict(version["schema"]["openAPIV3Schema"])


def validate_objects(docs: List[Dict[str, Any]]) -> List[str]:
    """Problems of rendered objects: MiniClusters against the CRD, the rest
    against the Kubernetes OpenAPI schemas (kubernetes-validate, strict)."""
    import jsonschema
    import kubernetes_validate

    problems = []
    mc_validator = None
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("kind") == "MiniCluster":
            if doc.get("apiVersion") != "flux-framework.org/v1alpha2":
                problems.append(f"{where}: apiVersion {doc.get('apiVersion')} is not flux-framework.org/v1alpha2")
            mc_validator = mc_validator or jsonschema.Draft7Validator(minicluster_schema())
            for e in sorted(mc_validator.iter_errors(doc), key=str):
                problems.append(f"{where}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}")
        else:
            try:
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                problems.append(f"{where}: {'.'.join(map(str, e.path))}: {e.message}")
            except Exception as e:  # unknown kind/version
                problems.append(f"{where}: {e}")
    return problems


# ---------------------------------------------------------------------- CLI
def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("check", "regenerate"):
        s = sub.add_parser(name)
        s.add_argument("--helm", default=os.environ.get("HELM", "helm"))
    v = sub.add_parser("validate")
    v.add_argument("files", nargs="+")
    args = p.parse_args(argv)

    if args.cmd == "validate":
        problems = [f"{f}: {m}" for f in args.files for m in validate_objects(load_docs(Path(f).read_text()))]
        print("\n".join(problems) or f"ok: {len(args.files)} file(s) valid")
        return 1 if problems else 0

    if not shutil.which(args.helm):
        print(f"{args.helm} is not on PATH", file=sys.stderr)
        return 2
    stale = 0
    for name in example_names():
        rendered = helm_template(name, args.helm)
        target = EXAMPLES / f"{name}.yaml"
        if args.cmd == "regenerate":
            target.write_text(header(name) + rendered)
            print(f"wrote {target.relative_to(REPO)}")
            continue
        d = diff(rendered, target.read_text() if target.exists() else "", name)
        if d:
            stale += 1
            print(f"{target.relative_to(REPO)} differs from helm template output:\n{d}")
        else:
            print(f"{target.relative_to(REPO)}: same objects as helm template")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
