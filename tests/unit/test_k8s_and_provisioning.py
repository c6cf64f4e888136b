"""deploy/k8s (Flink Kubernetes Operator) and deploy/redpanda/provision.sh agree with the project.

No cluster is needed: the manifests are parsed and checked against the job's flags and settings,
the Makefile and the Dockerfile, and provision.sh runs against a stand-in `rpk` that records
every call.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fake_rpk import install_fake_rpk, topic_creations

from metering.settings import (
    ENV_PREFIX,
    HASH_KEY_ENV,
    MIN_HASH_KEY_CHARS,
    HashKeyError,
    PipelineSettings,
    build_parser,
    read_hash_key,
)
from metering.topics import JOB_SERVICE_INPUTS, OUTPUTS, SERVICE_TOPICS, TOPICS

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "deploy" / "k8s"
PROVISION = REPO_ROOT / "deploy" / "redpanda" / "provision.sh"
SECRET_EXAMPLE = K8S_DIR / "secret.example.yaml"
LOG4J_CONSOLE = REPO_ROOT / "deploy" / "flink" / "log4j-console.properties"

SECRET_NAME = "gateway-pipeline-secrets"
KAFKA_PASSWORD_ENV = "PIPELINE_KAFKA_SASL_PASSWORD"
SECRET_ENVS = {HASH_KEY_ENV, KAFKA_PASSWORD_ENV}
# Which pod gets which secret: the hash key only where the Python workers run.
ROLE_SECRETS = {"jobManager": {KAFKA_PASSWORD_ENV}, "taskManager": SECRET_ENVS}
REST_PORT = 8081
REST_CLIENT_LABEL = {"gateway-pipeline/flink-rest-client": "true"}
OPERATOR_POD_LABEL = {"app.kubernetes.io/name": "flink-kubernetes-operator"}
MAIN_CONTAINER = "flink-main-container"

# What each manifest file holds (kustomizeconfig.yaml is a kustomize transformer configuration,
# not a Kubernetes object).
EXPECTED_KINDS = {
    "namespace.yaml": [("v1", "Namespace")],
    "serviceaccount.yaml": [
        ("v1", "ServiceAccount"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ]
    * 2,  # the JobManager's, then the TaskManagers'
    "networkpolicy.yaml": [("networking.k8s.io/v1", "NetworkPolicy")],
    "pvc-geoip.yaml": [("v1", "PersistentVolumeClaim")],
    "flinkdeployment.yaml": [("flink.apache.org/v1beta1", "FlinkDeployment")],
    "secret.example.yaml": [("v1", "Secret")],
    "kustomization.yaml": [("kustomize.config.k8s.io/v1beta1", "Kustomization")],
}
# Fields of the released CRD (operator 1.15.0, docs/content/docs/custom-resource/reference.md):
# FlinkDeploymentSpec, JobSpec, JobManagerSpec / TaskManagerSpec, Resource.
DEPLOYMENT_SPEC_FIELDS = {
    "job",
    "restartNonce",
    "flinkConfiguration",
    "image",
    "imagePullPolicy",
    "serviceAccount",
    "flinkVersion",
    "ingress",
    "podTemplate",
    "jobManager",
    "taskManager",
    "logConfiguration",
    "mode",
}
JOB_SPEC_FIELDS = {
    "jarURI",
    "parallelism",
    "entryClass",
    "args",
    "state",
    "savepointTriggerNonce",
    "initialSavepointPath",
    "checkpointTriggerNonce",
    "upgradeMode",
    "allowNonRestoredState",
    "savepointRedeployNonce",
    "autoscalerResetNonce",
}
MANAGER_SPEC_FIELDS = {"resource", "replicas", "podTemplate"}
RESOURCE_FIELDS = {"cpu", "memory", "ephemeralStorage"}
# PyFlink options PythonDriver understands before the program's own arguments (each with a value).
PYFLINK_OPTIONS = {"-py", "-pym", "-pyfs", "-pyexec", "-pyclientexec", "-pyarch", "-pyreq"}
VENV_PYTHON = "/opt/venv/bin/python"
DURABLE_SCHEMES = ("s3://", "s3p://", "gs://", "abfss://", "oss://", "hdfs://")

# `rpk security acl create` flags (redpanda src/go/rpk/pkg/cli/security/acl/common.go, create.go).
RPK_ACL_FLAGS = {
    "--allow-principal": True,
    "--operation": True,
    "--topic": True,
    "--group": True,
    "--transactional-id": True,
    "--resource-pattern-type": True,
    "--cluster": False,
}


# --- helpers ------------------------------------------------------------------------------------


def load_docs(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    assert all(isinstance(doc, dict) for doc in docs), path
    return docs


def makefile_variable(name: str) -> str:
    text = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(rf"^{name}\s*[?:]?=\s*(\S+)\s*$", text, re.MULTILINE)
    assert match, f"{name} not found in the Makefile"
    return match[1]


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings_in(v)


def by_name(items: list[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items or []}


def effective_container(spec: dict[str, Any], role: str) -> dict[str, Any]:
    """The main container of a JobManager or TaskManager pod: the common pod template merged with
    the role's, arrays merged by name (kubernetes.operator.pod-template.merge-arrays-by-name)."""
    assert spec["flinkConfiguration"]["kubernetes.operator.pod-template.merge-arrays-by-name"] == (
        "true"
    )
    merged: dict[str, Any] = {"env": {}, "volumeMounts": {}}
    for template in (spec.get("podTemplate"), spec[role].get("podTemplate")):
        containers = by_name(((template or {}).get("spec") or {}).get("containers"))
        container = containers.get(MAIN_CONTAINER, {})
        merged["env"] |= by_name(container.get("env"))
        merged["volumeMounts"] |= by_name(container.get("volumeMounts"))
    return merged


