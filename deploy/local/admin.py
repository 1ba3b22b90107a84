"""Kafka administration: create runstream's topics with their intended configuration."""

from __future__ import annotations

from runstream.errors import StackError
from runstream.schemas.topics import Topics
from runstream.settings import Settings


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create every runstream topic that does not exist yet; returns the names created now.

    Existing topics are left as they are, even when their partition count differs from
    ``settings.topic_partitions``: repartitioning would break the per-run ordering of events.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    wanted = [
        NewTopic(
            spec.name,
            num_partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication,
            config=spec.config,
        )
        for spec in Topics(settings.topic_prefix).specs()
    ]
    # operation_timeout: return once the topics have leaders, so producers can use them at once.
    futures = admin.create_topics(wanted, request_timeout=timeout, operation_timeout=timeout)
    created: list[str] = []
    problems: list[str] = []
    for name, future in futures.items():
        try:
            future.result()
            created.append(name)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            text = error.str() if isinstance(error, KafkaError) else str(exc)
            if isinstance(error, KafkaError) and (
                error.code() == KafkaError.INVALID_REPLICATION_FACTOR
            ):
                text += (
                    f"; the replication factor {settings.topic_replication} "
                    "(RUNSTREAM_TOPIC_REPLICATION) must not exceed the number of brokers"
                )
            problems.append(f"{name}: {text}")
    if problems:
        raise StackError(
            f"could not create the Kafka topics on {settings.kafka_bootstrap}:\n  "
            + "\n  ".join(problems)
            + "\nCheck that Kafka runs ('runstream dev status') and try again."
        )
    return created
