"""The Helm chart (deploy/helm/xhuma), checked offline: rendered and linted by Helm's own Go SDK (helm-python-sdk),
every manifest validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict), and the rendered
objects checked against the application: probe paths are routes, every XHUMA_* name is a setting, no secret inline.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from pydantic import SecretStr

from xhuma.app import create_app
from xhuma.config import ENV_PREFIX, Settings, load_settings
from xhuma.replicas import replica_problem
from xhuma.security.startup import security_problems
from xhuma.store.crypto import new_key_text

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "xhuma"
PRODUCTION_VALUES = yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text())
# The lowest Kubernetes version the chart supports (Chart.yaml kubeVersion); manifests are validated against it.
KUBERNETES_VERSION = "1.27.0"
# Kinds that are custom resources, absent from the Kubernetes schemas; checked by the tests below instead.
CUSTOM_RESOURCES = {"ServiceMonitor"}

# Replicated, and nothing more than the schema requires.
MINIMAL_REPLICATED: dict[str, Any] = {
    "redis": {"url": "redis://redis.xhuma.svc:6379/0"},
    "database": {"existingSecret": "xhuma-database"},
    "sharedKeys": {"existingSecret": "xhuma-shared-keys"},
}
# Mutual TLS terminated by the gateway itself (TLS passthrough), with the other optional objects switched on.
PASSTHROUGH: dict[str, Any] = {
    **MINIMAL_REPLICATED,
    "tls": {"enabled": True, "existingSecret": "xhuma-tls", "clientCaSecret": "xhuma-client-ca"},
    "ingress": {"enabled": True, "className": "nginx",
                "annotations": {"nginx.ingress.kubernetes.io/ssl-passthrough": "true"}},
    "serviceMonitor": {"enabled": True},
}
VALUE_SETS = {"production": PRODUCTION_VALUES, "minimal-replicated": MINIMAL_REPLICATED, "passthrough": PASSTHROUGH}

# Settings whose values are secrets (SecretStr, alone, optional or in a list).
SECRET_SETTINGS = sorted(
    name for name, field in Settings.model_fields.items() if SecretStr.__name__ in str(field.annotation)
)


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders for ``values`` (as an install would: schema first)."""
    chart.validate_schema(values)
    manifests = chart.render(values, name="xh", namespace="xhuma", is_install=True)
    objects = []
    for path, text in manifests.items():
        if path.endswith(".yaml"):
            objects += [document for document in yaml.safe_load_all(text) if document]
    return objects


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [item for item in objects if item["kind"] == kind]


def pod_specs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item["spec"]["template"]["spec"] for item in objects if item["kind"] in ("Deployment", "Job")]


def schema_refuses(chart: helm.Chart, values: dict[str, Any]) -> str | None:
    try:
        chart.validate_schema(values)
    except helm.HelmValuesError as error:
        return str(error)
    return None


