"""testkit.stack's own logic without any JVM: addresses and ports, the scripts' environments,
the decision to start or reuse (and so whether to stop), the script runner, and the process
helpers the fault suite relies on. The real components run in tests/integration."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from testkit import stack
from testkit.stack import (
    Broker,
    LocalPinot,
    SessionCluster,
    StackError,
    local_port,
    pinot_ports,
    ready_timeout,
    run_script,
    script_env,
    wait_for,
)


@pytest.mark.parametrize(
    ("bootstrap", "port"),
    [
        ("127.0.0.1:19092", 19092),
        ("localhost:9092", 9092),
        (" 127.0.0.1:49092 ", 49092),
        ("kafka:9092", None),
        ("127.0.0.1:9092,127.0.0.1:9093", None),
        ("127.0.0.1", None),
        ("127.0.0.1:x", None),
    ],
)
def test_local_port_only_for_one_broker_on_this_host(bootstrap: str, port: int | None) -> None:
    assert local_port(bootstrap) == port


def test_pinot_ports_default_to_the_scripts_defaults_and_stay_apart() -> None:
    # scripts/pinot.sh's own defaults, from controller port 9000.
    assert pinot_ports(9000) == {
        "controller": 9000,
        "broker": 8099,
        "zk": 2181,
        "server": 8098,
        "server_admin": 8097,
    }
    test = pinot_ports(19000)
    assert test == {
        "controller": 19000,
        "broker": 18099,
        "zk": 12181,
        "server": 18098,
        "server_admin": 18097,
    }
    assert not set(test.values()) & set(pinot_ports(9000).values())


def test_pinot_env_names_every_port_the_script_reads() -> None:
    env = LocalPinot(19000).env()
    assert env["PINOT_CONTROLLER_PORT"] == "19000"
    assert env["PINOT_BROKER_PORT"] == "18099"
    assert env["PINOT_ZK_PORT"] == "12181"
    assert env["PINOT_SERVER_PORT"] == "18098"
    assert env["PINOT_SERVER_ADMIN_PORT"] == "18097"
    script = (stack.SCRIPTS / "pinot.sh").read_text()
    for var in ("PINOT_CONTROLLER_PORT", "PINOT_BROKER_PORT", "PINOT_ZK_PORT"):
        assert f'{var}="${{{var}:-' in script


def test_script_env_sets_and_drops() -> None:
    env = script_env({"A": "1", "DROP": "x", "B": "2"}, {"B": "3"}, ("DROP",))
    assert env == {"A": "1", "B": "3"}


def test_broker_env_derives_the_controller_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_CONTROLLER_PORT", "10092")  # chosen for another broker
    b = Broker(19092)
    env = b.env()
    assert env["KAFKA_PORT"] == "19092"
    assert "KAFKA_CONTROLLER_PORT" not in env
    assert b.bootstrap == "127.0.0.1:19092"
    assert b.state == stack.LOCAL / "kafka-19092"


def test_cluster_env_is_the_clusters_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLINK_RPC_PORT", "6123")
    monkeypatch.delenv("FLINK_TASKMANAGERS", raising=False)
    c = SessionCluster("127.0.0.1:18081", "k" * 64, taskmanagers=2, task_slots=1)
    env = c.env()
    assert "FLINK_RPC_PORT" not in env
    assert env["FLINK_REST"] == "127.0.0.1:18081"
    assert env["PIPELINE_HASH_KEY"] == "k" * 64
    assert env["FLINK_PID_DIR"] == str(stack.LOCAL / "flink-18081")
    assert env["FLINK_CONF_DIR"] == str(stack.LOCAL / "flink-18081" / "conf")
    assert (env["FLINK_TASKMANAGERS"], env["FLINK_TASK_SLOTS"]) == ("2", "1")


def test_cluster_size_from_the_environment_wins() -> None:
    c = SessionCluster(
        "127.0.0.1:48081", "k", taskmanagers=2, task_slots=1, env={"FLINK_TASKMANAGERS": "3"}
    )
    env = c.env()
    assert (env["FLINK_TASKMANAGERS"], env["FLINK_TASK_SLOTS"]) == ("3", "1")


def test_ready_timeout_follows_the_scripts_own_wait() -> None:
    assert ready_timeout({}, "KAFKA_READY_TIMEOUT", 90, 90) == 180
    assert ready_timeout({"KAFKA_READY_TIMEOUT": "300"}, "KAFKA_READY_TIMEOUT", 90, 90) == 390
    assert ready_timeout({"KAFKA_READY_TIMEOUT": "soon"}, "KAFKA_READY_TIMEOUT", 90, 90) == 180


# -- start or reuse, and stop only what was started -------------------------------------------


class FakeBroker(Broker):
    def __init__(
        self, running: bool = False, answers: bool = False, up_fails: bool = False
    ) -> None:
        self.lines: list[str] = []
        super().__init__(1, self.lines.append)
        self._running = running
        self._answers = answers
        self._up_fails = up_fails
        self.calls: list[str] = []

    def running(self) -> bool:
        return self._running

    def answers(self) -> bool:
        return self._answers

    def up(self) -> None:
        self.calls.append("up")
        if self._up_fails:
            raise StackError("scripts/kafka.sh up failed (exit 1)")

    def down(self) -> None:
        self.calls.append("down")


@pytest.mark.parametrize(("running", "answers"), [(True, False), (False, True)])
def test_broker_already_there_is_used_and_left_running(running: bool, answers: bool) -> None:
    b = FakeBroker(running=running, answers=answers)
    assert b.ensure() is False
    b.release()
    assert b.calls == []
    assert "already running; using it" in b.lines[0]


def test_broker_started_here_is_stopped_here() -> None:
    b = FakeBroker()
    assert b.ensure() is True
    b.release()
    b.release()  # once only
    assert b.calls == ["up", "down"]


def test_broker_whose_start_failed_is_still_stopped() -> None:
    b = FakeBroker(up_fails=True)
    with pytest.raises(StackError):
        b.ensure()
    b.release()
    assert b.calls == ["up", "down"]


def test_broker_context_stops_it_after_an_error_in_the_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[FakeBroker] = []

    def fake(port: int, log: stack.Log, echo: bool) -> FakeBroker:
        made.append(FakeBroker())
        return made[-1]

    monkeypatch.setattr(stack, "Broker", fake)
    with pytest.raises(ZeroDivisionError), stack.broker(1) as bootstrap:
        assert bootstrap == "127.0.0.1:1"
        _ = 1 / 0
    assert made[0].calls == ["up", "down"]


def test_remote_broker_that_does_not_answer_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "broker_answers", lambda bootstrap, timeout_s=5.0: False)
    with (
        pytest.raises(StackError, match="no broker answers at kafka:9092"),
        stack.broker_at("kafka:9092"),
    ):
        pass
    monkeypatch.setattr(stack, "broker_answers", lambda bootstrap, timeout_s=5.0: True)
    with stack.broker_at("kafka:9092") as bootstrap:
        assert bootstrap == "kafka:9092"


class FakeCluster(SessionCluster):
    def __init__(self, answering: bool) -> None:
        self.lines: list[str] = []
        super().__init__("127.0.0.1:1", "k", log=self.lines.append)
        self._answering = answering
        self.calls: list[str] = []

    def answering(self) -> bool:
        return self._answering

    def up(self) -> None:
        self.calls.append("up")

    def down(self) -> None:
        self.calls.append("down")


def test_cluster_already_answering_is_refused_unless_reused() -> None:
    c = FakeCluster(answering=True)
    with pytest.raises(StackError, match=r"scripts/flink-cluster.sh down\) or choose --x$"):
        c.ensure(reuse=False, hint=" or choose --x")
    assert c.ensure(reuse=True) is False
    c.release()
    assert c.calls == []


def test_cluster_started_here_is_stopped_here() -> None:
    c = FakeCluster(answering=False)
    assert c.ensure(reuse=True) is True
    c.release()
    assert c.calls == ["up", "down"]


# -- the script runner ------------------------------------------------------------------------


def _sh(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "s.sh"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return [str(script)]


def test_run_script_passes_lines_on_and_keeps_both_streams(tmp_path: Path) -> None:
    seen: list[str] = []
    proc = run_script(
        _sh(tmp_path, "echo one; echo two >&2; exit 3"), os.environ, log=seen.append, timeout_s=30
    )
    assert seen == ["one", "two"]
    assert proc.returncode == 3
    assert proc.stdout == "one\ntwo\n"
    error = stack.failure(proc)
    assert "failed (exit 3)" in str(error) and "two" in str(error)


def test_run_script_kills_a_script_past_its_timeout(tmp_path: Path) -> None:
    with pytest.raises(StackError, match="still running after 0 s; killed"):
        run_script(_sh(tmp_path, "echo started; exec sleep 30"), os.environ, timeout_s=0.3)


def test_wait_for_returns_once_the_condition_holds_and_fails_at_the_deadline() -> None:
    answers = iter([False, False, True])
    wait_for("thing", lambda: next(answers), timeout_s=5, poll_s=0.01)
    with pytest.raises(StackError, match="never: not within 0 s"):
        wait_for("never", lambda: False, timeout_s=0.05, poll_s=0.01)


# -- processes --------------------------------------------------------------------------------


def test_process_helpers_on_a_child() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert stack.alive(child.pid)
        # Right after the fork the child may not have exec'ed Python yet.
        wait_for(
            "child's command line",
            lambda: "time.sleep(60)" in " ".join(stack.cmdline(child.pid)),
            timeout_s=10,
            poll_s=0.01,
        )
        assert child.pid in stack.descendants(os.getpid())
        stack.send_signal([child.pid], signal.SIGKILL)
        child.wait(10)  # reaped: gone, not a zombie
        assert stack.wait_gone([child.pid], 5) == []
        assert not stack.alive(child.pid)
        assert stack.cmdline(child.pid) == []
        stack.send_signal([child.pid], signal.SIGKILL)  # gone already: no error
    finally:
        child.kill()
        child.wait()


def test_broker_pid_needs_the_scripts_pid_file() -> None:
    with pytest.raises(StackError, match="no broker pid file"):
        Broker(1).pid()
