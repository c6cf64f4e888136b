"""docker-compose.yml and deploy/Dockerfile agree with the project (no Docker needed).

Checks what would otherwise only fail after an image build or a `docker compose up`: topic names,
the job's flags, versions shared with the Makefile, ports, volumes, and that the hash key is never
written down.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

import tools.topics
from metering.settings import HASH_KEY_ENV, PipelineSettings, build_parser
from metering.topics import LOCAL_PARTITIONS, SERVICE_TOPICS, TOPICS
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


def test_only_the_hash_key_is_interpolated(compose: dict[str, Any]) -> None:
    """Shell variables in the scripts are written $$NAME, so Compose leaves them to the shell."""
    for text in strings_in(compose):
        for match in INTERPOLATION.finditer(text.replace("$$", "")):
            assert HASH_KEY_REFERENCE.fullmatch(match[0]), f"Compose would interpolate {match[0]}"


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
            assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: pin a release, not {tag}"
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
    publishing = ("redpanda", "jobmanager", "pinot-controller", "pinot-broker")
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
