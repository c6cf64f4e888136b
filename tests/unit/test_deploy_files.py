"""docker-compose.yml and deploy/Dockerfile agree with the project (no Docker needed).

Checks what would otherwise only fail after an image build or a `docker compose up`: topic names,
the job's flags, versions shared with the Makefile, ports, volumes, and that the hash key is never
written down. The APISIX stack (etcd, apisix, the responder; deploy/apisix/) is checked here too:
it is not run in CI, so its configuration is held to the project's code instead (the responder's
own argument parser and settings, the APISIX version of the Admin API fake, the topic catalog).
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import ipaddress
import json
import os
import re
import secrets
import shlex
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pyflink
import pytest
import yaml

import tools.topics
from metering.settings import HASH_KEY_ENV, PipelineSettings, build_parser
from metering.topics import BY_ROLE, LOCAL_PARTITIONS, SERVICE_TOPICS, TOPICS
from responder.__main__ import build_channels
from responder.__main__ import build_parser as responder_parser
from responder.policy import load_policy
from responder.settings import (
    ENV_PREFIX,
    SECRET_FIELDS,
    ResponderSettings,
    settings_from_namespace,
)
from tools.topics import TopicSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

# `flink run` options the submitter may use, with whether each takes a value; checked against
# `flink run -h` of Flink 2.2.1 (-pym must come with -pyfs).
FLINK_RUN_OPTIONS = {
    "-d": False,
    "-m": True,
    "-p": True,
    "-D": True,
    "-s": True,
    "-n": False,
    "-py": True,
    "-pym": True,
    "-pyfs": True,
    "-pyexec": True,
    "-pyclientexec": True,
    "-pyarch": True,
    "-pyreq": True,
}
HASH_KEY_REFERENCE = re.compile(r"\$\{" + HASH_KEY_ENV + r":\?[^}]+\}")
# Compose interpolates $NAME / ${NAME...} in every value; $$ is a literal $.
INTERPOLATION = re.compile(r"\$(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)")
# The only variables Compose interpolates, each required (${NAME:?message}): the secrets, and
# where the responder's webhook goes.
REQUIRED_VARIABLES = (
    HASH_KEY_ENV,
    "APISIX_ADMIN_KEY",
    "APISIX_KEYRING",
    "RESPONDER_WEBHOOK_URL",
    "RESPONDER_WEBHOOK_SECRET",
    "DASHBOARD_TOKEN_SECRET",
)
REQUIRED_REFERENCE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*):\?[^}]+\}")
# Container variables holding a secret: each must be such a reference, never a value.
SECRET_VARIABLES = frozenset(
    {HASH_KEY_ENV, "APISIX_ADMIN_KEY", "APISIX_KEYRING", "DASHBOARD_TOKEN_SECRET"}
    | {ENV_PREFIX + name.upper() for name in SECRET_FIELDS}
)
APISIX_DIR = REPO_ROOT / "deploy" / "apisix"
APISIX_CONFIG_MOUNT = "/usr/local/apisix/conf/config.yaml"
# APISIX's substitution in its config.yaml: ${{NAME}} or ${{NAME:=default}}.
APISIX_SUBSTITUTION = re.compile(r"\$\{\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(:=[^}]*)?\}\}")


# --- parsing helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = compose["services"]
    assert isinstance(result, dict)
    return result


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def as_argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def flink_properties(service: dict[str, Any]) -> dict[str, str]:
    """FLINK_PROPERTIES the way the Flink image's entrypoint reads it: one `key: value` per line."""
    props: dict[str, str] = {}
    for line in environment(service).get("FLINK_PROPERTIES", "").splitlines():
        if line.strip():
            key, _, value = line.partition(":")
            props[key.strip()] = value.strip()
    return props


def volume_mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path -> (source, read_only) for the service's short-syntax volumes."""
    mounts: dict[str, tuple[str, bool]] = {}
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        mounts[parts[1]] = (parts[0], len(parts) > 2 and "ro" in parts[2].split(","))
    return mounts


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """Host port -> container port."""
    ports: dict[int, int] = {}
    for spec in service.get("ports", []):
        *host, container = str(spec).split(":")
        ports[int(host[-1])] = int(container)
    return ports


