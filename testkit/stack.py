"""The local stack: the Kafka broker, the Flink session cluster and Pinot, started, awaited,
reused and stopped in one place.

Thin typed Python over the scripts that own each component (``scripts/kafka.sh``,
``scripts/flink-cluster.sh``, ``scripts/pinot.sh``): the scripts write the configuration, start
the JVMs in their own sessions and wait until each answers; this module decides whether to start
one at all (one already answering is reused and left running), remembers whether it did, and
stops only what it started. The test fixtures (tests/conftest.py), the benchmark (bench/run.py),
the fault suite (testkit/faults.py) and the detector evaluation (evaluation/__main__.py) all go
through it, so they agree on ports, environment, state directories and reuse.

Context managers for whole-run use::

    with broker(19092) as bootstrap: ...                      # "127.0.0.1:19092"
    with broker_at("127.0.0.1:49092") as bootstrap: ...        # any address; local ones started
    with session_cluster("127.0.0.1:18081", key) as cluster: ...   # FlinkCluster
    with pinot(19000) as urls: ...                              # PinotCluster

and the objects behind them (``Broker``, ``SessionCluster``, ``LocalPinot``) for callers that
need finer control: the fault suite kills, pauses and restarts the broker and the cluster's
daemons through them.

State (configuration, data, logs, pid files) lives where the scripts keep it:
``.local/kafka-<port>/``, ``.local/flink-<rest port>/``, ``.local/pinot-<controller port>/``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from confluent_kafka.admin import AdminClient

from jobs.submit import Rest, flink_home

REPO: Final = Path(__file__).resolve().parent.parent
LOCAL: Final = REPO / ".local"
SCRIPTS: Final = REPO / "scripts"
HOST: Final = "127.0.0.1"

Log = Callable[[str], None]

BROKER_CLASS: Final = "kafka.Kafka"
TM_CLASS: Final = "org.apache.flink.runtime.taskexecutor.TaskManagerRunner"
JM_CLASS: Final = "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint"

_OUTPUT_TAIL: Final = 3000
"""Characters of a failed script's output kept in the error: its own log tail fits."""


class StackError(RuntimeError):
    """A component could not be started, stopped or found."""


def say(message: str) -> None:
    """The default progress line: printed at once, so it shows while a start-up waits."""
    print(message, flush=True)


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def cmdline(pid: int) -> list[str]:
    """The arguments of ``pid`` ([] when it is gone or not readable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) from /proc, or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...)."""
    children: defaultdict[int, list[int]] = defaultdict(list)
    for p in all_pids():
        st = _stat(p)
        if st is not None:
            children[st[1]].append(p)
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def wait_gone(pids: Sequence[int], timeout_s: float) -> list[int]:
    """Wait until none of ``pids`` is alive; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = [p for p in pids if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def send_signal(pids: Sequence[int], sig: signal.Signals) -> None:
    """``sig`` to each of ``pids``; one that exited meanwhile is skipped."""
    for p in pids:
        with suppress(ProcessLookupError):
            os.kill(p, sig)


def wait_for(
    what: str, condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.5
) -> None:
    """Return once ``condition()`` holds; StackError naming ``what`` if it does not within
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise StackError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(poll_s)


