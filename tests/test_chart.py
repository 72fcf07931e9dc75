"""The Helm chart charts/parsl-flux (issue 6), with a real Helm engine.

Helm runs through helm-python-sdk (Helm v4.2.3 as a library, see
tests/chart_examples.py), so nothing here needs a helm binary and nothing
skips for want of one: without the SDK these tests fail and say
`pip install helm-python-sdk==0.2.2`. They check the chart's values schema
(Helm's own validator and jsonschema), `helm lint --strict`, `helm package`,
that the committed rendered examples (charts/parsl-flux/examples/NAME.yaml for
NAME.values.yaml) equal `helm template` output, and those examples against
the Flux Operator's MiniCluster CRD (../shared/schemas/), the Kubernetes
schemas (kubernetes-validate), the values they came from, and what the
operator does with them (interactive mode, its start-up script's user).
"""

from __future__ import annotations

import base64
import copy
import inspect
import json
import re
import shlex
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
# The bundle image's user (containers/Dockerfile: useradd --uid 10001, USER 10001).
IMAGE_UID = 10001
EXAMPLE_SECRET = "0123456789abcdef" * 4
NO_SDK_HINT = "pip install helm-python-sdk==0.2.2"


def schema():
    return json.loads((CHART / "values.schema.json").read_text())


def defaults():
    return yaml.safe_load((CHART / "values.yaml").read_text())


def schema_errors(values):
    """Schema errors as 'dotted.path: message', as a user would want them."""
    validator = jsonschema.Draft7Validator(schema())
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(values))


def values_for(name):
    """An example's values coalesced onto the chart's defaults, by Helm."""
    return ce.merged_values(ce.example_values(name))


def with_secret(**overrides):
    """User values: a master secret (the chart requires one) plus ``overrides``."""
    values = {"secret": {"value": EXAMPLE_SECRET}}
    values.update(overrides)
    return values


def render_docs(values, release=ce.RELEASE):
    """Objects of `helm template` with ``values`` (user values, not merged)."""
    return ce.load_docs(ce.render(values, release=release))


def render_error(values, release=ce.RELEASE):
    """Helm's message for values it refuses (schema or template); fails if it renders."""
    helm = ce.sdk()
    with pytest.raises(helm.HelmError) as info:
        ce.render(values, release=release)
    return str(info.value)


def kind_of(docs, kind):
    (obj,) = [d for d in docs if d["kind"] == kind]
    return obj


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
    assert set(yaml.safe_load((ce.EXAMPLES / "default.values.yaml").read_text())) == {"secret"}, \
        "the default example must render the chart's defaults, plus the master secret it requires"


# ------------------------------------------------------------------ values schema
def test_schema_is_valid_draft7():
    jsonschema.Draft7Validator.check_schema(schema())


@pytest.mark.parametrize("name", ["<values.yaml>"] + NAMES)
def test_values_validate(name):
    values = defaults() if name == "<values.yaml>" else values_for(name)
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
    # the CRD's size, maxSize and tasks are int32: the API server would refuse larger ones
    ("minicluster.size", 3000000000, "minicluster.size: 3000000000 is greater than the maximum of 2147483647"),
    ("minicluster.maxSize", 2 ** 31, "minicluster.maxSize: 2147483648 is greater than the maximum of 2147483647"),
    ("minicluster.tasks", 2 ** 31, "minicluster.tasks: 2147483648 is greater than the maximum of 2147483647"),
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
    ("nameOverride", "My_Name", "nameOverride: 'My_Name' does not match"),
    ("fullnameOverride", "a.b", "fullnameOverride: 'a.b' does not match"),
    ("fullnameOverride", "9lives", "fullnameOverride: '9lives' does not match"),
    ("minicluster.interactive", True, "minicluster.interactive: False was expected"),
    ("minicluster.podSecurityContext", {"runAsUser": 0},
     "minicluster.podSecurityContext: Additional properties are not allowed ('runAsUser' was unexpected)"),
    ("minicluster.securityContext", {"runAsUser": "root"}, "minicluster.securityContext.runAsUser: 'root' is not of type"),
    ("driver.job.resources", {"cpu": 1}, "driver.job.resources: Additional properties are not allowed ('cpu'"),
    ("driver.job.resources", {"requests": {"cpu": "lots"}}, "driver.job.resources.requests.cpu: 'lots' is not valid"),
    ("driver.job.activeDeadlineSeconds", 0, "driver.job.activeDeadlineSeconds: 0 is less than the minimum of 1"),
    ("driver.job.securityContext", {"privileged": "yes"}, "driver.job.securityContext.privileged: 'yes' is not of type"),
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
CRD_MISSING = (f"MiniCluster CRD not found at {ce.CRD}: these checks need the shared/ folder beside the "
               "repository (.github/workflows/chart.yml downloads the CRD there)")