def job_command(services: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The submitter's `flink run` options and the job's own arguments (after `--`)."""
    argv = as_argv(services["pipeline"]["command"])
    assert argv[:2] == ["flink", "run"], argv
    assert "--" in argv, "separate the job's flags from flink's with --"
    split = argv.index("--")
    return argv[2:split], argv[split + 1 :]


def option_values(options: list[str]) -> dict[str, str | None]:
    result: dict[str, str | None] = {}
    it = iter(options)
    for token in it:
        assert token in FLINK_RUN_OPTIONS, f"unknown or unchecked `flink run` option {token}"
        result[token] = next(it) if FLINK_RUN_OPTIONS[token] else None
    return result


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


def dockerfile_lines() -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = (pending + stripped).strip()
        pending = ""
        if line:
            lines.append(line)
    return lines


def dockerfile_args() -> dict[str, str]:
    """Defaults of every `ARG NAME=value`."""
    args: dict[str, str] = {}
    for line in dockerfile_lines():
        match = re.fullmatch(r"ARG\s+(\w+)=(\S+)", line)
        if match:
            args.setdefault(match[1], match[2])
    return args


def expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], text)


def makefile_variable(name: str) -> str:
    text = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(rf"^{name}\s*[?:]?=\s*(\S+)\s*$", text, re.MULTILINE)
    assert match, f"{name} not found in the Makefile"
    return match[1]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


# --- topics -------------------------------------------------------------------------------------


def test_topics_service_creates_the_catalogs_topics(
    services: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The service runs tools.topics in the job's image, as `make topics` does: every topic of
    the catalog, with its local retention and cleanup policy."""
    service = services["topics"]
    assert service["image"] == services["pipeline"]["image"]
    assert service["depends_on"]["redpanda"]["condition"] == "service_healthy"
    argv = as_argv(service["command"])
    assert argv[:3] == ["python", "-m", "tools.topics"]
    for package in ("tools", "metering"):
        assert f"COPY {package} /opt/pipeline/{package}" in dockerfile_lines()

    created: dict[str, TopicSpec] = {}

    def ensure(bootstrap: str, topics: Mapping[str, TopicSpec], **_: Any) -> None:
        assert bootstrap == "redpanda:9092"
        created.update(topics)

    monkeypatch.setattr(tools.topics, "ensure_topics", ensure)
    assert tools.topics.main(argv[3:]) == 0
    capsys.readouterr()
    assert set(created) == {t.name for t in (*TOPICS, *SERVICE_TOPICS)}
    for t in (*TOPICS, *SERVICE_TOPICS):
        assert created[t.name].partitions == LOCAL_PARTITIONS, t.name
        assert created[t.name].config == {
            "cleanup.policy": t.cleanup,
            "retention.ms": str(t.local_retention_ms),
        }, t.name
    # And the job writes them: it keeps the default topic names.
    _, job_args = job_command(services)
    assert not {t.flag for t in TOPICS} & set(job_args)


def test_broker_does_not_auto_create_topics(services: dict[str, dict[str, Any]]) -> None:
    argv = as_argv(services["redpanda"]["command"])
    sets = [argv[i + 1] for i, token in enumerate(argv) if token == "--set"]
    assert "redpanda.auto_create_topics_enabled=false" in sets


# --- the job submission -------------------------------------------------------------------------


def test_job_flags_exist_in_the_jobs_parser(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, job_args = job_command(services)
    parser = build_parser("gateway_pipeline", "")
    known = set(parser._option_string_actions)
    flags = [token for token in job_args if token.startswith("-")]
    assert flags, "the job command passes no flags"
    for flag in flags:
        # Exact names only: argparse would also accept unambiguous abbreviations.
        assert flag in known, f"{flag} is not a flag of jobs.gateway_pipeline"

    # And the values are valid settings (without whatever PIPELINE_* this shell has set).
    for name in PipelineSettings.model_fields:
        monkeypatch.delenv("PIPELINE_" + name.upper(), raising=False)
    given = {k: v for k, v in vars(parser.parse_args(job_args)).items() if v is not None}
    settings = PipelineSettings(**given)
    assert settings.bootstrap_servers == "redpanda:9092"
    assert settings.geoip_db is not None


def test_flink_run_options(services: dict[str, dict[str, Any]]) -> None:
    options, _ = job_command(services)
    values = option_values(options)
    assert "-d" in values, "the submitter must not block on the job (-d)"
    assert values["-m"] == "jobmanager:8081"
    assert values["-pym"] == "jobs.gateway_pipeline"
    assert importlib.util.find_spec("jobs.gateway_pipeline") is not None
    # -pym needs -pyfs; the Dockerfile puts the code there.
    assert values["-pyfs"] == "/opt/pipeline"
    assert any(line.startswith("COPY jobs /opt/pipeline/jobs") for line in dockerfile_lines())
    venv_python = "/opt/venv/bin/python"
    assert values.get("-pyexec", venv_python) == venv_python
    assert values.get("-pyclientexec", venv_python) == venv_python
    assert any(
        line.startswith("ENV ") and "VIRTUAL_ENV=/opt/venv" in line for line in dockerfile_lines()
    )


def test_geoip_path_is_on_the_taskmanagers_geoip_volume(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    _, job_args = job_command(services)
    geoip_db = job_args[job_args.index("--geoip-db") + 1]
    mounts = volume_mounts(services["taskmanager"])
    mount = Path(geoip_db).parent.as_posix()
    assert mount in mounts, f"{geoip_db} is not on a TaskManager volume"
    source, read_only = mounts[mount]
    assert source in compose["volumes"], "the GeoIP database comes from a named volume"
    assert read_only
    # The one-shot `geoip` service fills that same volume, read-write.
    assert volume_mounts(services["geoip"])[mount] == (source, False)
    assert geoip_db in "\n".join(as_argv(services["geoip"]["command"]))


def test_submitter_waits_for_its_dependencies(services: dict[str, dict[str, Any]]) -> None:
    depends = services["pipeline"]["depends_on"]
    assert depends["topics"]["condition"] == "service_completed_successfully"
    assert depends["jobmanager"]["condition"] == "service_healthy"
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health"
            if condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is a one-shot"
    health = " ".join(as_argv(services["redpanda"]["healthcheck"]["test"]))
    assert "rpk cluster health" in health


# --- secrets ------------------------------------------------------------------------------------


def test_hash_key_is_never_a_literal(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    for name, service in services.items():
        value = environment(service).get(HASH_KEY_ENV)
        if value is not None:
            assert HASH_KEY_REFERENCE.fullmatch(value), (
                f"{name}: {HASH_KEY_ENV} must be a ${{...:?}} reference"
            )
        assert "env_file" not in service
    # The job checks the key before submitting; the Python workers on the TaskManager read it.
    assert HASH_KEY_ENV in environment(services["pipeline"])
    assert HASH_KEY_ENV in environment(services["taskmanager"])
    assert HASH_KEY_ENV not in environment(services["jobmanager"])

    # Anywhere else in the file the name may only be a mapping key or a ${...:?} reference.
    for text in strings_in(compose):
        rest = HASH_KEY_REFERENCE.sub("", text)
        assert HASH_KEY_ENV not in rest or text == HASH_KEY_ENV, f"{HASH_KEY_ENV} in {text!r}"
        assert "--hash-key" not in text

    for line in dockerfile_lines():
        assert HASH_KEY_ENV not in line, f"the image must not set {HASH_KEY_ENV}: {line}"


def test_only_required_variables_are_interpolated(compose: dict[str, Any]) -> None:
    """Shell variables in the scripts are written $$NAME, so Compose leaves them to the shell;
    what Compose does interpolate is required (${NAME:?...}): no secret defaults to empty or to a
    value written here."""
    seen = set()
    for text in strings_in(compose):
        for match in INTERPOLATION.finditer(text.replace("$$", "")):
            reference = REQUIRED_REFERENCE.fullmatch(match[0])
            assert reference, f"Compose would interpolate {match[0]}, which is not required"
            assert reference["name"] in REQUIRED_VARIABLES, f"Compose interpolates {match[0]}"
            seen.add(reference["name"])
    assert seen == set(REQUIRED_VARIABLES)


def test_secrets_are_never_literals(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for variable, value in environment(service).items():
            if variable in SECRET_VARIABLES:
                reference = REQUIRED_REFERENCE.fullmatch(value)
                assert reference, f"{name}: {variable} must be a ${{...:?}} reference"
            if variable.startswith(ENV_PREFIX):
                # A typo would be ignored by pydantic-settings, silently.
                setting = variable.removeprefix(ENV_PREFIX).lower()
                assert setting in ResponderSettings.model_fields, f"{name}: {variable}"
        for token in as_argv(service.get("command")):
            # Secrets are read from the environment only; the responder refuses secret flags.
            assert not any(token == "--" + f.replace("_", "-") for f in SECRET_FIELDS), token
    # The responder and APISIX share the admin key and the keyring: the same variables.
    responder, apisix = environment(services["responder"]), environment(services["apisix"])
    for ours, theirs in (
        ("RESPONDER_APISIX_ADMIN_KEY", "APISIX_ADMIN_KEY"),
        ("RESPONDER_APISIX_KEYRING", "APISIX_KEYRING"),
    ):
        mine, its = (
            REQUIRED_REFERENCE.fullmatch(responder[ours]),
            REQUIRED_REFERENCE.fullmatch(apisix[theirs]),
        )
        assert mine and its and mine["name"] == its["name"] == theirs


def test_build_context_keeps_secrets_and_local_state_out() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for required in (".git", ".venv", "build", ".local", "**/.env", "**/__pycache__"):
        assert required in patterns
    # Everything the Dockerfile copies is in the context.
    for line in dockerfile_lines():
        if line.startswith("COPY ") and "--from=" not in line:
            source = line.split()[-2]
            assert (REPO_ROOT / source).exists(), f"COPY source {source} does not exist"
            for pattern in patterns:
                assert not fnmatch.fnmatch(source, pattern), f"{source} is dockerignored"
    copied = {line.split()[1] for line in dockerfile_lines() if line.startswith("COPY ")}
    for package in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert package.rstrip("*") in copied, f"the image lacks the {package} package"


# --- images and versions ------------------------------------------------------------------------


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"
        if "build" not in service:
            # A release; APISIX tags it per base distribution (the -debian build).
            release = r"v?\d+\.\d+\.\d+(-debian)?"
            assert re.fullmatch(release, tag), f"{name}: pin a release, not {tag}"
    for service in services.values():
        if "build" in service:
            assert service["build"]["dockerfile"] == "deploy/Dockerfile"

    args = dockerfile_args()
    stages = set()
    for line in dockerfile_lines():
        if not line.startswith("FROM "):
            continue
        words = line.split()
        image = expand(words[1], args)
        if len(words) == 4 and words[2].upper() == "AS":
            stages.add(words[3])
        if image in stages:
            continue
        _, _, tag = image.rpartition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), f"unpinned base image {image}"


def test_flink_and_connector_versions_match_the_makefile() -> None:
    args = dockerfile_args()
    flink_version = makefile_variable("FLINK_VERSION")
    assert args["FLINK_VERSION"] == flink_version
    major_minor = ".".join(flink_version.split(".")[:2])
    assert args["KAFKA_CONNECTOR_VERSION"] == f"5.0.0-{major_minor}"
    froms = [line for line in dockerfile_lines() if line.startswith("FROM flink:")]
    assert froms and all(line.split()[1] == "flink:${FLINK_VERSION}-java17" for line in froms)

    assert f"apache-flink=={flink_version}" in pyproject()["project"]["dependencies"]
    pom = (REPO_ROOT / "deploy" / "pom.xml").read_text(encoding="utf-8")
    assert f"<flink.version>{flink_version}</flink.version>" in pom
    assert (
        f"<kafka.connector.version>{args['KAFKA_CONNECTOR_VERSION']}</kafka.connector.version>"
        in pom
    )


def test_connector_checksum_matches_the_jar_make_setup_fetched() -> None:
    args = dockerfile_args()
    assert re.fullmatch(r"[0-9a-f]{64}", args["KAFKA_CONNECTOR_SHA256"])
    jar = (
        REPO_ROOT
        / "build/jars/flink"
        / f"flink-sql-connector-kafka-{args['KAFKA_CONNECTOR_VERSION']}.jar"
    )
    assert jar.is_file(), f"{jar} missing: make test runs make setup first"
    assert hashlib.sha256(jar.read_bytes()).hexdigest() == args["KAFKA_CONNECTOR_SHA256"]


def test_python_version_matches_requires_python() -> None:
    version = dockerfile_args()["PYTHON_VERSION"]
    major, minor = (int(part) for part in version.split("."))
    requires = pyproject()["project"]["requires-python"]
    assert f">={major}.{minor}" in requires and f"<{major}.{minor + 1}" in requires


def test_image_runs_as_flink_and_finds_its_connector() -> None:
    lines = dockerfile_lines()
    # A session cluster cannot deserialize Python operators without flink-python in lib/.
    assert any(
        "/opt/flink/opt/flink-python-${FLINK_VERSION}.jar" in line and "/opt/flink/lib" in line
        for line in lines
        if line.startswith("RUN ")
    )
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users[-1] == "flink"
    env = " ".join(line for line in lines if line.startswith("ENV "))
    assert (
        "PIPELINE_CONNECTOR_JAR=/opt/flink/lib/flink-sql-connector-kafka-"
        "${KAFKA_CONNECTOR_VERSION}.jar" in env
    )


# --- ports, volumes, cluster settings -----------------------------------------------------------


def test_published_ports(services: dict[str, dict[str, Any]]) -> None:
    assert published_ports(services["redpanda"]) == {19092: 19092}
    assert published_ports(services["jobmanager"]) == {8081: 8081}
    # Pinot's controller (REST API, UI) and broker (SQL); the server is reached only by the broker.
    assert published_ports(services["pinot-controller"]) == {9000: 9000}
    assert published_ports(services["pinot-broker"]) == {8099: 8099}
    # APISIX's proxy; its Admin API (9180), etcd and the responder's /metrics are not published.
    assert published_ports(services["apisix"]) == {9080: 9080}
    # The consumers' portal, and the operators' views apart from it; loopback (checked below).
    assert published_ports(services["dashboard"]) == {8501: 8501}
    assert published_ports(services["dashboard-ops"]) == {8502: 8501}
    publishing = (
        "redpanda",
        "jobmanager",
        "pinot-controller",
        "pinot-broker",
        "apisix",
        "dashboard",
        "dashboard-ops",
    )
    for name, service in services.items():
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", [])), name
        if name not in publishing:
            assert not service.get("ports"), f"{name} publishes ports"

    argv = as_argv(services["redpanda"]["command"])
    listeners = argv[argv.index("--kafka-addr") + 1].split(",")
    advertised = argv[argv.index("--advertise-kafka-addr") + 1].split(",")
    assert "internal://0.0.0.0:9092" in listeners
    assert "external://0.0.0.0:19092" in listeners
    assert "internal://redpanda:9092" in advertised
    assert "external://localhost:19092" in advertised


def test_checkpoint_volume_is_shared_by_jobmanager_and_taskmanager(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    sources = set()
    for name in ("jobmanager", "taskmanager"):
        props = flink_properties(services[name])
        directory = props["execution.checkpointing.dir"]
        assert directory.startswith("file://")
        path = directory.removeprefix("file://")
        mounts = volume_mounts(services[name])
        assert path in mounts, f"{name} does not mount {path}"
        source, read_only = mounts[path]
        assert not read_only
        sources.add(source)
        savepoints = props.get("execution.checkpointing.savepoint-dir", directory)
        assert savepoints.removeprefix("file://").startswith(path)
    assert len(sources) == 1
    assert sources <= set(compose["volumes"])


def test_flink_properties(services: dict[str, dict[str, Any]]) -> None:
    flink_services = [n for n, s in services.items() if "FLINK_PROPERTIES" in environment(s)]
    assert {"jobmanager", "taskmanager", "pipeline"} <= set(flink_services)
    for name in flink_services:
        props = flink_properties(services[name])
        assert props["jobmanager.rpc.address"] == "jobmanager"
        # The entrypoint deletes all whitespace of a line, so values must not contain any.
        for line in environment(services[name])["FLINK_PROPERTIES"].splitlines():
            assert len(line.split()) in (0, 2), f"{name}: {line!r}"
    slots = int(flink_properties(services["taskmanager"])["taskmanager.numberOfTaskSlots"])
    assert slots >= PipelineSettings.model_fields["parallelism"].default


def test_transaction_timeout_is_within_the_brokers_maximum(
    services: dict[str, dict[str, Any]],
) -> None:
    argv = as_argv(services["redpanda"]["command"])
    sets = dict(argv[i + 1].split("=", 1) for i, token in enumerate(argv) if token == "--set")
    broker_max = int(sets["redpanda.transaction_max_timeout_ms"])
    _, job_args = job_command(services)
    assert "--transaction-timeout-ms" not in job_args
    assert PipelineSettings.model_fields["transaction_timeout_ms"].default <= broker_max


# --- APISIX and the responder (deploy/apisix/, not run in CI) ------------------------------------


def apisix_config() -> dict[str, Any]:
    data = yaml.safe_load((APISIX_DIR / "config.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def fake_values() -> dict[str, str]:
    """Values of the required variables, as a user would set them."""
    return {
        HASH_KEY_ENV: secrets.token_hex(32),
        "APISIX_ADMIN_KEY": secrets.token_hex(16),
        "APISIX_KEYRING": secrets.token_hex(8),
        "RESPONDER_WEBHOOK_URL": "https://receiver.internal.test/gateway-alerts",
        "RESPONDER_WEBHOOK_SECRET": secrets.token_hex(32),
    }


def responder_settings(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> ResponderSettings:
    """The settings the compose responder runs with: its command through the responder's own
    parser, its environment with the required variables set."""
    service = services["responder"]
    argv = as_argv(service["command"])
    assert argv[:3] == ["python", "-m", "responder"]
    parser = responder_parser()
    ns, unknown = parser.parse_known_args(argv[3:])
    assert ns.command == "run" and unknown == []
    # Exact names only: argparse would also accept unambiguous abbreviations.
    subcommands = next(a for a in parser._actions if isinstance(a.choices, dict))
    assert isinstance(subcommands.choices, dict)
    known = set(subcommands.choices["run"]._option_string_actions)
    for token in argv[4:]:
        if token.startswith("-"):
            assert token in known, f"{token} is not a flag of `python -m responder run`"
    for name in ResponderSettings.model_fields:
        monkeypatch.delenv(ENV_PREFIX + name.upper(), raising=False)
    values = fake_values()
    for variable, value in environment(service).items():
        reference = REQUIRED_REFERENCE.fullmatch(value)
        monkeypatch.setenv(variable, values[reference["name"]] if reference else value)
    return settings_from_namespace(parser, ns, unknown)


def test_responder_command_parses_and_its_settings_validate(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = responder_settings(services, monkeypatch)
    assert settings.bootstrap_servers == "redpanda:9092"
    # The job's alerts topic and the actions topic the `topics` service creates.
    assert settings.alerts_topic == BY_ROLE["alerts"].name
    assert settings.actions_topic in {t.name for t in SERVICE_TOPICS}
    assert not settings.demo, "placeholders and SMTP logins without TLS are for the demo only"
    assert settings.gateway == "apisix"
    admin = apisix_config()["deployment"]["admin"]
    assert settings.apisix_admin_url == f"http://apisix:{admin['admin_listen']['port']}"
    assert settings.keyring(), "APISIX encrypts key-auth keys: the responder needs the keyring"
    assert settings.instance == "responder-1", "a stable static member across re-creations"


def test_responder_policy_is_mounted_valid_and_its_channels_configured(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = responder_settings(services, monkeypatch)
    source, read_only = volume_mounts(services["responder"])[settings.policy_file]
    assert read_only and source.startswith("./deploy/apisix/")
    policy = load_policy(REPO_ROOT / source)
    # Nothing is blocked until someone decides to: the example stack is in dry run.
    assert policy.dry_run
    with httpx.Client() as client:
        channels = build_channels(settings, policy, client)
    assert policy.channels() <= set(channels), "the service would refuse to start"
    assert policy.blocks() and settings.gateway != "none"


def test_responder_service_waits_restarts_and_reports_health(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = services["responder"]
    # The job's image, as `topics` and `pipeline` use it (the Dockerfile copies responder/).
    assert service["image"] == services["pipeline"]["image"]
    assert "COPY responder /opt/pipeline/responder" in dockerfile_lines()
    assert service["restart"] == "unless-stopped"
    depends = service["depends_on"]
    assert depends["topics"]["condition"] == "service_completed_successfully"
    assert depends["apisix"]["condition"] == "service_started"
    settings = responder_settings(services, monkeypatch)
    health = " ".join(as_argv(service["healthcheck"]["test"]))
    assert f":{settings.health_port}/healthz" in health
    # Bound inside the container for the network's scrapers; no port is published.
    assert settings.health_host == "0.0.0.0"
    assert not service.get("ports")


def test_apisix_image_is_the_version_of_the_admin_api_fake(
    services: dict[str, dict[str, Any]],
) -> None:
    """The responder's APISIX client is tested against testkit/gateway_admin.py, transcribed
    from one APISIX version's definitions: the stack runs that version."""
    doc = (REPO_ROOT / "testkit" / "gateway_admin.py").read_text(encoding="utf-8")
    match = re.search(r"apisix/core/version\.lua``: (\d+\.\d+\.\d+)", doc)
    assert match
    assert services["apisix"]["image"] == f"apache/apisix:{match[1]}-debian"


def test_apisix_config_takes_its_secrets_from_the_environment(
    services: dict[str, dict[str, Any]],
) -> None:
    service = services["apisix"]
    assert volume_mounts(service)[APISIX_CONFIG_MOUNT] == ("./deploy/apisix/config.yaml", True)
    config = apisix_config()
    admin = config["deployment"]["admin"]
    assert admin["admin_key_required"] is True
    assert [(k["key"], k["role"]) for k in admin["admin_key"]] == [
        ("${{APISIX_ADMIN_KEY}}", "admin")
    ]
    encryption = config["apisix"]["data_encryption"]
    assert encryption["enable_encrypt_fields"] is True
    assert encryption["keyring"] == ["${{APISIX_KEYRING}}"]
    # Every substitution names a variable the container gets, from a required reference.
    names = {m["name"] for t in strings_in(config) for m in APISIX_SUBSTITUTION.finditer(t)}
    assert names == {"APISIX_ADMIN_KEY", "APISIX_KEYRING"}
    env = environment(service)
    for name in names:
        assert REQUIRED_REFERENCE.fullmatch(env[name]), name
    # The Admin API: from the compose network and loopback only, never from anywhere.
    networks = [ipaddress.ip_network(n) for n in admin["allow_admin"]]
    assert networks and all(n.is_private for n in networks)
    assert ipaddress.ip_network("0.0.0.0/0") not in networks
    assert 9180 not in published_ports(service).values()


def test_apisix_stores_its_config_in_the_compose_etcd(services: dict[str, dict[str, Any]]) -> None:
    etcd_conf = apisix_config()["deployment"]["etcd"]
    assert etcd_conf["host"] == ["http://etcd:2379"]
    assert services["apisix"]["depends_on"]["etcd"]["condition"] == "service_healthy"
    argv = as_argv(services["etcd"]["command"])
    assert argv[argv.index("--advertise-client-urls") + 1] == "http://etcd:2379"
    assert not services["etcd"].get("ports")


def test_kafka_logger_writes_the_raw_topic_on_the_compose_broker(
    services: dict[str, dict[str, Any]],
) -> None:
    rule = json.loads((APISIX_DIR / "kafka-logger.global-rule.json").read_text(encoding="utf-8"))
    conf = rule["plugins"]["kafka-logger"]
    assert conf["kafka_topic"] == BY_ROLE["raw"].name
    # The broker's internal listener, as it advertises it inside the network.
    argv = as_argv(services["redpanda"]["command"])
    advertised = argv[argv.index("--advertise-kafka-addr") + 1].split(",")
    assert [f"internal://{b['host']}:{b['port']}" for b in conf["brokers"]] == [
        a for a in advertised if a.startswith("internal://")
    ]
    # The full-log format the job parses (docs/formats.md); `origin` is the raw request.
    assert conf["meta_format"] == "default"
    assert conf["required_acks"] in (1, -1)
    readme = (APISIX_DIR / "README.md").read_text(encoding="utf-8")
    assert "deploy/apisix/kafka-logger.global-rule.json" in readme
    assert "Not run in CI" in readme


PROMETHEUS_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


def test_compose_flink_services_run_the_prometheus_reporter_unpublished(
    services: dict[str, dict[str, Any]],
) -> None:
    """The JobManager and TaskManager report to Prometheus on 9249, on the compose network only:
    the reporter has no bind address, so publishing its port would open it on the host."""
    for name in ("jobmanager", "taskmanager"):
        props = flink_properties(services[name])
        (reporter,) = props["metrics.reporters"].split(",")
        assert props[f"metrics.reporter.{reporter}.factory.class"] == PROMETHEUS_FACTORY
        port = int(props[f"metrics.reporter.{reporter}.port"])
        assert port not in published_ports(services[name]).values()
        assert port not in published_ports(services[name])


def test_the_image_checks_the_prometheus_reporter_plugin() -> None:
    """The reporter's jar is the distribution's plugin, of the image's Flink version."""
    args = dockerfile_args()
    checks = [
        expand(line, args)
        for line in dockerfile_lines()
        if line.startswith("RUN test -f") and "metrics-prometheus" in line
    ]
    version = args["FLINK_VERSION"]
    jar = f"/opt/flink/plugins/metrics-prometheus/flink-metrics-prometheus-{version}.jar"
    assert any(jar in line for line in checks)


def test_the_local_cluster_configures_the_prometheus_reporter_from_the_distribution() -> None:
    """scripts/flink-cluster.sh enables the reporter on a port range derived from the REST port
    (so clusters on other REST ports do not collide), from the apache-flink package's own
    plugin jar; the package must ship it."""
    script = (REPO_ROOT / "scripts" / "flink-cluster.sh").read_text(encoding="utf-8")
    assert f"class: {PROMETHEUS_FACTORY}" in script
    assert 'FLINK_PLUGINS_DIR="$STATE/plugins"' in script
    plugin = Path(pyflink.__file__).parent / "plugins" / "metrics-prometheus"
    assert list(plugin.glob("flink-metrics-prometheus-*.jar"))
    result = subprocess.run(
        [str(REPO_ROOT / "scripts" / "flink-cluster.sh"), "prom-ports"],
        env={"PATH": os.environ["PATH"], "FLINK_REST": "127.0.0.1:8081"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "9249-9259"


@pytest.mark.parametrize(("name", "operator"), [("dashboard", False), ("dashboard-ops", True)])
def test_the_portal_and_the_ops_views_are_apart(
    services: dict[str, dict[str, Any]], name: str, operator: bool
) -> None:
    # The service a proxy publishes to consumers must never serve the operator views.
    from dashboard.__main__ import build_parser as dashboard_parser

    service = services[name]
    argv = as_argv(service["command"])
    assert argv[:3] == ["python", "-m", "dashboard"]
    args = dashboard_parser().parse_args(argv[3:])
    assert (args.command, args.broker, args.address, args.port, args.operator) == (
        "run",
        "http://pinot-broker:8099",
        "0.0.0.0",
        8501,
        operator,
    )
    assert "pinot-tables" in service["depends_on"]
