"""The detector's state TTL must be buildable inside a TaskManager, where PyFlink has no Py4J
gateway: building a Duration there launches a JVM or fails (thread mode, PyFlink 2.2.1)."""

from __future__ import annotations

import pyflink.common.time
import pytest

from udfs.functions import detector_state_ttl


def test_the_ttl_config_needs_no_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_gateway() -> None:
        raise AssertionError("get_gateway() called: a TaskManager would start a JVM here")

    monkeypatch.setattr(pyflink.common.time, "get_gateway", no_gateway)
    ttl = detector_state_ttl(48)
    cleanup = ttl.get_cleanup_strategies()
    # Still cleaned up in the background, on the heap and on RocksDB, as Flink's default does.
    assert cleanup.get_incremental_cleanup_strategy().get_cleanup_size() == 5
    assert cleanup.get_rocksdb_compact_filter_cleanup_strategy() is not None
    assert ttl.get_ttl().to_milliseconds() == 48 * 3600 * 1000


def test_the_implicit_default_would_need_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from pyflink.common import Time
    from pyflink.datastream.state import StateTtlConfig

    calls: list[str] = []

    def no_gateway() -> None:
        calls.append("get_gateway")
        raise RuntimeError("no gateway")

    monkeypatch.setattr(pyflink.common.time, "get_gateway", no_gateway)
    implicit = StateTtlConfig.new_builder(Time.hours(1)).build()
    with pytest.raises(RuntimeError):
        implicit.get_cleanup_strategies().get_rocksdb_compact_filter_cleanup_strategy()
    assert calls == ["get_gateway"]


def test_client_keys_have_a_state_of_their_own_with_a_shorter_ttl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from udfs.functions import (
        CLIENT_DETECTOR_STATE,
        DETECTOR_STATE,
        detector_state_descriptors,
        detector_state_name,
    )

    def no_gateway() -> None:
        raise AssertionError("get_gateway() called: a TaskManager would start a JVM here")

    monkeypatch.setattr(pyflink.common.time, "get_gateway", no_gateway)
    descriptors = detector_state_descriptors(168, 1)
    ttl_ms = {name: d._ttl_config.get_ttl().to_milliseconds() for name, d in descriptors.items()}
    assert ttl_ms == {DETECTOR_STATE: 168 * 3600 * 1000, CLIENT_DETECTOR_STATE: 3600 * 1000}
    # Rejected calls per client network (many, short-lived keys) against everything else.
    assert detector_state_name("client:0fafaa6cf7ee3f1e96c13c438b2d8657") == CLIENT_DETECTOR_STATE
    for key in ("acme-analytics", "key:0fafaa6cf7ee3f1e", "anonymous", "clientele"):
        assert detector_state_name(key) == DETECTOR_STATE
