"""Helm for the chart charts/parsl-flux, through the Helm SDK (no helm binary),
and the checks shared by the tests, ``make chart`` and the GitHub workflow.

The engine is helm-python-sdk (``pip install helm-python-sdk==0.2.2``): Helm
v4.2.3 compiled into a shared library with a Python API. ``helm template`` is
a client-side dry-run install (no cluster is contacted, ``lookup`` finds
nothing), which is what :func:`render` runs. Each
``charts/parsl-flux/examples/NAME.yaml`` is that output for
``examples/NAME.values.yaml`` with release ``demo`` in namespace ``parsl``.

    python tests/chart_examples.py lint          # helm lint --strict, defaults and every examples/*.values.yaml
    python tests/chart_examples.py check         # exit 1 and a diff when an example is stale
    python tests/chart_examples.py regenerate    # after changing the chart
    python tests/chart_examples.py package DIR   # helm package into DIR, then load and render the archive
    python tests/chart_examples.py validate FILE...         # MiniCluster CRD + Kubernetes schemas
    python tests/chart_examples.py compare RENDERED NAME    # same objects as examples/NAME.yaml (any helm)
"""

from __future__ import annotations

import argparse
import copy
import difflib
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
KUBERNETES_VERSION = "1.37.0"
SDK_REQUIREMENT = "helm-python-sdk==0.2.2"
# Lint messages at or above this severity fail, as with `helm lint --strict`
# (1 info, 2 warning, 3 error).
LINT_WARNING = 2


class HelmUnavailable(RuntimeError):
    """The Helm SDK is not installed: the chart cannot be rendered or linted."""


def sdk():
    """The helm_python module, or a :class:`HelmUnavailable` that says how to get it.

    Tests and ``make chart`` must fail (never skip) without it: a skipped
    comparison is how stale examples went unnoticed before."""
    try:
        import helm_python
    except ImportError as e:
        raise HelmUnavailable(f"the Helm SDK is missing ({e}): pip install {SDK_REQUIREMENT} "
                              "(it is in the 'test' extra: pip install -e '.[test]')") from e
    return helm_python


def header(name: str) -> str:
    return ("# Rendered chart, checked by tests/test_chart.py and `make chart`. Regenerate with\n"
            "# `make chart-examples` (the Helm v4 SDK; same as\n"
            f"#   helm template {RELEASE} charts/parsl-flux --namespace {NAMESPACE} "
            f"-f charts/parsl-flux/examples/{name}.values.yaml)\n")


def example_names() -> List[str]:
    return sorted(p.name[: -len(".values.yaml")] for p in EXAMPLES.glob("*.values.yaml"))


def example_values(name: str) -> Dict[str, Any]:
    """An example's values file, parsed by Helm's own YAML reader (as ``-f``)."""
    return sdk().values_from_yaml((EXAMPLES / f"{name}.values.yaml").read_text())


