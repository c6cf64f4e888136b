"""Kafka client security (TLS, SASL) for the job's Kafka tables, as ``properties.*`` options."""

from __future__ import annotations

# The connector jar relocates the Kafka client, so class names in client configs carry its prefix.
SHADED = "org.apache.flink.kafka.shaded.org.apache.kafka"
SASL_PASSWORD_ENV = "PIPELINE_KAFKA_SASL_PASSWORD"
_LOGIN_MODULES = {
    "SCRAM-SHA-256": f"{SHADED}.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": f"{SHADED}.common.security.scram.ScramLoginModule",
    "PLAIN": f"{SHADED}.common.security.plain.PlainLoginModule",
}


def check_plain_over_tls(protocol: str, sasl_mechanism: str | None, allow: bool) -> None:
    """Refuse SASL/PLAIN without TLS unless ``allow`` (demo only): PLAIN sends the password itself,
    so over SASL_PLAINTEXT anyone on the network path reads it."""
    if sasl_mechanism == "PLAIN" and protocol == "SASL_PLAINTEXT" and not allow:
        raise ValueError(
            "SASL mechanism PLAIN over SASL_PLAINTEXT sends the password unencrypted; use "
            "SASL_SSL (or SCRAM), or for a local demo set kafka_allow_plain_without_tls"
        )


def kafka_security_options(
    protocol: str,
    sasl_mechanism: str | None = None,
    sasl_username: str | None = None,
    ssl_ca_location: str | None = None,
    allow_plain_without_tls: bool = False,
) -> dict[str, str]:
    """Client properties for TLS and SASL, as ``properties.*`` table options.

    The SASL password never enters the job: the JAAS line holds ``${env:...}``, which Kafka's
    EnvVarConfigProvider resolves inside each TaskManager from its own environment (a Kubernetes
    Secret there). The provider may read that one variable and nothing else, so no other
    secret (PIPELINE_HASH_KEY) can be pulled into a client config.
    """
    check_plain_over_tls(protocol, sasl_mechanism, allow_plain_without_tls)
    opts: dict[str, str] = {"properties.security.protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        opts["properties.ssl.endpoint.identification.algorithm"] = "https"
        if ssl_ca_location:
            opts["properties.ssl.truststore.type"] = "PEM"
            opts["properties.ssl.truststore.location"] = ssl_ca_location
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        if not sasl_mechanism or not sasl_username:
            raise ValueError(f"{protocol} needs a SASL mechanism and username")
        module = _LOGIN_MODULES[sasl_mechanism]
        opts |= {
            "properties.sasl.mechanism": sasl_mechanism,
            "properties.config.providers": "env",
            "properties.config.providers.env.class": (
                f"{SHADED}.common.config.provider.EnvVarConfigProvider"
            ),
            "properties.config.providers.env.param.allowlist.pattern": f"^{SASL_PASSWORD_ENV}$",
            "properties.sasl.jaas.config": (
                f'{module} required username="{_jaas_escape(sasl_username)}" '
                f'password="${{env:{SASL_PASSWORD_ENV}}}";'
            ),
        }
    elif sasl_mechanism:
        raise ValueError(f"a SASL mechanism needs SASL_PLAINTEXT or SASL_SSL, not {protocol}")
    return opts


def _jaas_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def librdkafka_security(
    protocol: str,
    sasl_mechanism: str | None,
    sasl_username: str | None,
    ssl_ca_location: str | None,
    sasl_password: str | None,
) -> dict[str, str]:
    """The same client security as ``kafka_security_options``, for a confluent_kafka (librdkafka)
    client in this process: the preflight's admin client. The password is given, not resolved
    from the environment, so the caller decides where it comes from and whether to skip."""
    conf = {"security.protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        conf["ssl.endpoint.identification.algorithm"] = "https"
        if ssl_ca_location:
            conf["ssl.ca.location"] = ssl_ca_location
    if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
        if not sasl_mechanism or not sasl_username or not sasl_password:
            raise ValueError(f"{protocol} needs a SASL mechanism, username and password")
        conf |= {
            "sasl.mechanism": sasl_mechanism,
            "sasl.username": sasl_username,
            "sasl.password": sasl_password,
        }
    return conf
