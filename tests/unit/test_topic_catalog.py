"""The topic catalog (metering.topics) and what derives from it agree; no JVM, no broker.

The catalog declares each topic once. Checked here: the catalog itself, the settings' topic fields
(with the flag and environment-variable names users' configurations rely on), the job's sinks and
the ``Outputs`` they read, tools.topics (``make topics``) and the bench's topics and job flags.
docker-compose.yml is checked against the catalog in test_deploy_files.py, and
deploy/redpanda/provision.sh in test_k8s_and_provisioning.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest

import tools.topics
from bench.run import Topics, job_flags, options_from_args
from jobs.gateway_pipeline import Outputs
from jobs.kafka_tables import sink_specs, sink_table
from metering.records import DEFAULT_MAX_EVENT_AGE_S
from metering.settings import ENV_PREFIX, PipelineSettings, build_parser, settings_from_args
from metering.topics import (
    BY_ROLE,
    JOB_SERVICE_INPUTS,
    LOCAL_PARTITIONS,
    OUTPUTS,
    ROLES,
    SERVICE_TOPICS,
    TOPICS,
    sink_of,
)
from schemas.events import OUTPUT_MODELS
from tools.topics import TopicSpec, job_topic_flags, named_pipeline_topics, pipeline_topics

# What users' flags and environments name; renaming any of them breaks their configurations.
PUBLISHED_TOPIC_SETTINGS = {
    "raw": ("--raw-topic", "PIPELINE_RAW_TOPIC", "gateway.raw"),
    "enriched": ("--enriched-topic", "PIPELINE_ENRICHED_TOPIC", "gateway.enriched"),
    "usage": ("--usage-topic", "PIPELINE_USAGE_TOPIC", "gateway.usage"),
    "dlq": ("--dlq-topic", "PIPELINE_DLQ_TOPIC", "gateway.dlq"),
    "alerts": ("--alerts-topic", "PIPELINE_ALERTS_TOPIC", "gateway.alerts"),
    "reconciliation": (
        "--reconciliation-topic",
        "PIPELINE_RECONCILIATION_TOPIC",
        "gateway.reconciliation",
    ),
    "period_usage": (
        "--period-usage-topic",
        "PIPELINE_PERIOD_USAGE_TOPIC",
        "gateway.billing.period-usage",
    ),
    "quota_signals": (
        "--quota-signals-topic",
        "PIPELINE_QUOTA_SIGNALS_TOPIC",
        "gateway.billing.quota-signals",
    ),
    "balance_signals": (
        "--balance-signals-topic",
        "PIPELINE_BALANCE_SIGNALS_TOPIC",
        "gateway.billing.balance-signals",
    ),
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No topic variable of the developer's shell may leak into these tests."""
    for topic in TOPICS:
        monkeypatch.delenv(ENV_PREFIX + topic.setting.upper(), raising=False)


def captured_topics(monkeypatch: pytest.MonkeyPatch) -> dict[str, TopicSpec]:
    """What tools.topics asks the broker to create, recorded instead of sent."""
    created: dict[str, TopicSpec] = {}

    def ensure(bootstrap: str, topics: Mapping[str, TopicSpec], **_: Any) -> None:
        created.update(topics)

    monkeypatch.setattr(tools.topics, "ensure_topics", ensure)
    return created


# -- the catalog ---------------------------------------------------------------------------------


def test_each_topic_is_declared_once() -> None:
    assert len(ROLES) == len(TOPICS) == len({t.name for t in TOPICS})
    assert len({sink_of(t).output for t in OUTPUTS}) == len(OUTPUTS)
    assert [t.role for t in TOPICS if t.sink is None] == ["raw"]
    for t in TOPICS:
        assert t.partitions >= 1, t.role
        assert t.retention_ms > 0 and t.local_retention_ms > 0, t.role


def test_every_output_record_model_is_an_output_topics_value() -> None:
    assert sorted(str(t.value) for t in OUTPUTS) == sorted(OUTPUT_MODELS)
    assert all(t.value is None for t in TOPICS if t.sink is None)


def test_the_usage_topic_keeps_windows_as_long_as_late_corrections_refer_to_them() -> None:
    usage = BY_ROLE["usage"]
    assert min(usage.retention_ms, usage.local_retention_ms) >= DEFAULT_MAX_EVENT_AGE_S * 1000


def test_only_upsert_topics_are_compacted_and_they_are_keyed() -> None:
    for t in TOPICS:
        assert t.upsert == ("compact" in t.cleanup), t.role
        if t.upsert:
            assert t.key is not None and t.sink is not None, t.role


# -- settings ------------------------------------------------------------------------------------


def test_settings_have_a_field_per_topic_with_the_catalogs_default_and_help() -> None:
    fields = PipelineSettings.model_fields
    assert {name for name in fields if name.endswith("_topic")} == {t.setting for t in TOPICS}
    for t in TOPICS:
        assert fields[t.setting].default == t.name, t.role
        assert fields[t.setting].description == t.about, t.role