# --- Helm: lint and render -----------------------------------------------------------------------------------------
def test_chart_lints_strictly_with_production_values() -> None:
    report = helm.lint(CHART, PRODUCTION_VALUES, strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert report["errors"] == [] and problems == []


def test_chart_lint_reports_the_default_values_as_incomplete() -> None:
    # The defaults are 2 replicas with nothing shared: lint (like install) must say so, not render a broken release.
    report = helm.lint(CHART, None, strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    assert any("existingSecret" in error for error in report["errors"])


def test_chart_supports_the_kubernetes_version_its_manifests_are_validated_against(chart: helm.Chart) -> None:
    assert chart.metadata["kubeVersion"] == f">={KUBERNETES_VERSION}-0"


# --- Kubernetes schemas --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_rendered_manifest_is_a_valid_kubernetes_object(chart: helm.Chart, value_set: str) -> None:
    objects = render(chart, VALUE_SETS[value_set])
    unchecked = []
    for item in objects:
        try:
            kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unchecked.append(item["kind"])
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            pytest.fail(f"{item['kind']}/{item['metadata']['name']}: {path}: {error.message}")
    assert set(unchecked) <= CUSTOM_RESOURCES
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"} <= {
        item["kind"] for item in objects
    }


def test_strict_kubernetes_validation_rejects_an_unknown_field(chart: helm.Chart) -> None:
    # The check above can fail: a field Kubernetes does not know (a typo in a template) is an error.
    deployment = copy.deepcopy(of_kind(render(chart, MINIMAL_REPLICATED), "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


# --- The application ------------------------------------------------------------------------------------------------
def test_probe_and_metrics_paths_are_routes_of_the_app(chart: helm.Chart, make_settings: Any) -> None:
    app = create_app(make_settings())
    routes = {getattr(route, "path", None) for route in app.routes}
    objects = render(chart, PASSTHROUGH)
    container = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    probed = {container[probe]["httpGet"]["path"] for probe in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert probed <= routes
    scraped = {endpoint["path"] for endpoint in of_kind(objects, "ServiceMonitor")[0]["spec"]["endpoints"]}
    assert scraped == {"/metrics"} and scraped <= routes


def test_probes_use_https_when_the_gateway_terminates_tls(chart: helm.Chart) -> None:
    plain = of_kind(render(chart, MINIMAL_REPLICATED), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    tls = of_kind(render(chart, PASSTHROUGH), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert plain["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert tls["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_direct_mtls_lets_the_kubelets_https_probes_complete_the_handshake(chart: helm.Chart) -> None:
    # Kubelet probes present no client certificate: a handshake requiring one would keep every pod unready.
    config = of_kind(render(chart, PASSTHROUGH), "ConfigMap")[0]["data"]
    assert config["XHUMA_TLS_REQUIRE_CLIENT_CERT"] == "false"
    assert "XHUMA_TLS_REQUIRE_CLIENT_CERT" not in of_kind(render(chart, MINIMAL_REPLICATED), "ConfigMap")[0]["data"]
    chosen = copy.deepcopy(PASSTHROUGH)
    chosen.setdefault("config", {})["tls_require_client_cert"] = True
    assert of_kind(render(chart, chosen), "ConfigMap")[0]["data"]["XHUMA_TLS_REQUIRE_CLIENT_CERT"] == "true"


def xhuma_names(objects: list[dict[str, Any]]) -> set[str]:
    names = set()
    for config_map in of_kind(objects, "ConfigMap"):
        names |= set(config_map["data"])
    for spec in pod_specs(objects):
        for container in spec["containers"] + spec.get("initContainers", []):
            names |= {entry["name"] for entry in container.get("env", [])}
    return {name for name in names if name.startswith(ENV_PREFIX)}


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_xhuma_variable_of_the_chart_is_a_setting(chart: helm.Chart, value_set: str) -> None:
    names = xhuma_names(render(chart, VALUE_SETS[value_set]))
    unknown = {name for name in names if name[len(ENV_PREFIX):].lower() not in Settings.model_fields}
    assert names and unknown == set()


def test_the_rendered_configmap_loads_as_settings(chart: helm.Chart, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lists as JSON, integers without an exponent (Helm holds numbers as floats), booleans as true/false.
    values = copy.deepcopy(MINIMAL_REPLICATED)
    values["config"] = {"profile": "simulator", "max_request_bytes": 10485760, "http_read_timeout_seconds": 12.5,
                        "mtom_responses": False, "reply_to_allow_list": ["https://a.example", "https://b.example"]}
    data = of_kind(render(chart, values), "ConfigMap")[0]["data"]
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.max_request_bytes == 10485760
    assert settings.http_read_timeout_seconds == 12.5
    assert settings.mtom_responses is False
    assert settings.reply_to_allow_list == ["https://a.example", "https://b.example"]
    assert settings.redis_url == "redis://redis.xhuma.svc:6379/0"


def test_the_production_example_passes_the_live_start_up_checks(
    chart: helm.Chart, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ConfigMap plus well-formed stand-ins for the Secrets: nothing is missing for profile live, and every file
    # the settings name lies in a volume the pod mounts (the files themselves exist only in the cluster).
    objects = render(chart, PRODUCTION_VALUES)
    container = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    stand_ins = {
        "XHUMA_CACHE_KEYS": new_key_text("k1"), "XHUMA_CACHE_HASH_KEY": new_key_text("h").split(":", 1)[1],
        "XHUMA_AUDIT_HMAC_KEY": "a" * 48, "XHUMA_ADMIN_TOKENS": json.dumps(["t" * 40]),
        "XHUMA_DATABASE_URL": "postgresql://xhuma:pw@db.example.nhs.uk:5432/xhuma",
        "XHUMA_REDIS_URL": "rediss://:pw@redis.example.nhs.uk:6380/0",
        "XHUMA_PDS_API_KEY": "pds-key", "XHUMA_SDS_API_KEY": "sds-key",
    }
    for name, value in of_kind(objects, "ConfigMap")[0]["data"].items():
        monkeypatch.setenv(name, value)
    for entry in container["env"]:
        monkeypatch.setenv(entry["name"], stand_ins[entry["name"]])
    settings = load_settings()
    assert settings.profile.value == "live"
    assert replica_problem(settings) is None
    mounted = [mount["mountPath"] for mount in container["volumeMounts"]]
    problems = security_problems(settings)
    assert problems  # the mounted files, absent here
    for problem in problems:
        assert "file not found: " in problem, problem
        path = problem.split("file not found: ", 1)[1]
        assert any(path.startswith(mount + "/") for mount in mounted), problem


# --- Secrets --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_no_secret_is_rendered_inline(chart: helm.Chart, value_set: str) -> None:
    objects = render(chart, VALUE_SETS[value_set])
    assert of_kind(objects, "Secret") == []
    secret_names = {ENV_PREFIX + name.upper() for name in [*SECRET_SETTINGS, "database_url"]}
    for config_map in of_kind(objects, "ConfigMap"):
        assert secret_names.isdisjoint(config_map["data"])
    for spec in pod_specs(objects):
        for container in spec["containers"]:
            for entry in container.get("env", []):
                if entry["name"] in secret_names:
                    assert "value" not in entry and set(entry["valueFrom"]) == {"secretKeyRef"}


def test_the_production_example_takes_every_secret_from_an_existing_secret(chart: helm.Chart) -> None:
    env = of_kind(render(chart, PRODUCTION_VALUES), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    from_secrets = {entry["name"] for entry in env if "secretKeyRef" in entry.get("valueFrom", {})}
    assert {"XHUMA_CACHE_KEYS", "XHUMA_AUDIT_HMAC_KEY", "XHUMA_CACHE_HASH_KEY", "XHUMA_DATABASE_URL",
            "XHUMA_REDIS_URL", "XHUMA_ADMIN_TOKENS", "XHUMA_PDS_API_KEY", "XHUMA_SDS_API_KEY"} == from_secrets


@pytest.mark.parametrize("name", [*SECRET_SETTINGS, "database_url", "redis_url"])
def test_schema_refuses_a_secret_setting_in_the_configmap(chart: helm.Chart, name: str) -> None:
    values = copy.deepcopy(PRODUCTION_VALUES)
    values["config"][name] = "redis://:password@redis:6379/0" if name == "redis_url" else "not-inline-please"
    assert schema_refuses(chart, values)


def test_schema_refuses_a_redis_url_with_a_password(chart: helm.Chart) -> None:
    values = copy.deepcopy(MINIMAL_REPLICATED)
    values["redis"] = {"url": "rediss://:hunter2@redis.example.nhs.uk:6380/0"}
    assert schema_refuses(chart, values)


# --- Pod security ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_every_pod_runs_under_the_restricted_security_profile(chart: helm.Chart, value_set: str) -> None:
    specs = pod_specs(render(chart, VALUE_SETS[value_set]))
    assert len(specs) == 2  # the gateway and the migration Job
    for spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            assert set(container["resources"]["requests"]) >= {"cpu", "memory"}
            assert set(container["resources"]["limits"]) >= {"cpu", "memory"}
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            volumes = {volume["name"]: volume for volume in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]]


def test_the_gateway_writes_only_to_emptydir_volumes(chart: helm.Chart) -> None:
    objects = render(chart, MINIMAL_REPLICATED)
    spec = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]
    working_dir = of_kind(objects, "ConfigMap")[0]["data"]["XHUMA_WORKING_DIR"]
    volumes = {volume["name"]: volume for volume in spec["volumes"]}
    for mount in spec["containers"][0]["volumeMounts"]:
        assert mount.get("readOnly") is True or "emptyDir" in volumes[mount["name"]]
    writable = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"] if "emptyDir" in volumes[m["name"]]}
    assert writable == {"/tmp", working_dir}
    assert spec["terminationGracePeriodSeconds"] >= 10


def test_schema_refuses_running_as_root(chart: helm.Chart) -> None:
    values = copy.deepcopy(MINIMAL_REPLICATED)
    values["podSecurity"] = {"runAsUser": 0, "runAsGroup": 0, "fsGroup": 0}
    assert schema_refuses(chart, values)


# --- Replicas -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("case", "values"),
    [
        ("two replicas, nothing shared", {}),
        ("two replicas without Redis", {k: v for k, v in MINIMAL_REPLICATED.items() if k != "redis"}),
        ("two replicas without the shared keys", {k: v for k, v in MINIMAL_REPLICATED.items() if k != "sharedKeys"}),
        ("two replicas without the audit database", {k: v for k, v in MINIMAL_REPLICATED.items() if k != "database"}),
        ("autoscaling from one replica without Redis or keys",
         {"replicaCount": 1, "autoscaling": {"enabled": True}, "config": {"profile": "simulator"}}),
        ("one replica on a shared Redis without the keys",
         {"replicaCount": 1, "redis": {"url": "redis://redis:6379/0"}, "config": {"profile": "simulator"}}),
        ("one replica in the live profile without the keys", {"replicaCount": 1}),
    ],
)
def test_schema_refuses_a_replicated_gateway_without_shared_state(
    chart: helm.Chart, case: str, values: dict[str, Any]
) -> None:
    assert schema_refuses(chart, values), case


@pytest.mark.parametrize(
    ("case", "values"),
    [
        ("two replicas sharing Redis, keys and database", MINIMAL_REPLICATED),
        ("autoscaling with shared state", {**MINIMAL_REPLICATED, "autoscaling": {"enabled": True}}),
        ("the production example", PRODUCTION_VALUES),
        ("one replica on the embedded simulator defaults", {"replicaCount": 1, "config": {"profile": "simulator"}}),
    ],
)
def test_schema_accepts_a_configuration_that_works(chart: helm.Chart, case: str, values: dict[str, Any]) -> None:
    assert schema_refuses(chart, values) is None, case


def test_replicas_default_to_two_spread_across_nodes(chart: helm.Chart) -> None:
    objects = render(chart, MINIMAL_REPLICATED)
    deployment = of_kind(objects, "Deployment")[0]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    by_node = [c for c in spread if c["topologyKey"] == "kubernetes.io/hostname"]
    assert by_node and by_node[0]["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    for selector in (of_kind(objects, "Service")[0]["spec"]["selector"],
                     of_kind(objects, "PodDisruptionBudget")[0]["spec"]["selector"]["matchLabels"],
                     deployment["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= pod_labels.items()
    assert of_kind(objects, "PodDisruptionBudget")[0]["spec"]["minAvailable"] == 1


def test_autoscaling_leaves_the_replica_count_to_the_hpa(chart: helm.Chart) -> None:
    objects = render(chart, {**MINIMAL_REPLICATED, "autoscaling": {"enabled": True}})
    deployment = of_kind(objects, "Deployment")[0]
    hpa = of_kind(objects, "HorizontalPodAutoscaler")[0]
    assert "replicas" not in deployment["spec"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2


# --- Migration ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_the_migration_is_one_hook_job_and_never_an_init_container(chart: helm.Chart, value_set: str) -> None:
    objects = render(chart, VALUE_SETS[value_set])
    jobs = of_kind(objects, "Job")
    assert len(jobs) == 1
    hooks = set(jobs[0]["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    container = jobs[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["db", "upgrade"]
    assert {entry["name"] for entry in container["env"]} >= {"XHUMA_DATABASE_URL"}
    for spec in pod_specs(objects):
        assert "initContainers" not in spec
    gateway = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["args"][0] == "serve"


# --- Network policy -------------------------------------------------------------------------------------------------
def test_network_policy_allows_egress_only_to_dns_redis_postgresql_and_nhs(chart: helm.Chart) -> None:
    policy = of_kind(render(chart, PRODUCTION_VALUES), "NetworkPolicy")[0]["spec"]
    egress = PRODUCTION_VALUES["networkPolicy"]["egress"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert [rule["ports"] for rule in policy["ingress"]] == [[{"port": "http", "protocol": "TCP"}]]
    dns, *by_cidr = policy["egress"]
    assert {port["port"] for port in dns["ports"]} == {53}
    expected = [(egress[name]["cidrs"], egress[name]["ports"]) for name in ("redis", "postgresql", "nhs")]
    assert [([peer["ipBlock"]["cidr"] for peer in rule["to"]], [port["port"] for port in rule["ports"]])
            for rule in by_cidr] == expected


# --- Documentation --------------------------------------------------------------------------------------------------
def test_deployment_docs_describe_every_value_of_the_chart() -> None:
    docs = (CHART.parents[2] / "docs" / "deployment.md").read_text()
    reference = docs.split("### Values reference", 1)[1].split("\n## ", 1)[0]
    described = set(re.findall(r"`([A-Za-z][A-Za-z0-9]*)[.`]", reference))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) - described == set()
