"""The responder: reads the job's alerts and acts on them.

A long-running service beside the job (``python -m responder run``). It consumes the alerts
topic (read_committed, as a consumer group), decides per alert what to do from a policy file
(``responder.policy``), notifies (PagerDuty, Slack, a signed webhook, email to the consumer) and
may block the key at the gateway (APISIX or Kong Admin API), unblocking it after a TTL. Every
decision is a record on the actions topic, written in the same Kafka transaction as the consumed
alert offsets; ``responder.service`` documents the planned->done protocol that makes a restart
replay no notification and lose no action, and the window where it cannot.

Pure logic (decisions, ids, signatures, payloads, the circuit breaker, the read-back state) lives
in ``policy``, ``actions`` and ``notify``; I/O in ``notify`` (channels), ``gateways`` and
``service``.
"""