def test_crd_is_present():
    if not ce.CRD.is_file():
        pytest.skip(CRD_MISSING)
    crd = yaml.safe_load(ce.CRD.read_text())
    assert crd["spec"]["group"] == "flux-framework.org" and crd["spec"]["names"]["kind"] == "MiniCluster"


@pytest.mark.parametrize("name", NAMES)
def test_rendered_minicluster_matches_crd(name):
    if not ce.CRD.is_file():
        pytest.skip(CRD_MISSING)
    miniclusters = by_kind(name, "MiniCluster")
    assert len(miniclusters) == 1
    assert ce.validate_objects(miniclusters) == []


def test_strict_crd_schema_catches_unknown_and_wrong_fields():
    """The CRD lets unknown fields through (the API server prunes them); the
    check must not, or a misspelt field would silently do nothing."""
    if not ce.CRD.is_file():
        pytest.skip(CRD_MISSING)
    mc = copy.deepcopy(by_kind("default", "MiniCluster")[0])
    mc["spec"]["containers"][0]["comand"] = "true"
    mc["spec"]["size"] = "two"
    problems = ce.validate_objects([mc])
    assert any("'comand' was unexpected" in p for p in problems), problems
    assert any("spec.size: 'two' is not of type 'integer'" in p for p in problems), problems
    mc["spec"]["size"] = 3000000000  # format int32: the API server refuses it
    problems = ce.validate_objects([mc])
    assert any("spec.size: 3000000000 is greater than the maximum of 2147483647" in p for p in problems), problems


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
    """Each example's objects do what the values (merged by Helm) say: the
    templates read every value where they should."""
    v = values_for(name)
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
    assert spec["interactive"] is False, "interactive mode never runs the manager"
    assert spec["flux"]["container"]["disable"] is (not m["addFlux"])
    assert spec["pod"].get("nodeSelector", {}) == m["nodeSelector"]
    assert spec["pod"].get("tolerations", []) == m["tolerations"]
    (container,) = spec["containers"]
    assert container["image"] == image
    assert container["launcher"] is True and container["runFlux"] is True
    assert container.get("volumes", {}) == m["volumes"]
    assert container.get("environment", {}) == {k: str(x) for k, x in m["environment"].items()}
    assert container.get("securityContext", {}) == m["securityContext"]
    assert spec["flux"]["container"].get("securityContext", {}) == m["fluxViewSecurityContext"]
    assert spec["pod"].get("securityContext", {}) == m["podSecurityContext"]

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
        assert base64.b64decode(secrets[secret_name]["data"][v["secret"]["key"]]).decode() == v["secret"]["value"]

    # The driver endpoint: which side listens is the driver; the manager dials it.
    host = v["driver"]["host"] or f"{full}-driver.{ce.NAMESPACE}.svc"
    url = f"tcp://{host}:{v['driver']['port']}"
    words = shlex.split(container["command"])
    assert words[:5] == ["flux", "env", v["manager"]["python"], "-m", "parsl_flux.allocation.manager"]
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
        assert env["PARSL_FLUX_BLOCK_ID"]["value"] == str(v["manager"]["blockId"])
        assert job["spec"]["activeDeadlineSeconds"] == v["driver"]["job"]["activeDeadlineSeconds"]
        assert c.get("resources", {}) == v["driver"]["job"]["resources"]
        assert c.get("securityContext", {}) == v["driver"]["job"]["securityContext"]
        assert pod["spec"].get("securityContext", {}) == v["driver"]["job"]["podSecurityContext"]
        if not v["driver"]["job"]["existingConfigMap"]:
            (cm,) = configmaps
            assert cm["data"]["workflow.py"] == v["driver"]["job"]["script"]
            assert pod["spec"]["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]


def _manager_args(argv):
    """The manager's own argument parser accepts the rendered command line."""
    from parsl_flux.allocation import manager

    return manager.parse_args(argv)


def test_sample_workflow_script_uses_the_executor_api():
    """The driver Job's default script compiles and calls FluxExecutor and
    ExternalProvider with parameters they have."""
    script = defaults()["driver"]["job"]["script"]
    compile(script, "workflow.py", "exec")
    from parsl_flux.driver.executor import FluxExecutor
    from parsl_flux.providers.external import ExternalProvider

    params = inspect.signature(FluxExecutor).parameters
    for p in ("provider", "port", "secret", "label"):
        assert p in params, p
    assert {"init_blocks", "min_blocks", "max_blocks"} <= set(inspect.signature(ExternalProvider).parameters)
    assert "PARSL_FLUX_PORT" in script and "PARSL_FLUX_SECRET" in script


# ------------------------------------------------------------------ helm (the SDK's engine)
@pytest.mark.parametrize("name", NAMES)
def test_examples_equal_helm_template(name):
    """The committed examples are exactly what Helm renders now."""
    committed = (ce.EXAMPLES / f"{name}.yaml").read_text()
    assert ce.text_diff(ce.render_example(name), committed, name) == "", "run `make chart-examples`"


def test_missing_sdk_fails_with_the_install_command(monkeypatch):
    """Without the SDK the helm tests fail (an error, not a skip) and say how to install it."""
    monkeypatch.setitem(sys.modules, "helm_python", None)
    with pytest.raises(ce.HelmUnavailable, match=re.escape(NO_SDK_HINT)) as info:
        ce.render_example(NAMES[0])
    assert not isinstance(info.value, pytest.skip.Exception)
    out = subprocess.run([sys.executable, "-c", "import sys; sys.modules['helm_python'] = None; "
                          f"sys.path.insert(0, {str(Path(__file__).parent)!r}); import chart_examples as ce; "
                          "sys.exit(ce.main(['check']))"], capture_output=True, text=True)
    assert out.returncode == 2 and NO_SDK_HINT in out.stderr, out.stdout + out.stderr


def test_sdk_is_the_pinned_helm():
    helm = ce.sdk()
    assert helm.__version__ == "0.2.2" and helm.helm_sdk_version() == "v4.2.3"


@pytest.mark.parametrize("name", ["<defaults>"] + NAMES)
def test_helm_lint_strict(name):
    values = None if name == "<defaults>" else ce.example_values(name)
    assert ce.lint(values) == []


def test_helm_lint_reports_bad_values():
    assert any("/minicluster/size" in p for p in ce.lint({"minicluster": {"size": -1}}))


def test_helm_package(tmp_path):
    """The packaged chart leaves the examples out (.helmignore) and renders like the directory."""
    archive = ce.package(tmp_path)
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert archive.name == f"parsl-flux-{version}.tgz" and archive.is_file()
    helm = ce.sdk()
    with helm.Chart.load(str(archive)) as chart:
        assert chart.name == "parsl-flux" and chart.schema == schema()
        assert not [f["name"] for f in chart.files if f["name"].startswith("examples/")]
    values = ce.example_values("driver-job")
    assert ce.render(values, chart=archive) == ce.render(values)
    assert ce.main(["package", str(tmp_path / "cli")]) == 0


def test_compare_finds_changed_objects_only():
    """`compare` (another helm's output vs. an example) ignores layout, not content."""
    text = (ce.EXAMPLES / "default.yaml").read_text()
    docs = ce.load_docs(text)
    assert ce.diff(yaml.safe_dump_all(docs), text) == ""
    for d in docs:
        if d["kind"] == "MiniCluster":
            d["spec"]["size"] = 3
    assert "size: 3" in ce.diff(yaml.safe_dump_all(docs), text)


def test_helm_rejects_bad_values_naming_the_key():
    """Helm's own schema validation (what `helm install` runs), not only jsonschema's."""
    assert "at '/minicluster/size': minimum: got -1, want 1" in render_error(with_secret(minicluster={"size": -1}))
    assert "at '/minicluster/size': maximum: got 3×10⁰⁹, want 2.147483647×10⁰⁹" in \
        render_error(with_secret(minicluster={"size": 3000000000}))
    assert "at '/nameOverride': 'My_Name' does not match pattern" in render_error(with_secret(nameOverride="My_Name"))
    assert "at '/driver/job/resources': additional properties 'cpu' not allowed" in \
        render_error(with_secret(driver={"job": {"resources": {"cpu": 1}}}))


# ------------------------------------------------------------------ the Flux Operator's semantics
def test_interactive_mode_is_rejected():
    """The operator adds -Sbroker.rc2_none in interactive mode: the broker never
    runs its initial program, so the manager would never start."""
    assert "at '/minicluster/interactive': value must be false" in \
        render_error(with_secret(minicluster={"interactive": True}))
    assert "interactive" not in defaults()["minicluster"]
    assert kind_of(render_docs(with_secret()), "MiniCluster")["spec"]["interactive"] is False


def test_security_context_defaults_fit_the_operator_and_the_image():
    """The operator's start-up script creates the curve certificate, R and the
    state/run directories under /mnt/flux/config (made by the view init
    container) as the broker container's user; the image is uid 10001 without
    sudo. So both containers run as 10001 and volumes get fsGroup 10001."""
    dockerfile = (ce.REPO / "containers" / "Dockerfile").read_text()
    assert f"--uid {IMAGE_UID}" in dockerfile and f"USER {IMAGE_UID}" in dockerfile
    spec = kind_of(render_docs(with_secret()), "MiniCluster")["spec"]
    (container,) = spec["containers"]
    assert container["securityContext"]["runAsUser"] == IMAGE_UID
    assert container["securityContext"]["runAsNonRoot"] is True
    assert spec["flux"]["container"]["securityContext"]["runAsUser"] == IMAGE_UID
    assert spec["pod"]["securityContext"] == {"fsGroup": IMAGE_UID}


def test_security_context_is_settable():
    """An image that runs as root: the broker as uid 0, the view image's own user."""
    docs = render_docs(with_secret(minicluster={
        "securityContext": {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": None, "allowPrivilegeEscalation": None},
        "fluxViewSecurityContext": None,
        "podSecurityContext": {"fsGroup": 2000}}, driver={"job": {
            "enabled": True, "securityContext": {"runAsUser": 2000, "runAsNonRoot": True},
            "podSecurityContext": {"fsGroup": 2000}}}))
    spec = kind_of(docs, "MiniCluster")["spec"]
    assert spec["containers"][0]["securityContext"] == {"runAsUser": 0, "runAsGroup": 0}
    assert "securityContext" not in spec["flux"]["container"]
    assert spec["pod"]["securityContext"] == {"fsGroup": 2000}
    pod = kind_of(docs, "Job")["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"fsGroup": 2000}
    # Helm merges a values map into the default one: the defaults' other keys stay.
    assert pod["containers"][0]["securityContext"] == {
        **defaults()["driver"]["job"]["securityContext"], "runAsUser": 2000, "runAsNonRoot": True}
    assert ce.validate_objects([kind_of(docs, "Job")]) == []


def test_broker_user_must_own_what_the_view_creates():
    message = render_error(with_secret(minicluster={"securityContext": {"runAsUser": 1000}}))
    assert "minicluster.securityContext.runAsUser (1000) must be 0 or equal " \
           "minicluster.fluxViewSecurityContext.runAsUser (10001)" in message
    message = render_error(with_secret(minicluster={"securityContext": {"runAsUser": 1000},
                                                    "fluxViewSecurityContext": None}))
    assert "fluxViewSecurityContext.runAsUser (unset)" in message
    message = render_error(with_secret(minicluster={"securityContext": {"runAsUser": 0}}))
    assert "runAsUser is 0 (root) but runAsNonRoot is true" in message


@pytest.mark.parametrize("minicluster", [
    {"securityContext": {"runAsUser": None}, "fluxViewSecurityContext": {"runAsUser": 0}},
    {"securityContext": {"runAsUser": None}},
    {"securityContext": None, "fluxViewSecurityContext": None},
    {"securityContext": None},
], ids=["broker-unset-view-root", "broker-unset", "both-unset", "broker-context-unset"])
def test_a_broker_user_the_chart_cannot_check_is_refused(minicluster):
    """Unset, the broker runs as its image's user, which the chart cannot know
    (the bundle image's is 10001; a view init container as root then creates
    what the broker cannot write): it must be given, so the pairing is checked."""
    message = render_error(with_secret(minicluster=minicluster))
    assert "minicluster.securityContext.runAsUser is not set" in message


def test_names_the_api_server_would_reject_are_refused():
    assert "'My_Name' does not match pattern" in render_error(with_secret(nameOverride="My_Name"))
    assert "'a.b' does not match pattern" in render_error(with_secret(fullnameOverride="a.b"))
    message = render_error(with_secret(), release="9lives")
    assert 'the resource name prefix "9lives-parsl-flux" (release "9lives"' in message
    docs = render_docs(with_secret(nameOverride="flux-2"))
    assert kind_of(docs, "MiniCluster")["metadata"]["name"] == "demo-flux-2"


def test_driver_job_resources_are_checked():
    good = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": 1}}
    job = kind_of(render_docs(with_secret(driver={"job": {"enabled": True, "resources": good}})), "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"] == good
    assert "'lots' does not match pattern" in \
        render_error(with_secret(driver={"job": {"enabled": True, "resources": {"requests": {"cpu": "lots"}}}}))


def test_driver_job_has_a_deadline_by_default():
    job = kind_of(render_docs(with_secret(driver={"job": {"enabled": True}})), "Job")
    assert job["spec"]["activeDeadlineSeconds"] == defaults()["driver"]["job"]["activeDeadlineSeconds"] > 0
    assert "minimum: got 0, want 1" in render_error(with_secret(driver={"job": {"activeDeadlineSeconds": 0}}))


def test_sample_workflow_serves_the_configured_block(monkeypatch):
    """The sample script starts the block the manager serves (manager.blockId)."""
    import parsl

    class Loaded(Exception):
        pass

    def load(config):
        raise Loaded(config)

    monkeypatch.setattr(parsl, "load", load)
    monkeypatch.setenv("PARSL_FLUX_BLOCK_ID", "2")
    monkeypatch.setenv("PARSL_FLUX_PORT", "54321")
    monkeypatch.setenv("PARSL_FLUX_SECRET", EXAMPLE_SECRET)
    with pytest.raises(Loaded) as info:
        exec(compile(defaults()["driver"]["job"]["script"], "workflow.py", "exec"), {"__name__": "__main__"})
    (executor,) = info.value.args[0].executors
    provider = executor.provider
    # Parsl starts blocks "0".."init_blocks-1": block "2" must be among them and stay.
    assert provider.init_blocks == provider.min_blocks == provider.max_blocks == 3
    job = kind_of(render_docs(with_secret(manager={"blockId": "2"}, driver={"job": {"enabled": True}})), "Job")
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PARSL_FLUX_BLOCK_ID"] == "2"


def test_render_is_stable_and_needs_a_master_secret():
    """Same values, same output (GitOps): the chart never makes up a secret."""
    values = with_secret(driver={"job": {"enabled": True}})
    first = ce.render(values)
    assert ce.render(values) == first
    secret = kind_of(ce.load_docs(first), "Secret")
    assert base64.b64decode(secret["data"]["secret"]).decode() == EXAMPLE_SECRET
    message = render_error({})
    assert "secret.value or secret.existingSecret is required" in message
    assert "openssl rand -hex 32" in message and "secret.existingSecret=" in message
    both = {"secret": {"value": EXAMPLE_SECRET, "existingSecret": "mine"}}
    assert "set secret.existingSecret or secret.value, not both" in render_error(both)
    docs = render_docs({"secret": {"existingSecret": "mine"}})
    assert [d for d in docs if d["kind"] == "Secret"] == []
    assert kind_of(docs, "MiniCluster")["spec"]["containers"][0]["secrets"]["PARSL_FLUX_SECRET"]["name"] == "mine"


# ------------------------------------------------------------------ lint and CI
def test_yamllint_static_files():
    files = [CHART / "Chart.yaml", CHART / "values.yaml", *sorted(ce.EXAMPLES.glob("*.yaml"))]
    if WORKFLOW.is_file():
        files.append(WORKFLOW)
    out = subprocess.run([sys.executable, "-m", "yamllint", "--strict", "-c", str(CHART / ".yamllint"),
                          *map(str, files)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_workflow_runs_pinned_helm_checks():
    """CI runs the SDK checks and, as a second build of the same engine, the Helm CLI."""
    wf = yaml.safe_load(WORKFLOW.read_text())
    steps = [s for job in wf["jobs"].values() for s in job["steps"]]
    uses = [s["uses"] for s in steps if "uses" in s]
    assert any(u.startswith("azure/setup-helm@") for u in uses)
    for u in uses:
        ref = u.split("@", 1)[1]
        assert re.fullmatch(r"[0-9a-f]{40}|v\d+\.\d+\.\d+", ref), f"{u} is not pinned to a release or commit"
    helm_version = next(s["with"]["version"] for s in steps if s.get("uses", "").startswith("azure/setup-helm@"))
    assert helm_version == ce.sdk().helm_sdk_version(), "the CLI must be the SDK's Helm version"
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "pip install -e '.[test]'" in runs      # the test extra pins helm-python-sdk
    assert "helm lint --strict" in runs
    for command in ("lint", "check", "package", "compare", "validate"):
        assert f"chart_examples.py {command}" in runs, command
    assert "tests/test_chart.py" in runs


def test_make_chart_runs_helm_through_the_sdk():
    """`make chart` runs lint, the examples check and package without a helm binary."""
    mk = (ce.REPO / "mk" / "chart.mk").read_text()
    for command in ("lint", "check", "package", "validate"):
        assert f"tests/chart_examples.py {command}" in mk, command
    assert "command -v" not in mk and "skipped" not in mk