def pod_volumes(spec: dict[str, Any], role: str) -> dict[str, dict[str, Any]]:
    volumes: dict[str, dict[str, Any]] = {}
    for template in (spec.get("podTemplate"), spec[role].get("podTemplate")):
        volumes |= by_name(((template or {}).get("spec") or {}).get("volumes"))
    return volumes


def split_args(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """PythonDriver's PyFlink options (which come first) and the program's own arguments."""
    options: dict[str, str] = {}
    i = 0
    while i < len(args) and args[i] in PYFLINK_OPTIONS:
        options[args[i]] = args[i + 1]
        i += 2
    return options, args[i:]


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> dict[str, list[dict[str, Any]]]:
    return {path.name: load_docs(path) for path in sorted(K8S_DIR.glob("*.yaml"))}


@pytest.fixture(scope="module")
def deployment(manifests: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    (doc,) = manifests["flinkdeployment.yaml"]
    return doc


@pytest.fixture(scope="module")
def spec(deployment: dict[str, Any]) -> dict[str, Any]:
    result = deployment["spec"]
    assert isinstance(result, dict)
    return result


@pytest.fixture(scope="module")
def kustomization(manifests: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    (doc,) = manifests["kustomization.yaml"]
    return doc


@pytest.fixture
def job_settings(spec: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> PipelineSettings:
    """The settings the job's args give (without whatever PIPELINE_* this shell has set)."""
    for name in PipelineSettings.model_fields:
        monkeypatch.delenv(ENV_PREFIX + name.upper(), raising=False)
    _, job_args = split_args(spec["job"]["args"])
    parser = build_parser("gateway_pipeline", "")
    # Unknown flags are test_job_flags_exist_in_the_jobs_parser's to report.
    known, _ = parser.parse_known_args(job_args)
    given = {k: v for k, v in vars(known).items() if v is not None}
    return PipelineSettings(**given)


# --- manifests ----------------------------------------------------------------------------------


def test_manifests_have_the_expected_kinds(manifests: dict[str, list[dict[str, Any]]]) -> None:
    objects = {name: docs for name, docs in manifests.items() if name != "kustomizeconfig.yaml"}
    assert set(objects) == set(EXPECTED_KINDS)
    for name, docs in objects.items():
        assert [(doc.get("apiVersion"), doc.get("kind")) for doc in docs] == EXPECTED_KINDS[name]
        for doc in docs:
            if doc["kind"] != "Kustomization":
                assert doc["metadata"]["name"], name
    (config,) = manifests["kustomizeconfig.yaml"]
    assert {"path": "spec/image", "kind": "FlinkDeployment"} in config["images"]


def test_kustomization_applies_everything_but_the_secret_example(
    kustomization: dict[str, Any], manifests: dict[str, list[dict[str, Any]]]
) -> None:
    non_resources = {"kustomization.yaml", "kustomizeconfig.yaml", "secret.example.yaml"}
    assert set(kustomization["resources"]) == set(manifests) - non_resources
    assert kustomization["configurations"] == ["kustomizeconfig.yaml"]
    # No secret value is ever rendered from the repository.
    assert "secretGenerator" not in kustomization
    for name in kustomization["resources"]:
        assert all(doc["kind"] != "Secret" for doc in manifests[name]), name
    (namespace,) = manifests["namespace.yaml"]
    assert kustomization["namespace"] == namespace["metadata"]["name"]
    (secret,) = manifests["secret.example.yaml"]
    assert secret["metadata"]["namespace"] == namespace["metadata"]["name"]


def test_flinkdeployment_uses_only_released_crd_fields(spec: dict[str, Any]) -> None:
    assert set(spec) <= DEPLOYMENT_SPEC_FIELDS
    assert set(spec["job"]) <= JOB_SPEC_FIELDS
    for role in ("jobManager", "taskManager"):
        assert set(spec[role]) <= MANAGER_SPEC_FIELDS, role
        assert set(spec[role]["resource"]) <= RESOURCE_FIELDS, role
        assert spec[role]["resource"]["cpu"] > 0
        assert re.fullmatch(r"\d+[mg]", spec[role]["resource"]["memory"]), role
    assert spec["mode"] == "native"
    # flinkConfiguration values are strings, as the operator writes them into config.yaml.
    assert all(isinstance(v, str) for v in spec["flinkConfiguration"].values())


def test_flink_version_matches_the_makefile(spec: dict[str, Any]) -> None:
    flink_version = makefile_variable("FLINK_VERSION")
    major, minor = flink_version.split(".")[:2]
    assert spec["flinkVersion"] == f"v{major}_{minor}"
    assert spec["job"]["jarURI"] == f"local:///opt/flink/opt/flink-python-{flink_version}.jar"
    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert 'test -f "/opt/flink/opt/flink-python-${FLINK_VERSION}.jar"' in dockerfile
    assert f"ARG FLINK_VERSION={flink_version}" in dockerfile
    # The S3 plugin the image's entrypoint enables must be the image's own version.
    for role in ("jobManager", "taskManager"):
        plugins = effective_container(spec, role)["env"]["ENABLE_BUILT_IN_PLUGINS"]["value"]
        assert f"flink-s3-fs-presto-{flink_version}.jar" in plugins.split(";"), role


def test_image_is_pinned(spec: dict[str, Any], kustomization: dict[str, Any]) -> None:
    repository, _, tag = spec["image"].rpartition(":")
    assert repository and tag and "/" not in tag, spec["image"]
    assert tag != "latest"
    images = by_name(kustomization["images"])
    assert repository in images, "kustomization.yaml must pin the job image"
    assert images[repository]["newTag"] not in ("", "latest")
    assert spec["imagePullPolicy"] != "Always"


def test_job_runs_the_pipeline_module_with_the_venv(spec: dict[str, Any]) -> None:
    job = spec["job"]
    assert job["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    options, job_args = split_args(job["args"])
    assert options["-pym"] == "jobs.gateway_pipeline"
    assert options["-pyfs"] == "/opt/pipeline"
    assert options["-pyexec"] == VENV_PYTHON
    assert options["-pyclientexec"] == VENV_PYTHON
    assert "-py" not in options, "-py and -pym exclude each other"
    # PythonDriver passes everything after its options to the program; a `--` would reach the
    # job's argparse and turn every flag after it into a positional argument.
    assert "--" not in job_args
    assert all(token not in PYFLINK_OPTIONS for token in job_args), "PyFlink options go first"
    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY jobs /opt/pipeline/jobs" in dockerfile
    assert "VIRTUAL_ENV=/opt/venv" in dockerfile


def test_job_flags_exist_in_the_jobs_parser(
    spec: dict[str, Any], job_settings: PipelineSettings
) -> None:
    _, job_args = split_args(spec["job"]["args"])
    known = set(build_parser("gateway_pipeline", "")._option_string_actions)
    flags = [token for token in job_args if token.startswith("-")]
    assert "--bootstrap-servers" in flags and "--geoip-db" in flags
    for flag in flags:
        # Exact names only: argparse would also accept unambiguous abbreviations.
        assert flag in known, f"{flag} is not a flag of jobs.gateway_pipeline"
    assert not any("hash" in flag or "password" in flag for flag in flags)
    # The job's own parallelism (it calls set_parallelism) must be the deployment's.
    assert job_settings.parallelism == spec["job"]["parallelism"]


def test_parallelism_fits_the_task_slots(spec: dict[str, Any]) -> None:
    slots = int(spec["flinkConfiguration"]["taskmanager.numberOfTaskSlots"])
    replicas = spec["taskManager"]["replicas"]
    parallelism = spec["job"]["parallelism"]
    assert 1 <= parallelism <= slots * replicas
    assert slots == 2


def test_upgrades_use_savepoints_on_durable_storage(spec: dict[str, Any]) -> None:
    conf = spec["flinkConfiguration"]
    assert spec["job"]["upgradeMode"] == "savepoint"
    assert spec["job"].get("state", "running") == "running"
    assert conf["state.backend.type"] == "rocksdb"
    for key in (
        "execution.checkpointing.dir",
        "execution.checkpointing.savepoint-dir",
        "high-availability.storageDir",
    ):
        assert conf[key].startswith(DURABLE_SCHEMES), f"{key} must be durable, not {conf[key]}"
    assert conf["execution.checkpointing.dir"] != conf["execution.checkpointing.savepoint-dir"]
    assert conf["high-availability.type"] == "kubernetes"
    if any(conf[key].startswith(("s3://", "s3p://")) for key in conf if key.endswith("dir")):
        plugins = effective_container(spec, "jobManager")["env"]["ENABLE_BUILT_IN_PLUGINS"]
        assert "flink-s3-fs-presto-" in plugins["value"]
    # Old key names the Flink 2.x configuration no longer reads.
    for legacy in ("state.checkpoints.dir", "state.savepoints.dir", "high-availability"):
        assert legacy not in conf


def test_secrets_come_from_the_secret(
    spec: dict[str, Any], manifests: dict[str, list[dict[str, Any]]]
) -> None:
    for role, wanted in ROLE_SECRETS.items():
        env = effective_container(spec, role)["env"]
        assert set(env) & SECRET_ENVS == wanted, f"{role}: {set(env) & SECRET_ENVS} != {wanted}"
        for name, entry in env.items():
            if name in SECRET_ENVS:
                assert "value" not in entry, f"{role}: {name} has a literal value"
                ref = entry["valueFrom"]["secretKeyRef"]
                assert ref == {"name": SECRET_NAME, "key": name}, f"{role}: {name}"
            elif name.startswith(ENV_PREFIX):
                # Any other PIPELINE_* variable must be a setting of the job.
                field = name.removeprefix(ENV_PREFIX).lower()
                assert field in PipelineSettings.model_fields, f"{role}: unknown {name}"

    # Nowhere else (the example Secret aside) may a secret variable carry a value.
    secret_assignment = re.compile("|".join(rf"{name}\s*[=:]" for name in SECRET_ENVS))
    for file_name, docs in manifests.items():
        if file_name == SECRET_EXAMPLE.name:
            continue
        for doc in docs:
            for text in strings_in(doc):
                assert not secret_assignment.search(text), f"{file_name}: {text[:80]!r}"
                assert "--hash-key" not in text
                assert "sasl.jaas.config" not in text, f"{file_name}: a JAAS config with a password"


def test_secret_example_is_fake_and_refused_by_the_job(
    manifests: dict[str, list[dict[str, Any]]], spec: dict[str, Any]
) -> None:
    (secret,) = manifests[SECRET_EXAMPLE.name]
    assert secret["metadata"]["name"] == SECRET_NAME
    values = secret["stringData"]
    assert set(values) == SECRET_ENVS
    assert "data" not in secret
    hash_key = values[HASH_KEY_ENV]
    # Long enough, so the job refuses it for being a placeholder, not for its length.
    assert len(hash_key) >= MIN_HASH_KEY_CHARS
    with pytest.raises(HashKeyError, match="placeholder"):
        read_hash_key({HASH_KEY_ENV: hash_key})
    for value in values.values():
        assert "CHANGEME" in value and "placeholder" in value
    # The file shows the recommended way: a Secret created with a random key.
    text = SECRET_EXAMPLE.read_text(encoding="utf-8")
    assert "kubectl -n gateway-pipeline create secret generic gateway-pipeline-secrets" in text
    assert f'--from-literal={HASH_KEY_ENV}="$(openssl rand -hex 32)"' in text
    referenced = {
        entry["valueFrom"]["secretKeyRef"]["name"]
        for role in ("jobManager", "taskManager")
        for entry in effective_container(spec, role)["env"].values()
        if "valueFrom" in entry
    }
    assert referenced == {SECRET_NAME}


def test_log_configuration_is_the_masking_config(spec: dict[str, Any]) -> None:
    logs = spec["logConfiguration"]
    assert set(logs) == {"log4j-console.properties"}
    expected = LOG4J_CONSOLE.read_text(encoding="utf-8")
    assert logs["log4j-console.properties"] == expected, (
        "flinkdeployment.yaml's logConfiguration differs from deploy/flink/log4j-console.properties"
    )
    assert "[worker environment redacted]" in expected


def test_pods_run_as_non_root(spec: dict[str, Any]) -> None:
    pod = spec["podTemplate"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (main,) = pod["containers"]
    assert main["name"] == MAIN_CONTAINER
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["securityContext"]["capabilities"]["drop"] == ["ALL"]
    for role in ("jobManager", "taskManager"):
        template = (spec[role].get("podTemplate") or {}).get("spec") or {}
        assert "securityContext" not in template, f"{role} must not override the pod's user"


def granted_to(
    account: str, manifests: dict[str, list[dict[str, Any]]]
) -> set[tuple[str, str, str]]:
    """(api group, resource, verb) the Roles bound to a service account grant it."""
    docs = manifests["serviceaccount.yaml"]
    accounts = {doc["metadata"]["name"] for doc in docs if doc["kind"] == "ServiceAccount"}
    assert account in accounts
    roles = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Role"}
    granted: set[tuple[str, str, str]] = set()
    for binding in (doc for doc in docs if doc["kind"] == "RoleBinding"):
        if {"kind": "ServiceAccount", "name": account} not in binding["subjects"]:
            continue
        assert binding["roleRef"]["kind"] == "Role"
        for rule in roles[binding["roleRef"]["name"]]["rules"]:
            granted |= {
                (group, resource, verb)
                for group in rule["apiGroups"]
                for resource in rule["resources"]
                for verb in rule["verbs"]
            }
    return granted


def test_jobmanager_service_account_and_its_role(
    spec: dict[str, Any], manifests: dict[str, list[dict[str, Any]]]
) -> None:
    granted = granted_to(spec["serviceAccount"], manifests)
    # What a native-mode JobManager needs: TaskManager pods and HA ConfigMaps.
    for resource in ("pods", "configmaps"):
        for verb in ("get", "list", "watch", "create", "delete"):
            assert ("", resource, verb) in granted


def test_taskmanagers_have_their_own_account_that_cannot_create_pods(
    spec: dict[str, Any], manifests: dict[str, list[dict[str, Any]]]
) -> None:
    conf = spec["flinkConfiguration"]
    # The operator writes spec.serviceAccount as kubernetes.service-account, the fallback of both
    # per-role keys; the TaskManager key overrides it, the JobManager key must not.
    account = conf["kubernetes.taskmanager.service-account"]
    assert account != spec["serviceAccount"]
    assert "kubernetes.service-account" not in conf
    assert "kubernetes.jobmanager.service-account" not in conf
    # A pod template's serviceAccountName would be overwritten by Flink; it must not pretend.
    for role in ("jobManager", "taskManager"):
        template = (spec[role].get("podTemplate") or {}).get("spec") or {}
        assert "serviceAccountName" not in template, role
    assert "serviceAccountName" not in spec["podTemplate"]["spec"]
    # Read-only on ConfigMaps (Kubernetes HA leader lookup), nothing else.
    assert granted_to(account, manifests) == {
        ("", "configmaps", "get"),
        ("", "configmaps", "list"),
        ("", "configmaps", "watch"),
    }


def test_network_policy_fronts_the_rest_api(
    deployment: dict[str, Any], manifests: dict[str, list[dict[str, Any]]]
) -> None:
    (policy,) = manifests["networkpolicy.yaml"]
    cluster_id = deployment["metadata"]["name"]
    # Native mode's labels on the JobManager pods (Flink's KubernetesUtils).
    assert policy["spec"]["podSelector"] == {
        "matchLabels": {"app": cluster_id, "component": "jobmanager"}
    }
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rest_rules, metrics_rules, other_rules = [], [], []
    metrics_port = int(deployment["spec"]["flinkConfiguration"]["metrics.reporter.prom.port"])
    for rule in policy["spec"]["ingress"]:
        ports = rule.get("ports")
        if ports == [{"protocol": "TCP", "port": REST_PORT}]:
            rest_rules.append(rule)
        elif ports == [{"protocol": "TCP", "port": metrics_port}]:
            metrics_rules.append(rule)
        else:
            other_rules.append(rule)
    # Prometheus, from its own namespace only, to the metrics reporter's port only.
    (scrape,) = metrics_rules
    assert scrape["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
    (rest,) = rest_rules
    peers = rest["from"]
    # The operator's pods, in its namespace only (both selectors in one peer: AND).
    operator = [p for p in peers if "namespaceSelector" in p]
    assert operator == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "flink-operator"}},
            "podSelector": {"matchLabels": OPERATOR_POD_LABEL},
        }
    ]
    # Labelled clients in this namespace.
    assert {"podSelector": {"matchLabels": REST_CLIENT_LABEL}} in peers
    assert len(peers) == 2
    assert all("ipBlock" not in p for p in peers)
    # The only other ingress: the cluster's own pods, on the RPC and blob server ports only (a
    # TaskManager on the REST port could submit code that runs in the JobManager).
    conf = deployment["spec"]["flinkConfiguration"]
    (internal,) = other_rules
    assert internal["from"] == [{"podSelector": {"matchLabels": {"app": cluster_id}}}]
    internal_ports = {p["port"] for p in internal["ports"]}
    assert internal_ports == {
        int(conf["jobmanager.rpc.port"]),
        int(conf["blob.server.port"]),
    }
    assert REST_PORT not in internal_ports
    # Nothing else in the manifests may publish the REST API around the policy.
    assert "ingress" not in deployment["spec"]
    assert conf.get("kubernetes.rest-service.exposed.type", "ClusterIP") == "ClusterIP"
    assert int(conf.get("rest.port", REST_PORT)) == REST_PORT


def test_geoip_database_is_on_the_taskmanagers_volume(
    spec: dict[str, Any],
    manifests: dict[str, list[dict[str, Any]]],
    job_settings: PipelineSettings,
) -> None:
    (claim,) = manifests["pvc-geoip.yaml"]
    assert job_settings.geoip_db == "/data/geoip/GeoLite2-City.mmdb"
    mount_path = Path(job_settings.geoip_db).parent.as_posix()
    container = effective_container(spec, "taskManager")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"].values()}
    mount = mounts[mount_path]
    assert mount["readOnly"] is True
    volume = pod_volumes(spec, "taskManager")[mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    # The image points the job's default at the same file.
    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert f"PIPELINE_GEOIP_DB={job_settings.geoip_db}" in dockerfile


# --- provision.sh -------------------------------------------------------------------------------


class Provision:
    """Runs provision.sh with a stand-in `rpk` that records its arguments."""

    def __init__(self, tmp_path: Path) -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        install_fake_rpk(self.bin)
        self.log = tmp_path / "rpk-calls.jsonl"
        self.password = secrets.token_urlsafe(24)

    def run(self, mode: str = "fresh", **env: str) -> subprocess.CompletedProcess[str]:
        self.log.write_text("", encoding="utf-8")
        # A clean environment: no PARTITIONS, RPK_* or similar from the caller's shell.
        base = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(self.bin.parent),
            "FAKE_RPK_LOG": str(self.log),
            "FAKE_RPK_MODE": mode,
            "JOB_PASSWORD": self.password,
        }
        return subprocess.run(
            ["bash", str(PROVISION)],
            env=base | env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def calls(self) -> list[list[str]]:
        lines = self.log.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line]


def acl_creations(calls: list[list[str]]) -> list[dict[str, Any]]:
    acls = []
    for call in calls:
        if call[:3] != ["security", "acl", "create"]:
            continue
        parsed: dict[str, Any] = {}
        it = iter(call[3:])
        for flag in it:
            assert flag in RPK_ACL_FLAGS, f"unknown rpk acl flag {flag}"
            parsed[flag] = next(it) if RPK_ACL_FLAGS[flag] else True
        acls.append(parsed)
    return acls


@pytest.fixture
def provision(tmp_path: Path) -> Provision:
    return Provision(tmp_path)


def test_provision_script_syntax() -> None:
    result = subprocess.run(
        ["bash", "-n", str(PROVISION)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    text = PROVISION.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(PROVISION, os.X_OK), "provision.sh must be executable"


def test_provision_creates_the_catalogs_topics(provision: Provision) -> None:
    """Every topic of the catalog (metering.topics), under its default name, with its
    production partitions, retention and cleanup policy."""
    result = provision.run()
    assert result.returncode == 0, result.stderr
    created = topic_creations(provision.calls())
    assert set(created) == {t.name for t in (*TOPICS, *SERVICE_TOPICS)}
    for t in (*TOPICS, *SERVICE_TOPICS):
        spec = created[t.name]
        assert spec["-p"] == str(t.partitions), t.name
        assert spec["-r"] == "3", t.name
        assert spec["config"] == {
            "cleanup.policy": t.cleanup,
            "retention.ms": str(t.retention_ms),
            "min.insync.replicas": "2",
        }, t.name
    # The job's default parallelism fits the input's partitions.
    parallelism = PipelineSettings.model_fields["parallelism"].default
    assert all(parallelism <= t.partitions for t in TOPICS if t.sink is None)


def test_provision_settings_are_overridable(provision: Provision) -> None:
    result = provision.run(
        PARTITIONS="2", SMALL_PARTITIONS="1", REPLICAS="1", MIN_INSYNC_REPLICAS=""
    )
    assert result.returncode == 0, result.stderr
    for spec in topic_creations(provision.calls()).values():
        assert spec["-r"] == "1"
        assert spec["-p"] in ("1", "2")
        assert "min.insync.replicas" not in spec["config"]

    result = provision.run(REPLICAS="1", MIN_INSYNC_REPLICAS="2")
    assert result.returncode != 0
    assert "MIN_INSYNC_REPLICAS exceeds REPLICAS" in result.stderr
    assert provision.calls() == []


def test_provision_grants_the_jobs_acls(provision: Provision) -> None:
    result = provision.run()
    assert result.returncode == 0, result.stderr
    defaults = PipelineSettings.model_fields
    principal = "User:gateway-pipeline"
    acls = acl_creations(provision.calls())
    assert acls and all(acl["--allow-principal"] == principal for acl in acls)

    def grants(**resource: str | bool) -> set[str]:
        ops: set[str] = set()
        for acl in acls:
            if all(acl.get(flag) == value for flag, value in resource.items()):
                ops |= set(acl["--operation"].split(","))
        return ops

    (raw,) = [t.name for t in TOPICS if t.sink is None]
    assert grants(**{"--topic": raw}) == {"read", "describe"}
    assert grants(**{"--group": defaults["group_id"].default}) == {"read", "describe"}
    topic_acls = [acl for acl in acls if "--topic" in acl]
    (output_acl,) = [acl for acl in topic_acls if "write" in acl["--operation"]]
    assert set(output_acl["--topic"].split(",")) == {t.name for t in OUTPUTS}
    assert set(output_acl["--operation"].split(",")) == {"write", "describe", "read"}
    billing_inputs = {t.name for t in JOB_SERVICE_INPUTS}
    (inputs_acl,) = [a for a in topic_acls if set(a["--topic"].split(",")) == billing_inputs]
    assert set(inputs_acl["--operation"].split(",")) == {"read", "describe"}

    (txn,) = [acl for acl in acls if "--transactional-id" in acl]
    assert txn["--transactional-id"] == defaults["transactional_id_prefix"].default
    assert txn["--resource-pattern-type"] == "prefixed"
    assert set(txn["--operation"].split(",")) == {"write", "describe"}
    # Every other ACL names exact resources.
    assert sum("--resource-pattern-type" in acl for acl in acls) == 1

    (cluster,) = [acl for acl in acls if acl.get("--cluster")]
    assert cluster["--operation"] == "idempotent_write"


def test_provision_creates_the_user_without_printing_its_password(provision: Provision) -> None:
    result = provision.run()
    assert result.returncode == 0, result.stderr
    assert provision.password not in result.stdout + result.stderr
    calls = provision.calls()
    (create,) = [call for call in calls if call[:3] == ["security", "user", "create"]]
    assert create[3] == "gateway-pipeline"
    assert create[create.index("-p") + 1] == provision.password
    assert create[create.index("--mechanism") + 1] == "SCRAM-SHA-256"
    # The password goes to that one call only.
    assert sum(provision.password in arg for call in calls for arg in call) == 1


def test_provision_is_idempotent(provision: Provision) -> None:
    result = provision.run(mode="existing")
    assert result.returncode == 0, result.stderr
    # Every topic, and the user.
    assert result.stdout.count("left unchanged") == len(TOPICS) + len(SERVICE_TOPICS) + 1
    calls = provision.calls()
    assert not [call for call in calls if call[:3] == ["security", "user", "create"]]
    assert acl_creations(calls), "ACLs are (re)created on every run"


def test_provision_fails_when_an_acl_is_refused(provision: Provision) -> None:
    result = provision.run(mode="acl-error")
    assert result.returncode != 0
    assert "could not create ACLs" in result.stderr


@pytest.mark.parametrize("password", ["", "short"])
def test_provision_refuses_a_missing_or_short_password(provision: Provision, password: str) -> None:
    result = provision.run(JOB_PASSWORD=password)
    assert result.returncode != 0
    assert "JOB_PASSWORD must be set" in result.stderr
    assert provision.calls() == [], "nothing is provisioned without a usable password"
    if password:
        assert password not in result.stdout + result.stderr

    result = provision.run(JOB_PASSWORD="", CREATE_USER="0")
    assert result.returncode == 0, result.stderr
    assert not [c for c in provision.calls() if c[:2] == ["security", "user"]]


def test_provision_script_has_no_password_literal() -> None:
    text = PROVISION.read_text(encoding="utf-8")
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    # An assignment to a password-, secret- or token-like variable must take its value from an
    # expansion (or be a number, like MIN_PASSWORD_CHARS).
    literal = re.compile(r"(?i)\b\w*(pass|secret|token)\w*=([\"']?)(?![\"'$]|\d+\b|\s|$)")
    for line in code:
        assert not literal.search(line), f"password literal in provision.sh: {line.strip()}"
        assert not re.search(r"\bset\s+-\w*x", line), "xtrace would print the password"
    # The user's password reaches rpk only from the environment.
    assert re.search(r'rpk security user create "\$JOB_PRINCIPAL" -p "\$JOB_PASSWORD"', text)


PROMETHEUS_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


def test_the_prometheus_reporter_is_configured(spec: dict[str, Any]) -> None:
    """Flink's Prometheus reporter is on, from the image's plugin (deploy/Dockerfile checks the
    jar), on one fixed port the NetworkPolicy knows."""
    conf = spec["flinkConfiguration"]
    (name,) = conf["metrics.reporters"].split(",")
    assert conf[f"metrics.reporter.{name}.factory.class"] == PROMETHEUS_FACTORY
    assert int(conf[f"metrics.reporter.{name}.port"]) == 9249
