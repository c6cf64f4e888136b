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
