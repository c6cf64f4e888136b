"""Upgrades through a savepoint: the detector's uid, and the submitter's restore flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.gateway_pipeline import detector_uid
from jobs.submit import flink_run_command, main


def test_process_mode_keeps_the_uid_earlier_savepoints_hold() -> None:
    assert detector_uid("process") == "detect-anomalies"


def test_thread_mode_has_a_uid_of_its_own() -> None:
    # Its keyed state does not restore in process mode, so its savepoint must not map there.
    assert detector_uid("thread") == "detect-anomalies-thread"


def test_submit_passes_allow_non_restored_state_only_with_a_savepoint(tmp_path: Path) -> None:
    code = tmp_path / "code.zip"
    cmd = flink_run_command("h:8081", ["--parallelism", "2"], "py", code, "file:/sp", True)
    at = cmd.index("--fromSavepoint")
    assert cmd[at : at + 3] == ["--fromSavepoint", "file:/sp", "--allowNonRestoredState"]
    assert cmd[-2:] == ["--parallelism", "2"]
    assert "--allowNonRestoredState" not in flink_run_command("h:8081", [], "py", code, "file:/sp")
    assert "--allowNonRestoredState" not in flink_run_command("h:8081", [], "py", code, None, True)


def test_submit_refuses_allow_non_restored_state_without_a_savepoint(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--allow-non-restored-state"])
    assert exc.value.code == 2
    assert "--allow-non-restored-state needs --from-savepoint" in capsys.readouterr().err
