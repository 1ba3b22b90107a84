"""Kafka administration: create runstream's topics."""

from __future__ import annotations

from runstream.schemas import Topics
from runstream.settings import Settings


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    wanted = [
        NewTopic(
            spec.name, settings.topic_partitions, settings.topic_replication, config=spec.config
        )
        for spec in Topics(settings.topic_prefix).specs()
    ]
    for future in admin.create_topics(wanted, request_timeout=timeout).values():
        try:
            future.result()
        except Exception as exc:
            if exc.args and exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise
