"""The Helm chart charts/parsl-flux (issue 6), checked without helm.

helm is not installable on every machine these tests run on, so they check the
chart's values schema, its static files, and the committed rendered examples
(charts/parsl-flux/examples/NAME.yaml for NAME.values.yaml): against the Flux
Operator's MiniCluster CRD (../shared/schemas/), against the Kubernetes schemas
(kubernetes-validate), and against the values they were rendered from. The
GitHub workflow (.github/workflows/chart.yml) proves the examples equal real
`helm template` output; here that comparison runs only when helm is on PATH.
"""

from __future__ import annotations

import base64
import copy
import inspect
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chart_examples as ce  # noqa: E402

CHART = ce.CHART
NAMES = ce.example_names()
WORKFLOW = ce.REPO / ".github" / "workflows" / "chart.yml"


def schema():
    return json.loads((CHART / "values.schema.json").read_text())


def defaults():
    return yaml.safe_load((CHART / "values.yaml").read_text())


def schema_errors(values):
    """Schema errors as 'dotted.path: message', as a user would want them."""
    validator = jsonschema.Draft7Validator(schema())
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(values))


def rendered(name):
    return ce.load_docs((ce.EXAMPLES / f"{name}.yaml").read_text())


def objects(name):
    return {(d["kind"], d["metadata"]["name"]): d for d in rendered(name)}


def by_kind(name, kind):
    return [d for d in rendered(name) if d["kind"] == kind]


def fullname(values):
    name = values.get("nameOverride") or "parsl-flux"
    if values.get("fullnameOverride"):
        return values["fullnameOverride"][:50].rstrip("-")
    return (ce.RELEASE if name in ce.RELEASE else f"{ce.RELEASE}-{name}")[:50].rstrip("-")


# ------------------------------------------------------------------ chart files
def test_chart_metadata():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "parsl-flux" == CHART.name
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    import parsl_flux
    assert chart["appVersion"] == parsl_flux.__version__, "appVersion is the default image tag: keep it the package's"
    for f in ("values.yaml", "values.schema.json", "README.md", ".helmignore", "templates/NOTES.txt",
              "templates/_helpers.tpl"):
        assert (CHART / f).is_file(), f


def test_helpers_follow_helm_conventions():
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    for name in ("name", "fullname", "chart", "labels", "selectorLabels"):
        assert f'define "parsl-flux.{name}"' in helpers
    for label in ("helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance",
                  "app.kubernetes.io/version", "app.kubernetes.io/managed-by"):
        assert label in helpers
    for tpl in sorted((CHART / "templates").glob("*.yaml")):
        text = tpl.read_text()
        assert 'include "parsl-flux.labels"' in text, f"{tpl.name} lacks the common labels"
        assert text.count("{{") == text.count("}}"), f"{tpl.name}: unbalanced template braces"


def test_every_values_example_has_a_rendered_example():
    assert {"default", "gpu-multinode"} <= set(NAMES)
    rendered_files = {p.name[:-5] for p in ce.EXAMPLES.glob("*.yaml") if not p.name.endswith(".values.yaml")}
    assert rendered_files == set(NAMES)
    assert yaml.safe_load((ce.EXAMPLES / "default.values.yaml").read_text()) in (None, {}), \
        "the default example must render the chart's defaults"


# ------------------------------------------------------------------ values schema
def test_schema_is_valid_draft7():
    jsonschema.Draft7Validator.check_schema(schema())


@pytest.mark.parametrize("name", ["<values.yaml>"] + NAMES)
def test_values_validate(name):
    values = defaults() if name == "<values.yaml>" else ce.values_for(name)
    assert schema_errors(values) == []