def test_topic_flags_and_environment_variables_keep_their_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert set(PUBLISHED_TOPIC_SETTINGS) == set(ROLES)
    options = build_parser("gateway_pipeline", "")._option_string_actions
    for role, (flag, env, default) in PUBLISHED_TOPIC_SETTINGS.items():
        assert BY_ROLE[role].flag == flag
        assert flag in options
        assert BY_ROLE[role].name == default
        monkeypatch.setenv(env, f"env.{role}")
    assert settings_from_args([]).topics_by_role() == {role: f"env.{role}" for role in ROLES}
    flags = [arg for role in ROLES for arg in (BY_ROLE[role].flag, f"flag.{role}")]
    assert settings_from_args(flags).topics_by_role() == {role: f"flag.{role}" for role in ROLES}


def test_a_configurable_delivery_has_a_setting_defaulting_to_the_catalogs() -> None:
    configurable = [t for t in OUTPUTS if sink_of(t).configurable]
    assert configurable, "alerts' delivery is a setting"
    for t in configurable:
        field = PipelineSettings.model_fields[f"{t.role}_delivery"]
        assert field.default == sink_of(t).delivery
        other = "exactly-once" if field.default == "at-least-once" else "at-least-once"
        chosen: dict[str, Any] = {f"{t.role}_delivery": other}
        assert PipelineSettings(**chosen).delivery(t) == other


# -- the job's sinks -----------------------------------------------------------------------------


def test_one_sink_per_output_topic_shaped_by_its_entry() -> None:
    names = {t.role: f"t.{t.role}" for t in TOPICS}
    cfg = settings_from_args([*job_topic_flags(names), "--transactional-id-prefix", "p"])
    specs = sink_specs(cfg)
    assert [s.topic for s in specs] == [names[t.role] for t in OUTPUTS]
    for t, spec in zip(OUTPUTS, specs, strict=True):
        assert spec.table == sink_table(t)
        assert spec.keyed == (t.key is not None), t.role
        assert spec.upsert == t.upsert, t.role
        assert spec.delivery == sink_of(t).delivery, t.role
        assert spec.transactional_id_prefix == f"p-{t.role}", t.role


def test_outputs_has_the_field_each_sink_reads() -> None:
    fields = {f.name for f in dataclasses.fields(Outputs)}
    assert fields == {sink_of(t).output for t in OUTPUTS}


# -- tools.topics (make topics) ------------------------------------------------------------------


def test_make_topics_creates_every_topic_with_its_local_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    created = captured_topics(monkeypatch)
    argv = ["--bootstrap-servers", "h:9092", "--usage-topic", "u", "--partitions", "3"]
    assert tools.topics.main(argv) == 0
    names = {t.role: t.name for t in (*TOPICS, *SERVICE_TOPICS)} | {"usage": "u"}
    assert set(created) == set(names.values())
    for t in (*TOPICS, *SERVICE_TOPICS):
        spec = created[names[t.role]]
        assert spec.partitions == 3
        assert spec.config == {
            "cleanup.policy": t.cleanup,
            "retention.ms": str(t.local_retention_ms),
        }, t.role
    assert capsys.readouterr().out.count(" ready ") == len(TOPICS) + len(SERVICE_TOPICS)


def test_make_topics_refuses_one_name_for_two_topics(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    created = captured_topics(monkeypatch)
    with pytest.raises(SystemExit) as exc:
        tools.topics.main(["--bootstrap-servers", "h:9092", "--dlq-topic", "gateway.raw"])
    assert exc.value.code == 2
    assert "must be distinct" in capsys.readouterr().err
    assert created == {}


def test_topic_sets_by_role() -> None:
    # With the billing inputs the job follows.
    assert pipeline_topics() == {
        t.name: TopicSpec(LOCAL_PARTITIONS, t.config()) for t in (*TOPICS, *JOB_SERVICE_INPUTS)
    }
    assert pipeline_topics(usage="u", partitions=1) == named_pipeline_topics(
        {t.role: t.name for t in TOPICS} | {"usage": "u"}, 1
    )
    # A subset: the bench creates only its outputs (and the inputs the job follows).
    assert set(named_pipeline_topics({"dlq": "d"})) == {"d"} | {t.name for t in JOB_SERVICE_INPUTS}
    with pytest.raises(ValueError, match="unknown topic roles"):
        named_pipeline_topics({"audit": "a"})
    with pytest.raises(ValueError, match="must be distinct"):
        named_pipeline_topics({"raw": "x", "dlq": "x"})


def test_job_topic_flags_give_the_job_its_topics() -> None:
    names = {t.role: f"t.{t.role}" for t in TOPICS}
    assert settings_from_args(job_topic_flags(names)).topics_by_role() == names


# -- the bench -----------------------------------------------------------------------------------


def test_the_bench_runs_the_job_on_a_topic_per_role() -> None:
    topics = Topics.for_run("bench.x.job.t", "bench.x.raw")
    assert tuple(topics.names) == ROLES
    assert topics.raw == "bench.x.raw"
    assert set(topics.outputs()) == {t.role for t in OUTPUTS}
    assert all(name.startswith("bench.x.job.t.") for name in topics.outputs().values())
    flags = job_flags(options_from_args([]), topics, "g", 1, "bench-job")
    assert settings_from_args(flags).topics_by_role() == topics.names