def port_open(port: int, host: str = HOST, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Scripts
# --------------------------------------------------------------------------------------------


def script_env(
    base: Mapping[str, str], set_: Mapping[str, str], drop: Sequence[str] = ()
) -> dict[str, str]:
    """``base`` plus ``set_``, minus ``drop``: a variable chosen for another component (e.g. the
    dev broker's controller port) must not leak into this one, whose script derives it."""
    env = dict(base)
    for var in drop:
        env.pop(var, None)
    env.update(set_)
    return env


def ready_timeout(env: Mapping[str, str], var: str, default: int, margin: int) -> float:
    """How long a script may take: its own readiness wait (``var``, as the script reads it)
    plus ``margin`` for what it does around it, so the script's message, not ours, reports a
    slow start."""
    try:
        own = int(env.get(var, "") or default)
    except ValueError:
        own = default
    return float(own + margin)


def run_script(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    log: Log | None = None,
    timeout_s: float,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in its own session (its daemons must not get the terminal's Ctrl-C: the
    callers stop them in order), stdout and stderr merged in order. With ``log``, each line is
    passed on as it comes, so a long start-up shows its progress; the whole output is returned
    either way, for error messages. A script still running at ``timeout_s`` is killed
    (StackError)."""
    proc = subprocess.Popen(
        list(argv),
        cwd=REPO,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if log is not None:
                log(line.rstrip("\n"))

    reader = threading.Thread(target=pump, name=f"{Path(argv[0]).name}-output", daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        reader.join(5)
        raise StackError(
            f"{_shown(argv)} still running after {timeout_s:.0f} s; killed:\n"
            + "".join(lines)[-_OUTPUT_TAIL:]
        ) from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    # The daemons the scripts start write to their own files, so the pipe closes with the
    # script; the bound only guards against one that does not.
    reader.join(10)
    return subprocess.CompletedProcess(list(argv), code, "".join(lines), "")


def _shown(argv: Sequence[str]) -> str:
    first = Path(argv[0])
    name = f"scripts/{first.name}" if first.parent == SCRIPTS else str(first)
    return " ".join([name, *argv[1:]])


def failure(proc: subprocess.CompletedProcess[str]) -> StackError:
    """The error for a script that exited non-zero, with the tail of its output."""
    return StackError(
        f"{_shown(proc.args)} failed (exit {proc.returncode}):\n{proc.stdout[-_OUTPUT_TAIL:]}"
    )


# --------------------------------------------------------------------------------------------
# Kafka
# --------------------------------------------------------------------------------------------


def broker_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """Whether a broker at ``bootstrap`` serves a metadata request."""
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        md = admin.list_topics(timeout=timeout_s)
    except Exception:  # KafkaException, or a malformed address
        return False
    return bool(md.brokers)


def local_port(bootstrap: str) -> int | None:
    """The port of ``bootstrap`` when it names one broker on this host (one a local broker can
    be started for), else None."""
    host, _, port = bootstrap.strip().rpartition(":")
    if "," in bootstrap or host not in (HOST, "localhost") or not port.isdigit():
        return None
    return int(port)


class _ScriptService:
    """A local component run by one of scripts/ (``up``, ``down``, ``status``): its script
    calls, and the ``ensure()`` / ``release()`` lifecycle: use one already running, else start
    it, and stop only what was started."""

    script: str
    what: str  # for messages: "the broker", "Pinot", ...
    timeout_env: str = ""  # the script's ready-timeout variable
    timeout_default_s = 300

    def __init__(self, address: str, log_dir: Path, log: Log, echo: bool) -> None:
        self.address = address
        self.log_dir = log_dir
        self._log = log
        self._echo = echo
        self.started = False
        """Whether ``ensure()`` started it (so ``release()`` stops it)."""

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def _script(self, command: str) -> subprocess.CompletedProcess[str]:
        env = self.env()
        timeout = float(self.timeout_default_s)
        if self.timeout_env:
            timeout = ready_timeout(
                env, self.timeout_env, self.timeout_default_s, self.timeout_default_s
            )
        return run_script(
            [str(SCRIPTS / self.script), command],
            env,
            log=self._log if self._echo and command != "status" else None,
            timeout_s=timeout,
        )

    def _run(self, command: str) -> None:
        proc = self._script(command)
        if proc.returncode != 0:
            raise failure(proc)

    def up(self) -> None:
        """Start it and return once it is ready; a no-op when it runs."""
        self._run("up")

    def down(self) -> None:
        self._run("down")

    def in_use(self) -> bool:
        """Whether one already runs (or answers) here, to be used rather than started."""
        raise NotImplementedError

    def ensure(self) -> bool:
        """Use the one already running here, else start it; whether this call started it. A
        failed start still counts as started, so ``release()`` stops what it left behind."""
        if self.in_use():
            self._log(f"{self.what} on {self.address} already running; using it")
            return False
        self._start()
        return True

    def _start(self) -> None:
        self._log(f"starting {self.what} on {self.address} (logs in {self.log_dir})")
        self.started = True
        self.up()

    def release(self) -> None:
        """Stop it if ``ensure()`` started it; a failure to stop is logged, not raised (this
        runs in cleanup, where it must not hide the error that ended the run)."""
        if not self.started:
            return
        self._log(f"stopping {self.what} on {self.address}")
        try:
            self.down()
        except (StackError, OSError) as e:
            self._log(f"{self.script} down failed: {e}")
        self.started = False


class Broker(_ScriptService):
    """The local broker of ``scripts/kafka.sh`` on ``port`` (state in .local/kafka-<port>/).

    ``ensure()`` / ``release()`` are the lifecycle: start unless one already runs there, and
    stop only what was started. ``up()``, ``down()``, ``pid()`` and ``kill()`` act at once, for
    callers that stop and restart the broker on purpose (``down``: SIGTERM, then SIGKILL after
    30 s).
    """

    script = "kafka.sh"
    what = "a broker"
    timeout_env = "KAFKA_READY_TIMEOUT"
    timeout_default_s = 90

    def __init__(self, port: int, log: Log = say, echo: bool = True) -> None:
        self.port = port
        self.bootstrap = f"{HOST}:{port}"
        self.state = LOCAL / f"kafka-{port}"
        super().__init__(self.bootstrap, self.state / "logs", log, echo)

    def env(self) -> dict[str, str]:
        return script_env(os.environ, {"KAFKA_PORT": str(self.port)}, ("KAFKA_CONTROLLER_PORT",))

    def running(self) -> bool:
        """Whether this port's broker of scripts/kafka.sh runs (its process, its port open)."""
        return self._script("status").returncode == 0

    def answers(self) -> bool:
        """Whether any broker serves metadata on this port (the port is tried first: a closed
        one answers at once, a metadata request only at its timeout)."""
        return port_open(self.port) and broker_answers(self.bootstrap)

    def in_use(self) -> bool:
        return self.running() or self.answers()

    def pid(self) -> int:
        """The broker JVM's pid, from the pid file scripts/kafka.sh keeps, checked against the
        process's command line (pids are reused)."""
        try:
            pid = int((self.state / "kafka.pid").read_text().strip())
        except (OSError, ValueError) as e:
            raise StackError(f"no broker pid file in {self.state}: {e}") from e
        args = cmdline(pid)
        if BROKER_CLASS not in args or str(self.state / "server.properties") not in args:
            raise StackError(
                f"pid {pid} in {self.state}/kafka.pid is not the broker of {self.state}"
            )
        return pid

    def kill(self, timeout_s: float = 15.0) -> int:
        """``kill -9`` the broker JVM and wait until it is gone; its pid. The pid file stays:
        ``up()`` recognises the dead pid and starts a new broker (with log recovery)."""
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        if wait_gone([pid], timeout_s):
            raise StackError(f"broker {pid} survived SIGKILL")
        return pid


@contextmanager
def broker(port: int, *, log: Log = say, echo: bool = True) -> Iterator[str]:
    """The local broker on ``port`` for the block: its bootstrap address. Started (and stopped
    afterwards) unless one already runs there; ``echo`` passes the script's progress to
    ``log``."""
    b = Broker(port, log, echo)
    try:
        b.ensure()
        yield b.bootstrap
    finally:
        b.release()


@contextmanager
def broker_at(bootstrap: str, *, log: Log = say, echo: bool = True) -> Iterator[str]:
    """The broker at ``bootstrap`` for the block (yielded as given). One that answers is used
    as is; otherwise, if the address is a single port on this host, a local broker is started
    there and stopped afterwards. StackError for a remote address that does not answer."""
    port = local_port(bootstrap)
    if port is None:
        if not broker_answers(bootstrap):
            raise StackError(f"no broker answers at {bootstrap}")
        yield bootstrap
        return
    with broker(port, log=log, echo=echo):
        yield bootstrap


# --------------------------------------------------------------------------------------------
# Flink session cluster
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlinkCluster:
    """A session cluster to submit to."""

    rest: str
    """REST address, host:port."""
    hash_key: str
    """The PIPELINE_HASH_KEY its TaskManagers have, so callers can compute fingerprints."""
    log_dir: Path | None = None
    """The JobManager/TaskManager logs, when this process started the cluster."""


def rest_port(rest: str) -> str:
    return rest.rsplit(":", 1)[-1]


class SessionCluster(_ScriptService):
    """The standalone session cluster of ``scripts/flink-cluster.sh`` at ``rest`` (state in
    .local/flink-<rest port>/), and its JobManager/TaskManager processes, found by main class
    and ``--configDir``.

    ``taskmanagers`` / ``task_slots`` set FLINK_TASKMANAGERS / FLINK_TASK_SLOTS unless ``env``
    (default: this process's environment) already does; the TaskManagers get ``hash_key`` as
    PIPELINE_HASH_KEY.
    """

    script = "flink-cluster.sh"
    what = "a Flink session cluster"

    def __init__(
        self,
        rest: str,
        hash_key: str,
        *,
        taskmanagers: int | None = None,
        task_slots: int | None = None,
        env: Mapping[str, str] | None = None,
        log: Log = say,
        echo: bool = True,
    ) -> None:
        self.rest = rest
        self.api = Rest(rest)
        self.hash_key = hash_key
        self.state = LOCAL / f"flink-{rest_port(rest)}"
        self.conf = self.state / "conf"
        self.checkpoints = self.state / "checkpoints"
        # scripts/flink-cluster.sh keeps this cluster's pid files here (FLINK_PID_DIR).
        self.pid_dir = self.state
        self._base_env = dict(os.environ if env is None else env)
        self._taskmanagers = taskmanagers
        self._task_slots = task_slots
        super().__init__(rest, self.state / "log", log, echo)

    def env(self) -> dict[str, str]:
        """The environment of the script and of daemons started directly (``start_daemon``):
        the cluster's own configuration, logs and pid files, as the script sets them."""
        base = dict(self._base_env)
        if self._taskmanagers is not None:
            base.setdefault("FLINK_TASKMANAGERS", str(self._taskmanagers))
        if self._task_slots is not None:
            base.setdefault("FLINK_TASK_SLOTS", str(self._task_slots))
        return script_env(
            base,
            {
                "FLINK_REST": self.rest,
                "FLINK_CONF_DIR": str(self.conf),
                "FLINK_LOG_DIR": str(self.log_dir),
                "FLINK_LIB_DIR": str(self.state / "lib"),
                # The default (/tmp) is shared by every Flink cluster on the host, and
                # `stop-all` would stop them all.
                "FLINK_PID_DIR": str(self.pid_dir),
                "PIPELINE_HASH_KEY": self.hash_key,
            },
            # The script derives the RPC port from the REST port; one set for another cluster
            # would collide.
            ("FLINK_RPC_PORT",),
        )

    def answering(self) -> bool:
        """Whether a JobManager answers REST at this address."""
        try:
            self.api.call("GET", "/overview")
            return True
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_answering(self, timeout_s: float) -> None:
        """Until the JobManager answers REST (after a restart); StackError at the deadline."""
        wait_for(f"JobManager on {self.rest} answering REST", self.answering, timeout_s)

    def up(self) -> None:
        """Start it and return once its TaskManagers registered their slots; a no-op when it
        runs."""
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self._run("up")

    def down(self) -> None:
        """Stop every JobManager and TaskManager of this cluster: the script first, then any
        survivor (one restarted by hand, or a script that gave up) with SIGTERM, SIGKILL."""
        if self.pid_dir.is_dir():
            self._clean_pid_files()
        if (self.conf / "config.yaml").exists():
            proc = self._script("down")
            if proc.returncode != 0:
                self._log(str(failure(proc)))
        left = self.pids()
        if left:
            self._log(f"cluster processes still running after down: {left}; terminating")
            send_signal(left, signal.SIGTERM)
            left = wait_gone(left, 20)
            send_signal(left, signal.SIGKILL)
            left = wait_gone(left, 10)
            if left:
                raise StackError(f"cluster processes {left} survived SIGKILL")

    def _clean_pid_files(self) -> None:
        # kill -9 leaves dead pids in the pid files, and pids are reused (pid_max may be 32768):
        # keep only this cluster's live daemons before `stop-all` signals every listed pid.
        live = set(self.pids())
        for f in self.pid_dir.glob("*.pid"):
            kept = [line for line in f.read_text().split() if line.isdigit() and int(line) in live]
            f.write_text("".join(f"{p}\n" for p in kept))

    def ensure(self, *, reuse: bool = True, hint: str = "") -> bool:
        """Start the cluster; whether this call started it. One already answering is used
        with ``reuse`` (its TaskManagers' hash key is then whatever they were started with),
        and refused otherwise (StackError, ``hint`` appended). A failed start still counts as
        started, so ``release()`` stops what it left behind."""
        if self.answering() and not reuse:
            raise StackError(
                f"a Flink cluster already answers on {self.rest} with a hash key this run "
                f"does not know; stop it (FLINK_REST={self.rest} scripts/flink-cluster.sh "
                f"down){hint}"
            )
        return super().ensure()

    def in_use(self) -> bool:
        return self.answering()

    def pids(self, main_class: str | None = None) -> list[int]:
        """Live JobManager and TaskManager processes of this cluster (or those of
        ``main_class``), sorted."""
        conf = str(self.conf)
        classes = (main_class,) if main_class else (JM_CLASS, TM_CLASS)
        out = []
        for p in all_pids():
            args = cmdline(p)
            if (
                "--configDir" in args
                and conf in args
                and any(c in args for c in classes)
                and alive(p)
            ):
                out.append(p)
        return sorted(out)

    def tm_pids(self) -> list[int]:
        return self.pids(TM_CLASS)

    def jm_pids(self) -> list[int]:
        return self.pids(JM_CLASS)

    def start_daemon(self, script: str) -> None:
        """One more daemon with the cluster's environment: ``taskmanager.sh`` or
        ``jobmanager.sh`` (a restart after a kill, as a supervisor would)."""
        proc = run_script([str(flink_home() / "bin" / script), "start"], self.env(), timeout_s=60)
        if proc.returncode != 0:
            raise failure(proc)


@contextmanager
def session_cluster(
    rest: str,
    hash_key: str,
    *,
    reuse: bool = False,
    hint: str = "",
    taskmanagers: int | None = None,
    task_slots: int | None = None,
    log: Log = say,
    echo: bool = True,
) -> Iterator[FlinkCluster]:
    """The session cluster at ``rest`` for the block, started with ``hash_key`` and stopped
    afterwards; one already answering is used with ``reuse`` and refused otherwise (see
    ``SessionCluster.ensure``)."""
    cluster = SessionCluster(
        rest, hash_key, taskmanagers=taskmanagers, task_slots=task_slots, log=log, echo=echo
    )
    try:
        started = cluster.ensure(reuse=reuse, hint=hint)
        yield FlinkCluster(rest, hash_key, cluster.log_dir if started else None)
    finally:
        cluster.release()


# --------------------------------------------------------------------------------------------
# Pinot
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PinotCluster:
    """Where Pinot answers."""

    controller: str
    """Controller base URL, e.g. http://127.0.0.1:19000."""
    broker: str
    """Broker base URL (POST /query/sql), e.g. http://127.0.0.1:18099."""


def pinot_ports(controller_port: int) -> dict[str, int]:
    """Every port of one local Pinot, derived from its controller port so that clusters on
    different controller ports never share one; 9000 gives the script's defaults (broker
    8099, ZooKeeper 2181, server 8098, server admin 8097)."""
    return {
        "controller": controller_port,
        "broker": controller_port - 901,
        "zk": controller_port - 6819,
        "server": controller_port - 902,
        "server_admin": controller_port - 903,
    }


class LocalPinot(_ScriptService):
    """The local Pinot of ``scripts/pinot.sh`` (ZooKeeper, controller, broker, server) on the
    ports ``pinot_ports(controller_port)`` gives (state in .local/pinot-<controller port>/)."""

    script = "pinot.sh"
    what = "Pinot"
    timeout_env = "PINOT_READY_TIMEOUT"
    timeout_default_s = 120

    def __init__(self, controller_port: int, log: Log = say, echo: bool = True) -> None:
        self.ports = pinot_ports(controller_port)
        self.urls = PinotCluster(
            f"http://{HOST}:{self.ports['controller']}", f"http://{HOST}:{self.ports['broker']}"
        )
        self.state = LOCAL / f"pinot-{controller_port}"
        super().__init__(self.urls.controller, self.state / "logs", log, echo)

    def env(self) -> dict[str, str]:
        return script_env(
            os.environ, {f"PINOT_{name.upper()}_PORT": str(p) for name, p in self.ports.items()}
        )

    def running(self) -> bool:
        """Whether its processes run and ZooKeeper, controller, broker and server are healthy."""
        return self._script("status").returncode == 0

    def in_use(self) -> bool:
        return self.running()


@contextmanager
def pinot(controller_port: int, *, log: Log = say, echo: bool = True) -> Iterator[PinotCluster]:
    """Pinot on ``controller_port`` (and the ports derived from it) for the block; started,
    and stopped afterwards, unless it already runs."""
    p = LocalPinot(controller_port, log, echo)
    try:
        p.ensure()
        yield p.urls
    finally:
        p.release()


# --------------------------------------------------------------------------------------------
# The dashboard
# --------------------------------------------------------------------------------------------


def stop_group(proc: subprocess.Popen[Any], timeout_s: float) -> None:
    """Stop ``proc``, started with ``start_new_session=True``, and everything in its process
    group: SIGTERM, then SIGKILL after ``timeout_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def dashboard(
    broker_url: str,
    port: int,
    token_secret: str,
    *,
    log_path: Path | None = None,
    log: Log = say,
    refresh_s: float = 2.0,
) -> Iterator[str]:
    """The dashboard (``python -m dashboard run --operator``) over the Pinot broker at
    ``broker_url`` on ``127.0.0.1:port`` for the block, signing portal tokens with
    ``token_secret``; yields its base URL once Streamlit's health check answers. Always started
    here and stopped afterwards: a dashboard already on the port would hold another secret."""
    import urllib.request

    if port_open(port):
        raise StackError(f"port {port} is taken: cannot start the dashboard there")
    url = f"http://{HOST}:{port}"
    env = script_env(
        os.environ,
        {
            "DASHBOARD_TOKEN_SECRET": token_secret,
            "DASHBOARD_REFRESH_S": f"{refresh_s:g}",
            "PYTHONPATH": str(REPO),
        },
        drop=("DASHBOARD_DEMO",),
    )
    argv = [sys.executable, "-m", "dashboard", "run", "--operator"]
    argv += ["--broker", broker_url, "--port", str(port)]
    out: IO[bytes] | int = (
        open(log_path, "ab") if log_path is not None else subprocess.DEVNULL  # noqa: SIM115
    )
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )

    def healthy() -> bool:
        if proc.poll() is not None:
            raise StackError(f"the dashboard exited with {proc.returncode} (log: {log_path})")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_for(f"the dashboard on {url}", healthy, 60, poll_s=0.25)
        log(f"dashboard: {url} (Pinot broker {broker_url})")
        yield url
    finally:
        # The group: `python -m dashboard run` and the Streamlit server it started.
        stop_group(proc, 15)
        if not isinstance(out, int):
            out.close()
