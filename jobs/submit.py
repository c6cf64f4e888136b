"""Submit the pipeline to a running Flink cluster as `flink run` does; stop it with a savepoint.

    python -m jobs.submit <jobs.gateway_pipeline flags> [--wait] [--from-savepoint PATH]
        [--allow-non-restored-state]
    python -m jobs.submit --stop-with-savepoint JOB_ID

The job's own flags pass through unchanged to ``python -m jobs.gateway_pipeline``, which runs as
the Flink client program (``flink run -pym``) and submits the job graph; the operators execute in
the cluster's TaskManagers. Shipped with the job: the project's Python code as a zip
(``-pyfs``), the worker interpreter (``-pyexec``, an environment with the requirements), and the
Kafka connector jar (``pipeline.jars``, uploaded at submission).

PIPELINE_HASH_KEY is not shipped: the TaskManagers' Python workers read it from their own
environment, so it appears in no job graph, configuration, web UI page or log.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metering.settings import PipelineSettings, build_parser

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("jobs", "udfs", "metering", "schemas")
LOCAL_STATE = REPO_ROOT / ".local"
TERMINAL = {"FINISHED", "FAILED", "CANCELED", "SUSPENDED"}
_JOB_ID = re.compile(r"JobID ([0-9a-f]{32})")


class SubmitError(RuntimeError):
    pass


@dataclass(frozen=True)
class Rest:
    """The cluster's REST API (``FLINK_REST`` / ``--flink-rest``)."""

    address: str
    timeout_s: float = 30.0

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://{self.address}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            return json.loads(resp.read() or b"null")

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/jobs/{job_id}")
        return result

    def await_job(
        self, job_id: str, done: set[str], timeout_s: float, running_tasks: bool = False
    ) -> dict[str, Any]:
        """Poll until the job is in one of ``done`` (and, if asked, every task is RUNNING)."""
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.job(job_id)
            state = info["state"]
            tasks_ok = not running_tasks or all(
                v["status"] in ("RUNNING", "FINISHED") for v in info.get("vertices", [])
            )
            if state in done and tasks_ok:
                return info
            if state in TERMINAL and state not in done:
                raise SubmitError(f"job {job_id} ended {state}")
            if time.monotonic() > deadline:
                raise SubmitError(f"job {job_id} still {state} after {timeout_s:.0f}s")
            time.sleep(0.5)

    def stop_with_savepoint(self, job_id: str, timeout_s: float, drain: bool = False) -> str:
        """Stop with a savepoint; ``drain`` first advances event time to the end, firing every
        open window. For a final stop; in an upgrade, events that arrive later for a window the
        drain fired open it again in the next run, which emits it a second time with their
        count (the one exception: changing the keyed functions' execution mode, README)."""
        trigger = self.call(
            "POST", f"/jobs/{job_id}/stop", {"drain": drain, "formatType": "CANONICAL"}
        )
        request_id = trigger["request-id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.call("GET", f"/jobs/{job_id}/savepoints/{request_id}")
            if status["status"]["id"] == "COMPLETED":
                operation = status["operation"]
                if "failure-cause" in operation:
                    cause = operation["failure-cause"].get("stack-trace", "")[:2000]
                    raise SubmitError(f"stop-with-savepoint failed: {cause}")
                return str(operation["location"])
            time.sleep(0.5)
        raise SubmitError(f"savepoint of {job_id} not complete after {timeout_s:.0f}s")


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def build_code_zip(target: Path = LOCAL_STATE / "pipeline-code.zip") -> Path:
    """The project's packages as one zip for ``-pyfs`` (sources only, no caches)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in PACKAGES:
            for path in sorted((REPO_ROOT / package).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    zf.write(path, path.relative_to(REPO_ROOT).as_posix())
    tmp.replace(target)
    return target


def passthrough_flags(ns: argparse.Namespace) -> list[str]:
    """The pipeline flags the caller gave, rebuilt for ``jobs.gateway_pipeline``."""
    out: list[str] = []
    for name in PipelineSettings.model_fields:
        value = getattr(ns, name, None)
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        else:
            out.extend([flag, str(value)])
    return out


def flink_run_command(
    rest: str,
    job_flags: list[str],
    python: str,
    code_zip: Path,
    from_savepoint: str | None,
    allow_non_restored_state: bool = False,
) -> list[str]:
    cmd = [str(flink_home() / "bin/flink"), "run", "--detached", "-m", rest]
    if from_savepoint:
        cmd += ["--fromSavepoint", from_savepoint]
        if allow_non_restored_state:
            cmd.append("--allowNonRestoredState")
    cmd += [
        "-pyclientexec",
        python,
        "-pyexec",
        python,
        "-pyfs",
        str(code_zip),
        "-pym",
        "jobs.gateway_pipeline",
    ]
    return cmd + job_flags


def _parser() -> argparse.ArgumentParser:
    parser = build_parser("python -m jobs.submit", __doc__ or "")
    group = parser.add_argument_group("submission")
    group.add_argument(
        "--flink-rest",
        default=os.environ.get("FLINK_REST", "127.0.0.1:8081"),
        help="REST endpoint of the cluster [env FLINK_REST] (default: 127.0.0.1:8081)",
    )
    group.add_argument(
        "--python",
        default=os.environ.get("PIPELINE_WORKER_PYTHON", sys.executable),
        help="Python interpreter of the client and the TaskManager workers, with the "
        "requirements installed [env PIPELINE_WORKER_PYTHON] (default: this interpreter)",
    )
    group.add_argument("--wait", action="store_true", help="block until the job finishes")
    group.add_argument("--from-savepoint", metavar="PATH", help="resume from this savepoint")
    group.add_argument(
        "--allow-non-restored-state",
        action="store_true",
        help="with --from-savepoint: drop the savepoint's state that no operator of the job "
        "takes, e.g. the keyed functions' after a change of --execution-mode (README)",
    )
    group.add_argument(
        "--stop-with-savepoint",
        metavar="JOB_ID",
        help="stop a running job with a savepoint, print its path, and exit",
    )
    group.add_argument(
        "--drain",
        action="store_true",
        help="with --stop-with-savepoint: close every open window first (a final stop, or "
        "before changing --execution-mode: README)",
    )
    group.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each step")
    return parser


def submit(
    ns: argparse.Namespace, env: dict[str, str], log: Any = print
) -> tuple[str, dict[str, float]]:
    """Submit; return the job id and timings (seconds) of the steps."""
    rest = Rest(ns.flink_rest)
    t0 = time.monotonic()
    code_zip = build_code_zip()
    cmd = flink_run_command(
        ns.flink_rest,
        passthrough_flags(ns),
        ns.python,
        code_zip,
        ns.from_savepoint,
        ns.allow_non_restored_state,
    )
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    match = _JOB_ID.search(proc.stdout + proc.stderr)
    if proc.returncode != 0 or match is None:
        raise SubmitError(
            f"flink run failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}"
        )
    job_id = match.group(1)
    t_submitted = time.monotonic()
    log(f"submitted job {job_id} in {t_submitted - t0:.1f}s")
    rest.await_job(job_id, {"RUNNING", "FINISHED"}, ns.timeout, running_tasks=True)
    t_running = time.monotonic()
    log(f"job {job_id} running {t_running - t0:.1f}s after submission started")
    return job_id, {"submit": t_submitted - t0, "running": t_running - t0}


def client_environment(rest: str) -> dict[str, str]:
    env = dict(os.environ)
    # The local session cluster's config (masking log4j, defaults) for the flink client, if
    # scripts/flink-cluster.sh started the cluster at this address.
    local_conf = LOCAL_STATE / f"flink-{rest.rsplit(':', 1)[-1]}" / "conf"
    if local_conf.is_dir():
        env.setdefault("FLINK_CONF_DIR", str(local_conf))
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    ns = parser.parse_args(argv)
    if ns.allow_non_restored_state and not ns.from_savepoint:
        parser.error("--allow-non-restored-state needs --from-savepoint")
    rest = Rest(ns.flink_rest)
    try:
        if ns.stop_with_savepoint:
            t0 = time.monotonic()
            location = rest.stop_with_savepoint(ns.stop_with_savepoint, ns.timeout, ns.drain)
            print(f"savepoint {location} ({time.monotonic() - t0:.1f}s)", file=sys.stderr)
            print(location)
            return 0
        job_id, _ = submit(
            ns, client_environment(ns.flink_rest), log=lambda m: print(m, file=sys.stderr)
        )
        print(job_id)
        if ns.wait:
            info = rest.await_job(job_id, TERMINAL, ns.timeout)
            print(f"job {job_id} {info['state']}", file=sys.stderr)
            return 0 if info["state"] == "FINISHED" else 1
        return 0
    except (SubmitError, urllib.error.URLError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