def test_check_jsonschema_accepts_values_yaml():
    out = subprocess.run([sys.executable, "-m", "check_jsonschema", "--schemafile", str(CHART / "values.schema.json"),
                          str(CHART / "values.yaml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _set(values, path, value):
    *parents, last = path.split(".")
    node = values
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()

BAD_VALUES = [
    ("minicluster.size", -1, "minicluster.size: -1 is less than the minimum of 1"),
    ("minicluster.size", 0, "minicluster.size: 0 is less than the minimum of 1"),
    ("image", _DELETE, "<root>: 'image' is a required property"),
    ("image.repository", _DELETE, "image: 'repository' is a required property"),
    ("image.repository", "", "image.repository: '' should be non-empty"),
    ("minicluster.maxSize", -2, "minicluster.maxSize: -2 is less than the minimum of 0"),
    ("minicluster.resources.gpus", -1, "minicluster.resources.gpus: -1 is less than the minimum of 0"),
    ("minicluster.resources.memory", "lots", "minicluster.resources.memory: 'lots' is not valid"),
    ("minicluster.szie", 2, "minicluster: Additional properties are not allowed ('szie' was unexpected)"),
    ("driver.port", 70000, "driver.port: 70000 is greater than the maximum of 65535"),
    ("driver.host", "tcp://driver:1", "driver.host: 'tcp://driver:1' does not match"),
    ("manager.python", "python 3", "manager.python: 'python 3' does not match"),
    ("manager.workdir", "relative/dir", "manager.workdir: 'relative/dir' does not match"),
    ("manager.blockId", "a", "manager.blockId: 'a' is not valid"),
    ("secret.value", "not-hex", "secret.value: 'not-hex' does not match"),
    ("secret.value", "abcd", "secret.value: 'abcd' does not match"),
]


@pytest.mark.parametrize("path,value,message", BAD_VALUES, ids=[f"{p}={v!r}" for p, v, _ in BAD_VALUES])
def test_bad_values_are_rejected_with_a_clear_message(path, value, message):
    values = defaults()
    _set(values, path, value)
    errors = schema_errors(values)
    assert any(e.startswith(message) for e in errors), errors


def test_check_jsonschema_rejects_negative_size(tmp_path):
    values = defaults()
    values["minicluster"]["size"] = -1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(values))
    out = subprocess.run([sys.executable, "-m", "check_jsonschema", "--schemafile", str(CHART / "values.schema.json"),
                          str(bad)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "-1 is less than the minimum of 1" in out.stdout + out.stderr


# ------------------------------------------------------------------ rendered examples vs. schemas
def test_crd_is_present():
    if not ce.CRD.is_file():
        pytest.skip(f"MiniCluster CRD not found at {ce.CRD} (the shared/ folder beside the repo)")
    crd = yaml.safe_load(ce.CRD.read_text())
    assert crd["spec"]["group"] == "flux-framework.org" and crd["spec"]["names"]["kind"] == "MiniCluster"


@pytest.mark.parametrize("name", NAMES)
def test_rendered_minicluster_matches_crd(name):
    if not ce.CRD.is_file():
        pytest.skip(f"MiniCluster CRD not found at {ce.CRD} (the shared/ folder beside the repo)")
    miniclusters = by_kind(name, "MiniCluster")
    assert len(miniclusters) == 1
    assert ce.validate_objects(miniclusters) == []


def test_strict_crd_schema_catches_unknown_and_wrong_fields():
    """The CRD lets unknown fields through (the API server prunes them); the
    check must not, or a misspelt field would silently do nothing."""
    if not ce.CRD.is_file():
        pytest.skip(f"MiniCluster CRD not found at {ce.CRD} (the shared/ folder beside the repo)")
    mc = copy.deepcopy(by_kind("default", "MiniCluster")[0])
    mc["spec"]["containers"][0]["comand"] = "true"
    mc["spec"]["size"] = "two"
    problems = ce.validate_objects([mc])
    assert any("'comand' was unexpected" in p for p in problems), problems
    assert any("spec.size: 'two' is not of type 'integer'" in p for p in problems), problems


@pytest.mark.parametrize("name", NAMES)
def test_rendered_kubernetes_objects_validate(name):
    others = [d for d in rendered(name) if d["kind"] != "MiniCluster"]
    assert ce.validate_objects(others) == []  # none at all for an external driver and an existing Secret


def test_kubernetes_validation_catches_errors():
    svc = copy.deepcopy(by_kind("default", "Service")[0])
    svc["spec"]["ports"][0]["port"] = "abc"
    assert any("port" in p for p in ce.validate_objects([svc]))


# ------------------------------------------------------------------ rendered examples vs. values
@pytest.mark.parametrize("name", NAMES)
def test_rendered_example_follows_its_values(name):
    """A stale example (values or templates changed, example not re-rendered)
    fails here even without helm."""
    v = ce.values_for(name)
    full = fullname(v)
    objs = objects(name)
    image = f"{v['image']['repository']}:{v['image']['tag'] or yaml.safe_load((CHART / 'Chart.yaml').read_text())['appVersion']}"

    for (kind, obj_name), obj in objs.items():
        assert obj_name.startswith(full), obj_name
        assert obj["metadata"]["namespace"] == ce.NAMESPACE
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "parsl-flux"
        assert labels["app.kubernetes.io/instance"] == ce.RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"].startswith("parsl-flux-")

    mc = objs[("MiniCluster", full)]
    spec = mc["spec"]
    m = v["minicluster"]
    assert spec["size"] == m["size"]
    assert spec.get("maxSize", 0) == m["maxSize"]
    assert spec["tasks"] == (m["tasks"] or m["size"])
    assert spec["interactive"] == m["interactive"]
    assert spec["flux"]["container"]["disable"] is (not m["addFlux"])
    assert spec["pod"].get("nodeSelector", {}) == m["nodeSelector"]
    assert spec["pod"].get("tolerations", []) == m["tolerations"]
    (container,) = spec["containers"]
    assert container["image"] == image
    assert container["launcher"] is True and container["runFlux"] is True
    assert container.get("volumes", {}) == m["volumes"]
    assert container.get("environment", {}) == {k: str(x) for k, x in m["environment"].items()}

    r = m["resources"]
    limits = container.get("resources", {}).get("limits", {})
    requests = container.get("resources", {}).get("requests", {})
    assert limits.get(r["gpuResourceName"], 0) == r["gpus"]
    for key in ("cpu", "memory"):
        assert limits.get(key, "") == requests.get(key, "") == str(r[key] or "")

    secret_name = v["secret"]["existingSecret"] or f"{full}-secret"
    assert container["secrets"] == {"PARSL_FLUX_SECRET": {"name": secret_name, "key": v["secret"]["key"]}}
    secrets = {n: o for (k, n), o in objs.items() if k == "Secret"}
    if v["secret"]["existingSecret"]:
        assert secrets == {}
    else:
        hex_value = base64.b64decode(secrets[secret_name]["data"][v["secret"]["key"]]).decode()
        assert re.fullmatch(r"([0-9a-f]{2}){16,}", hex_value)
        if v["secret"]["value"]:
            assert hex_value == v["secret"]["value"]

    # The driver endpoint: which side listens is the driver; the manager dials it.
    host = v["driver"]["host"] or f"{full}-driver.{ce.NAMESPACE}.svc"
    url = f"tcp://{host}:{v['driver']['port']}"
    words = shlex.split(container["command"])
    assert words[:5] == ["flux", "env", v["manager"]["python"], "-m", "parsl_flux.manager"]
    args = _manager_args(words[5:])
    assert args.url == url
    assert args.block_id == str(v["manager"]["blockId"])
    assert args.workdir == v["manager"]["workdir"]
    assert args.driver_timeout == float(v["manager"]["driverTimeout"])
    assert args.runner_host == f"{full}-0.{spec['network']['headlessName']}.{ce.NAMESPACE}.svc"

    services = [o for (k, _), o in objs.items() if k == "Service"]
    if v["driver"]["host"]:
        assert services == []
    else:
        (svc,) = services
        assert svc["metadata"]["name"] == f"{full}-driver"
        assert [p["port"] for p in svc["spec"]["ports"]] == [v["driver"]["port"]]
        assert svc["spec"]["selector"]["app.kubernetes.io/component"] == "driver"

    jobs = [o for (k, _), o in objs.items() if k == "Job"]
    configmaps = [o for (k, _), o in objs.items() if k == "ConfigMap"]
    if not v["driver"]["job"]["enabled"]:
        assert jobs == [] and configmaps == []
    else:
        (job,) = jobs
        pod = job["spec"]["template"]
        assert all(pod["metadata"]["labels"][k] == x for k, x in svc["spec"]["selector"].items()), \
            "the driver Service must select the driver Job's pod"
        (c,) = pod["spec"]["containers"]
        assert c["image"] == image
        env = {e["name"]: e for e in c["env"]}
        assert env["PARSL_FLUX_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": secret_name, "key": v["secret"]["key"]}
        assert env["PARSL_FLUX_PORT"]["value"] == str(v["driver"]["port"])
        assert [p["containerPort"] for p in c["ports"]] == [v["driver"]["port"]]
        if not v["driver"]["job"]["existingConfigMap"]:
            (cm,) = configmaps
            assert cm["data"]["workflow.py"] == v["driver"]["job"]["script"]
            assert pod["spec"]["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]


def _manager_args(argv):
    """The manager's own argument parser accepts the rendered command line."""
    from parsl_flux import manager

    return manager.parse_args(argv)


def test_sample_workflow_script_uses_the_executor_api():
    """The driver Job's default script compiles and calls FluxExecutor and
    ExternalProvider with parameters they have."""
    script = defaults()["driver"]["job"]["script"]
    compile(script, "workflow.py", "exec")
    from parsl_flux.executor import FluxExecutor
    from parsl_flux.providers.external import ExternalProvider

    params = inspect.signature(FluxExecutor).parameters
    for p in ("provider", "port", "secret", "label"):
        assert p in params, p
    assert {"init_blocks", "min_blocks", "max_blocks"} <= set(inspect.signature(ExternalProvider).parameters)
    assert "PARSL_FLUX_PORT" in script and "PARSL_FLUX_SECRET" in script


# ------------------------------------------------------------------ helm itself, where present
@pytest.mark.skipif(shutil.which("helm") is None, reason="helm not on PATH: the GitHub workflow compares the "
                    "committed examples with helm template output")
@pytest.mark.parametrize("name", NAMES)
def test_examples_equal_helm_template(name):
    assert ce.diff(ce.helm_template(name), (ce.EXAMPLES / f"{name}.yaml").read_text(), name) == ""


def test_diff_ignores_only_the_generated_secret():
    text = (ce.EXAMPLES / "default.yaml").read_text()
    docs = ce.load_docs(text)
    for d in docs:
        if d["kind"] == "Secret":
            d["data"] = {k: base64.b64encode(b"00" * 32).decode() for k in d["data"]}
    assert ce.diff(yaml.safe_dump_all(docs), text) == ""
    for d in docs:
        if d["kind"] == "MiniCluster":
            d["spec"]["size"] = 3
    assert "size: 3" in ce.diff(yaml.safe_dump_all(docs), text)


# ------------------------------------------------------------------ lint and CI
def test_yamllint_static_files():
    files = [CHART / "Chart.yaml", CHART / "values.yaml", *sorted(ce.EXAMPLES.glob("*.yaml"))]
    if WORKFLOW.is_file():
        files.append(WORKFLOW)
    out = subprocess.run([sys.executable, "-m", "yamllint", "--strict", "-c", str(CHART / ".yamllint"),
                          *map(str, files)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_workflow_runs_pinned_helm_checks():
    wf = yaml.safe_load(WORKFLOW.read_text())
    steps = [s for job in wf["jobs"].values() for s in job["steps"]]
    uses = [s["uses"] for s in steps if "uses" in s]
    assert any(u.startswith("azure/setup-helm@") for u in uses)
    for u in uses:
        ref = u.split("@", 1)[1]
        assert re.fullmatch(r"[0-9a-f]{40}|v\d+\.\d+\.\d+", ref), f"{u} is not pinned to a release or commit"
    helm_version = next(s["with"]["version"] for s in steps if s.get("uses", "").startswith("azure/setup-helm@"))
    assert re.fullmatch(r"v\d+\.\d+\.\d+", helm_version)
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "helm lint" in runs
    assert "chart_examples.py check" in runs       # helm template == committed examples
    assert "chart_examples.py validate" in runs    # helm output vs. Kubernetes + MiniCluster schemas
    assert "tests/test_chart.py" in runs