def load_docs(text: str) -> List[Dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def merged_values(values: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The chart's defaults coalesced with ``values``, as an install computes them."""
    helm = sdk()
    with helm.Chart.load(str(CHART)) as chart:
        return chart.merge_values(values or {})


def render(values: Optional[Dict[str, Any]] = None, release: str = RELEASE, namespace: str = NAMESPACE,
           chart: Path = CHART) -> str:
    """``helm template RELEASE CHART --namespace NAMESPACE`` with ``values``:
    the manifest of a client-side dry-run install (in-memory release storage,
    no cluster). Raises the SDK's HelmValuesError (schema) or HelmReleaseError
    (a template's ``fail``/``required``) with Helm's message."""
    helm = sdk()
    with helm.Config(namespace=namespace, storage_driver="memory") as cfg:
        release_info = cfg.install(str(chart), release, values or {}, namespace=namespace, dry_run="client")
    return release_info["manifest"]


def render_example(name: str, chart: Path = CHART) -> str:
    """examples/NAME.yaml as it should be: the header and helm's output, which
    ends in a blank line that yamllint would refuse."""
    return header(name) + render(example_values(name), chart=chart).rstrip("\n") + "\n"


def lint(values: Optional[Dict[str, Any]] = None) -> List[str]:
    """``helm lint --strict`` problems (warnings and errors) for ``values``."""
    report = sdk().lint(str(CHART), values, strict=True, namespace=NAMESPACE)
    problems = [f"{m['path']}: {m['error'].strip()}" for m in report["messages"] if m["severity"] >= LINT_WARNING]
    return problems or [e.strip() for e in report["errors"]]


def package(destination: Path) -> Path:
    """``helm package`` the chart into ``destination``; returns the archive."""
    destination.mkdir(parents=True, exist_ok=True)
    return Path(sdk().package(str(CHART), destination=str(destination)))


def normalize(docs: List[Dict[str, Any]]) -> Dict[Tuple[str, str], Dict[str, Any]]:
    """Objects by (kind, name)."""
    return {(d["kind"], d["metadata"]["name"]): copy.deepcopy(d) for d in docs}


def diff(rendered: str, committed: str, label: str = "") -> str:
    """'' when both hold the same objects, else a unified diff of them (for
    output of another helm, whose comments or layout may differ)."""
    a, b = normalize(load_docs(committed)), normalize(load_docs(rendered))
    if a == b:
        return ""

    def dump(objs: dict) -> list:
        return yaml.safe_dump_all([objs[k] for k in sorted(objs)], sort_keys=True).splitlines(True)

    return "".join(difflib.unified_diff(dump(a), dump(b), f"committed {label}", f"helm template {label}"))


def text_diff(rendered: str, committed: str, label: str) -> str:
    """'' when the texts are equal, else their unified diff."""
    return "".join(difflib.unified_diff(committed.splitlines(True), rendered.splitlines(True),
                                        f"committed {label}", f"helm template {label}"))


# ------------------------------------------------------------------ schemas
def strict(schema: Any) -> Any:
    """The CRD's openAPIV3Schema as JSON Schema that, like `kubectl apply
    --validate=strict`, rejects unknown fields (the API server would silently
    prune them), and, like the API server, integers outside their int32 or
    int64 format. x-kubernetes-int-or-string fields already carry anyOf."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if (out.get("type") == "object" and "properties" in out and "additionalProperties" not in out
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    bits = {"int32": 31, "int64": 63}.get(schema.get("format", ""))
    if out.get("type") == "integer" and bits:
        out.setdefault("minimum", -(1 << bits))
        out.setdefault("maximum", (1 << bits) - 1)
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
def _lint_all() -> int:
    failed = 0
    for label, values in [("<defaults>", None)] + [(f"examples/{n}.values.yaml", example_values(n))
                                                   for n in example_names()]:
        problems = lint(values)
        failed += bool(problems)
        print(f"helm lint --strict {label}: " + ("; ".join(problems) if problems else "ok"))
    return 1 if failed else 0


def _check(regenerate: bool) -> int:
    stale = 0
    for name in example_names():
        rendered = render_example(name)
        target = EXAMPLES / f"{name}.yaml"
        if regenerate:
            target.write_text(rendered)
            print(f"wrote {target.relative_to(REPO)}")
            continue
        d = text_diff(rendered, target.read_text() if target.exists() else "", name)
        if d:
            stale += 1
            print(f"{target.relative_to(REPO)} differs from helm template output "
                  f"(run `make chart-examples`):\n{d}")
        else:
            print(f"{target.relative_to(REPO)}: same as helm template")
    return 1 if stale else 0


def _package(destination: Path) -> int:
    archive = package(destination)
    helm = sdk()
    with helm.Chart.load(str(archive)) as chart:
        packaged = sorted(f["name"] for f in chart.files)
    leaked = [f for f in packaged if f.startswith("examples/")]
    if leaked:
        print(f"{archive}: .helmignore let test files into the package: {leaked}")
        return 1
    name = example_names()[0]
    d = text_diff(render_example(name, chart=archive), (EXAMPLES / f"{name}.yaml").read_text(),
                  f"{name} (from {archive.name})")
    if d:
        print(f"{archive}: renders differently from the chart directory:\n{d}")
        return 1
    print(f"packaged {archive} (files: {', '.join(packaged)}); it renders examples/{name}.yaml")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("lint", "check", "regenerate"):
        sub.add_parser(name)
    pk = sub.add_parser("package")
    pk.add_argument("destination", type=Path)
    v = sub.add_parser("validate")
    v.add_argument("files", nargs="+")
    c = sub.add_parser("compare")
    c.add_argument("rendered", type=Path)
    c.add_argument("name", choices=example_names())
    args = p.parse_args(argv)

    if args.cmd == "validate":
        problems = [f"{f}: {m}" for f in args.files for m in validate_objects(load_docs(Path(f).read_text()))]
        print("\n".join(problems) or f"ok: {len(args.files)} file(s) valid")
        return 1 if problems else 0
    if args.cmd == "compare":
        d = diff(args.rendered.read_text(), (EXAMPLES / f"{args.name}.yaml").read_text(), args.name)
        print(d or f"{args.rendered}: same objects as examples/{args.name}.yaml")
        return 1 if d else 0
    try:
        if args.cmd == "lint":
            return _lint_all()
        if args.cmd == "package":
            return _package(args.destination)
        return _check(regenerate=args.cmd == "regenerate")
    except HelmUnavailable as e:
        print(f"chart_examples.py {args.cmd}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
